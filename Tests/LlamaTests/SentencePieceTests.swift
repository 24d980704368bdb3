import Foundation
import XCTest
import Llama

/// The SentencePiece tokenizer gives the `sentencepiece` library's ids (and llama.cpp's) for
/// the real Llama 2 vocabulary, whichever file it was read from.
final class SentencePieceTests: XCTestCase {
    struct Vector: Decodable {
        let text: String
        let ids_no_bos: [Int]
        let pieces: [String]
        let decoded: String
    }

    /// The same vocabulary from its three sources.
    func sources() throws -> [(String, any Tokenizer)] {
        [
            ("tokenizer.model", try SentencePieceTokenizer(modelFile: try SharedData.path("tokenizer/llama2-tokenizer.model"))),
            ("GGUF", try TokenizerLoader.load(gguf: GGUFFile(path: try SharedData.path("tokenizer/llamacpp/ggml-vocab-llama-spm.gguf")))),
            ("tokenizer.bin", try SentencePieceTokenizer(llama2cFile: try SharedData.path("tokenizer/llama2-tokenizer.bin"))),
        ]
    }

    func testSentencePieceVectors() throws {
        let lines = try String(contentsOfFile: try SharedData.path("tokenizer/llama2_spm_vectors.jsonl"), encoding: .utf8)
            .split(separator: "\n")
        let vectors = try lines.map { try JSONDecoder().decode(Vector.self, from: Data($0.utf8)) }
        XCTAssertEqual(vectors.count, 33)
        for (source, tokenizer) in try sources() {
            for v in vectors {
                let ids = tokenizer.encode(v.text)
                XCTAssertEqual(ids, v.ids_no_bos, "\(source): \(v.text.debugDescription)")
                XCTAssertEqual(ids.map { tokenizer.piece($0) }, v.pieces, "\(source): \(v.text.debugDescription)")
                XCTAssertEqual(tokenizer.decode(ids), v.decoded, "\(source): decode")
                XCTAssertEqual(tokenizer.decode([1] + ids), v.decoded, "\(source): decode after BOS")
            }
        }
    }

    func testLlamaCppVectors() throws {
        let inp = try String(contentsOfFile: try SharedData.path("tokenizer/llamacpp/ggml-vocab-llama-spm.gguf.inp"), encoding: .utf8)
        let out = try String(contentsOfFile: try SharedData.path("tokenizer/llamacpp/ggml-vocab-llama-spm.gguf.out"), encoding: .utf8)
        var texts = inp.components(separatedBy: "\n__ggml_vocab_test__\n")
        if texts.last == "" { texts.removeLast() }
        let expected = out.split(separator: "\n", omittingEmptySubsequences: false).map {
            $0.split(separator: " ").map { Int($0)! }
        }
        XCTAssertEqual(texts.count, 46)
        var phi3 = try sources()
        phi3.append(("phi-3 GGUF", try TokenizerLoader.load(gguf: GGUFFile(path: try SharedData.path("tokenizer/llamacpp/ggml-vocab-phi-3.gguf")))))
        for (source, tokenizer) in phi3 {
            for (i, text) in texts.enumerated() {
                let ids = tokenizer.encode(text)
                XCTAssertEqual(ids, expected[i], "\(source) case \(i): \(text.debugDescription)")
                XCTAssertEqual(tokenizer.decode(ids), text, "\(source) round trip \(i)")
            }
        }
    }

    func testBOSAndSpecialTokens() throws {
        let t = try SentencePieceTokenizer(modelFile: try SharedData.path("tokenizer/llama2-tokenizer.model"))
        XCTAssertEqual(t.bosID, 1)
        XCTAssertEqual(t.eosID, 2)
        XCTAssertEqual(t.encode("Hello", addBOS: true, parseSpecial: false), [1, 15043])
        // Control tokens are text unless special tokens are parsed (sentencepiece never parses them).
        XCTAssertEqual(t.encode("<s>", addBOS: false, parseSpecial: false), [529, 29879, 29958])
        XCTAssertEqual(t.encode("<s>[INST]", addBOS: false, parseSpecial: true).first, 1)
    }

    func testStreamingDecodeNeverSplitsACharacter() throws {
        let t = try SentencePieceTokenizer(modelFile: try SharedData.path("tokenizer/llama2-tokenizer.model"))
        let ids = t.encode("🦙 naïve 日本")
        var decoder = StreamingDecoder(tokenizer: t)
        var pieces: [String] = []
        for id in ids { pieces.append(decoder.append(id)) }
        pieces.append(decoder.finish())
        XCTAssertEqual(pieces.joined(), "🦙 naïve 日本")
        // The four byte tokens of 🦙 give nothing until the last one.
        XCTAssertEqual(pieces[1], "")
        XCTAssertEqual(pieces[2], "")
        XCTAssertFalse(pieces.contains { $0.contains("\u{FFFD}") })
    }

    func testTok512FromBothFormats() throws {
        let a = try SentencePieceTokenizer(modelFile: try SharedData.path("tokenizer/tok512.model"))
        let b = try SentencePieceTokenizer(llama2cFile: try SharedData.path("tokenizer/tok512.bin"))
        let text = "Once upon a time, there was a little girl named Lily. She liked 123 apples!"
        XCTAssertEqual(a.encode(text), b.encode(text))
        XCTAssertEqual(a.decode(a.encode(text)), text)
    }
}
