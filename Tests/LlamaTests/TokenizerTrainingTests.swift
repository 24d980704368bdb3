import Foundation
import XCTest
import Llama

/// `llama train-tokenizer` writes a tokenizer.model the sentencepiece library reads and encodes
/// exactly as we do (Tests/Fixtures/training/trained-tokenizer.*, made by
/// Tools/make_tokenizer_training_fixture.py with sentencepiece), and training is deterministic.
final class TokenizerTrainingTests: XCTestCase {
    struct Fixture: Decodable {
        struct Case: Decodable { let text: String; let ids: [Int] }
        let vocab_size: Int
        let cases: [Case]
    }

    func testSentencePieceEncodesOurTrainedModelAsWeDo() throws {
        let dir = Fixtures.root + "/training"
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/trained-tokenizer.json")))
        let tokenizer = try SentencePieceTokenizer(modelFile: dir + "/trained-tokenizer.model")
        XCTAssertEqual(tokenizer.vocabSize, fixture.vocab_size)
        for c in fixture.cases {
            XCTAssertEqual(tokenizer.encode(c.text), c.ids, c.text)
        }
    }

    func testTrainingAgainGivesTheSameFile() throws {
        let corpus = try SharedData.path("corpora/tinyshakespeare.txt")
        let data = try Data(contentsOf: URL(fileURLWithPath: corpus)).prefix(300_000)
        var text = String(decoding: data, as: UTF8.self)
        if !text.hasSuffix("\n") { text += "\n" }
        var options = TokenizerTrainer.Options()
        options.vocabSize = 1000
        let result = try TokenizerTrainer.train(text: text, options: options)
        let committed = try Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/training/trained-tokenizer.model"))
        XCTAssertEqual(Data(TokenizerTrainer.modelProto(result)), committed)
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
