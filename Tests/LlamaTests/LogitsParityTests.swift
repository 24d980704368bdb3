import Foundation
import XCTest
import Llama

/// Logits equal Hugging Face transformers' (../shared/data/reference, made with
/// `LlamaForCausalLM`) at every position, for every form of the same weights.
final class LogitsParityTests: XCTestCase {
    struct Golden: Decodable {
        struct Case: Decodable {
            let ids: [Int]
            let logits_file: String
            let shape: [Int]
            let greedy_16: [Int]
        }
        let cases: [Case]
    }

    func check(model: String, form: String, tolerance: Float = 1e-4) throws {
        let dir = try SharedData.path("reference/\(model)")
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/golden.json")))
        let weights = try ModelLoader.loadWeights(path: dir + "/" + form)
        for c in golden.cases {
            let expected = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + c.logits_file)).withUnsafeBytes {
                Array($0.bindMemory(to: Float.self))
            }
            XCTAssertEqual(expected.count, c.shape[0] * c.shape[1])
            let transformer = Transformer(weights: weights)
            var worst: Float = 0
            for (pos, id) in c.ids.enumerated() {
                let logits = try transformer.forward(token: id, position: pos)
                XCTAssertEqual(logits.count, c.shape[1])
                for v in 0..<c.shape[1] { worst = max(worst, abs(logits[v] - expected[pos * c.shape[1] + v])) }
            }
            XCTAssertLessThan(worst, tolerance, "\(model)/\(form): max |Δlogit| \(worst) over \(c.ids.count) positions")
        }
    }

    func testMHAHuggingFaceDirectory() throws { try check(model: "ref-mha-512", form: "hf") }
    func testMHAGGUF() throws { try check(model: "ref-mha-512", form: "ref-mha-512-f32.gguf") }
    func testMHALlama2CVersion1() throws { try check(model: "ref-mha-512", form: "ref-mha-512-v1.bin") }
    func testMHALlama2CLegacy() throws { try check(model: "ref-mha-512", form: "ref-mha-512-v0.bin") }
    func testGQAHuggingFaceDirectory() throws { try check(model: "ref-gqa-32k", form: "hf") }
    func testGQAGGUF() throws { try check(model: "ref-gqa-32k", form: "ref-gqa-32k-f32.gguf") }
}
