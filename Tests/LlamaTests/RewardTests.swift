import Foundation
import XCTest
import Llama

/// The reward model against PyTorch (Tests/Fixtures/training/reward-tiny.json, made by
/// Tools/make_reward_fixtures.py with transformers' LlamaForSequenceClassification).
final class RewardTests: XCTestCase {
    struct Fixture: Decodable {
        let score_initial: String
        let chosen: [[Int]]
        let rejected: [[Int]]
        let margins: [Float]
        let rewards_chosen: [Float]
        let rewards_rejected: [Float]
        let loss: Double
        let gradients: [String: String]
    }

    /// Rewards, the mean ranking loss with margins, and every parameter's gradient (the score
    /// head's and the whole trunk's, tied embeddings included) agree with PyTorch's.
    func testRankingLossGradientsMatchPyTorch() throws {
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/training/reward-tiny.json")))
        let (_, lm) = try TrainingTests.tiny()
        let params = lm.addingScoreHead(seed: 1)
        let head = try XCTUnwrap(params.tensor("score.weight"))
        let initial = TrainingTests.floats(fixture.score_initial)
        XCTAssertEqual(initial.count, head.count)
        for i in 0..<head.count { head[i] = initial[i] }

        let pairs = (0..<3).map { PreferencePair(chosen: fixture.chosen[$0], rejected: fixture.rejected[$0], margin: fixture.margins[$0]) }
        let model = RewardModel(parameters: params, pairsPerBatch: 4, sequenceLength: 16)
        let grads = FloatBuffer(count: params.layout.count)
        let r = try model.accumulateGradients(pairs, gradScale: 1 / 3, into: grads)
        for i in 0..<3 {
            XCTAssertEqual(r.chosen[i], fixture.rewards_chosen[i], accuracy: 1e-4 * max(1, abs(fixture.rewards_chosen[i])))
            XCTAssertEqual(r.rejected[i], fixture.rewards_rejected[i], accuracy: 1e-4 * max(1, abs(fixture.rewards_rejected[i])))
        }
        XCTAssertEqual(r.lossSum / 3, fixture.loss, accuracy: 1e-5 * fixture.loss)
        XCTAssertEqual(Set(fixture.gradients.keys), Set(params.layout.slots.map(\.name)))
        for slot in params.layout.slots {
            let expected = TrainingTests.floats(fixture.gradients[slot.name]!)
            let scale = expected.map { abs($0) }.max()!
            var worst: Float = 0
            for i in 0..<slot.count { worst = max(worst, abs(grads[slot.offset + i] - expected[i])) }
            XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "\(slot.name): largest difference \(worst), largest gradient \(scale)")
        }
        // Scoring without gradients gives the same rewards and loss.
        let e = try model.evaluate(pairs)
        XCTAssertEqual(e.chosen, r.chosen)
        XCTAssertEqual(e.lossSum, r.lossSum, accuracy: 1e-9)
    }

    /// Freezing the lower layers: the layers above get the same gradients, the frozen ones and
    /// the embedding none, and AdamW leaves them as they were.
    func testFrozenLowerLayers() throws {
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/training/reward-tiny.json")))
        let (_, lm) = try TrainingTests.tiny()
        let params = lm.addingScoreHead(seed: 3)
        let pairs = (0..<3).map { PreferencePair(chosen: fixture.chosen[$0], rejected: fixture.rejected[$0]) }
        let model = RewardModel(parameters: params, pairsPerBatch: 3, sequenceLength: 16)
        let full = FloatBuffer(count: params.layout.count), partial = FloatBuffer(count: params.layout.count)
        try model.accumulateGradients(pairs, gradScale: 1, into: full)
        model.frozenLayers = 1
        try model.accumulateGradients(pairs, gradScale: 1, into: partial)
        let frozen = params.layout.tensorNames(belowLayer: 1)
        XCTAssertTrue(frozen.contains("model.embed_tokens.weight"))
        XCTAssertTrue(frozen.contains("model.layers.0.mlp.up_proj.weight"))
        XCTAssertFalse(frozen.contains("model.layers.1.mlp.up_proj.weight"))
        for slot in params.layout.slots {
            for i in slot.offset..<(slot.offset + slot.count) {
                XCTAssertEqual(partial[i], frozen.contains(slot.name) ? 0 : full[i], slot.name)
            }
        }
        let before = params.values.array
        let optimizer = AdamW(layout: params.layout)
        optimizer.frozen = frozen
        optimizer.update(params.values, gradients: full, lr: 0.1)
        for slot in params.layout.slots {
            let changed = (slot.offset..<(slot.offset + slot.count)).contains { params.values[$0] != before[$0] }
            XCTAssertEqual(changed, !frozen.contains(slot.name), slot.name)
        }
    }

    /// With lower layers frozen, the residual stream entering the first trained layer is saved
    /// per sequence, and later passes that start from it give the same rewards and gradients as
    /// passes from the tokens, whatever the batch they are packed into.
    func testFrozenStatesAreReusedExactly() throws {
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/training/reward-tiny.json")))
        let (_, lm) = try TrainingTests.tiny()
        let params = lm.addingScoreHead(seed: 5)
        let pairs = (0..<3).map { PreferencePair(chosen: fixture.chosen[$0], rejected: fixture.rejected[$0], margin: fixture.margins[$0]) }
        let cached = RewardModel(parameters: params, pairsPerBatch: 3, sequenceLength: 16)
        let plain = RewardModel(parameters: params, pairsPerBatch: 3, sequenceLength: 16)
        plain.cachesFrozenStates = false
        for m in [cached, plain] { m.frozenLayers = 1 }

        let first = FloatBuffer(count: params.layout.count), again = FloatBuffer(count: params.layout.count)
        let r1 = try cached.accumulateGradients(pairs, gradScale: 1, into: first)
        XCTAssertEqual(cached.frozenStateCount, 6)
        let r2 = try cached.accumulateGradients(pairs, gradScale: 1, into: again)
        XCTAssertEqual(r1.chosen, r2.chosen)
        XCTAssertEqual(r1.rejected, r2.rejected)
        for i in 0..<params.layout.count { XCTAssertEqual(first[i], again[i], accuracy: 1e-6 * max(1, abs(first[i]))) }

        // Repacked differently (one pair at a time, so shorter batches), from saved states.
        for (i, pair) in pairs.enumerated() {
            let fromStates = try cached.scores([pair.rejected, pair.chosen])
            let fromTokens = try plain.scores([pair.rejected, pair.chosen])
            XCTAssertEqual(fromStates[0], fromTokens[0], accuracy: 1e-5)
            XCTAssertEqual(fromStates[1], r1.chosen[i], accuracy: 1e-5)
        }
        XCTAssertEqual(plain.frozenStateCount, 0)
        // Changing the frozen depth drops the saved states.
        cached.frozenLayers = 2
        _ = try cached.scores([pairs[0].chosen])
        XCTAssertEqual(cached.frozenStateCount, 1)
    }

    func testRankingLossIsStableAndHasTheRightSlope() {
        let far = RankingLoss.pair(chosen: 200, rejected: -200, margin: 0)
        XCTAssertEqual(far.loss, 0, accuracy: 1e-12)
        let wrong = RankingLoss.pair(chosen: -200, rejected: 200, margin: 0)
        XCTAssertEqual(wrong.loss, 400, accuracy: 1e-9)
        XCTAssertEqual(wrong.dChosen, -1)
        // With a margin the loss is that of a smaller gap; a numerical derivative agrees.
        let a = RankingLoss.pair(chosen: 1.5, rejected: 0.25, margin: 2.0 / 3)
        XCTAssertEqual(a.loss, RankingLoss.pair(chosen: 1.5 - 2.0 / 3, rejected: 0.25, margin: 0).loss, accuracy: 1e-6)
        let h: Float = 1e-3
        let numeric = (RankingLoss.pair(chosen: 1.5 + h, rejected: 0.25, margin: 2.0 / 3).loss
            - RankingLoss.pair(chosen: 1.5 - h, rejected: 0.25, margin: 2.0 / 3).loss) / Double(2 * h)
        XCTAssertEqual(Double(a.dChosen), numeric, accuracy: 1e-4)
        XCTAssertEqual(a.dRejected, -a.dChosen)
        XCTAssertEqual(MarginTable.small.margin(level: 3), 1)
        XCTAssertEqual(MarginTable.large.margin(level: 2), 2)
        XCTAssertEqual(MarginTable.large.margin(level: nil), 0)
    }

    func testPairsThatDoNotFitAreRefused() throws {
        let (_, lm) = try TrainingTests.tiny()
        let model = RewardModel(parameters: lm.addingScoreHead(seed: 1), pairsPerBatch: 1, sequenceLength: 8)
        XCTAssertThrowsError(try model.evaluate([PreferencePair(chosen: Array(repeating: 5, count: 9), rejected: [5])]))
        XCTAssertThrowsError(try model.evaluate([PreferencePair(chosen: [], rejected: [5])]))
        XCTAssertThrowsError(try model.evaluate([]))
    }
}

/// Preference data: both shapes, rendered with the chat format, bad pairs counted, bad lines named.
final class PreferenceDataTests: XCTestCase {
    func testShapesAndBadInput() throws {
        let tokenizer = try TokenizerLoader.load(file: try SharedData.path("tokenizer/llama2-tokenizer.model"))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("prefs-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let lines = [
            #"{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How to bake?\n\nAssistant: Use an oven.", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How to bake?\n\nAssistant: No."}"#,
            #"{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Rome.", "rating": "significantly better", "safety": false}"#,
            #"{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5", "rating": 1}"#,
            #"{"prompt": "Empty?", "chosen": "", "rejected": "Something."}"#,
            #"{"prompt": "Same?", "chosen": "Yes.", "rejected": "Yes."}"#,
            #"{"prompt": "Long?", "chosen": "\#(String(repeating: "very ", count: 80))long.", "rejected": "Short."}"#,
        ]
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: dir + "/p.jsonl"))
        let data = try PreferenceData.load(dir + "/p.jsonl", format: .llama2, tokenizer: tokenizer, maxTokens: 64, margins: .small)
        XCTAssertEqual(data.examples.count, 4)
        XCTAssertEqual(data.skippedEmpty, 1)
        XCTAssertEqual(data.skippedIdentical, 1)
        XCTAssertEqual(data.truncated, 1)
        XCTAssertEqual(data.examples.map(\.line), [1, 2, 3, 6])
        XCTAssertEqual(data.examples.map(\.pair.margin), [0, 1, 1.0 / 3, 0])
        XCTAssertEqual(data.examples[1].safety, false)
        // The HH dialogue is two Llama 2 turns; the sequence ends with the answer's EOS.
        let first = data.examples[0].pair
        let expected = try PreferenceData.sequence([ChatMessage(.user, "Hi"), ChatMessage(.assistant, "Hello!"),
                                                    ChatMessage(.user, "How to bake?"), ChatMessage(.assistant, "Use an oven.")],
                                                   format: .llama2, tokenizer: tokenizer, defaultSystem: nil)
        XCTAssertEqual(first.chosen, expected)
        XCTAssertEqual(first.chosen.last, tokenizer.eosID)
        XCTAssertEqual(Array(first.chosen.prefix(10)), Array(first.rejected.prefix(10)))
        XCTAssertTrue(data.examples[3].pair.chosen.count == 64, "cut to the last 64 tokens")

        for (line, message) in [(#"{"chosen": "x"}"#, "'chosen' and 'rejected'"),
                                (#"{"chosen": "Hello", "rejected": "Hi"}"#, "Human"),
                                (#"{"prompt": "q", "chosen": "a", "rejected": "b", "rating": 7}"#, "'rating'"),
                                ("not json", "not a JSON object")] {
            try Data(("\n" + line + "\n").utf8).write(to: URL(fileURLWithPath: dir + "/bad.jsonl"))
            XCTAssertThrowsError(try PreferenceData.load(dir + "/bad.jsonl", format: .llama2, tokenizer: tokenizer, maxTokens: 64, margins: .none)) {
                XCTAssertTrue("\($0)".contains("bad.jsonl:2"), "\($0)")
                XCTAssertTrue("\($0)".contains(message), "\($0)")
            }
        }
        try Data((lines[3] + "\n" + lines[4] + "\n").utf8).write(to: URL(fileURLWithPath: dir + "/none.jsonl"))
        XCTAssertThrowsError(try PreferenceData.load(dir + "/none.jsonl", format: .llama2, tokenizer: tokenizer, maxTokens: 64, margins: .none)) {
            XCTAssertTrue("\($0)".contains("no usable pairs"), "\($0)")
        }
    }
}

/// Prompts for sampling, in the shapes the preference and SFT data use.
final class PromptSetTests: XCTestCase {
    func testShapesAndBadLines() throws {
        let tmp = NSTemporaryDirectory() + "prompts-\(UUID().uuidString).jsonl"
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        func load(_ lines: [String]) throws -> PromptSet {
            try Data(lines.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: tmp))
            return try PromptSet.load(tmp)
        }
        let set = try load([
            #"{"prompt": "Hi there"}"#,
            #"{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}]}"#,
            #"{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}"#,
            #"{"chosen": "\n\nHuman: one\n\nAssistant: two\n\nHuman: three\n\nAssistant: four", "rejected": "x"}"#,
            "",
            #"{"chosen": "\n\nHuman: run together\n\nAssistant: yes  Human: no\n\nAssistant: ok"}"#,
        ])
        XCTAssertEqual(set.prompts.map(\.messages), [
            [ChatMessage(.user, "Hi there")],
            [ChatMessage(.system, "Be brief."), ChatMessage(.user, "Why?")],
            [ChatMessage(.user, "Q")],
            [ChatMessage(.user, "one"), ChatMessage(.assistant, "two"), ChatMessage(.user, "three")],
        ])
        XCTAssertEqual(set.prompts.map(\.line), [1, 2, 3, 4])
        XCTAssertEqual(set.skipped, 1)
        for (bad, reason) in [(#"{"text": "no prompt"}"#, ":1: needs 'prompt'"), ("not json", ":1: not a JSON object"),
                              (#"{"prompt": [{"role": "robot", "content": "x"}]}"#, "prompt message 1 needs a role"),
                              (#"{"prompt": 3}"#, "'prompt' is text or a list")] {
            XCTAssertThrowsError(try load([bad]), bad) { XCTAssertTrue("\($0)".contains(reason), "\($0)") }
        }
        XCTAssertThrowsError(try load([#"{"messages": [{"role": "user", "content": ""}]}"#])) {
            XCTAssertTrue("\($0)".contains("no prompts"), "\($0)")
        }
    }

    func testMeanInterval() {
        let m = MeanInterval([1, 2, 3, 4])
        XCTAssertEqual(m.mean, 2.5)
        // Sample standard deviation 1.291, standard error 0.6455.
        XCTAssertEqual(m.high - m.mean, 1.96 * 0.645497, accuracy: 1e-5)
        XCTAssertEqual(m.mean - m.low, m.high - m.mean, accuracy: 1e-12)
        XCTAssertEqual(MeanInterval([5]).low, 5)
        XCTAssertTrue(MeanInterval([]).mean.isNaN)
    }
}
