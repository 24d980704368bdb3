import Foundation
import Synchronization

/// How text is cut into words before byte-level BPE, as the regular expressions of GPT-2 and
/// Llama 3 do (tokenizers' `ByteLevel` / `Split` pre-tokenizers, llama.cpp `unicode.cpp`).
/// Written as matchers over Unicode scalars rather than a regex engine, so behaviour does not
/// depend on the platform's regex library.
public enum PreTokenizer: String, Sendable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// Every digit on its own (`Digits(individual_digits=True)`), then `gpt2` (SmolLM2, StarCoder).
    case digitsThenGPT2
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case llama3
    /// As `llama3` but one digit at a time (Qwen2).
    case llama3SingleDigits

    /// The name llama.cpp gives this pre-tokenizer in `tokenizer.ggml.pre`.
    public var ggufName: String {
        switch self {
        case .gpt2: "gpt2"
        case .digitsThenGPT2: "smollm"
        case .llama3: "llama-bpe"
        case .llama3SingleDigits: "qwen2"
        }
    }

    /// The pre-tokenizer llama.cpp names in `tokenizer.ggml.pre`.
    public init?(ggufName: String) {
        switch ggufName {
        case "default", "gpt2", "gpt-2", "olmo", "jais", "mpt", "stablelm2": self = .gpt2
        case "smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva": self = .digitsThenGPT2
        case "llama3", "llama-bpe", "llama-v3", "smaug-bpe", "dbrx", "falcon3", "tekken": self = .llama3
        case "qwen2", "deepseek-r1-qwen": self = .llama3SingleDigits
        default: return nil
        }
    }

    public func split(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        var words: [String] = []
        func emit(_ a: Int, _ b: Int) {
            var s = String.UnicodeScalarView()
            s.append(contentsOf: scalars[a..<b])
            words.append(String(s))
        }
        switch self {
        case .gpt2: Self.gpt2(scalars, 0, scalars.count, emit)
        case .digitsThenGPT2:
            var start = 0
            for i in 0..<scalars.count where isNumber(scalars[i]) {
                Self.gpt2(scalars, start, i, emit)
                emit(i, i + 1)
                start = i + 1
            }
            Self.gpt2(scalars, start, scalars.count, emit)
        case .llama3: Self.llama3(scalars, maxDigits: 3, emit)
        case .llama3SingleDigits: Self.llama3(scalars, maxDigits: 1, emit)
        }
        return words
    }

    private static func contraction(_ s: [Unicode.Scalar], _ i: Int, _ end: Int, caseInsensitive: Bool) -> Int {
        guard s[i] == "'", i + 1 < end else { return 0 }
        func lower(_ k: Int) -> Character? {
            guard k < end else { return nil }
            let c = Character(s[k])
            return caseInsensitive ? Character(c.lowercased()) : c
        }
        switch lower(i + 1) {
        case "s", "t", "m", "d": return 2
        case "r": return lower(i + 2) == "e" ? 3 : 0
        case "v": return lower(i + 2) == "e" ? 3 : 0
        case "l": return lower(i + 2) == "l" ? 3 : 0
        default: return 0
        }
    }

    /// Length of `\s+(?!\S)|\s+` at `i` (a whitespace run, leaving its last character for the
    /// next word when a non-space follows it).
    private static func whitespaceRun(_ s: [Unicode.Scalar], _ i: Int, _ end: Int) -> Int {
        var j = i
        while j < end && isSpace(s[j]) { j += 1 }
        if j == end || j - i == 1 { return j - i }
        return j - i - 1
    }

    private static func gpt2(_ s: [Unicode.Scalar], _ start: Int, _ end: Int, _ emit: (Int, Int) -> Void) {
        var i = start
        while i < end {
            var j = i
            let c = contraction(s, i, end, caseInsensitive: false)
            let afterSpace = s[i] == " " && i + 1 < end ? i + 1 : i
            if c > 0 {
                j = i + c
            } else if isLetter(s[afterSpace]) {
                j = afterSpace
                while j < end && isLetter(s[j]) { j += 1 }
            } else if isNumber(s[afterSpace]) {
                j = afterSpace
                while j < end && isNumber(s[j]) { j += 1 }
            } else if isOther(s[afterSpace]) {
                j = afterSpace
                while j < end && isOther(s[j]) { j += 1 }
            } else {
                j = i + whitespaceRun(s, i, end)
            }
            emit(i, j)
            i = j
        }
    }

    private static func llama3(_ s: [Unicode.Scalar], maxDigits: Int, _ emit: (Int, Int) -> Void) {
        let end = s.count
        var i = 0
        func isNewline(_ c: Unicode.Scalar) -> Bool { c == "\r" || c == "\n" }
        while i < end {
            var j = i
            let c = contraction(s, i, end, caseInsensitive: true)
            if c > 0 {
                j = i + c
            } else if isLetter(s[i]) || (!isNewline(s[i]) && !isNumber(s[i]) && i + 1 < end && isLetter(s[i + 1])) {
                // [^\r\n\p{L}\p{N}]?\p{L}+
                j = isLetter(s[i]) ? i : i + 1
                while j < end && isLetter(s[j]) { j += 1 }
            } else if isNumber(s[i]) {
                while j < end && j - i < maxDigits && isNumber(s[j]) { j += 1 }
            } else if isOther(s[i]) || (s[i] == " " && i + 1 < end && isOther(s[i + 1])) {
                //  ?[^\s\p{L}\p{N}]+[\r\n]*
                j = s[i] == " " ? i + 1 : i
                while j < end && isOther(s[j]) { j += 1 }
                while j < end && isNewline(s[j]) { j += 1 }
            } else {
                // \s*[\r\n]+ : up to the last newline of the whitespace run, if it has one.
                var k = i
                var lastNewline = -1
                while k < end && isSpace(s[k]) {
                    if isNewline(s[k]) { lastNewline = k }
                    k += 1
                }
                j = lastNewline >= 0 ? lastNewline + 1 : i + whitespaceRun(s, i, end)
            }
            emit(i, j)
            i = j
        }
    }
}

@inline(__always) func isLetter(_ c: Unicode.Scalar) -> Bool {
    if c.value < 0x80 { return (c.value | 0x20) >= 0x61 && (c.value | 0x20) <= 0x7A }
    switch c.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
    default: return false
    }
}

@inline(__always) func isNumber(_ c: Unicode.Scalar) -> Bool {
    if c.value < 0x80 { return c.value >= 0x30 && c.value <= 0x39 }
    switch c.properties.generalCategory {
    case .decimalNumber, .letterNumber, .otherNumber: return true
    default: return false
    }
}

@inline(__always) func isSpace(_ c: Unicode.Scalar) -> Bool {
    if c.value < 0x80 { return c == " " || (c.value >= 0x09 && c.value <= 0x0D) }
    return c.properties.isWhitespace
}

@inline(__always) func isOther(_ c: Unicode.Scalar) -> Bool { !isSpace(c) && !isLetter(c) && !isNumber(c) }

/// Byte-level BPE (GPT-2; SmolLM2 and Llama 3 use it): text is cut into words, each word's
/// UTF-8 bytes are mapped to printable characters (`bytes_to_unicode`), and adjacent symbols
/// are merged by the rank of the merge rule, lowest first.
public final class ByteLevelBPETokenizer: Tokenizer, @unchecked Sendable {
    public let vocabulary: Vocabulary
    public let bosID: Int?
    public let eosID: Int?
    public let addsBOS: Bool
    public let preTokenizer: PreTokenizer
    /// Merge rules in rank order ("left right").
    public let merges: [String]
    public var stripsLeadingSpace: Bool { false }
    private let ranks: [String: Int]
    private let matcher: SpecialTokenMatcher
    private let byteToUnicode: [Character]
    private let unicodeToByte: [Character: UInt8]
    private let cache = Mutex<[String: [Int]]>([:])

    /// `merges` as stored in GGUF and older tokenizer.json files: "left right".
    public init(vocabulary: Vocabulary, merges: [String], preTokenizer: PreTokenizer, bosID: Int?, eosID: Int?, addsBOS: Bool) {
        self.vocabulary = vocabulary
        self.preTokenizer = preTokenizer
        self.bosID = bosID
        self.eosID = eosID
        self.addsBOS = addsBOS
        self.merges = merges
        var ranks: [String: Int] = [:]
        ranks.reserveCapacity(merges.count)
        for (i, m) in merges.enumerated() where ranks[m] == nil { ranks[m] = i }
        self.ranks = ranks
        matcher = vocabulary.specialMatcher()
        // GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards.
        var table = [Character](repeating: " ", count: 256)
        var n = 0
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            table[b] = Character(Unicode.Scalar(printable ? UInt32(b) : UInt32(256 + n))!)
            if !printable { n += 1 }
        }
        byteToUnicode = table
        var inverse: [Character: UInt8] = [:]
        for (b, c) in table.enumerated() { inverse[c] = UInt8(b) }
        unicodeToByte = inverse
    }

    public func encode(_ text: String, addBOS: Bool, parseSpecial: Bool) -> [Int] {
        var ids: [Int] = []
        if addBOS, let bos = bosID { ids.append(bos) }
        for segment in matcher.split(text, parseSpecial: parseSpecial) {
            switch segment {
            case .token(let id): ids.append(id)
            case .text(let s):
                for word in preTokenizer.split(s) { ids += encodeWord(word) }
            }
        }
        return ids
    }

    public func bytes(of id: Int) -> [UInt8] {
        let piece = vocabulary.pieces[id]
        if vocabulary.kinds[id] == .control || vocabulary.kinds[id] == .userDefined { return Array(piece.utf8) }
        var out: [UInt8] = []
        for c in piece {
            if let b = unicodeToByte[c] { out.append(b) } else { out += Array(String(c).utf8) }
        }
        return out
    }

    private func encodeWord(_ word: String) -> [Int] {
        if let hit = cache.withLock({ $0[word] }) { return hit }
        var symbols = word.utf8.map { String(byteToUnicode[Int($0)]) }
        while symbols.count > 1 {
            var best = Int.max, at = -1
            for i in 0..<(symbols.count - 1) {
                if let r = ranks[symbols[i] + " " + symbols[i + 1]], r < best { best = r; at = i }
            }
            if at < 0 { break }
            // Merge every occurrence of the best pair, left to right, as GPT-2's `bpe` does.
            let left = symbols[at], right = symbols[at + 1]
            var merged: [String] = []
            merged.reserveCapacity(symbols.count)
            var i = 0
            while i < symbols.count {
                if i + 1 < symbols.count && symbols[i] == left && symbols[i + 1] == right {
                    merged.append(left + right)
                    i += 2
                } else {
                    merged.append(symbols[i])
                    i += 1
                }
            }
            symbols = merged
        }
        var ids: [Int] = []
        for s in symbols {
            if let id = vocabulary.id(s) {
                ids.append(id)
            } else {
                // A symbol missing from the vocabulary: fall back to its single bytes.
                for ch in s { if let id = vocabulary.id(String(ch)) { ids.append(id) } }
            }
        }
        cache.withLock { if $0.count < 100_000 { $0[word] = ids } }
        return ids
    }
}
