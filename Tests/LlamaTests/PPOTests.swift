import Foundation
import XCTest
import Llama

/// PPO's arithmetic against PyTorch, computed as TRL's PPOTrainer does
/// (Tests/Fixtures/training/ppo.json, made by Tools/make_ppo_fixtures.py).
final class PPOTests: XCTestCase {
    struct Fixture: Decodable {
        let beta, gamma, lambda, clip, value_clip, score: Float
        let logp_old, logp_ref, values_old, rewards, kl, advantages, returns, advantages_whitened: [Float]
        let logp_new, values_new, policy_grad, value_grad, scores, scores_whitened: [Float]
        let policy_loss, clipfrac, approx_kl, value_loss, value_clipfrac: Double
    }

    func close(_ a: [Float], _ b: [Float], _ tolerance: Float = 1e-5, _ what: String) {
        XCTAssertEqual(a.count, b.count, what)
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: tolerance * max(1, abs(y)), what) }
    }

    func testAgainstPyTorch() throws {
        let f = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/training/ppo.json")))
        let (rewards, kl) = PPO.tokenRewards(score: f.score, logProbs: f.logp_old, referenceLogProbs: f.logp_ref, beta: f.beta)
        close(rewards, f.rewards, 1e-6, "rewards")
        close(kl, f.kl, 1e-6, "kl")
        let (advantages, returns) = PPO.advantages(rewards: rewards, values: f.values_old, gamma: f.gamma, lambda: f.lambda)
        close(advantages, f.advantages, 1e-5, "advantages")
        close(returns, f.returns, 1e-5, "returns")
        close(PPO.whiten(advantages), f.advantages_whitened, 1e-5, "whitened advantages")
        close(PPO.whiten(f.scores), f.scores_whitened, 1e-5, "whitened scores")

        let policy = PPO.policyLoss(logProbs: f.logp_new, oldLogProbs: f.logp_old, advantages: f.advantages_whitened, clip: f.clip)
        XCTAssertEqual(policy.loss, f.policy_loss, accuracy: 1e-5)
        close(policy.gradient, f.policy_grad, 1e-5, "policy gradient")
        XCTAssertEqual(policy.clipFraction, f.clipfrac, accuracy: 1e-9)
        XCTAssertGreaterThan(policy.clipFraction, 0, "the fixture clips some tokens")
        XCTAssertEqual(policy.approxKL, f.approx_kl, accuracy: 1e-6)

        let value = PPO.valueLoss(values: f.values_new, oldValues: f.values_old, returns: f.returns, clip: f.value_clip)
        XCTAssertEqual(value.loss, f.value_loss, accuracy: 1e-5)
        close(value.gradient, f.value_grad, 1e-5, "value gradient")
        XCTAssertEqual(value.clipFraction, f.value_clipfrac, accuracy: 1e-9)
    }

    func testSafetyOrHelpfulness() {
        // σ(−2) = 0.12 < 0.15: unsafe, so the safety score counts.
        XCTAssertEqual(PPO.combinedScore(helpfulness: 3, safety: -2, safetyPrompt: false), -2)
        XCTAssertEqual(PPO.combinedScore(helpfulness: 3, safety: 1, safetyPrompt: false), 3)
        XCTAssertEqual(PPO.combinedScore(helpfulness: 3, safety: 1, safetyPrompt: true), 1)
        XCTAssertEqual(PPO.combinedScore(helpfulness: 3, safety: -1.5, safetyPrompt: false), 3)  // σ = 0.18
        XCTAssertTrue(PPO.usesSafety(safety: -2, safetyPrompt: false))
        XCTAssertTrue(PPO.usesSafety(safety: 1, safetyPrompt: true))
        XCTAssertFalse(PPO.usesSafety(safety: -1.5, safetyPrompt: false))
    }
}

/// The policy-gradient backward pass: gradients of a loss written in per-token log-probabilities.
final class WeightedGradientTests: XCTestCase {
    func testWeightedGradientsGeneraliseTheMeanLoss() throws {
        let (tiny, params) = try TrainingTests.tiny()
        let model = BackpropModel(parameters: params, batchSize: tiny.inputs.count, sequenceLength: tiny.inputs[0].count)
        let tokens = tiny.inputs.flatMap { $0 }, targets = TrainingTests.targets(tiny.targets)
        let count = targets.filter { $0 >= 0 }.count
        let mean = FloatBuffer(count: params.layout.count), weighted = FloatBuffer(count: params.layout.count)
        let (lossSum, _) = try model.accumulateGradients(tokens: tokens, targets: targets, gradScale: 1 / Float(count), into: mean)
        let r = try model.accumulateWeightedGradients(tokens: tokens, targets: targets,
                                                      weights: .init(repeating: 1 / Float(count), count: targets.count), into: weighted)
        for i in 0..<params.layout.count { XCTAssertEqual(weighted[i], mean[i], accuracy: 1e-6 * max(1, abs(mean[i]))) }
        XCTAssertEqual(-r.logProbs.reduce(0.0) { $0 + Double($1) }, lossSum, accuracy: 1e-3)
        for (t, lp) in zip(targets, r.logProbs) where t < 0 { XCTAssertEqual(lp, 0) }
        // Entropies lie in [0, log V]; log-probabilities without gradients are the same.
        XCTAssertTrue(r.entropies.allSatisfy { $0 >= 0 && $0 <= logf(Float(params.config.vocabSize)) + 1e-4 })
        XCTAssertEqual(try model.tokenLogProbs(tokens: tokens, targets: targets).logProbs, r.logProbs)

        // Per-token weights (of either sign): linear in the weights, so two halves add up.
        let w = (0..<targets.count).map { Float($0 % 3) - 0.7 }
        let full = FloatBuffer(count: params.layout.count), parts = FloatBuffer(count: params.layout.count)
        _ = try model.accumulateWeightedGradients(tokens: tokens, targets: targets, weights: w, into: full)
        _ = try model.accumulateWeightedGradients(tokens: tokens, targets: targets, weights: w.enumerated().map { $0 < 10 ? $1 : 0 }, into: parts)
        _ = try model.accumulateWeightedGradients(tokens: tokens, targets: targets, weights: w.enumerated().map { $0 < 10 ? 0 : $1 }, into: parts)
        for i in 0..<params.layout.count { XCTAssertEqual(parts[i], full[i], accuracy: 1e-5 * max(1, abs(full[i]))) }
        XCTAssertThrowsError(try model.accumulateWeightedGradients(tokens: tokens, targets: targets, weights: [1], into: full))
    }
}

/// The PPO trainer on the tiny model: the split policy/value passes against the weighted
/// backward pass and finite differences, a step that moves towards rewarded answers while the
/// reference stays put, and checkpoints that resume to the same numbers.
final class PPOTrainerTests: XCTestCase {
    func testPolicyAndValueGradients() throws {
        let (tiny, params) = try TrainingTests.tiny()
        let model = BackpropModel(parameters: params, batchSize: tiny.inputs.count, sequenceLength: tiny.inputs[0].count)
        let tokens = tiny.inputs.flatMap { $0 }, targets = TrainingTests.targets(tiny.targets)
        let n = targets.count, count = params.layout.count

        // The log-probability part is the weighted backward pass with weights −d loss / d log p.
        let w = (0..<n).map { Float($0 % 3) - 0.7 }
        let reference = FloatBuffer(count: count), split = FloatBuffer(count: count)
        let r = try model.accumulateWeightedGradients(tokens: tokens, targets: targets, weights: w, into: reference)
        let f = try model.policyForward(tokens: tokens, targets: targets)
        XCTAssertEqual(f.logProbs, r.logProbs)
        XCTAssertEqual(f.values, [], "no value head, no values")
        try model.policyBackward(tokens: tokens, dLogProbs: w.map { -$0 }, dValues: nil, into: split, valueGradients: nil)
        for i in 0..<count { XCTAssertEqual(split[i], reference[i], accuracy: 1e-5 * max(1, abs(reference[i]))) }
        XCTAssertThrowsError(try model.policyBackward(tokens: tokens, dLogProbs: w, dValues: nil, into: split, valueGradients: nil),
                             "a backward pass without its forward pass")

        // The value part: loss = Σ c_r V_r, against central differences of the values.
        let d = params.config.dim
        let head = FloatBuffer(count: d + 1)
        var rng = SplitMix64(seed: 3)
        for j in 0...d { head[j] = Float(Double(rng.next() >> 11) * 0x1.0p-53) - 0.5 }
        model.valueHead = head
        let c = (0..<n).map { targets[$0] < 0 && $0 % 2 == 0 ? 0 : (Float(($0 * 7) % 5) - 2) / Float(n) }
        func loss() throws -> Double {
            let v = try model.policyForward(tokens: tokens, targets: targets).values
            return zip(c, v).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        let g = FloatBuffer(count: count), hg = FloatBuffer(count: d + 1)
        _ = try model.policyForward(tokens: tokens, targets: targets)
        try model.policyBackward(tokens: tokens, dLogProbs: .init(repeating: 0, count: n), dValues: c, into: g, valueGradients: hg)
        func numeric(_ p: UnsafeMutablePointer<Float>) throws -> Double {
            let saved = p.pointee, eps: Float = 1e-2
            p.pointee = saved + eps
            let up = try loss()
            p.pointee = saved - eps
            let down = try loss()
            p.pointee = saved
            return (up - down) / Double(2 * eps)
        }
        for j in [0, 5, d - 1, d] {
            XCTAssertEqual(Double(hg[j]), try numeric(head.pointer + j), accuracy: 1e-3, "value head \(j)")
        }
        let wq = params.layout.slot(named: "model.layers.0.self_attn.q_proj.weight")!.offset
        let norm = params.layout.slot(named: "model.norm.weight")!.offset
        for i in [wq + 3, wq + 40, norm + 2] {
            XCTAssertEqual(Double(g[i]), try numeric(params.values.pointer + i), accuracy: 2e-3 * max(1, abs(Double(g[i]))), "trunk \(i)")
        }
    }

    /// With adapters, or with `full` every weight trained.
    func trainer(seed: UInt64 = 1, full: Bool = false) throws -> PPOTrainer {
        let (_, params) = try TrainingTests.tiny()
        var o = PPOOptions()
        o.learningRate = full ? 1e-3 : 1e-2
        o.valueLearningRate = 1e-2
        o.miniBatch = 2
        o.seed = seed
        return try PPOTrainer(parameters: params, lora: full ? nil : LoRAConfig(rank: 4, alpha: 8, targets: [.q, .v, .o, .down]),
                              options: o, sequenceLength: 12)
    }

    let good = PPORollout(prompt: [1, 5, 9], response: [3, 4, 2], score: 1)
    let bad = PPORollout(prompt: [1, 5, 9], response: [7, 7, 6], score: -1)
    let other = PPORollout(prompt: [2, 8], response: [11, 12, 13, 14], score: 0.5)

    func sum(_ x: [Float]) -> Double { x.reduce(0.0) { $0 + Double($1) } }

    func testStepMovesTowardsRewardedAnswers() throws { try stepMovesTowardsRewardedAnswers(full: false) }
    func testFullFineTuningStepMovesTowardsRewardedAnswers() throws { try stepMovesTowardsRewardedAnswers(full: true) }

    func stepMovesTowardsRewardedAnswers(full: Bool) throws {
        let t = try trainer(full: full)
        let frozen = t.parameters.values.array
        let before = try t.evaluate([good, bad])
        // Zero B matrices (or a copy of the weights) and a zero value head: the policy starts as
        // the reference, values at 0.
        XCTAssertEqual(before.logProbs, before.referenceLogProbs)
        XCTAssertTrue(before.values.joined().allSatisfy { $0 == 0 })
        var last = PPOStats()
        for _ in 0..<8 { last = try t.step([good, bad, good, bad]) }
        XCTAssertEqual(t.iteration, 8)
        let after = try t.evaluate([good, bad])
        XCTAssertEqual(after.referenceLogProbs, before.referenceLogProbs, "the reference policy is frozen")
        XCTAssertEqual(t.parameters.values.array, frozen, "the reference's weights did not move")
        XCTAssertEqual(t.adapters == nil, full)
        if full { XCTAssertNotEqual(t.policyWeights.values.array, frozen, "the policy's own weights moved") }
        XCTAssertGreaterThan(sum(after.logProbs[0]), sum(before.logProbs[0]) + 0.5, "the rewarded answer became likelier")
        XCTAssertLessThan(sum(after.logProbs[1]), sum(before.logProbs[1]) - 0.5, "the penalised answer became less likely")
        XCTAssertGreaterThan(sum(after.values[0]), sum(after.values[1]), "the value head tells the answers apart")
        XCTAssertEqual(last.steps, 2)
        XCTAssertEqual(last.rollouts, 4)
        XCTAssertEqual(last.tokens, 12)
        XCTAssertNotEqual(last.kl, 0)
        XCTAssertEqual(last.nonScoreReward, -Double(t.options.klCoefficient) * last.kl, accuracy: 1e-9)
        XCTAssertTrue(last.policyLoss.isFinite && last.valueLoss.isFinite && last.entropy > 0)

        XCTAssertThrowsError(try t.step([]))
        XCTAssertThrowsError(try t.step([PPORollout(prompt: [1], response: [], score: 0)]))
        XCTAssertThrowsError(try t.step([PPORollout(prompt: Array(repeating: 1, count: 10), response: [1, 2, 3, 4], score: 0)]),
                             "longer than the trainer's sequences")
    }

    func testEvaluateAnswersInTheRolloutsOrder() throws {
        // evaluate groups rollouts by length: each answer's numbers must still come back in place.
        let t = try trainer()
        _ = try t.step([good, bad])  // a policy and value head apart from the reference
        let short = PPORollout(prompt: [1], response: [4], score: 0)
        let long = PPORollout(prompt: [2, 8, 3], response: [11, 12, 13, 14, 5], score: 0)
        let rollouts = [long, short, other, good, short, long]
        let mixed = try t.evaluate(rollouts)
        for (i, r) in rollouts.enumerated() {
            let alone = try t.evaluate([r])
            XCTAssertEqual(mixed.logProbs[i].count, r.response.count)
            for (a, b) in [(mixed.logProbs[i], alone.logProbs[0]), (mixed.referenceLogProbs[i], alone.referenceLogProbs[0]),
                           (mixed.values[i], alone.values[0])] {
                for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-4, "rollout \(i)") }
            }
        }
    }

    func testCheckpointResumesExactly() throws { try checkpointResumesExactly(full: false) }
    func testFullFineTuningCheckpointResumesExactly() throws { try checkpointResumesExactly(full: true) }

    func checkpointResumesExactly(full: Bool) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ppo-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/checkpoint.ppockpt"
        let batch = [good, other, bad, other]
        let a = try trainer(seed: 4, full: full)
        _ = try a.step(batch)
        try a.save(to: path, state: Data("{\"x\":1}".utf8))
        let continued = try a.step(batch)

        let (b, state) = try PPOTrainer.resume(path, parameters: try TrainingTests.tiny().1)
        XCTAssertEqual(String(decoding: state, as: UTF8.self), "{\"x\":1}")
        XCTAssertEqual(b.iteration, 1)
        XCTAssertEqual(b.adapters == nil, full)
        XCTAssertEqual(b.options, a.options)
        let resumed = try b.step(batch)
        XCTAssertEqual(resumed.policyLoss, continued.policyLoss)
        XCTAssertEqual(resumed.valueLoss, continued.valueLoss)
        XCTAssertEqual(try b.evaluate(batch).logProbs, try a.evaluate(batch).logProbs)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: b.valueHead.pointer, count: b.valueHead.count)),
                       Array(UnsafeBufferPointer(start: a.valueHead.pointer, count: a.valueHead.count)))

        // A cut file and a file of another kind are refused with the file's name.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        try bytes.prefix(bytes.count - 4).write(to: URL(fileURLWithPath: dir + "/cut.ppockpt"))
        XCTAssertThrowsError(try PPOTrainer.resume(dir + "/cut.ppockpt", parameters: try TrainingTests.tiny().1)) {
            XCTAssertTrue("\($0)".contains("cut.ppockpt"), "\($0)")
        }
        try Data("LSCKPT01xxxxxxxxxxxxxxxx".utf8).write(to: URL(fileURLWithPath: dir + "/other.ppockpt"))
        XCTAssertThrowsError(try PPOTrainer.resume(dir + "/other.ppockpt", parameters: try TrainingTests.tiny().1))
    }

    func testRunningMomentsWhitenWithEveryScoreSoFar() {
        var m = RunningMoments()
        m.add([1, 2])
        m.add([3, 4])
        XCTAssertEqual(m.count, 4)
        XCTAssertEqual(m.mean, 2.5, accuracy: 1e-12)
        XCTAssertEqual(m.standardDeviation, (5.0 / 3).squareRoot(), accuracy: 1e-12)  // unbiased, as torch.std
        XCTAssertEqual(m.whiten(4), Float(1.5 / (5.0 / 3).squareRoot()), accuracy: 1e-6)
        XCTAssertEqual(RunningMoments().whiten(0.5), 0.5, "no statistics yet: unchanged")
    }
}
