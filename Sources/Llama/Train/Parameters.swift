import Foundation
import LlamaKernels

/// A zero-filled, 64-byte-aligned Float32 buffer owned by a class (so views into it can be
/// passed around while it stays alive).
///
/// Buffers of a megabyte or more are anonymous memory maps: the system hands out zeroed pages
/// as they are first touched, so a buffer written only in places (LoRA training's gradient of
/// the frozen weights, where only the norm gains are written) costs only those pages.
public final class FloatBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    /// Bytes mapped, or 0 when the buffer came from the allocator.
    private let mappedBytes: Int

    public init(count: Int) {
        self.count = count
        let bytes = max(count, 1) * 4
        if bytes >= 1 << 20 {
            #if os(Linux)
            let anonymous = MAP_ANONYMOUS
            #else
            let anonymous = MAP_ANON
            #endif
            let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | anonymous, -1, 0)
            if let raw, raw != MAP_FAILED {
                mappedBytes = bytes
                pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
                return
            }
        }
        mappedBytes = 0
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        pointer = raw.initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
    }

    deinit {
        if mappedBytes > 0 { munmap(pointer, mappedBytes) } else { pointer.deallocate() }
    }

    public subscript(i: Int) -> Float {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }

    public func zero() { pointer.update(repeating: 0, count: count) }

    public func copy(from other: FloatBuffer) {
        precondition(other.count == count)
        pointer.update(from: other.pointer, count: count)
    }

    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}

/// Where one named tensor lives inside a flat parameter buffer. Names and shapes are Hugging
/// Face's (`model.layers.0.self_attn.q_proj.weight`, `[out, in]`), so gradients and exports
/// line up with transformers tensor by tensor.
public struct TensorSlot: Sendable, Equatable {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
    /// AdamW decays matrices and embeddings, not the RMSNorm gains (1-D).
    public var decayed: Bool { shape.count >= 2 }
}

/// Offsets of one layer's tensors in the flat buffer.
struct LayerSlots {
    var attentionNorm = 0, wq = 0, wk = 0, wv = 0, wo = 0, ffnNorm = 0, w1 = 0, w2 = 0, w3 = 0
}

/// The layout of a model's trainable parameters: every tensor in one flat Float32 buffer, in
/// Hugging Face order; a gradient or optimizer moment buffer has the same layout.
public struct ParameterLayout: Sendable {
    public let config: ModelConfig
    public let tiedEmbeddings: Bool
    public let slots: [TensorSlot]
    public let count: Int
    let embedding: Int
    let layers: [LayerSlots]
    let norm: Int
    /// Offset of the output matrix (the embedding's when tied).
    let output: Int
    /// Offset of the reward head (`score.weight`, [1, dim], as transformers'
    /// `LlamaForSequenceClassification` with one label has it), when there is one.
    let score: Int?
    public var hasScoreHead: Bool { score != nil }

    public init(config c: ModelConfig, tiedEmbeddings: Bool, scoreHead: Bool = false) {
        config = c
        self.tiedEmbeddings = tiedEmbeddings
        var slots: [TensorSlot] = []
        var next = 0
        func add(_ name: String, _ shape: [Int]) -> Int {
            let s = TensorSlot(name: name, shape: shape, offset: next)
            slots.append(s)
            next += s.count
            return s.offset
        }
        embedding = add("model.embed_tokens.weight", [c.vocabSize, c.dim])
        var layers: [LayerSlots] = []
        for i in 0..<c.layerCount {
            let p = "model.layers.\(i)."
            var l = LayerSlots()
            l.wq = add(p + "self_attn.q_proj.weight", [c.queryDim, c.dim])
            l.wk = add(p + "self_attn.k_proj.weight", [c.kvDim, c.dim])
            l.wv = add(p + "self_attn.v_proj.weight", [c.kvDim, c.dim])
            l.wo = add(p + "self_attn.o_proj.weight", [c.dim, c.queryDim])
            l.w1 = add(p + "mlp.gate_proj.weight", [c.hiddenDim, c.dim])
            l.w3 = add(p + "mlp.up_proj.weight", [c.hiddenDim, c.dim])
            l.w2 = add(p + "mlp.down_proj.weight", [c.dim, c.hiddenDim])
            l.attentionNorm = add(p + "input_layernorm.weight", [c.dim])
            l.ffnNorm = add(p + "post_attention_layernorm.weight", [c.dim])
            layers.append(l)
        }
        self.layers = layers
        norm = add("model.norm.weight", [c.dim])
        output = tiedEmbeddings ? embedding : add("lm_head.weight", [c.vocabSize, c.dim])
        score = scoreHead ? add("score.weight", [1, c.dim]) : nil
        self.slots = slots
        count = next
    }

    public func slot(named name: String) -> TensorSlot? { slots.first { $0.name == name } }

    /// The tensors of the embedding and of layers 0..<n: what freezing the lower n layers
    /// freezes (with tied embeddings that includes the output projection).
    public func tensorNames(belowLayer n: Int) -> Set<String> {
        guard n > 0 else { return [] }
        var names: Set<String> = ["model.embed_tokens.weight"]
        for s in slots {
            let parts = s.name.split(separator: ".")
            if parts.count > 2, parts[1] == "layers", let l = Int(parts[2]), l < n { names.insert(s.name) }
        }
        return names
    }
}

/// A model's parameters as Float32, ready to train: built from any loaded model (quantized
/// formats are dequantised) or initialised at random for pre-training.
public final class TrainableParameters: @unchecked Sendable {
    public let layout: ParameterLayout
    public let values: FloatBuffer
    public var config: ModelConfig { layout.config }

    public init(layout: ParameterLayout, values: FloatBuffer) {
        precondition(values.count == layout.count)
        self.layout = layout
        self.values = values
    }

    /// Dequantises every tensor of `weights` (any stored format or layout) to Float32.
    public convenience init(weights: Weights) {
        let layout = ParameterLayout(config: weights.config, tiedEmbeddings: weights.tiedEmbeddings)
        let values = FloatBuffer(count: layout.count)
        func matrix(_ m: Matrix, _ offset: Int) {
            for r in 0..<m.rows { m.row(r, into: values.pointer + offset + r * m.cols) }
        }
        func vector(_ v: [Float], _ offset: Int) { (values.pointer + offset).update(from: v, count: v.count) }
        matrix(weights.tokenEmbedding, layout.embedding)
        for (l, s) in zip(weights.layers, layout.layers) {
            vector(l.attentionNorm, s.attentionNorm)
            matrix(l.wq, s.wq); matrix(l.wk, s.wk); matrix(l.wv, s.wv); matrix(l.wo, s.wo)
            vector(l.ffnNorm, s.ffnNorm)
            matrix(l.w1, s.w1); matrix(l.w2, s.w2); matrix(l.w3, s.w3)
        }
        vector(weights.norm, layout.norm)
        if !weights.tiedEmbeddings { matrix(weights.output, layout.output) }
        self.init(layout: layout, values: values)
    }

    /// Random initialisation as transformers' `LlamaForCausalLM` does it: every matrix and the
    /// embedding from N(0, std²) (`initializer_range`, 0.02), RMSNorm gains 1. Deterministic by seed.
    public convenience init(config: ModelConfig, tiedEmbeddings: Bool, seed: UInt64, std: Float = 0.02) {
        let layout = ParameterLayout(config: config, tiedEmbeddings: tiedEmbeddings)
        let values = FloatBuffer(count: layout.count)
        var rng = SplitMix64(seed: seed)
        for s in layout.slots {
            let p = values.pointer + s.offset
            if s.shape.count == 1 {
                p.update(repeating: 1, count: s.count)
            } else {
                for i in 0..<s.count { p[i] = std * gaussian(&rng) }
            }
        }
        self.init(layout: layout, values: values)
    }

    /// These parameters plus a reward head (`score.weight`) drawn from N(0, std²) as
    /// transformers initialises it: the start of a reward model from a language model.
    public func addingScoreHead(seed: UInt64, std: Float = 0.02) -> TrainableParameters {
        precondition(!layout.hasScoreHead, "the parameters already have a score head")
        let l = ParameterLayout(config: config, tiedEmbeddings: layout.tiedEmbeddings, scoreHead: true)
        let v = FloatBuffer(count: l.count)
        v.pointer.update(from: values.pointer, count: layout.count)
        var rng = SplitMix64(seed: seed)
        for i in 0..<config.dim { v.pointer[l.score! + i] = std * gaussian(&rng) }
        return TrainableParameters(layout: l, values: v)
    }

    public func tensor(_ name: String) -> UnsafeMutableBufferPointer<Float>? {
        layout.slot(named: name).map { UnsafeMutableBufferPointer(start: values.pointer + $0.offset, count: $0.count) }
    }

    /// The parameters as `Weights` (Float32 matrices pointing into a copy), for generation,
    /// evaluation and export.
    public func weights() throws -> Weights {
        let copy = FloatBuffer(count: layout.count)
        copy.copy(from: values)
        let c = config
        func matrix(_ offset: Int, _ rows: Int, _ cols: Int) -> Matrix {
            Matrix(type: .f32, rows: rows, cols: cols, data: UnsafeRawPointer(copy.pointer + offset))
        }
        func vector(_ offset: Int) -> [Float] { Array(UnsafeBufferPointer(start: copy.pointer + offset, count: c.dim)) }
        let layers = layout.layers.map { s in
            LayerWeights(attentionNorm: vector(s.attentionNorm),
                         wq: matrix(s.wq, c.queryDim, c.dim), wk: matrix(s.wk, c.kvDim, c.dim),
                         wv: matrix(s.wv, c.kvDim, c.dim), wo: matrix(s.wo, c.dim, c.queryDim),
                         ffnNorm: vector(s.ffnNorm),
                         w1: matrix(s.w1, c.hiddenDim, c.dim), w2: matrix(s.w2, c.dim, c.hiddenDim),
                         w3: matrix(s.w3, c.hiddenDim, c.dim))
        }
        let embedding = matrix(layout.embedding, c.vocabSize, c.dim)
        return try Weights(config: c, tokenEmbedding: embedding, layers: layers, norm: vector(layout.norm),
                           output: layout.tiedEmbeddings ? nil : matrix(layout.output, c.vocabSize, c.dim),
                           storage: [copy], source: "trained parameters")
    }
}

/// A standard normal sample (Box-Muller), from 53-bit uniforms.
func gaussian(_ rng: inout SplitMix64) -> Float {
    let u1 = max(Double(rng.next() >> 11) / Double(1 << 53), .leastNonzeroMagnitude)
    let u2 = Double(rng.next() >> 11) / Double(1 << 53)
    return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
}
