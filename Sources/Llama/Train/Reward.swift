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
    /// Lower layers left out of the backward pass (`BackpropModel.frozenLayers`).
    public var frozenLayers: Int {
        get { backprop.frozenLayers }
        set { backprop.frozenLayers = newValue }
    }

    /// A padding token that no reward sequence ends with (they end with EOS or an end-of-turn
    /// token): 0, or 1 when 0 is EOS. Exported as `pad_token_id`, which transformers'
    /// `LlamaForSequenceClassification` skips to find the last token.
    public static func padToken(for tokenizer: any Tokenizer) -> Int {
        tokenizer.eosID == 0 ? 1 : 0
    }

    public init(parameters: TrainableParameters, pairsPerBatch: Int, sequenceLength: Int, padToken: Int = 0,
                pool: ThreadPool = .shared) {
        precondition(parameters.layout.hasScoreHead, "a reward model needs a score head")
        self.parameters = parameters
        self.pairsPerBatch = pairsPerBatch
        self.sequenceLength = sequenceLength
        self.padToken = padToken
        backprop = BackpropModel(parameters: parameters, batchSize: 2 * pairsPerBatch, sequenceLength: sequenceLength, pool: pool)
    }

    /// Trains LoRA adapters (and the head) instead of the whole trunk: see `BackpropModel.attach`.
    public func attach(_ adapters: LoRAAdapters) { backprop.attach(adapters) }
    public var loraGradients: FloatBuffer? { backprop.loraGradients }

    /// Sequences in the first rows of the batch, right-padded to the longest of them (the
    /// batch's `activeLength`); unused rows are padding. Returns the tokens and the row-major
    /// position of each sequence's last token.
    func pack(_ sequences: [[Int]]) throws -> (tokens: [Int], positions: [Int]) {
        guard !sequences.isEmpty, sequences.count <= 2 * pairsPerBatch else {
            throw LlamaError.invalidArgument("a reward batch holds 1...\(2 * pairsPerBatch) sequences, got \(sequences.count)")
        }
        for s in sequences where s.isEmpty || s.count > sequenceLength {
            throw LlamaError.invalidArgument("a sequence of \(s.count) tokens does not fit the reward model's \(sequenceLength)")
        }
        let T = sequences.map(\.count).max()!
        backprop.activeLength = T
        var tokens = [Int](repeating: padToken, count: 2 * pairsPerBatch * T)
        var positions: [Int] = []
        for (row, s) in sequences.enumerated() {
            for (j, t) in s.enumerated() { tokens[row * T + j] = t }
            positions.append(row * T + s.count - 1)
        }
        return (tokens, positions)
    }

    /// Chosen sequences first, then rejected.
    func batch(_ pairs: [PreferencePair]) throws -> [[Int]] {
        guard !pairs.isEmpty, pairs.count <= pairsPerBatch else {
            throw LlamaError.invalidArgument("a reward batch holds 1...\(pairsPerBatch) pairs, got \(pairs.count)")
        }
        return pairs.map(\.chosen) + pairs.map(\.rejected)
    }

    // MARK: Frozen-trunk states

    /// While the lower `frozenLayers` layers are frozen, the residual stream entering the first
    /// trained layer depends on the tokens alone: it is saved per sequence the first time the
    /// sequence goes through, and later passes (further epochs, validation) start from it and run
    /// only the trained layers. Saving stops at `frozenStateBudget` bytes.
    public var cachesFrozenStates = true
    public var frozenStateBudget = 4 << 30
    private var frozenStates: [[Int]: [Float]] = [:]
    private var frozenStatesLayer = -1
    public private(set) var frozenStateBytes = 0

    /// How many sequences start from saved states.
    public var frozenStateCount: Int { frozenStates.count }

    /// Rewards of the packed sequences, with their activations kept for a backward pass.
    private func forward(_ sequences: [[Int]]) throws -> (tokens: [Int], positions: [Int], scores: [Float]) {
        let (tokens, positions) = try pack(sequences)
        let start = frozenLayers, T = backprop.activeLength, d = parameters.config.dim
        guard cachesFrozenStates, start > 0 else {
            return (tokens, positions, try backprop.scores(tokens: tokens, positions: positions))
        }
        if frozenStatesLayer != start {
            frozenStates = [:]
            frozenStateBytes = 0
            frozenStatesLayer = start
        }
        if sequences.allSatisfy({ frozenStates[$0] != nil }) {
            let x = backprop.residual(enteringLayer: start)
            x.update(repeating: 0, count: 2 * pairsPerBatch * T * d)
            for (row, s) in sequences.enumerated() {
                frozenStates[s]!.withUnsafeBufferPointer { (x + row * T * d).update(from: $0.baseAddress!, count: $0.count) }
            }
            return (tokens, positions, try backprop.scores(tokens: tokens, positions: positions, fromLayer: start))
        }
        let scores = try backprop.scores(tokens: tokens, positions: positions)
        let x = backprop.residual(enteringLayer: start)
        for (row, s) in sequences.enumerated() where frozenStates[s] == nil {
            let bytes = s.count * d * MemoryLayout<Float>.size
            guard frozenStateBytes + bytes <= frozenStateBudget else { break }
            frozenStates[s] = Array(UnsafeBufferPointer(start: x + row * T * d, count: s.count * d))
            frozenStateBytes += bytes
        }
        return (tokens, positions, scores)
    }

    /// Scores the pairs and adds `gradScale` × the gradient of their summed ranking loss to
    /// `gradients`. Returns the summed loss, how many pairs the model ranks right
    /// (r_chosen > r_rejected), and the rewards.
    @discardableResult
    public func accumulateGradients(_ pairs: [PreferencePair], gradScale: Float, into gradients: FloatBuffer) throws
        -> (lossSum: Double, correct: Int, chosen: [Float], rejected: [Float]) {
        backprop.training = true
        let (tokens, positions, scores) = try forward(try batch(pairs))
        let r = Self.rank(scores, pairs)
        backprop.accumulateScoreGradients(tokens: tokens, positions: positions, dScores: r.dScores.map { $0 * gradScale },
                                          into: gradients)
        return (r.lossSum, r.correct, r.chosen, r.rejected)
    }

    /// The summed ranking loss of pairs given their rewards (chosen first, then rejected), how
    /// many are ranked right, and d loss / d reward.
    static func rank(_ scores: [Float], _ pairs: [PreferencePair])
        -> (lossSum: Double, correct: Int, chosen: [Float], rejected: [Float], dScores: [Float]) {
        let n = pairs.count
        var loss = 0.0, correct = 0
        var dScores = [Float](repeating: 0, count: 2 * n)
        for i in 0..<n {
            let r = RankingLoss.pair(chosen: scores[i], rejected: scores[n + i], margin: pairs[i].margin)
            loss += r.loss
            dScores[i] = r.dChosen
            dScores[n + i] = r.dRejected
            if scores[i] > scores[n + i] { correct += 1 }
        }
        return (loss, correct, Array(scores[0..<n]), Array(scores[n...]), dScores)
    }

    /// Rewards of up to 2 × `pairsPerBatch` sequences (each a whole dialogue ending with the answer).
    public func scores(_ sequences: [[Int]]) throws -> [Float] {
        backprop.training = false
        return try forward(sequences).scores
    }

    /// The loss and ranking of pairs without gradients.
    public func evaluate(_ pairs: [PreferencePair]) throws -> (lossSum: Double, correct: Int, chosen: [Float], rejected: [Float]) {
        backprop.training = false
        let r = Self.rank(try forward(try batch(pairs)).scores, pairs)
        return (r.lossSum, r.correct, r.chosen, r.rejected)
    }
}

extension RewardModel {
    /// A reward model's parameters from a Hugging Face directory with a `score.weight`
    /// (`LlamaForSequenceClassification` with one label, as `llama reward train` writes it).
    public static func loadParameters(directory: String) throws -> TrainableParameters {
        let (weights, _) = try HFDirectory.loadWeights(directory: directory)
        let path = directory + "/model.safetensors"
        guard FileManager.default.fileExists(atPath: path) else { throw LlamaError.fileNotFound(path) }
        let file = try SafetensorsFile(path: path)
        let head = try file.matrix("score.weight")
        guard head.rows == 1, head.cols == weights.config.dim else {
            throw LlamaError.shapeMismatch(file: path, tensor: "score.weight", expected: [1, weights.config.dim], found: [head.rows, head.cols])
        }
        let params = TrainableParameters(weights: weights).addingScoreHead(seed: 0)
        // The matrix reads the mapped file: keep it mapped while copying.
        withExtendedLifetime(file) { head.row(0, into: params.tensor("score.weight")!.baseAddress!) }
        return params
    }
}

/// Preference pairs from JSONL, in two shapes:
/// - HH-RLHF: `{"chosen": "\n\nHuman: …\n\nAssistant: …", "rejected": …}`, whole dialogues that
///   share all but the last answer;
/// - explicit: `{"prompt": text or [messages], "chosen": text, "rejected": text,
///   "rating"?: 0…3 or "significantly better"|"better"|"slightly better"|"negligibly better"|"unsure",
///   "safety"?: bool}`.
/// Dialogues are rendered with the model's chat format, as the model sees them at inference,
/// ending with the answer's end-of-turn token, where the reward is read.
public struct PreferenceData: Sendable {
    public struct Example: Sendable {
        public var pair: PreferencePair
        /// The rating level (3 = significantly better … 0 = negligibly better / unsure), if given.
        public var rating: Int?
        public var safety: Bool?
        /// The line of the file.
        public var line: Int
    }

    public var examples: [Example]
    /// Pairs left out, by reason, and pairs whose sequences were cut from the left to fit.
    public var skippedEmpty = 0
    public var skippedIdentical = 0
    public var truncated = 0

    static let ratingNames = ["negligibly better": 0, "unsure": 0, "slightly better": 1, "better": 2, "significantly better": 3]

    /// Splits an HH-RLHF dialogue ("\n\nHuman: …\n\nAssistant: …") into chat messages.
    public static func hhDialogue(_ text: String) throws -> [ChatMessage] {
        var messages: [ChatMessage] = []
        var rest = Substring(text)
        let markers: [(String, ChatMessage.Role)] = [("\n\nHuman:", .user), ("\n\nAssistant:", .assistant)]
        func nextMarker(in s: Substring) -> (Range<Substring.Index>, ChatMessage.Role)? {
            markers.compactMap { m in s.range(of: m.0).map { ($0, m.1) } }.min { $0.0.lowerBound < $1.0.lowerBound }
        }
        guard let (first, role0) = nextMarker(in: rest), rest[..<first.lowerBound].trimmingCharacters(in: .whitespaces).isEmpty else {
            throw LlamaError.invalidArgument("an HH-RLHF dialogue starts with \"\\n\\nHuman:\"")
        }
        var role = role0
        rest = rest[first.upperBound...]
        while true {
            if let (r, nextRole) = nextMarker(in: rest) {
                messages.append(ChatMessage(role, rest[..<r.lowerBound].trimmingCharacters(in: .whitespacesAndNewlines)))
                role = nextRole
                rest = rest[r.upperBound...]
            } else {
                messages.append(ChatMessage(role, rest.trimmingCharacters(in: .whitespacesAndNewlines)))
                break
            }
        }
        return messages
    }

    /// A conversation given as text (one user message) or as a list of `{"role", "content"}`
    /// messages; `bad` turns a reason into an error that names the file and line.
    static func messages(_ value: JSONValue, field: String, bad: (String) -> LlamaError) throws -> [ChatMessage] {
        if let s = value.string { return [ChatMessage(.user, s)] }
        guard let list = value.array else { throw bad("'\(field)' is text or a list of messages") }
        return try list.enumerated().map { i, m in
            guard let r = m.object?["role"]?.string, let role = ChatMessage.Role(rawValue: r),
                  let content = m.object?["content"]?.string else {
                throw bad("\(field) message \(i + 1) needs a role (system, user, assistant) and a text 'content'")
            }
            return ChatMessage(role, content)
        }
    }

    /// Tokens of a conversation ending with an assistant answer, through that answer's
    /// end-of-turn marker.
    public static func sequence(_ messages: [ChatMessage], format: ChatFormat, tokenizer: any Tokenizer,
                                defaultSystem: String?) throws -> [Int] {
        let segments = try SFTData.segments(messages, format: format, tokenizer: tokenizer, defaultSystem: defaultSystem)
        guard let last = segments.lastIndex(where: \.learned) else {
            throw LlamaError.invalidArgument("the dialogue has no assistant answer")
        }
        return segments[...last].flatMap(\.tokens)
    }

    /// Reads pairs; sequences longer than `maxTokens` keep their last `maxTokens` tokens.
    public static func load(_ path: String, format: ChatFormat, tokenizer: any Tokenizer, defaultSystem: String? = nil,
                            maxTokens: Int, margins: MarginTable) throws -> PreferenceData {
        guard let data = FileManager.default.contents(atPath: path) else { throw LlamaError.fileNotFound(path) }
        guard let text = String(data: data, encoding: .utf8) else { throw LlamaError.invalidUTF8(what: path) }
        var out = PreferenceData(examples: [])
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            func bad(_ why: String) -> LlamaError { .invalidArgument("\(path):\(n + 1): \(why)") }
            guard let object = (try? JSONValue.parse(Data(trimmed.utf8)))?.object else { throw bad("not a JSON object") }
            guard let chosenText = object["chosen"]?.string, let rejectedText = object["rejected"]?.string else {
                throw bad("needs text fields 'chosen' and 'rejected'")
            }
            var chosen: [ChatMessage], rejected: [ChatMessage]
            if let prompt = object["prompt"] {
                let context = try messages(prompt, field: "prompt", bad: bad)
                guard context.last?.role == .user else { throw bad("the prompt must end with a user message") }
                chosen = context + [ChatMessage(.assistant, chosenText)]
                rejected = context + [ChatMessage(.assistant, rejectedText)]
            } else {
                do {
                    chosen = try hhDialogue(chosenText)
                    rejected = try hhDialogue(rejectedText)
                } catch { throw bad("\(error) (or give a 'prompt' field)") }
            }
            guard chosen.last?.role == .assistant, rejected.last?.role == .assistant else {
                throw bad("each dialogue must end with an assistant answer")
            }
            if chosen.last!.content.isEmpty || rejected.last!.content.isEmpty {
                out.skippedEmpty += 1
                continue
            }
            if chosen == rejected {
                out.skippedIdentical += 1
                continue
            }
            var rating: Int?
            if let r = object["rating"] {
                if let level = r.int, (0...3).contains(level) {
                    rating = level
                } else if let name = r.string, let level = ratingNames[name.lowercased()] {
                    rating = level
                } else {
                    throw bad("'rating' is 0…3 or one of \(ratingNames.keys.sorted().joined(separator: ", "))")
                }
            }
            var c = try sequence(chosen, format: format, tokenizer: tokenizer, defaultSystem: defaultSystem)
            var r = try sequence(rejected, format: format, tokenizer: tokenizer, defaultSystem: defaultSystem)
            if c.count > maxTokens || r.count > maxTokens {
                out.truncated += 1
                c = Array(c.suffix(maxTokens))
                r = Array(r.suffix(maxTokens))
            }
            out.examples.append(Example(pair: PreferencePair(chosen: c, rejected: r, margin: margins.margin(level: rating)),
                                        rating: rating, safety: object["safety"]?.bool, line: n + 1))
        }
        guard !out.examples.isEmpty else {
            throw LlamaError.invalidArgument("\(path): no usable pairs (\(out.skippedEmpty) with an empty answer, \(out.skippedIdentical) identical)")
        }
        return out
    }
}
