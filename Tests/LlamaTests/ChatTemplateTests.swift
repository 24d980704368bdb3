import Foundation
import XCTest
import Llama

/// Chat rendering equals the references: Meta's `chat_completion` token layout for Llama 2-Chat,
/// SmolLM2's own Jinja template for ChatML and Meta's Llama 3 Instruct template (Tests/Fixtures/chat_cases.json, made by
/// Tools/make_chat_fixtures.py).
final class ChatTemplateTests: XCTestCase {
    struct Case: Decodable {
        let messages: [ChatMessage]
        let llama2: [Int]
        let chatml_smollm2: [Int]
        let llama3_text: String
    }

    func cases() throws -> [Case] {
        try JSONDecoder().decode([Case].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/chat_cases.json")))
    }

    func testLlama2MatchesMetaReference() throws {
        let t = try SentencePieceTokenizer(modelFile: try SharedData.path("tokenizer/llama2-tokenizer.model"))
        for c in try cases() {
            XCTAssertEqual(try ChatFormat.llama2.render(c.messages, tokenizer: t), c.llama2, "\(c.messages)")
        }
    }

    func testChatMLMatchesSmolLM2Template() throws {
        let model = try DefaultModelFixture.model.get()
        XCTAssertEqual(ChatFormat.detect(template: model.chatTemplate, tokenizer: model.tokenizer), .chatml)
        let system = ChatFormat.defaultSystemPrompt(template: model.chatTemplate)
        XCTAssertEqual(system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        for c in try cases() {
            XCTAssertEqual(try ChatFormat.chatml.render(c.messages, tokenizer: model.tokenizer, defaultSystem: system),
                           c.chatml_smollm2, "\(c.messages)")
        }
    }

    func testLlama3MatchesMetaTemplate() throws {
        for c in try cases() {
            XCTAssertEqual(try ChatFormat.llama3.renderText(c.messages), c.llama3_text, "\(c.messages)")
        }
    }

    func testDetection() throws {
        let t = try SentencePieceTokenizer(modelFile: try SharedData.path("tokenizer/llama2-tokenizer.model"))
        XCTAssertEqual(ChatFormat.detect(template: "{{ bos_token + '[INST] ' + content + ' [/INST]' }}", tokenizer: t), .llama2)
        XCTAssertEqual(ChatFormat.detect(template: "<|start_header_id|>{{ role }}<|end_header_id|>", tokenizer: t), .llama3)
        XCTAssertEqual(ChatFormat.detect(template: nil, tokenizer: t), .llama2)
        XCTAssertNil(ChatFormat.defaultSystemPrompt(template: "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}"))
    }

    func testConversationMustEndWithUser() throws {
        let t = try SentencePieceTokenizer(modelFile: try SharedData.path("tokenizer/llama2-tokenizer.model"))
        XCTAssertThrowsError(try ChatFormat.llama2.render([ChatMessage(.user, "a"), ChatMessage(.assistant, "b")], tokenizer: t))
        XCTAssertThrowsError(try ChatFormat.llama2.render([ChatMessage(.user, "a"), ChatMessage(.user, "b")], tokenizer: t))
    }
}
