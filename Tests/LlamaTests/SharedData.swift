import Foundation
import XCTest

/// ../shared/data (read-only test assets made with the reference libraries), found from this
/// file's location. Tests that need it skip when it is absent, as in a user's fresh clone.
enum SharedData {
    static let root: String? = {
        var dir = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { dir.deleteLastPathComponent() }
        let candidate = dir.deletingLastPathComponent().appendingPathComponent("shared/data").path
        return FileManager.default.fileExists(atPath: candidate) ? candidate : nil
    }()

    /// The path of `relative` inside ../shared/data, or a skip when it is not there.
    static func path(_ relative: String) throws -> String {
        guard let root else { throw XCTSkip("../shared/data is absent; skipping a test that needs it") }
        let p = root + "/" + relative
        guard FileManager.default.fileExists(atPath: p) else { throw XCTSkip("\(p) is absent") }
        return p
    }
}

/// The directory of this repository's committed fixtures (Tests/Fixtures).
enum Fixtures {
    static let root: String = {
        var dir = URL(fileURLWithPath: #filePath)
        dir.deleteLastPathComponent()
        dir.deleteLastPathComponent()
        return dir.appendingPathComponent("Fixtures").path
    }()
}
