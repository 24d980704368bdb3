import Foundation
import XCTest
import Llama

/// Byte-level BPE equals the reference tokenizers: Hugging Face `tokenizers` for tokenizer.json
/// files of each pre-tokenizer kind, and llama.cpp for the default model's GGUF vocabulary.
final class ByteLevelBPETests: XCTestCase {
    struct Case: Decodable {
        let tokenizer: String?
        let text: String
        let ids: [Int]
    }

    static func cases(_ file: String) throws -> [Case] {
        try String(contentsOfFile: Fixtures.root + "/" + file, encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder().decode(Case.self, from: Data($0.utf8))
        }
    }

    func testTokenizerJSONMatchesHuggingFaceTokenizers() throws {
        let all = try Self.cases("bpe_cases.jsonl")
        XCTAssertGreaterThan(all.count, 200)
        var tokenizers: [String: any Tokenizer] = [:]
        for c in all {
            let name = c.tokenizer!
            if tokenizers[name] == nil { tokenizers[name] = try TokenizerLoader.load(tokenizerJSON: Fixtures.root + "/" + name) }
            let t = tokenizers[name]!
            // `tokenizers` parses added special tokens in text by default.
            let ids = t.encode(c.text, addBOS: false, parseSpecial: true)
            XCTAssertEqual(ids, c.ids, "\(name): \(c.text.debugDescription)")
            XCTAssertEqual(t.decode(ids, keepSpecial: true), c.text, "\(name) round trip: \(c.text.debugDescription)")
        }
        XCTAssertEqual(Set(tokenizers.values.map { "\(($0 as! ByteLevelBPETokenizer).preTokenizer)" }),
                       ["gpt2", "digitsThenGPT2", "llama3"])
    }

    func testDefaultModelTokenizerMatchesLlamaCpp() throws {
        let tokenizer = try TokenizerLoader.load(gguf: GGUFFile(path: try DefaultModelFixture.path()))
        let all = try Self.cases("smollm2_tokenizer.jsonl")
        XCTAssertGreaterThan(all.count, 70)
        for c in all {
            let ids = tokenizer.encode(c.text)
            XCTAssertEqual(ids, c.ids, c.text.debugDescription)
            XCTAssertEqual(tokenizer.decode(ids), c.text, "round trip: \(c.text.debugDescription)")
        }
        XCTAssertEqual(tokenizer.eosID, 2)
        XCTAssertFalse(tokenizer.addsBOS)
        XCTAssertEqual(tokenizer.encode("<|im_start|>user", addBOS: false, parseSpecial: true).first, 1)
        XCTAssertNotEqual(tokenizer.encode("<|im_start|>user", addBOS: false, parseSpecial: false).first, 1)
    }

    func testPreTokenizerSplits() {
        XCTAssertEqual(PreTokenizer.gpt2.split("Hello  world's 123!!\n\n x"),
                       ["Hello", " ", " world", "'s", " 123", "!!", "\n\n", " x"])
        XCTAssertEqual(PreTokenizer.digitsThenGPT2.split("a 123"), ["a", " ", "1", "2", "3"])
        XCTAssertEqual(PreTokenizer.llama3.split("HE'S 12345 \n\n x"), ["HE", "'S", " ", "123", "45", " \n\n", " x"])
    }
}
