import Foundation

/// Learns a SentencePiece-style BPE vocabulary from text and writes it as a `tokenizer.model`
/// (the `ModelProto` protobuf) that the `sentencepiece` library loads: the Llama tokenizer's
/// settings (SPEC.md §2) — identity normalisation, whitespace as `▁` with a dummy prefix, digits
/// split, `<0xNN>` byte fallback for characters outside the vocabulary, `<unk>`, `<s>`, `</s>`.
///
/// Training: each line is a sentence; `▁` starts a new word (pieces never cross whitespace);
/// characters are kept by frequency up to `characterCoverage` of all characters (the rest are
/// left to byte fallback); then the most frequent adjacent pair inside words is merged, again and
/// again (ties: the pair whose merged text sorts first), until the vocabulary is full. Merged
/// pieces get scores -0, -1, -2, … in merge order, so greedy merging by score at encoding time
/// replays training; single characters come last.
public enum TokenizerTrainer {
    public struct Options: Sendable {
        public var vocabSize = 8000
        public var characterCoverage = 0.9995
        public var splitDigits = true
        public var byteFallback = true
        public var addDummyPrefix = true
        /// Longest piece, in characters (sentencepiece's `max_sentencepiece_length`).
        public var maxPieceLength = 16
        public init() {}
    }

    public struct Result: Sendable {
        public var pieces: [String]
        public var scores: [Float]
        public var kinds: [TokenKind]
        public var options: Options
        public var merges: Int { kinds.count - (options.byteFallback ? 259 : 3) - characters }
        public var characters: Int
    }

    static let space: Character = "\u{2581}"

    /// `progress` gets (merges done, merges planned).
    public static func train(text: String, options: Options, progress: (Int, Int) -> Void = { _, _ in }) throws -> Result {
        // Words (▁-initial runs) and their counts.
        var wordCounts: [String: Int] = [:]
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            var s = line.replacingOccurrences(of: " ", with: String(space))
            if options.addDummyPrefix { s = String(space) + s }
            var word = ""
            for ch in s {
                if ch == space && !word.isEmpty {
                    wordCounts[word, default: 0] += 1
                    word = ""
                }
                word.append(ch)
            }
            if !word.isEmpty { wordCounts[word, default: 0] += 1 }
        }
        guard !wordCounts.isEmpty else { throw LlamaError.invalidArgument("no text to train a tokenizer on") }

        // Characters by frequency, kept up to the coverage.
        var charCounts: [Character: Int] = [:]
        var total = 0
        for (w, n) in wordCounts {
            for ch in w { charCounts[ch, default: 0] += n }
            total += w.count * n
        }
        let byFrequency = charCounts.sorted { $0.value != $1.value ? $0.value > $1.value : String($0.key) < String($1.key) }
        var kept: [Character] = []
        var covered = 0
        for (ch, n) in byFrequency {
            if Double(covered) >= options.characterCoverage * Double(total) { break }
            kept.append(ch)
            covered += n
        }
        let reserved = options.byteFallback ? 259 : 3
        guard options.vocabSize > reserved + kept.count else {
            throw LlamaError.invalidArgument("a vocabulary of \(options.vocabSize) cannot hold \(reserved) reserved pieces and the \(kept.count) characters the text needs (raise the size or lower the character coverage)")
        }

        // Symbols: kept characters first (ids 0..<kept.count), merged pieces after.
        var symbols = kept.map { String($0) }
        var symbolID = Dictionary(uniqueKeysWithValues: symbols.enumerated().map { ($1, $0) })
        var lengths = [Int](repeating: 1, count: kept.count)
        let charID = Dictionary(uniqueKeysWithValues: kept.enumerated().map { ($1, $0) })
        // Symbols that never merge: digits (split_digits) and characters left to byte fallback (-1).
        var frozen = kept.map { options.splitDigits && $0.isASCII && $0.isNumber }
        let sortedWords = wordCounts.sorted { $0.key < $1.key }
        var words: [[Int]] = sortedWords.map { w in w.key.map { charID[$0] ?? -1 } }
        let counts = sortedWords.map(\.value)

        func key(_ a: Int, _ b: Int) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }
        func mergeable(_ a: Int, _ b: Int) -> Bool {
            a >= 0 && b >= 0 && !frozen[a] && !frozen[b] && lengths[a] + lengths[b] <= options.maxPieceLength
        }
        var pairCounts: [UInt64: Int] = [:]
        var pairWords: [UInt64: [Int]] = [:]
        func addPairs(_ w: Int, _ sign: Int) {
            let s = words[w]
            guard s.count > 1 else { return }
            for i in 0..<(s.count - 1) where mergeable(s[i], s[i + 1]) {
                let k = key(s[i], s[i + 1])
                pairCounts[k, default: 0] += sign * counts[w]
                if sign > 0 { pairWords[k, default: []].append(w) }
            }
        }
        for w in words.indices { addPairs(w, 1) }

        let planned = options.vocabSize - reserved - kept.count
        var merged: [Int] = []
        while merged.count < planned {
            var best: UInt64?
            var bestCount = 0
            var bestText = ""
            for (k, n) in pairCounts where n > 0 {
                if n < bestCount { continue }
                let text = symbols[Int(k >> 32)] + symbols[Int(k & 0xFFFF_FFFF)]
                if n > bestCount || text < bestText {
                    best = k
                    bestCount = n
                    bestText = text
                }
            }
            guard let pair = best else { break }
            let a = Int(pair >> 32), b = Int(pair & 0xFFFF_FFFF)
            // Another pair may already have made the same text ("ab"+"c", "a"+"bc"): one piece.
            let id: Int
            if let existing = symbolID[bestText] {
                id = existing
            } else {
                id = symbols.count
                symbols.append(bestText)
                symbolID[bestText] = id
                lengths.append(lengths[a] + lengths[b])
                frozen.append(false)
                merged.append(id)
            }
            for w in Set(pairWords[pair] ?? []) {
                addPairs(w, -1)
                var s = words[w], out: [Int] = []
                out.reserveCapacity(s.count)
                var i = 0
                while i < s.count {
                    if i + 1 < s.count && s[i] == a && s[i + 1] == b {
                        out.append(id)
                        i += 2
                    } else {
                        out.append(s[i])
                        i += 1
                    }
                }
                s = out
                words[w] = s
                addPairs(w, 1)
            }
            pairCounts[pair] = nil
            pairWords[pair] = nil
            if merged.count % 100 == 0 || merged.count == planned { progress(merged.count, planned) }
        }

        var pieces = ["<unk>", "<s>", "</s>"]
        var kinds: [TokenKind] = [.unknown, .control, .control]
        var scores: [Float] = [0, 0, 0]
        if options.byteFallback {
            for b in 0..<256 {
                pieces.append(String(format: "<0x%02X>", b))
                kinds.append(.byte)
                scores.append(0)
            }
        }
        for (rank, id) in merged.enumerated() {
            pieces.append(symbols[id])
            kinds.append(.normal)
            scores.append(-Float(rank))
        }
        for (rank, ch) in kept.enumerated() {
            pieces.append(String(ch))
            kinds.append(.normal)
            scores.append(-Float(merged.count + rank))
        }
        return Result(pieces: pieces, scores: scores, kinds: kinds, options: options, characters: kept.count)
    }

    /// The `tokenizer.model` bytes (sentencepiece_model.proto `ModelProto`).
    public static func modelProto(_ r: Result) -> [UInt8] {
        var out: [UInt8] = []
        for i in r.pieces.indices {
            var piece: [UInt8] = []
            ProtoWriter.bytes(1, Array(r.pieces[i].utf8), into: &piece)
            ProtoWriter.float(2, r.scores[i], into: &piece)
            ProtoWriter.varint(3, UInt64(r.kinds[i].rawValue), into: &piece)
            ProtoWriter.bytes(1, piece, into: &out)
        }
        var trainer: [UInt8] = []
        ProtoWriter.varint(3, 2, into: &trainer)  // model_type: BPE
        ProtoWriter.varint(4, UInt64(r.pieces.count), into: &trainer)
        ProtoWriter.float(10, Float(r.options.characterCoverage), into: &trainer)
        ProtoWriter.varint(20, UInt64(r.options.maxPieceLength), into: &trainer)
        ProtoWriter.varint(25, r.options.splitDigits ? 1 : 0, into: &trainer)
        ProtoWriter.varint(35, r.options.byteFallback ? 1 : 0, into: &trainer)
        ProtoWriter.varint(40, 0, into: &trainer)  // unk_id
        ProtoWriter.varint(41, 1, into: &trainer)  // bos_id
        ProtoWriter.varint(42, 2, into: &trainer)  // eos_id
        ProtoWriter.varint(43, UInt64(bitPattern: -1), into: &trainer)  // pad_id: none
        ProtoWriter.bytes(2, trainer, into: &out)
        var normalizer: [UInt8] = []
        ProtoWriter.bytes(1, Array("identity".utf8), into: &normalizer)
        ProtoWriter.varint(3, r.options.addDummyPrefix ? 1 : 0, into: &normalizer)
        ProtoWriter.varint(4, 0, into: &normalizer)  // remove_extra_whitespaces: off, as Llama's
        ProtoWriter.varint(5, 1, into: &normalizer)  // escape_whitespaces
        ProtoWriter.bytes(3, normalizer, into: &out)
        return out
    }

    /// Writes `tokenizer.model` atomically (temporary file, fsync, rename).
    public static func write(_ r: Result, to path: String) throws {
        let bytes = modelProto(r)
        try writeFileAtomically(path) { try $0.write(contentsOf: Data(bytes)) }
    }

    /// A tokenizer over the trained vocabulary (the same one reading the written file gives).
    public static func tokenizer(_ r: Result) -> SentencePieceTokenizer {
        SentencePieceTokenizer(vocabulary: Vocabulary(pieces: r.pieces, kinds: r.kinds, scores: r.scores), bosID: 1, eosID: 2,
                               unknownID: 0, addDummyPrefix: r.options.addDummyPrefix, byteFallback: r.options.byteFallback)
    }
}

/// Protobuf wire-format encoding of the few field kinds a `ModelProto` needs.
enum ProtoWriter {
    static func rawVarint(_ v: UInt64, into out: inout [UInt8]) {
        var v = v
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    static func varint(_ field: Int, _ v: UInt64, into out: inout [UInt8]) {
        rawVarint(UInt64(field << 3), into: &out)
        rawVarint(v, into: &out)
    }

    static func float(_ field: Int, _ v: Float, into out: inout [UInt8]) {
        rawVarint(UInt64(field << 3 | 5), into: &out)
        withUnsafeBytes(of: v.bitPattern.littleEndian) { out += $0 }
    }

    static func bytes(_ field: Int, _ b: [UInt8], into out: inout [UInt8]) {
        rawVarint(UInt64(field << 3 | 2), into: &out)
        rawVarint(UInt64(b.count), into: &out)
        out += b
    }
}
