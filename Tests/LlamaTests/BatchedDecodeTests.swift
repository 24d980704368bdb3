import Foundation
import XCTest
import Llama

/// Several sequences decoded together (one batch per step, each row attending to its own cache
/// slot) give the logits each sequence gets alone.
final class BatchedDecodeTests: XCTestCase {
    func testStepMatchesSequencesRunAlone() throws {
        let (_, params) = try TrainingTests.tiny()
        let weights = try params.weights()
        let v = weights.config.vocabSize
        let a = [1, 7, 3, 9, 4, 2], b = [5, 6, 8]
        // Each sequence alone, every position's logits.
        func alone(_ tokens: [Int]) throws -> [Float] {
            try Transformer(weights: weights, contextLength: 16).forward(tokens: tokens, startPosition: 0, allLogits: true)
        }
        let refA = try alone(a), refB = try alone(b), refC = try alone(Array(a.prefix(3)) + [8, 8])

        let t = Transformer(weights: weights, contextLength: 16, sequences: 3)
        try t.forward(tokens: Array(a.prefix(3)), startPosition: 0, sequence: 0)
        try t.forward(tokens: Array(b.prefix(1)), startPosition: 0, sequence: 1)
        // Sequence 2 starts as a copy of sequence 0's first three positions.
        try t.copySequence(0, to: 2, count: 3)
        var steps: [[(sequence: Int, token: Int, position: Int)]] = [
            [(0, a[3], 3), (1, b[1], 1), (2, 8, 3)],
            [(2, 8, 4), (0, a[4], 4), (1, b[2], 2)],
            [(0, a[5], 5)],
        ]
        func close(_ x: ArraySlice<Float>, _ y: ArraySlice<Float>, _ what: String) {
            XCTAssertEqual(x.count, y.count)
            let worst = zip(x, y).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 1e-4, what)
        }
        for (s, entries) in steps.enumerated() {
            let logits = try t.step(entries)
            XCTAssertEqual(logits.count, entries.count * v)
            for (row, e) in entries.enumerated() {
                let reference = [refA, refB, refC][e.sequence]
                close(logits[(row * v)..<((row + 1) * v)], reference[(e.position * v)..<((e.position + 1) * v)],
                      "step \(s), sequence \(e.sequence)")
            }
        }
        // Bad steps are refused with a reason.
        steps = [[(0, 1, 6), (0, 2, 7)]]
        XCTAssertThrowsError(try t.step(steps[0]))
        XCTAssertThrowsError(try t.step([(3, 1, 0)]))
        XCTAssertThrowsError(try t.step([(0, 1, 16)]))
        XCTAssertThrowsError(try t.step([(0, v, 1)]))
        XCTAssertThrowsError(try t.forward(tokens: [1], startPosition: 0, sequence: 3))
        XCTAssertThrowsError(try t.copySequence(0, to: 5, count: 1))
    }

    /// K samples of one prompt decoded together: greedy ones are all the answer `generate` gives,
    /// and each stops on its own (end of turn, stop string or length).
    func testSamplesDecodeTogether() throws {
        let model = try DefaultModelFixture.model.get()
        let format = ChatFormat.chatml
        let prompt = try format.render([ChatMessage(.user, "What is the capital of France?")], tokenizer: model.tokenizer)
        var options = GenerationOptions()
        options.sampling = .greedy
        options.maxTokens = 32
        options.stopTokens = format.stopTokens(model.tokenizer)
        let single = try Generator(model: model, contextLength: 128).generate(prompt: prompt, options: options)
        let generator = Generator(model: model, contextLength: 128, sequences: 3)
        let greedy = try generator.samples(prompt: prompt, count: 3, options: options)
        XCTAssertEqual(greedy.map(\.text), Array(repeating: single.text, count: 3))
        XCTAssertEqual(greedy.map(\.finishReason), [.stop, .stop, .stop])

        options.sampling = SamplingOptions()
        options.sampling.seed = 11
        options.maxTokens = 12
        options.stopStrings = ["Paris"]
        let sampled = try generator.samples(prompt: prompt, count: 3, options: options)
        for s in sampled {
            XCTAssertLessThanOrEqual(s.tokens.count, 12)
            XCTAssertFalse(s.text.contains("Paris"))
            if s.finishReason == .length { XCTAssertEqual(s.tokens.count, 12) }
        }
        XCTAssertEqual(try generator.samples(prompt: prompt, count: 3, options: options).map(\.text), sampled.map(\.text))
        XCTAssertThrowsError(try generator.samples(prompt: prompt, count: 4, options: options))
    }

    /// Different prompts decoded together (PPO's rollouts): each greedy answer is the one
    /// `generate` gives that prompt alone, a repeated prompt is copied, and the stop token is kept.
    func testDifferentPromptsDecodeTogether() throws {
        let model = try DefaultModelFixture.model.get()
        let format = ChatFormat.chatml
        let a = try format.render([ChatMessage(.user, "What is the capital of France?")], tokenizer: model.tokenizer)
        let b = try format.render([ChatMessage(.user, "Name a primary colour.")], tokenizer: model.tokenizer)
        var options = GenerationOptions()
        options.sampling = .greedy
        options.maxTokens = 24
        options.stopTokens = format.stopTokens(model.tokenizer)
        let alone = try [a, b].map { try Generator(model: model, contextLength: 128).generate(prompt: $0, options: options) }
        let generator = Generator(model: model, contextLength: 128, sequences: 3)
        let together = try generator.samples(prompts: [a, b, a], options: options)
        XCTAssertEqual(together.map(\.text), [alone[0].text, alone[1].text, alone[0].text])
        XCTAssertEqual(together.map(\.tokens), [alone[0].tokens, alone[1].tokens, alone[0].tokens])
        XCTAssertEqual(together.map(\.promptTokensEvaluated), [a.count, b.count, 0])
        for (r, s) in zip(together, alone) {
            XCTAssertEqual(r.finishReason, s.finishReason)
            XCTAssertEqual(r.stopToken, s.stopToken)
            if r.finishReason == .stop { XCTAssertTrue(options.stopTokens.contains(r.stopToken ?? -1)) }
        }
        XCTAssertThrowsError(try generator.samples(prompts: [a, b, a, b], options: options))
        XCTAssertThrowsError(try generator.samples(prompts: [a, []], options: options))
    }
}
