import Foundation
import XCTest
import LlamaKernels
import Llama

/// `llama convert`: GGUF files written from other formats give the reference logits when read
/// back (llama.cpp loading them was checked at dev time, see docs/PERFORMANCE.md).
final class ConvertTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "llama-convert-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func referenceLogits(_ model: String) throws -> (ids: [Int], logits: [Float], vocab: Int) {
        let ref = try SharedData.path("reference/\(model)")
        struct Golden: Decodable { struct Case: Decodable { let ids: [Int]; let logits_file: String; let shape: [Int] }; let cases: [Case] }
        let g = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: URL(fileURLWithPath: ref + "/golden.json"))).cases[0]
        let logits = try Data(contentsOf: URL(fileURLWithPath: ref + "/" + g.logits_file)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        return (g.ids, logits, g.shape[1])
    }

    func check(source: String, tokenizer: String? = nil, model: String, type: TensorType, tolerance: Float) throws {
        let out = dir + "/out.gguf"
        try GGUFExport.write(try Model(path: source, tokenizerPath: tokenizer), to: out, type: type)
        let converted = try Model(path: out)
        XCTAssertEqual(converted.format, .gguf)
        let (ids, expected, vocab) = try referenceLogits(model)
        let all = try Transformer(weights: converted.weights).forward(tokens: ids, startPosition: 0, allLogits: true)
        let worst = zip(all, expected).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(worst, tolerance, "\(source) → \(type): max |Δ| \(worst)")
        XCTAssertEqual(all.count, ids.count * vocab)
        // The tokenizer travels with the model.
        let original = try Model(path: source, tokenizerPath: tokenizer).tokenizer
        let text = "Once upon a time, 123 little foxes said: \"hello\"."
        XCTAssertEqual(converted.tokenizer.encode(text), original.encode(text))
        XCTAssertEqual(converted.tokenizer.bosID, original.bosID)
    }

    func testHuggingFaceToGGUF() throws {
        // Rotate-half q/k rows are permuted back to the interleaved layout on the way.
        try check(source: try SharedData.path("reference/ref-mha-512/hf"), model: "ref-mha-512", type: .f32, tolerance: 1e-4)
        try check(source: try SharedData.path("reference/ref-gqa-32k/hf"), model: "ref-gqa-32k", type: .f32, tolerance: 1e-4)
        try check(source: try SharedData.path("reference/ref-gqa-32k/hf"), model: "ref-gqa-32k", type: .f16, tolerance: 2e-2)
    }

    func testLlama2CToGGUF() throws {
        try check(source: try SharedData.path("reference/ref-mha-512/ref-mha-512-v1.bin"),
                  tokenizer: try SharedData.path("tokenizer/tok512.bin"), model: "ref-mha-512", type: .f32, tolerance: 1e-4)
    }

    func testPermutationIsTheInverseOfHuggingFaces() {
        // transformers' permute: w.view(heads, d/2, 2, dim).transpose(1, 2) maps Meta row 2i+k to HF row k·d/2+i.
        let d = 8
        XCTAssertEqual((0..<d).map { GGUFExport.interleavedSourceRow($0, headDim: d, heads: 1) }, [0, 4, 1, 5, 2, 6, 3, 7])
        XCTAssertEqual(GGUFExport.interleavedSourceRow(9, headDim: d, heads: 2), 12)
    }

    func testByteLevelTokenizerRoundTripsThroughGGUF() throws {
        let source = try TokenizerLoader.load(gguf: GGUFFile(path: try DefaultModelFixture.path()))
        var w = GGUFWriter()
        w.metadata = try GGUFExport.tokenizerMetadata(source, vocabSize: source.vocabSize)
        let path = dir + "/vocab.gguf"
        try w.write(to: path)
        let back = try TokenizerLoader.load(gguf: GGUFFile(path: path))
        for c in try ByteLevelBPETests.cases("smollm2_tokenizer.jsonl") {
            XCTAssertEqual(back.encode(c.text), c.ids, c.text.debugDescription)
        }
    }
}
