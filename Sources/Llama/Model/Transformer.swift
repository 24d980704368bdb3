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

/// The rows of a decoding phase's matrices in chunks that threads take as they come free
/// (`ThreadPool.Team.forEach`): about 1 MB of weights each, at most an even share per thread,
/// whole 8-row groups. One long run per thread streams best, but on a shared machine one core
/// is often slower than the other, and with a barrier after every phase an even split makes the
/// faster one wait; chunks this long still start few streams (four ranges of ~40 KB per thread
/// cost the default model a quarter of its decoding speed), and the default model's matrices
/// (under 1 MB a thread) still split in two.
struct RowChunks {
    let rows: Int
    let size: Int

    init(rows: Int, bytesPerRow: Int, threads: Int, chunkBytes: Int = 1 << 20) {
        self.rows = rows
        let share = (rows + 8 * threads - 1) / (8 * threads) * 8
        size = max(8, min(share, chunkBytes / max(1, bytesPerRow) / 8 * 8))
    }

    var count: Int { (rows + size - 1) / size }
    func range(_ i: Int) -> Range<Int> { (i * size)..<min(rows, (i + 1) * size) }
}

extension Range where Bound == Int {
    fileprivate func shifted(by offset: Int) -> Range<Int> { (lowerBound + offset)..<(upperBound + offset) }
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
    /// Whether a single token runs in one parallel region with barriers between its phases
    /// (`decode`; default) or through a region per matmul like a batch (the environment
    /// variable `LLAMA_SWIFT_TEAM=0` chooses the latter, to compare). Same logits either way.
    /// A pool with more threads than cores takes the latter by default: with every barrier
    /// waiting for threads that have no core, decoding ran 16× slower (4 threads on 2 cores).
    public var decodesInOneRegion: Bool
    /// Whether threads waiting at `decode`'s barriers preload the weights of their next share
    /// (`LLAMA_SWIFT_PRELOAD=0` turns it off, to compare).
    public var preloadsAtBarriers = ProcessInfo.processInfo.environment["LLAMA_SWIFT_PRELOAD"] != "0"

    // Activations of the current batch, one row per token (zeroed at init, freed in deinit).
    private let x: UnsafeMutablePointer<Float>        // (maxBatch, dim) residual stream
    private let xb: UnsafeMutablePointer<Float>       // (maxBatch, dim) normalised input of a sub-layer, then its output
    private let q: UnsafeMutablePointer<Float>        // (maxBatch, headCount * headDim)
    private let attnOut: UnsafeMutablePointer<Float>  // (maxBatch, headCount * headDim)
    private let hb: UnsafeMutablePointer<Float>       // (maxBatch, hiddenDim) gate, then silu(gate) * up
    private let hb2: UnsafeMutablePointer<Float>      // (maxBatch, hiddenDim) up
    private let kb: UnsafeMutablePointer<Float>       // (maxBatch, kvDim) keys of the batch, before they go to their slots
    private let vb: UnsafeMutablePointer<Float>       // (maxBatch, kvDim)
    private var batchLogits: [Float]  // (maxBatch, vocabSize) when every position's logits are wanted
    // Zero-filled by calloc, so pages become resident only as positions are used: memory grows
    // with the context actually used, not the context allowed.
    private let scores: UnsafeMutablePointer<Float>      // (maxBatch * headCount, contextLength) attention rows
    // Per layer: (sequences, kvHeadCount, contextLength, headDim). Each head's keys and values are
    // one contiguous run, which attention reads as one sequential stream per head (with the
    // heads interleaved in each position's row, a head read 256 of every 768 bytes: a strided
    // pattern the prefetchers followed poorly at long contexts).
    private let keyCache: [UnsafeMutablePointer<Float>]
    private let valueCache: [UnsafeMutablePointer<Float>]
    // Per pool thread, for `decode`: the normalised input and its forms for the kernels (`Activations`), 64-aligned.
    private let threadScratch: UnsafeMutableRawPointer
    private let threadScratchBytes: Int
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
        decodesInOneRegion = pool.hasCorePerThread && ProcessInfo.processInfo.environment["LLAMA_SWIFT_TEAM"] != "0"
        func zeroed(_ count: Int) -> UnsafeMutablePointer<Float> {
            guard let p = calloc(max(count, 1), MemoryLayout<Float>.size) else { fatalError("out of memory: \(count * 4) bytes") }
            return p.assumingMemoryBound(to: Float.self)
        }
        let b = self.maxBatch
        x = zeroed(b * c.dim)
        xb = zeroed(b * c.dim)
        q = zeroed(b * c.queryDim)
        attnOut = zeroed(b * c.queryDim)
        hb = zeroed(b * c.hiddenDim)
        hb2 = zeroed(b * c.hiddenDim)
        kb = zeroed(b * c.kvDim)
        vb = zeroed(b * c.kvDim)
        batchLogits = []
        logits = .init(repeating: 0, count: c.vocabSize)
        scores = zeroed(b * c.headCount * self.contextLength)
        let kvCount = self.sequences * self.contextLength * c.kvDim
        keyCache = (0..<c.layerCount).map { _ in zeroed(kvCount) }
        valueCache = (0..<c.layerCount).map { _ in zeroed(kvCount) }
        let widest = max(c.dim, c.queryDim, c.hiddenDim)
        threadScratchBytes = (c.dim * 4 + Activations.byteCount(widest) + 63) / 64 * 64
        threadScratch = UnsafeMutableRawPointer.allocate(byteCount: threadScratchBytes * pool.threadCount, alignment: 64)
    }

    deinit {
        for p in [x, xb, q, attnOut, hb, hb2, kb, vb, scores] + keyCache + valueCache { free(p) }
        threadScratch.deallocate()
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
        if n == 1 && c.headDim % 8 == 0 && decodesInOneRegion {
            decode(tokens[0], sequence: slots[0], position: positions[0])
            if allLogits {
                if batchLogits.count < c.vocabSize { batchLogits = .init(repeating: 0, count: maxBatch * c.vocabSize) }
                batchLogits.replaceSubrange(0..<c.vocabSize, with: logits)
            }
            return
        }
        let ropes = positions.map { RoPETable(position: $0, ropeDim: c.ropeDim, theta: c.ropeTheta) }
        for (i, t) in tokens.enumerated() { weights.tokenEmbedding.row(t, into: x + i * c.dim) }
        for l in 0..<c.layerCount {
            let layer = weights.layers[l]
            // Attention sub-layer, pre-normalised: x += Wo · attention(RMSNorm(x)).
            normalize(layer.attentionNorm, count: n)
            let k = keyCache[l], v = valueCache[l]
            matmul([Product(layer.wq, q), Product(layer.wk, kb), Product(layer.wv, vb)], xb, batch: n, pool: pool)
            for i in 0..<n {
                for h in 0..<c.headCount {
                    ropes[i].apply(q + i * c.queryDim + h * c.headDim, headDim: c.headDim, layout: c.ropeLayout)
                }
                let key = kb + i * c.kvDim
                for h in 0..<c.kvHeadCount {
                    ropes[i].apply(key + h * c.headDim, headDim: c.headDim, layout: c.ropeLayout)
                }
                for h in 0..<c.kvHeadCount {
                    let row = cacheOffset(slots[i], h, positions[i])
                    (k + row).update(from: key + h * c.headDim, count: c.headDim)
                    (v + row).update(from: vb + i * c.kvDim + h * c.headDim, count: c.headDim)
                }
            }
            let attention = attentionTasks(keys: k, values: v, slots: slots, positions: positions)
            if attention.parallel { pool.parallelFor(attention.count, attention.run) } else { for t in 0..<attention.count { attention.run(t) } }
            matmul([Product(layer.wo, xb)], attnOut, batch: n, pool: pool)
            axpy(x, 1, xb, n * c.dim)

            // Feed-forward sub-layer: x += W2 · (silu(W1 · RMSNorm(x)) * (W3 · RMSNorm(x))).
            normalize(layer.ffnNorm, count: n)
            matmul([Product(layer.w1, hb), Product(layer.w3, hb2)], xb, batch: n, pool: pool)
            swiglu(hb, hb2, n * c.hiddenDim)
            matmul([Product(layer.w2, xb)], hb, batch: n, pool: pool)
            axpy(x, 1, xb, n * c.dim)
        }
        // Final norm and output projection, for the last token only unless all are wanted.
        let first = allLogits ? 0 : n - 1
        for i in first..<n { rmsnorm(xb + i * c.dim, x + i * c.dim, weights.norm, c.dim, eps: c.rmsNormEps) }
        if allLogits {
            if batchLogits.count < n * c.vocabSize { batchLogits = .init(repeating: 0, count: maxBatch * c.vocabSize) }
            batchLogits.withUnsafeMutableBufferPointer { all in
                matmul([Product(weights.output, all.baseAddress!)], xb, batch: n, pool: pool)
                logits.withUnsafeMutableBufferPointer {
                    $0.baseAddress!.update(from: all.baseAddress! + (n - 1) * c.vocabSize, count: c.vocabSize)
                }
            }
        } else {
            matvec(weights.output, xb + (n - 1) * c.dim, &logits, pool: pool)
        }
    }

    /// One token through the whole model in a single parallel region (`ThreadPool.team`):
    /// every thread computes its share of each matmul and of the work between them, and the
    /// threads meet at five barriers per layer, where the per-matmul regions of `runBatch`
    /// left one thread to do the work between matmuls while the others waited, and restarted
    /// every thread's stream of weights at each of them. The results have `runBatch`'s bits:
    /// the same kernels compute the same rows, and each thread normalises and prepares
    /// (quantizes, rounds) the whole input for itself (a few microseconds that would otherwise
    /// cost a barrier).
    ///
    /// A layer: (1) RMSNorm; q, k and v in whole heads per thread, each head rotated (and k, v
    /// stored in the cache) by the thread that computed it; (2) attention, tasks handed out as
    /// threads come free; (3) Wo, each thread adding its rows to the residual stream; (4) RMSNorm;
    /// gate and up for the same rows, then SwiGLU of them; (5) W2 and the residual.
    private func decode(_ token: Int, sequence slot: Int, position: Int) {
        let c = config
        let rope = RoPETable(position: position, ropeDim: c.ropeDim, theta: c.ropeTheta)
        weights.tokenEmbedding.row(token, into: x)
        let hd = c.headDim
        let headUnits = c.headCount + 2 * c.kvHeadCount
        let outputChunks = RowChunks(rows: c.vocabSize, bytesPerRow: weights.output.rowBytes, threads: pool.threadCount)
        // Built once per token, not per layer and thread (each call allocates its closure).
        let slots = [slot], positions = [position]
        let attention = (0..<c.layerCount).map {
            attentionTasks(keys: keyCache[$0], values: valueCache[$0], slots: slots, positions: positions, team: true)
        }
        logits.withUnsafeMutableBufferPointer { logitsBuffer in
            let out = SendablePointer(logitsBuffer.baseAddress!)
            pool.team { team in
                let scratch = threadScratch + team.index * threadScratchBytes
                let normed = scratch.assumingMemoryBound(to: Float.self)
                /// `input` (count floats) prepared for the matrices in this thread's scratch.
                func prepared(_ input: UnsafePointer<Float>, _ count: Int, for m: Matrix, _ m2: Matrix? = nil, _ m3: Matrix? = nil) -> Activations {
                    Activations(input, count: count, scratch: scratch + c.dim * 4, for: m, m2, m3)
                }
                let units = team.share(headUnits)
                let qHeads = units.clamped(to: 0..<c.headCount)
                let kHeads = units.clamped(to: c.headCount..<(c.headCount + c.kvHeadCount)).shifted(by: -c.headCount)
                let vHeads = units.clamped(to: (c.headCount + c.kvHeadCount)..<headUnits).shifted(by: -c.headCount - c.kvHeadCount)
                func rows(_ heads: Range<Int>) -> Range<Int> { (heads.lowerBound * hd)..<(heads.upperBound * hd) }
                /// x += m · input for this thread's chunks of m's rows (each thread adds its own rows).
                func addProduct(_ m: Matrix, _ chunks: RowChunks, _ input: Activations) {
                    team.forEach(chunks.count) { i in
                        let r = chunks.range(i)
                        matvecRows(m, r, input, xb)
                        axpy(x + r.lowerBound, 1, xb + r.lowerBound, r.count)
                    }
                }
                let preloading = preloadsAtBarriers
                var preload = Preload(UnsafeRawBufferPointer(start: nil, count: 0))
                func wait() {
                    if preloading { team.barrier { preload.step() } } else { team.barrier() }
                }
                /// Preload this thread's first chunk of `chunks` in `m` (and `m2`) at the next barrier.
                func preloadFirst(_ chunks: RowChunks, _ m: Matrix, _ m2: Matrix? = nil) {
                    guard team.index < chunks.count else { preload = Preload(UnsafeRawBufferPointer(start: nil, count: 0)); return }
                    let r = chunks.range(team.index)
                    preload = Preload(m.storage(ofRows: r), m2?.storage(ofRows: r))
                }
                /// Preload this thread's q, k, v rows of layer `l` (its first two matrices).
                func preloadQKV(_ l: Int) {
                    let layer = weights.layers[l]
                    var parts: (UnsafeRawBufferPointer?, UnsafeRawBufferPointer?) = (nil, nil)
                    func add(_ m: Matrix, _ heads: Range<Int>) {
                        guard !heads.isEmpty else { return }
                        if parts.0 == nil { parts.0 = m.storage(ofRows: rows(heads)) } else if parts.1 == nil { parts.1 = m.storage(ofRows: rows(heads)) }
                    }
                    add(layer.wq, qHeads)
                    add(layer.wk, kHeads)
                    add(layer.wv, vHeads)
                    preload = Preload(parts.0 ?? UnsafeRawBufferPointer(start: nil, count: 0), parts.1)
                }
                for l in 0..<c.layerCount {
                    let layer = weights.layers[l]
                    let k = keyCache[l], v = valueCache[l]
                    let woChunks = RowChunks(rows: c.dim, bytesPerRow: layer.wo.rowBytes, threads: team.count)
                    let ffnChunks = RowChunks(rows: c.hiddenDim, bytesPerRow: layer.w1.rowBytes + layer.w3.rowBytes, threads: team.count)
                    let w2Chunks = RowChunks(rows: c.dim, bytesPerRow: layer.w2.rowBytes, threads: team.count)
                    // (1) q, k, v: whole heads, in the order q, k, v.
                    rmsnorm(normed, x, layer.attentionNorm, c.dim, eps: c.rmsNormEps)
                    let a = prepared(normed, c.dim, for: layer.wq, layer.wk, layer.wv)
                    if !qHeads.isEmpty {
                        matvecRows(layer.wq, rows(qHeads), a, q)
                        for h in qHeads { rope.apply(q + h * hd, headDim: hd, layout: c.ropeLayout) }
                    }
                    if !kHeads.isEmpty {
                        matvecRows(layer.wk, rows(kHeads), a, kb)
                        for h in kHeads {
                            rope.apply(kb + h * hd, headDim: hd, layout: c.ropeLayout)
                            (k + cacheOffset(slot, h, position)).update(from: kb + h * hd, count: hd)
                        }
                    }
                    if !vHeads.isEmpty {
                        matvecRows(layer.wv, rows(vHeads), a, vb)
                        for h in vHeads { (v + cacheOffset(slot, h, position)).update(from: vb + h * hd, count: hd) }
                    }
                    preloadFirst(woChunks, layer.wo)
                    wait()
                    // (2) attention.
                    team.forEach(attention[l].count, attention[l].run)
                    wait()
                    // (3) x += Wo · attention, by rows.
                    addProduct(layer.wo, woChunks, prepared(attnOut, c.queryDim, for: layer.wo))
                    preloadFirst(ffnChunks, layer.w1, layer.w3)
                    wait()
                    // (4) gate and up of the same rows, then SwiGLU.
                    rmsnorm(normed, x, layer.ffnNorm, c.dim, eps: c.rmsNormEps)
                    let f = prepared(normed, c.dim, for: layer.w1, layer.w3)
                    team.forEach(ffnChunks.count) { i in
                        let r = ffnChunks.range(i)
                        matvecRows(layer.w1, r, f, hb)
                        matvecRows(layer.w3, r, f, hb2)
                        swiglu(hb + r.lowerBound, hb2 + r.lowerBound, r.count)
                    }
                    preloadFirst(w2Chunks, layer.w2)
                    wait()
                    // (5) x += W2 · hidden, by rows.
                    addProduct(layer.w2, w2Chunks, prepared(hb, c.hiddenDim, for: layer.w2))
                    if l + 1 < c.layerCount { preloadQKV(l + 1) } else { preloadFirst(outputChunks, weights.output) }
                    wait()
                }
                rmsnorm(normed, x, weights.norm, c.dim, eps: c.rmsNormEps)
                let o = prepared(normed, c.dim, for: weights.output)
                team.forEach(outputChunks.count) { i in matvecRows(weights.output, outputChunks.range(i), o, out.pointer) }
            }
        }
    }

    /// xb[i] = RMSNorm(x[i]) for the first `count` rows.
    private func normalize(_ weight: [Float], count: Int) {
        for i in 0..<count { rmsnorm(xb + i * config.dim, x + i * config.dim, weight, config.dim, eps: config.rmsNormEps) }
    }

    /// Causal grouped-query attention of the batch's queries (token i of sequence slots[i] at
    /// positions[i]) against that sequence's cached positions 0...positions[i], as tasks that
    /// write `attnOut`, and whether it is worth running them in parallel (`team`: they will be,
    /// by a team region's threads). Query head h reads key/value head h / (H/G).
    private func attentionTasks(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>, slots: [Int], positions: [Int],
                                team: Bool = false) -> (count: Int, parallel: Bool, run: (Int) -> Void) {
        let c = config, count = positions.count
        let group = c.headCount / c.kvHeadCount
        let scale = 1 / Float(c.headDim).squareRoot()
        let ctx = contextLength
        let threads = pool.threadCount
        let qp = q, op = attnOut, sp = scores
        // A task is a key/value head with all the query heads that read it (each block of 64
        // keys then serves them all from L1; pairs of heads share each value row and run two
        // independent chains of FMAs) when there are many such tasks, when they split evenly
        // over the threads, or when one thread does all the work. Otherwise it is a pair of one
        // group's query heads (or a last single one): 3 groups on 2 threads would leave one idle
        // a third of the time, 9 heads in 6 tasks of 2 or 1 balance them. Without grouped-query
        // attention (group 1), a task is one head.
        let parallel = threads > 1 && (team || (positions.max()! + 1) * count * c.headCount * c.headDim >= 64 * 1024)
        let units = count * c.kvHeadCount
        let grouped = group > 1 && (!parallel || units >= 4 * threads || units % threads == 0)
        let pairsPerGroup = (group + 1) / 2
        let unitsPerToken = grouped ? c.kvHeadCount : c.kvHeadCount * pairsPerGroup
        let run = { (task: Int) in
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
            let keys = keys + head, values = values + head
            @inline(__always) func query(_ h: Int) -> UnsafeMutablePointer<Float> { qp + i * c.queryDim + h * c.headDim }
            @inline(__always) func row(_ h: Int) -> UnsafeMutablePointer<Float> { sp + (i * c.headCount + h) * ctx }
            @inline(__always) func output(_ h: Int) -> UnsafeMutablePointer<Float> { op + i * c.queryDim + h * c.headDim }
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
        return (count * unitsPerToken, parallel, run)
    }
}
