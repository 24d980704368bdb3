import Foundation
import LlamaKernels

/// Writes a model as a GGUF file llama.cpp loads: llama metadata, the tokenizer, the chat
/// template, and every matrix in the chosen type (norms stay Float32, as llama.cpp keeps 1-D
/// tensors). Block formats use ggml's reference quantizers (`quantizeRow`); see `Recipe` for
/// which matrix gets which type. Hugging Face q/k rows are permuted back to Meta's interleaved
/// RoPE layout, as `convert_hf_to_gguf.py` does. Streams tensor by tensor; the file appears
/// atomically (temporary file, fsync, rename).
public enum GGUFExport {
    /// Which type each matrix gets, as llama.cpp's `llama_tensor_get_type` chooses for its file
    /// types without an importance matrix: the base type, a more precise output matrix, the _S/_M
    /// mixes' choices for attn_v and ffn_down, and its fallbacks for rows that are not whole blocks.
    public struct Recipe: Sendable {
        public let name: String
        /// `general.file_type` (llama.cpp's `llama_ftype`).
        public let fileType: UInt64
        let base: TensorType
        let mix: Mix

        /// The per-layer choices beyond the output matrix.
        enum Mix: Sendable {
            case none
            /// Q4_K_S: Q5_K for the first four attn_v and the first eighth of ffn_down.
            case small
            /// Q4_K_M, Q5_K_M: Q6_K for attn_v and ffn_down in the first and last eighths of the
            /// layers and every third layer between.
            case medium
            /// Q2_K: Q3_K for ffn_down and attn_output, attn_v Q3_K (Q4_K with 4+ query heads per
            /// key/value head).
            case q2
            /// Q3_K_M: Q4_K for attn_output and ffn_down (Q5_K in the first sixteenth of the
            /// layers), attn_v Q5_K in the first two layers and Q4_K after.
            case q3Medium
            /// Q3_K_L: Q5_K for attn_v, attn_output and ffn_down.
            case q3Large
            /// IQ4_NL: Q5_K for the first eighth of ffn_down, and attn_v with 4+ query heads per
            /// key/value head.
            case nonlinear
        }

        /// The type of a matrix called `role` (attn_v, ffn_down, output, …; tied embeddings are
        /// `output`) in layer `layer` of `layers`, with rows of `cols` elements, in a model with
        /// `gqa` query heads per key/value head.
        public func type(role: String, layer: Int, layers: Int, cols: Int, gqa: Int) -> TensorType {
            // Float file types keep every matrix in their type (llama.cpp only chooses per tensor
            // for quantized file types).
            if base.isFloat { return base }
            var t = base
            // (llama.cpp counts attn_v tensors and ffn_down layers; one of each per layer here.)
            switch role {
            case "output":
                // Q6_K unless the rows are not whole blocks of the base type (then Q8_0) or the
                // base is Q8_0 already.
                if cols % base.blockSize != 0 { t = .q8_0 } else if base != .q8_0 { t = .q6_K }
            case "attn_v":
                switch mix {
                case .medium where moreBits(layer, layers): t = .q6_K
                case .small where layer < 4: t = .q5_K
                case .q2: t = gqa >= 4 ? .q4_K : .q3_K
                case .q3Medium: t = layer < 2 ? .q5_K : .q4_K
                case .q3Large: t = .q5_K
                case .nonlinear where gqa >= 4: t = .q5_K
                default: break
                }
                // llama.cpp's 70B (80 layers with grouped-query attention) shares each attn_v
                // between 8 heads: Q3_K and Q4_K become Q5_K.
                if layers == 80 && gqa > 1 && (t == .q3_K || t == .q4_K) { t = .q5_K }
            case "ffn_down":
                switch mix {
                case .medium where moreBits(layer, layers): t = .q6_K
                case .small where layer < layers / 8: t = .q5_K
                case .q2: t = .q3_K
                case .q3Medium: t = layer < layers / 16 ? .q5_K : .q4_K
                case .q3Large: t = .q5_K
                case .nonlinear where layer < layers / 8: t = .q5_K
                default: break
                }
            case "attn_output":
                switch mix {
                case .q2: t = .q3_K
                case .q3Medium: t = .q4_K
                case .q3Large: t = .q5_K
                default: break
                }
            default:
                break
            }
            // Rows that are not whole 256-blocks: the K-quants' 32-block stand-ins, then F16.
            if t.rowBytes(cols) == nil {
                switch t {
                case .q2_K, .q3_K: t = .q4_0
                case .q4_K: t = .q5_0
                case .q5_K: t = .q5_1
                case .q6_K: t = .q8_0
                default: break
                }
                if t.rowBytes(cols) == nil { t = .f16 }
            }
            return t
        }

        /// The first and last eighths of the layers and every third layer between.
        private func moreBits(_ layer: Int, _ layers: Int) -> Bool {
            layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
        }

        public static let all: [Recipe] = [
            Recipe(name: "F32", fileType: 0, base: .f32, mix: .none),
            Recipe(name: "F16", fileType: 1, base: .f16, mix: .none),
            Recipe(name: "BF16", fileType: 32, base: .bf16, mix: .none),
            Recipe(name: "Q8_0", fileType: 7, base: .q8_0, mix: .none),
            Recipe(name: "Q4_0", fileType: 2, base: .q4_0, mix: .none),
            Recipe(name: "Q4_1", fileType: 3, base: .q4_1, mix: .none),
            Recipe(name: "Q5_0", fileType: 8, base: .q5_0, mix: .none),
            Recipe(name: "Q5_1", fileType: 9, base: .q5_1, mix: .none),
            Recipe(name: "IQ4_NL", fileType: 25, base: .iq4_nl, mix: .nonlinear),
            Recipe(name: "Q2_K", fileType: 10, base: .q2_K, mix: .q2),
            Recipe(name: "Q3_K_S", fileType: 11, base: .q3_K, mix: .none),
            Recipe(name: "Q3_K_M", fileType: 12, base: .q3_K, mix: .q3Medium),
            Recipe(name: "Q3_K_L", fileType: 13, base: .q3_K, mix: .q3Large),
            // Q4_K with no per-layer choices (llama.cpp's `Q4_K` is an alias of Q4_K_M).
            Recipe(name: "Q4_K", fileType: 14, base: .q4_K, mix: .none),
            Recipe(name: "Q4_K_S", fileType: 14, base: .q4_K, mix: .small),
            Recipe(name: "Q4_K_M", fileType: 15, base: .q4_K, mix: .medium),
            Recipe(name: "Q5_K_S", fileType: 16, base: .q5_K, mix: .none),
            Recipe(name: "Q5_K_M", fileType: 17, base: .q5_K, mix: .medium),
            Recipe(name: "Q6_K", fileType: 18, base: .q6_K, mix: .none),
        ]

        public static func named(_ name: String) -> Recipe? { all.first { $0.name == name.uppercased() } }
        public static func uniform(_ type: TensorType) -> Recipe? { all.first { $0.base == type && $0.mix == .none } }
    }

    /// Writes with one type for every matrix (`type` must be one of the recipes' base types).
    public static func write(_ model: Model, to path: String, type: TensorType,
                             progress: (_ done: Int, _ total: Int) -> Void = { _, _ in },
                             shouldContinue: () -> Bool = { true }) throws {
        guard let recipe = Recipe.uniform(type) else {
            throw LlamaError.invalidArgument("cannot write \(type) (supported: \(Recipe.all.map(\.name).joined(separator: ", ")))")
        }
        try write(model, to: path, recipe: recipe, progress: progress, shouldContinue: shouldContinue)
    }

    /// Writes `model` to `path` with `recipe`'s types; `shouldContinue` is asked between tensors
    /// (Ctrl-C), and stopping leaves no file behind.
    public static func write(_ model: Model, to path: String, recipe: Recipe,
                             progress: (_ done: Int, _ total: Int) -> Void = { _, _ in },
                             shouldContinue: () -> Bool = { true }) throws {
        try write(weights: model.weights, tokenizer: model.tokenizer, name: model.name, chatTemplate: model.chatTemplate,
                  source: model.path, to: path, recipe: recipe, progress: progress, shouldContinue: shouldContinue)
    }

    /// Writes `weights` with `tokenizer` (a model trained here, or any loaded model's parts);
    /// `source` names where they came from in errors.
    public static func write(weights w: Weights, tokenizer: any Tokenizer, name: String, chatTemplate: String?, source: String,
                             to path: String, recipe: Recipe,
                             progress: (_ done: Int, _ total: Int) -> Void = { _, _ in },
                             shouldContinue: () -> Bool = { true }) throws {
        let fileType = recipe.fileType
        let c = w.config
        if c.ropeLayout == .halves && c.ropeDim != c.headDim {
            throw LlamaError.invalidArgument("\(source): partial rotary embeddings (\(c.ropeDim) of \(c.headDim)) cannot be converted")
        }
        var metadata: [(String, GGUFValue)] = [
            ("general.architecture", .string("llama")),
            ("general.name", .string(name)),
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
        metadata += try tokenizerMetadata(tokenizer, vocabSize: c.vocabSize)
        if let t = chatTemplate { metadata.append(("tokenizer.chat_template", .string(t))) }

        var tensors: [GGUFWriter.StreamedTensor] = []
        func matrix(_ name: String, _ m: Matrix, role: String, layer: Int = 0, permuteHeads: Int? = nil) {
            let t = recipe.type(role: role, layer: layer, layers: c.layerCount, cols: m.cols, gqa: c.headCount / c.kvHeadCount)
            let rowBytes = t.rowBytes(m.cols)!
            tensors.append(.init(name: name, dims: [m.cols, m.rows], type: t) { out in
                // Rows are encoded independently, 16 to a task on the shared pool (the K-quant
                // searches are slow: the 1.1B shape to Q3_K_M took 52 s on one thread); the
                // bytes do not depend on the thread count.
                let start = out.count, rowsPerTask = 16
                out += repeatElement(0, count: m.rows * rowBytes)
                out.withUnsafeMutableBytes { buffer in
                    let base = SendablePointer((buffer.baseAddress! + start).assumingMemoryBound(to: UInt8.self))
                    ThreadPool.shared.parallelFor((m.rows + rowsPerTask - 1) / rowsPerTask) { task in
                        var row = [Float](repeating: 0, count: m.cols)
                        for r in (task * rowsPerTask)..<min(m.rows, (task + 1) * rowsPerTask) {
                            let source = permuteHeads.map { interleavedSourceRow(r, headDim: c.headDim, heads: $0) } ?? r
                            m.row(source, into: &row)
                            quantizeRow(t, row, m.cols, base.pointer + r * rowBytes)
                        }
                    }
                }
            })
        }
        func vector(_ name: String, _ v: [Float]) {
            tensors.append(.init(name: name, dims: [v.count], type: .f32) { out in v.withUnsafeBytes { out += $0 } })
        }
        let permute = c.ropeLayout == .halves
        // Tied embeddings are the output matrix too, and get its type.
        matrix("token_embd.weight", w.tokenEmbedding, role: w.tiedEmbeddings ? "output" : "token_embd")
        vector("output_norm.weight", w.norm)
        if !w.tiedEmbeddings { matrix("output.weight", w.output, role: "output") }
        for (i, l) in w.layers.enumerated() {
            let p = "blk.\(i)."
            vector(p + "attn_norm.weight", l.attentionNorm)
            matrix(p + "attn_q.weight", l.wq, role: "attn_q", layer: i, permuteHeads: permute ? c.headCount : nil)
            matrix(p + "attn_k.weight", l.wk, role: "attn_k", layer: i, permuteHeads: permute ? c.kvHeadCount : nil)
            matrix(p + "attn_v.weight", l.wv, role: "attn_v", layer: i)
            matrix(p + "attn_output.weight", l.wo, role: "attn_output", layer: i)
            vector(p + "ffn_norm.weight", l.ffnNorm)
            matrix(p + "ffn_gate.weight", l.w1, role: "ffn_gate", layer: i)
            matrix(p + "ffn_up.weight", l.w3, role: "ffn_up", layer: i)
            matrix(p + "ffn_down.weight", l.w2, role: "ffn_down", layer: i)
        }
        try GGUFWriter.stream(metadata: metadata, tensors: tensors, to: path, progress: progress, shouldContinue: shouldContinue)
    }

    /// Row of a Hugging Face (rotate-half) q/k matrix that becomes row `r` in Meta's layout:
    /// within each head, interleaved row 2i + k is half-layout row k·d/2 + i
    /// (the inverse of the permutation in transformers' `convert_llama_weights_to_hf.py`).
    public static func interleavedSourceRow(_ r: Int, headDim d: Int, heads: Int) -> Int {
        let head = r / d, j = r % d
        return head * d + (j % 2) * (d / 2) + j / 2
    }


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
