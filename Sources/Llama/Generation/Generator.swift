import Foundation
import LlamaKernels

public struct GenerationOptions: Sendable {
    public var maxTokens: Int = 256
    public var sampling = SamplingOptions()
    /// Generation ends when the text contains one of these (the stop string is not returned).
    public var stopStrings: [String] = []
    /// Generation ends at these tokens (EOS and the chat template's end-of-turn token).
    public var stopTokens: Set<Int> = []

    public init() {}
}

public enum FinishReason: String, Sendable {
    /// EOS, an end-of-turn token or a stop string.
    case stop
    /// `maxTokens` reached, or the context is full.
    case length
    /// The caller's callback asked to stop.
    case cancelled
}

public struct GenerationResult: Sendable {
    public var tokens: [Int] = []
    public var text = ""
    public var finishReason = FinishReason.length
    /// The EOS or end-of-turn token that ended the answer (not in `tokens`), when one did.
    public var stopToken: Int?
    public var promptTokens = 0
    /// Prompt tokens actually computed (the rest were already in the cache).
    public var promptTokensEvaluated = 0
    public var promptSeconds: Double = 0
    public var generationSeconds: Double = 0

    public var promptTokensPerSecond: Double { promptSeconds > 0 ? Double(promptTokensEvaluated) / promptSeconds : 0 }
    public var tokensPerSecond: Double { generationSeconds > 0 ? Double(tokens.count) / generationSeconds : 0 }
}

/// Runs a model over a prompt and samples a continuation, streaming text as it becomes final.
/// Keeps the key/value cache between calls: a prompt that extends the previous conversation
/// only computes its new tokens (multi-turn chat).
public final class Generator: @unchecked Sendable {
    public let model: Model
    public let transformer: Transformer
    /// The tokens whose keys/values are in the cache, in order.
    public private(set) var cachedTokens: [Int] = []

    /// `sequences`: how many continuations `samples` can decode together.
    public init(model: Model, contextLength: Int? = nil, sequences: Int = 1, pool: ThreadPool = .shared) {
        self.model = model
        transformer = Transformer(weights: model.weights, contextLength: contextLength, sequences: sequences, pool: pool)
    }

    public var contextLength: Int { transformer.contextLength }

    /// Feeds `tokens` from the start (reusing the cached common prefix); the next token's
    /// logits are then in `transformer.logits`. Returns how many tokens were computed.
    @discardableResult
    public func prefill(_ tokens: [Int]) throws -> Int {
        guard !tokens.isEmpty else { throw LlamaError.invalidArgument("the prompt is empty") }
        guard tokens.count <= contextLength else {
            throw LlamaError.promptTooLong(tokens: tokens.count, contextLength: contextLength)
        }
        // Keep the shared prefix, but always recompute the last prompt token to get its logits.
        var keep = zip(cachedTokens, tokens).prefix { $0 == $1 }.count
        keep = min(keep, tokens.count - 1)
        cachedTokens = Array(tokens[0..<keep])
        try transformer.forward(tokens: Array(tokens[keep...]), startPosition: keep)
        cachedTokens = tokens
        return tokens.count - keep
    }

    /// Generates after `prompt`. `onText` receives each piece of final text as it is produced
    /// and returns false to stop early.
    public func generate(prompt: [Int], options: GenerationOptions,
                         onText: (String) -> Bool = { _ in true }) throws -> GenerationResult {
        var result = GenerationResult()
        result.promptTokens = prompt.count
        let start = DispatchTime.now()
        result.promptTokensEvaluated = try prefill(prompt)
        let afterPrompt = DispatchTime.now()
        result.promptSeconds = seconds(start, afterPrompt)

        var sampler = Sampler(options.sampling)
        var decoder = StreamingDecoder(tokenizer: model.tokenizer)
        var stops = StopStringFilter(options.stopStrings)
        var history = prompt

        func deliver(_ text: String) -> Bool {
            result.text += text
            return text.isEmpty || onText(text)
        }
        var finished = false
        while !finished && result.tokens.count < options.maxTokens {
            let token = sampler.sample(transformer.logits, history: history)
            if options.stopTokens.contains(token) || token == model.tokenizer.eosID {
                result.finishReason = .stop
                result.stopToken = token
                break
            }
            result.tokens.append(token)
            history.append(token)
            let (text, stopped) = stops.push(decoder.append(token))
            if !deliver(text) {
                result.finishReason = .cancelled
                finished = true
            } else if stopped {
                result.finishReason = .stop
                finished = true
            } else if cachedTokens.count >= contextLength {
                finished = true
            } else {
                try transformer.forward(token: token, position: cachedTokens.count)
                cachedTokens.append(token)
            }
        }
        if result.finishReason != .cancelled && !(finished && result.finishReason == .stop) {
            let (tail, stopped) = stops.push(decoder.finish())
            _ = deliver(tail + (stopped ? "" : stops.flush()))
            if stopped { result.finishReason = .stop }
        }
        result.generationSeconds = seconds(afterPrompt, DispatchTime.now())
        return result
    }

    /// `count` continuations of one prompt, decoded together: the prompt is computed once and
    /// copied to each sequence's cache, then every step runs the unfinished sequences as one
    /// batch (each weight read once per step for all of them). Continuation i samples with seed
    /// `options.sampling.seed + i`, as `generate` with that seed would (batched products may
    /// round differently from one-token ones, so near-ties can go the other way).
    public func samples(prompt: [Int], count: Int, options: GenerationOptions) throws -> [GenerationResult] {
        guard (1...transformer.sequences).contains(count) else {
            throw LlamaError.invalidArgument("\(count) samples at once need a generator with that many sequences (it has \(transformer.sequences))")
        }
        let start = DispatchTime.now()
        let evaluated = try prefill(prompt)
        let afterPrompt = DispatchTime.now()
        for i in 1..<count { try transformer.copySequence(0, to: i, count: prompt.count) }
        // Sequence 0's cache beyond the prompt is about to be overwritten by its continuation.
        cachedTokens = prompt
        let first = transformer.logits
        return try decode(prompts: Array(repeating: prompt, count: count), logits: Array(repeating: first, count: count),
                          evaluated: [evaluated] + Array(repeating: 0, count: count - 1), options: options,
                          start: start, afterPrompt: afterPrompt)
    }

    /// One continuation of each prompt, decoded together (PPO's rollouts: a batch of different
    /// prompts). Each prompt is computed into its own sequence's cache (a prompt equal to an
    /// earlier one is copied, not recomputed); continuation i samples with seed
    /// `options.sampling.seed + i`.
    public func samples(prompts: [[Int]], options: GenerationOptions) throws -> [GenerationResult] {
        guard (1...transformer.sequences).contains(prompts.count) else {
            throw LlamaError.invalidArgument("\(prompts.count) prompts at once need a generator with that many sequences (it has \(transformer.sequences))")
        }
        for p in prompts {
            guard !p.isEmpty else { throw LlamaError.invalidArgument("a prompt is empty") }
            guard p.count <= contextLength else { throw LlamaError.promptTooLong(tokens: p.count, contextLength: contextLength) }
        }
        let start = DispatchTime.now()
        var logits: [[Float]] = [], evaluated: [Int] = []
        for (i, p) in prompts.enumerated() {
            if let j = prompts[..<i].firstIndex(of: p) {
                try transformer.copySequence(j, to: i, count: p.count)
                logits.append(logits[j])
                evaluated.append(0)
            } else {
                try transformer.forward(tokens: p, startPosition: 0, sequence: i)
                logits.append(transformer.logits)
                evaluated.append(p.count)
            }
        }
        cachedTokens = []  // sequence 0's cache now holds other tokens than a `prefill` left there
        return try decode(prompts: prompts, logits: logits, evaluated: evaluated, options: options,
                          start: start, afterPrompt: DispatchTime.now())
    }

    /// Samples continuation i after `prompts[i]`, whose keys and values are in sequence i's
    /// cache and whose next-token logits are `logits[i]`.
    private func decode(prompts: [[Int]], logits first: [[Float]], evaluated: [Int], options: GenerationOptions,
                        start: DispatchTime, afterPrompt: DispatchTime) throws -> [GenerationResult] {
        let count = prompts.count
        struct Sample {
            var result = GenerationResult()
            var sampler: Sampler
            var decoder: StreamingDecoder
            var stops: StopStringFilter
            var history: [Int]
            var logits: [Float]
            var done = false
            var stoppedByString = false
        }
        var states = (0..<count).map { i -> Sample in
            var sampling = options.sampling
            sampling.seed &+= UInt64(i)
            var state = Sample(sampler: Sampler(sampling), decoder: StreamingDecoder(tokenizer: model.tokenizer),
                               stops: StopStringFilter(options.stopStrings), history: prompts[i], logits: first[i])
            state.result.promptTokens = prompts[i].count
            state.result.promptTokensEvaluated = evaluated[i]
            state.result.promptSeconds = seconds(start, afterPrompt)
            return state
        }
        while true {
            var entries: [(sequence: Int, token: Int, position: Int)] = []
            for i in 0..<count where !states[i].done {
                var s = states[i]
                if s.result.tokens.count >= options.maxTokens {
                    s.done = true
                } else {
                    let token = s.sampler.sample(s.logits, history: s.history)
                    if options.stopTokens.contains(token) || token == model.tokenizer.eosID {
                        s.result.finishReason = .stop
                        s.result.stopToken = token
                        s.done = true
                    } else {
                        s.result.tokens.append(token)
                        s.history.append(token)
                        let (text, stopped) = s.stops.push(s.decoder.append(token))
                        s.result.text += text
                        if stopped {
                            s.result.finishReason = .stop
                            s.stoppedByString = true
                            s.done = true
                        } else if s.history.count > contextLength {
                            s.done = true
                        } else {
                            entries.append((i, token, s.history.count - 1))
                        }
                    }
                }
                if s.done {
                    // As `generate`: text held back for a stop string is released unless one was reached.
                    if !s.stoppedByString {
                        let (tail, stopped) = s.stops.push(s.decoder.finish())
                        s.result.text += tail + (stopped ? "" : s.stops.flush())
                        if stopped { s.result.finishReason = .stop }
                    }
                    s.result.generationSeconds = seconds(afterPrompt, DispatchTime.now())
                }
                states[i] = s
            }
            if entries.isEmpty { break }
            let logits = try transformer.step(entries)
            let v = model.config.vocabSize
            for (row, e) in entries.enumerated() { states[e.sequence].logits = Array(logits[(row * v)..<((row + 1) * v)]) }
        }
        return states.map(\.result)
    }

    private func seconds(_ a: DispatchTime, _ b: DispatchTime) -> Double {
        Double(b.uptimeNanoseconds - a.uptimeNanoseconds) / 1e9
    }
}

/// Holds back text that could be the start of a stop string, so the stop string itself is
/// never streamed out.
struct StopStringFilter {
    let stops: [String]
    private var held = ""

    init(_ stops: [String]) { self.stops = stops.filter { !$0.isEmpty } }

    /// Adds text; returns what is safe to emit, and whether a stop string was reached.
    mutating func push(_ text: String) -> (String, Bool) {
        guard !stops.isEmpty else { return (text, false) }
        held += text
        for s in stops {
            if let r = held.range(of: s) {
                let out = String(held[..<r.lowerBound])
                held = ""
                return (out, true)
            }
        }
        // Keep the longest suffix of `held` that is a prefix of some stop string.
        var keep = 0
        for s in stops {
            for n in stride(from: min(s.count - 1, held.count), to: keep, by: -1)
            where held.hasSuffix(String(s.prefix(n))) {
                keep = n
                break
            }
        }
        let out = String(held.dropLast(keep))
        held = String(held.suffix(keep))
        return (out, false)
    }

    /// The held-back text at the end of generation.
    mutating func flush() -> String {
        defer { held = "" }
        return held
    }
}
