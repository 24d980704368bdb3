import Foundation

public struct ChatMessage: Sendable, Equatable, Codable {
    public enum Role: String, Sendable, Codable {
        case system, user, assistant
    }
    public var role: Role
    public var content: String

    public init(_ role: Role, _ content: String) {
        self.role = role
        self.content = content
    }
}

/// The chat formats this engine renders, and how a conversation becomes token ids.
/// Chosen from the model file's Jinja `chat_template` by the markers it uses (as llama.cpp's
/// `llm_chat_detect_template` does), or named with `--template`.
public enum ChatFormat: String, Sendable, CaseIterable {
    /// Meta's Llama 2-Chat (`llama/generation.py` `chat_completion`):
    /// `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s>` per turn.
    case llama2
    /// ChatML (SmolLM2, Qwen): `<|im_start|>{role}\n{content}<|im_end|>\n`.
    case chatml
    /// Llama 3: `<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>`.
    case llama3

    public static func detect(template: String?, tokenizer: any Tokenizer) -> ChatFormat {
        if let t = template {
            if t.contains("<|im_start|>") { return .chatml }
            if t.contains("<|start_header_id|>") { return .llama3 }
            if t.contains("[INST]") { return .llama2 }
        }
        if tokenizer.vocabulary.id("<|im_start|>") != nil { return .chatml }
        if tokenizer.vocabulary.id("<|start_header_id|>") != nil { return .llama3 }
        return .llama2
    }

    /// The system prompt a ChatML template inserts when the conversation has none
    /// (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
    public static func defaultSystemPrompt(template: String?) -> String? {
        guard let t = template, let start = t.range(of: "<|im_start|>system") else { return nil }
        var rest = t[start.upperBound...]
        if rest.hasPrefix("\\n") { rest = rest.dropFirst(2) } else if rest.hasPrefix("\n") { rest = rest.dropFirst() } else { return nil }
        guard let end = rest.range(of: "<|im_end|>") else { return nil }
        let text = String(rest[..<end.lowerBound])
        // A template expression (`message['content']`) is not a literal default.
        if text.contains("{{") || text.contains("'") || text.contains("+") { return nil }
        return text.replacingOccurrences(of: "\\n", with: "\n")
    }

    /// Token ids of the conversation, ending where the assistant's next answer begins.
    public func render(_ messages: [ChatMessage], tokenizer: any Tokenizer, defaultSystem: String? = nil) throws -> [Int] {
        guard let last = messages.last, last.role == .user else {
            throw LlamaError.invalidArgument("a chat must end with a user message")
        }
        switch self {
        case .llama2: return try renderLlama2(messages, tokenizer)
        case .chatml:
            return tokenizer.encode(try renderText(messages, defaultSystem: defaultSystem), addBOS: tokenizer.addsBOS, parseSpecial: true)
        case .llama3:
            return tokenizer.encode(try renderText(messages, defaultSystem: defaultSystem), addBOS: false, parseSpecial: true)
        }
    }

    /// The conversation as the template's text (special tokens written out), for the formats
    /// whose templates produce one string: ChatML and Llama 3. Llama 2-Chat is built from
    /// separately encoded turns instead (see `render`).
    public func renderText(_ messages: [ChatMessage], defaultSystem: String? = nil) throws -> String {
        switch self {
        case .llama2:
            throw LlamaError.invalidArgument("Llama 2-Chat turns are encoded one by one; use render")
        case .chatml:
            var text = ""
            if messages.first?.role != .system, let s = defaultSystem {
                text += "<|im_start|>system\n\(s)<|im_end|>\n"
            }
            for m in messages { text += "<|im_start|>\(m.role.rawValue)\n\(m.content)<|im_end|>\n" }
            return text + "<|im_start|>assistant\n"
        case .llama3:
            var text = "<|begin_of_text|>"
            for m in messages {
                text += "<|start_header_id|>\(m.role.rawValue)<|end_header_id|>\n\n"
                    + m.content.trimmingCharacters(in: .whitespacesAndNewlines) + "<|eot_id|>"
            }
            return text + "<|start_header_id|>assistant<|end_header_id|>\n\n"
        }
    }

    /// Meta's Llama 2-Chat turns: the system prompt folded into the first user turn, then
    /// strictly alternating user/assistant messages.
    static func llama2Dialog(_ messages: [ChatMessage]) throws -> [ChatMessage] {
        var dialog = messages
        if dialog.first?.role == .system {
            guard dialog.count >= 2 else { throw LlamaError.invalidArgument("a system message must be followed by a user message") }
            dialog = [ChatMessage(.user, "<<SYS>>\n" + dialog[0].content + "\n<</SYS>>\n\n" + dialog[1].content)] + dialog[2...]
        }
        for (i, m) in dialog.enumerated() where m.role != (i % 2 == 0 ? .user : .assistant) {
            throw LlamaError.invalidArgument("Llama 2 chat needs alternating user/assistant turns (message \(i + 1) is '\(m.role.rawValue)')")
        }
        return dialog
    }

    private func renderLlama2(_ messages: [ChatMessage], _ tokenizer: any Tokenizer) throws -> [Int] {
        let dialog = try Self.llama2Dialog(messages)
        func strip(_ s: String) -> String { s.trimmingCharacters(in: .whitespacesAndNewlines) }
        var ids: [Int] = []
        var i = 0
        while i + 1 < dialog.count {
            ids += tokenizer.encode("[INST] \(strip(dialog[i].content)) [/INST] \(strip(dialog[i + 1].content)) ",
                                    addBOS: true, parseSpecial: false)
            if let eos = tokenizer.eosID { ids.append(eos) }
            i += 2
        }
        ids += tokenizer.encode("[INST] \(strip(dialog[i].content)) [/INST]", addBOS: true, parseSpecial: false)
        return ids
    }

    /// Tokens that end an assistant turn in this format.
    public func stopTokens(_ tokenizer: any Tokenizer) -> Set<Int> {
        var s = Set<Int>()
        if let e = tokenizer.eosID { s.insert(e) }
        let markers = switch self {
        case .llama2: [String]()
        case .chatml: ["<|im_end|>"]
        case .llama3: ["<|eot_id|>", "<|end_of_text|>"]
        }
        for m in markers { if let id = tokenizer.vocabulary.id(m) { s.insert(id) } }
        return s
    }
}
