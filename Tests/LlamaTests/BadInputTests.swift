import Foundation
import XCTest
import LlamaKernels
import Llama

/// Bad files and inputs give one typed error naming the file and what is wrong; never a crash.
final class BadInputTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "llama-bad-input-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// A tiny but complete llama GGUF (1 layer, dim 32, 2 heads, 1 KV head, vocab 8).
    func tinyModel(edit: (inout GGUFWriter) -> Void = { _ in }) -> GGUFWriter {
        var w = GGUFWriter()
        w.metadata = [
            ("general.architecture", .string("llama")),
            ("llama.embedding_length", .uint(32)), ("llama.feed_forward_length", .uint(64)),
            ("llama.block_count", .uint(1)), ("llama.attention.head_count", .uint(2)),
            ("llama.attention.head_count_kv", .uint(1)), ("llama.context_length", .uint(16)),
            ("llama.attention.layer_norm_rms_epsilon", .float(1e-5)),
            ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.tokens", .array(["<unk>", "<s>", "</s>", "\u{2581}a", "\u{2581}b", "a", "b", "\u{2581}"].map { .string($0) })),
            ("tokenizer.ggml.token_type", .array([2, 3, 3, 1, 1, 1, 1, 1].map { .int($0) })),
        ]
        func t(_ name: String, _ dims: [Int]) -> GGUFWriter.Tensor {
            .f32(name, dims, (0..<dims.reduce(1, *)).map { Float(($0 * 7919) % 13) / 13 - 0.5 })
        }
        w.tensors = [
            t("token_embd.weight", [32, 8]), t("output_norm.weight", [32]),
            t("blk.0.attn_norm.weight", [32]), t("blk.0.ffn_norm.weight", [32]),
            t("blk.0.attn_q.weight", [32, 32]), t("blk.0.attn_k.weight", [32, 16]), t("blk.0.attn_v.weight", [32, 16]),
            t("blk.0.attn_output.weight", [32, 32]), t("blk.0.ffn_gate.weight", [32, 64]),
            t("blk.0.ffn_up.weight", [32, 64]), t("blk.0.ffn_down.weight", [64, 32]),
        ]
        edit(&w)
        return w
    }

    func write(_ w: GGUFWriter, _ name: String = "model.gguf") throws -> String {
        let p = dir + "/" + name
        try w.write(to: p)
        return p
    }

    func expectError(_ body: () throws -> Void, _ check: (LlamaError) -> Bool, file: StaticString = #filePath, line: UInt = #line) {
        do {
            try body()
            XCTFail("no error", file: file, line: line)
        } catch let e as LlamaError {
            XCTAssertTrue(check(e), "unexpected error: \(e)", file: file, line: line)
            XCTAssertFalse(e.description.contains("\n"), "one line: \(e)", file: file, line: line)
        } catch {
            XCTFail("untyped error \(error)", file: file, line: line)
        }
    }

    func testTinyModelLoadsAndRuns() throws {
        let model = try Model(path: try write(tinyModel()))
        let logits = try Transformer(weights: model.weights).forward(token: 1, position: 0)
        XCTAssertEqual(logits.count, 8)
        XCTAssertTrue(logits.allSatisfy(\.isFinite))
    }

    func testTruncatedGGUF() throws {
        let bytes = tinyModel().serialize()
        for cut in [0, 3, 20, 200, bytes.count / 2, bytes.count - 1] {
            let p = dir + "/cut\(cut).gguf"
            XCTAssertTrue(FileManager.default.createFile(atPath: p, contents: Data(bytes[0..<cut])))
            expectError({ _ = try Model(path: p) }) {
                switch $0 {
                case .truncated(let f, _, _, _), .corrupt(let f, _, _), .badMagic(let f, _, _): f == p
                case .unknownModelFormat(let f): f == p && cut < 4
                default: false
                }
            }
        }
    }

    func testUnknownAndUnsupportedTensorTypes() throws {
        let unknown = try write(tinyModel { $0.tensors[4].rawType = 99 }, "unknown.gguf")
        expectError({ _ = try Model(path: unknown) }) {
            if case .unsupportedTensorType(_, "blk.0.attn_q.weight", let type) = $0 { return type.contains("99") }
            return false
        }
        // A known type this build cannot compute with (Q8_K, ggml's activation format): a clear
        // error, not a crash.
        let kquant = try write(tinyModel {
            $0.tensors[9] = GGUFWriter.Tensor(name: "blk.0.ffn_up.weight", dims: [256, 64], type: .q8_K, data: [UInt8](repeating: 0, count: 64 * 292))
        }, "kquant.gguf")
        expectError({ _ = try Model(path: kquant) }) {
            if case .unsupportedTensorType(_, "blk.0.ffn_up.weight", "Q8_K") = $0 { return true }
            return false
        }
    }

    func testWrongShapesAndMissingTensors() throws {
        let wrong = try write(tinyModel { $0.tensors[5] = .f32("blk.0.attn_k.weight", [32, 32], [Float](repeating: 0, count: 1024)) })
        expectError({ _ = try Model(path: wrong) }) {
            if case .shapeMismatch(_, "layer 0 wk", [16, 32], [32, 32]) = $0 { return true }
            return false
        }
        let missing = try write(tinyModel { $0.tensors.removeLast() }, "missing.gguf")
        expectError({ _ = try Model(path: missing) }) {
            if case .missingTensor(_, "blk.0.ffn_down.weight") = $0 { return true }
            return false
        }
        let badHeads = try write(tinyModel { $0.metadata[5] = ("llama.attention.head_count_kv", .uint(3)) }, "heads.gguf")
        expectError({ _ = try Model(path: badHeads) }) {
            if case .invalidConfig(_, "kv_heads", _) = $0 { return true }
            return false
        }
    }

    func testTruncatedSafetensorsAndLlama2C() throws {
        let hf = try SharedData.path("reference/ref-mha-512/hf")
        let copy = dir + "/hf"
        try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
        for f in ["config.json", "tokenizer.model"] { try FileManager.default.copyItem(atPath: hf + "/" + f, toPath: copy + "/" + f) }
        let st = try Data(contentsOf: URL(fileURLWithPath: hf + "/model.safetensors"))
        XCTAssertTrue(FileManager.default.createFile(atPath: copy + "/model.safetensors", contents: st.prefix(st.count - 100)))
        expectError({ _ = try Model(path: copy) }) {
            if case .truncated(let f, _, _, _) = $0 { return f.hasSuffix("model.safetensors") }
            return false
        }
        let bin = try Data(contentsOf: URL(fileURLWithPath: try SharedData.path("reference/ref-mha-512/ref-mha-512-v1.bin")))
        let cut = dir + "/cut.bin"
        XCTAssertTrue(FileManager.default.createFile(atPath: cut, contents: bin.prefix(bin.count / 2)))
        expectError({ _ = try Llama2C.loadWeights(path: cut) }) {
            if case .truncated(cut, _, _, _) = $0 { return true }
            return false
        }
    }

    func testMissingTokenizerForLlama2C() throws {
        let p = dir + "/model.bin"
        try FileManager.default.copyItem(atPath: try SharedData.path("reference/ref-mha-512/ref-mha-512-v1.bin"), toPath: p)
        expectError({ _ = try Model(path: p) }) {
            if case .missingTokenizer(p, let looked) = $0 { return looked == [dir + "/tokenizer.bin"] }
            return false
        }
        try FileManager.default.copyItem(atPath: try SharedData.path("tokenizer/tok512.bin"), toPath: dir + "/tokenizer.bin")
        XCTAssertEqual(try Model(path: p).tokenizer.vocabSize, 512)
    }

    func testCorruptTokenizerModel() throws {
        let p = dir + "/tokenizer.model"
        XCTAssertTrue(FileManager.default.createFile(atPath: p, contents: Data([0x0A, 0xFF, 0xFF, 0x03, 0x00])))
        expectError({ _ = try SentencePieceTokenizer(modelFile: p) }) {
            if case .corrupt(p, _, _) = $0 { return true }
            return false
        }
    }

    func testNotAModel() throws {
        let p = dir + "/notes.txt"
        XCTAssertTrue(FileManager.default.createFile(atPath: p, contents: Data("hello, this is text".utf8)))
        expectError({ _ = try Model(path: p) }) { $0 == .unknownModelFormat(p) }
        expectError({ _ = try Model(path: dir + "/absent.gguf") }) { $0 == .fileNotFound(dir + "/absent.gguf") }
    }

    func testPromptLongerThanContext() throws {
        let model = try Model(path: try write(tinyModel()))
        let generator = Generator(model: model, contextLength: 4)
        expectError({ _ = try generator.generate(prompt: [1, 3, 4, 3, 4, 3], options: GenerationOptions()) }) {
            $0 == .promptTooLong(tokens: 6, contextLength: 4)
        }
        expectError({ _ = try generator.generate(prompt: [1, 99], options: GenerationOptions()) }) {
            $0 == .invalidToken(99, vocabSize: 8)
        }
        // Generation that reaches the end of the context stops with `length`.
        var options = GenerationOptions()
        options.sampling = .greedy
        options.maxTokens = 100
        let r = try generator.generate(prompt: [1, 3], options: options)
        // Two more positions fit in the cache; the token sampled from the last one ends it.
        XCTAssertLessThanOrEqual(r.tokens.count, 3)
        if r.tokens.count == 3 { XCTAssertEqual(r.finishReason, .length) }
    }
}

/// Sharded Hugging Face checkpoints: tensors found through model.safetensors.index.json.
final class ShardedCheckpointTests: XCTestCase {
    func testIndexedShardsLoadLikeOneFile() throws {
        let source = try SharedData.path("reference/ref-mha-512/hf")
        let dir = NSTemporaryDirectory() + "llama-sharded-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for f in ["config.json", "tokenizer.model"] { try FileManager.default.copyItem(atPath: source + "/" + f, toPath: dir + "/" + f) }
        // Two shards: the same file under two names, each listed for half of the tensors.
        let names = try SafetensorsFile(path: source + "/model.safetensors").entries.keys.sorted()
        let shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        for s in shards { try FileManager.default.copyItem(atPath: source + "/model.safetensors", toPath: dir + "/" + s) }
        var map: [String: String] = [:]
        for (i, n) in names.enumerated() { map[n] = shards[i % 2] }
        let index = try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": map])
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/model.safetensors.index.json", contents: index))

        let sharded = try Model(path: dir)
        let single = try Model(path: source)
        let ids = [1, 300, 45, 260]
        XCTAssertEqual(try Transformer(weights: sharded.weights).forward(tokens: ids, startPosition: 0, allLogits: true),
                       try Transformer(weights: single.weights).forward(tokens: ids, startPosition: 0, allLogits: true))

        // A shard named in the index but absent is a clear error.
        try FileManager.default.removeItem(atPath: dir + "/" + shards[1])
        XCTAssertThrowsError(try Model(path: dir)) { error in
            XCTAssertEqual(error as? LlamaError, .fileNotFound(dir + "/" + shards[1]))
        }
    }
}
