import Foundation

/// How the next token is chosen from the logits. Defaults are llama.cpp's.
public struct SamplingOptions: Sendable, Equatable {
    /// 0 = greedy (argmax).
    public var temperature: Float = 0.8
    /// Keep the `topK` most likely tokens; 0 = all.
    public var topK: Int = 40
    /// Keep the smallest set whose probability reaches `topP`; 1 = all.
    public var topP: Float = 0.95
    /// Drop tokens less likely than `minP` × the most likely one; 0 = none.
    public var minP: Float = 0.05
    /// Divides positive / multiplies negative logits of recent tokens (CTRL, Keskar et al. 2019); 1 = off.
    public var repeatPenalty: Float = 1.0
    /// How many recent tokens the penalties look at.
    public var repeatLastN: Int = 64
    /// OpenAI-style penalties: logit -= frequency × count + presence × (count > 0).
    public var frequencyPenalty: Float = 0
    public var presencePenalty: Float = 0
    /// The same seed gives the same tokens.
    public var seed: UInt64 = 0

    public init() {}

    public static var greedy: SamplingOptions {
        var o = SamplingOptions()
        o.temperature = 0
        return o
    }
}

/// A small, fast, reproducible generator (SplitMix64), identical on every platform.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Picks tokens from logits, in llama.cpp's order: penalties, top-k, top-p, min-p, temperature.
public struct Sampler: Sendable {
    public let options: SamplingOptions
    private var rng: SplitMix64

    public init(_ options: SamplingOptions) {
        self.options = options
        rng = SplitMix64(seed: options.seed)
    }

    /// The next token given the logits and the tokens so far (for the penalties).
    public mutating func sample(_ logits: [Float], history: [Int]) -> Int {
        var logits = logits
        applyPenalties(&logits, history: history)
        if options.temperature <= 0 { return argmax(logits) }

        var candidates = Array(0..<logits.count)
        if options.topK > 0 && options.topK < candidates.count {
            candidates = topIndices(logits, options.topK)
        } else {
            candidates.sort { logits[$0] > logits[$1] }
        }
        // Probabilities at temperature 1 decide top-p and min-p, as in llama.cpp.
        var probs = softmax(candidates.map { logits[$0] })
        if options.topP < 1 {
            var cumulative: Float = 0
            var keep = candidates.count
            for (i, p) in probs.enumerated() {
                cumulative += p
                if cumulative >= options.topP { keep = i + 1; break }
            }
            candidates = Array(candidates.prefix(keep))
            probs = Array(probs.prefix(keep))
        }
        if options.minP > 0, let top = probs.first {
            let keep = max(1, probs.prefix { $0 >= options.minP * top }.count)
            candidates = Array(candidates.prefix(keep))
        }
        probs = softmax(candidates.map { logits[$0] / options.temperature })
        let r = Float(Double(rng.next() >> 11) * 0x1.0p-53)
        var cumulative: Float = 0
        for (i, p) in probs.enumerated() {
            cumulative += p
            if r < cumulative { return candidates[i] }
        }
        return candidates[candidates.count - 1]
    }

    private func applyPenalties(_ logits: inout [Float], history: [Int]) {
        let o = options
        guard o.repeatPenalty != 1 || o.frequencyPenalty != 0 || o.presencePenalty != 0, o.repeatLastN != 0 else { return }
        let window = o.repeatLastN < 0 ? history[...] : history.suffix(o.repeatLastN)
        var counts: [Int: Int] = [:]
        for t in window where t >= 0 && t < logits.count { counts[t, default: 0] += 1 }
        for (t, n) in counts {
            if o.repeatPenalty != 1 {
                logits[t] = logits[t] > 0 ? logits[t] / o.repeatPenalty : logits[t] * o.repeatPenalty
            }
            logits[t] -= o.frequencyPenalty * Float(n) + o.presencePenalty
        }
    }

    private func topIndices(_ logits: [Float], _ k: Int) -> [Int] {
        // Partial selection: keep a sorted list of the best k seen so far.
        var best: [Int] = []
        best.reserveCapacity(k + 1)
        for i in 0..<logits.count {
            if best.count == k, let last = best.last, logits[i] <= logits[last] { continue }
            var lo = 0, hi = best.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if logits[best[mid]] >= logits[i] { lo = mid + 1 } else { hi = mid }
            }
            best.insert(i, at: lo)
            if best.count > k { best.removeLast() }
        }
        return best
    }

    private func softmax(_ x: [Float]) -> [Float] {
        guard let m = x.max() else { return [] }
        let e = x.map { expf($0 - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }
}

/// Index of the largest value (the first on ties, like `torch.argmax`).
public func argmax(_ x: [Float]) -> Int {
    x.withUnsafeBufferPointer { argmax($0) }
}

/// Index of the largest value (the first on ties).
public func argmax(_ x: UnsafeBufferPointer<Float>) -> Int {
    var best = 0
    for i in 1..<x.count where x[i] > x[best] { best = i }
    return best
}
