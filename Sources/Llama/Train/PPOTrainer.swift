import Foundation
import LlamaKernels

/// One sampled answer to train on: the prompt's tokens, the answer's tokens (with the end-of-turn
/// token when it ended with one) and the reward the answer is trained towards (`Rc` after
/// whitening).
public struct PPORollout: Sendable, Equatable {
    public var prompt: [Int]
    public var response: [Int]
    public var score: Float

    public init(prompt: [Int], response: [Int], score: Float) {
        self.prompt = prompt
        self.response = response
        self.score = score
    }
}

/// PPO's settings; the defaults are Llama 2-Chat's where the paper gives them (SPEC.md §4.4:
/// β = 0.01, clip 0.2, AdamW β₂ 0.95, weight decay 0.1, gradient clipping 1.0, a constant rate,
/// one gradient step per mini-batch) and TRL's PPOTrainer's otherwise (γ = 1, λ = 0.95, value
/// coefficient 0.1, value clip 0.2).
public struct PPOOptions: Sendable, Codable, Equatable {
    /// β of the per-token KL penalty `−β (log π − log π_ref)`.
    public var klCoefficient: Float = 0.01
    public var clip: Float = 0.2
    public var valueClip: Float = 0.2
    public var valueCoefficient: Float = 0.1
    public var gamma: Float = 1
    public var lambda: Float = 0.95
    /// Rollouts per gradient step.
    public var miniBatch = 4
    /// Passes over each iteration's rollouts (one gradient step per mini-batch in each).
    public var epochs = 1
    public var learningRate: Float = 1e-5
    /// The value head's own rate: it starts from zero and must reach the rewards' scale.
    public var valueLearningRate: Float = 1e-4
    public var adamw = AdamWOptions()
    public var seed: UInt64 = 1

    public init() {}

    public func validate() throws {
        guard miniBatch >= 1, epochs >= 1 else { throw LlamaError.invalidArgument("PPO needs a mini-batch and an epoch of at least 1") }
        guard klCoefficient >= 0, clip > 0, valueClip > 0, valueCoefficient >= 0 else {
            throw LlamaError.invalidArgument("PPO's KL coefficient and value coefficient must not be negative, its clip ranges positive")
        }
        guard (0...1).contains(gamma), (0...1).contains(lambda) else { throw LlamaError.invalidArgument("γ and λ are in 0...1") }
        guard learningRate > 0, valueLearningRate > 0 else { throw LlamaError.invalidArgument("PPO's learning rates must be positive") }
    }
}

/// What one PPO iteration did, as TRL logs it: `kl` is the mean over rollouts of Σ_t (log π_old −
/// log π_ref) (the sampled estimate of KL(π ‖ π_ref) per answer), `nonScoreReward` the mean of
/// −β times it; losses, fractions and entropy are means over the gradient steps.
public struct PPOStats: Sendable, Codable {
    public var rollouts = 0
    public var tokens = 0
    public var meanScore = 0.0
    public var kl = 0.0
    public var klPerToken = 0.0
    public var nonScoreReward = 0.0
    public var policyLoss = 0.0
    public var valueLoss = 0.0
    public var clipFraction = 0.0
    public var valueClipFraction = 0.0
    public var approxKL = 0.0
    public var entropy = 0.0
    public var gradientNorm = 0.0
    public var meanValue = 0.0
    public var meanReturn = 0.0
    public var steps = 0

    public init() {}
}

/// Llama 2-Chat's PPO step (SPEC.md §4.4) on a language model trained through LoRA adapters or
/// in every weight. With adapters, the frozen base weights are also the reference policy (its
/// log-probabilities are the same forward pass with the adapters left out, so one copy of the
/// weights serves both); in full fine-tuning the policy is a copy of the weights that AdamW
/// updates, and the given parameters stay frozen as the reference (read by the same batch
/// buffers). The value head reads the policy's last hidden states.
///
/// `step` takes one iteration's rollouts: it computes the old and reference log-probabilities
/// and the values without gradients, the per-token rewards with the KL penalty, advantages by
/// GAE (whitened over the iteration's tokens), then runs `epochs` passes of mini-batches, each
/// one gradient step of the clipped surrogate loss plus `valueCoefficient` × the clipped value
/// loss, clipped to a global norm of 1 and applied by AdamW (TRL's PPOTrainer's algorithm).
public final class PPOTrainer: @unchecked Sendable {
    /// The frozen weights: the reference policy, and the policy's base when it has adapters.
    public let parameters: TrainableParameters
    /// The policy's adapters; nil when every weight trains.
    public let adapters: LoRAAdapters?
    /// The weights the policy's forward pass reads: `parameters` with adapters, else its own copy.
    public let policyWeights: TrainableParameters
    /// dim weights, then a bias.
    public let valueHead: FloatBuffer
    public let options: PPOOptions
    public let sequenceLength: Int
    /// Updates what trains: the adapters, or every weight.
    public let optimizer: AdamW
    public let valueOptimizer: AdamW
    /// Iterations done (`step` calls); checkpoints resume from it.
    public var iteration = 0
    let model: BackpropModel
    private let baseGradients: FloatBuffer
    private let valueGradients: FloatBuffer

    /// `sequenceLength`: the longest prompt + answer a rollout has. `lora` nil: full fine-tuning
    /// (four more copies of the weights in memory: the policy, its gradient and two moments).
    public init(parameters: TrainableParameters, lora: LoRAConfig?, options: PPOOptions, sequenceLength: Int,
                pool: ThreadPool = .shared) throws {
        try options.validate()
        guard sequenceLength >= 2 else { throw LlamaError.invalidArgument("PPO sequences need at least 2 tokens") }
        self.parameters = parameters
        self.options = options
        self.sequenceLength = sequenceLength
        let d = parameters.config.dim
        valueHead = FloatBuffer(count: d + 1)
        valueGradients = FloatBuffer(count: d + 1)
        baseGradients = FloatBuffer(count: parameters.layout.count)
        if var config = lora {
            // The importance ratio compares passes of the same function: no dropout (TRL's PPO
            // examples set lora_dropout 0.05, but its ratio then mixes masks).
            config.dropout = 0
            let adapters = try LoRAAdapters(config: config, model: parameters.config, seed: options.seed)
            self.adapters = adapters
            policyWeights = parameters
            model = BackpropModel(parameters: parameters, batchSize: options.miniBatch, sequenceLength: sequenceLength, pool: pool)
            model.attach(adapters)
            optimizer = AdamW(slots: adapters.slots, count: adapters.count, options: options.adamw)
        } else {
            adapters = nil
            let copy = FloatBuffer(count: parameters.layout.count)
            copy.copy(from: parameters.values)
            policyWeights = TrainableParameters(layout: parameters.layout, values: copy)
            model = BackpropModel(parameters: policyWeights, batchSize: options.miniBatch, sequenceLength: sequenceLength, pool: pool)
            model.reference = parameters
            optimizer = AdamW(layout: parameters.layout, options: options.adamw)
        }
        model.valueHead = valueHead
        valueOptimizer = AdamW(slots: [TensorSlot(name: "v_head.summary.weight", shape: [1, d], offset: 0),
                                       TensorSlot(name: "v_head.summary.bias", shape: [1], offset: d)],
                               count: d + 1, options: options.adamw)
    }

    /// The values AdamW updates: the adapters, or the policy's weights.
    var trained: FloatBuffer { adapters?.values ?? policyWeights.values }
    /// Their gradients.
    var gradients: FloatBuffer { model.loraGradients ?? baseGradients }

    /// The policy's weights now: the base with the adapters merged in, or the trained copy.
    public func policyParameters() throws -> TrainableParameters {
        guard let adapters else { return policyWeights }
        return try adapters.merged(with: parameters)
    }

    /// Forward passes inside `body` are the reference policy's.
    func asReference<T>(_ body: () throws -> T) rethrows -> T {
        if adapters != nil { model.loraEnabled = false } else { model.readsReference = true }
        defer { model.loraEnabled = true; model.readsReference = false }
        return try body()
    }

    /// One packed mini-batch: rollouts right-padded to the longest; row j of rollout i predicts
    /// token j + 1, and only answer tokens are targets.
    struct Packed {
        var tokens: [Int]
        var targets: [Int]
        /// Row-major index of each answer token's row, per rollout.
        var rows: [[Int]]
    }

    func pack(_ batch: [PPORollout]) throws -> Packed {
        let length = batch.map { $0.prompt.count + $0.response.count - 1 }.max()!
        guard length <= sequenceLength else {
            throw LlamaError.invalidArgument("a rollout of \(length + 1) tokens does not fit PPO's \(sequenceLength + 1)")
        }
        model.activeLength = length
        let n = options.miniBatch * length
        var tokens = [Int](repeating: 0, count: n), targets = [Int](repeating: -1, count: n), rows: [[Int]] = []
        for (i, r) in batch.enumerated() {
            let s = r.prompt + r.response
            for j in 0..<(s.count - 1) { tokens[i * length + j] = s[j] }
            let first = r.prompt.count - 1
            rows.append((0..<r.response.count).map { i * length + first + $0 })
            for (t, row) in rows[i].enumerated() { targets[row] = r.response[t] }
        }
        return Packed(tokens: tokens, targets: targets, rows: rows)
    }

    /// Each rollout's answer-token log-probabilities under the policy and the reference, and the
    /// policy's values, without gradients.
    public func evaluate(_ rollouts: [PPORollout]) throws -> (logProbs: [[Float]], referenceLogProbs: [[Float]], values: [[Float]]) {
        var lp = [[Float]](repeating: [], count: rollouts.count), ref = lp, values = lp
        model.training = false
        defer { model.training = true }
        // Mini-batches of similar lengths: each is padded to its longest, and no gradient step
        // depends on which rollouts go together here.
        let order = rollouts.indices.sorted { rollouts[$0].prompt.count + rollouts[$0].response.count
                                              < rollouts[$1].prompt.count + rollouts[$1].response.count }
        for start in stride(from: 0, to: order.count, by: options.miniBatch) {
            let chosen = Array(order[start..<min(start + options.miniBatch, order.count)])
            let p = try pack(chosen.map { rollouts[$0] })
            let r = try asReference { try model.tokenLogProbs(tokens: p.tokens, targets: p.targets) }
            let f = try model.policyForward(tokens: p.tokens, targets: p.targets)
            for (i, rows) in zip(chosen, p.rows) {
                ref[i] = rows.map { r.logProbs[$0] }
                lp[i] = rows.map { f.logProbs[$0] }
                values[i] = rows.map { f.values[$0] }
            }
        }
        return (lp, ref, values)
    }

    /// One PPO iteration on `rollouts` (every answer at least one token).
    public func step(_ rollouts: [PPORollout]) throws -> PPOStats {
        guard !rollouts.isEmpty else { throw LlamaError.invalidArgument("a PPO iteration needs rollouts") }
        for r in rollouts where r.prompt.isEmpty || r.response.isEmpty {
            throw LlamaError.invalidArgument("a rollout needs a prompt and an answer of at least one token")
        }
        let o = options
        var stats = PPOStats()
        stats.rollouts = rollouts.count
        let (old, ref, values) = try evaluate(rollouts)
        var advantages: [[Float]] = [], returns: [[Float]] = []
        for (i, r) in rollouts.enumerated() {
            let t = PPO.tokenRewards(score: r.score, logProbs: old[i], referenceLogProbs: ref[i], beta: o.klCoefficient)
            let g = PPO.advantages(rewards: t.rewards, values: values[i], gamma: o.gamma, lambda: o.lambda)
            advantages.append(g.advantages)
            returns.append(g.returns)
            let kl = t.kl.reduce(0.0) { $0 + Double($1) }
            stats.kl += kl
            stats.nonScoreReward -= Double(o.klCoefficient) * kl
            stats.meanScore += Double(r.score)
            stats.tokens += r.response.count
            stats.meanValue += values[i].reduce(0.0) { $0 + Double($1) }
            stats.meanReturn += g.returns.reduce(0.0) { $0 + Double($1) }
        }
        stats.klPerToken = stats.kl / Double(stats.tokens)
        stats.meanValue /= Double(stats.tokens)
        stats.meanReturn /= Double(stats.tokens)
        stats.kl /= Double(rollouts.count)
        stats.nonScoreReward /= Double(rollouts.count)
        stats.meanScore /= Double(rollouts.count)
        // Advantages whitened over every answer token of the iteration, as TRL does.
        let flat = PPO.whiten(advantages.flatMap { $0 })
        var offset = 0
        for i in advantages.indices {
            advantages[i] = Array(flat[offset..<(offset + advantages[i].count)])
            offset += advantages[i].count
        }

        var rng = SplitMix64(seed: o.seed &+ UInt64(iteration) &* 0x9E37_79B9)
        let gradients = gradients
        for _ in 0..<o.epochs {
            var order = Array(rollouts.indices)
            order.shuffle(using: &rng)
            for start in stride(from: 0, to: order.count, by: o.miniBatch) {
                let chosen = Array(order[start..<min(start + o.miniBatch, order.count)])
                let p = try pack(chosen.map { rollouts[$0] })
                let f = try model.policyForward(tokens: p.tokens, targets: p.targets)
                let rowsUsed = p.rows.flatMap { $0 }  // every answer token's row, rollout after rollout
                let newLP = rowsUsed.map { f.logProbs[$0] }, newV = rowsUsed.map { f.values[$0] }
                let pl = PPO.policyLoss(logProbs: newLP, oldLogProbs: chosen.flatMap { old[$0] },
                                        advantages: chosen.flatMap { advantages[$0] }, clip: o.clip)
                let vl = PPO.valueLoss(values: newV, oldValues: chosen.flatMap { values[$0] },
                                       returns: chosen.flatMap { returns[$0] }, clip: o.valueClip)
                var dLogProbs = [Float](repeating: 0, count: p.targets.count), dValues = dLogProbs
                for (k, row) in rowsUsed.enumerated() {
                    dLogProbs[row] = pl.gradient[k]
                    dValues[row] = o.valueCoefficient * vl.gradient[k]
                }
                gradients.zero()
                valueGradients.zero()
                try model.policyBackward(tokens: p.tokens, dLogProbs: dLogProbs, dValues: dValues, into: baseGradients,
                                         valueGradients: valueGradients)
                let norm = AdamW.clip([(optimizer, gradients), (valueOptimizer, valueGradients)], maxNorm: o.adamw.clipNorm)
                optimizer.update(trained, gradients: gradients, lr: o.learningRate)
                valueOptimizer.update(valueHead, gradients: valueGradients, lr: o.valueLearningRate)
                stats.policyLoss += pl.loss
                stats.valueLoss += vl.loss
                stats.clipFraction += pl.clipFraction
                stats.valueClipFraction += vl.clipFraction
                stats.approxKL += pl.approxKL
                stats.entropy += rowsUsed.reduce(0.0) { $0 + Double(f.entropies[$1]) } / Double(rowsUsed.count)
                stats.gradientNorm += Double(norm)
                stats.steps += 1
            }
        }
        let steps = Double(stats.steps)
        stats.policyLoss /= steps
        stats.valueLoss /= steps
        stats.clipFraction /= steps
        stats.valueClipFraction /= steps
        stats.approxKL /= steps
        stats.entropy /= steps
        stats.gradientNorm /= steps
        iteration += 1
        return stats
    }

    // MARK: Checkpoints

    struct CheckpointHeader: Codable {
        var format = 1
        var model: ModelShape
        /// nil: every weight trained (the buffers then hold the policy's weights).
        var lora: LoRAConfig?
        var options: PPOOptions
        var sequenceLength: Int
        var iteration: Int
        var optimizerSteps: Int
        /// Values trained: the adapters', or the weights'.
        var adapterCount: Int
        /// The caller's own state (prompt position, running reward statistics), as JSON.
        var state: Data
    }

    static let checkpointMagic = "LSPPO001"

    /// Writes what trains (the adapters, or the policy's weights), the value head, both
    /// optimizers' moments and `state` atomically.
    public func save(to path: String, state: Data) throws {
        let header = CheckpointHeader(model: ModelShape(parameters.config), lora: adapters?.config, options: options,
                                      sequenceLength: sequenceLength, iteration: iteration, optimizerSteps: optimizer.step,
                                      adapterCount: trained.count, state: state)
        try CheckpointFile.write(path, magic: Self.checkpointMagic, header: header,
                                 buffers: [trained, optimizer.m, optimizer.v, valueHead, valueOptimizer.m, valueOptimizer.v])
    }

    /// A trainer continuing the run saved at `path`, on the same base `parameters`. Returns the
    /// caller's state.
    public static func resume(_ path: String, parameters: TrainableParameters, pool: ThreadPool = .shared) throws -> (PPOTrainer, Data) {
        let (file, header, dataOffset) = try CheckpointFile.read(path, magic: checkpointMagic, what: "PPO checkpoint", as: CheckpointHeader.self)
        guard header.model.config == parameters.config else {
            throw LlamaError.invalidArgument("\(path) trains a model of another shape than the one given")
        }
        let trainer = try PPOTrainer(parameters: parameters, lora: header.lora, options: header.options,
                                     sequenceLength: header.sequenceLength, pool: pool)
        let a = trainer.trained.count, d = parameters.config.dim + 1
        guard header.adapterCount == a else {
            let what = header.lora == nil ? "the model has" : "its LoRA settings make"
            throw LlamaError.corrupt(file: path, offset: 16, reason: "\(header.adapterCount) trained values recorded, \(what) \(a)")
        }
        let needed = (3 * a + 3 * d) * 4
        guard file.size == dataOffset + needed else {
            throw LlamaError.truncated(file: path, offset: dataOffset, needed: needed, what: "trained values, value head and optimizer moments")
        }
        var offset = dataOffset
        for buffer in [trainer.trained, trainer.optimizer.m, trainer.optimizer.v,
                       trainer.valueHead, trainer.valueOptimizer.m, trainer.valueOptimizer.v] {
            UnsafeMutableRawPointer(buffer.pointer).copyMemory(from: file.base + offset, byteCount: buffer.count * 4)
            offset += buffer.count * 4
        }
        trainer.iteration = header.iteration
        trainer.optimizer.step = header.optimizerSteps
        trainer.valueOptimizer.step = header.optimizerSteps
        return (trainer, header.state)
    }
}

/// Running mean and standard deviation of every score seen so far (Welford): Llama 2's
/// "whitened" reward, kept across iterations (TRL's `use_score_scaling` with running moments)
/// so a rising score still reads as rising after whitening.
public struct RunningMoments: Sendable, Codable, Equatable {
    public var count = 0
    public var mean = 0.0
    public var m2 = 0.0

    public init() {}

    public mutating func add(_ values: [Float]) {
        for x in values.map(Double.init) {
            count += 1
            let delta = x - mean
            mean += delta / Double(count)
            m2 += delta * (x - mean)
        }
    }

    public var standardDeviation: Double { count > 1 ? (m2 / Double(count - 1)).squareRoot() : 1 }

    /// (x − mean) / std, with the statistics as they are.
    public func whiten(_ x: Float) -> Float {
        Float((Double(x) - mean) / max(standardDeviation, 1e-8))
    }
}
