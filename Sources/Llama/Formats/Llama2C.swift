import Foundation
import LlamaKernels

/// Float32 memory owned by a `Weights` (for formats that cannot be used in place).
final class OwnedFloats: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    init(count: Int) { pointer = .allocate(capacity: max(1, count)) }
    deinit { pointer.deallocate() }
}

/// llama2.c checkpoints (karpathy/llama2.c `export.py`): the legacy v0 layout (a 7-int header,
/// sign of vocab_size = shared classifier), v1 (`ak42` magic, 256-byte header, fp32) and v2
/// (`ak42`, int8 weights quantized in groups with fp32 scales). Weights are in Meta's layout,
/// so RoPE rotates interleaved pairs, as `run.c` does.
public enum Llama2C {
    public static let magic: UInt32 = 0x616B_3432  // "ak42"

    /// Whether the file starts like a llama2.c checkpoint.
    public static func looksLikeCheckpoint(_ file: MappedFile) -> Bool {
        guard file.size >= 28 else { return false }
        if file.base.loadUnaligned(as: UInt32.self) == magic { return true }
        // Legacy header: seven plausible positive ints (vocab_size may be negative).
        let ints = (0..<7).map { Int(file.base.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
        return ints[0] > 0 && ints[1] > 0 && ints[2] > 0 && ints[3] > 0 && ints[4] > 0 && ints[5] != 0 && ints[6] > 0
            && ints[0] < 1 << 16 && ints[2] < 1024 && ints[3] <= ints[0]
    }

    public static func loadWeights(path: String) throws -> Weights {
        let file = try MappedFile(path: path)
        var r = file.reader()
        let first = try r.read(UInt32.self, "header")
        var version = 0
        if first == magic {
            version = Int(try r.read(Int32.self, "version"))
            guard version == 1 || version == 2 else { throw LlamaError.unsupportedVersion(file: path, version: version) }
        } else {
            r.offset = 0
        }
        var p: [Int] = []
        for name in ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len"] {
            p.append(Int(try r.read(Int32.self, name)))
        }
        var shared: Bool
        var groupSize = 0
        if version == 0 {
            shared = p[5] > 0
            p[5] = abs(p[5])
        } else {
            shared = try r.read(UInt8.self, "shared_classifier") != 0
            if version == 2 { groupSize = Int(try r.read(Int32.self, "group_size")) }
            r.offset = 256
        }
        let (dim, hidden, layerCount, heads, kvHeads, vocab, seqLen) = (p[0], p[1], p[2], p[3], p[4], p[5], p[6])
        let config = ModelConfig(dim: dim, hiddenDim: hidden, layerCount: layerCount, headCount: heads, kvHeadCount: kvHeads,
                                 vocabSize: vocab, contextLength: seqLen, ropeLayout: .interleaved, rmsNormEps: 1e-5)
        try config.validate(source: path)
        let headDim = dim / heads
        let kvDim = kvHeads * headDim

        // Shapes of the per-layer matrices, in the order every version writes them.
        let matrixShapes: [(String, Int, Int)] = [("wq", dim, dim), ("wk", kvDim, dim), ("wv", kvDim, dim), ("wo", dim, dim),
                                                  ("w1", hidden, dim), ("w2", dim, hidden), ("w3", hidden, dim)]
        var m: [String: [Matrix]] = [:]
        var attnNorms: [[Float]] = [], ffnNorms: [[Float]] = []
        var embedding: Matrix
        var finalNorm: [Float]
        var output: Matrix?
        var storage: [AnyObject] = [file]

        func fp32Matrix(_ name: String, _ rows: Int, _ cols: Int) throws -> Matrix {
            let mat = try file.matrix(.f32, rows: rows, cols: cols, offset: r.offset, name: name)
            r.offset += mat.byteCount
            return mat
        }
        func fp32Vector(_ name: String, _ n: Int) throws -> [Float] {
            let v = try file.floats(.f32, count: n, offset: r.offset, name: name)
            r.offset += n * 4
            return v
        }
        func norms(_ name: String) throws -> [[Float]] {
            try (0..<layerCount).map { try fp32Vector("layer \($0) \(name)", dim) }
        }

        switch version {
        case 0:
            embedding = try fp32Matrix("token_embedding_table", vocab, dim)
            attnNorms = try norms("rms_att_weight")
            for (name, rows, cols) in matrixShapes.prefix(4) {
                m[name] = try (0..<layerCount).map { try fp32Matrix("layer \($0) \(name)", rows, cols) }
            }
            ffnNorms = try norms("rms_ffn_weight")
            for (name, rows, cols) in matrixShapes.suffix(3) {
                m[name] = try (0..<layerCount).map { try fp32Matrix("layer \($0) \(name)", rows, cols) }
            }
            finalNorm = try fp32Vector("rms_final_weight", dim)
            // freq_cis_real and freq_cis_imag, (max_seq_len, head_dim / 2) each: recomputed instead.
            let freqBytes = 2 * seqLen * (headDim / 2) * 4
            try file.check(offset: r.offset, count: freqBytes, what: "freq_cis tables")
            r.offset += freqBytes
            if !shared { output = try fp32Matrix("wcls", vocab, dim) }
        case 1:
            attnNorms = try norms("attention_norm")
            ffnNorms = try norms("ffn_norm")
            finalNorm = try fp32Vector("norm", dim)
            embedding = try fp32Matrix("tok_embeddings", vocab, dim)
            for (name, rows, cols) in matrixShapes {
                m[name] = try (0..<layerCount).map { try fp32Matrix("layer \($0) \(name)", rows, cols) }
            }
            if !shared { output = try fp32Matrix("output", vocab, dim) }
        default:
            // v2: norms in fp32, then every matrix's int8 values, then every matrix's fp32 scales.
            // Dequantized once to fp32 here: the group size need not match a ggml block.
            guard groupSize > 0, dim % groupSize == 0 else {
                throw LlamaError.corrupt(file: path, offset: 36, reason: "group_size \(groupSize) does not divide dim \(dim)")
            }
            attnNorms = try norms("attention_norm")
            ffnNorms = try norms("ffn_norm")
            finalNorm = try fp32Vector("norm", dim)
            var shapes: [(String, Int, Int)] = [("tok_embeddings", vocab, dim)]
            for (name, rows, cols) in matrixShapes { for l in 0..<layerCount { shapes.append(("layer \(l) \(name)", rows, cols)) } }
            if !shared { shapes.append(("output", vocab, dim)) }
            var quantOffsets: [Int] = []
            for (name, rows, cols) in shapes {
                guard (rows * cols) % groupSize == 0 else {
                    throw LlamaError.corrupt(file: path, offset: r.offset, reason: "\(name) is not a whole number of groups")
                }
                try file.check(offset: r.offset, count: rows * cols, what: "int8 values of \(name)")
                quantOffsets.append(r.offset)
                r.offset += rows * cols
            }
            var matrices: [Matrix] = []
            for (i, (name, rows, cols)) in shapes.enumerated() {
                let n = rows * cols
                try file.check(offset: r.offset, count: n / groupSize * 4, what: "scales of \(name)")
                let owned = OwnedFloats(count: n)
                let q = (file.base + quantOffsets[i]).assumingMemoryBound(to: Int8.self)
                for g in 0..<(n / groupSize) {
                    let s = file.base.loadUnaligned(fromByteOffset: r.offset + g * 4, as: Float.self)
                    for j in 0..<groupSize { owned.pointer[g * groupSize + j] = Float(q[g * groupSize + j]) * s }
                }
                r.offset += n / groupSize * 4
                storage.append(owned)
                matrices.append(Matrix(type: .f32, rows: rows, cols: cols, data: UnsafeRawPointer(owned.pointer)))
            }
            embedding = matrices[0]
            for (k, (name, _, _)) in matrixShapes.enumerated() {
                m[name] = Array(matrices[(1 + k * layerCount)..<(1 + (k + 1) * layerCount)])
            }
            if !shared { output = matrices.last }
        }
        let layers = (0..<layerCount).map { l in
            LayerWeights(attentionNorm: attnNorms[l], wq: m["wq"]![l], wk: m["wk"]![l], wv: m["wv"]![l], wo: m["wo"]![l],
                         ffnNorm: ffnNorms[l], w1: m["w1"]![l], w2: m["w2"]![l], w3: m["w3"]![l])
        }
        return try Weights(config: config, tokenEmbedding: embedding, layers: layers, norm: finalNorm, output: output,
                           storage: storage, source: path)
    }
}
