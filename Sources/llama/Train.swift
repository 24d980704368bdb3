import ArgumentParser
import Foundation
import Llama
import LlamaKernels

/// The shape of a model trained from scratch.
struct ShapeOptions: ParsableArguments {
    @Option(help: "Model width (hidden size).")
    var dim: Int = 288
    @Option(help: "Transformer layers.")
    var layers: Int = 6
    @Option(help: "Attention heads.")
    var heads: Int = 6
    @Option(help: "Key/value heads (fewer than --heads for grouped-query attention; default: --heads).")
    var kvHeads: Int?
    @Option(help: "SwiGLU inner size (default: llama2.c's rule, 2/3 of 4·dim rounded up to a multiple of 32).")
    var hiddenDim: Int?
    @Option(help: "RoPE base frequency.")
    var ropeTheta: Float = 10000
    @Flag(inversion: .prefixedNo, help: "Share the token embedding with the output projection.")
    var tiedEmbeddings = true

    func config(vocabSize: Int, context: Int) throws -> ModelConfig {
        let hidden = hiddenDim ?? ((2 * 4 * dim / 3) + 31) / 32 * 32
        let c = ModelConfig(dim: dim, hiddenDim: hidden, layerCount: layers, headCount: heads, kvHeadCount: kvHeads ?? heads,
                            vocabSize: vocabSize, contextLength: context, ropeTheta: ropeTheta, ropeLayout: .halves)
        if heads > 0, dim % heads != 0 { throw ValidationError("--dim \(dim) is not a multiple of --heads \(heads)") }
        try c.validate(source: "command line")
        return c
    }
}

/// Batch, optimizer and schedule knobs shared by the training commands.
struct TrainingOptionGroup: ParsableArguments {
    @Option(name: .customLong("batch"), help: "Sequences per micro-batch.")
    var batchSize: Int = 8
    @Option(name: .customLong("seq"), help: "Tokens per sequence (at most the model's context).")
    var sequenceLength: Int = 256
    @Option(name: .customLong("accumulate"), help: "Micro-batches per optimizer step (token batch = batch × seq × accumulate).")
    var accumulationSteps: Int = 1
    @Option(help: "Optimizer steps in the run.")
    var steps: Int = 1000
    @Option(help: "Peak learning rate.")
    var lr: Float = 1e-3
    @Option(help: "Linear warm-up steps (from 0 to the peak).")
    var warmup: Int = 100
    @Option(help: "Cosine decay ends at this fraction of the peak (SPEC: 0.1).")
    var minLrRatio: Float = 0.1
    @Option(help: "AdamW beta1.")
    var beta1: Float = 0.9
    @Option(help: "AdamW beta2.")
    var beta2: Float = 0.95
    @Option(help: "AdamW epsilon.")
    var eps: Float = 1e-5
    @Option(help: "AdamW weight decay (matrices and embeddings; not norm gains).")
    var weightDecay: Float = 0.1
    @Option(help: "Clip the global gradient norm to this (0: no clipping).")
    var clip: Float = 1.0
    @Option(help: "Validation loss every N steps (0: only at the end).")
    var evalEvery: Int = 100
    @Option(help: "Fraction of each source held out for validation.")
    var validationFraction: Double = 0.01
    @Option(help: "Seed for initialisation and data order.")
    var seed: UInt64 = 1

    var options: TrainingOptions {
        var o = TrainingOptions()
        o.batchSize = batchSize
        o.sequenceLength = sequenceLength
        o.accumulationSteps = accumulationSteps
        o.steps = steps
        o.schedule = LRSchedule(peak: lr, warmupSteps: warmup, totalSteps: steps, minRatio: minLrRatio)
        o.adamw.beta1 = beta1
        o.adamw.beta2 = beta2
        o.adamw.eps = eps
        o.adamw.weightDecay = weightDecay
        o.adamw.clipNorm = clip
        o.evalEvery = evalEvery
        o.validationFraction = validationFraction
        o.seed = seed
        return o
    }
}

struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-train",
        abstract: "Measure training speed (forward + backward + AdamW) on random tokens.",
        discussion: """
            Builds a randomly initialised model of the given shape and times full optimizer steps \
            (one micro-batch each) on random tokens: one warm-up step, then -r steps; prints \
            tokens/s as mean ± standard deviation. Compare with Tools/bench_train_pytorch.py.
            """)

    @OptionGroup var shape: ShapeOptions
    @Option(help: "Vocabulary size.")
    var vocab: Int = 32000
    @Option(name: .customLong("batch"), help: "Sequences per step.")
    var batchSize: Int = 8
    @Option(name: .customLong("seq"), help: "Tokens per sequence.")
    var sequenceLength: Int = 256
    @Option(name: .short, help: "Threads (default: one per physical core).")
    var t: Int?
    @Option(name: .short, help: "Timed steps.")
    var r: Int = 5
    @Flag(help: "Also time the three products of the output layer (forward, input gradient, weight gradient) in GFLOP/s.")
    var kernels = false

    func run() throws {
        let config = try shape.config(vocabSize: vocab, context: sequenceLength)
        let params = TrainableParameters(config: config, tiedEmbeddings: shape.tiedEmbeddings, seed: 1)
        let pool = t.map { ThreadPool(threads: $0) } ?? .shared
        var rng = SplitMix64(seed: 2)
        let tokens = (0..<(batchSize * (sequenceLength + 1) * 2)).map { _ in Int(rng.next() % UInt64(vocab)) }
        let data = try DataMixture(sources: [.init(name: "random", weight: 1, tokens: tokens)], sequenceLength: sequenceLength,
                                   validationFraction: 0, seed: 1)
        var options = TrainingOptions()
        options.batchSize = batchSize
        options.sequenceLength = sequenceLength
        options.steps = r + 1
        options.schedule = LRSchedule(peak: 1e-4, warmupSteps: 0, totalSteps: r + 1)
        let trainer = try Trainer(parameters: params, data: data, options: options, pool: pool)
        note(String(format: "model: %.2f M parameters, dim %d, %d layers, %d heads, FFN %d, vocab %d; batch %d × %d tokens, %d threads",
                    Double(params.layout.count) / 1e6, config.dim, config.layerCount, config.headCount, config.hiddenDim,
                    vocab, batchSize, sequenceLength, pool.threadCount))
        _ = try trainer.trainStep()
        var speeds: [Double] = []
        for _ in 0..<r {
            let report = try trainer.trainStep()
            speeds.append(report.tokensPerSecond)
            note(String(format: "step %d: loss %.4f, %.2f s, %.1f tokens/s", report.step, report.loss, report.seconds, report.tokensPerSecond))
        }
        let mean = speeds.reduce(0, +) / Double(speeds.count)
        let sd = (speeds.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(max(1, speeds.count - 1))).squareRoot()
        emit(String(format: "train: %.1f ± %.1f tokens/s (%d threads)\n", mean, sd, pool.threadCount))
        if kernels { timeKernels(n: batchSize * sequenceLength, dim: config.dim, vocab: vocab, pool: pool) }
    }

    /// The three training products (`gemm`) at the output layer's shape: n tokens, dim → vocab.
    private func timeKernels(n: Int, dim: Int, vocab: Int, pool: ThreadPool) {
        let x = FloatBuffer(count: n * dim), w = FloatBuffer(count: vocab * dim), y = FloatBuffer(count: n * vocab)
        var rng = SplitMix64(seed: 3)
        for b in [x, w, y] { for i in 0..<b.count { b[i] = Float(Int(rng.next() % 2001) - 1000) / 1000 } }
        let flops = 2.0 * Double(n) * Double(dim) * Double(vocab)
        func time(_ name: String, _ body: () -> Void) {
            body()
            var best = Double.infinity
            for _ in 0..<3 {
                let start = DispatchTime.now().uptimeNanoseconds
                body()
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
            }
            emit(String(format: "%@: %.1f GFLOP/s (%.3f s)\n", name, flops / best / 1e9, best))
        }
        time("forward          y = x·Wᵀ  ") {
            gemm(m: n, n: vocab, k: dim, x.pointer, lda: dim, aTransposed: false, w.pointer, ldb: dim, bTransposed: true,
                 y.pointer, ldc: vocab, accumulate: false, pool: pool)
        }
        time("input gradient  dx = dy·W   ") {
            gemm(m: n, n: dim, k: vocab, y.pointer, lda: vocab, aTransposed: false, w.pointer, ldb: dim, bTransposed: false,
                 x.pointer, ldc: dim, accumulate: false, pool: pool)
        }
        time("weight gradient dW += dyᵀ·x ") {
            gemm(m: vocab, n: dim, k: n, y.pointer, lda: vocab, aTransposed: true, x.pointer, ldb: dim, bTransposed: false,
                 w.pointer, ldc: dim, accumulate: true, pool: pool)
        }
    }
}
