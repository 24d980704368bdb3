import Foundation
import LlamaKernels

/// Writes a model as a GGUF file llama.cpp loads: llama metadata, the tokenizer, the chat
/// template, and every matrix in the chosen type (norms stay Float32, as llama.cpp keeps 1-D
/// tensors). Block formats use ggml's reference quantizers (`quantizeRow`); a matrix whose rows
/// do not divide into blocks is written as F16, and the output matrix of a 4-bit file as Q8_0
/// (llama.cpp uses Q6_K there; Q8_0 keeps the same role of a more precise output). Hugging Face q/k rows are permuted back to Meta's interleaved
/// RoPE layout, as `convert_hf_to_gguf.py` does. Streams tensor by tensor; the file appears
/// atomically (temporary file, fsync, rename).
public enum GGUFExport {
    public static func write(_ model: Model, to path: String, type: TensorType,
                             progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }) throws {
        guard let fileType = fileTypes[type] else {
            throw LlamaError.invalidArgument("cannot write \(type) (supported: \(fileTypes.keys.map(\.description).sorted().joined(separator: ", ")))")
        }
        let c = model.config
        if c.ropeLayout == .halves && c.ropeDim != c.headDim {
            throw LlamaError.invalidArgument("\(model.path): partial rotary embeddings (\(c.ropeDim) of \(c.headDim)) cannot be converted")
        }
        var metadata: [(String, GGUFValue)] = [
            ("general.architecture", .string("llama")),
            ("general.name", .string(model.name)),
            ("general.file_type", .uint(fileType)),
            ("llama.context_length", .uint(UInt64(c.contextLength))),
            ("llama.embedding_length", .uint(UInt64(c.dim))),
            ("llama.block_count", .uint(UInt64(c.layerCount))),
            ("llama.feed_forward_length", .uint(UInt64(c.hiddenDim))),
            ("llama.attention.head_count", .uint(UInt64(c.headCount))),
            ("llama.attention.head_count_kv", .uint(UInt64(c.kvHeadCount))),
            ("llama.rope.freq_base", .float(Double(c.ropeTheta))),
            ("llama.rope.dimension_count", .uint(UInt64(c.ropeDim))),
            ("llama.attention.layer_norm_rms_epsilon", .float(Double(c.rmsNormEps))),
            ("llama.vocab_size", .uint(UInt64(c.vocabSize))),
        ]
        if c.headDim != c.dim / c.headCount {
            metadata += [("llama.attention.key_length", .uint(UInt64(c.headDim))), ("llama.attention.value_length", .uint(UInt64(c.headDim)))]
        }
        metadata += try tokenizerMetadata(model.tokenizer, vocabSize: c.vocabSize)
        if let t = model.chatTemplate { metadata.append(("tokenizer.chat_template", .string(t))) }

        let w = model.weights
        var tensors: [GGUFWriter.StreamedTensor] = []
        func matrix(_ name: String, _ m: Matrix, permuteHeads: Int? = nil, isOutput: Bool = false) {
            var t = isOutput && (type == .q4_0 || type == .q4_1) ? TensorType.q8_0 : type
            if t.rowBytes(m.cols) == nil { t = .f16 }
            let rowBytes = t.rowBytes(m.cols)!
            tensors.append(.init(name: name, dims: [m.cols, m.rows], type: t) { out in
                var row = [Float](repeating: 0, count: m.cols)
                var encoded = [UInt8](repeating: 0, count: rowBytes)
                for r in 0..<m.rows {
                    let source = permuteHeads.map { interleavedSourceRow(r, headDim: c.headDim, heads: $0) } ?? r
                    m.row(source, into: &row)
                    encoded.withUnsafeMutableBytes { quantizeRow(t, row, m.cols, $0.baseAddress!) }
                    out += encoded
                }
            })
        }
        func vector(_ name: String, _ v: [Float]) {
            tensors.append(.init(name: name, dims: [v.count], type: .f32) { out in v.withUnsafeBytes { out += $0 } })
        }
        let permute = c.ropeLayout == .halves
        matrix("token_embd.weight", w.tokenEmbedding, isOutput: w.tiedEmbeddings)
        vector("output_norm.weight", w.norm)
        if !w.tiedEmbeddings { matrix("output.weight", w.output, isOutput: true) }
        for (i, l) in w.layers.enumerated() {
            let p = "blk.\(i)."
            vector(p + "attn_norm.weight", l.attentionNorm)
            matrix(p + "attn_q.weight", l.wq, permuteHeads: permute ? c.headCount : nil)
            matrix(p + "attn_k.weight", l.wk, permuteHeads: permute ? c.kvHeadCount : nil)
            matrix(p + "attn_v.weight", l.wv)
            matrix(p + "attn_output.weight", l.wo)
            vector(p + "ffn_norm.weight", l.ffnNorm)
            matrix(p + "ffn_gate.weight", l.w1)
            matrix(p + "ffn_up.weight", l.w3)
            matrix(p + "ffn_down.weight", l.w2)
        }
        try GGUFWriter.stream(metadata: metadata, tensors: tensors, to: path, progress: progress)
    }

    /// Row of a Hugging Face (rotate-half) q/k matrix that becomes row `r` in Meta's layout:
    /// within each head, interleaved row 2i + k is half-layout row k·d/2 + i
    /// (the inverse of the permutation in transformers' `convert_llama_weights_to_hf.py`).
    public static func interleavedSourceRow(_ r: Int, headDim d: Int, heads: Int) -> Int {
        let head = r / d, j = r % d
        return head * d + (j % 2) * (d / 2) + j / 2
    }

    /// The types this writer produces, with their `general.file_type` (llama.cpp's `llama_ftype`).
    public static let fileTypes: [TensorType: UInt64] = [.f32: 0, .f16: 1, .q4_0: 2, .q4_1: 3, .q8_0: 7, .bf16: 32]

    public static func tokenizerMetadata(_ t: any Tokenizer, vocabSize: Int) throws -> [(String, GGUFValue)] {
        let v = t.vocabulary
        var m: [(String, GGUFValue)] = []
        if let spm = t as? SentencePieceTokenizer {
            m.append(("tokenizer.ggml.model", .string("llama")))
            m.append(("tokenizer.ggml.tokens", .array(v.pieces.map { .string($0) })))
            m.append(("tokenizer.ggml.scores", .array(v.scores.map { .float(Double($0)) })))
            m.append(("tokenizer.ggml.token_type", .array(v.kinds.map { .int(Int64($0.rawValue)) })))
            m.append(("tokenizer.ggml.add_space_prefix", .bool(spm.addDummyPrefix)))
            if let u = spm.unknownID { m.append(("tokenizer.ggml.unknown_token_id", .uint(UInt64(u)))) }
        } else if let bpe = t as? ByteLevelBPETokenizer {
            m.append(("tokenizer.ggml.model", .string("gpt2")))
            m.append(("tokenizer.ggml.pre", .string(bpe.preTokenizer.ggufName)))
            m.append(("tokenizer.ggml.tokens", .array(v.pieces.map { .string($0) })))
            m.append(("tokenizer.ggml.token_type", .array(v.kinds.map { .int(Int64($0.rawValue)) })))
            m.append(("tokenizer.ggml.merges", .array(bpe.merges.map { .string($0) })))
        } else {
            throw LlamaError.invalidArgument("this tokenizer kind cannot be written to GGUF")
        }
        if let b = t.bosID { m.append(("tokenizer.ggml.bos_token_id", .uint(UInt64(b)))) }
        if let e = t.eosID { m.append(("tokenizer.ggml.eos_token_id", .uint(UInt64(e)))) }
        m.append(("tokenizer.ggml.add_bos_token", .bool(t.addsBOS)))
        return m
    }
}
