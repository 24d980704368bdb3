import Foundation

/// Perplexity as llama.cpp's `llama-perplexity` computes it: the text is cut into windows of
/// `contextLength` tokens (BOS replacing the first token of each when the model uses BOS), and
/// only the second half of each window is scored, so every scored token has at least half a
/// window of context.
public struct Perplexity {
    public struct Progress: Sendable {
        public let chunk: Int
        public let chunks: Int
        public let runningPerplexity: Double
        public let seconds: Double
    }

    public struct Result: Sendable {
        public let perplexity: Double
        /// Standard error of the perplexity estimate (llama.cpp's "±").
        public let error: Double
        public let scoredTokens: Int
        public let chunks: Int
    }

    public let transformer: Transformer
    public let bos: Int?

    public init(transformer: Transformer, bos: Int?) {
        self.transformer = transformer
        self.bos = bos
    }

    public func evaluate(tokens: [Int], contextLength n: Int, maxChunks: Int? = nil,
                         progress: (Progress) -> Void = { _ in }) throws -> Result {
        guard n >= 4 else { throw LlamaError.invalidArgument("the context must be at least 4 tokens, got \(n)") }
        guard n <= transformer.contextLength else {
            throw LlamaError.invalidArgument("context \(n) is larger than the model's context of \(transformer.contextLength)")
        }
        var chunks = tokens.count / n
        if let m = maxChunks { chunks = min(chunks, m) }
        guard chunks > 0 else {
            throw LlamaError.invalidArgument("the text is \(tokens.count) tokens; at least \(n) (one window of -c) are needed")
        }
        let first = n / 2
        var nll = 0.0, nll2 = 0.0, count = 0
        let start = DispatchTime.now().uptimeNanoseconds
        for c in 0..<chunks {
            var window = Array(tokens[(c * n)..<((c + 1) * n)])
            if let bos { window[0] = bos }
            // The first half only builds context; its logits are not needed.
            try transformer.forward(tokens: Array(window[0..<first]), startPosition: 0)
            let scores = try Scoring.score(transformer, inputs: Array(window[first..<(n - 1)]), startPosition: first,
                                           targets: Array(window[(first + 1)..<n]))
            for s in scores {
                nll -= s.logProbability
                nll2 += s.logProbability * s.logProbability
                count += 1
            }
            progress(Progress(chunk: c + 1, chunks: chunks, runningPerplexity: Foundation.exp(nll / Double(count)),
                              seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9))
        }
        let mean = nll / Double(count)
        let ppl = Foundation.exp(mean)
        let variance = nll2 / Double(count) - mean * mean
        let error = variance > 0 && count > 1 ? (variance / Double(count - 1)).squareRoot() * ppl : 0
        return Result(perplexity: ppl, error: error, scoredTokens: count, chunks: chunks)
    }
}
