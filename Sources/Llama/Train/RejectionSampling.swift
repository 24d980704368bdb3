import Foundation
import LlamaKernels

/// Prompts for sampling (rejection sampling, evaluation of a policy by a reward model): the
/// conversation before an answer. One JSON object per line, in any of the shapes the preference
/// and SFT data use:
/// - `{"prompt": text or [messages]}`;
/// - `{"messages": [...]}`: a trailing assistant answer is dropped;
/// - HH-RLHF `{"chosen": "\n\nHuman: …\n\nAssistant: …"}`: the dialogue before its last answer.
///
/// `"safety": true` on a line tags the prompt as adversarial (PPO then trains it towards the
/// safety reward model's score).
public struct PromptSet: Sendable {
    public struct Prompt: Sendable {
        public var messages: [ChatMessage]
        /// The line of the file.
        public var line: Int
        /// Tagged as a safety (adversarial) prompt.
        public var safety: Bool

        public init(messages: [ChatMessage], line: Int, safety: Bool = false) {
            self.messages = messages
            self.line = line
            self.safety = safety
        }
    }

    public var prompts: [Prompt]
    /// Lines whose conversation does not end with a user message once its last answer is
    /// dropped (HH-RLHF has a few whose turns run together), left out.
    public var skipped = 0

    public static func load(_ path: String) throws -> PromptSet {
        guard let data = FileManager.default.contents(atPath: path) else { throw LlamaError.fileNotFound(path) }
        guard let text = String(data: data, encoding: .utf8) else { throw LlamaError.invalidUTF8(what: path) }
        var prompts: [Prompt] = []
        var skipped = 0
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            func bad(_ why: String) -> LlamaError { .invalidArgument("\(path):\(n + 1): \(why)") }
            guard let object = (try? JSONValue.parse(Data(trimmed.utf8)))?.object else { throw bad("not a JSON object") }
            var conversation: [ChatMessage]
            if let p = object["prompt"] {
                conversation = try PreferenceData.messages(p, field: "prompt", bad: bad)
            } else if let m = object["messages"] {
                conversation = try PreferenceData.messages(m, field: "messages", bad: bad)
                if conversation.last?.role == .assistant { conversation.removeLast() }
            } else if let chosen = object["chosen"]?.string {
                do { conversation = try PreferenceData.hhDialogue(chosen) } catch { throw bad("\(error)") }
                if conversation.last?.role == .assistant { conversation.removeLast() }
            } else {
                throw bad("needs 'prompt', 'messages' or an HH-RLHF 'chosen' dialogue")
            }
            guard conversation.last?.role == .user, !conversation.last!.content.isEmpty else {
                skipped += 1
                continue
            }
            guard object["safety"].map({ $0.bool != nil }) ?? true else { throw bad("'safety' is not true or false") }
            prompts.append(Prompt(messages: conversation, line: n + 1, safety: object["safety"]?.bool ?? false))
        }
        guard !prompts.isEmpty else {
            throw LlamaError.invalidArgument("\(path): no prompts (\(skipped) conversations do not end with a non-empty user message)")
        }
        return PromptSet(prompts: prompts, skipped: skipped)
    }
}

/// Scores answers with a reward model: each conversation + answer is rendered in the chat format
/// the reward model was trained with, cut to its last `sequenceLength` tokens as in training,
/// and read at the answer's end-of-turn token.
public struct RewardScorer {
    public let model: RewardModel
    public let format: ChatFormat
    public let tokenizer: any Tokenizer

    public init(model: RewardModel, format: ChatFormat, tokenizer: any Tokenizer) {
        self.model = model
        self.format = format
        self.tokenizer = tokenizer
    }

    /// Rewards of `answers` to the conversation `prompt`, in order.
    public func score(prompt: [ChatMessage], answers: [String]) throws -> [Float] {
        try score(answers.map { (prompt, $0) })
    }

    /// Rewards of answers to different conversations, in order, as few batches as fit.
    public func score(_ items: [(prompt: [ChatMessage], answer: String)]) throws -> [Float] {
        let sequences = try items.map { item in
            Array(try PreferenceData.sequence(item.prompt + [ChatMessage(.assistant, item.answer)], format: format, tokenizer: tokenizer,
                                              defaultSystem: nil).suffix(model.sequenceLength))
        }
        var rewards: [Float] = []
        let batch = 2 * model.pairsPerBatch
        for start in stride(from: 0, to: sequences.count, by: batch) {
            rewards += try model.scores(Array(sequences[start..<min(start + batch, sequences.count)]))
        }
        return rewards
    }
}

/// A mean with its 95% interval (normal approximation, 1.96 standard errors).
public struct MeanInterval: Sendable, Equatable {
    public var mean: Double
    public var low: Double
    public var high: Double
    public var count: Int

    public init(_ values: [Double]) {
        count = values.count
        guard !values.isEmpty else {
            mean = .nan; low = .nan; high = .nan
            return
        }
        let n = Double(values.count)
        let m = values.reduce(0, +) / n
        mean = m
        let variance = values.count > 1 ? values.reduce(0) { $0 + ($1 - m) * ($1 - m) } / (n - 1) : 0
        let half = 1.96 * (variance / n).squareRoot()
        low = mean - half
        high = mean + half
    }
}
