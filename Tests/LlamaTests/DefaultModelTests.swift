import Foundation
import XCTest
import Llama

final class DefaultModelTests: XCTestCase {
    /// SmolLM2 answers the README question with the ids an independent forward pass of the same
    /// file gives (../shared/data/README.md): "The capital of France is Paris.<|im_end|>".
    func testCapitalOfFranceGreedy() throws {
        let model = try DefaultModelFixture.model.get()
        let format = ChatFormat.detect(template: model.chatTemplate, tokenizer: model.tokenizer)
        let prompt = try format.render([ChatMessage(.user, "What is the capital of France?")], tokenizer: model.tokenizer,
                                       defaultSystem: ChatFormat.defaultSystemPrompt(template: model.chatTemplate))
        let transformer = Transformer(weights: model.weights, contextLength: 128)
        var logits: [Float] = []
        for (pos, id) in prompt.enumerated() { logits = try transformer.forward(token: id, position: pos) }
        var answer: [Int] = []
        while answer.count < 8 {
            let next = argmax(logits)
            answer.append(next)
            logits = try transformer.forward(token: next, position: prompt.count + answer.count - 1)
        }
        XCTAssertEqual(answer, [504, 3575, 282, 4649, 314, 7042, 30, 2])
        XCTAssertEqual(model.tokenizer.decode(answer), "The capital of France is Paris.")
    }

    func testGeneratorStopsAtEndOfTurnAndReusesTheCache() throws {
        let model = try DefaultModelFixture.model.get()
        let generator = Generator(model: model, contextLength: 256)
        let format = ChatFormat.chatml
        var options = GenerationOptions()
        options.sampling = .greedy
        options.maxTokens = 32
        options.stopTokens = format.stopTokens(model.tokenizer)
        // No system prompt: with the template's default one the first answer token is a near
        // tie (llama.cpp: 24.91 for "L" against 24.56 for "The"), which rounding order decides.
        var history = [ChatMessage(.user, "What is the capital of France?")]
        var streamed = ""
        let first = try generator.generate(prompt: try format.render(history, tokenizer: model.tokenizer),
                                           options: options) { streamed += $0; return true }
        XCTAssertEqual(first.text, "The capital of France is Paris.")
        XCTAssertEqual(streamed, first.text)
        XCTAssertEqual(first.finishReason, .stop)
        history += [ChatMessage(.assistant, first.text), ChatMessage(.user, "And of Italy?")]
        let second = try generator.generate(prompt: try format.render(history, tokenizer: model.tokenizer),
                                            options: options)
        // Only the new turn is computed: the earlier conversation is still in the cache.
        XCTAssertLessThan(second.promptTokensEvaluated, second.promptTokens / 2)
        XCTAssertFalse(second.text.isEmpty)
    }

    func testStopStringsAndMaxTokens() throws {
        let model = try DefaultModelFixture.model.get()
        let generator = Generator(model: model, contextLength: 128)
        var options = GenerationOptions()
        options.sampling = .greedy
        options.maxTokens = 5
        let prompt = try ChatFormat.chatml.render([ChatMessage(.user, "What is the capital of France?")], tokenizer: model.tokenizer)
        let limited = try generator.generate(prompt: prompt, options: options)
        XCTAssertEqual(limited.tokens.count, 5)
        XCTAssertEqual(limited.finishReason, .length)
        options.maxTokens = 32
        options.stopStrings = ["France"]
        var streamed = ""
        let stopped = try generator.generate(prompt: prompt, options: options) { streamed += $0; return true }
        XCTAssertEqual(stopped.finishReason, .stop)
        XCTAssertFalse(stopped.text.contains("France"))
        XCTAssertEqual(streamed, stopped.text)
    }

    func testSHA256() {
        var h = SHA256()
        XCTAssertEqual(h.finalize(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        h = SHA256()
        let text = Array(String(repeating: "abc", count: 100).utf8)
        text.withUnsafeBytes { h.update(UnsafeRawBufferPointer(rebasing: $0[0..<7])); h.update(UnsafeRawBufferPointer(rebasing: $0[7...])) }
        // hashlib.sha256(b"abc" * 100)
        XCTAssertEqual(h.finalize(), "d9f5aeb06abebb3be3f38adec9a2e3b94228d52193be923eb4e24c9b56ee0930")
    }
}
