import Foundation
import LlamaKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One transformer block's parameters. Matrices are `[out, in]`, as in PyTorch.
public struct LayerWeights: Sendable {
    /// (dim) RMSNorm before attention (`input_layernorm`).
    public var attentionNorm: [Float]
    /// (headCount * headDim, dim)
    public var wq: Matrix
    /// (kvHeadCount * headDim, dim)
    public var wk: Matrix
    /// (kvHeadCount * headDim, dim)
    public var wv: Matrix
    /// (dim, headCount * headDim)
    public var wo: Matrix
    /// (dim) RMSNorm before the feed-forward (`post_attention_layernorm`).
    public var ffnNorm: [Float]
    /// (hiddenDim, dim) SwiGLU gate, W1 (`gate_proj`)
    public var w1: Matrix
    /// (dim, hiddenDim) down projection, W2 (`down_proj`)
    public var w2: Matrix
    /// (hiddenDim, dim) up projection, W3 (`up_proj`)
    public var w3: Matrix

    public init(attentionNorm: [Float], wq: Matrix, wk: Matrix, wv: Matrix, wo: Matrix, ffnNorm: [Float], w1: Matrix, w2: Matrix, w3: Matrix) {
        self.attentionNorm = attentionNorm
        self.wq = wq
        self.wk = wk
        self.wv = wv
        self.wo = wo
        self.ffnNorm = ffnNorm
        self.w1 = w1
        self.w2 = w2
        self.w3 = w3
    }

    /// The seven projection matrices, in checkpoint order.
    public var matrices: [Matrix] { [wq, wk, wv, wo, w1, w2, w3] }
}

/// The parameters of a model in memory: the one type every file format loads into.
/// Large matrices point into memory owned by `storage` (usually memory-mapped files), in
/// whatever format the file stores them; nothing here knows which file that was. Formats with
/// interleaved kernels (every block format, on AVX2 builds) are repacked into 8-row
/// groups at load (LlamaKernels/Interleaved.swift), and the file's pages they came from are released.
public final class Weights: @unchecked Sendable {
    public let config: ModelConfig
    /// (vocabSize, dim)
    public private(set) var tokenEmbedding: Matrix
    public private(set) var layers: [LayerWeights]
    /// (dim) final RMSNorm
    public let norm: [Float]
    /// (vocabSize, dim); the same matrix as `tokenEmbedding` when the embeddings are tied.
    public private(set) var output: Matrix
    public let tiedEmbeddings: Bool
    /// Keeps the memory behind the matrices alive.
    private var storage: [AnyObject]

    /// `repack`: interleave the matrices that have faster kernels in that layout (default on;
    /// the environment variable `LLAMA_SWIFT_REPACK=0` turns it off, to compare).
    public init(config: ModelConfig, tokenEmbedding: Matrix, layers: [LayerWeights], norm: [Float], output: Matrix?,
                storage: [AnyObject], source: String, repack: Bool = Weights.repackByDefault) throws {
        try config.validate(source: source)
        self.config = config
        self.tokenEmbedding = tokenEmbedding
        self.layers = layers
        self.norm = norm
        self.output = output ?? tokenEmbedding
        self.tiedEmbeddings = output.map { $0.data == tokenEmbedding.data } ?? true
        self.storage = storage
        try checkShapes(source: source)
        if repack { repackForKernels() }
    }

    public static var repackByDefault: Bool {
        ProcessInfo.processInfo.environment["LLAMA_SWIFT_REPACK"] != "0"
    }

    /// Replaces each matrix that has an interleaved layout by its interleaved copy. An untied
    /// token embedding keeps the file layout (only single rows are read from it); tied
    /// embeddings become the interleaved output matrix, whose rows decode as well.
    private func repackForKernels() {
        func repacked(_ m: Matrix) -> Matrix {
            guard let (packed, buffer) = m.interleaved() else { return m }
            storage.append(buffer)
            releasePages(of: m)
            return packed
        }
        for i in layers.indices {
            var l = layers[i]
            l.wq = repacked(l.wq); l.wk = repacked(l.wk); l.wv = repacked(l.wv); l.wo = repacked(l.wo)
            l.w1 = repacked(l.w1); l.w2 = repacked(l.w2); l.w3 = repacked(l.w3)
            layers[i] = l
        }
        output = repacked(output)
        if tiedEmbeddings { tokenEmbedding = output }
    }

    /// Tells the kernel that a mapped matrix's pages will not be read again, so the copy does
    /// not count twice in resident memory. Only for memory-mapped files (never heap memory).
    private func releasePages(of m: Matrix) {
        for case let file as MappedFile in storage {
            let start = Int(bitPattern: m.data), end = start + m.byteCount
            let base = Int(bitPattern: file.base)
            guard start >= base, end <= base + file.size else { continue }
            let page = Int(getpagesize())
            let first = (start + page - 1) / page * page, last = end / page * page
            if last > first { madvise(UnsafeMutableRawPointer(bitPattern: first), last - first, MADV_DONTNEED) }
        }
    }

    /// Parameters counted as a checkpoint counts them (tied embeddings once).
    public var parameterCount: Int {
        var n = tokenEmbedding.rows * tokenEmbedding.cols + norm.count
        if !tiedEmbeddings { n += output.rows * output.cols }
        for l in layers {
            n += l.attentionNorm.count + l.ffnNorm.count
            for m in l.matrices { n += m.rows * m.cols }
        }
        return n
    }

    /// Bytes of all matrices (tied embeddings counted once).
    public var byteCount: Int {
        var n = tokenEmbedding.byteCount + (tiedEmbeddings ? 0 : output.byteCount) + norm.count * 4
        for l in layers {
            n += (l.attentionNorm.count + l.ffnNorm.count) * 4
            for m in l.matrices { n += m.byteCount }
        }
        return n
    }

    /// How many matrices of each format the model has (embeddings and output included), most
    /// common first.
    public var matrixTypeCounts: [(type: TensorType, count: Int)] {
        var counts: [TensorType: Int] = [:]
        for l in layers { for m in l.matrices { counts[m.type, default: 0] += 1 } }
        counts[tokenEmbedding.type, default: 0] += 1
        if !tiedEmbeddings { counts[output.type, default: 0] += 1 }
        return counts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key.rawValue < $1.key.rawValue }
            .map { (type: $0.key, count: $0.value) }
    }

    /// The matrix formats, most common first, e.g. "Q4_1 + Q8_0".
    public var matrixTypeSummary: String {
        matrixTypeCounts.map(\.type.description).joined(separator: " + ")
    }

    /// Bytes of weights read to produce one token (every matrix once, one embedding row).
    public var bytesPerToken: Int {
        var n = output.byteCount + tokenEmbedding.rowBytes
        for l in layers { for m in l.matrices { n += m.byteCount } }
        return n
    }

    private func checkShapes(source: String) throws {
        let c = config
        func expect(_ m: Matrix, _ rows: Int, _ cols: Int, _ name: String) throws {
            if m.rows != rows || m.cols != cols {
                throw LlamaError.shapeMismatch(file: source, tensor: name, expected: [rows, cols], found: [m.rows, m.cols])
            }
            if !m.type.isSupported { throw LlamaError.unsupportedTensorType(file: source, tensor: name, type: m.type.description) }
        }
        func expect(_ v: [Float], _ n: Int, _ name: String) throws {
            if v.count != n { throw LlamaError.shapeMismatch(file: source, tensor: name, expected: [n], found: [v.count]) }
        }
        try expect(tokenEmbedding, c.vocabSize, c.dim, "token embedding")
        try expect(output, c.vocabSize, c.dim, "output")
        try expect(norm, c.dim, "final norm")
        if layers.count != c.layerCount {
            throw LlamaError.invalidConfig(file: source, field: "layers", reason: "config says \(c.layerCount), file has \(layers.count)")
        }
        for (i, l) in layers.enumerated() {
            try expect(l.attentionNorm, c.dim, "layer \(i) attention norm")
            try expect(l.ffnNorm, c.dim, "layer \(i) ffn norm")
            try expect(l.wq, c.queryDim, c.dim, "layer \(i) wq")
            try expect(l.wk, c.kvDim, c.dim, "layer \(i) wk")
            try expect(l.wv, c.kvDim, c.dim, "layer \(i) wv")
            try expect(l.wo, c.dim, c.queryDim, "layer \(i) wo")
            try expect(l.w1, c.hiddenDim, c.dim, "layer \(i) w1 (gate)")
            try expect(l.w2, c.dim, c.hiddenDim, "layer \(i) w2 (down)")
            try expect(l.w3, c.hiddenDim, c.dim, "layer \(i) w3 (up)")
        }
    }
}
