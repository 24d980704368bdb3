import Foundation
import LlamaKernels

/// The forward and backward pass of the Llama architecture over a batch of sequences, for
/// training: loss and gradients of every parameter.
///
/// Written as paired forward/backward functions per operation (llm.c's way) rather than a tape:
/// the architecture is fixed, so the order of the backward pass is known, every activation the
/// backward pass needs has a named buffer allocated once, and each backward function sits next
/// to the forward one it differentiates. Attention keeps only each row's log-sum-exp and
/// recomputes its probabilities in the backward pass (FlashAttention's trick, SPEC.md §3): no
/// score matrix is ever stored, and one head's row is the most that exists at a time.
///
/// Matrices are `[out, in]` like PyTorch's. All three products of a linear layer (forward, input
/// gradient, weight gradient) go through `gemm`, which reads either operand transposed in place.
public final class BackpropModel: @unchecked Sendable {
    public let parameters: TrainableParameters
    /// Sequences per batch and tokens per sequence.
    public let batchSize: Int
    public let sequenceLength: Int
    public let pool: ThreadPool
    /// The backward pass stops above this many lower layers (and skips the embedding when it is
    /// more than 0): their gradients stay untouched, and the work is saved.
    public var frozenLayers = 0
    /// Tokens per sequence in the current batch, at most `sequenceLength`: a batch of short
    /// sequences (a reward batch padded to its longest) runs over `batchSize × activeLength`
    /// rows only. Tokens and targets are (batchSize, activeLength) row-major.
    public var activeLength: Int {
        didSet { precondition((1...sequenceLength).contains(activeLength), "activeLength \(activeLength) is not 1...\(sequenceLength)") }
    }
    /// Whether this pass trains (LoRA dropout applies) or only evaluates.
    public var training = true
    /// With false, forward passes leave the LoRA branches out: the base model, which is PPO's
    /// frozen reference policy when the policy is trained through adapters (one copy of the
    /// weights serves both). Backward passes need it true.
    public var loraEnabled = true
    /// PPO's frozen reference policy when the policy trains every weight: parameters of the same
    /// layout that forward passes read instead while `readsReference` is true (no activations of
    /// their own: the batch buffers are shared). Backward passes need `readsReference` false.
    public var reference: TrainableParameters? {
        didSet { precondition(reference.map { $0.layout.count == layout.count && $0.config == config } ?? true, "a reference of another layout") }
    }
    public var readsReference = false {
        didSet { precondition(!readsReference || reference != nil, "no reference parameters to read") }
    }
    /// The weights forward passes read.
    private var forwardWeights: UnsafeMutablePointer<Float> {
        (readsReference ? reference! : parameters).values.pointer
    }
    var config: ModelConfig { parameters.config }
    var layout: ParameterLayout { parameters.layout }

    // LoRA: the adapters, their gradients, each adapter's scale · dropout(x) Aᵀ of the last
    // forward pass (rows × rank), and scratch.
    public private(set) var lora: LoRAAdapters?
    public private(set) var loraGradients: FloatBuffer?
    private var loraProjections: [FloatBuffer] = []
    private var loraInput = FloatBuffer(count: 0), loraDelta = FloatBuffer(count: 0), loraRank = FloatBuffer(count: 0)
    /// Numbers the forward passes; the dropout masks of a pass are a hash of it (settable so a
    /// test can repeat a pass with the same masks).
    public var loraPass: UInt64 = 0
    var rows: Int { batchSize * activeLength }

    /// What one layer's backward pass reads, saved by its forward pass.
    struct LayerActivations {
        let input: FloatBuffer        // (n, dim) residual stream entering the layer
        let norm1: FloatBuffer        // (n, dim) RMSNorm(input)
        let rstd1: FloatBuffer        // (n) 1 / rms of each input row
        let q: FloatBuffer            // (n, queryDim) after RoPE
        let k: FloatBuffer            // (n, kvDim) after RoPE
        let v: FloatBuffer            // (n, kvDim)
        let lse: FloatBuffer          // (batch, heads, T) log-sum-exp of each attention row
        let attention: FloatBuffer    // (n, queryDim) attention output before W_o
        let middle: FloatBuffer       // (n, dim) residual stream after attention
        let norm2: FloatBuffer        // (n, dim)
        let rstd2: FloatBuffer        // (n)
        let gate: FloatBuffer         // (n, hidden) W1 x
        let up: FloatBuffer           // (n, hidden) W3 x
        let act: FloatBuffer          // (n, hidden) silu(gate) * up
    }
    private let layers: [LayerActivations]
    private let final: FloatBuffer       // (n, dim) residual stream after the last layer
    private let finalNorm: FloatBuffer   // (n, dim)
    private let finalRstd: FloatBuffer   // (n)
    /// (n, vocab), then d loss / d logits; allocated on first use (a reward model never needs it).
    private lazy var logits = FloatBuffer(count: batchSize * sequenceLength * config.vocabSize)
    private let cos: [Float], sin: [Float]  // (T, ropeDim / 2)

    // Backward-pass scratch.
    private let dx: FloatBuffer, dNorm: FloatBuffer, dMiddle: FloatBuffer
    private let dq: FloatBuffer, dk: FloatBuffer, dv: FloatBuffer, dAttention: FloatBuffer
    private let dGate: FloatBuffer, dUp: FloatBuffer, dAct: FloatBuffer

    public init(parameters: TrainableParameters, batchSize: Int, sequenceLength: Int, pool: ThreadPool = .shared) {
        self.parameters = parameters
        self.batchSize = batchSize
        self.sequenceLength = sequenceLength
        self.activeLength = sequenceLength
        self.pool = pool
        let c = parameters.config
        let n = batchSize * sequenceLength
        func buffer(_ count: Int) -> FloatBuffer { FloatBuffer(count: count) }
        layers = (0..<c.layerCount).map { _ in
            LayerActivations(input: buffer(n * c.dim), norm1: buffer(n * c.dim), rstd1: buffer(n),
                             q: buffer(n * c.queryDim), k: buffer(n * c.kvDim), v: buffer(n * c.kvDim),
                             lse: buffer(n * c.headCount), attention: buffer(n * c.queryDim),
                             middle: buffer(n * c.dim), norm2: buffer(n * c.dim), rstd2: buffer(n),
                             gate: buffer(n * c.hiddenDim), up: buffer(n * c.hiddenDim), act: buffer(n * c.hiddenDim))
        }
        final = buffer(n * c.dim)
        finalNorm = buffer(n * c.dim)
        finalRstd = buffer(n)
        var cos: [Float] = [], sin: [Float] = []
        for p in 0..<sequenceLength {
            let t = RoPETable(position: p, ropeDim: c.ropeDim, theta: c.ropeTheta)
            cos += t.cos
            sin += t.sin
        }
        self.cos = cos
        self.sin = sin
        dx = buffer(n * c.dim); dNorm = buffer(n * c.dim); dMiddle = buffer(n * c.dim)
        dq = buffer(n * c.queryDim); dk = buffer(n * c.kvDim); dv = buffer(n * c.kvDim); dAttention = buffer(n * c.queryDim)
        dGate = buffer(n * c.hiddenDim); dUp = buffer(n * c.hiddenDim); dAct = buffer(n * c.hiddenDim)
    }

    /// Trains `adapters` instead of the base weights: from now on the forward pass adds each
    /// adapter's branch, and the backward pass leaves the base matrices' gradients alone (they are
    /// frozen, as PEFT freezes them) and adds the adapters' into `loraGradients`. The reward head,
    /// when there is one, still gets its gradient in the base buffer.
    public func attach(_ adapters: LoRAAdapters) {
        precondition(adapters.model.layerCount == config.layerCount && adapters.model.dim == config.dim)
        lora = adapters
        loraGradients = FloatBuffer(count: adapters.count)
        let n = batchSize * sequenceLength, widest = max(config.dim, config.hiddenDim, config.queryDim)
        loraProjections = adapters.adapters.map { _ in FloatBuffer(count: n * adapters.config.rank) }
        loraInput = FloatBuffer(count: adapters.config.dropout > 0 ? n * widest : 0)
        loraDelta = FloatBuffer(count: n * widest)
        loraRank = FloatBuffer(count: n * adapters.config.rank)
    }

    /// Runs the batch forward and backward: `tokens` and `targets` are (batchSize, activeLength)
    /// row-major; a target of -1 is ignored (no loss, no gradient). Adds
    /// `gradScale * d(Σ token losses)/dθ` to `gradients` (same layout as the parameters), so
    /// `gradScale = 1 / targets counted over all micro-batches` gives the mean loss's gradient.
    /// Returns the sum of the token losses (natural log) and how many targets counted.
    @discardableResult
    public func accumulateGradients(tokens: [Int], targets: [Int], gradScale: Float,
                                    into gradients: FloatBuffer) throws -> (lossSum: Double, count: Int) {
        let result = try forward(tokens: tokens, targets: targets, gradScale: gradScale)
        backward(tokens: tokens, gradients: gradients)
        return result
    }

    /// Per-row results of the last pass through the LM head.
    private var rowLosses = FloatBuffer(count: 0), rowEntropies = FloatBuffer(count: 0)

    /// For policy gradients (PPO): adds the gradient of `Σ_r weights[r] · (−log p(targets[r]))`
    /// to `gradients` and returns each row's log-probability of its target and the entropy of its
    /// next-token distribution (0 for ignored targets). With weights d loss / d log p negated,
    /// this is the backward pass of any loss written in terms of token log-probabilities.
    public func accumulateWeightedGradients(tokens: [Int], targets: [Int], weights: [Float], into gradients: FloatBuffer) throws
        -> (logProbs: [Float], entropies: [Float]) {
        guard weights.count == rows else {
            throw LlamaError.invalidArgument("a training batch needs \(rows) weights, got \(weights.count)")
        }
        try forward(tokens: tokens, targets: targets, gradScale: 1, weights: weights)
        backward(tokens: tokens, gradients: gradients)
        return rowResults(targets)
    }

    /// Each row's log-probability of its target and the entropy of its next-token distribution,
    /// without gradients (0 for ignored targets).
    public func tokenLogProbs(tokens: [Int], targets: [Int]) throws -> (logProbs: [Float], entropies: [Float]) {
        let wasTraining = training
        training = false
        defer { training = wasTraining }
        try forward(tokens: tokens, targets: targets, gradScale: 0)
        return rowResults(targets)
    }

    private func rowResults(_ targets: [Int]) -> (logProbs: [Float], entropies: [Float]) {
        let n = rows
        return ((0..<n).map { targets[$0] >= 0 ? -rowLosses[$0] : 0 }, (0..<n).map { targets[$0] >= 0 ? rowEntropies[$0] : 0 })
    }

    /// Loss only: the sum of the token losses and how many targets counted.
    public func loss(tokens: [Int], targets: [Int]) throws -> (lossSum: Double, count: Int) {
        let wasTraining = training
        training = false
        defer { training = wasTraining }
        return try forward(tokens: tokens, targets: targets, gradScale: 0)
    }

    // MARK: Policy and value head (PPO)

    /// PPO's value head on the final hidden states (after the last RMSNorm, where transformers'
    /// `AutoModelForCausalLMWithValueHead` reads them): `dim` weights, then a bias. The trunk is
    /// the policy's, so the value loss trains it too (TRL's shared-trunk layout).
    public var valueHead: FloatBuffer? {
        didSet { precondition(valueHead.map { $0.count == config.dim + 1 } ?? true, "a value head has dim + 1 values") }
    }
    private var pendingPolicyBackward = false

    /// The forward half of a policy-gradient step: each row's log-probability of its target,
    /// the entropy of its distribution (0 for ignored targets) and, with a value head, its value.
    /// `policyBackward` then adds the gradient of any loss written in these.
    public func policyForward(tokens: [Int], targets: [Int]) throws -> (logProbs: [Float], entropies: [Float], values: [Float]) {
        // With gradScale 1 and no weights each row of `logits` is left holding p − onehot(target),
        // the gradient of −log p(target); the backward half scales it per row.
        try forward(tokens: tokens, targets: targets, gradScale: 1)
        pendingPolicyBackward = true
        let r = rowResults(targets)
        return (r.logProbs, r.entropies, rowValues())
    }

    private func rowValues() -> [Float] {
        guard let head = valueHead else { return [] }
        let d = config.dim, w = head.pointer, x = finalNorm.pointer
        return (0..<rows).map { r in
            var sum = w[d]
            for j in 0..<d { sum += w[j] * x[r * d + j] }
            return sum
        }
    }

    /// The backward half, right after `policyForward` on the same batch: adds d loss / dθ to
    /// `gradients` (and the value head's to `valueGradients`), given d loss / d log p for each
    /// row and d loss / d value (nil: no value loss).
    public func policyBackward(tokens: [Int], dLogProbs: [Float], dValues: [Float]?, into gradients: FloatBuffer,
                               valueGradients: FloatBuffer?) throws {
        guard pendingPolicyBackward else {
            throw LlamaError.invalidArgument("policyBackward needs the policyForward of the same batch just before it")
        }
        let c = config, n = rows, v = c.vocabSize, d = c.dim
        guard dLogProbs.count == n, (dValues?.count ?? n) == n else {
            throw LlamaError.invalidArgument("a policy batch needs \(n) log-probability gradients and values, got \(dLogProbs.count) and \(dValues?.count ?? n)")
        }
        if dValues != nil, valueHead != nil, valueGradients?.count != d + 1 {
            throw LlamaError.invalidArgument("value gradients need a buffer of dim + 1 values")
        }
        pendingPolicyBackward = false
        // d loss / d logits = (d loss / d log p) · (onehot − p) = −(d loss / d log p) · (p − onehot).
        let lp = SendablePointer(logits.pointer)
        let chunks = min(n, 4 * pool.threadCount)
        dLogProbs.withUnsafeBufferPointer { db in
            let dp = SendablePointer(UnsafeMutablePointer(mutating: db.baseAddress!))
            pool.parallelFor(chunks) { chunk in
                for r in (chunk * n / chunks)..<((chunk + 1) * n / chunks) {
                    let row = lp.pointer + r * v, scale = -dp.pointer[r]
                    for j in 0..<v { row[j] *= scale }
                }
            }
        }
        linearBackward(dy: logits, x: finalNorm, w: parameters.values.pointer + layout.output, dw: gradients.pointer + layout.output,
                       out: v, in: d, dx: dNorm, accumulate: false)
        if let dValues, let head = valueHead {
            let w = head.pointer, g = valueGradients!.pointer
            for r in 0..<n where dValues[r] != 0 {
                let dv = dValues[r]
                for j in 0..<d {
                    dNorm[r * d + j] += dv * w[j]
                    g[j] += dv * finalNorm[r * d + j]
                }
                g[d] += dv
            }
        }
        backwardTrunk(tokens: tokens, gradients: gradients)
    }

    // MARK: Reward head

    /// The reward head's scalar at `positions` (row indices into the batch, one per sequence
    /// usually: its last token): `score.weight · finalNorm[position]`. Keeps the activations
    /// for `accumulateScoreGradients`.
    ///
    /// With `fromLayer` > 0 the embedding and the layers below it are skipped: the caller has
    /// written the residual stream entering that layer into `residual(enteringLayer:)` (states
    /// saved from an earlier pass while those layers are frozen).
    public func scores(tokens: [Int], positions: [Int], fromLayer: Int = 0) throws -> [Float] {
        guard let score = layout.score else { throw LlamaError.invalidArgument("these parameters have no reward head (score.weight)") }
        for r in positions where r < 0 || r >= rows {
            throw LlamaError.invalidArgument("reward position \(r) is outside the batch of \(rows) rows")
        }
        try forwardTrunk(tokens: tokens, fromLayer: fromLayer)
        let d = config.dim, w = forwardWeights + score
        return positions.map { r in
            var sum: Float = 0
            for j in 0..<d { sum += w[j] * finalNorm[r * d + j] }
            return sum
        }
    }

    /// After `scores` on the same batch: adds d loss / dθ to `gradients` given
    /// `dScores[i]` = d loss / d score at `positions[i]`.
    public func accumulateScoreGradients(tokens: [Int], positions: [Int], dScores: [Float], into gradients: FloatBuffer) {
        let d = config.dim, score = layout.score!
        let w = parameters.values.pointer + score, dw = gradients.pointer + score
        dNorm.zero()
        for (r, ds) in zip(positions, dScores) {
            for j in 0..<d {
                dNorm[r * d + j] += ds * w[j]
                dw[j] += ds * finalNorm[r * d + j]
            }
        }
        backwardTrunk(tokens: tokens, gradients: gradients)
    }

    // MARK: Forward

    @discardableResult
    private func forward(tokens: [Int], targets: [Int], gradScale: Float, weights: [Float]? = nil) throws -> (lossSum: Double, count: Int) {
        let c = config, n = rows
        pendingPolicyBackward = false
        guard targets.count == n else {
            throw LlamaError.invalidArgument("a training batch needs \(batchSize) × \(activeLength) = \(n) targets, got \(targets.count)")
        }
        for t in targets where t < -1 || t >= c.vocabSize { throw LlamaError.invalidToken(t, vocabSize: c.vocabSize) }
        try forwardTrunk(tokens: tokens)
        linear(logits, finalNorm, forwardWeights + layout.output, out: c.vocabSize, in: c.dim)
        return crossEntropy(targets: targets, gradScale: gradScale, weights: weights)
    }

    /// The residual stream entering layer `l` ((rows, dim) row-major; `l` = layerCount is the
    /// last layer's output), as the last forward pass left it.
    public func residual(enteringLayer l: Int) -> UnsafeMutablePointer<Float> {
        precondition((0...config.layerCount).contains(l))
        return (l < config.layerCount ? layers[l].input : final).pointer
    }

    /// Embedding, every layer and the final norm: `finalNorm` holds the last hidden states.
    /// From `fromLayer` > 0, the residual stream entering that layer is already in place.
    private func forwardTrunk(tokens: [Int], fromLayer: Int = 0) throws {
        let c = config, n = rows
        guard tokens.count == n else {
            throw LlamaError.invalidArgument("a training batch needs \(batchSize) × \(activeLength) = \(n) tokens, got \(tokens.count)")
        }
        precondition((0...c.layerCount).contains(fromLayer))
        loraPass &+= 1
        for t in tokens where t < 0 || t >= c.vocabSize { throw LlamaError.invalidToken(t, vocabSize: c.vocabSize) }
        let p = forwardWeights
        if fromLayer == 0 {
            let x = layers.first?.input ?? final
            for (i, t) in tokens.enumerated() {
                (x.pointer + i * c.dim).update(from: p + layout.embedding + t * c.dim, count: c.dim)
            }
        }
        for l in fromLayer..<c.layerCount {
            let s = layout.layers[l], a = layers[l]
            let next = l + 1 < c.layerCount ? layers[l + 1].input : final
            rmsnormForward(a.norm1, a.rstd1, a.input, p + s.attentionNorm)
            linear(a.q, a.norm1, p + s.wq, out: c.queryDim, in: c.dim, lora: (l, .q))
            linear(a.k, a.norm1, p + s.wk, out: c.kvDim, in: c.dim, lora: (l, .k))
            linear(a.v, a.norm1, p + s.wv, out: c.kvDim, in: c.dim, lora: (l, .v))
            rope(a.q, heads: c.headCount, inverse: false)
            rope(a.k, heads: c.kvHeadCount, inverse: false)
            attentionForward(a)
            linear(a.middle, a.attention, p + s.wo, out: c.dim, in: c.queryDim, lora: (l, .o))
            add(a.middle, a.input, count: n * c.dim)
            rmsnormForward(a.norm2, a.rstd2, a.middle, p + s.ffnNorm)
            linear(a.gate, a.norm2, p + s.w1, out: c.hiddenDim, in: c.dim, lora: (l, .gate))
            linear(a.up, a.norm2, p + s.w3, out: c.hiddenDim, in: c.dim, lora: (l, .up))
            // silu(gate) * up, eight at a time with the C library's exp bits.
            swiglu(into: a.act.pointer, a.gate.pointer, a.up.pointer, n * c.hiddenDim)
            linear(next, a.act, p + s.w2, out: c.dim, in: c.hiddenDim, lora: (l, .down))
            add(next, a.middle, count: n * c.dim)
        }
        rmsnormForward(finalNorm, finalRstd, final, p + layout.norm)
    }

    /// Turns `logits` into d loss / d logits in place (scaled by `gradScale`, and row r by
    /// `weights[r]` when given; zero rows for ignored targets) and returns the summed loss. Each
    /// row's loss (−log p(target)) and the entropy of its distribution stay in `rowLosses` and
    /// `rowEntropies`.
    private func crossEntropy(targets: [Int], gradScale: Float, weights: [Float]? = nil) -> (lossSum: Double, count: Int) {
        let v = config.vocabSize, n = rows
        let losses = FloatBuffer(count: n), entropies = FloatBuffer(count: n)
        rowLosses = losses
        rowEntropies = entropies
        let lp = SendablePointer(logits.pointer), loss = SendablePointer(losses.pointer), entropy = SendablePointer(entropies.pointer)
        let rowWeights = weights ?? []
        let chunks = min(n, 4 * pool.threadCount)
        var targetIDs = targets
        targetIDs.withUnsafeMutableBufferPointer { tb in
            let tp = SendablePointer(tb.baseAddress!)
            pool.parallelFor(chunks) { chunk in
                for r in (chunk * n / chunks)..<((chunk + 1) * n / chunks) {
                    let row = lp.pointer + r * v
                    let target = tp.pointer[r]
                    guard target >= 0 else {
                        row.update(repeating: 0, count: v)
                        continue
                    }
                    let targetLogit = row[target]
                    var m = -Float.infinity
                    for j in 0..<v { m = max(m, row[j]) }
                    var sum = 0.0, weighted = 0.0
                    for j in 0..<v {
                        let e = expf(row[j] - m)
                        weighted += Double(e) * Double(row[j])
                        row[j] = e
                        sum += Double(e)
                    }
                    let logSum = Double(m) + log(sum)
                    loss.pointer[r] = Float(logSum - Double(targetLogit))
                    // H = −Σ p log p = log Σ e^l − Σ p l.
                    entropy.pointer[r] = Float(logSum - weighted / sum)
                    let g = rowWeights.isEmpty ? gradScale : gradScale * rowWeights[r]
                    let scale = g / Float(sum)
                    for j in 0..<v { row[j] *= scale }
                    row[target] -= g
                }
            }
        }
        var total = 0.0, count = 0
        for r in 0..<n where targets[r] >= 0 {
            total += Double(losses[r])
            count += 1
        }
        return (total, count)
    }

    // MARK: Backward

    private func backward(tokens: [Int], gradients: FloatBuffer) {
        let c = config
        // Output projection: d loss / d finalNorm into dNorm.
        linearBackward(dy: logits, x: finalNorm, w: parameters.values.pointer + layout.output, dw: gradients.pointer + layout.output,
                       out: c.vocabSize, in: c.dim, dx: dNorm, accumulate: false)
        backwardTrunk(tokens: tokens, gradients: gradients)
    }

    /// From d loss / d finalNorm (in `dNorm`) back to the embedding.
    private func backwardTrunk(tokens: [Int], gradients: FloatBuffer) {
        precondition(loraEnabled || lora == nil, "a backward pass with the LoRA branches left out")
        precondition(!readsReference, "a backward pass after a forward pass of the reference")
        let c = config, n = rows
        let p = parameters.values.pointer, g = gradients.pointer
        rmsnormBackward(dx: dx, dy: dNorm, x: final, rstd: finalRstd, w: p + layout.norm, dw: g + layout.norm, accumulate: false)
        for l in stride(from: c.layerCount - 1, through: frozenLayers, by: -1) {
            let s = layout.layers[l], a = layers[l]
            // Feed-forward: next = middle + W2 act; dx is d loss / d next.
            linearBackward(dy: dx, x: a.act, w: p + s.w2, dw: g + s.w2, out: c.dim, in: c.hiddenDim, dx: dAct, accumulate: false, lora: (l, .down))
            for i in 0..<(n * c.hiddenDim) {
                let gate = a.gate[i], sig = 1 / (1 + expf(-gate))
                let d = dAct[i]
                dUp[i] = d * gate * sig
                dGate[i] = d * a.up[i] * sig * (1 + gate * (1 - sig))
            }
            linearBackward(dy: dGate, x: a.norm2, w: p + s.w1, dw: g + s.w1, out: c.hiddenDim, in: c.dim, dx: dNorm, accumulate: false, lora: (l, .gate))
            linearBackward(dy: dUp, x: a.norm2, w: p + s.w3, dw: g + s.w3, out: c.hiddenDim, in: c.dim, dx: dNorm, accumulate: true, lora: (l, .up))
            dMiddle.copy(from: dx)
            rmsnormBackward(dx: dMiddle, dy: dNorm, x: a.middle, rstd: a.rstd2, w: p + s.ffnNorm, dw: g + s.ffnNorm, accumulate: true)
            // Attention: middle = input + W_o attention.
            linearBackward(dy: dMiddle, x: a.attention, w: p + s.wo, dw: g + s.wo, out: c.dim, in: c.queryDim, dx: dAttention, accumulate: false, lora: (l, .o))
            attentionBackward(a)
            rope(dq, heads: c.headCount, inverse: true)
            rope(dk, heads: c.kvHeadCount, inverse: true)
            linearBackward(dy: dq, x: a.norm1, w: p + s.wq, dw: g + s.wq, out: c.queryDim, in: c.dim, dx: dNorm, accumulate: false, lora: (l, .q))
            linearBackward(dy: dk, x: a.norm1, w: p + s.wk, dw: g + s.wk, out: c.kvDim, in: c.dim, dx: dNorm, accumulate: true, lora: (l, .k))
            linearBackward(dy: dv, x: a.norm1, w: p + s.wv, dw: g + s.wv, out: c.kvDim, in: c.dim, dx: dNorm, accumulate: true, lora: (l, .v))
            dx.copy(from: dMiddle)
            rmsnormBackward(dx: dx, dy: dNorm, x: a.input, rstd: a.rstd1, w: p + s.attentionNorm, dw: g + s.attentionNorm, accumulate: true)
        }
        // Embedding rows (the output matrix's gradient is already there when tied).
        guard frozenLayers == 0, lora == nil else { return }
        for (i, t) in tokens.enumerated() {
            let row = g + layout.embedding + t * c.dim
            for j in 0..<c.dim { row[j] += dx[i * c.dim + j] }
        }
    }

    // MARK: Linear layers

    /// y (n, out) = x (n, in) · Wᵀ, plus the layer's LoRA branch when it has one.
    private func linear(_ y: FloatBuffer, _ x: FloatBuffer, _ w: UnsafePointer<Float>, out: Int, in: Int,
                        lora target: (layer: Int, target: LoRATarget)? = nil) {
        gemm(m: rows, n: out, k: `in`, x.pointer, lda: `in`, aTransposed: false, w, ldb: `in`, bTransposed: true,
             y.pointer, ldc: out, accumulate: false, pool: pool)
        if let target, let lora, loraEnabled, let i = lora.adapterIndex(layer: target.layer, target.target) {
            loraForward(i, x: x, y: y)
        }
    }

    /// For y = x Wᵀ: dW += dyᵀ x and dx = dy W (or += with `accumulate`). With LoRA attached the
    /// base W is frozen (no dW) and the adapter's gradients and input gradient are added.
    private func linearBackward(dy: FloatBuffer, x: FloatBuffer, w: UnsafePointer<Float>, dw: UnsafeMutablePointer<Float>,
                                out: Int, in: Int, dx: FloatBuffer, accumulate: Bool,
                                lora target: (layer: Int, target: LoRATarget)? = nil) {
        if lora == nil {
            gemm(m: out, n: `in`, k: rows, dy.pointer, lda: out, aTransposed: true, x.pointer, ldb: `in`, bTransposed: false,
                 dw, ldc: `in`, accumulate: true, pool: pool)
        }
        gemm(m: rows, n: `in`, k: out, dy.pointer, lda: out, aTransposed: false, w, ldb: `in`, bTransposed: false,
             dx.pointer, ldc: `in`, accumulate: accumulate, pool: pool)
        if let target, let lora, let i = lora.adapterIndex(layer: target.layer, target.target) {
            loraBackward(i, x: x, dy: dy, dx: dx)
        }
    }

    // MARK: LoRA

    /// dropout(x) for adapter `i` in this pass: x itself without dropout (or when evaluating),
    /// else a copy with dropped elements zeroed and kept ones scaled by 1 / (1 − p).
    private func loraDropped(_ i: Int, _ x: FloatBuffer, width: Int) -> UnsafePointer<Float> {
        guard let lora, lora.config.dropout > 0, training else { return UnsafePointer(x.pointer) }
        let p = lora.config.dropout, keep = 1 / (1 - p)
        let threshold = UInt64(Double(p) * 0x1.0p53), pass = loraPass
        let count = rows * width
        let src = SendablePointer(x.pointer), dst = SendablePointer(loraInput.pointer)
        let pieces = max(1, min(4 * pool.threadCount, count / 4096))
        pool.parallelFor(pieces) { piece in
            for e in (piece * count / pieces)..<((piece + 1) * count / pieces) {
                dst.pointer[e] = LoRAAdapters.keeps(pass: pass, adapter: i, element: e, threshold: threshold) ? src.pointer[e] * keep : 0
            }
        }
        return UnsafePointer(loraInput.pointer)
    }

    /// y += scale · dropout(x) Aᵀ Bᵀ, keeping u = scale · dropout(x) Aᵀ for the backward pass.
    private func loraForward(_ i: Int, x: FloatBuffer, y: FloatBuffer) {
        let lora = lora!, ad = lora.adapters[i], r = lora.config.rank
        let a = lora.values.pointer + ad.a, b = lora.values.pointer + ad.b, u = loraProjections[i].pointer
        let xd = loraDropped(i, x, width: ad.inputs)
        gemm(m: rows, n: r, k: ad.inputs, xd, lda: ad.inputs, aTransposed: false, a, ldb: ad.inputs, bTransposed: true,
             u, ldc: r, accumulate: false, pool: pool)
        let s = lora.config.scale
        for j in 0..<(rows * r) { u[j] *= s }
        gemm(m: rows, n: ad.outputs, k: r, u, lda: r, aTransposed: false, b, ldb: r, bTransposed: true,
             y.pointer, ldc: ad.outputs, accumulate: true, pool: pool)
    }

    /// dB += dyᵀ u;  du = scale · dy B;  dA += duᵀ dropout(x);  dx += dropout'(du A).
    private func loraBackward(_ i: Int, x: FloatBuffer, dy: FloatBuffer, dx: FloatBuffer) {
        let lora = lora!, ad = lora.adapters[i], r = lora.config.rank
        let a = lora.values.pointer + ad.a, b = lora.values.pointer + ad.b
        let g = loraGradients!.pointer, u = loraProjections[i].pointer, du = loraRank.pointer
        gemm(m: ad.outputs, n: r, k: rows, dy.pointer, lda: ad.outputs, aTransposed: true, u, ldb: r, bTransposed: false,
             g + ad.b, ldc: r, accumulate: true, pool: pool)
        gemm(m: rows, n: r, k: ad.outputs, dy.pointer, lda: ad.outputs, aTransposed: false, b, ldb: r, bTransposed: false,
             du, ldc: r, accumulate: false, pool: pool)
        let s = lora.config.scale
        for j in 0..<(rows * r) { du[j] *= s }
        let xd = loraDropped(i, x, width: ad.inputs)
        gemm(m: r, n: ad.inputs, k: rows, du, lda: r, aTransposed: true, xd, ldb: ad.inputs, bTransposed: false,
             g + ad.a, ldc: ad.inputs, accumulate: true, pool: pool)
        guard lora.config.dropout > 0, training else {
            gemm(m: rows, n: ad.inputs, k: r, du, lda: r, aTransposed: false, a, ldb: ad.inputs, bTransposed: false,
                 dx.pointer, ldc: ad.inputs, accumulate: true, pool: pool)
            return
        }
        // Through the dropout: the same mask and scale as the forward pass.
        let delta = loraDelta.pointer
        gemm(m: rows, n: ad.inputs, k: r, du, lda: r, aTransposed: false, a, ldb: ad.inputs, bTransposed: false,
             delta, ldc: ad.inputs, accumulate: false, pool: pool)
        let p = lora.config.dropout, keep = 1 / (1 - p), threshold = UInt64(Double(p) * 0x1.0p53)
        for e in 0..<(rows * ad.inputs) where LoRAAdapters.keeps(pass: loraPass, adapter: i, element: e, threshold: threshold) {
            dx[e] += delta[e] * keep
        }
    }

    // MARK: RMSNorm

    private func rmsnormForward(_ y: FloatBuffer, _ rstd: FloatBuffer, _ x: FloatBuffer, _ w: UnsafePointer<Float>) {
        let d = config.dim, eps = Double(config.rmsNormEps)
        for r in 0..<rows {
            let xr = x.pointer + r * d, yr = y.pointer + r * d
            var ss = 0.0
            for j in 0..<d { ss += Double(xr[j]) * Double(xr[j]) }
            let s = Float(1 / (ss / Double(d) + eps).squareRoot())
            rstd[r] = s
            for j in 0..<d { yr[j] = w[j] * (xr[j] * s) }
        }
    }

    /// y = w ⊙ x · r with r = (mean(x²) + eps)^(-1/2):
    /// dw += Σ_rows dy ⊙ x · r;  dx (+)= r · (w ⊙ dy) − x · r³ / d · Σ_j w_j dy_j x_j.
    private func rmsnormBackward(dx: FloatBuffer, dy: FloatBuffer, x: FloatBuffer, rstd: FloatBuffer,
                                 w: UnsafePointer<Float>, dw: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let d = config.dim
        for r in 0..<rows {
            let xr = x.pointer + r * d, dyr = dy.pointer + r * d, dxr = dx.pointer + r * d
            let s = rstd[r]
            var dot = 0.0
            for j in 0..<d {
                dot += Double(w[j] * dyr[j]) * Double(xr[j])
                dw[j] += dyr[j] * xr[j] * s
            }
            let k = Float(dot) * s * s * s / Float(d)
            for j in 0..<d {
                let v = s * w[j] * dyr[j] - xr[j] * k
                dxr[j] = accumulate ? dxr[j] + v : v
            }
        }
    }

    // MARK: RoPE

    /// Rotates (or, `inverse`, rotates back: the backward pass of a rotation is its transpose)
    /// every head of every row by its position's angles.
    private func rope(_ x: FloatBuffer, heads: Int, inverse: Bool) {
        let c = config, half = c.ropeDim / 2, width = heads * c.headDim
        let sign: Float = inverse ? -1 : 1
        for r in 0..<rows {
            let pos = r % activeLength
            let cs = pos * half
            for h in 0..<heads {
                let head = x.pointer + r * width + h * c.headDim
                for i in 0..<half {
                    let (ia, ib) = c.ropeLayout == .interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
                    let a = head[ia], b = head[ib]
                    let co = cos[cs + i], si = sign * sin[cs + i]
                    head[ia] = a * co - b * si
                    head[ib] = a * si + b * co
                }
            }
        }
    }

    // MARK: Attention

    /// Causal attention of each sequence; keeps each row's log-sum-exp.
    private func attentionForward(_ a: LayerActivations) {
        let c = config, T = activeLength, hd = c.headDim
        let group = c.headCount / c.kvHeadCount
        let scale = 1 / Float(hd).squareRoot()
        let q = SendablePointer(a.q.pointer), k = SendablePointer(a.k.pointer), v = SendablePointer(a.v.pointer)
        let out = SendablePointer(a.attention.pointer), lse = SendablePointer(a.lse.pointer)
        pool.parallelFor(batchSize * c.headCount) { task in
            let b = task / c.headCount, h = task % c.headCount
            let kvHead = (h / group) * hd
            withUnsafeTemporaryAllocation(of: Float.self, capacity: T) { scores in
                let s = scores.baseAddress!
                for t in 0..<T {
                    let qt = q.pointer + (b * T + t) * c.queryDim + h * hd
                    var m = -Float.infinity
                    for u in 0...t {
                        s[u] = dot(qt, k.pointer + (b * T + u) * c.kvDim + kvHead, hd) * scale
                        m = max(m, s[u])
                    }
                    var sum: Float = 0
                    for u in 0...t {
                        s[u] = expf(s[u] - m)
                        sum += s[u]
                    }
                    lse.pointer[task * T + t] = m + logf(sum)
                    let o = out.pointer + (b * T + t) * c.queryDim + h * hd
                    o.update(repeating: 0, count: hd)
                    let inv = 1 / sum
                    for u in 0...t { axpy(o, s[u] * inv, v.pointer + (b * T + u) * c.kvDim + kvHead, hd) }
                }
            }
        }
    }

    /// From dAttention (d loss / d attention output) to dq, dk, dv. One task per sequence and
    /// key/value head, so the query heads sharing it add into its dk, dv without races.
    private func attentionBackward(_ a: LayerActivations) {
        let c = config, T = activeLength, hd = c.headDim
        let group = c.headCount / c.kvHeadCount
        let scale = 1 / Float(hd).squareRoot()
        dk.zero()
        dv.zero()
        let q = SendablePointer(a.q.pointer), k = SendablePointer(a.k.pointer), v = SendablePointer(a.v.pointer)
        let lse = SendablePointer(a.lse.pointer), dOut = SendablePointer(dAttention.pointer)
        let dqp = SendablePointer(dq.pointer), dkp = SendablePointer(dk.pointer), dvp = SendablePointer(dv.pointer)
        pool.parallelFor(batchSize * c.kvHeadCount) { task in
            let b = task / c.kvHeadCount, g = task % c.kvHeadCount
            let kvHead = g * hd
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * T) { scratch in
                let prob = scratch.baseAddress!, dProb = prob + T
                for h in (g * group)..<((g + 1) * group) {
                    for t in 0..<T {
                        let row = b * T + t
                        let qt = q.pointer + row * c.queryDim + h * hd
                        let dot_ = dOut.pointer + row * c.queryDim + h * hd
                        let l = lse.pointer[(b * c.headCount + h) * T + t]
                        var dsum: Float = 0
                        for u in 0...t {
                            let ku = k.pointer + (b * T + u) * c.kvDim + kvHead
                            let vu = v.pointer + (b * T + u) * c.kvDim + kvHead
                            prob[u] = expf(dot(qt, ku, hd) * scale - l)
                            dProb[u] = dot(dot_, vu, hd)
                            dsum += prob[u] * dProb[u]
                        }
                        let dqt = dqp.pointer + row * c.queryDim + h * hd
                        dqt.update(repeating: 0, count: hd)
                        for u in 0...t {
                            let ds = prob[u] * (dProb[u] - dsum) * scale
                            let base = (b * T + u) * c.kvDim + kvHead
                            axpy(dqt, ds, k.pointer + base, hd)
                            axpy(dkp.pointer + base, ds, qt, hd)
                            axpy(dvp.pointer + base, prob[u], dot_, hd)
                        }
                    }
                }
            }
        }
    }

    // MARK: Helpers

    private func add(_ y: FloatBuffer, _ x: FloatBuffer, count: Int) { add(y.pointer, x.pointer, count: count) }

    /// y += x, in parallel pieces for large arrays.
    private func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        let pieces = count < 1 << 16 ? 1 : 4 * pool.threadCount
        guard pieces > 1 else { return axpy(y, 1, x, count) }
        let ys = SendablePointer(y), xs = SendablePointer(UnsafeMutablePointer(mutating: x))
        pool.parallelFor(pieces) { i in
            let start = i * count / pieces, end = (i + 1) * count / pieces
            axpy(ys.pointer + start, 1, xs.pointer + start, end - start)
        }
    }
}
