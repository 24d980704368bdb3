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

    func testQuantizeToBlockFormats() throws {
        // Bytes are pinned by QuantizeTests; here: the file's layout, and logits that follow the
        // reference closely (a misplaced block or row gives uncorrelated logits).
        let hf = try SharedData.path("reference/ref-mha-512/hf")
        let (ids, expected, _) = try referenceLogits("ref-mha-512")
        for (type, minimum) in [(TensorType.q8_0, 0.999), (.q4_0, 0.9), (.q4_1, 0.9)] {
            let out = dir + "/\(type).gguf"
            try GGUFExport.write(try Model(path: hf), to: out, type: type)
            let logits = try Transformer(weights: try Model(path: out).weights).forward(tokens: ids, startPosition: 0, allLogits: true)
            XCTAssertGreaterThan(correlation(logits, expected), minimum, "\(type)")
            let file = try GGUFFile(path: out)
            XCTAssertEqual(file.tensor("blk.0.attn_q.weight")?.type, type)
            XCTAssertEqual(file.tensor("output.weight")?.type, .q8_0, "Q8_0 itself, or the output matrix of a 4-bit file")
            XCTAssertEqual(file.tensor("blk.0.attn_norm.weight")?.type, .f32)
            XCTAssertEqual(file.metadata["general.file_type"], .uint(GGUFExport.Recipe.uniform(type)!.fileType))
        }
    }

    func correlation(_ a: [Float], _ b: [Float]) -> Double {
        let n = Double(a.count)
        let ma = a.reduce(0) { $0 + Double($1) } / n, mb = b.reduce(0) { $0 + Double($1) } / n
        var sab = 0.0, saa = 0.0, sbb = 0.0
        for (x, y) in zip(a, b) {
            sab += (Double(x) - ma) * (Double(y) - mb)
            saa += (Double(x) - ma) * (Double(x) - ma)
            sbb += (Double(y) - mb) * (Double(y) - mb)
        }
        return sab / (saa * sbb).squareRoot()
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

/// Stopping a write (Ctrl-C) leaves neither the destination nor a temporary file.
final class CancelledWriteTests: XCTestCase {
    func testStoppedWriteLeavesNothing() throws {
        let dir = NSTemporaryDirectory() + "llama-cancel-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let model = try Model(path: try SharedData.path("reference/ref-mha-512/hf"))
        var asked = 0
        XCTAssertThrowsError(try GGUFExport.write(model, to: dir + "/out.gguf", type: .f16, shouldContinue: {
            asked += 1
            return asked < 3
        })) { error in
            XCTAssertEqual(error as? LlamaError, .cancelled(what: "writing \(dir)/out.gguf"))
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
    }
}
