import ArgumentParser
import Foundation
import Llama
import LlamaKernels

struct RejectionSample: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rejection-sample",
        abstract: "One round of rejection-sampling fine-tuning (Llama 2-Chat RLHF, SPEC.md §4.3): sample K answers, keep the best by reward, fine-tune on them.",
        discussion: """
            For each prompt, --samples answers are sampled together (one batch per step, the prompt \
            computed once) and scored by the reward model; the best is kept. Prompts (JSONL): \
            {"prompt": text or messages}, {"messages": […]} (a last assistant answer is dropped) or an \
            HH-RLHF {"chosen": dialogue} (the dialogue before its last answer).

            Writes into --out: samples.jsonl (every answer with its reward, streamed), best.jsonl \
            (the kept answers as SFT examples: each prompt's best answer that ended, unless \
            --keep-unfinished; the prompt's own assistant turns are context with "weight": 0), \
            summary.json (mean reward of all samples, of each prompt's best and of the answers that \
            ended, with 95% intervals; the share cut off by --max-tokens) and, unless --no-train, sft/ — the `llama sft` run on \
            best.jsonl, whose sft/model.gguf is the next round's --model (RLHF-V1, V2, …).

            To measure a policy: --samples 1 --no-train on held-out prompts; --baseline \
            OTHER/samples.jsonl (another model on the same prompts) adds the paired difference in mean \
            reward with its interval.
            """)

    @OptionGroup var model: ModelOptions
    @OptionGroup var sampling: SamplingOptionGroup

    @OptionGroup var promptFile: PromptFileOptions
    @OptionGroup var rewardModel: RewardModelOptions

    @Option(name: [.customShort("k"), .customLong("samples")], help: "Answers sampled per prompt.")
    var samples: Int = 4

    @Option(name: [.customShort("n"), .customLong("max-tokens")], help: "Most tokens per answer.")
    var maxTokens: Int = 256

    @Option(help: "Prompts longer than this many tokens are left out (counted).")
    var maxPrompt: Int = 512

    @Option(help: "Chat format (default: detected from the model).")
    var template: String?

    @Option(help: "Output directory.")
    var out: String

    @Option(help: "samples.jsonl of another run on the same prompts: report the paired difference in mean reward.")
    var baseline: String?

    @Flag(help: "Sample and select only; do not fine-tune.")
    var noTrain = false

    @Flag(help: """
        Also keep answers cut off by --max-tokens. By default only answers that ended (end of turn \
        or a stop string) are kept, so the fine-tuning targets are whole answers.
        """)
    var keepUnfinished = false

    @OptionGroup var fineTune: FineTuneOptionGroup

    func run() throws {
        _ = try fineTune.lora.config()  // bad LoRA options fail before sampling, not after
        guard samples >= 1, maxTokens >= 1, maxPrompt >= 1 else {
            throw ValidationError("--samples, --max-tokens and --max-prompt must be positive")
        }
        Interrupt.install()
        let m = try model.load()
        let pool = try model.pool()
        let format = try chatFormat(named: template, for: m)
        let defaultSystem = ChatFormat.defaultSystemPrompt(template: m.chatTemplate)
        let set = try promptFile.load()
        let scorer = try rewardModel.scorer(for: m, format: format, sequences: samples, pool: pool)
        let generator = Generator(model: m, contextLength: min(m.config.contextLength, maxPrompt + maxTokens), sequences: samples, pool: pool)
        var options = GenerationOptions()
        options.maxTokens = maxTokens
        options.sampling = sampling.options
        let baseSeed = options.sampling.seed
        options.stopTokens = format.stopTokens(m.tokenizer)

        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let records = try JSONLines(path: out + "/samples.jsonl")
        let kept = try JSONLines(path: out + "/best.jsonl")
        note("\(promptFile.prompts): \(set.count) prompts, \(samples) samples each (temperature \(sampling.temperature), seed \(baseSeed)); reward model \(rewardModel.reward)")

        let start = DispatchTime.now().uptimeNanoseconds
        var all: [Double] = [], best: [Double] = [], perPrompt: [Int: Double] = [:], ended: [Double] = []
        var tooLong = 0, generated = 0, done = 0, generationSeconds = 0.0, noneFinished = 0
        func messageObjects(_ messages: [ChatMessage]) -> [[String: String]] {
            messages.map { ["role": $0.role.rawValue, "content": $0.content] }
        }
        try Interrupt.stoppable { keepGoing in
            for (i, prompt) in set.enumerated() {
                guard keepGoing() else { return }
                let tokens = try format.render(prompt.messages, tokenizer: m.tokenizer, defaultSystem: defaultSystem)
                guard tokens.count <= maxPrompt else {
                    tooLong += 1
                    continue
                }
                // Each prompt's samples have their own seeds, fixed by the run's seed and the prompt's line.
                options.sampling.seed = baseSeed &+ UInt64(prompt.line) &* 1_000_003
                let t0 = DispatchTime.now().uptimeNanoseconds
                let answers = try generator.samples(prompt: tokens, count: samples, options: options)
                generationSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                generated += answers.reduce(0) { $0 + $1.tokens.count }
                let rewards = try scorer.score(prompt: prompt.messages, answers: answers.map(\.text))
                let top = rewards.indices.max { rewards[$0] < rewards[$1] }!
                let keepable = rewards.indices.filter { keepUnfinished || answers[$0].finishReason == .stop }
                let chosen = keepable.max { rewards[$0] < rewards[$1] }
                all += rewards.map(Double.init)
                ended += rewards.indices.filter { answers[$0].finishReason == .stop }.map { Double(rewards[$0]) }
                best.append(Double(rewards[top]))
                perPrompt[prompt.line] = rewards.reduce(0.0) { $0 + Double($1) } / Double(rewards.count)
                try records.write(["line": prompt.line, "prompt": messageObjects(prompt.messages), "best": top,
                                   "kept": chosen.map { $0 as Any } ?? NSNull(),
                                   "samples": zip(answers, rewards).map { a, r in
                                       ["text": a.text, "reward": Double(r), "tokens": a.tokens.count,
                                        "finish_reason": a.finishReason.rawValue] as [String: Any]
                                   }])
                if let chosen {
                    // Only the sampled answer is learned: the prompt's earlier assistant turns are
                    // someone else's words, context with weight 0.
                    try kept.write(SFTData.Example(context: prompt.messages, answer: answers[chosen].text).jsonObject)
                } else {
                    noneFinished += 1
                }
                done += 1
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                let eta = seconds / Double(i + 1) * Double(set.count - i - 1)
                note(String(format: "prompt %d/%d  rewards %@  best %.3f  mean so far %.3f  %.1f tok/s sampled  ETA %@", i + 1, set.count,
                            rewards.map { String(format: "%.2f", $0) }.joined(separator: " "), rewards[top],
                            all.reduce(0, +) / Double(all.count), Double(generated) / generationSeconds, duration(eta)))
            }
        }
        try records.close()
        try kept.close()
        if tooLong > 0 { note("\(tooLong) prompts longer than --max-prompt \(maxPrompt) tokens left out") }
        if noneFinished > 0 { note("\(noneFinished) prompts kept no answer: every sample was cut off by --max-tokens") }
        guard done > 0 else { throw ValidationError("no prompt was sampled") }

        let allReward = MeanInterval(all), bestReward = MeanInterval(best), endedReward = MeanInterval(ended)
        let cutOff = Double(all.count - ended.count) / Double(all.count)
        var summary: [String: Any] = [
            "cut_off_fraction": cutOff, "mean_answer_tokens": Double(generated) / Double(all.count),
            // JSON has no NaN: null when no answer ended.
            "mean_reward_of_ended": endedReward.count == 0 ? ["mean": NSNull(), "ci95": NSNull(), "n": 0] as [String: Any]
                : ["mean": endedReward.mean, "ci95": [endedReward.low, endedReward.high], "n": endedReward.count],
            "prompts": done, "samples_per_prompt": samples, "prompts_too_long": tooLong, "prompts_without_finished_answer": noneFinished, "temperature": Double(sampling.temperature),
            "seed": baseSeed, "model": m.path, "reward_model": rewardModel.reward,
            "mean_reward": ["mean": allReward.mean, "ci95": [allReward.low, allReward.high], "n": allReward.count],
            "mean_best_reward": ["mean": bestReward.mean, "ci95": [bestReward.low, bestReward.high], "n": bestReward.count],
            "seconds": Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9]
        emit(String(format: "%d prompts × %d samples: mean reward %.4f (95%% %.4f…%.4f), mean of the best %.4f (%.4f…%.4f)\n",
                    done, samples, allReward.mean, allReward.low, allReward.high, bestReward.mean, bestReward.low, bestReward.high))
        emit(String(format: "answers: %.1f tokens on average, %.0f%% cut off by --max-tokens; mean reward of those that ended %.4f (95%% %.4f…%.4f, %d)\n",
                    Double(generated) / Double(all.count), 100 * cutOff, endedReward.mean, endedReward.low, endedReward.high, endedReward.count))
        if let baseline {
            let other = try Self.meanRewards(baseline)
            let common = perPrompt.keys.filter { other[$0] != nil }.sorted()
            guard !common.isEmpty else { throw ValidationError("\(baseline) has none of these prompts (matched by line)") }
            let diff = MeanInterval(common.map { perPrompt[$0]! - other[$0]! })
            summary["difference_from_baseline"] = ["baseline": baseline, "mean": diff.mean, "ci95": [diff.low, diff.high], "n": diff.count]
            emit(String(format: "against %@: mean reward difference %+.4f (95%% %+.4f…%+.4f) over %d prompts\n",
                        baseline, diff.mean, diff.low, diff.high, diff.count))
        }
        let json = try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
        try json.write(to: URL(fileURLWithPath: out + "/summary.json"), options: .atomic)
        if noTrain || Interrupt.requested.load(ordering: .relaxed) { return }
        guard noneFinished < done else { throw ValidationError("no answer to keep: every sample was cut off (raise --max-tokens)") }

        note("fine-tuning on the \(done) kept answers")
        try fineTune.run(model: model, data: out + "/best.jsonl", out: out + "/sft", format: format)
    }

    /// Mean reward per prompt line of a samples.jsonl.
    static func meanRewards(_ path: String) throws -> [Int: Double] {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw LlamaError.fileNotFound(path)
        }
        var out: [Int: Double] = [:]
        for (n, line) in text.split(separator: "\n").enumerated() {
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                  let prompt = object["line"] as? Int, let samples = object["samples"] as? [[String: Any]] else {
                throw LlamaError.invalidArgument("\(path):\(n + 1): not a samples.jsonl record (line, samples)")
            }
            let rewards = samples.compactMap { $0["reward"] as? Double }
            guard rewards.count == samples.count, !rewards.isEmpty else {
                throw LlamaError.invalidArgument("\(path):\(n + 1): a sample without a reward")
            }
            out[prompt] = rewards.reduce(0, +) / Double(rewards.count)
        }
        return out
    }
}
