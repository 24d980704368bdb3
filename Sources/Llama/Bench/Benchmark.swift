import Foundation
import LlamaKernels

/// Prompt and generation speed measured as llama.cpp's `llama-bench` measures them:
/// `ppN` runs one batch of N random tokens from an empty cache, `tgN` decodes N tokens one at a
/// time from an empty cache; each test is repeated and reported as mean ± standard deviation of
/// tokens/s, after one warm-up run.
public struct Benchmark {
    public struct Result: Sendable {
        public let test: String
        public let tokens: Int
        public let threads: Int
        public let tokensPerSecond: [Double]
        /// Sequences decoded together (1 but for tgN×S).
        public var sequences = 1
        /// Tokens already in the cache when the test starts (llama-bench's `-d`).
        public var depth = 0
        /// For tgN: after each repetition, the rate at which the threads read the model's own
        /// weights (`weightsReadBandwidth`), bytes/s: the bound at the moment of that repetition.
        public var weightsReadRates: [Double] = []
        /// The test as llama-bench names it: `pp512`, or `pp512 @ d1024` at a depth.
        public var name: String { depth > 0 ? "\(test) @ d\(depth)" : test }

        public var mean: Double { tokensPerSecond.reduce(0, +) / Double(max(1, tokensPerSecond.count)) }

        /// The mean rate of the reads of the model's weights between repetitions, and the mean
        /// over repetitions of the fraction of the read after it that each achieved: a bound
        /// measured beside each repetition, which holds where the machine's bandwidth moves
        /// between runs. Nil but for tgN.
        public func boundBetweenRepetitions(bytesPerToken: Double) -> (rate: Double, fraction: Double)? {
            guard !weightsReadRates.isEmpty, weightsReadRates.count == tokensPerSecond.count else { return nil }
            let n = Double(weightsReadRates.count)
            let fraction = zip(tokensPerSecond, weightsReadRates).map { $0 * bytesPerToken / $1 }.reduce(0, +) / n
            return (weightsReadRates.reduce(0, +) / n, fraction)
        }
        public var standardDeviation: Double {
            guard tokensPerSecond.count > 1 else { return 0 }
            let m = mean
            return (tokensPerSecond.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(tokensPerSecond.count - 1)).squareRoot()
        }
    }

    public let weights: Weights
    public let pool: ThreadPool

    public init(weights: Weights, pool: ThreadPool) {
        self.weights = weights
        self.pool = pool
    }

    public func promptProcessing(tokens n: Int, repetitions: Int, depth: Int = 0, seed: UInt64 = 1) throws -> Result {
        let transformer = Transformer(weights: weights, contextLength: depth + n, maxBatch: n, pool: pool)
        var rng = SplitMix64(seed: seed)
        try fill(transformer, depth: depth, batch: n, rng: &rng)
        var speeds: [Double] = []
        for rep in 0...repetitions {
            let tokens = (0..<n).map { _ in Int(rng.next() % UInt64(weights.config.vocabSize)) }
            let t0 = DispatchTime.now().uptimeNanoseconds
            try transformer.forward(tokens: tokens, startPosition: depth)
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            if rep > 0 { speeds.append(Double(n) / seconds) }
        }
        var result = Result(test: "pp\(n)", tokens: n, threads: pool.threadCount, tokensPerSecond: speeds)
        result.depth = depth
        return result
    }

    public func textGeneration(tokens n: Int, repetitions: Int, depth: Int = 0, seed: UInt64 = 2) throws -> Result {
        let transformer = Transformer(weights: weights, contextLength: depth + n, maxBatch: min(max(depth, 1), 512), pool: pool)
        var rng = SplitMix64(seed: seed)
        try fill(transformer, depth: depth, batch: 512, rng: &rng)
        var speeds: [Double] = [], rates: [Double] = []
        for rep in 0...repetitions {
            var token = Int(rng.next() % UInt64(weights.config.vocabSize))
            let t0 = DispatchTime.now().uptimeNanoseconds
            for pos in depth..<(depth + n) {
                try transformer.forward(token: token, position: pos)
                token = argmax(transformer.logits)
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            if rep > 0 {
                speeds.append(Double(n) / seconds)
                rates.append(weightsReadBandwidth())
            }
        }
        var result = Result(test: "tg\(n)", tokens: n, threads: pool.threadCount, tokensPerSecond: speeds)
        result.depth = depth
        result.weightsReadRates = rates
        return result
    }

    /// The rate (bytes/s) at which the pool's threads read every weight a generated token reads,
    /// in place, each thread an even share of each matrix in one pass, no arithmetic: the bound
    /// on generation at this moment, measured on the model's own memory (no buffer of its own,
    /// so it costs no resident memory and takes about one token's time). The best of two passes.
    public func weightsReadBandwidth() -> Double {
        var parts: [UnsafeRawBufferPointer] = []
        for l in weights.layers { for m in l.matrices { parts.append(m.storage(ofRows: 0..<m.rows)) } }
        parts.append(weights.output.storage(ofRows: 0..<weights.output.rows))
        let threads = pool.threadCount
        let sums = UnsafeMutablePointer<UInt32>.allocate(capacity: threads)
        defer { sums.deallocate() }
        sums.initialize(repeating: 0, count: threads)
        let s = SendablePointer(sums)
        var bytes = 0
        for part in parts { bytes += part.count / threads / 128 * 128 * threads }
        var best = 0.0
        for _ in 0..<2 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            pool.team { team in
                for part in parts {
                    let share = part.count / threads / 128 * 128
                    s.pointer[team.index] &+= Benchmark.sumBits(part.baseAddress! + team.index * share, bytes: share)
                }
            }
            best = max(best, Double(bytes) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))
        }
        return best
    }

    /// The wrapping sum of `bytes` bytes (whole 128-byte steps) read as 32-bit integers (weights'
    /// bits as floats could be subnormal, which some cores add slowly).
    private static func sumBits(_ base: UnsafeRawPointer, bytes: Int) -> UInt32 {
        var a0 = SIMD8<UInt32>(), a1 = a0, a2 = a0, a3 = a0
        var i = 0
        while i + 128 <= bytes {
            a0 &+= base.loadUnaligned(fromByteOffset: i, as: SIMD8<UInt32>.self)
            a1 &+= base.loadUnaligned(fromByteOffset: i + 32, as: SIMD8<UInt32>.self)
            a2 &+= base.loadUnaligned(fromByteOffset: i + 64, as: SIMD8<UInt32>.self)
            a3 &+= base.loadUnaligned(fromByteOffset: i + 96, as: SIMD8<UInt32>.self)
            i += 128
        }
        return (a0 &+ a1 &+ a2 &+ a3).wrappedSum()
    }

    /// Puts `depth` random tokens in the cache (positions 0..<depth, in batches of at most
    /// `batch`): every repetition of a test then starts at position `depth`, overwriting only
    /// its own positions.
    private func fill(_ transformer: Transformer, depth: Int, batch: Int, rng: inout SplitMix64) throws {
        var position = 0
        while position < depth {
            let count = min(batch, depth - position)
            let tokens = (0..<count).map { _ in Int(rng.next() % UInt64(weights.config.vocabSize)) }
            try transformer.forward(tokens: tokens, startPosition: position)
            position += count
        }
    }

    /// `tgN×S`: S sequences decoded together, one token each per step (`Transformer.step`, as
    /// the server and rejection sampling decode), N steps from an empty cache; tokens/s counts
    /// the tokens of all sequences. The ratio to `tgN` is what batching buys.
    public func batchedGeneration(tokens n: Int, sequences: Int, repetitions: Int, seed: UInt64 = 3) throws -> Result {
        let transformer = Transformer(weights: weights, contextLength: n, maxBatch: sequences, sequences: sequences, pool: pool)
        let vocab = weights.config.vocabSize
        var rng = SplitMix64(seed: seed)
        var speeds: [Double] = []
        for rep in 0...repetitions {
            var tokens = (0..<sequences).map { _ in Int(rng.next() % UInt64(vocab)) }
            let t0 = DispatchTime.now().uptimeNanoseconds
            for pos in 0..<n {
                let logits = try transformer.step(tokens.indices.map { (sequence: $0, token: tokens[$0], position: pos) })
                logits.withUnsafeBufferPointer { l in
                    for i in tokens.indices { tokens[i] = argmax(UnsafeBufferPointer(rebasing: l[(i * vocab)..<((i + 1) * vocab)])) }
                }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            if rep > 0 { speeds.append(Double(n * sequences) / seconds) }
        }
        var result = Result(test: "tg\(n)x\(sequences)", tokens: n * sequences, threads: pool.threadCount, tokensPerSecond: speeds)
        result.sequences = sequences
        return result
    }

    /// Matrix-vector speed per weight format over the model's own matrices (every layer's,
    /// in order, as one token reads them): bytes of weights per second, best of `repetitions`.
    public func matvecBandwidth(repetitions: Int = 5) -> [(TensorType, Double)] {
        var groups: [TensorType: [Matrix]] = [:]
        for l in weights.layers {
            for m in l.matrices { groups[m.type, default: []].append(m) }
        }
        groups[weights.output.type, default: []].append(weights.output)
        let x = [Float](repeating: 0.5, count: max(weights.config.dim, weights.config.hiddenDim, weights.config.queryDim))
        var y = [Float](repeating: 0, count: weights.config.vocabSize + weights.config.hiddenDim)
        return groups.sorted { $0.key.rawValue < $1.key.rawValue }.map { type, matrices in
            let bytes = matrices.reduce(0) { $0 + $1.byteCount }
            var best = 0.0
            for _ in 0..<repetitions {
                let t0 = DispatchTime.now().uptimeNanoseconds
                for m in matrices { matvec(m, x, &y, pool: pool) }
                best = max(best, Double(bytes) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))
            }
            return (type, best)
        }
    }

    /// Where a decoding step's time goes: microseconds per token, of which inside parallel
    /// regions (one per token, `Transformer.decode`; a region per matmul with
    /// `LLAMA_SWIFT_TEAM=0`) and of that the calling thread waiting for the others (at the
    /// barriers); the rest runs on one thread while the others spin (the embedding row; with
    /// a region per matmul also norms, RoPE, short attention, quantizing activations).
    /// Averaged over `n` tokens from an empty cache.
    public func decodingProfile(tokens n: Int) throws -> (token: Double, inRegions: Double, waiting: Double, regions: Double) {
        let transformer = Transformer(weights: weights, contextLength: n, maxBatch: 1, pool: pool)
        try transformer.forward(token: 1, position: 0)  // warm-up (first touch of buffers)
        var token = 1
        pool.recording = true
        defer { pool.recording = false }
        let t0 = DispatchTime.now().uptimeNanoseconds
        for pos in 0..<n {
            try transformer.forward(token: token, position: pos)
            token = argmax(transformer.logits)
        }
        let total = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e3 / Double(n)
        let r = pool.record
        return (total, Double(r.nanoseconds) / 1e3 / Double(n), Double(r.waitingNanoseconds) / 1e3 / Double(n), Double(r.regions) / Double(n))
    }

    /// Decoding speed (tokens/s) with each token in one parallel region (`Transformer.decode`)
    /// and with a region per matmul, measured alternately: two caches decode the same tokens at
    /// the same positions, `block` tokens at a time, taking turns (and turns about who goes
    /// first), so a shared machine's changing memory bandwidth falls on both alike.
    public func decodingStructures(tokens n: Int, block: Int = 8) throws -> (oneRegion: Double, perMatmul: Double) {
        let one = Transformer(weights: weights, contextLength: n, maxBatch: 1, pool: pool)
        let per = Transformer(weights: weights, contextLength: n, maxBatch: 1, pool: pool)
        one.decodesInOneRegion = true
        per.decodesInOneRegion = false
        var seconds = [0.0, 0.0]
        let tokens = (0..<n).map { 1 + ($0 * 7919) % (weights.config.vocabSize - 1) }
        for start in stride(from: 0, to: n, by: block) {
            let order = (start / block) % 2 == 0 ? [0, 1] : [1, 0]
            for which in order {
                let t = which == 0 ? one : per
                let t0 = DispatchTime.now().uptimeNanoseconds
                for pos in start..<min(n, start + block) { try t.forward(token: tokens[pos], position: pos) }
                seconds[which] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            }
        }
        return (Double(n) / seconds[0], Double(n) / seconds[1])
    }

    /// Matrix-vector speed per weight format on one thread when the weights are in L2 (the
    /// first ~384 KB of rows of a matrix of each format, repeated): what the kernel's
    /// arithmetic allows. Next to `matvecBandwidth` it tells whether decoding waits on memory
    /// or on the kernel (a core reads ~48 GB/s from memory on Zen 5).
    public func matvecInCacheBandwidth(bytes: Int = 384 << 10) -> [(TensorType, Double)] {
        var first: [TensorType: Matrix] = [:]
        for l in weights.layers { for m in l.matrices where first[m.type] == nil { first[m.type] = m } }
        if first[weights.output.type] == nil { first[weights.output.type] = weights.output }
        let one = ThreadPool(threads: 1)
        return first.sorted { $0.key.rawValue < $1.key.rawValue }.map { type, m in
            let rows = max(8, min(m.rows, bytes / m.rowBytes) / 8 * 8)
            let part = Matrix(type: m.type, rows: rows, cols: m.cols, data: m.data, layout: m.layout)
            let x = [Float](repeating: 0.5, count: m.cols)
            var y = [Float](repeating: 0, count: rows)
            let repetitions = max(10, (256 << 20) / part.byteCount)
            var best = 0.0
            for _ in 0..<3 {
                let t0 = DispatchTime.now().uptimeNanoseconds
                for _ in 0..<repetitions { matvec(part, x, &y, pool: one) }
                best = max(best, Double(part.byteCount * repetitions) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))
            }
            return (type, best)
        }
    }

    /// Microseconds per matrix-vector product of the first layer's matrices when they are
    /// already in cache (each repeated `repetitions` times): the fixed cost of one product
    /// (quantizing the input, splitting the rows across threads, waiting for them), which a
    /// small model pays some 150 times per token.
    public func matvecCallMicroseconds(repetitions: Int = 2000) -> Double {
        guard let layer = weights.layers.first else { return 0 }
        // At most ~2 GB of products: a 1.1B F16 layer is 88 MB, and 2,000 passes took minutes
        // (such a layer is not in cache anyway; the figure is for small models).
        let layerBytes = layer.matrices.reduce(0) { $0 + $1.byteCount }
        let repetitions = max(5, min(repetitions, (2 << 30) / max(1, layerBytes)))
        // The widest input is also the most output rows (as in matmulThroughput).
        let width = max(weights.config.dim, weights.config.hiddenDim, weights.config.queryDim)
        let x = [Float](repeating: 0.5, count: width)
        var y = [Float](repeating: 0, count: width)
        for m in layer.matrices { matvec(m, x, &y, pool: pool) }
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<repetitions {
            for m in layer.matrices { matvec(m, x, &y, pool: pool) }
        }
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e3 / Double(repetitions * layer.matrices.count)
    }

    /// Batched product speed per weight format over the model's own matrices (one layer's,
    /// `batch` input rows, as a prompt runs them): GFLOP/s (2 per multiply-add), best of
    /// `repetitions`. What prompt processing is bound by, without attention and the rest.
    public func matmulThroughput(batch: Int = 128, repetitions: Int = 3) -> [(TensorType, Double)] {
        var groups: [TensorType: [Matrix]] = [:]
        if let layer = weights.layers.first {
            for m in layer.matrices { groups[m.type, default: []].append(m) }
        }
        // The widest input is also the most output rows any projection has (q: queryDim,
        // gate/up: hiddenDim, o/down: dim), so one width sizes both buffers.
        let width = max(weights.config.dim, weights.config.hiddenDim, weights.config.queryDim)
        var rng = SplitMix64(seed: 4)
        let x = (0..<(batch * width)).map { _ in Float(rng.next() % 2001) / 1000 - 1 }
        var y = [Float](repeating: 0, count: batch * width)
        return groups.sorted { $0.key.rawValue < $1.key.rawValue }.map { type, matrices in
            let flops = matrices.reduce(0.0) { $0 + 2 * Double($1.rows) * Double($1.cols) * Double(batch) }
            var best = 0.0
            for _ in 0...repetitions {
                let t0 = DispatchTime.now().uptimeNanoseconds
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeMutableBufferPointer { yp in
                        for m in matrices { matmul([Product(m, yp.baseAddress!)], xp.baseAddress!, xStride: width, batch: batch, pool: pool) }
                    }
                }
                best = max(best, flops / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))
            }
            return (type, best / 1e9)
        }
    }

    /// The machine's memory read bandwidth in bytes/s: the best of a few passes summing a
    /// buffer much larger than the caches, with all of the pool's threads.
    public static func readBandwidth(pool: ThreadPool, bytes: Int = 512 << 20) -> Double {
        let count = bytes / 4
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1, count: count)
        let chunks = 64, perChunk = count / chunks
        let p = SendablePointer(buffer)
        let sums = UnsafeMutablePointer<Float>.allocate(capacity: chunks)
        defer { sums.deallocate() }
        let s = SendablePointer(sums)
        var best = 0.0
        for _ in 0..<4 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            pool.parallelFor(chunks) { c in s.pointer[c] = Benchmark.sumStream(UnsafeRawPointer(p.pointer + c * perChunk), floats: perChunk) }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            best = max(best, Double(chunks * (perChunk / 32 * 32) * 4) / seconds)
        }
        return best
    }

    /// The probe's read rate when it stops where decoding stops: one token's weight bytes read
    /// in phases the sizes of a decoding step's matmuls (q, k and v together, o, gate and up
    /// together, down; the output), each split evenly over the threads of one region per token
    /// and ended by a barrier, as `Transformer.decode` runs them (less its barrier around
    /// attention), with no arithmetic and nothing between phases. What a decoding step could
    /// stream at best with this structure, next to `readBandwidth`'s one long stream per thread.
    public func regionReadBandwidth(tokens: Int = 8, bufferBytes: Int = 512 << 20) -> Double {
        var phases: [Int] = []
        for l in weights.layers {
            phases += [l.wq.byteCount + l.wk.byteCount + l.wv.byteCount, l.wo.byteCount,
                       l.w1.byteCount + l.w3.byteCount, l.w2.byteCount]
        }
        phases.append(weights.output.byteCount)
        let count = bufferBytes / 4
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 1, count: count)
        let p = SendablePointer(buffer)
        let threads = pool.threadCount
        let sums = UnsafeMutablePointer<Float>.allocate(capacity: threads)
        defer { sums.deallocate() }
        sums.initialize(repeating: 0, count: threads)
        let s = SendablePointer(sums)
        // Whole 128-byte steps per thread, from where the last phase stopped (wrapping: the
        // buffer is larger than any cache).
        var starts: [Int] = [], offset = 0, bytes = 0
        for _ in 0..<tokens {
            for phase in phases {
                let perThread = phase / 4 / threads / 32 * 32
                if offset + perThread * threads > count { offset = 0 }
                starts.append(offset)
                offset += perThread * threads
                bytes += perThread * threads * 4
            }
        }
        let t0 = DispatchTime.now().uptimeNanoseconds
        for token in 0..<tokens {
            pool.team { team in
                for (i, phase) in phases.enumerated() {
                    let perThread = phase / 4 / threads / 32 * 32
                    let start = starts[token * phases.count + i] + team.index * perThread
                    s.pointer[team.index] += Benchmark.sumStream(UnsafeRawPointer(p.pointer + start), floats: perThread)
                    team.barrier()
                }
            }
        }
        return Double(bytes) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
    }

    /// The sum of `floats` floats (whole 32-float steps) read in one pass: the probes' stream.
    /// Four independent sums: one would wait on its own add's latency every 32 bytes (about
    /// 45 GB/s per core on Zen 5), below what the memory delivers.
    private static func sumStream(_ base: UnsafeRawPointer, floats: Int) -> Float {
        var a0 = SIMD8<Float>(), a1 = a0, a2 = a0, a3 = a0
        var i = 0
        while i + 32 <= floats {
            a0 += base.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            a1 += base.loadUnaligned(fromByteOffset: 4 * i + 32, as: SIMD8<Float>.self)
            a2 += base.loadUnaligned(fromByteOffset: 4 * i + 64, as: SIMD8<Float>.self)
            a3 += base.loadUnaligned(fromByteOffset: 4 * i + 96, as: SIMD8<Float>.self)
            i += 32
        }
        return (a0 + a1 + a2 + a3).sum()
    }

    /// Peak resident memory of this process so far, in bytes.
    public static var peakResidentBytes: Int {
        var usage = rusage()
        #if os(Linux)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
        #else
        getrusage(RUSAGE_SELF, &usage)
        return usage.ru_maxrss
        #endif
    }
}
