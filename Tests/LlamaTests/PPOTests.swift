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
