/// How the two channels of each RoPE pair are laid out inside a head (SPEC.md §1).
public enum RoPELayout: String, Sendable, Equatable {
    /// Meta's checkpoints, llama2.c and llama.cpp: pairs (0,1), (2,3), … (`apply_rotary_emb`).
    case interleaved
    /// Hugging Face checkpoints, whose q/k weights are permuted: pairs (i, i + d/2) (`rotate_half`).
    case halves
}

/// The hyper-parameters of one Llama-architecture model, whatever file it came from.
public struct ModelConfig: Sendable, Equatable {
    public var dim: Int
    /// Inner size of the SwiGLU feed-forward (`intermediate_size`).
    public var hiddenDim: Int
    public var layerCount: Int
    public var headCount: Int
    /// Key/value heads; `headCount / kvHeadCount` query heads share one (GQA, Llama 2 §2.2).
    public var kvHeadCount: Int
    public var headDim: Int
    public var vocabSize: Int
    /// Longest context the model was trained for.
    public var contextLength: Int
    public var ropeTheta: Float
    /// Channels of each head that RoPE rotates (usually `headDim`).
    public var ropeDim: Int
    public var ropeLayout: RoPELayout
    public var rmsNormEps: Float

    public init(dim: Int, hiddenDim: Int, layerCount: Int, headCount: Int, kvHeadCount: Int, headDim: Int? = nil,
                vocabSize: Int, contextLength: Int, ropeTheta: Float = 10000, ropeDim: Int? = nil,
                ropeLayout: RoPELayout, rmsNormEps: Float = 1e-5) {
        self.dim = dim
        self.hiddenDim = hiddenDim
        self.layerCount = layerCount
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        let hd = headDim ?? (headCount > 0 ? dim / headCount : 0)
        self.headDim = hd
        self.vocabSize = vocabSize
        self.contextLength = contextLength
        self.ropeTheta = ropeTheta
        self.ropeDim = ropeDim ?? hd
        self.ropeLayout = ropeLayout
        self.rmsNormEps = rmsNormEps
    }

    public var queryDim: Int { headCount * headDim }
    public var kvDim: Int { kvHeadCount * headDim }

    /// Checks the numbers fit together; `source` names the file in the error.
    public func validate(source: String) throws {
        func bad(_ field: String, _ why: String) -> LlamaError { .invalidConfig(file: source, field: field, reason: why) }
        for (name, value) in [("dim", dim), ("hidden_dim", hiddenDim), ("layers", layerCount), ("heads", headCount),
                              ("kv_heads", kvHeadCount), ("head_dim", headDim), ("vocab_size", vocabSize),
                              ("context_length", contextLength)] where value <= 0 {
            throw bad(name, "must be positive, got \(value)")
        }
        if headCount % kvHeadCount != 0 {
            throw bad("kv_heads", "\(headCount) query heads cannot be shared evenly by \(kvHeadCount) key/value heads")
        }
        if ropeDim <= 0 || ropeDim > headDim || ropeDim % 2 != 0 {
            throw bad("rope_dim", "\(ropeDim) must be even and at most head_dim \(headDim)")
        }
        if !(ropeTheta > 0) { throw bad("rope_theta", "must be positive, got \(ropeTheta)") }
        if !(rmsNormEps > 0) { throw bad("rms_norm_eps", "must be positive, got \(rmsNormEps)") }
    }
}
