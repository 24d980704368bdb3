import Foundation
import LlamaKernels

/// Supervised fine-tuning data (SPEC.md §4.1): chat examples rendered in the model's chat
/// format, every token marked learned (answer) or not (prompt) while the sequence is assembled,
/// then packed back to back into one stream that training cuts into full sequences.
public enum SFTData {
    /// One piece of a rendered conversation.
    public struct Segment: Sendable, Equatable {
        public var tokens: [Int]
        public var learned: Bool
    }

    /// One training conversation and which of its assistant answers are learned.
    public struct Example: Sendable, Equatable {
        public var messages: [ChatMessage]
        /// One flag per assistant message, in order: false renders the answer as context only
        /// (as the `"weight": 0` of OpenAI's chat fine-tuning format does).
        public var learnedAnswers: [Bool]

        public init(_ messages: [ChatMessage], learnedAnswers: [Bool]? = nil) {
            self.messages = messages
            self.learnedAnswers = learnedAnswers ?? Array(repeating: true, count: messages.filter { $0.role == .assistant }.count)
        }

        /// `context` (its assistant turns not learned: someone else's words) and then `answer`,
        /// the one answer learned.
        public init(context: [ChatMessage], answer: String) {
            self.init(context + [ChatMessage(.assistant, answer)],
                      learnedAnswers: Array(repeating: false, count: context.filter { $0.role == .assistant }.count) + [true])
        }

        /// The JSONL object `load` reads back: `{"messages": [...]}`, answers not learned
        /// carrying `"weight": 0`.
        public var jsonObject: [String: Any] {
            var learned = learnedAnswers.makeIterator()
            return ["messages": messages.map { m -> [String: Any] in
                var o: [String: Any] = ["role": m.role.rawValue, "content": m.content]
                if m.role == .assistant, learned.next() == false { o["weight"] = 0 }
                return o
            }]
        }
    }

    /// Reads chat examples from JSONL, one per line, in any of these shapes:
    /// `{"messages": [{"role": "user", "content": …}, {"role": "assistant", …}, …]}`, where an
    /// assistant message may carry `"weight": 0` (context, not learned) or `1` (the default),
    /// `{"question": …, "answer": …}` (GSM8K), `{"prompt": …, "response"|"completion": …}`,
    /// `{"instruction": …, "input"?: …, "output": …}` (Alpaca).
    public static func load(_ path: String) throws -> [Example] {
        guard let data = FileManager.default.contents(atPath: path) else { throw LlamaError.fileNotFound(path) }
        guard let text = String(data: data, encoding: .utf8) else { throw LlamaError.invalidUTF8(what: path) }
        var examples: [Example] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            func bad(_ why: String) -> LlamaError { .corrupt(file: path, offset: nil, reason: "line \(n + 1): \(why)") }
            guard let object = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any] else {
                throw bad("not a JSON object")
            }
            if let messages = object["messages"] as? [[String: Any]] {
                var learned: [Bool] = []
                examples.append(Example(try messages.enumerated().map { i, m in
                    guard let r = m["role"] as? String, let role = ChatMessage.Role(rawValue: r) else {
                        throw bad("message \(i + 1) has no role system, user or assistant")
                    }
                    guard let content = m["content"] as? String else { throw bad("message \(i + 1) has no text 'content'") }
                    if let weight = m["weight"] {
                        guard role == .assistant else { throw bad("message \(i + 1): only assistant messages take a 'weight'") }
                        guard let w = weight as? NSNumber, w.doubleValue == 0 || w.doubleValue == 1 else {
                            throw bad("message \(i + 1): 'weight' must be 0 or 1")
                        }
                        learned.append(w.doubleValue == 1)
                    } else if role == .assistant {
                        learned.append(true)
                    }
                    return ChatMessage(role, content)
                }, learnedAnswers: learned))
            } else if let q = object["question"] as? String, let a = object["answer"] as? String {
                examples.append(Example([ChatMessage(.user, q), ChatMessage(.assistant, a)]))
            } else if let p = object["prompt"] as? String, let a = (object["response"] ?? object["completion"]) as? String {
                examples.append(Example([ChatMessage(.user, p), ChatMessage(.assistant, a)]))
            } else if let i = object["instruction"] as? String, let a = object["output"] as? String {
                let input = (object["input"] as? String).map { $0.isEmpty ? "" : "\n\n" + $0 } ?? ""
                examples.append(Example([ChatMessage(.user, i + input), ChatMessage(.assistant, a)]))
            } else {
                throw bad("expected 'messages', 'question'/'answer', 'prompt'/'response' or 'instruction'/'output'")
            }
            guard examples.last!.learnedAnswers.contains(true) else { throw bad("no assistant message to learn") }
        }
        guard !examples.isEmpty else { throw LlamaError.invalidArgument("\(path): no examples") }
        return examples
    }

    /// The conversation as the chat format renders it at inference (`ChatFormat.render` gives the
    /// same tokens for every prefix ending in a user turn), in segments: assistant answers with
    /// their end-of-turn marker are learned (those `learnedAnswers` allows, one flag per assistant
    /// message in order); everything else (system, user turns, role headers) is not.
    public static func segments(_ messages: [ChatMessage], format: ChatFormat, tokenizer: any Tokenizer,
                                defaultSystem: String? = nil, learnedAnswers: [Bool]? = nil) throws -> [Segment] {
        var out: [Segment] = []
        var answer = 0
        func nextAnswerLearned() -> Bool {
            defer { answer += 1 }
            return learnedAnswers.map { answer < $0.count ? $0[answer] : true } ?? true
        }
        func add(_ tokens: [Int], _ learned: Bool) { if !tokens.isEmpty { out.append(Segment(tokens: tokens, learned: learned)) } }
        func special(_ text: String) -> [Int] { tokenizer.encode(text, addBOS: false, parseSpecial: true) }
        switch format {
        case .chatml:
            if tokenizer.addsBOS, let bos = tokenizer.bosID { add([bos], false) }
            if messages.first?.role != .system, let s = defaultSystem { add(special("<|im_start|>system\n\(s)<|im_end|>\n"), false) }
            for m in messages {
                if m.role == .assistant {
                    add(special("<|im_start|>assistant\n"), false)
                    add(special(m.content + "<|im_end|>"), nextAnswerLearned())
                    add(special("\n"), false)
                } else {
                    add(special("<|im_start|>\(m.role.rawValue)\n\(m.content)<|im_end|>\n"), false)
                }
            }
        case .llama3:
            add(special("<|begin_of_text|>"), false)
            for m in messages {
                add(special("<|start_header_id|>\(m.role.rawValue)<|end_header_id|>\n\n"), false)
                let content = m.content.trimmingCharacters(in: .whitespacesAndNewlines)
                add(special(content + "<|eot_id|>"), m.role == .assistant && nextAnswerLearned())
            }
        case .llama2:
            // Meta's encoding: each (user, answer) pair is one encode of "[INST] u [/INST] a "
            // with BOS, then EOS. The answer is what that encoding adds to the prompt's own.
            let dialog = try ChatFormat.llama2Dialog(messages)
            func strip(_ s: String) -> String { s.trimmingCharacters(in: .whitespacesAndNewlines) }
            var i = 0
            while i < dialog.count {
                let prompt = tokenizer.encode("[INST] \(strip(dialog[i].content)) [/INST]", addBOS: true, parseSpecial: false)
                guard i + 1 < dialog.count else {
                    add(prompt, false)
                    break
                }
                let full = tokenizer.encode("[INST] \(strip(dialog[i].content)) [/INST] \(strip(dialog[i + 1].content)) ",
                                            addBOS: true, parseSpecial: false)
                guard full.starts(with: prompt) else {
                    throw LlamaError.invalidArgument("turn \(i / 2 + 1): the answer changes how the prompt tokenizes; cannot separate them")
                }
                add(prompt, false)
                add(Array(full[prompt.count...]) + (tokenizer.eosID.map { [$0] } ?? []), nextAnswerLearned())
                i += 2
            }
        }
        return out
    }

    /// All examples back to back: the token stream and which tokens are learned.
    public static func pack(_ examples: [Example], format: ChatFormat, tokenizer: any Tokenizer,
                            defaultSystem: String? = nil) throws -> (tokens: [Int], learned: [Bool]) {
        var tokens: [Int] = [], learned: [Bool] = []
        for e in examples {
            for s in try segments(e.messages, format: format, tokenizer: tokenizer, defaultSystem: defaultSystem,
                                  learnedAnswers: e.learnedAnswers) {
                tokens += s.tokens
                learned += Array(repeating: s.learned, count: s.tokens.count)
            }
        }
        return (tokens, learned)
    }

    /// Mean loss per learned token of `parameters` over the whole packed stream, cut into
    /// windows of `sequenceLength + 1` as training cuts it (the answer-token loss of a model on
    /// held-out examples). Returns the mean (nats) and how many targets counted.
    public static func answerLoss(_ parameters: TrainableParameters, tokens: [Int], learned: [Bool], sequenceLength: Int,
                                  batchSize: Int, pool: ThreadPool = .shared,
                                  progress: (Int, Int) -> Void = { _, _ in }) throws -> (loss: Double, count: Int) {
        let source = DataMixture.Source(name: "eval", weight: 1, tokens: tokens, learned: learned)
        let windows = tokens.count / (sequenceLength + 1)
        guard windows > 0 else { throw LlamaError.invalidArgument("\(tokens.count) tokens: not one window of \(sequenceLength + 1)") }
        let model = BackpropModel(parameters: parameters, batchSize: batchSize, sequenceLength: sequenceLength, pool: pool)
        let batches = DataMixture.batches((0..<windows).map { (source, $0 * (sequenceLength + 1)) }, rows: batchSize,
                                          length: sequenceLength)
        var sum = 0.0, count = 0
        for (n, b) in batches.enumerated() {
            let r = try model.loss(tokens: b.tokens, targets: b.targets)
            sum += r.lossSum
            count += r.count
            progress(min(windows, (n + 1) * batchSize), windows)
        }
        return (sum / Double(max(count, 1)), count)
    }
}
