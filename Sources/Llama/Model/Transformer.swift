import Foundation
import LlamaKernels

/// Rotary position embedding [Su et al. 2021; LLaMA §2.2] for one position: the cos and sin
/// of `pos * theta^(-2i/ropeDim)` for each pair `i`, in float32 like the references.
struct RoPETable {
    let cos: [Float]
    let sin: [Float]

    init(position: Int, ropeDim: Int, theta: Float) {
        var c = [Float](repeating: 0, count: ropeDim / 2)
        var s = c
        for i in 0..<(ropeDim / 2) {
            // transformers: inv_freq = 1 / theta ** (arange(0, d, 2).float() / d), in float32.
            let invFreq = Float(1.0) / powf(theta, Float(2 * i) / Float(ropeDim))
            let angle = Float(position) * invFreq
            c[i] = Foundation.cos(angle)
            s[i] = Foundation.sin(angle)
        }
        cos = c
        sin = s
    }

    /// Rotates one head's channels in place.
    func apply(_ head: UnsafeMutablePointer<Float>, headDim: Int, layout: RoPELayout) {
        let half = cos.count
        switch layout {
        case .interleaved:
            for i in 0..<half {
                let a = head[2 * i], b = head[2 * i + 1]
                head[2 * i] = a * cos[i] - b * sin[i]
                head[2 * i + 1] = a * sin[i] + b * cos[i]
            }
        case .halves:
            // rotate_half pairs channel i with i + ropeDim/2.
            for i in 0..<half {
                let a = head[i], b = head[i + half]
                head[i] = a * cos[i] - b * sin[i]
                head[i + half] = b * cos[i] + a * sin[i]
            }
        }
    }
}

/// A model ready to run: its weights, a key/value cache and scratch buffers.
/// Tokens go through in batches (a prompt as a tokens × dim matrix, so each weight is read once
/// per batch). The cache has `sequences` slots: several sequences decode together with one
/// batch per step (`step`), each row attending to its own slot.
public final class Transformer: @unchecked Sendable {
    public let weights: Weights
    public var config: ModelConfig { weights.config }
    /// Positions the key/value cache holds (at most the model's context length).
    public let contextLength: Int
    /// Most tokens computed together; longer inputs go through in several batches.
    public let maxBatch: Int
    /// Independent sequences the key/value cache holds.
    public let sequences: Int
    public let pool: ThreadPool

    // Activations of the current batch, one row per token.
    private var x: [Float]        // (maxBatch, dim) residual stream
    private var xb: [Float]       // (maxBatch, dim) normalised input of a sub-layer
    private var q: [Float]        // (maxBatch, headCount * headDim)
    private var attnOut: [Float]  // (maxBatch, headCount * headDim)
    private var hb: [Float]       // (maxBatch, hiddenDim) gate, then silu(gate) * up
    private var hb2: [Float]      // (maxBatch, hiddenDim) up
    private var batchLogits: [Float]  // (maxBatch, vocabSize) when every position's logits are wanted
    private var kb: [Float]       // (maxBatch, kvDim) keys of the batch, before they go to their slots
    private var vb: [Float]       // (maxBatch, kvDim)
    // Zero-filled by calloc, so pages become resident only as positions are used: memory grows
    // with the context actually used, not the context allowed.
    private let scores: UnsafeMutablePointer<Float>      // (maxBatch * headCount, contextLength) attention rows
    // Per layer: (sequences, kvHeadCount, contextLength, headDim). Each head's keys and values are
    // one contiguous run, which attention reads as one sequential stream per head (with the
    // heads interleaved in each position's row, a head read 256 of every 768 bytes: a strided
    // pattern the prefetchers followed poorly at long contexts).
    private let keyCache: [UnsafeMutablePointer<Float>]
    private let valueCache: [UnsafeMutablePointer<Float>]
    /// (vocabSize) logits of the token after the last one run. Read it rather than keeping
    /// `forward`'s result across calls: a kept copy makes the next call copy 4 × vocab bytes.
    public private(set) var logits: [Float]

    public init(weights: Weights, contextLength: Int? = nil, maxBatch: Int = 32, sequences: Int = 1, pool: ThreadPool = .shared) {
        let c = weights.config
        self.weights = weights
        self.contextLength = min(max(1, contextLength ?? c.contextLength), c.contextLength)
        self.sequences = max(1, sequences)
        self.maxBatch = max(1, min(maxBatch, self.contextLength * self.sequences))
        self.pool = pool
        let b = self.maxBatch
        x = .init(repeating: 0, count: b * c.dim)
        xb = x
        q = .init(repeating: 0, count: b * c.queryDim)
        attnOut = q
        hb = .init(repeating: 0, count: b * c.hiddenDim)
        hb2 = hb
        batchLogits = []
        kb = .init(repeating: 0, count: b * c.kvDim)
        vb = kb
        logits = .init(repeating: 0, count: c.vocabSize)
        func zeroed(_ count: Int) -> UnsafeMutablePointer<Float> {
            guard let p = calloc(count, MemoryLayout<Float>.size) else { fatalError("out of memory: \(count * 4) bytes") }
            return p.assumingMemoryBound(to: Float.self)
        }
        scores = zeroed(b * c.headCount * self.contextLength)
        let kvCount = self.sequences * self.contextLength * c.kvDim
        keyCache = (0..<c.layerCount).map { _ in zeroed(kvCount) }
        valueCache = (0..<c.layerCount).map { _ in zeroed(kvCount) }
    }

    deinit {
        free(scores)
        for p in keyCache + valueCache { free(p) }
    }

    /// Runs one token at `position` (0-based; earlier positions must already be in the cache)
    /// and returns the logits of the next token.
    @discardableResult
    public func forward(token: Int, position: Int) throws -> [Float] {
        try forward(tokens: [token], startPosition: position)
        return logits
    }

    /// Runs `tokens` at positions `startPosition...`; afterwards `logits` holds the last
    /// token's next-token logits. With `allLogits`, returns every position's logits,
    /// (tokens.count, vocabSize) row-major; otherwise returns an empty array.
    @discardableResult
    public func forward(tokens: [Int], startPosition: Int, allLogits: Bool = false, sequence: Int = 0) throws -> [Float] {
        let c = config
        guard startPosition >= 0 && startPosition + tokens.count <= contextLength else {
            throw LlamaError.contextFull(position: startPosition + tokens.count - 1, contextLength: contextLength)
        }
        guard (0..<sequences).contains(sequence) else {
            throw LlamaError.invalidArgument("sequence \(sequence) is outside the cache's \(sequences)")
        }
        for t in tokens where t < 0 || t >= c.vocabSize { throw LlamaError.invalidToken(t, vocabSize: c.vocabSize) }
        var all: [Float] = allLogits ? .init(repeating: 0, count: tokens.count * c.vocabSize) : []
        var done = 0
        while done < tokens.count {
            let n = min(maxBatch, tokens.count - done)
            runBatch(Array(tokens[done..<(done + n)]), sequences: .init(repeating: sequence, count: n),
                     positions: Array((startPosition + done)..<(startPosition + done + n)), allLogits: allLogits)
            if allLogits {
                all.withUnsafeMutableBufferPointer {
                    ($0.baseAddress! + done * c.vocabSize).update(from: batchLogits, count: n * c.vocabSize)
                }
            }
            done += n
        }
        return all
    }

    /// One decoding step for several sequences: `entries[i]` is a token of sequence (cache slot)
    /// `sequence` at `position`, its earlier positions already in that slot. Returns each
    /// entry's next-token logits, (entries.count, vocabSize) row-major.
    public func step(_ entries: [(sequence: Int, token: Int, position: Int)]) throws -> [Float] {
        let c = config
        guard !entries.isEmpty, entries.count <= maxBatch else {
            throw LlamaError.invalidArgument("a step holds 1...\(maxBatch) tokens, got \(entries.count)")
        }
        for e in entries {
            guard (0..<sequences).contains(e.sequence) else {
                throw LlamaError.invalidArgument("sequence \(e.sequence) is outside the cache's \(sequences)")
            }
            guard (0..<contextLength).contains(e.position) else { throw LlamaError.contextFull(position: e.position, contextLength: contextLength) }
            guard e.token >= 0 && e.token < c.vocabSize else { throw LlamaError.invalidToken(e.token, vocabSize: c.vocabSize) }
        }
        guard Set(entries.map { $0.sequence }).count == entries.count else {
            throw LlamaError.invalidArgument("a step holds one token per sequence")
        }
        runBatch(entries.map(\.token), sequences: entries.map(\.sequence), positions: entries.map(\.position), allLogits: true)
        return Array(batchLogits[0..<(entries.count * c.vocabSize)])
    }

    /// Copies the first `count` cached positions of sequence `source` into `target` (a prompt
    /// computed once, then sampled several ways).
    public func copySequence(_ source: Int, to target: Int, count: Int) throws {
        guard (0..<sequences).contains(source), (0..<sequences).contains(target), (0...contextLength).contains(count) else {
            throw LlamaError.invalidArgument("cannot copy \(count) positions from sequence \(source) to \(target) of \(sequences)")
        }
        guard source != target else { return }
        for cache in keyCache + valueCache {
            for h in 0..<config.kvHeadCount {
                (cache + cacheOffset(target, h, 0)).update(from: cache + cacheOffset(source, h, 0), count: count * config.headDim)
            }
        }
    }

    /// Where (sequence, key/value head, position) starts in a layer's key or value cache:
    /// (sequences, kvHeadCount, contextLength, headDim), each head's positions one run.
    @inline(__always)
    private func cacheOffset(_ sequence: Int, _ head: Int, _ position: Int) -> Int {
        ((sequence * config.kvHeadCount + head) * contextLength + position) * config.headDim
    }

    /// Runs token i of sequence `slots[i]` at `positions[i]`; rows of one sequence come in
    /// position order.
    private func runBatch(_ tokens: [Int], sequences slots: [Int], positions: [Int], allLogits: Bool) {
        let c = config
        let n = tokens.count
        let ropes = positions.map { RoPETable(position: $0, ropeDim: c.ropeDim, theta: c.ropeTheta) }
        x.withUnsafeMutableBufferPointer { xp in
            for (i, t) in tokens.enumerated() { weights.tokenEmbedding.row(t, into: xp.baseAddress! + i * c.dim) }
        }
        for l in 0..<c.layerCount {
            let layer = weights.layers[l]
            // Attention sub-layer, pre-normalised: x += Wo · attention(RMSNorm(x)).
            normalize(layer.attentionNorm, count: n)
            let k = keyCache[l], v = valueCache[l]
            q.withUnsafeMutableBufferPointer { qp in
                kb.withUnsafeMutableBufferPointer { kp in
                    vb.withUnsafeMutableBufferPointer { vp in
                        matmul([Product(layer.wq, qp.baseAddress!), Product(layer.wk, kp.baseAddress!), Product(layer.wv, vp.baseAddress!)],
                               xb, batch: n, pool: pool)
                        for i in 0..<n {
                            for h in 0..<c.headCount {
                                ropes[i].apply(qp.baseAddress! + i * c.queryDim + h * c.headDim, headDim: c.headDim, layout: c.ropeLayout)
                            }
                            let key = kp.baseAddress! + i * c.kvDim
                            for h in 0..<c.kvHeadCount {
                                ropes[i].apply(key + h * c.headDim, headDim: c.headDim, layout: c.ropeLayout)
                            }
                            for h in 0..<c.kvHeadCount {
                                let row = cacheOffset(slots[i], h, positions[i])
                                (k + row).update(from: key + h * c.headDim, count: c.headDim)
                                (v + row).update(from: vp.baseAddress! + i * c.kvDim + h * c.headDim, count: c.headDim)
                            }
                        }
                    }
                }
            }
            attention(keys: k, values: v, slots: slots, positions: positions)
            xb.withUnsafeMutableBufferPointer { out in
                matmul([Product(layer.wo, out.baseAddress!)], attnOut, batch: n, pool: pool)
            }
            addResidual(count: n)

            // Feed-forward sub-layer: x += W2 · (silu(W1 · RMSNorm(x)) * (W3 · RMSNorm(x))).
            normalize(layer.ffnNorm, count: n)
            hb.withUnsafeMutableBufferPointer { gate in
                hb2.withUnsafeMutableBufferPointer { up in
                    matmul([Product(layer.w1, gate.baseAddress!), Product(layer.w3, up.baseAddress!)], xb, batch: n, pool: pool)
                    swiglu(gate.baseAddress!, up.baseAddress!, n * c.hiddenDim)
                }
            }
            xb.withUnsafeMutableBufferPointer { out in
                matmul([Product(layer.w2, out.baseAddress!)], hb, batch: n, pool: pool)
            }
            addResidual(count: n)
        }
        // Final norm and output projection, for the last token only unless all are wanted.
        let first = allLogits ? 0 : n - 1
        x.withUnsafeBufferPointer { xp in
            xb.withUnsafeMutableBufferPointer { out in
                for i in first..<n {
                    rmsnorm(out.baseAddress! + i * c.dim, xp.baseAddress! + i * c.dim, weights.norm, c.dim, eps: c.rmsNormEps)
                }
            }
        }
        if allLogits {
            if batchLogits.count < n * c.vocabSize { batchLogits = .init(repeating: 0, count: maxBatch * c.vocabSize) }
            batchLogits.withUnsafeMutableBufferPointer { all in
                matmul([Product(weights.output, all.baseAddress!)], xb, batch: n, pool: pool)
                logits.withUnsafeMutableBufferPointer {
                    $0.baseAddress!.update(from: all.baseAddress! + (n - 1) * c.vocabSize, count: c.vocabSize)
                }
            }
        } else {
            xb.withUnsafeBufferPointer { matvec(weights.output, $0.baseAddress! + (n - 1) * c.dim, &logits, pool: pool) }
        }
    }

    /// xb[i] = RMSNorm(x[i]) for the first `count` rows.
    private func normalize(_ weight: [Float], count: Int) {
        let dim = config.dim, eps = config.rmsNormEps
        x.withUnsafeBufferPointer { xp in
            xb.withUnsafeMutableBufferPointer { out in
                for i in 0..<count { rmsnorm(out.baseAddress! + i * dim, xp.baseAddress! + i * dim, weight, dim, eps: eps) }
            }
        }
    }

    /// x += xb for the first `count` rows.
    private func addResidual(count: Int) {
        let n = count * config.dim
        x.withUnsafeMutableBufferPointer { xp in
            xb.withUnsafeBufferPointer { axpy(xp.baseAddress!, 1, $0.baseAddress!, n) }
        }
    }

    /// Causal grouped-query attention of the batch's queries (token i of sequence slots[i] at
    /// positions[i]) against that sequence's cached positions 0...positions[i], written to
    /// `attnOut`. Query head h reads key/value head h / (H/G).
    private func attention(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>, slots: [Int], positions: [Int]) {
        let c = config, count = positions.count
        let group = c.headCount / c.kvHeadCount
        let scale = 1 / Float(c.headDim).squareRoot()
        let ctx = contextLength
        q.withUnsafeMutableBufferPointer { qb in
            attnOut.withUnsafeMutableBufferPointer { ob in
                do {
                    let qp = SendablePointer(qb.baseAddress!), op = SendablePointer(ob.baseAddress!)
                    let sp = SendablePointer(scores)
                    let kp = SendablePointer(keys), vp = SendablePointer(values)
                    // A task is a key/value head with all the query heads that read it (each
                    // block of 64 keys then serves them all from L1; pairs of heads share each
                    // value row and run two independent chains of FMAs) when there are many such
                    // tasks, when they split evenly over the threads, or when one thread does all
                    // the work. Otherwise it is a pair of one group's query heads (or a last
                    // single one): 3 groups on 2 threads would leave one idle a third of the
                    // time, 9 heads in 6 tasks of 2 or 1 balance them. Without grouped-query
                    // attention (group 1), a task is one head.
                    let parallel = (positions.max()! + 1) * count * c.headCount * c.headDim >= 64 * 1024
                    let units = count * c.kvHeadCount
                    let grouped = group > 1 && (!parallel || units >= 4 * pool.threadCount || units % pool.threadCount == 0)
                    let pairsPerGroup = (group + 1) / 2
                    let unitsPerToken = grouped ? c.kvHeadCount : c.kvHeadCount * pairsPerGroup
                    let work = { (task: Int) in
                        let i = task / unitsPerToken, u = task % unitsPerToken
                        let heads: Range<Int>
                        if grouped {
                            heads = (u * group)..<((u + 1) * group)
                        } else {
                            let first = (u / pairsPerGroup) * group + (u % pairsPerGroup) * 2
                            heads = first..<min(first + 2, (u / pairsPerGroup + 1) * group)
                        }
                        let length = positions[i] + 1
                        let head = self.cacheOffset(slots[i], heads.lowerBound / group, 0)
                        let keys = kp.pointer + head, values = vp.pointer + head
                        @inline(__always) func query(_ h: Int) -> UnsafeMutablePointer<Float> { qp.pointer + i * c.queryDim + h * c.headDim }
                        @inline(__always) func row(_ h: Int) -> UnsafeMutablePointer<Float> { sp.pointer + (i * c.headCount + h) * ctx }
                        @inline(__always) func output(_ h: Int) -> UnsafeMutablePointer<Float> { op.pointer + i * c.queryDim + h * c.headDim }
                        for block in stride(from: 0, to: length, by: 64) {
                            let m = min(64, length - block)
                            for h in heads {
                                scaledDots(row(h) + block, query(h), keys + block * c.headDim, stride: c.headDim, count: m, n: c.headDim, scale: scale)
                            }
                        }
                        var h = heads.lowerBound
                        while h < heads.upperBound {
                            if h + 1 < heads.upperBound {
                                softmax(row(h), row(h + 1), length)
                                weightedSums(output(h), output(h + 1), row(h), row(h + 1), values, stride: c.headDim, count: length, n: c.headDim)
                                h += 2
                            } else {
                                softmax(row(h), length)
                                weightedSum(output(h), row(h), values, stride: c.headDim, count: length, n: c.headDim)
                                h += 1
                            }
                        }
                    }
                    let tasks = count * unitsPerToken
                    if !parallel {
                        for t in 0..<tasks { work(t) }
                    } else {
                        pool.parallelFor(tasks, work)
                    }
                }
            }
        }
    }
}
