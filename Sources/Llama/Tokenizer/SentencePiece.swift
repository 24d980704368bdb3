import Foundation

/// SentencePiece BPE as Llama 1/2 use it (SPEC.md §2): whitespace becomes `▁`, a dummy `▁`
/// prefix starts the text, symbols are merged greedily by the score of the merged piece
/// (sentencepiece `bpe_model.cc`), and what stays outside the vocabulary falls back to
/// `<0xNN>` byte tokens. Digits are split because the vocabulary has no multi-digit pieces.
public struct SentencePieceTokenizer: Tokenizer {
    public let vocabulary: Vocabulary
    public let bosID: Int?
    public let eosID: Int?
    public let unknownID: Int?
    public let addsBOS: Bool
    public let addDummyPrefix: Bool
    public let byteFallback: Bool
    public var stripsLeadingSpace: Bool { addDummyPrefix }
    private let byteIDs: [Int?]
    private let matcher: SpecialTokenMatcher
    /// Pieces BPE may merge into (normal, user-defined, unused), as sentencepiece's `pieces_`.
    private let mergeable: [String: Int]

    public init(vocabulary: Vocabulary, bosID: Int?, eosID: Int?, unknownID: Int?, addsBOS: Bool = true,
                addDummyPrefix: Bool = true, byteFallback: Bool = true) {
        self.vocabulary = vocabulary
        self.bosID = bosID
        self.eosID = eosID
        self.unknownID = unknownID ?? vocabulary.kinds.firstIndex(of: .unknown)
        self.addsBOS = addsBOS
        self.addDummyPrefix = addDummyPrefix
        self.byteFallback = byteFallback
        var byteIDs = [Int?](repeating: nil, count: 256)
        var mergeable: [String: Int] = [:]
        for (i, p) in vocabulary.pieces.enumerated() {
            switch vocabulary.kinds[i] {
            case .byte:
                if let b = Self.byteValue(p) { byteIDs[Int(b)] = i }
            case .normal, .userDefined, .unused:
                if mergeable[p] == nil { mergeable[p] = i }
            default: break
            }
        }
        self.byteIDs = byteIDs
        self.mergeable = mergeable
        matcher = vocabulary.specialMatcher()
    }

    /// `<0x41>` → 0x41
    static func byteValue(_ piece: String) -> UInt8? {
        guard piece.count == 6, piece.hasPrefix("<0x"), piece.hasSuffix(">") else { return nil }
        return UInt8(piece.dropFirst(3).prefix(2), radix: 16)
    }

    public func encode(_ text: String, addBOS: Bool, parseSpecial: Bool) -> [Int] {
        var ids: [Int] = []
        if addBOS, let bos = bosID { ids.append(bos) }
        for (n, segment) in matcher.split(text, parseSpecial: parseSpecial).enumerated() {
            switch segment {
            case .token(let id): ids.append(id)
            case .text(let s): encodeText(s, dummyPrefix: addDummyPrefix && n == 0, into: &ids)
            }
        }
        return ids
    }

    public func bytes(of id: Int) -> [UInt8] {
        switch vocabulary.kinds[id] {
        case .byte: return Self.byteValue(vocabulary.pieces[id]).map { [$0] } ?? []
        case .unknown: return Array(" \u{2047} ".utf8)  // sentencepiece decodes <unk> as " ⁇ "
        default: return Array(vocabulary.pieces[id].replacingOccurrences(of: "\u{2581}", with: " ").utf8)
        }
    }

    private struct Symbol {
        var start: Int
        var length: Int
        var prev: Int
        var next: Int
    }

    private struct Candidate: Comparable {
        let score: Float
        let left: Int
        let right: Int
        let length: Int
        // Highest score first; leftmost first among equal scores (bpe_model.cc's agenda order).
        static func < (a: Candidate, b: Candidate) -> Bool {
            a.score != b.score ? a.score > b.score : a.left < b.left
        }
    }

    private func encodeText(_ text: String, dummyPrefix: Bool, into ids: inout [Int]) {
        if text.isEmpty { return }
        // Normalise: identity rules, spaces escaped as ▁, dummy prefix (normalizer.cc).
        var normalized = dummyPrefix ? "\u{2581}" : ""
        normalized += text.replacingOccurrences(of: " ", with: "\u{2581}")
        let bytes = Array(normalized.utf8)
        func piece(_ start: Int, _ length: Int) -> String {
            String(decoding: bytes[start..<(start + length)], as: UTF8.self)
        }
        // One symbol per character.
        var symbols: [Symbol] = []
        var i = 0
        while i < bytes.count {
            let lead = bytes[i]
            var len = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
            len = min(len, bytes.count - i)
            symbols.append(Symbol(start: i, length: len, prev: symbols.count - 1, next: symbols.count + 1))
            i += len
        }
        symbols[symbols.count - 1].next = -1

        var heap = Heap<Candidate>()
        func consider(_ left: Int, _ right: Int) {
            guard left >= 0, right >= 0 else { return }
            let length = symbols[left].length + symbols[right].length
            guard let id = mergeable[piece(symbols[left].start, length)] else { return }
            heap.push(Candidate(score: vocabulary.scores[id], left: left, right: right, length: length))
        }
        for s in 0..<(symbols.count - 1) { consider(s, s + 1) }
        while let top = heap.pop() {
            let l = top.left, r = top.right
            // Skip candidates made stale by an earlier merge.
            if symbols[l].length == 0 || symbols[r].length == 0 || symbols[l].next != r
                || symbols[l].length + symbols[r].length != top.length { continue }
            symbols[l].length += symbols[r].length
            symbols[l].next = symbols[r].next
            if symbols[r].next >= 0 { symbols[symbols[r].next].prev = l }
            symbols[r].length = 0
            consider(symbols[l].prev, l)
            consider(l, symbols[l].next)
        }
        var s = 0
        while s >= 0 {
            let sym = symbols[s]
            let p = piece(sym.start, sym.length)
            if let id = vocabulary.id(p), vocabulary.kinds[id] != .control, vocabulary.kinds[id] != .unknown {
                ids.append(id)
            } else if byteFallback, bytes[sym.start..<(sym.start + sym.length)].allSatisfy({ byteIDs[Int($0)] != nil }) {
                for b in bytes[sym.start..<(sym.start + sym.length)] { ids.append(byteIDs[Int(b)]!) }
            } else if let unk = unknownID {
                ids.append(unk)
            }
            s = sym.next
        }
    }
}

/// A binary min-heap (by `<`).
struct Heap<T: Comparable> {
    private var items: [T] = []

    mutating func push(_ x: T) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if !(items[i] < items[parent]) { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> T? {
        guard !items.isEmpty else { return nil }
        let top = items[0]
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && items[l] < items[m] { m = l }
                if r < items.count && items[r] < items[m] { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}

// MARK: - Files

extension SentencePieceTokenizer {
    /// Reads a SentencePiece `tokenizer.model` (a `ModelProto` protobuf, sentencepiece_model.proto).
    public init(modelFile path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw LlamaError.fileNotFound(path) }
        let proto = try SentencePieceModelProto(data: data, path: path)
        guard proto.modelType == 2 else {
            let name = [1: "unigram", 3: "word", 4: "char"][proto.modelType] ?? "type \(proto.modelType)"
            throw LlamaError.invalidConfig(file: path, field: "trainer_spec.model_type", reason: "\(name) models are not supported, only BPE")
        }
        if !proto.precompiledCharsmap.isEmpty {
            throw LlamaError.invalidConfig(file: path, field: "normalizer_spec",
                                           reason: "normalization rule '\(proto.normalizerName)' is not supported (only identity)")
        }
        func id(_ v: Int) -> Int? { v >= 0 && v < proto.pieces.count ? v : nil }
        self.init(vocabulary: Vocabulary(pieces: proto.pieces, kinds: proto.kinds, scores: proto.scores),
                  bosID: id(proto.bosID), eosID: id(proto.eosID), unknownID: id(proto.unkID),
                  addDummyPrefix: proto.addDummyPrefix, byteFallback: proto.byteFallback)
    }

    /// Reads llama2.c's `tokenizer.bin`: `int max_token_length`, then per token
    /// `float score, int length, bytes`. It has no types: `<unk>` is 0, BOS 1, EOS 2, and
    /// `<0xNN>` pieces are bytes, as `run.c` assumes.
    public init(llama2cFile path: String, vocabSize: Int? = nil) throws {
        let file = try MappedFile(path: path)
        var r = file.reader()
        _ = try r.read(Int32.self, "max_token_length")
        var pieces: [String] = [], scores: [Float] = [], kinds: [TokenKind] = []
        while r.offset < file.size && (vocabSize == nil || pieces.count < vocabSize!) {
            let score = try r.readFloat("score of token \(pieces.count)")
            let lengthOffset = r.offset
            let length = Int(try r.read(Int32.self, "length of token \(pieces.count)"))
            guard length >= 0 && length <= 1 << 16 else {
                throw LlamaError.corrupt(file: path, offset: lengthOffset, reason: "token \(pieces.count) has length \(length)")
            }
            var piece = try r.readString(length, "token \(pieces.count)")
            let id = pieces.count
            // run.c writes BOS/EOS as "\n<s>\n" and "\n</s>\n".
            if id == 1 || id == 2 { piece = piece.trimmingCharacters(in: .newlines) }
            kinds.append(id == 0 ? .unknown : (id == 1 || id == 2) ? .control : Self.byteValue(piece) != nil ? .byte : .normal)
            pieces.append(piece.replacingOccurrences(of: " ", with: "\u{2581}"))
            scores.append(score)
        }
        if let v = vocabSize, pieces.count < v {
            throw LlamaError.truncated(file: path, offset: r.offset, needed: 8, what: "token \(pieces.count) of \(v)")
        }
        guard pieces.count > 3 else { throw LlamaError.corrupt(file: path, offset: nil, reason: "only \(pieces.count) tokens") }
        self.init(vocabulary: Vocabulary(pieces: pieces, kinds: kinds, scores: scores), bosID: 1, eosID: 2, unknownID: 0)
    }
}

/// The few fields of sentencepiece's `ModelProto` a tokenizer needs, read with a minimal
/// protobuf wire-format decoder.
struct SentencePieceModelProto {
    var pieces: [String] = []
    var scores: [Float] = []
    var kinds: [TokenKind] = []
    var modelType = 1  // trainer_spec.model_type: UNIGRAM = 1 (proto default), BPE = 2
    var byteFallback = false
    var unkID = 0, bosID = 1, eosID = 2
    var normalizerName = ""
    var precompiledCharsmap: [UInt8] = []
    var addDummyPrefix = true

    init(data: Data, path: String) throws {
        let bytes = [UInt8](data)
        try ProtoReader(bytes: bytes[...], path: path).fields { field, value in
            switch (field, value) {
            case (1, .bytes(let piece)):  // repeated SentencePiece pieces
                var text = "", score: Float = 0, type = 1
                try ProtoReader(bytes: piece, path: path).fields { f, v in
                    switch (f, v) {
                    case (1, .bytes(let b)):
                        guard let s = String(validating: b, as: UTF8.self) else {
                            throw LlamaError.corrupt(file: path, offset: nil, reason: "piece \(pieces.count) is not valid UTF-8")
                        }
                        text = s
                    case (2, .fixed32(let bits)): score = Float(bitPattern: bits)
                    case (3, .varint(let t)): type = Int(t)
                    default: break
                    }
                }
                pieces.append(text)
                scores.append(score)
                kinds.append(TokenKind(rawValue: type) ?? .normal)
            case (2, .bytes(let spec)):  // TrainerSpec
                try ProtoReader(bytes: spec, path: path).fields { f, v in
                    guard case .varint(let n) = v else { return }
                    let signed = Int(Int32(truncatingIfNeeded: n))
                    switch f {
                    case 3: modelType = Int(n)
                    case 35: byteFallback = n != 0
                    case 40: unkID = signed
                    case 41: bosID = signed
                    case 42: eosID = signed
                    default: break
                    }
                }
            case (3, .bytes(let spec)):  // NormalizerSpec
                try ProtoReader(bytes: spec, path: path).fields { f, v in
                    switch (f, v) {
                    case (1, .bytes(let b)): normalizerName = String(decoding: b, as: UTF8.self)
                    case (2, .bytes(let b)): precompiledCharsmap = Array(b)
                    case (3, .varint(let n)): addDummyPrefix = n != 0
                    default: break
                    }
                }
            default: break
            }
        }
        guard !pieces.isEmpty else { throw LlamaError.corrupt(file: path, offset: nil, reason: "no pieces: not a SentencePiece model") }
    }
}

/// Protobuf wire format: a sequence of (field number << 3 | wire type) keys and values.
struct ProtoReader {
    enum Value {
        case varint(UInt64)
        case fixed64(UInt64)
        case bytes(ArraySlice<UInt8>)
        case fixed32(UInt32)
    }

    let bytes: ArraySlice<UInt8>
    let path: String

    func fields(_ visit: (Int, Value) throws -> Void) throws {
        var i = bytes.startIndex
        func fail(_ why: String) -> LlamaError { .corrupt(file: path, offset: i, reason: "protobuf: \(why)") }
        func varint() throws -> UInt64 {
            var v: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard i < bytes.endIndex else { throw fail("truncated varint") }
                let b = bytes[i]
                i += 1
                guard shift < 64 else { throw fail("varint too long") }
                v |= UInt64(b & 0x7F) << shift
                if b < 0x80 { return v }
                shift += 7
            }
        }
        while i < bytes.endIndex {
            let key = try varint()
            let field = Int(key >> 3)
            switch key & 7 {
            case 0: try visit(field, .varint(try varint()))
            case 1:
                guard bytes.endIndex - i >= 8 else { throw fail("truncated fixed64") }
                var v: UInt64 = 0
                for k in 0..<8 { v |= UInt64(bytes[i + k]) << (8 * UInt64(k)) }
                i += 8
                try visit(field, .fixed64(v))
            case 2:
                let n = try varint()
                guard n <= UInt64(bytes.endIndex - i) else { throw fail("field \(field) claims \(n) bytes") }
                let slice = bytes[i..<(i + Int(n))]
                i += Int(n)
                try visit(field, .bytes(slice))
            case 5:
                guard bytes.endIndex - i >= 4 else { throw fail("truncated fixed32") }
                var v: UInt32 = 0
                for k in 0..<4 { v |= UInt32(bytes[i + k]) << (8 * UInt32(k)) }
                i += 4
                try visit(field, .fixed32(v))
            default:
                throw fail("unknown wire type \(key & 7)")
            }
        }
    }
}
