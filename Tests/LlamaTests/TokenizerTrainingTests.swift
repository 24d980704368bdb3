import Foundation
import XCTest
import Llama

/// `llama train-tokenizer` writes a tokenizer.model the sentencepiece library reads and encodes
/// exactly as we do: Tests/Fixtures/training/trained-tokenizer.json (made by
/// Tools/make_tokenizer_training_fixture.py with sentencepiece) holds the model's sha256 and the
/// ids sentencepiece gives; the model is trained again here from ../shared.
final class TokenizerTrainingTests: XCTestCase {
    struct Fixture: Decodable {
        struct Case: Decodable { let text: String; let ids: [Int] }
        let vocab_size: Int
        let sha256: String
        let cases: [Case]
    }

    func testTrainedModelIsTheOneSentencePieceEncodedAsWeDo() throws {
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/training/trained-tokenizer.json")))
        let corpus = try SharedData.path("corpora/tinyshakespeare.txt")
        var text = String(decoding: try Data(contentsOf: URL(fileURLWithPath: corpus)).prefix(300_000), as: UTF8.self)
        if !text.hasSuffix("\n") { text += "\n" }
        var options = TokenizerTrainer.Options()
        options.vocabSize = 1000
        let result = try TokenizerTrainer.train(text: text, options: options)
        // Training is deterministic: the same bytes sentencepiece was given.
        var hash = SHA256()
        TokenizerTrainer.modelProto(result).withUnsafeBytes { hash.update($0) }
        XCTAssertEqual(hash.finalize(), fixture.sha256)
        // Written and read back, the file encodes as sentencepiece encoded it.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("llama-swift-tok-\(getpid()).model").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try TokenizerTrainer.write(result, to: path)
        let tokenizer = try SentencePieceTokenizer(modelFile: path)
        XCTAssertEqual(tokenizer.vocabSize, fixture.vocab_size)
        for c in fixture.cases {
            XCTAssertEqual(tokenizer.encode(c.text), c.ids, c.text)
        }
    }

    func testTooSmallVocabularyIsRejected() {
        var options = TokenizerTrainer.Options()
        options.vocabSize = 270
        XCTAssertThrowsError(try TokenizerTrainer.train(text: "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ\n", options: options)) { e in
            XCTAssertTrue("\(e)".contains("cannot hold"), "\(e)")
        }
        XCTAssertThrowsError(try TokenizerTrainer.train(text: "\n\n", options: TokenizerTrainer.Options()))
    }
}
