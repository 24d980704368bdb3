import ArgumentParser
import Foundation
import Llama
import LlamaKernels

struct PPOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ppo",
        abstract: "RLHF with PPO and a KL penalty (Llama 2-Chat, SPEC.md §4.4): the policy samples, reward models score, PPO updates LoRA adapters or every weight.",
        discussion: """
            Each iteration: --batch prompts (taken in order from --prompts, round and round) are \
            answered together by the current policy (one answer each, sampled at --temp with no \
            truncation, so the answers are the policy's own distribution); the reward model scores \
            each answer: Rc is --reward's score, or, with --safety-reward too, the safety model's \
            when the prompt is tagged "safety": true (or --safety-prompts) or σ(safety) < \
            --safety-threshold, else the helpfulness model's, less --missing-eos-penalty for an \
            answer cut off by --max-tokens. Rc is whitened with the running mean \
            and deviation of every score so far; each answer token gets −β (log π − log π_ref) \
            and the last one also Rc; advantages by GAE (γ --gamma, λ --lambda); then --ppo-epochs \
            passes of mini-batches, one AdamW step each (constant rate, global gradient norm clipped \
            at 1) of the clipped surrogate loss (--clip) plus --vf-coef × the clipped value loss.

            The policy is the model plus LoRA adapters (--lora-rank, --lora-alpha, --lora-targets; \
            no dropout); the frozen model is the reference policy (the same weights, adapters left \
            out). With --full the policy is a copy of every weight, trained, and the model as loaded \
            stays frozen as the reference (memory: five Float32 copies of the weights). A value \
            head reads the policy's last hidden states.

            Writes into --out: log.jsonl (per iteration: mean reward, KL to the reference, policy \
            and value loss, clip fractions, entropy, tokens/s; per evaluation: the held-out mean \
            reward with its 95% interval and KL), rollouts.jsonl (every answer and its reward), \
            checkpoint.ppockpt (every --save-every iterations and on Ctrl-C; --resume continues), \
            and at the end model.gguf (adapters merged) and, with adapters, adapter/ (PEFT). With --held-out, the \
            policy answers those prompts every --eval-every iterations with the same seeds each \
            time (at --temp, like training).
            """)

    @OptionGroup var model: ModelOptions

    @OptionGroup(title: "Training prompts") var promptFile: PromptFileOptions
    @Flag(help: "Treat every prompt as a safety prompt.")
    var safetyPrompts = false

    @OptionGroup(title: "Reward model (helpfulness, or the only one)") var rewardModel: RewardModelOptions
    @Option(help: "Safety reward model; with it, Rc follows Llama 2's rule between the two.")
    var safetyReward: String?
    @Option(help: "σ(safety score) below this makes the safety score count.")
    var safetyThreshold: Float = 0.15
    @Option(help: """
        Subtracted from Rc of an answer cut off by --max-tokens (TRL's missing_eos_penalty): a \
        reward model that scores unfinished answers high otherwise teaches the policy to run on.
        """)
    var missingEosPenalty: Float = 0

    @Option(help: "Held-out prompts to measure the policy on (JSONL).")
    var heldOut: String?
    @Option(help: "Skip the first N held-out prompts.")
    var heldOutSkip: Int = 0
    @Option(help: "Use at most N held-out prompts.")
    var heldOutLimit: Int = 32
    @Option(help: "Measure on --held-out every N iterations (and before the first and after the last).")
    var evalEvery: Int = 10

    @Option(help: "PPO iterations.")
    var iterations: Int = 20
    @Option(help: "Prompts (rollouts) per iteration.")
    var batch: Int = 16
    @Option(help: "Rollouts per gradient step.")
    var miniBatch: Int = 4
    @Option(help: "Passes over each iteration's rollouts.")
    var ppoEpochs: Int = 1
    @Option(help: "Learning rate of the adapters, or with --full of the weights (constant; the paper's full fine-tuning: 1e-6).")
    var lr: Float = 1e-5
    @Option(help: "Learning rate of the value head (constant).")
    var valueLr: Float = 1e-4
    @Option(help: "β: the per-token KL penalty's coefficient.")
    var kl: Float = 0.01
    @Option(help: "PPO's clip range of the probability ratio.")
    var clip: Float = 0.2
    @Option(help: "Clip range of the value update.")
    var valueClip: Float = 0.2
    @Option(help: "Weight of the value loss.")
    var vfCoef: Float = 0.1
    @Option(help: "Discount γ of GAE.")
    var gamma: Float = 1
    @Option(help: "λ of GAE.")
    var lambda: Float = 0.95

    @Option(name: [.customShort("n"), .customLong("max-tokens")], help: "Most tokens per answer.")
    var maxTokens: Int = 128
    @Option(help: "Prompts longer than this many tokens are left out (counted).")
    var maxPrompt: Int = 256
    @Option(name: [.customLong("temp"), .customLong("temperature")], help: "Sampling temperature of the rollouts (no top-k, top-p or min-p).")
    var temperature: Float = 1
    @Option(help: "Random seed (adapters, sampling, mini-batch order).")
    var seed: UInt64 = 1
    @Option(help: "Chat format (default: detected from the model).")
    var template: String?

    @Flag(help: "Train every weight of the policy instead of LoRA adapters; a frozen copy is the reference.")
    var full = false
    @Option(help: "LoRA rank of the policy's adapters.")
    var loraRank: Int = 16
    @Option(help: "LoRA alpha (the adapters are scaled by alpha / rank).")
    var loraAlpha: Float = 16
    @Option(help: "Projections to adapt: a list of q,k,v,o,gate,up,down, or all, attention, mlp.")
    var loraTargets: String = "all"

    @Option(help: "Output directory.")
    var out: String
    @Option(help: "Save a checkpoint every N iterations (0: only at the end and on Ctrl-C).")
    var saveEvery: Int = 5
    @Flag(help: "Continue the run saved in --out (the same options).")
    var resume = false
    @Option(help: "Type of the exported model.gguf: f32, f16 or bf16.")
    var type: ExportType = .f32

    /// What a checkpoint keeps besides the trainer: the reward statistics the whitening uses.
    struct State: Codable {
        var moments: RunningMoments
        /// The held-out rewards (less the EOS penalty) of the first evaluation, per prompt: later
        /// evaluations are paired against them.
        var heldOutStart: [Float]?
    }

    func validate() throws {
        guard iterations >= 1, batch >= 1, maxTokens >= 1, maxPrompt >= 1, heldOutSkip >= 0, heldOutLimit >= 1, evalEvery >= 1,
              saveEvery >= 0, temperature > 0, loraRank >= 1, missingEosPenalty >= 0 else {
            throw ValidationError("--iterations, --batch, --max-tokens, --max-prompt, --held-out-limit, --eval-every, --lora-rank and --temp must be positive, --held-out-skip, --save-every and --missing-eos-penalty not negative")
        }
        guard batch <= 32 else { throw ValidationError("--batch is at most 32 (the rollouts of an iteration are decoded together)") }
    }

    func run() throws {
        let checkpointPath = out + "/checkpoint.ppockpt"
        if resume, !FileManager.default.fileExists(atPath: checkpointPath) { throw ValidationError("no \(checkpointPath) to resume") }
        Interrupt.install()
        let m = try model.load()
        let pool = try model.pool()
        let format = try chatFormat(named: template, for: m)
        let defaultSystem = ChatFormat.defaultSystemPrompt(template: m.chatTemplate)
        let stopTokens = format.stopTokens(m.tokenizer)

        // Prompts rendered once; those longer than --max-prompt are left out.
        func rendered(_ prompts: [PromptSet.Prompt], from path: String) throws -> [(prompt: PromptSet.Prompt, tokens: [Int])] {
            var out: [(PromptSet.Prompt, [Int])] = [], tooLong = 0
            for p in prompts {
                let tokens = try format.render(p.messages, tokenizer: m.tokenizer, defaultSystem: defaultSystem)
                if tokens.count <= maxPrompt { out.append((p, tokens)) } else { tooLong += 1 }
            }
            note("\(path): \(out.count) prompts" + (tooLong > 0 ? " (\(tooLong) longer than --max-prompt \(maxPrompt) left out)" : ""))
            guard !out.isEmpty else { throw ValidationError("\(path): no prompt within --max-prompt \(maxPrompt) tokens") }
            return out
        }
        let train = try rendered(promptFile.load(), from: promptFile.prompts)
        let heldOutSet = try heldOut.map { path in
            let prompts = try PromptSet.load(path).prompts.dropFirst(heldOutSkip).prefix(heldOutLimit)
            return try rendered(Array(prompts), from: path)
        }

        let helpful = try rewardModel.scorer(for: m, format: format, sequences: min(batch, 8), pool: pool)
        let safe = try safetyReward.map { try rewardModel.scorer($0, for: m, format: format, sequences: min(batch, 8), pool: pool) }
        for scorer in [helpful] + (safe.map { [$0] } ?? []) { scorer.model.cachesFrozenStates = false }  // every answer is new
        /// Rc of each answer, and whether the safety model's score was used.
        func scores(_ items: [(prompt: PromptSet.Prompt, answer: String)]) throws -> (scores: [Float], safetyUsed: Int) {
            let h = try helpful.score(items.map { ($0.prompt.messages, $0.answer) })
            guard let safe else { return (h, 0) }
            let s = try safe.score(items.map { ($0.prompt.messages, $0.answer) })
            var used = 0
            let rc = items.indices.map { i -> Float in
                let tagged = safetyPrompts || items[i].prompt.safety
                if PPO.usesSafety(safety: s[i], safetyPrompt: tagged, threshold: safetyThreshold) { used += 1 }
                return PPO.combinedScore(helpfulness: h[i], safety: s[i], safetyPrompt: tagged, threshold: safetyThreshold)
            }
            return (rc, used)
        }

        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let base = TrainableParameters(weights: m.weights)
        let trainer: PPOTrainer
        var state: State
        if resume {
            let (t, data) = try PPOTrainer.resume(checkpointPath, parameters: base, pool: pool)
            trainer = t
            state = try JSONDecoder().decode(State.self, from: data)
            guard full == (t.adapters == nil) else {
                throw ValidationError("\(checkpointPath) trains \(full ? "LoRA adapters" : "every weight"): resume \(full ? "without" : "with") --full")
            }
            note("resuming \(checkpointPath) at iteration \(trainer.iteration)")
        } else {
            var o = PPOOptions()
            o.klCoefficient = kl
            o.clip = clip
            o.valueClip = valueClip
            o.valueCoefficient = vfCoef
            o.gamma = gamma
            o.lambda = lambda
            o.miniBatch = miniBatch
            o.epochs = ppoEpochs
            o.learningRate = lr
            o.valueLearningRate = valueLr
            o.seed = seed
            let lora = full ? nil : LoRAConfig(rank: loraRank, alpha: loraAlpha, dropout: 0, targets: try LoRATarget.parse(loraTargets))
            do {
                try lora?.validate()
                trainer = try PPOTrainer(parameters: base, lora: lora, options: o, sequenceLength: maxPrompt + maxTokens, pool: pool)
            } catch { throw ValidationError("\(error)") }
            state = State(moments: RunningMoments())
        }
        let log = try JSONLines(path: out + "/log.jsonl", append: resume)
        let rolloutLog = try JSONLines(path: out + "/rollouts.jsonl", append: resume)
        let trains = trainer.adapters.map { a in
            String(format: "LoRA rank %d (%@), %d adapter values", a.config.rank, a.config.targets.map(\.rawValue).joined(separator: ","), a.count)
        } ?? String(format: "every weight (%d values; the reference a frozen copy)", trainer.policyWeights.layout.count)
        note(String(format: "policy %@, trains %@; reward %@%@; %d iterations × %d prompts, mini-batch %d, lr %.1e, β %.3f",
                    m.name, trains, rewardModel.reward, safetyReward.map { " + safety " + $0 } ?? "", iterations, batch,
                    trainer.options.miniBatch, trainer.options.learningRate, trainer.options.klCoefficient))

        var options = GenerationOptions()
        options.maxTokens = maxTokens
        options.stopTokens = stopTokens
        options.sampling.temperature = temperature
        options.sampling.topK = 0
        options.sampling.topP = 1
        options.sampling.minP = 0
        options.sampling.repeatPenalty = 1

        /// The policy's answers to `items`, one each, `batch` at a time; answer i is sampled with seed
        /// `seed + i`, so the same items and seed get the same answers from the same policy.
        func sample(_ items: [(prompt: PromptSet.Prompt, tokens: [Int])], seed: UInt64) throws
            -> (results: [GenerationResult], seconds: Double) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let policy = try m.replacingWeights(try trainer.policyParameters().weights())
            let generator = Generator(model: policy, contextLength: maxPrompt + maxTokens, sequences: min(items.count, batch), pool: pool)
            var results: [GenerationResult] = []
            for start in stride(from: 0, to: items.count, by: batch) {
                var o = options
                o.sampling.seed = seed &+ UInt64(start)
                results += try generator.samples(prompts: items[start..<min(start + batch, items.count)].map(\.tokens), options: o)
            }
            return (results, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        func rollout(_ tokens: [Int], _ r: GenerationResult, score: Float) -> PPORollout {
            PPORollout(prompt: tokens, response: r.tokens + (r.stopToken.map { [$0] } ?? []), score: score)
        }

        func evaluate() throws {
            guard let heldOutSet else { return }
            let (results, seconds) = try sample(heldOutSet, seed: seed &+ 0xE7A1)
            let (rc, _) = try scores(zip(heldOutSet, results).map { ($0.prompt, $1.text) })
            let rollouts = zip(heldOutSet, results).map { rollout($0.tokens, $1, score: 0) }
            let e = try trainer.evaluate(rollouts)
            let kls = zip(e.logProbs, e.referenceLogProbs).map { a, b in zip(a, b).reduce(0.0) { $0 + Double($1.0 - $1.1) } }
            let reward = MeanInterval(rc.map(Double.init)), klInterval = MeanInterval(kls)
            let tokens = results.reduce(0) { $0 + $1.tokens.count }
            let cut = Double(results.filter { $0.finishReason != .stop }.count) / Double(results.count)
            let ended = MeanInterval(rc.indices.filter { results[$0].finishReason == .stop }.map { Double(rc[$0]) })
            // What PPO maximises: the score less the penalty for an unfinished answer.
            let perPrompt = rc.indices.map { rc[$0] - (results[$0].finishReason == .stop ? 0 : missingEosPenalty) }
            let trained = MeanInterval(perPrompt.map(Double.init))
            var paired: MeanInterval?
            if let start = state.heldOutStart {
                if start.count == perPrompt.count { paired = MeanInterval(zip(perPrompt, start).map { Double($0 - $1) }) }
            } else {
                state.heldOutStart = perPrompt
            }
            note(String(format: "held out @ iteration %d: mean reward %.4f (95%% %.4f…%.4f, %d prompts; less the EOS penalty %.4f), KL %.3f (%.3f…%.3f), %.1f tokens, %.0f%% cut off, answers that ended %.4f (%d) (%.0f s)",
                        trainer.iteration, reward.mean, reward.low, reward.high, reward.count, trained.mean, klInterval.mean, klInterval.low,
                        klInterval.high, Double(tokens) / Double(results.count), 100 * cut, ended.mean, ended.count, seconds)
                 + (paired.map { String(format: "; against the first evaluation %+.4f (95%% %+.4f…%+.4f)", $0.mean, $0.low, $0.high) } ?? ""))
            try log.write(["eval": true, "iteration": trainer.iteration, "mean_reward": reward.mean, "ci95": [reward.low, reward.high],
                           "mean_reward_of_ended": ended.count > 0 ? ended.mean : NSNull(), "ended": ended.count,
                           "mean_trained_reward": trained.mean, "trained_ci95": [trained.low, trained.high],
                           "trained_rewards": perPrompt.map(Double.init),
                           "paired_difference_from_first": paired.map { ["mean": $0.mean, "ci95": [$0.low, $0.high]] as [String: Any] } ?? NSNull(),
                           "n": reward.count, "kl": klInterval.mean, "kl_ci95": [klInterval.low, klInterval.high],
                           "mean_answer_tokens": Double(tokens) / Double(results.count), "cut_off_fraction": cut,
                           "peak_rss_bytes": Benchmark.peakResidentBytes])
        }

        let started = DispatchTime.now().uptimeNanoseconds
        let firstIteration = trainer.iteration
        let stopped = try Interrupt.stoppable { keepGoing -> Bool in
            if !resume { try evaluate() }
            while trainer.iteration < iterations {
                guard keepGoing() else { return true }
                let i = trainer.iteration
                let items = (0..<batch).map { train[(i * batch + $0) % train.count] }
                let (results, sampleSeconds) = try sample(items, seed: seed &+ UInt64(i) &* 1_000_003)
                guard keepGoing() else { return true }
                let t0 = DispatchTime.now().uptimeNanoseconds
                let (rm, safetyUsed) = try scores(zip(items, results).map { ($0.prompt, $1.text) })
                let rc = rm.indices.map { results[$0].finishReason == .stop ? rm[$0] : rm[$0] - missingEosPenalty }
                state.moments.add(rc)
                let rollouts = zip(items, results).enumerated().map { k, pair in
                    rollout(pair.0.tokens, pair.1, score: state.moments.whiten(rc[k]))
                }
                let t1 = DispatchTime.now().uptimeNanoseconds
                let s = try trainer.step(rollouts)
                let t2 = DispatchTime.now().uptimeNanoseconds
                let scoreSeconds = Double(t1 - t0) / 1e9, trainSeconds = Double(t2 - t1) / 1e9
                let raw = rm.reduce(0.0) { $0 + Double($1) } / Double(rm.count)
                let cut = Double(results.filter { $0.finishReason != .stop }.count) / Double(results.count)
                let answerTokens = results.reduce(0) { $0 + $1.tokens.count }
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
                let eta = elapsed / Double(trainer.iteration - firstIteration) * Double(iterations - trainer.iteration)
                note(String(format: "iteration %d/%d | reward %.3f | KL %.3f | policy loss %.4f | value loss %.4f | clip %.3f | entropy %.2f | %.1f tokens, %.0f%% cut | sample %.0f tok/s, train %.0f tok/s | ETA %@",
                            trainer.iteration, iterations, raw, s.kl, s.policyLoss, s.valueLoss, s.clipFraction, s.entropy,
                            Double(answerTokens) / Double(results.count), 100 * cut, Double(answerTokens) / sampleSeconds,
                            Double(rollouts.reduce(0) { $0 + $1.prompt.count + $1.response.count }) / trainSeconds, duration(eta)))
                try log.write(["iteration": trainer.iteration, "mean_reward": raw, "mean_whitened_reward": s.meanScore,
                               "kl": s.kl, "kl_per_token": s.klPerToken, "non_score_reward": s.nonScoreReward,
                               "policy_loss": s.policyLoss, "value_loss": s.valueLoss, "clip_fraction": s.clipFraction,
                               "value_clip_fraction": s.valueClipFraction, "approx_kl": s.approxKL, "entropy": s.entropy,
                               "grad_norm": s.gradientNorm, "mean_value": s.meanValue, "mean_return": s.meanReturn,
                               "steps": s.steps, "mean_answer_tokens": Double(answerTokens) / Double(results.count),
                               "cut_off_fraction": cut, "safety_scores_used": safetyUsed,
                               "sample_seconds": sampleSeconds, "score_seconds": scoreSeconds, "train_seconds": trainSeconds,
                               "sampled_tokens_per_second": Double(answerTokens) / sampleSeconds,
                               "peak_rss_bytes": Benchmark.peakResidentBytes])
                for (k, pair) in zip(items, results).enumerated() {
                    try rolloutLog.write(["iteration": trainer.iteration, "line": pair.0.prompt.line, "answer": pair.1.text,
                                          "reward": Double(rm[k]), "tokens": pair.1.tokens.count,
                                          "finish_reason": pair.1.finishReason.rawValue])
                }
                if saveEvery > 0 && trainer.iteration % saveEvery == 0 && trainer.iteration < iterations {
                    try trainer.save(to: checkpointPath, state: JSONEncoder().encode(state))
                }
                if trainer.iteration % evalEvery == 0 || trainer.iteration == iterations { try evaluate() }
            }
            return false
        }
        try trainer.save(to: checkpointPath, state: JSONEncoder().encode(state))
        try log.close()
        try rolloutLog.close()
        if stopped {
            note("interrupted at iteration \(trainer.iteration): saved \(checkpointPath); continue with the same command and --resume")
            return
        }
        let policy = try trainer.policyParameters()
        let modelPath = out + "/model.gguf"
        try GGUFExport.write(weights: try policy.weights(), tokenizer: m.tokenizer, name: m.name + " PPO", chatTemplate: m.chatTemplate,
                             source: checkpointPath, to: modelPath, recipe: GGUFExport.Recipe.uniform(type.tensorType)!)
        try trainer.adapters?.writePEFT(to: out + "/adapter", baseModel: m.format == .huggingFace ? m.path : nil)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        note(String(format: "done: %d iterations in %@, peak RSS %.2f GiB; wrote %@", trainer.iteration - firstIteration, duration(seconds),
                    Double(Benchmark.peakResidentBytes) / 1_073_741_824, modelPath)
             + (trainer.adapters == nil ? "" : " (adapters merged) and \(out)/adapter (PEFT)"))
    }
}
