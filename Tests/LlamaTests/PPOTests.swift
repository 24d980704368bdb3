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
