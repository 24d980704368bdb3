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

            // The same positions as batches (a prompt's path), including batches that split the sequence.
            for maxBatch in [c.ids.count, 3] {
                let batched = Transformer(weights: weights, maxBatch: maxBatch)
                let all = try batched.forward(tokens: c.ids, startPosition: 0, allLogits: true)
                XCTAssertEqual(all.count, expected.count)
                let worstBatched = zip(all, expected).map { abs($0 - $1) }.max() ?? .infinity
                XCTAssertLessThan(worstBatched, tolerance, "\(model)/\(form) in batches of \(maxBatch): max |Δlogit| \(worstBatched)")
                XCTAssertEqual(batched.logits, Array(all.suffix(c.shape[1])), "`logits` holds the last position's row")
            }
        }
    }

    func testMHAHuggingFaceDirectory() throws { try check(model: "ref-mha-512", form: "hf") }
    func testMHAGGUF() throws { try check(model: "ref-mha-512", form: "ref-mha-512-f32.gguf") }
    func testMHALlama2CVersion1() throws { try check(model: "ref-mha-512", form: "ref-mha-512-v1.bin") }
    func testMHALlama2CLegacy() throws { try check(model: "ref-mha-512", form: "ref-mha-512-v0.bin") }
    func testGQAHuggingFaceDirectory() throws { try check(model: "ref-gqa-32k", form: "hf") }
    func testGQAGGUF() throws { try check(model: "ref-gqa-32k", form: "ref-gqa-32k-f32.gguf") }
}

/// llama2.c v2 stores int8 weights in groups of 64 with fp32 scales: its logits differ from the
/// fp32 reference only by quantization noise, about 4% of the largest logit on this model whose
/// weights were scaled to make mistakes show (a layout mistake gives unrelated logits). At dev
/// time the v2 logits equalled, exactly, those of a v1 file holding the dequantized weights.
final class Llama2CQuantizedTests: XCTestCase {
    func testVersion2IsCloseToReference() throws {
        let dir = try SharedData.path("reference/ref-mha-512")
        let weights = try Llama2C.loadWeights(path: Fixtures.root + "/ref-mha-512-v2.bin")
        let expected = try Data(contentsOf: URL(fileURLWithPath: dir + "/logits-0.f32")).withUnsafeBytes {
            Array($0.bindMemory(to: Float.self))
        }
        let ids = [1, 300, 45, 260, 77, 401, 12, 99]
        let transformer = Transformer(weights: weights)
        var worst: Float = 0, scale: Float = 0, agree = 0
        for (pos, id) in ids.enumerated() {
            let logits = try transformer.forward(token: id, position: pos)
            let ref = Array(expected[(pos * 512)..<((pos + 1) * 512)])
            for v in 0..<512 {
                worst = max(worst, abs(logits[v] - ref[v]))
                scale = max(scale, abs(ref[v]))
            }
            if argmax(logits) == argmax(ref) { agree += 1 }
        }
        XCTAssertLessThan(worst, 0.06 * scale, "max |Δ| \(worst) against logits up to \(scale)")
        XCTAssertGreaterThan(worst, 0, "int8 weights cannot be exact")
        XCTAssertGreaterThanOrEqual(agree, 7)
    }
}
