import ArgumentParser
import Foundation
import Llama
import LlamaKernels

struct DistillSafety: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "distill-safety",
        abstract: "Safety context distillation (Llama 2 §4.2.4): answer with a safety pre-prompt, keep what the safety reward model prefers, fine-tune without the pre-prompt.",
        discussion: """
            For each prompt (the shapes rejection-sample reads), --samples answers are sampled with \
            the pre-prompt as the system message and --samples without it, with the same seeds. Both \
            are scored by the safety reward model on the conversation *without* the pre-prompt. The \
            best pre-prompted answer that ended is kept when it scores above the best plain answer \
            (the paper keeps the distilled answer only where the reward model prefers it).

            Writes into --out: samples.jsonl (both sets of answers with their rewards and whether one \
            was kept), distilled.jsonl (the kept answers as SFT examples, the conversation without \
            the pre-prompt; the prompt's own assistant turns are context, "weight": 0), summary.json \
            (mean reward with and without the pre-prompt, their paired difference, how many were \
            kept) and, unless --no-train, sft/ (`llama sft` on distilled.jsonl).

            To measure the result without any pre-prompt: `llama rejection-sample -m OUT/sft/model.gguf \
            --no-train --baseline BASE/samples.jsonl` on held-out prompts.
            """)

    static let defaultPreprompt = "You are a safe and responsible assistant. You never help with anything harmful, unethical, dangerous or illegal; you say so politely, explain why, and offer a safe alternative when there is one."

    @OptionGroup var model: ModelOptions
    @OptionGroup var sampling: SamplingOptionGroup

    @OptionGroup(title: "Adversarial prompts") var promptFile: PromptFileOptions

    @Option(help: "The safety pre-prompt (a system message while sampling).")
    var preprompt: String = DistillSafety.defaultPreprompt

    @OptionGroup(title: "The safety reward model") var rewardModel: RewardModelOptions

    @Option(name: [.customShort("k"), .customLong("samples")], help: "Answers sampled with and without the pre-prompt, each.")
    var samples: Int = 1

    @Option(name: [.customShort("n"), .customLong("max-tokens")], help: "Most tokens per answer.")
    var maxTokens: Int = 256

    @Option(help: "Prompts longer than this many tokens (with the pre-prompt) are left out (counted).")
    var maxPrompt: Int = 512

    @Option(help: "Chat format (default: detected from the model).")
    var template: String?

    @Option(help: "Output directory.")
    var out: String

    @Flag(help: "Sample and select only; do not fine-tune.")
    var noTrain = false

    @OptionGroup var fineTune: FineTuneOptionGroup

    /// The conversation with the pre-prompt as its system message (before any system message it has).
    static func withPreprompt(_ messages: [ChatMessage], _ preprompt: String) -> [ChatMessage] {
        if let first = messages.first, first.role == .system {
            return [ChatMessage(.system, preprompt + "\n\n" + first.content)] + messages.dropFirst()
        }
        return [ChatMessage(.system, preprompt)] + messages
    }

    func run() throws {
        _ = try fineTune.lora.config()
        guard samples >= 1, maxTokens >= 1, maxPrompt >= 1, !preprompt.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ValidationError("--samples, --max-tokens and --max-prompt must be positive, --preprompt not empty")
        }
        Interrupt.install()
        let m = try model.load()
        let pool = try model.pool()
        let format = try chatFormat(named: template, for: m)
        let defaultSystem = ChatFormat.defaultSystemPrompt(template: m.chatTemplate)
        let set = try promptFile.load()
        // The answers with and without the pre-prompt are scored together.
        let scorer = try rewardModel.scorer(for: m, format: format, sequences: 2 * samples, pool: pool)
        let generator = Generator(model: m, contextLength: min(m.config.contextLength, maxPrompt + maxTokens), sequences: samples, pool: pool)
        var options = GenerationOptions()
        options.maxTokens = maxTokens
        options.sampling = sampling.options
        options.stopTokens = format.stopTokens(m.tokenizer)
        let baseSeed = options.sampling.seed

        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let records = try JSONLines(path: out + "/samples.jsonl")
        let distilled = try JSONLines(path: out + "/distilled.jsonl")
        note("\(promptFile.prompts): \(set.count) prompts, \(samples) answer(s) with and without the pre-prompt each; safety reward model \(rewardModel.reward)")
        var with: [Double] = [], without: [Double] = [], differences: [Double] = []
        var kept = 0, tooLong = 0, done = 0
        let start = DispatchTime.now().uptimeNanoseconds
        try Interrupt.stoppable { keepGoing in
            for (i, prompt) in set.enumerated() {
                guard keepGoing() else { return }
                let guided = try format.render(Self.withPreprompt(prompt.messages, preprompt), tokenizer: m.tokenizer, defaultSystem: nil)
                let plain = try format.render(prompt.messages, tokenizer: m.tokenizer, defaultSystem: defaultSystem)
                guard guided.count <= maxPrompt, plain.count <= maxPrompt else {
                    tooLong += 1
                    continue
                }
                options.sampling.seed = baseSeed &+ UInt64(prompt.line) &* 1_000_003
                let a = try generator.samples(prompt: guided, count: samples, options: options)
                let b = try generator.samples(prompt: plain, count: samples, options: options)
                // Both are judged as answers to the conversation without the pre-prompt.
                let ra = try scorer.score(prompt: prompt.messages, answers: a.map(\.text))
                let rb = try scorer.score(prompt: prompt.messages, answers: b.map(\.text))
                let meanA = ra.reduce(0.0) { $0 + Double($1) } / Double(ra.count)
                let meanB = rb.reduce(0.0) { $0 + Double($1) } / Double(rb.count)
                with.append(meanA); without.append(meanB); differences.append(meanA - meanB)
                let ended = ra.indices.filter { a[$0].finishReason == .stop }
                let best = ended.max { ra[$0] < ra[$1] }
                let bestPlain = rb.max()!
                let keep = best.map { ra[$0] > bestPlain } ?? false
                if keep, let best {
                    kept += 1
                    try distilled.write(SFTData.Example(context: prompt.messages, answer: a[best].text).jsonObject)
                }
                func answers(_ r: [GenerationResult], _ rewards: [Float]) -> [[String: Any]] {
                    zip(r, rewards).map { ["text": $0.text, "reward": Double($1), "tokens": $0.tokens.count, "finish_reason": $0.finishReason.rawValue] }
                }
                try records.write(["line": prompt.line, "with_preprompt": answers(a, ra), "without_preprompt": answers(b, rb),
                                   "kept": keep ? best! as Any : NSNull()])
                done += 1
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                note(String(format: "prompt %d/%d  with %.2f  without %.2f  %@  (%d kept)  ETA %@", i + 1, set.count, meanA, meanB,
                            keep ? "kept" : "not kept", kept, duration(seconds / Double(i + 1) * Double(set.count - i - 1))))
            }
        }
        try records.close()
        try distilled.close()
        if tooLong > 0 { note("\(tooLong) prompts longer than --max-prompt \(maxPrompt) tokens left out") }
        guard done > 0 else { throw ValidationError("no prompt was sampled") }
        let w = MeanInterval(with), wo = MeanInterval(without), d = MeanInterval(differences)
        let summary: [String: Any] = [
            "prompts": done, "kept": kept, "samples": samples, "prompts_too_long": tooLong, "preprompt": preprompt, "seed": baseSeed,
            "model": m.path, "reward_model": rewardModel.reward,
            "mean_reward_with_preprompt": ["mean": w.mean, "ci95": [w.low, w.high]],
            "mean_reward_without_preprompt": ["mean": wo.mean, "ci95": [wo.low, wo.high]],
            "difference": ["mean": d.mean, "ci95": [d.low, d.high], "n": d.count]]
        try JSONSerialization.data(withJSONObject: summary, options: [.prettyPrinted, .sortedKeys])
            .write(to: URL(fileURLWithPath: out + "/summary.json"), options: .atomic)
        emit(String(format: "%d prompts: mean safety reward %.4f with the pre-prompt, %.4f without (difference %+.4f, 95%% %+.4f…%+.4f); %d answers kept\n",
                    done, w.mean, wo.mean, d.mean, d.low, d.high, kept))
        if noTrain || Interrupt.requested.load(ordering: .relaxed) { return }
        guard kept > 0 else { throw ValidationError("no answer kept: the reward model never preferred a pre-prompted answer") }
        note("fine-tuning on the \(kept) kept answers, without the pre-prompt")
        try fineTune.run(model: model, data: out + "/distilled.jsonl", out: out + "/sft", format: format)
    }
}
