import ArgumentParser
import Foundation
import Llama
import LlamaKernels

struct ModelOptions: ParsableArguments {
    @Option(name: [.short, .long], help: "Model: a GGUF file, a Hugging Face directory or a llama2.c .bin (default: the SmolLM2-135M-Instruct GGUF, fetched on first use).")
    var model: String?

    @Option(help: "Tokenizer file to use instead of the model's own (tokenizer.model, tokenizer.json, tokenizer.bin or GGUF).")
    var tokenizer: String?

    @Option(name: [.short, .long], help: "Worker threads (default: one per physical core).")
    var threads: Int?

    func modelPath() throws -> String {
        if let model { return model }
        return try DefaultModel.ensure()
    }

    func load() throws -> Model {
        try Model(path: modelPath(), tokenizerPath: tokenizer)
    }

    func pool() throws -> ThreadPool {
        guard let threads else { return .shared }
        guard threads > 0 else { throw ValidationError("--threads must be at least 1") }
        return ThreadPool(threads: threads)
    }
}

struct SamplingOptionGroup: ParsableArguments {
    @Option(name: [.customLong("temp"), .customLong("temperature")], help: "Temperature; 0 = greedy.")
    var temperature: Float = 0.8
    @Option(name: .customLong("top-k"), help: "Keep the K most likely tokens (0 = all).")
    var topK: Int = 40
    @Option(name: .customLong("top-p"), help: "Nucleus sampling: keep tokens up to this cumulative probability (1 = off).")
    var topP: Float = 0.95
    @Option(name: .customLong("min-p"), help: "Drop tokens less likely than this fraction of the most likely one (0 = off).")
    var minP: Float = 0.05
    @Option(name: .customLong("repeat-penalty"), help: "Penalty for repeating recent tokens (1 = off).")
    var repeatPenalty: Float = 1.0
    @Option(name: .customLong("repeat-last-n"), help: "How many recent tokens the repeat penalty considers (-1 = all).")
    var repeatLastN: Int = 64
    @Option(name: .customLong("seed"), help: "Random seed; the same seed gives the same output (default: random).")
    var seed: UInt64?

    func validate() throws {
        if temperature < 0 { throw ValidationError("--temp must be >= 0") }
        if !(0...1).contains(topP) { throw ValidationError("--top-p must be in 0...1") }
        if !(0...1).contains(minP) { throw ValidationError("--min-p must be in 0...1") }
        if repeatPenalty <= 0 { throw ValidationError("--repeat-penalty must be > 0") }
    }

    var options: SamplingOptions {
        var o = SamplingOptions()
        o.temperature = temperature
        o.topK = topK
        o.topP = topP
        o.minP = minP
        o.repeatPenalty = repeatPenalty
        o.repeatLastN = repeatLastN
        o.seed = seed ?? UInt64.random(in: 0...UInt64.max)
        return o
    }
}

struct GenerationOptionGroup: ParsableArguments {
    @Option(name: [.short, .customLong("max-tokens")], help: "Most tokens to generate.")
    var n: Int = 512
    @Option(name: .customLong("stop"), help: "Stop when the output contains this text (repeatable).")
    var stop: [String] = []
    @Option(name: [.short, .customLong("ctx-size")], help: "Context length in tokens (default: the model's, at most 4096).")
    var ctxSize: Int?

    func validate() throws {
        if n < 0 { throw ValidationError("-n must be >= 0") }
        if let c = ctxSize, c < 1 { throw ValidationError("--ctx-size must be at least 1") }
    }

    func contextLength(for model: Model) -> Int {
        ctxSize ?? min(model.config.contextLength, 4096)
    }
}

/// LoRA instead of full fine-tuning.
struct LoRAOptionGroup: ParsableArguments {
    @Option(help: "Train LoRA adapters of this rank instead of the weights (0: train the weights).")
    var loraRank: Int = 0
    @Option(help: "LoRA alpha (the adapters are scaled by alpha / rank).")
    var loraAlpha: Float = 16
    @Option(help: "LoRA dropout on the adapters' input.")
    var loraDropout: Float = 0.05
    @Option(help: "Projections to adapt: a list of q,k,v,o,gate,up,down, or all, attention, mlp.")
    var loraTargets: String = "q,v"

    func config() throws -> LoRAConfig? {
        guard loraRank != 0 else { return nil }
        let c = LoRAConfig(rank: loraRank, alpha: loraAlpha, dropout: loraDropout, targets: try LoRATarget.parse(loraTargets))
        do { try c.validate() } catch { throw ValidationError("\(error)") }
        return c
    }
}

/// The `llama sft` run that rejection-sample, gatt and distill-safety end with, on the data they
/// wrote: its options and the call.
struct FineTuneOptionGroup: ParsableArguments {
    @Option(help: "Fine-tuning: passes over the data.")
    var epochs: Double = 2
    @Option(help: "Fine-tuning: peak learning rate.")
    var lr: Float = 1e-5
    @Option(help: "Fine-tuning: tokens per sequence.")
    var seq: Int = 512
    @Option(help: "Fine-tuning: sequences per micro-batch.")
    var batch: Int = 4
    @Option(help: "Fine-tuning: freeze the embedding and the lower N layers.")
    var freeze: Int = 0
    @OptionGroup(title: "Fine-tuning with LoRA") var lora: LoRAOptionGroup

    /// Runs `llama sft` on `data` into `out`, from `model`'s model, tokenizer and threads.
    func run(model: ModelOptions, data: String, out: String, format: ChatFormat) throws {
        var arguments = ["--model", try model.modelPath(), "--data", data, "--out", out,
                         "--epochs", String(epochs), "--lr", String(lr), "--seq", String(seq), "--batch", String(batch),
                         "--template", format.rawValue]
        if freeze > 0 { arguments += ["--freeze", String(freeze)] }
        if lora.loraRank > 0 {
            arguments += ["--lora-rank", String(lora.loraRank), "--lora-alpha", String(lora.loraAlpha),
                          "--lora-dropout", String(lora.loraDropout), "--lora-targets", lora.loraTargets]
        }
        if let t = model.tokenizer { arguments += ["--tokenizer", t] }
        if let t = model.threads { arguments += ["--threads", String(t)] }
        try SFT.parse(arguments).run()
    }
}

/// Writes text to stdout immediately (generation streams token by token).
func emit(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// A progress callback printing "label: N% (done/total tensors)" on one refreshing stderr line.
func tensorProgress(_ label: String) -> (Int, Int) -> Void {
    var last = -1
    return { done, total in
        let percent = done * 100 / max(1, total)
        if percent != last {
            last = percent
            FileHandle.standardError.write(Data("\r\(label): \(percent)% (\(done)/\(total) tensors)".utf8))
        }
    }
}

/// A JSONL file written a line at a time (training logs, evaluation records): complete up to the
/// last line written, even when the run is stopped.
final class JSONLines {
    let path: String
    private let handle: FileHandle
    private let encoder = JSONEncoder()

    /// Creates (or empties) the file; with `append`, keeps what it has and writes after it.
    init(path: String, append: Bool = false) throws {
        self.path = path
        if !append || !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw LlamaError.cannotWrite(file: path, reason: "cannot create")
            }
        }
        handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    }

    func write(_ object: [String: Any]) throws {
        try handle.write(contentsOf: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) + Data("\n".utf8))
    }

    func write<T: Encodable>(_ value: T) throws {
        try handle.write(contentsOf: try encoder.encode(value) + Data("\n".utf8))
    }

    func close() throws { try handle.close() }
}

/// The chat format `--template` names, or the one the model's own template implies.
func chatFormat(named name: String?, for model: Model) throws -> ChatFormat {
    guard let name else { return ChatFormat.detect(template: model.chatTemplate, tokenizer: model.tokenizer) }
    guard let format = ChatFormat(rawValue: name) else {
        throw ValidationError("unknown --template '\(name)' (choose from \(ChatFormat.allCases.map(\.rawValue).joined(separator: ", ")))")
    }
    return format
}

func note(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

func stats(_ r: GenerationResult) -> String {
    String(format: "prompt: %d tokens (%d evaluated) in %.2f s, %.1f tok/s | generated: %d tokens in %.2f s, %.1f tok/s",
           r.promptTokens, r.promptTokensEvaluated, r.promptSeconds, r.promptTokensPerSecond,
           r.tokens.count, r.generationSeconds, r.tokensPerSecond)
}

/// Standard input as UTF-8 text, or a clear error.
func readStandardInput() throws -> String {
    let data = FileHandle.standardInput.readDataToEndOfFile()
    guard let s = String(data: data, encoding: .utf8) else { throw LlamaError.invalidUTF8(what: "standard input") }
    return s
}

/// The prompt file a sampling command reads (rejection-sample, distill-safety, ppo) and which of
/// its prompts to use.
struct PromptFileOptions: ParsableArguments {
    @Option(help: """
        Prompts (JSONL): {"prompt": text or messages}, {"messages": […]} (a last assistant answer is \
        dropped) or an HH-RLHF {"chosen": dialogue} (the dialogue before its last answer).
        """)
    var prompts: String
    @Option(help: "Skip the first N prompts.")
    var skip: Int = 0
    @Option(help: "Use at most N prompts.")
    var limit: Int?

    func validate() throws {
        guard skip >= 0, (limit ?? 1) >= 1 else { throw ValidationError("--skip must not be negative, --limit must be positive") }
    }

    /// The prompts after --skip, at most --limit of them.
    func load() throws -> [PromptSet.Prompt] {
        let loaded = try PromptSet.load(prompts)
        if loaded.skipped > 0 { note("\(prompts): \(loaded.skipped) conversations that do not end with a user message left out") }
        var set = loaded.prompts.dropFirst(skip)
        if let limit { set = set.prefix(limit) }
        guard !set.isEmpty else { throw ValidationError("\(prompts): no prompts left after --skip \(skip)") }
        return Array(set)
    }
}

/// The reward model a sampling command scores answers with.
struct RewardModelOptions: ParsableArguments {
    @Option(help: "Reward model: a directory written by `llama reward train` (its tokenizer is --model's).")
    var reward: String
    @Option(help: "Tokens the reward model reads (the --seq it was trained with); longer dialogues keep their last tokens.")
    var rewardSeq: Int = 512

    func validate() throws {
        guard rewardSeq >= 8 else { throw ValidationError("--reward-seq must be at least 8") }
    }

    /// A scorer for `model`'s answers, reading `sequences` dialogues per pass; `directory`
    /// instead of --reward for a second model.
    func scorer(_ directory: String? = nil, for model: Model, format: ChatFormat, sequences: Int, pool: ThreadPool) throws -> RewardScorer {
        let directory = directory ?? reward
        let parameters = try RewardModel.loadParameters(directory: directory)
        guard parameters.config.vocabSize == model.config.vocabSize else {
            throw ValidationError("the reward model \(directory) has a vocabulary of \(parameters.config.vocabSize), the model \(model.config.vocabSize): it must share --model's tokenizer")
        }
        let rm = RewardModel(parameters: parameters, pairsPerBatch: max(1, (sequences + 1) / 2), sequenceLength: rewardSeq,
                             padToken: RewardModel.padToken(for: model.tokenizer), pool: pool)
        return RewardScorer(model: rm, format: format, tokenizer: model.tokenizer)
    }
}
