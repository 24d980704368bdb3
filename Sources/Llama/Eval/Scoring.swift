import Foundation

/// The log-probability a model gives one token, and whether greedy decoding would have chosen it.
public struct TokenScore: Sendable, Equatable {
    public var logProbability: Double
    public var isGreedy: Bool
}

/// Log-probabilities of tokens under a model: the one scoring path behind `llama perplexity` and
/// the likelihood-based tasks of `llama eval`.
public enum Scoring {
    /// log softmax(logits)[token], accumulated in Double.
    public static func logProbability(_ logits: UnsafeBufferPointer<Float>, _ token: Int) -> Double {
        score(logits, token).logProbability
    }

    /// log softmax(logits)[token], and whether `token` is the (first) largest logit.
    public static func score(_ logits: UnsafeBufferPointer<Float>, _ token: Int) -> TokenScore {
        var maxValue = -Float.infinity, best = 0
        for (i, v) in logits.enumerated() where v > maxValue {
            maxValue = v
            best = i
        }
        var sum = 0.0
        for v in logits { sum += Foundation.exp(Double(v - maxValue)) }
        return TokenScore(logProbability: Double(logits[token] - maxValue) - Foundation.log(sum), isGreedy: best == token)
    }

    /// Runs `inputs` at positions `startPosition...` (earlier positions must be in the cache) and
    /// scores `targets[i]` against the logits that follow `inputs[i]`. Goes through in batches of
    /// the transformer's `maxBatch`, so only one batch of logits is held at a time.
    public static func score(_ transformer: Transformer, inputs: [Int], startPosition: Int,
                             targets: [Int]) throws -> [TokenScore] {
        precondition(inputs.count == targets.count, "one target per input")
        let vocab = transformer.config.vocabSize
        var scores: [TokenScore] = []
        scores.reserveCapacity(inputs.count)
        var done = 0
        while done < inputs.count {
            let m = min(transformer.maxBatch, inputs.count - done)
            let logits = try transformer.forward(tokens: Array(inputs[done..<(done + m)]), startPosition: startPosition + done,
                                                 allLogits: true)
            logits.withUnsafeBufferPointer { all in
                for j in 0..<m {
                    scores.append(score(UnsafeBufferPointer(rebasing: all[(j * vocab)..<((j + 1) * vocab)]), targets[done + j]))
                }
            }
            done += m
        }
        return scores
    }

    /// Log-likelihood of each continuation after a shared context, and whether every token of it
    /// is the greedy choice. The context goes through once; each continuation then runs from the
    /// cached keys and values of the context (the cache beyond the context is overwritten).
    /// `context` must hold at least one token.
    public static func continuations(_ transformer: Transformer, context: [Int],
                                     _ continuations: [[Int]]) throws -> [(logLikelihood: Double, isGreedy: Bool)] {
        precondition(!context.isEmpty, "a continuation is scored after at least one token")
        let n = context.count
        if n > 1 { try transformer.forward(tokens: Array(context[0..<(n - 1)]), startPosition: 0) }
        return try continuations.map { continuation in
            guard !continuation.isEmpty else { return (0, true) }
            let inputs = [context[n - 1]] + continuation.dropLast()
            let scores = try score(transformer, inputs: inputs, startPosition: n - 1, targets: continuation)
            return (scores.reduce(0) { $0 + $1.logProbability }, scores.allSatisfy(\.isGreedy))
        }
    }
}
