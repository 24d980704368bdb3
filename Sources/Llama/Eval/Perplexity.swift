import Foundation

/// Log-probabilities of tokens under a model: the scoring path shared by perplexity and
/// likelihood-based evaluation.
public enum Scoring {
    /// log softmax(logits)[token], accumulated in Double.
    public static func logProbability(_ logits: UnsafeBufferPointer<Float>, _ token: Int) -> Double {
        var maxValue = -Float.infinity
        for v in logits where v > maxValue { maxValue = v }
        var sum = 0.0
        for v in logits { sum += Foundation.exp(Double(v - maxValue)) }
        return Double(logits[token] - maxValue) - Foundation.log(sum)
    }
}

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
        let vocab = transformer.config.vocabSize
        let first = n / 2
        var nll = 0.0, nll2 = 0.0, count = 0
        let start = DispatchTime.now().uptimeNanoseconds
        for c in 0..<chunks {
            var window = Array(tokens[(c * n)..<((c + 1) * n)])
            if let bos { window[0] = bos }
            // The first half only builds context; its logits are not needed.
            try transformer.forward(tokens: Array(window[0..<first]), startPosition: 0)
            var position = first
            while position < n - 1 {
                let m = min(transformer.maxBatch, n - 1 - position)
                let logits = try transformer.forward(tokens: Array(window[position..<(position + m)]), startPosition: position,
                                                     allLogits: true)
                logits.withUnsafeBufferPointer { all in
                    for j in 0..<m {
                        let row = UnsafeBufferPointer(rebasing: all[(j * vocab)..<((j + 1) * vocab)])
                        let lp = Scoring.logProbability(row, window[position + j + 1])
                        nll -= lp
                        nll2 += lp * lp
                        count += 1
                    }
                }
                position += m
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
