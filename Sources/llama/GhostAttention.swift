import ArgumentParser
import Foundation
import Llama
import LlamaKernels

struct Gatt: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gatt",
        abstract: "Ghost Attention (Llama 2 §3.3): make multi-turn data that keeps a first-turn instruction, fine-tune on it, or measure adherence.",
        discussion: """
            Dialogues: the user turns of a prompt file (the shapes rejection-sample reads; HH-RLHF \
            dialogues work), --turns per dialogue, topped up from the next lines when one is short. \
            Each dialogue gets an instruction drawn with --seed from the built-in families \
            (formatting, word, language: checked by a program; persona, hobby: not) or from \
            --instructions (JSONL {"instruction": …, "check"?: "lowercase" | "uppercase" | "no_commas" | \
            "starts_with:W" | "ends_with:W" | "max_words:N" | "language:fr|es|de"}); about a third \
            combine a checked rule with a persona or hobby.

            Making data (default): the model answers turn after turn with the instruction appended \
            to every user message; for a checked instruction, -k answers are sampled together and \
            the first that keeps it is used (a dialogue with a turn none keeps is dropped, counted). \
            Writes --out/dialogues.jsonl (every dialogue, instruction and answers) and \
            --out/data.jsonl: for each dialogue and each turn t, the instruction once as the system \
            message, plain user turns, answers 1…t-1 as context ("weight": 0: zero loss on every token \
            of the earlier turns) and answer t learned; then, unless --no-train, --out/sft (`llama sft` \
            on data.jsonl).

            --eval: the instruction only as the system message, the model answers every turn, and \
            each answer is checked; prints and writes --out/adherence.json (rate per turn, and over \
            turns 3 to --turns with a 95% Wilson interval, and as a control the rate at which answers \
            given under other instructions keep the same rules). Only checked instructions are drawn.
            """)

    @OptionGroup var model: ModelOptions
    @OptionGroup var sampling: SamplingOptionGroup

    @Option(help: "Dialogues: a prompt file (JSONL) whose user turns are used.")
    var dialogues: String

    @Option(help: "Skip the first N lines' conversations.")
    var skip: Int = 0

    @Option(help: "Make at most N dialogues.")
    var limit: Int?

    @Option(help: "User turns per dialogue.")
    var turns: Int = 4

    @Option(help: "Instructions (JSONL) instead of the built-in families.")
    var instructions: String?

    @Option(help: "Only these families of instructions, comma-separated (formatting, word, language, persona, hobby, or a file's).")
    var families: String?

    @Option(name: [.customShort("k"), .customLong("samples")], help: "Answers sampled together per turn; the first that keeps a checked instruction is used.")
    var samples: Int = 4

    @Option(name: [.customShort("n"), .customLong("max-tokens")], help: "Most tokens per answer.")
    var maxTokens: Int = 128

    @Option(help: "Chat format (default: detected from the model).")
    var template: String?

    @Option(help: "Output directory.")
    var out: String

    @Flag(help: "Measure adherence (instruction only in the system message) instead of making data.")
    var eval = false

    @Flag(help: "Make the data only; do not fine-tune.")
    var noTrain = false

    @Flag(help: """
        When none of the -k answers keeps a checked rule, rewrite the first that ended so it does \
        (lowercased, capitalised, commas removed, the word added, cut to the word limit; a \
        language rule cannot be rewritten). Not in the paper: a small model rarely keeps some \
        rules even when reminded, and without it those rules never reach the data.
        """)
    var repair = false

    @OptionGroup var fineTune: FineTuneOptionGroup

    func run() throws {
        _ = try fineTune.lora.config()
        guard turns >= 1, samples >= 1, maxTokens >= 1, skip >= 0, (limit ?? 1) >= 1 else {
            throw ValidationError("--turns, --samples, --max-tokens, --limit must be positive, --skip not negative")
        }
        Interrupt.install()
        var pool = try instructions.map(GhostAttention.loadInstructions) ?? GhostAttention.builtIn
        if let families {
            let wanted = Set(families.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
            pool = pool.filter { wanted.contains($0.family) }
        }
        if eval { pool = pool.filter(\.checkable) }
        guard !pool.isEmpty else { throw ValidationError("no instructions left\(eval ? " that a program can check" : "") after --families") }

        let m = try model.load()
        let format = try chatFormat(named: template, for: m)
        let loaded = try PromptSet.load(dialogues)
        var set = GhostAttention.dialogues(from: Array(loaded.prompts.dropFirst(skip)), turns: turns)
        if let limit { set = Array(set.prefix(limit)) }
        guard !set.isEmpty else { throw ValidationError("\(dialogues): no dialogue of \(turns) user turns after --skip \(skip)") }
        let drawn = GhostAttention.draw(set.count, from: pool, combine: !eval, seed: sampling.options.seed)
        let generator = Generator(model: m, contextLength: min(m.config.contextLength, 4096), sequences: eval ? 1 : samples,
                                  pool: try model.pool())
        var options = GenerationOptions()
        options.maxTokens = maxTokens
        options.sampling = sampling.options
        options.stopTokens = format.stopTokens(m.tokenizer)
        let baseSeed = options.sampling.seed
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        note("\(dialogues): \(set.count) dialogues of \(turns) turns; instructions: \(pool.count) (\(Set(pool.map(\.family)).sorted().joined(separator: ", ")))")
        if eval {
            try measure(set, drawn, generator, options, format, m, baseSeed)
        } else {
            try makeData(set, drawn, generator, options, format, m, baseSeed)
        }
    }

    private func makeData(_ set: [(lines: [Int], users: [String])], _ drawn: [GhostAttention.Instruction], _ generator: Generator,
                          _ options: GenerationOptions, _ format: ChatFormat, _ m: Model, _ baseSeed: UInt64) throws {
        var options = options
        let records = try JSONLines(path: out + "/dialogues.jsonl")
        let data = try JSONLines(path: out + "/data.jsonl")
        var made = 0, dropped = 0, examples = 0, tries = 0, repairedAnswers = 0, sampledAnswers = 0
        let start = DispatchTime.now().uptimeNanoseconds
        try Interrupt.stoppable { keepGoing in
            for (i, dialogue) in set.enumerated() {
                guard keepGoing() else { return }
                let instruction = drawn[i]
                var answers: [String] = [], failedTurn: Int?, repairedTurns: [Int] = []
                for t in 0..<turns {
                    let conversation = GhostAttention.samplingConversation(users: dialogue.users, answers: answers, instruction: instruction)
                    let tokens = try format.render(conversation, tokenizer: m.tokenizer, defaultSystem: nil)
                    guard tokens.count + maxTokens <= generator.contextLength else { failedTurn = t; break }
                    options.sampling.seed = baseSeed &+ UInt64(dialogue.lines[0]) &* 1_000_003 &+ UInt64(t) &* 7919
                    let results = try generator.samples(prompt: tokens, count: samples, options: options)
                    tries += results.count
                    let usable = results.filter { $0.finishReason == .stop && !$0.text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }
                    if let chosen = usable.first(where: { instruction.isKept(by: $0.text) }) {
                        answers.append(chosen.text.trimmingCharacters(in: .whitespacesAndNewlines))
                    } else if repair, instruction.checkable, let first = usable.first, let fixed = instruction.enforced(on: first.text) {
                        answers.append(fixed)
                        repairedTurns.append(t + 1)
                    } else {
                        failedTurn = t
                        break
                    }
                }
                try records.write(["lines": dialogue.lines, "instruction": instruction.text, "family": instruction.family,
                                   "checks": instruction.checks.map(\.description), "users": dialogue.users, "answers": answers,
                                   "complete": failedTurn == nil, "repaired_turns": repairedTurns])
                if failedTurn != nil {
                    dropped += 1
                } else {
                    made += 1
                    repairedAnswers += repairedTurns.count
                    sampledAnswers += turns - repairedTurns.count
                    for t in 1...turns {
                        try data.write(GhostAttention.trainingExample(users: dialogue.users, answers: answers, instruction: instruction,
                                                                      turns: t).jsonObject)
                        examples += 1
                    }
                }
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                note(String(format: "dialogue %d/%d  %@  %@  (%d kept, %d dropped)  ETA %@", i + 1, set.count,
                            failedTurn.map { "dropped at turn \($0 + 1)" } ?? "kept", instruction.family, made, dropped,
                            duration(seconds / Double(i + 1) * Double(set.count - i - 1))))
            }
        }
        try records.close()
        try data.close()
        let summary: [String: Any] = ["dialogues": made + dropped, "kept": made, "dropped": dropped, "examples": examples,
                                      "answers_sampled": tries, "turns": turns, "kept_answers_repaired": repairedAnswers,
                                      "kept_answers_as_sampled": sampledAnswers, "repair": repair, "samples_per_turn": samples, "seed": baseSeed, "model": m.path]
        try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
            .write(to: URL(fileURLWithPath: out + "/summary.json"), options: .atomic)
        emit("\(made) dialogues kept, \(dropped) dropped (a turn where none of \(samples) answers kept the instruction\(repair ? " and none could be rewritten" : "")); \(examples) training examples in \(out)/data.jsonl\n")
        if repair { emit("kept dialogues' answers: \(sampledAnswers) as sampled, \(repairedAnswers) rewritten to keep the rule\n") }
        if noTrain || Interrupt.requested.load(ordering: .relaxed) { return }
        guard examples > 0 else { throw ValidationError("no dialogue kept: nothing to fine-tune on") }
        note("fine-tuning on \(examples) examples")
        try fineTune.run(model: model, data: out + "/data.jsonl", out: out + "/sft", format: format)
    }

    private func measure(_ set: [(lines: [Int], users: [String])], _ drawn: [GhostAttention.Instruction], _ generator: Generator,
                         _ options: GenerationOptions, _ format: ChatFormat, _ m: Model, _ baseSeed: UInt64) throws {
        var options = options
        let records = try JSONLines(path: out + "/answers.jsonl")
        var kept = [Int](repeating: 0, count: turns), asked = [Int](repeating: 0, count: turns)
        var byFamily: [String: (kept: Int, asked: Int)] = [:]
        var later: [(instruction: GhostAttention.Instruction, answers: [String])] = []  // turns 3+ of each dialogue
        try Interrupt.stoppable { keepGoing in
            for (i, dialogue) in set.enumerated() {
                guard keepGoing() else { return }
                let instruction = drawn[i]
                var answers: [String] = [], keeps: [Bool] = []
                for t in 0..<turns {
                    let conversation = GhostAttention.plainConversation(users: dialogue.users, answers: answers, instruction: instruction)
                    let tokens = try format.render(conversation, tokenizer: m.tokenizer, defaultSystem: nil)
                    guard tokens.count + maxTokens <= generator.contextLength else { break }
                    options.sampling.seed = baseSeed &+ UInt64(dialogue.lines[0]) &* 1_000_003 &+ UInt64(t) &* 7919
                    let answer = try generator.generate(prompt: tokens, options: options).text.trimmingCharacters(in: .whitespacesAndNewlines)
                    let ok = instruction.isKept(by: answer)
                    answers.append(answer)
                    keeps.append(ok)
                    asked[t] += 1
                    if ok { kept[t] += 1 }
                    if t >= 2 {
                        byFamily[instruction.family, default: (0, 0)].asked += 1
                        if ok { byFamily[instruction.family, default: (0, 0)].kept += 1 }
                    }
                }
                later.append((instruction, Array(answers.dropFirst(2))))
                try records.write(["lines": dialogue.lines, "instruction": instruction.text, "checks": instruction.checks.map(\.description),
                                   "users": dialogue.users, "answers": answers, "kept": keeps])
                note("dialogue \(i + 1)/\(set.count)  \(instruction.family)  kept: \(keeps.map { $0 ? "y" : "n" }.joined())")
            }
        }
        try records.close()
        var perTurn: [[String: Any]] = []
        for t in 0..<turns where asked[t] > 0 {
            let a = accuracyInterval(kept[t], asked[t])
            perTurn.append(["turn": t + 1, "kept": kept[t], "n": asked[t], "rate": a.value, "ci95": [a.low, a.high]])
            emit(String(format: "turn %d: %d/%d kept the instruction (%.3f, 95%% %.3f–%.3f)\n", t + 1, kept[t], asked[t], a.value, a.low, a.high))
        }
        var summary: [String: Any] = ["model": m.path, "dialogues": set.count, "turns": turns, "seed": baseSeed,
                                      "temperature": Double(sampling.temperature), "per_turn": perTurn]
        if turns >= 3 {
            let k = kept[2...].reduce(0, +), n = asked[2...].reduce(0, +)
            let a = accuracyInterval(k, n)
            summary["turns_3_on"] = ["kept": k, "n": n, "rate": a.value, "ci95": [a.low, a.high]]
            summary["turns_3_on_by_family"] = byFamily.mapValues { ["kept": $0.kept, "n": $0.asked] }
            emit(String(format: "turns 3-%d: %d/%d kept the instruction (%.3f, 95%% %.3f–%.3f)\n", turns, k, n, a.value, a.low, a.high))
            // A control: how often answers given under *other* instructions keep each dialogue's
            // rules anyway (short answers keep a word limit, French ones a language rule). The
            // rate above minus this one is what the instruction itself did.
            let chance = GhostAttention.chanceRate(later)
            if let byChance = chance {
                summary["turns_3_on_by_chance"] = byChance
                summary["turns_3_on_lift"] = a.value - byChance
                emit(String(format: "by chance (answers to other instructions that keep the same rules): %.3f; lift %+.3f\n", byChance, a.value - byChance))
            }
            // The same control rule by rule: kept with the rule given vs in the other dialogues.
            let rules = GhostAttention.ruleRates(later)
            summary["turns_3_on_by_rule"] = rules.mapValues { ["kept": $0.kept, "n": $0.n, "kept_without": $0.keptWithout, "n_without": $0.nWithout] }
            for (rule, r) in rules.sorted(by: { $0.key < $1.key }) {
                emit(String(format: "  %@: %d/%d with the rule, %d/%d in dialogues without it\n", rule, r.kept, r.n, r.keptWithout, r.nWithout))
            }
        }
        try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
            .write(to: URL(fileURLWithPath: out + "/adherence.json"), options: .atomic)
    }
}
