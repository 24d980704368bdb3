import Foundation
import LlamaKernels

/// One human preference: the same prompt answered twice, as token ids of the whole sequences
/// (prompt + response), with the margin the rating asks for.
public struct PreferencePair: Sendable, Equatable {
    public var chosen: [Int]
    public var rejected: [Int]
    /// m(rating) of the ranking loss; 0 when the pair has no rating.
    public var margin: Float

    public init(chosen: [Int], rejected: [Int], margin: Float = 0) {
        self.chosen = chosen
        self.rejected = rejected
        self.margin = margin
    }
}

/// Llama 2's binary ranking loss with a margin (SPEC.md §4.2):
/// `-log σ(r_chosen − r_rejected − m)`, computed without overflow.
public enum RankingLoss {
    /// The loss and its derivatives with respect to the two rewards.
    public static func pair(chosen: Float, rejected: Float, margin: Float) -> (loss: Double, dChosen: Float, dRejected: Float) {
        let z = Double(chosen) - Double(rejected) - Double(margin)
        // -log σ(z) = softplus(-z); d/dz = σ(z) − 1.
        let loss = z > 0 ? Foundation.log1p(Foundation.exp(-z)) : -z + Foundation.log1p(Foundation.exp(z))
        let sigma = 1 / (1 + Foundation.exp(-z))
        let d = Float(sigma - 1)
        return (loss, d, -d)
    }
}

/// The margin m(rating) of Llama 2's Table 27 for the four rating levels, from "significantly
/// better" to "negligibly better / unsure".
public struct MarginTable: Sendable, Equatable {
    /// Margins for levels 3 (significantly better), 2 (better), 1 (slightly better), 0 (negligibly better / unsure).
    public var margins: [Float]

    public static let small = MarginTable(margins: [0, 1.0 / 3, 2.0 / 3, 1])
    public static let large = MarginTable(margins: [0, 1, 2, 3])
    public static let none = MarginTable(margins: [0, 0, 0, 0])

    public func margin(level: Int?) -> Float {
        guard let level, margins.indices.contains(level) else { return 0 }
        return margins[level]
    }
}

/// A reward model being trained or used: the language model's trunk with a scalar head
/// (`score.weight`) read at each sequence's last token. Pairs go through as one batch of
/// 2 × pairs sequences, right-padded (causal attention never lets the padding reach the
/// positions read).
public final class RewardModel: @unchecked Sendable {
    public let parameters: TrainableParameters
    let backprop: BackpropModel
    /// Pairs per batch and the longest sequence.
    public let pairsPerBatch: Int
    public let sequenceLength: Int
    let padToken: Int

    public init(parameters: TrainableParameters, pairsPerBatch: Int, sequenceLength: Int, padToken: Int = 0,
                pool: ThreadPool = .shared) {
        precondition(parameters.layout.hasScoreHead, "a reward model needs a score head")
        self.parameters = parameters
        self.pairsPerBatch = pairsPerBatch
        self.sequenceLength = sequenceLength
        self.padToken = padToken
        backprop = BackpropModel(parameters: parameters, batchSize: 2 * pairsPerBatch, sequenceLength: sequenceLength, pool: pool)
    }

    /// Rows of the batch: chosen sequences first, then rejected; unused rows are padding.
    func batch(_ pairs: [PreferencePair]) throws -> (tokens: [Int], positions: [Int]) {
        guard !pairs.isEmpty, pairs.count <= pairsPerBatch else {
            throw LlamaError.invalidArgument("a reward batch holds 1...\(pairsPerBatch) pairs, got \(pairs.count)")
        }
        var tokens = [Int](repeating: padToken, count: 2 * pairsPerBatch * sequenceLength)
        var positions: [Int] = []
        for (i, s) in (pairs.map(\.chosen) + pairs.map(\.rejected)).enumerated() {
            guard !s.isEmpty, s.count <= sequenceLength else {
                throw LlamaError.invalidArgument("a sequence of \(s.count) tokens does not fit the reward model's \(sequenceLength)")
            }
            let row = i < pairs.count ? i : pairsPerBatch + (i - pairs.count)
            for (j, t) in s.enumerated() { tokens[row * sequenceLength + j] = t }
            positions.append(row * sequenceLength + s.count - 1)
        }
        return (tokens, positions)
    }

    /// Scores the pairs and adds `gradScale` × the gradient of their summed ranking loss to
    /// `gradients`. Returns the summed loss, how many pairs the model ranks right
    /// (r_chosen > r_rejected), and the rewards.
    @discardableResult
    public func accumulateGradients(_ pairs: [PreferencePair], gradScale: Float, into gradients: FloatBuffer) throws
        -> (lossSum: Double, correct: Int, chosen: [Float], rejected: [Float]) {
        let (tokens, positions) = try batch(pairs)
        let scores = try backprop.scores(tokens: tokens, positions: positions)
        let n = pairs.count
        var loss = 0.0, correct = 0
        var dScores = [Float](repeating: 0, count: 2 * n)
        for i in 0..<n {
            let r = RankingLoss.pair(chosen: scores[i], rejected: scores[n + i], margin: pairs[i].margin)
            loss += r.loss
            dScores[i] = r.dChosen * gradScale
            dScores[n + i] = r.dRejected * gradScale
            if scores[i] > scores[n + i] { correct += 1 }
        }
        backprop.accumulateScoreGradients(tokens: tokens, positions: positions, dScores: dScores, into: gradients)
        return (loss, correct, Array(scores[0..<n]), Array(scores[n...]))
    }

    /// The loss and ranking of pairs without gradients.
    public func evaluate(_ pairs: [PreferencePair]) throws -> (lossSum: Double, correct: Int, chosen: [Float], rejected: [Float]) {
        let (tokens, positions) = try batch(pairs)
        let scores = try backprop.scores(tokens: tokens, positions: positions)
        let n = pairs.count
        var loss = 0.0, correct = 0
        for i in 0..<n {
            loss += RankingLoss.pair(chosen: scores[i], rejected: scores[n + i], margin: pairs[i].margin).loss
            if scores[i] > scores[n + i] { correct += 1 }
        }
        return (loss, correct, Array(scores[0..<n]), Array(scores[n...]))
    }
}
