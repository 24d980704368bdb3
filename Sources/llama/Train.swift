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
    @Option(help: "Optimizer steps in the run (sft: default from --epochs).")
    var steps: Int?
    @Option(help: "Peak learning rate (default: pretrain 1e-3, sft 2e-5 as in Llama 2-Chat SFT).")
    var lr: Float?
    @Option(help: "Linear warm-up steps from 0 to the peak (default: pretrain 100, sft 3% of the steps).")
    var warmup: Int?
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

    func options(steps defaultSteps: Int, lr defaultLR: Float, warmup defaultWarmup: (Int) -> Int) -> TrainingOptions {
        var o = TrainingOptions()
        let steps = self.steps ?? defaultSteps
        o.batchSize = batchSize
        o.sequenceLength = sequenceLength
        o.accumulationSteps = accumulationSteps
        o.steps = steps
        o.schedule = LRSchedule(peak: lr ?? defaultLR, warmupSteps: warmup ?? defaultWarmup(steps), totalSteps: steps, minRatio: minLrRatio)
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

struct TokenizeCorpus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize-corpus",
        abstract: "Turn text files into a token shard for training.",
        discussion: """
            Each file is split into documents at blank lines; each document is tokenized on its own \
            and starts with the tokenizer's BOS. The shard (ids as little-endian UInt32 after a \
            16-byte header) is written atomically. Give one shard per data source to `llama pretrain`.
            """)

    @Option(help: "Tokenizer: tokenizer.model, tokenizer.json, tokenizer.bin, a GGUF model or a model directory.")
    var tokenizer: String
    @Option(name: [.short, .long], help: "Output shard.")
    var output: String
    @Argument(help: "UTF-8 text files.")
    var files: [String]

    func run() throws {
        let t = try TokenizerLoader.load(file: tokenizer)
        let start = DispatchTime.now().uptimeNanoseconds
        let count = try TokenShard.write(files: files, tokenizer: t, to: output) { done, total in
            FileHandle.standardError.write(Data("\rtokenizing: \(done)/\(total) documents".utf8))
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        note(String(format: "\n%@: %d tokens (vocabulary %d) in %.1f s", output, count, t.vocabSize, seconds))
    }
}

struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pretrain",
        abstract: "Pre-train a Llama from scratch on token shards (the LLaMA recipe, on the CPU).",
        discussion: """
            Data: one or more shards from `llama tokenize-corpus`, each a source with a sampling \
            weight (--data PATH or --data PATH:WEIGHT; weights are relative, as in the LLaMA data \
            table). Each source is cut into windows of --seq + 1 tokens; the last --validation-fraction \
            of each is held out. Optimizer: AdamW (beta1 0.9, beta2 0.95, eps 1e-5, weight decay 0.1 on \
            matrices and embeddings), global gradient-norm clipping at 1.0, linear warm-up from 0 then \
            cosine decay to 10% of the peak, gradient accumulation (--accumulate): the SPEC.md §3 \
            defaults, all adjustable.

            Writes into --out: checkpoint.lsckpt (every --save-every steps, at the end, and on Ctrl-C; \
            atomic), log.jsonl (one line per step and per validation), and at the end model.gguf \
            (F32 unless --type, with the tokenizer) for `llama run` and llama.cpp, and hf/ (config.json, \
            model.safetensors and the tokenizer file) for transformers. --resume continues \
            from the checkpoint with the same losses an uninterrupted run would have printed; give the \
            same options as the first run.
            """)

    @Option(parsing: .singleValue, help: "Token shard, optionally with a weight: PATH or PATH:WEIGHT (repeat for a mixture).")
    var data: [String]
    @Option(help: "Tokenizer the shards were made with (written into model.gguf).")
    var tokenizer: String
    @Option(help: "Output directory.")
    var out: String
    @OptionGroup var shape: ShapeOptions
    @OptionGroup var training: TrainingOptionGroup
    @Option(help: "Context length written into the model (default: --seq).")
    var context: Int?
    @Option(help: "Save a checkpoint every N steps (0: only at the end and on Ctrl-C).")
    var saveEvery: Int = 100
    @Option(name: .short, help: "Threads (default: one per physical core).")
    var t: Int?
    @Flag(help: "Continue the run saved in --out.")
    var resume = false
    @Option(help: "Type of the exported model.gguf: f32, f16 or bf16.")
    var type: ExportType = .f32

    func run() throws {
        Interrupt.install()
        let tok = try TokenizerLoader.load(file: tokenizer)
        let sources = try data.map { spec -> DataMixture.Source in
            var path = spec, weight = 1.0
            if let colon = spec.lastIndex(of: ":"), let w = Double(spec[spec.index(after: colon)...]) {
                path = String(spec[..<colon])
                weight = w
            }
            return .init(name: path, weight: weight, tokens: try TokenShard.read(path, vocabSize: tok.vocabSize))
        }
        let options = training.options(steps: 1000, lr: 1e-3, warmup: { _ in 100 })
        let mixture = try DataMixture(sources: sources, sequenceLength: options.sequenceLength,
                                      validationFraction: options.validationFraction, seed: options.seed)
        let config = try shape.config(vocabSize: tok.vocabSize, context: context ?? options.sequenceLength)
        let (trainer, checkpointPath, logPath) = try startOrResume(
            out: out, resume: resume, config: config, options: options, data: mixture,
            pool: t.map { ThreadPool(threads: $0) } ?? .shared) {
                TrainableParameters(config: config, tiedEmbeddings: shape.tiedEmbeddings, seed: options.seed)
            }
        try runTraining(trainer, checkpointPath: checkpointPath, logPath: logPath, saveEvery: saveEvery) {
            let modelPath = out + "/model.gguf"
            try GGUFExport.write(weights: try trainer.parameters.weights(), tokenizer: tok,
                                 name: URL(fileURLWithPath: out).lastPathComponent, chatTemplate: nil, source: checkpointPath,
                                 to: modelPath, recipe: GGUFExport.Recipe.uniform(type.tensorType)!)
            let copyable = tokenizer.hasSuffix(".model") || tokenizer.hasSuffix(".json")
            try HFExport.write(trainer.parameters, to: out + "/hf", tokenizerFile: copyable ? tokenizer : nil,
                               bosID: tok.bosID, eosID: tok.eosID)
            return modelPath + " and " + out + "/hf"
        }
    }

}

func describe(_ c: ModelConfig) -> String {
    "dim \(c.dim), \(c.layerCount) layers, \(c.headCount)/\(c.kvHeadCount) heads, FFN \(c.hiddenDim), vocab \(c.vocabSize), context \(c.contextLength)"
}

/// A new run in `out` (refused when a checkpoint is already there), or with `resume` the saved
/// one, which must be the same model shape, options and data sources.
func startOrResume(out: String, resume: Bool, config: ModelConfig, options: TrainingOptions, data: DataMixture,
                   pool: ThreadPool, fresh: () throws -> TrainableParameters) throws -> (Trainer, String, String) {
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    let checkpointPath = out + "/checkpoint.lsckpt", logPath = out + "/log.jsonl"
    if resume {
        let checkpoint = try Trainer.loadCheckpoint(checkpointPath)
        if checkpoint.parameters.config != config {
            throw LlamaError.invalidArgument("\(checkpointPath): the checkpoint's model (\(describe(checkpoint.parameters.config))) differs from this command's (\(describe(config))); give the options of the first run")
        }
        try checkSameOptions(checkpoint, options, checkpointPath)
        let trainer = try Trainer(resuming: checkpoint, data: data, pool: pool)
        note("resuming at step \(trainer.step) of \(options.steps)")
        return (trainer, checkpointPath, logPath)
    }
    if FileManager.default.fileExists(atPath: checkpointPath) {
        throw LlamaError.invalidArgument("\(checkpointPath) exists: pass --resume to continue it, or choose another --out")
    }
    let trainer = try Trainer(parameters: try fresh(), data: data, options: options, pool: pool)
    guard FileManager.default.createFile(atPath: logPath, contents: nil) else {
        throw LlamaError.cannotWrite(file: logPath, reason: "could not create the training log")
    }
    return (trainer, checkpointPath, logPath)
}

/// A resumed run must be the run that was saved: same training options.
func checkSameOptions(_ checkpoint: Trainer.Checkpoint, _ options: TrainingOptions, _ path: String) throws {
    guard checkpoint.options != options else { return }
    // Leaf values by dotted path ("schedule.peak"), so the message names exactly what changed.
    func leaves(_ o: TrainingOptions) -> [String: String] {
        var out: [String: String] = [:]
        func walk(_ v: Any, _ path: String) {
            if let dict = v as? [String: Any] {
                for (k, x) in dict { walk(x, path.isEmpty ? k : path + "." + k) }
            } else {
                out[path] = "\(v)"
            }
        }
        walk((try? JSONSerialization.jsonObject(with: JSONEncoder().encode(o))) ?? [:], "")
        return out
    }
    let then = leaves(checkpoint.options), now = leaves(options)
    let keys = Set(then.keys).union(now.keys).sorted().filter { then[$0] != now[$0] }
    let list = keys.map { "\($0): \(then[$0] ?? "-") then, \(now[$0] ?? "-") now" }.joined(separator: "; ")
    throw LlamaError.invalidArgument("\(path): the checkpoint was made with other training options (\(list)); give the options of the first run")
}

enum ExportType: String, ExpressibleByArgument, CaseIterable {
    case f32, f16, bf16
    var tensorType: TensorType { switch self { case .f32: .f32; case .f16: .f16; case .bf16: .bf16 } }
}

/// Steps `trainer` to the end of its run with progress on stderr and one JSON line per step
/// (and per validation) in `logPath`; saves `checkpointPath` every `saveEvery` steps, at the end
/// and on Ctrl-C; at the end calls `export` (which returns the path it wrote).
func runTraining(_ trainer: Trainer, checkpointPath: String, logPath: String, saveEvery: Int,
                 export: () throws -> String) throws {
    let options = trainer.options
    let c = trainer.parameters.config
    note(String(format: "model: %.2f M parameters (%@); %d tokens per step; training data %d tokens, %d validation windows",
                Double(trainer.parameters.layout.count) / 1e6, describe(c), options.tokensPerStep,
                trainer.data.trainingTokens, trainer.data.validationWindows))
    let log = try JSONLines(path: logPath, append: true)
    func record(_ object: [String: Any]) throws { try log.write(object) }
    let started = DispatchTime.now().uptimeNanoseconds
    let firstStep = trainer.step
    var lastValidation: Double?
    let stopped = try Interrupt.stoppable { keepGoing -> Bool in
        while trainer.step < options.steps {
            guard keepGoing() else { return true }
            let r = try trainer.trainStep()
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            let eta = elapsed / Double(r.step - firstStep) * Double(options.steps - r.step)
            note(String(format: "step %d/%d | loss %.4f | lr %.2e | grad-norm %.3f | %.0f tok/s | ETA %@",
                        r.step, options.steps, r.loss, r.lr, r.gradNorm, r.tokensPerSecond, duration(eta)))
            try record(["step": r.step, "loss": r.loss, "lr": Double(r.lr), "grad_norm": Double(r.gradNorm),
                        "tokens_per_second": r.tokensPerSecond])
            if (options.evalEvery > 0 && r.step % options.evalEvery == 0) || r.step == options.steps {
                let v = try trainer.validationLoss()
                lastValidation = v
                note(String(format: "step %d: validation loss %.4f (perplexity %.2f)", r.step, v, exp(v)))
                try record(["step": r.step, "val_loss": v])
            }
            if saveEvery > 0 && r.step % saveEvery == 0 && r.step < options.steps { try trainer.save(to: checkpointPath) }
        }
        return false
    }
    try trainer.save(to: checkpointPath)
    try log.close()
    if stopped {
        note("interrupted at step \(trainer.step): saved \(checkpointPath); continue with the same command and --resume")
        return
    }
    let modelPath = try export()
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
    note(String(format: "done: %d steps in %@, final validation loss %@; wrote %@ and %@", trainer.step - firstStep, duration(seconds),
                lastValidation.map { String(format: "%.4f", $0) } ?? "-", checkpointPath, modelPath))
}

/// "1h02m", "3m05s", "12s".
func duration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "-" }
    let s = Int(seconds.rounded())
    if s >= 3600 { return String(format: "%dh%02dm", s / 3600, s % 3600 / 60) }
    if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return "\(s)s"
}

struct SFT: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sft",
        abstract: "Supervised fine-tuning of a model on chat examples (Llama 2-Chat SFT, SPEC.md §4.1).",
        discussion: """
            Examples (JSONL): {"messages": [{"role", "content"}, …]} (an assistant message with \
            "weight": 0 is context, not learned), {"question", "answer"} (GSM8K), \
            {"prompt", "response"} or {"instruction", "input", "output"}. Each is rendered in the \
            model's chat format (--template to override), every token marked as prompt or answer while \
            the sequence is built; examples are packed back to back (the format's own turn markers, \
            e.g. <|im_end|> or </s><s>, separate them) and cut into sequences of --seq tokens; the \
            loss counts answer tokens only (each answer with its end-of-turn token). The model \
            (any loadable file, quantized ones dequantised) trains in Float32; the last \
            --validation-fraction of the packed stream is held out. Defaults follow the paper where \
            a CPU allows: cosine schedule, peak 2e-5, weight decay 0.1, 2 epochs.

            Writes into --out: checkpoint.lsckpt, log.jsonl and, at the end, model.gguf with the \
            model's tokenizer and chat template, and hf/ (config.json, model.safetensors, and the \
            tokenizer files when the model is a Hugging Face directory). --resume continues a run \
            (same options). \
            --evaluate trains nothing and prints the model's mean loss per answer token on --data.

            --lora-rank R trains LoRA adapters instead of the weights (PEFT's definition; \
            --lora-alpha, --lora-dropout, --lora-targets): the base weights stay frozen, model.gguf and \
            hf/ have the adapters merged in, and adapter/ holds them alone in PEFT's layout \
            (adapter_config.json, adapter_model.safetensors).
            """)

    @OptionGroup var model: ModelOptions
    @Option(help: "Chat examples (JSONL).")
    var data: String
    @Option(help: "Output directory (not needed with --evaluate).")
    var out: String = "sft"
    @Option(help: "Chat format: chatml, llama2 or llama3 (default: from the model's template).")
    var template: ChatFormat?
    @Option(help: "Passes over the examples (when --steps is not given).")
    var epochs: Double = 2
    @OptionGroup var training: TrainingOptionGroup
    @OptionGroup var loraOptions: LoRAOptionGroup
    @Option(help: "Freeze the embedding and the lower N layers (the backward pass stops above them).")
    var freeze: Int = 0
    @Option(help: "Save a checkpoint every N steps (0: only at the end and on Ctrl-C).")
    var saveEvery: Int = 100
    @Flag(help: "Continue the run saved in --out.")
    var resume = false
    @Option(help: "Type of the exported model.gguf: f32, f16 or bf16.")
    var type: ExportType = .f32
    @Option(help: "Use only the first N examples.")
    var limit: Int?
    @Flag(help: "Do not train: print the model's mean loss per answer token on --data (e.g. held-out examples).")
    var evaluate = false

    func run() throws {
        Interrupt.install()
        let m = try model.load()
        let format = template ?? ChatFormat.detect(template: m.chatTemplate, tokenizer: m.tokenizer)
        var examples = try SFTData.load(data)
        if let limit { examples = Array(examples.prefix(limit)) }
        let packed = try SFTData.pack(examples, format: format, tokenizer: m.tokenizer,
                                      defaultSystem: ChatFormat.defaultSystemPrompt(template: m.chatTemplate))
        let learned = packed.learned.filter { $0 }.count
        note("\(data): \(examples.count) examples, \(packed.tokens.count) tokens (\(learned) answer tokens learned), format \(format.rawValue)")
        if evaluate {
            let r = try SFTData.answerLoss(TrainableParameters(weights: m.weights), tokens: packed.tokens, learned: packed.learned,
                                           sequenceLength: training.sequenceLength, batchSize: training.batchSize,
                                           pool: try model.pool()) { done, total in
                FileHandle.standardError.write(Data("\rwindows: \(done)/\(total)".utf8))
            }
            emit(String(format: "\nanswer-token loss %.4f nats over %d tokens (%@)\n", r.loss, r.count, m.path))
            return
        }
        let windows = packed.tokens.count / (training.sequenceLength + 1)
        let trainWindows = max(1, windows - max(1, Int((Double(windows) * training.validationFraction).rounded())))
        let perStep = training.batchSize * training.accumulationSteps
        let epochSteps = max(1, Int((Double(trainWindows) * epochs / Double(perStep)).rounded(.up)))
        var options = training.options(steps: epochSteps, lr: 2e-5, warmup: { max(1, $0 * 3 / 100) })
        options.lora = try loraOptions.config()
        options.frozenLayers = freeze > 0 ? freeze : nil
        let mixture = try DataMixture(sources: [.init(name: data, weight: 1, tokens: packed.tokens, learned: packed.learned)],
                                      sequenceLength: options.sequenceLength, validationFraction: options.validationFraction,
                                      seed: options.seed)
        let (trainer, checkpointPath, logPath) = try startOrResume(
            out: out, resume: resume, config: m.config, options: options, data: mixture, pool: try model.pool()) {
                TrainableParameters(weights: m.weights)
            }
        try runTraining(trainer, checkpointPath: checkpointPath, logPath: logPath, saveEvery: saveEvery) {
            let modelPath = out + "/model.gguf"
            let trained = try trainer.trainedParameters()
            try GGUFExport.write(weights: try trained.weights(), tokenizer: m.tokenizer, name: m.name + " SFT",
                                 chatTemplate: m.chatTemplate, source: checkpointPath, to: modelPath,
                                 recipe: GGUFExport.Recipe.uniform(type.tensorType)!)
            // The Hugging Face directory; its tokenizer files are copied when the model came from one
            // (a GGUF's tokenizer has no file to copy: transformers then needs the original's).
            let hf = out + "/hf"
            try HFExport.write(trained, to: hf, tokenizerFile: nil, bosID: m.tokenizer.bosID, eosID: m.tokenizer.eosID)
            if m.format == .huggingFace {
                for name in ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"] {
                    let source = m.path + "/" + name
                    guard FileManager.default.fileExists(atPath: source) else { continue }
                    try? FileManager.default.removeItem(atPath: hf + "/" + name)
                    try FileManager.default.copyItem(atPath: source, toPath: hf + "/" + name)
                }
            }
            if let lora = trainer.lora {
                // The adapters alone, for PEFT on top of the base model's Hugging Face weights.
                try lora.writePEFT(to: out + "/adapter", baseModel: m.format == .huggingFace ? m.path : nil)
                return modelPath + ", " + hf + " (adapters merged) and " + out + "/adapter (PEFT)"
            }
            return modelPath + " and " + hf
        }
    }
}

extension ChatFormat: ExpressibleByArgument {}

struct TrainTokenizer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-tokenizer",
        abstract: "Learn a SentencePiece-style BPE tokenizer from text and write tokenizer.model.",
        discussion: """
            The Llama tokenizer's settings: whitespace as ▁ with a dummy prefix, digits split, \
            characters beyond --character-coverage left to <0xNN> byte fallback, <unk>/<s>/</s> as \
            ids 0/1/2. Each line is a sentence; pieces never cross whitespace. The file is the \
            protobuf the sentencepiece library reads (sentencepiece.SentencePieceProcessor(model_file=…)) \
            and encodes exactly as this program does; written atomically.
            """)

    @Option(help: "Vocabulary size, including <unk>, <s>, </s> and the 256 byte pieces.")
    var vocabSize: Int = 4096
    @Option(name: [.short, .long], help: "Output file (tokenizer.model).")
    var output: String
    @Option(help: "Fraction of the text's characters the vocabulary must cover; the rarest others fall back to bytes.")
    var characterCoverage: Double = 0.9995
    @Flag(inversion: .prefixedNo, help: "Keep every digit a piece of its own.")
    var splitDigits = true
    @Flag(inversion: .prefixedNo, help: "Encode characters outside the vocabulary as <0xNN> byte pieces.")
    var byteFallback = true
    @Argument(help: "UTF-8 text files.")
    var files: [String]

    func run() throws {
        var text = ""
        for f in files {
            guard let data = FileManager.default.contents(atPath: f) else { throw LlamaError.fileNotFound(f) }
            guard let s = String(data: data, encoding: .utf8) else { throw LlamaError.invalidUTF8(what: f) }
            text += s
            if !text.hasSuffix("\n") { text += "\n" }
        }
        var options = TokenizerTrainer.Options()
        options.vocabSize = vocabSize
        options.characterCoverage = characterCoverage
        options.splitDigits = splitDigits
        options.byteFallback = byteFallback
        let start = DispatchTime.now().uptimeNanoseconds
        let result = try TokenizerTrainer.train(text: text, options: options) { done, total in
            FileHandle.standardError.write(Data("\rmerges: \(done)/\(total)".utf8))
        }
        try TokenizerTrainer.write(result, to: output)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        note(String(format: "\n%@: %d pieces (%d merges, %d characters) in %.1f s", output, result.pieces.count,
                    result.merges, result.characters, seconds))
    }
}
