import Foundation

/// The arithmetic of Llama 2-Chat's PPO step (SPEC.md §4.4), separate from the models so it can
/// be checked on its own against PyTorch: the final reward (safety or helpfulness model, then
/// whitened), the per-token reward with the KL penalty, generalised advantage estimation, and
/// the clipped surrogate and value losses with their gradients. Conventions follow TRL's
/// PPOTrainer, whose formulation the Llama 2 paper's description matches.
public enum PPO {
    /// The score a response is trained towards: the safety model's when the prompt is tagged
    /// as a safety prompt or the safety model finds the response unsafe (σ(safety) below
    /// `threshold`, 0.15 in the paper), otherwise the helpfulness model's. Scores are the reward
    /// models' raw outputs, i.e. the logit of the sigmoid the paper thresholds.
    public static func combinedScore(helpfulness: Float, safety: Float, safetyPrompt: Bool, threshold: Float = 0.15) -> Float {
        usesSafety(safety: safety, safetyPrompt: safetyPrompt, threshold: threshold) ? safety : helpfulness
    }

    /// Whether `combinedScore` takes the safety model's score.
    public static func usesSafety(safety: Float, safetyPrompt: Bool, threshold: Float = 0.15) -> Bool {
        safetyPrompt || 1 / (1 + expf(-safety)) < threshold
    }

    /// Whitening over the batch: zero mean, unit (unbiased) standard deviation; with
    /// `keepMean` the mean is added back (TRL whitens advantages with the mean removed).
    public static func whiten(_ x: [Float], keepMean: Bool = false) -> [Float] {
        guard x.count > 1 else { return x }
        let n = Double(x.count)
        let mean = x.reduce(0.0) { $0 + Double($1) } / n
        let variance = x.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / (n - 1)
        let inv = 1 / (variance + 1e-8).squareRoot()
        return x.map { Float((Double($0) - mean) * inv + (keepMean ? mean : 0)) }
    }

    /// Per-token rewards of one response: `-beta · (log π(a_t) − log π_ref(a_t))` at every token,
    /// plus the final score at the last one. Returns the rewards and the per-token KL estimates.
    public static func tokenRewards(score: Float, logProbs: [Float], referenceLogProbs: [Float], beta: Float)
        -> (rewards: [Float], kl: [Float]) {
        precondition(logProbs.count == referenceLogProbs.count && !logProbs.isEmpty)
        let kl = zip(logProbs, referenceLogProbs).map { $0 - $1 }
        var rewards = kl.map { -beta * $0 }
        rewards[rewards.count - 1] += score
        return (rewards, kl)
    }

    /// Generalised advantage estimation [Schulman et al. 2016] over one response:
    /// δ_t = r_t + γ V_{t+1} − V_t (V after the last token is 0), A_t = δ_t + γλ A_{t+1};
    /// returns (the value targets) are A + V.
    public static func advantages(rewards: [Float], values: [Float], gamma: Float = 1, lambda: Float = 0.95)
        -> (advantages: [Float], returns: [Float]) {
        precondition(rewards.count == values.count)
        var a = [Float](repeating: 0, count: rewards.count)
        var next: Float = 0, nextValue: Float = 0
        for t in stride(from: rewards.count - 1, through: 0, by: -1) {
            let delta = rewards[t] + gamma * nextValue - values[t]
            next = delta + gamma * lambda * next
            a[t] = next
            nextValue = values[t]
        }
        return (a, zip(a, values).map { $0 + $1 })
    }

    /// The clipped surrogate objective's loss, mean over tokens, and its gradient with respect
    /// to each token's new log-probability: `max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε))` with
    /// ρ = exp(log π − log π_old). Also the fraction of tokens where the clipped term is the
    /// larger (TRL's clipfrac) and the approximate KL to the old policy, ½·mean((log ρ)²).
    public static func policyLoss(logProbs: [Float], oldLogProbs: [Float], advantages: [Float], clip: Float = 0.2)
        -> (loss: Double, gradient: [Float], clipFraction: Double, approxKL: Double) {
        let n = logProbs.count
        precondition(oldLogProbs.count == n && advantages.count == n && n > 0)
        var loss = 0.0, clipped = 0, approx = 0.0
        var gradient = [Float](repeating: 0, count: n)
        for t in 0..<n {
            let logRatio = Double(logProbs[t]) - Double(oldLogProbs[t])
            let ratio = exp(logRatio), a = Double(advantages[t])
            let unclipped = -a * ratio
            let bounded = -a * min(max(ratio, 1 - Double(clip)), 1 + Double(clip))
            if bounded > unclipped {
                clipped += 1
                loss += bounded  // constant in log π where the bound holds: no gradient
            } else {
                loss += unclipped
                gradient[t] = Float(-a * ratio / Double(n))
            }
            approx += 0.5 * logRatio * logRatio
        }
        return (loss / Double(n), gradient, Double(clipped) / Double(n), approx / Double(n))
    }

    /// The clipped value loss, mean over tokens, and its gradient with respect to each new value:
    /// `½ · max((V − R)², (clip(V, V_old − ε, V_old + ε) − R)²)`.
    public static func valueLoss(values: [Float], oldValues: [Float], returns: [Float], clip: Float = 0.2)
        -> (loss: Double, gradient: [Float], clipFraction: Double) {
        let n = values.count
        precondition(oldValues.count == n && returns.count == n && n > 0)
        var loss = 0.0, clipped = 0
        var gradient = [Float](repeating: 0, count: n)
        for t in 0..<n {
            let v = Double(values[t]), old = Double(oldValues[t]), r = Double(returns[t])
            let bounded = min(max(v, old - Double(clip)), old + Double(clip))
            let plain = (v - r) * (v - r), other = (bounded - r) * (bounded - r)
            if other > plain {
                clipped += 1
                loss += 0.5 * other  // V is outside the bounds here: the clipped term does not move with it
            } else {
                loss += 0.5 * plain
                gradient[t] = Float((v - r) / Double(n))
            }
        }
        return (loss / Double(n), gradient, Double(clipped) / Double(n))
    }
}
