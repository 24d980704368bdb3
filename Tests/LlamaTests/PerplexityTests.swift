import Foundation
import XCTest
import Llama

/// `Perplexity` follows llama-perplexity's procedure; checked on a reference model against the
/// same procedure applied to transformers' logits (../shared/data/reference).
final class PerplexityTests: XCTestCase {
    func testMatchesProcedureOnReferenceLogits() throws {
        let dir = try SharedData.path("reference/ref-mha-512")
        struct Golden: Decodable { struct Case: Decodable { let ids: [Int]; let logits_file: String }; let cases: [Case] }
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/golden.json")))
        let c = golden.cases[1]
        let n = c.ids.count
        let reference = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + c.logits_file)).withUnsafeBytes {
            Array($0.bindMemory(to: Float.self))
        }
        // One window of the whole case; positions n/2 … n-2 predict the next token.
        var nll = 0.0, count = 0
        for j in (n / 2)..<(n - 1) {
            let row = Array(reference[(j * 512)..<((j + 1) * 512)])
            nll -= row.withUnsafeBufferPointer { Scoring.logProbability($0, c.ids[j + 1]) }
            count += 1
        }
        let expected = exp(nll / Double(count))

        let weights = try ModelLoader.loadWeights(path: dir + "/hf")
        let perplexity = Perplexity(transformer: Transformer(weights: weights, contextLength: n, maxBatch: 7), bos: 1)
        var reports = 0
        let result = try perplexity.evaluate(tokens: c.ids + [5, 6, 7], contextLength: n) { _ in reports += 1 }
        XCTAssertEqual(result.chunks, 1, "a partial window is not scored")
        XCTAssertEqual(reports, 1)
        XCTAssertEqual(result.scoredTokens, count)
        XCTAssertEqual(result.perplexity, expected, accuracy: expected * 1e-5)
        XCTAssertGreaterThan(result.error, 0)
    }

    func testTooShortText() throws {
        let weights = try ModelLoader.loadWeights(path: try SharedData.path("reference/ref-mha-512/hf"))
        let p = Perplexity(transformer: Transformer(weights: weights, contextLength: 64), bos: 1)
        XCTAssertThrowsError(try p.evaluate(tokens: [1, 2, 3], contextLength: 64))
    }
}
