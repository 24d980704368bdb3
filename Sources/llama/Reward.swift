import ArgumentParser
import Foundation
import Llama
import LlamaKernels

struct Reward: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reward",
        abstract: "Reward models (Llama 2-Chat's helpfulness and safety models): train on preference pairs, evaluate, score.",
        discussion: """
            A reward model is a language model's trunk with a scalar head read at the last token of the \
            answer, trained with Llama 2's ranking loss -log σ(r_chosen − r_rejected − m(rating)). Pairs are \
            JSONL in the HH-RLHF shape ({"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": …}) or \
            {"prompt", "chosen", "rejected", "rating"?, "safety"?}; dialogues are rendered with the model's \
            chat format (no default system prompt). Train one model per kind of data: helpfulness pairs make \
            the helpfulness model, safety pairs the safety model (--kind picks them from a mixed file by \
            the "safety" flag).
            """,
        subcommands: [RewardTrain.self, RewardEval.self, RewardScore.self])
}

struct RewardDataOptions: ParsableArguments {
    @Option(help: "Longest sequence in tokens; longer dialogues keep their last tokens (counted and reported).")
    var seq: Int = 512

    @Option(help: "Chat format of the dialogues (default: detected from the model).")
    var template: String?

    @Option(help: "Margin table m(rating): none, small or large (Llama 2 Table 27); pairs without a rating get 0.")
    var margins: String = "small"

    @Option(help: """
        Which pairs of a mixed file to use: all, safety (pairs marked "safety": true) or helpfulness \
        (the others): the safety and helpfulness models each train on their own.
        """)
    var kind: String = "all"

    func marginTable() throws -> MarginTable {
        switch margins {
        case "none": .none
        case "small": .small
        case "large": .large
        default: throw ValidationError("--margins is none, small or large")
        }
    }

    func load(_ path: String, model: Model) throws -> PreferenceData {
        guard seq >= 8 else { throw ValidationError("--seq must be at least 8") }
        let format = try chatFormat(named: template, for: model)
        var data = try PreferenceData.load(path, format: format, tokenizer: model.tokenizer, maxTokens: seq,
                                           margins: try marginTable())
        var kept = ""
        switch kind {
        case "all": break
        case "safety", "helpfulness":
            let before = data.examples.count
            data.examples.removeAll { ($0.safety == true) != (kind == "safety") }
            kept = " \(kind) pairs of \(before)"
            guard !data.examples.isEmpty else { throw ValidationError("\(path): none of the \(before) pairs is a \(kind) pair") }
        default: throw ValidationError("--kind is all, safety or helpfulness")
        }
        note("\(path): \(data.examples.count)\(kept.isEmpty ? "" : kept) pairs (\(format.rawValue) format)"
             + (data.skippedEmpty > 0 ? "; \(data.skippedEmpty) left out for an empty answer" : "")
             + (data.skippedIdentical > 0 ? "; \(data.skippedIdentical) left out as identical" : "")
             + (data.truncated > 0 ? "; \(data.truncated) cut to their last \(seq) tokens" : ""))
        return data
    }
}

/// Accuracy with a 95% Wilson interval.
func accuracyInterval(_ correct: Int, _ n: Int) -> (value: Double, low: Double, high: Double) {
    guard n > 0 else { return (0, 0, 0) }
    let p = Double(correct) / Double(n), z = 1.96, nn = Double(n)
    let centre = (p + z * z / (2 * nn)) / (1 + z * z / nn)
    let half = z * (p * (1 - p) / nn + z * z / (4 * nn * nn)).squareRoot() / (1 + z * z / nn)
    return (p, centre - half, centre + half)
}

/// The longer of a pair's two sequences: batches of pairs of similar length waste little on padding.
func pairLength(_ p: PreferencePair) -> Int { max(p.chosen.count, p.rejected.count) }

/// Runs pairs through a reward model in batches of similar length; returns the summed loss, the
/// correct count and each pair's rewards, in the pairs' order.
func evaluatePairs(_ model: RewardModel, _ pairs: [PreferencePair]) throws -> (loss: Double, correct: Int, rewards: [(Float, Float)]) {
    var loss = 0.0, correct = 0
    var rewards = [(Float, Float)](repeating: (0, 0), count: pairs.count)
    let order = pairs.indices.sorted { pairLength(pairs[$0]) < pairLength(pairs[$1]) }
    var i = 0
    while i < order.count {
        let chunk = Array(order[i..<min(i + model.pairsPerBatch, order.count)])
        let r = try model.evaluate(chunk.map { pairs[$0] })
        loss += r.lossSum
        correct += r.correct
        for (k, j) in chunk.enumerated() { rewards[j] = (r.chosen[k], r.rejected[k]) }
        i += chunk.count
    }
    return (loss, correct, rewards)
}

struct RewardTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a reward model from a language model on preference pairs.",
        discussion: """
            Starts from --model (its trunk; a new score head drawn from N(0, 0.02²)), holds out \
            --validation of the pairs (chosen by --seed), and trains for --epochs with AdamW (β 0.9/0.95, \
            weight decay 0.1, clipping 1.0), warm-up over 3% of the steps (at least 5) and cosine decay to \
            10%, as Llama 2's reward models. Writes OUT/hf (a transformers LlamaForSequenceClassification \
            directory), OUT/log.jsonl and OUT/validation.json. Ctrl-C stops, validates and writes what \
            has been trained. With --lora-rank the trunk stays frozen and LoRA adapters train with the \
            head: OUT/hf has them merged, OUT/adapter holds them in PEFT's layout (SEQ_CLS, with \
            score.weight as a module to save).
            """)

    @OptionGroup var model: ModelOptions
    @OptionGroup var dataOptions: RewardDataOptions
    @OptionGroup var loraOptions: LoRAOptionGroup

    @Option(help: "Preference pairs (JSONL).")
    var data: String

    @Option(help: "Output directory.")
    var out: String

    @Option(help: "Fraction of the pairs held out for validation.")
    var validation: Double = 0.1

    @Option(help: "Passes over the training pairs.")
    var epochs: Int = 1

    @Option(help: "Peak learning rate.")
    var lr: Float = 1e-5

    @Option(help: "Pairs per forward/backward pass.")
    var batch: Int = 4

    @Option(help: "Passes per optimizer step (pairs per step = batch × accumulate).")
    var accumulate: Int = 8

    @Option(help: "Seed of the validation split, the shuffling and the head's initialisation.")
    var seed: UInt64 = 1

    @Option(help: """
        Freeze the embedding and the lower N layers: the backward pass stops above them, and the \
        states entering layer N are saved per sequence (up to --state-gib), so later epochs and \
        validation run only the upper layers.
        """)
    var freeze: Int = 0

    @Option(help: "Memory for the saved frozen-layer states, in GiB.")
    var stateGib: Double = 4

    @Option(help: "Also validate every N steps (0: only at the end); logged to log.jsonl.")
    var evalEvery: Int = 0

    func run() throws {
        guard (0..<1).contains(validation) else { throw ValidationError("--validation is a fraction in [0, 1)") }
        guard epochs >= 1, batch >= 1, accumulate >= 1, lr > 0 else { throw ValidationError("--epochs, --batch, --accumulate and --lr must be positive") }
        guard stateGib >= 0, evalEvery >= 0 else { throw ValidationError("--state-gib and --eval-every cannot be negative") }
        let m = try model.load()
        let all = try dataOptions.load(data, model: m)
        var rng = SplitMix64(seed: seed)
        var order = Array(all.examples.indices)
        order.shuffle(using: &rng)
        let heldOut = Int((Double(order.count) * validation).rounded())
        let validationPairs = order.prefix(heldOut).map { all.examples[$0].pair }
        var training = order.dropFirst(heldOut).map { all.examples[$0].pair }
        guard !training.isEmpty else { throw ValidationError("no training pairs left after holding out \(heldOut)") }
        let pairsPerStep = batch * accumulate
        let stepsPerEpoch = (training.count + pairsPerStep - 1) / pairsPerStep
        let totalSteps = stepsPerEpoch * epochs
        let schedule = LRSchedule(peak: lr, warmupSteps: max(5, Int((0.03 * Double(totalSteps)).rounded())), totalSteps: totalSteps)
        let pool = try model.pool()

        let params = TrainableParameters(weights: m.weights).addingScoreHead(seed: seed)
        let rm = RewardModel(parameters: params, pairsPerBatch: batch, sequenceLength: dataOptions.seq,
                             padToken: RewardModel.padToken(for: m.tokenizer), pool: pool)
        guard (0...m.config.layerCount).contains(freeze) else { throw ValidationError("--freeze is 0...\(m.config.layerCount) layers") }
        rm.frozenLayers = freeze
        rm.frozenStateBudget = Int(stateGib * Double(1 << 30))
        let optimizer = AdamW(layout: params.layout)
        optimizer.frozen = params.layout.tensorNames(belowLayer: freeze)
        let gradients = FloatBuffer(count: params.layout.count)
        // LoRA: adapters and the head train, everything else is frozen.
        var lora: LoRAAdapters?, loraOptimizer: AdamW?
        if let config = try loraOptions.config() {
            let adapters = try LoRAAdapters(config: config, model: params.config, seed: seed)
            rm.attach(adapters)
            lora = adapters
            loraOptimizer = AdamW(slots: adapters.slots, count: adapters.count)
            optimizer.frozen = Set(params.layout.slots.map(\.name)).subtracting(["score.weight"])
            note(String(format: "LoRA rank %d, alpha %g, dropout %g on %@: %.2f M adapter parameters", config.rank, Double(config.alpha),
                        Double(config.dropout), config.targets.map(\.rawValue).joined(separator: ","), Double(adapters.count) / 1e6))
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let log = try JSONLines(path: out + "/log.jsonl")
        note(String(format: "reward model: %.1f M parameters; %d training pairs, %d validation; %d steps of %d pairs; lr %.2g, warm-up %d",
                    Double(params.layout.count) / 1e6, training.count, validationPairs.count, totalSteps, pairsPerStep,
                    Double(lr), schedule.warmupSteps))

        Interrupt.install()
        let start = DispatchTime.now().uptimeNanoseconds
        var tokensSeen = 0, stepsDone = 0
        var recentLoss: [Double] = [], recentCorrect: [Double] = []
        try Interrupt.stoppable { keepGoing in
            for epoch in 0..<epochs {
                if epoch > 0 { training.shuffle(using: &rng) }
                for s in 0..<stepsPerEpoch {
                    guard keepGoing() else { return }
                    // The step's gradient is a sum over its pairs: grouping them by length
                    // changes only how much padding the passes carry.
                    let stepPairs = training[(s * pairsPerStep)..<min((s + 1) * pairsPerStep, training.count)].sorted {
                        pairLength($0) < pairLength($1)
                    }
                    gradients.zero()
                    rm.loraGradients?.zero()
                    var loss = 0.0, correct = 0, i = 0
                    while i < stepPairs.count {
                        let chunk = Array(stepPairs[i..<min(i + batch, stepPairs.count)])
                        let r = try rm.accumulateGradients(chunk, gradScale: 1 / Float(stepPairs.count), into: gradients)
                        loss += r.lossSum
                        correct += r.correct
                        tokensSeen += chunk.reduce(0) { $0 + $1.chosen.count + $1.rejected.count }
                        i += chunk.count
                    }
                    var groups = [(optimizer, gradients)]
                    if let loraOptimizer, let g = rm.loraGradients { groups.append((loraOptimizer, g)) }
                    let norm = AdamW.clip(groups, maxNorm: optimizer.options.clipNorm)
                    let rate = schedule.lr(step: stepsDone)
                    optimizer.update(params.values, gradients: gradients, lr: rate)
                    if let lora, let loraOptimizer, let g = rm.loraGradients { loraOptimizer.update(lora.values, gradients: g, lr: rate) }
                    stepsDone += 1
                    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                    let meanLoss = loss / Double(stepPairs.count), accuracy = Double(correct) / Double(stepPairs.count)
                    recentLoss = (recentLoss + [meanLoss]).suffix(20)
                    recentCorrect = (recentCorrect + [accuracy]).suffix(20)
                    try log.write(["step": stepsDone, "epoch": epoch, "loss": meanLoss, "accuracy": accuracy, "lr": Double(rate),
                                   "grad_norm": Double(norm), "tokens_per_second": Double(tokensSeen) / seconds])
                    note(String(format: "step %d/%d  loss %.4f  acc %.3f (last 20: %.4f, %.3f)  lr %.2e  |g| %.2f  %.0f tok/s  %@",
                                stepsDone, totalSteps, meanLoss, accuracy, recentLoss.reduce(0, +) / Double(recentLoss.count),
                                recentCorrect.reduce(0, +) / Double(recentCorrect.count), Double(rate), Double(norm),
                                Double(tokensSeen) / seconds, duration(seconds)))
                    if evalEvery > 0, stepsDone % evalEvery == 0, stepsDone < totalSteps, !validationPairs.isEmpty {
                        let v = try evaluatePairs(rm, validationPairs)
                        let a = accuracyInterval(v.correct, validationPairs.count)
                        try log.write(["step": stepsDone, "validation_accuracy": a.value, "validation_accuracy_95": [a.low, a.high],
                                       "validation_loss": v.loss / Double(validationPairs.count)])
                        note(String(format: "validation at step %d: accuracy %.4f (%.4f–%.4f), loss %.4f", stepsDone, a.value,
                                    a.low, a.high, v.loss / Double(validationPairs.count)))
                    }
                }
                if epoch == 0, freeze > 0 {
                    note(String(format: "saved the states entering layer %d for %d sequences (%.2f GiB)", freeze, rm.frozenStateCount,
                                Double(rm.frozenStateBytes) / Double(1 << 30)))
                }
            }
        }
        if stepsDone < totalSteps { note("stopped after \(stepsDone) of \(totalSteps) steps") }

        var summary: [String: Any] = ["steps": stepsDone, "total_steps": totalSteps, "training_pairs": training.count,
                                      "seconds": Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9]
        if !validationPairs.isEmpty {
            let v = try evaluatePairs(rm, validationPairs)
            let a = accuracyInterval(v.correct, validationPairs.count)
            summary["validation"] = ["pairs": validationPairs.count, "accuracy": a.value, "accuracy_95": [a.low, a.high],
                                     "loss": v.loss / Double(validationPairs.count)]
            emit(String(format: "validation: accuracy %.4f (95%% interval %.4f–%.4f), loss %.4f, %d pairs\n",
                        a.value, a.low, a.high, v.loss / Double(validationPairs.count), validationPairs.count))
        }
        let hf = out + "/hf"
        var exported = params
        if let lora {
            exported = try lora.merged(with: params)
            let head = Array(params.tensor("score.weight")!)
            try lora.writePEFT(to: out + "/adapter", taskType: "SEQ_CLS", baseModel: m.format == .huggingFace ? m.path : nil,
                               extra: [("score.weight", [1, params.config.dim], head)])
        }
        try HFExport.write(exported, to: hf, tokenizerFile: copyableTokenizer(m), bosID: m.tokenizer.bosID, eosID: m.tokenizer.eosID,
                           padID: RewardModel.padToken(for: m.tokenizer))
        let json = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        try json.write(to: URL(fileURLWithPath: out + "/validation.json"), options: .atomic)
        note("wrote \(hf) (LlamaForSequenceClassification)" + (copyableTokenizer(m) == nil
            ? "; its tokenizer is the base model's: pass --tokenizer \(try model.modelPath()) to `llama reward eval/score`" : ""))
    }
}

/// The tokenizer file of a Hugging Face model directory, to copy beside an export.
func copyableTokenizer(_ m: Model) -> String? {
    guard m.format == .huggingFace else { return nil }
    for name in ["tokenizer.json", "tokenizer.model"] where FileManager.default.fileExists(atPath: m.path + "/" + name) {
        return m.path + "/" + name
    }
    return nil
}

struct RewardEval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Accuracy of a reward model on preference pairs: how often the chosen answer scores higher.")

    @OptionGroup var model: ModelOptions
    @OptionGroup var dataOptions: RewardDataOptions

    @Option(help: "Preference pairs (JSONL).")
    var data: String

    @Option(help: "Evaluate only the first N pairs.")
    var limit: Int?

    @Option(help: "Pairs per forward pass.")
    var batch: Int = 4

    @Flag(help: "Print the result as JSON.")
    var json = false

    func run() throws {
        guard let path = model.model else { throw ValidationError("--model: a reward model directory (from `llama reward train`)") }
        let m = try Model(path: path, tokenizerPath: model.tokenizer)
        let params = try RewardModel.loadParameters(directory: path)
        var pairs = try dataOptions.load(data, model: m).examples.map(\.pair)
        if let limit { pairs = Array(pairs.prefix(max(1, limit))) }
        let rm = RewardModel(parameters: params, pairsPerBatch: batch, sequenceLength: dataOptions.seq,
                             padToken: RewardModel.padToken(for: m.tokenizer), pool: try model.pool())
        let v = try evaluatePairs(rm, pairs)
        let a = accuracyInterval(v.correct, pairs.count)
        if json {
            let out: [String: Any] = ["pairs": pairs.count, "accuracy": a.value, "accuracy_95": [a.low, a.high],
                                      "loss": v.loss / Double(pairs.count)]
            emit(String(decoding: try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys]), as: UTF8.self) + "\n")
        } else {
            emit(String(format: "accuracy %.4f (95%% interval %.4f–%.4f), loss %.4f, %d pairs\n",
                        a.value, a.low, a.high, v.loss / Double(pairs.count), pairs.count))
        }
    }
}

struct RewardScore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Score (prompt, response) pairs with a reward model.",
        discussion: "Give --prompt and --response, or --data FILE of {\"prompt\", \"response\"} lines (prints one JSON line per input).")

    @OptionGroup var model: ModelOptions

    @Option(help: "Chat format (default: detected from the model).")
    var template: String?

    @Option(help: "The user's prompt.")
    var prompt: String?

    @Option(help: "The assistant's answer.")
    var response: String?

    @Option(help: "JSONL of {\"prompt\", \"response\"} objects.")
    var data: String?

    @Option(help: "Longest sequence in tokens (longer ones keep their last tokens).")
    var seq: Int = 512

    func run() throws {
        guard let path = model.model else { throw ValidationError("--model: a reward model directory (from `llama reward train`)") }
        var inputs: [(String, String)] = []
        if let prompt, let response {
            inputs = [(prompt, response)]
        } else if let data {
            guard let d = FileManager.default.contents(atPath: data) else { throw LlamaError.fileNotFound(data) }
            guard let text = String(data: d, encoding: .utf8) else { throw LlamaError.invalidUTF8(what: data) }
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            where !line.trimmingCharacters(in: .whitespaces).isEmpty {
                guard let o = (try? JSONValue.parse(Data(line.utf8)))?.object, let p = o["prompt"]?.string, let r = o["response"]?.string else {
                    throw LlamaError.invalidArgument("\(data):\(n + 1): needs text fields 'prompt' and 'response'")
                }
                inputs.append((p, r))
            }
        } else {
            throw ValidationError("give --prompt and --response, or --data")
        }
        let m = try Model(path: path, tokenizerPath: model.tokenizer)
        let params = try RewardModel.loadParameters(directory: path)
        let format = try chatFormat(named: template, for: m)
        let rm = RewardModel(parameters: params, pairsPerBatch: 1, sequenceLength: seq, padToken: RewardModel.padToken(for: m.tokenizer),
                             pool: try model.pool())
        for (p, r) in inputs {
            let tokens = try PreferenceData.sequence([ChatMessage(.user, p), ChatMessage(.assistant, r)], format: format,
                                                     tokenizer: m.tokenizer, defaultSystem: nil).suffix(seq)
            let score = try rm.scores([Array(tokens)])[0]
            if data == nil {
                emit(String(format: "%.4f\n", Double(score)))
            } else {
                let line: [String: Any] = ["prompt": p, "response": r, "score": Double(score)]
                emit(String(decoding: try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]), as: UTF8.self) + "\n")
            }
        }
    }
}
