import Foundation

/// A corpus turned into token ids once, so training reads numbers instead of re-tokenizing.
///
/// File layout (little-endian): the 8 bytes `LSTOKENS`, UInt32 version (1), UInt32 vocabulary
/// size, then one UInt32 per token to the end of the file. Documents follow one another, each
/// starting with the tokenizer's BOS (when it has one), as llama2.c's pre-tokenized shards do.
public enum TokenShard {
    static let magic = Array("LSTOKENS".utf8)
    static let headerBytes = 16

    /// Documents of a text: paragraphs (separated by blank lines), each tokenized on its own.
    public static func documents(in text: String) -> [String] {
        var docs: [String] = []
        var current: [Substring] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.allSatisfy(\.isWhitespace) {
                if !current.isEmpty { docs.append(current.joined(separator: "\n")) }
                current = []
            } else {
                current.append(line)
            }
        }
        if !current.isEmpty { docs.append(current.joined(separator: "\n")) }
        return docs
    }

    /// Tokenizes `files` (UTF-8 text) into one shard at `output`, written atomically.
    /// `progress` gets (documents done, documents in all).
    @discardableResult
    public static func write(files: [String], tokenizer: any Tokenizer, to output: String,
                             progress: (Int, Int) -> Void = { _, _ in }) throws -> Int {
        var docs: [String] = []
        for f in files {
            guard let data = FileManager.default.contents(atPath: f) else { throw LlamaError.fileNotFound(f) }
            guard let text = String(data: data, encoding: .utf8) else { throw LlamaError.invalidUTF8(what: f) }
            docs += documents(in: text)
        }
        guard !docs.isEmpty else { throw LlamaError.invalidArgument("no text to tokenize in \(files.joined(separator: ", ")) (the files are empty)") }
        var tokens: [UInt32] = []
        for (i, d) in docs.enumerated() {
            if let bos = tokenizer.bosID { tokens.append(UInt32(bos)) }
            tokens += tokenizer.encode(d, addBOS: false, parseSpecial: false).map { UInt32($0) }
            if i % 256 == 0 || i == docs.count - 1 { progress(i + 1, docs.count) }
        }
        var bytes = magic
        withUnsafeBytes(of: UInt32(1).littleEndian) { bytes += $0 }
        withUnsafeBytes(of: UInt32(tokenizer.vocabSize).littleEndian) { bytes += $0 }
        tokens.withUnsafeBytes { bytes += $0 }
        try writeFileAtomically(output) { try $0.write(contentsOf: bytes) }
        return tokens.count
    }

    /// Reads a shard's tokens, checking its header and every id against `vocabSize`.
    public static func read(_ path: String, vocabSize: Int? = nil) throws -> [Int] {
        let file = try MappedFile(path: path)
        try file.check(offset: 0, count: headerBytes, what: "token shard header")
        let head = [UInt8](UnsafeRawBufferPointer(start: file.base, count: 8))
        guard head == magic else {
            throw LlamaError.badMagic(file: path, found: String(decoding: head, as: UTF8.self), expected: "token shard (LSTOKENS)")
        }
        let version = file.base.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
        guard version == 1 else { throw LlamaError.unsupportedVersion(file: path, version: Int(version)) }
        let vocab = Int(file.base.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian)
        if let vocabSize, vocab > vocabSize {
            throw LlamaError.invalidConfig(file: path, field: "vocab_size", reason: "tokenized with \(vocab) tokens, the model has \(vocabSize)")
        }
        guard (file.size - headerBytes) % 4 == 0 else {
            throw LlamaError.corrupt(file: path, offset: file.size, reason: "the token data is not a whole number of UInt32 ids")
        }
        let count = (file.size - headerBytes) / 4
        var tokens = [Int](repeating: 0, count: count)
        for i in 0..<count {
            let t = Int(file.base.loadUnaligned(fromByteOffset: headerBytes + 4 * i, as: UInt32.self).littleEndian)
            guard t < vocab else { throw LlamaError.corrupt(file: path, offset: headerBytes + 4 * i, reason: "token id \(t) is outside the vocabulary of \(vocab)") }
            tokens[i] = t
        }
        return tokens
    }
}

/// Training data from several token sources mixed by weight (the LLaMA paper's data table):
/// each source is cut into windows of `sequenceLength + 1` tokens; the last `validationFraction`
/// of each source's windows are held out. Each training row picks a source by weight, then that
/// source's next window in an order shuffled by seed (re-shuffled every pass). The position
/// (`State`) is saved in checkpoints, so a resumed run reads the same rows.
public final class DataMixture: @unchecked Sendable {
    public struct Source: Sendable {
        public let name: String
        public let weight: Double
        public let tokens: [Int]
        /// Which tokens are learned (supervised fine-tuning: answer tokens only); nil: all.
        /// A target whose token is not learned is ignored (no loss, no gradient).
        public let learned: [Bool]?
        public init(name: String, weight: Double, tokens: [Int], learned: [Bool]? = nil) {
            precondition(learned == nil || learned!.count == tokens.count)
            self.name = name
            self.weight = weight
            self.tokens = tokens
            self.learned = learned
        }

        /// The window starting at `start`: inputs and next-token targets (-1 where not learned).
        func window(_ start: Int, _ length: Int) -> (tokens: ArraySlice<Int>, targets: [Int]) {
            let inputs = tokens[start..<(start + length)]
            var targets = Array(tokens[(start + 1)...(start + length)])
            if let learned {
                for i in targets.indices where !learned[start + 1 + i] { targets[i] = -1 }
            }
            return (inputs, targets)
        }
    }

    /// Where the mixture is: enough to continue exactly.
    public struct State: Codable, Sendable, Equatable {
        public var rngState: UInt64
        public var cursors: [Int]
        public var epochs: [Int]
    }

    public let sources: [Source]
    public let sequenceLength: Int
    public let seed: UInt64
    /// Per source: training window starts, validation window starts.
    let train: [[Int]]
    let validation: [[Int]]
    private var order: [[Int]]
    public private(set) var state: State

    public init(sources: [Source], sequenceLength: Int, validationFraction: Double, seed: UInt64) throws {
        guard !sources.isEmpty else { throw LlamaError.invalidArgument("no training data given") }
        self.sources = sources
        self.sequenceLength = sequenceLength
        self.seed = seed
        var train: [[Int]] = [], validation: [[Int]] = []
        for s in sources {
            guard s.weight > 0 else { throw LlamaError.invalidArgument("\(s.name): weight must be positive, got \(s.weight)") }
            let windows = s.tokens.count / (sequenceLength + 1)
            guard windows >= 2 else {
                throw LlamaError.invalidArgument("\(s.name): \(s.tokens.count) tokens, fewer than two windows of \(sequenceLength + 1) (one to train on, one to validate)")
            }
            let held = min(windows - 1, max(validationFraction > 0 ? 1 : 0, Int((Double(windows) * validationFraction).rounded())))
            let starts = (0..<windows).map { $0 * (sequenceLength + 1) }
            train.append(Array(starts[0..<(windows - held)]))
            validation.append(Array(starts[(windows - held)...]))
        }
        self.train = train
        self.validation = validation
        state = State(rngState: seed, cursors: Array(repeating: 0, count: sources.count), epochs: Array(repeating: 0, count: sources.count))
        order = []
        order = (0..<sources.count).map { shuffled(source: $0, epoch: 0) }
    }

    /// Continues from a saved position.
    public func restore(_ saved: State) throws {
        guard saved.cursors.count == sources.count, saved.epochs.count == sources.count else {
            throw LlamaError.invalidArgument("the checkpoint's data position has \(saved.cursors.count) sources, this run has \(sources.count)")
        }
        state = saved
        order = (0..<sources.count).map { shuffled(source: $0, epoch: saved.epochs[$0]) }
    }

    public var trainingTokens: Int { train.reduce(0) { $0 + $1.count } * sequenceLength }
    public var validationWindows: Int { validation.reduce(0) { $0 + $1.count } }

    private func shuffled(source: Int, epoch: Int) -> [Int] {
        var rng = SplitMix64(seed: seed &+ UInt64(source) &* 0x9E37_79B9 &+ UInt64(epoch) &* 0x1_0000_0001)
        var o = Array(train[source].indices)
        o.shuffle(using: &rng)
        return o
    }

    /// The next `rows` training windows as (tokens, targets), each rows × sequenceLength.
    public func nextBatch(rows: Int) -> (tokens: [Int], targets: [Int]) {
        let total = sources.reduce(0) { $0 + $1.weight }
        var tokens: [Int] = [], targets: [Int] = []
        for _ in 0..<rows {
            var rng = SplitMix64(seed: state.rngState)
            let draw = Double(rng.next() >> 11) / Double(1 << 53) * total
            state.rngState = rng.next()
            var s = 0, acc = sources[0].weight
            while draw >= acc && s + 1 < sources.count {
                s += 1
                acc += sources[s].weight
            }
            if state.cursors[s] >= order[s].count {
                state.epochs[s] += 1
                state.cursors[s] = 0
                order[s] = shuffled(source: s, epoch: state.epochs[s])
            }
            let start = train[s][order[s][state.cursors[s]]]
            state.cursors[s] += 1
            let window = sources[s].window(start, sequenceLength)
            tokens += window.tokens
            targets += window.targets
        }
        return (tokens, targets)
    }

    /// All held-out windows, in batches of `rows` (the last one padded with ignored targets).
    public func validationBatches(rows: Int) -> [(tokens: [Int], targets: [Int])] {
        var windows: [(Source, Int)] = []
        for (s, starts) in validation.enumerated() { for st in starts { windows.append((sources[s], st)) } }
        return Self.batches(windows, rows: rows, length: sequenceLength)
    }

    /// Windows (source, start) in batches of `rows`; the last batch is padded with ignored targets.
    static func batches(_ windows: [(Source, Int)], rows: Int, length: Int) -> [(tokens: [Int], targets: [Int])] {
        stride(from: 0, to: windows.count, by: rows).map { first in
            var tokens: [Int] = [], targets: [Int] = []
            for i in first..<(first + rows) {
                if i < windows.count {
                    let window = windows[i].0.window(windows[i].1, length)
                    tokens += window.tokens
                    targets += window.targets
                } else {
                    tokens += Array(repeating: 0, count: length)
                    targets += Array(repeating: -1, count: length)
                }
            }
            return (tokens, targets)
        }
    }
}
