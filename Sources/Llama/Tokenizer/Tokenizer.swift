/// What a vocabulary entry is, numbered as SentencePiece's `ModelProto.SentencePiece.Type`
/// and GGUF's `tokenizer.ggml.token_type` number them.
public enum TokenKind: Int, Sendable {
    case normal = 1
    case unknown = 2
    /// BOS, EOS, chat markers: never produced from plain text unless special tokens are parsed.
    case control = 3
    /// Always matched as a whole in text.
    case userDefined = 4
    case unused = 5
    /// `<0xNN>`: one raw byte (SentencePiece byte fallback).
    case byte = 6
}

/// Text ↔ token ids. SentencePiece BPE (Llama 1/2) and byte-level BPE (GPT-2, SmolLM2,
/// Llama 3) implement it; files are adapters that build one of them.
public protocol Tokenizer: Sendable {
    var vocabulary: Vocabulary { get }
    var bosID: Int? { get }
    var eosID: Int? { get }
    /// Whether the model expects BOS before a prompt (GGUF `tokenizer.ggml.add_bos_token`).
    var addsBOS: Bool { get }
    /// Encodes `text`. With `parseSpecial`, the text of control tokens (`<s>`, `<|im_start|>`)
    /// becomes those tokens; without it they are plain text, as `sentencepiece.encode` does.
    func encode(_ text: String, addBOS: Bool, parseSpecial: Bool) -> [Int]
    /// The bytes token `id` stands for in decoded text, before any leading-space rule.
    func bytes(of id: Int) -> [UInt8]
    /// Whether decoding drops the first space of a sequence (SentencePiece's dummy prefix).
    var stripsLeadingSpace: Bool { get }
}

extension Tokenizer {
    public var vocabSize: Int { vocabulary.count }

    public func encode(_ text: String) -> [Int] { encode(text, addBOS: false, parseSpecial: false) }

    /// Decodes ids to text. Control tokens are left out unless `keepSpecial`; bytes that do not
    /// form UTF-8 become U+FFFD.
    public func decode(_ ids: [Int], keepSpecial: Bool = false) -> String {
        var decoder = StreamingDecoder(tokenizer: self, keepSpecial: keepSpecial)
        var text = ""
        for id in ids { text += decoder.append(id) }
        return text + decoder.finish()
    }

    /// The vocabulary entry of `id` as stored in the model (with `▁` or `Ġ` markers).
    public func piece(_ id: Int) -> String { vocabulary.pieces[id] }
}

/// The vocabulary shared by both tokenizer kinds.
public struct Vocabulary: Sendable {
    public let pieces: [String]
    public let kinds: [TokenKind]
    public let scores: [Float]
    public let index: [String: Int]

    public init(pieces: [String], kinds: [TokenKind], scores: [Float]) {
        self.pieces = pieces
        self.kinds = kinds
        self.scores = scores
        var index: [String: Int] = [:]
        index.reserveCapacity(pieces.count)
        // The first occurrence wins, as in SentencePiece and llama.cpp.
        for (i, p) in pieces.enumerated() where index[p] == nil { index[p] = i }
        self.index = index
    }

    public var count: Int { pieces.count }

    public func id(_ piece: String) -> Int? { index[piece] }

    /// Token strings matched as a whole in text: user-defined ones always, control ones when
    /// special tokens are parsed. Longest first, so `<|im_start|>` wins over a prefix of it.
    func specialMatcher() -> SpecialTokenMatcher {
        var always: [(String, Int)] = [], parsed: [(String, Int)] = []
        for (i, p) in pieces.enumerated() where !p.isEmpty {
            switch kinds[i] {
            case .userDefined: always.append((p, i))
            case .control: parsed.append((p, i))
            default: break
            }
        }
        return SpecialTokenMatcher(always: always, parsed: parsed)
    }
}

/// Splits text around special-token strings.
struct SpecialTokenMatcher: Sendable {
    enum Segment: Equatable {
        case text(String)
        case token(Int)
    }

    private let always: [UInt8: [([UInt8], Int)]]
    private let parsed: [UInt8: [([UInt8], Int)]]

    init(always: [(String, Int)], parsed: [(String, Int)]) {
        func group(_ list: [(String, Int)]) -> [UInt8: [([UInt8], Int)]] {
            var g: [UInt8: [([UInt8], Int)]] = [:]
            for (s, id) in list { g[s.utf8.first!, default: []].append((Array(s.utf8), id)) }
            return g.mapValues { $0.sorted { $0.0.count > $1.0.count } }
        }
        self.always = group(always)
        self.parsed = group(parsed)
    }

    func split(_ text: String, parseSpecial: Bool) -> [Segment] {
        if always.isEmpty && (!parseSpecial || parsed.isEmpty) { return [.text(text)] }
        let bytes = Array(text.utf8)
        var segments: [Segment] = []
        var start = 0, i = 0
        while i < bytes.count {
            var match: ([UInt8], Int)?
            let candidates = (always[bytes[i]] ?? []) + (parseSpecial ? parsed[bytes[i]] ?? [] : [])
            for c in candidates where c.0.count <= bytes.count - i && (match == nil || c.0.count > match!.0.count) {
                if bytes[i..<(i + c.0.count)].elementsEqual(c.0) { match = c }
            }
            if let (s, id) = match {
                if start < i { segments.append(.text(String(decoding: bytes[start..<i], as: UTF8.self))) }
                segments.append(.token(id))
                i += s.count
                start = i
            } else {
                i += 1
            }
        }
        if start < bytes.count { segments.append(.text(String(decoding: bytes[start...], as: UTF8.self))) }
        return segments
    }
}

/// Turns a stream of token ids into text without ever emitting half a UTF-8 character:
/// bytes of an incomplete character wait for the tokens that finish it.
public struct StreamingDecoder {
    let tokenizer: any Tokenizer
    let keepSpecial: Bool
    private var pending: [UInt8] = []
    private var atStart = true

    public init(tokenizer: any Tokenizer, keepSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.keepSpecial = keepSpecial
    }

    /// Adds one token; returns the text that is now complete (often empty or one piece).
    public mutating func append(_ id: Int) -> String {
        guard id >= 0 && id < tokenizer.vocabSize else { return "" }
        let kind = tokenizer.vocabulary.kinds[id]
        if kind == .control && !keepSpecial { return "" }
        var b = tokenizer.bytes(of: id)
        if atStart && !b.isEmpty && kind != .control {
            atStart = false
            if tokenizer.stripsLeadingSpace && b.first == 0x20 { b.removeFirst() }
        }
        pending += b
        // Emit everything up to the last complete character.
        let cut = completePrefixLength(pending)
        if cut == 0 { return "" }
        let text = String(decoding: pending[0..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Whatever is still held back (an unfinished character becomes U+FFFD).
    public mutating func finish() -> String {
        defer { pending = [] }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }

    /// Length of the longest prefix that does not end inside a multi-byte character.
    private func completePrefixLength(_ b: [UInt8]) -> Int {
        var i = b.count - 1
        var back = 0
        // Walk back over at most 3 continuation bytes to the last lead byte.
        while i >= 0 && back < 4 && (b[i] & 0xC0) == 0x80 { i -= 1; back += 1 }
        if i < 0 { return b.count }
        let lead = b[i]
        let need: Int
        if lead < 0x80 { need = 1 } else if lead & 0xE0 == 0xC0 { need = 2 } else if lead & 0xF0 == 0xE0 { need = 3 } else if lead & 0xF8 == 0xF0 { need = 4 } else { need = 1 }
        return (b.count - i) >= need ? b.count : i
    }
}
