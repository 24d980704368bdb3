import Foundation
import LlamaKernels

/// Rotary position embedding [Su et al. 2021; LLaMA §2.2] for one position: the cos and sin
/// of `pos * theta^(-2i/ropeDim)` for each pair `i`, in float32 like the references.
struct RoPETable {
    let cos: [Float]
    let sin: [Float]

    init(position: Int, ropeDim: Int, theta: Float) {
        var c = [Float](repeating: 0, count: ropeDim / 2)
        var s = c
        for i in 0..<(ropeDim / 2) {
            // transformers: inv_freq = 1 / theta ** (arange(0, d, 2).float() / d), in float32.
            let invFreq = Float(1.0) / powf(theta, Float(2 * i) / Float(ropeDim))
            let angle = Float(position) * invFreq
            c[i] = Foundation.cos(angle)
            s[i] = Foundation.sin(angle)
        }
        cos = c
        sin = s
    }

    /// Rotates one head's channels in place.
    func apply(_ head: UnsafeMutablePointer<Float>, headDim: Int, layout: RoPELayout) {
        let half = cos.count
        switch layout {
        case .interleaved:
            for i in 0..<half {
                let a = head[2 * i], b = head[2 * i + 1]
                head[2 * i] = a * cos[i] - b * sin[i]
                head[2 * i + 1] = a * sin[i] + b * cos[i]
            }
        case .halves:
            // rotate_half pairs channel i with i + ropeDim/2.
            for i in 0..<half {
                let a = head[i], b = head[i + half]
                head[i] = a * cos[i] - b * sin[i]
                head[i + half] = b * cos[i] + a * sin[i]
            }
        }
    }
}

/// A model ready to run: its weights, a key/value cache and scratch buffers.
/// One sequence at a time; `forward` is called once per token, in order of position.
public final class Transformer: @unchecked Sendable {
    public let weights: Weights
    public var config: ModelConfig { weights.config }
    /// Positions the key/value cache holds (at most the model's context length).
    public let contextLength: Int
    public let pool: ThreadPool

    // Activations for the current token.
    private var x: [Float]        // (dim) residual stream
    private var xb: [Float]       // (dim) normalised input of a sub-layer
    private var q: [Float]        // (headCount * headDim)
    private var attnOut: [Float]  // (headCount * headDim)
    private var hb: [Float]       // (hiddenDim) gate, then silu(gate) * up
    private var hb2: [Float]      // (hiddenDim) up
    private var scores: [Float]   // (headCount, contextLength) one attention row per head
    /// (vocabSize) logits of the token after the last one run. Read it rather than keeping
    /// `forward`'s result across calls: a kept copy makes the next call copy 4 × vocab bytes.
    public private(set) var logits: [Float]
    // Key/value cache, one per layer: (contextLength, kvHeadCount * headDim).
    private var keyCache: [[Float]]
    private var valueCache: [[Float]]

    public init(weights: Weights, contextLength: Int? = nil, pool: ThreadPool = .shared) {
        let c = weights.config
        self.weights = weights
        self.contextLength = min(max(1, contextLength ?? c.contextLength), c.contextLength)
        self.pool = pool
        x = .init(repeating: 0, count: c.dim)
        xb = x
        q = .init(repeating: 0, count: c.queryDim)
        attnOut = q
        hb = .init(repeating: 0, count: c.hiddenDim)
        hb2 = hb
        scores = .init(repeating: 0, count: c.headCount * self.contextLength)
        logits = .init(repeating: 0, count: c.vocabSize)
        keyCache = .init(repeating: .init(repeating: 0, count: self.contextLength * c.kvDim), count: c.layerCount)
        valueCache = keyCache
    }

    /// Runs one token at `position` (0-based; earlier positions must already be in the cache)
    /// and returns the logits of the next token.
    @discardableResult
    public func forward(token: Int, position: Int) throws -> [Float] {
        let c = config
        guard position >= 0 && position < contextLength else {
            throw LlamaError.contextFull(position: position, contextLength: contextLength)
        }
        guard token >= 0 && token < c.vocabSize else {
            throw LlamaError.invalidToken(token, vocabSize: c.vocabSize)
        }
        let rope = RoPETable(position: position, ropeDim: c.ropeDim, theta: c.ropeTheta)
        x.withUnsafeMutableBufferPointer { weights.tokenEmbedding.row(token, into: $0.baseAddress!) }

        for l in 0..<c.layerCount {
            let layer = weights.layers[l]
            // Attention sub-layer, pre-normalised: x += Wo · attention(RMSNorm(x)).
            rmsnorm(&xb, x, layer.attentionNorm, c.dim, eps: c.rmsNormEps)
            let kvOffset = position * c.kvDim
            keyCache[l].withUnsafeMutableBufferPointer { k in
                valueCache[l].withUnsafeMutableBufferPointer { v in
                    q.withUnsafeMutableBufferPointer { qp in
                        matvec([(layer.wq, qp.baseAddress!), (layer.wk, k.baseAddress! + kvOffset),
                                (layer.wv, v.baseAddress! + kvOffset)], xb, pool: pool)
                        for h in 0..<c.headCount { rope.apply(qp.baseAddress! + h * c.headDim, headDim: c.headDim, layout: c.ropeLayout) }
                    }
                    for h in 0..<c.kvHeadCount {
                        rope.apply(k.baseAddress! + kvOffset + h * c.headDim, headDim: c.headDim, layout: c.ropeLayout)
                    }
                    attention(keys: k.baseAddress!, values: v.baseAddress!, length: position + 1)
                }
            }
            matvec(layer.wo, attnOut, &xb, pool: pool)
            for i in 0..<c.dim { x[i] += xb[i] }

            // Feed-forward sub-layer: x += W2 · (silu(W1 · RMSNorm(x)) * (W3 · RMSNorm(x))).
            rmsnorm(&xb, x, layer.ffnNorm, c.dim, eps: c.rmsNormEps)
            hb.withUnsafeMutableBufferPointer { gate in
                hb2.withUnsafeMutableBufferPointer { up in
                    matvec([(layer.w1, gate.baseAddress!), (layer.w3, up.baseAddress!)], xb, pool: pool)
                }
            }
            swiglu(&hb, hb2, c.hiddenDim)
            matvec(layer.w2, hb, &xb, pool: pool)
            for i in 0..<c.dim { x[i] += xb[i] }
        }
        rmsnorm(&xb, x, weights.norm, c.dim, eps: c.rmsNormEps)
        matvec(weights.output, xb, &logits, pool: pool)
        return logits
    }

    /// Causal grouped-query attention of the current query `q` against cached positions
    /// `0..<length`, written to `attnOut`. Query head `h` reads key/value head `h / (H/G)`.
    private func attention(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>, length: Int) {
        let c = config
        let group = c.headCount / c.kvHeadCount
        let scale = 1 / Float(c.headDim).squareRoot()
        let ctx = contextLength
        q.withUnsafeMutableBufferPointer { qb in
            attnOut.withUnsafeMutableBufferPointer { ob in
                scores.withUnsafeMutableBufferPointer { sb in
                    let qp = SendablePointer(qb.baseAddress!), op = SendablePointer(ob.baseAddress!)
                    let sp = SendablePointer(sb.baseAddress!)
                    let kp = SendablePointer(keys), vp = SendablePointer(values)
                    let work = { (h: Int) in
                        let query = qp.pointer + h * c.headDim
                        let row = sp.pointer + h * ctx
                        let kvHead = (h / group) * c.headDim
                        for t in 0..<length {
                            row[t] = dot(query, kp.pointer + t * c.kvDim + kvHead, c.headDim) * scale
                        }
                        softmax(row, length)
                        let out = op.pointer + h * c.headDim
                        out.initialize(repeating: 0, count: c.headDim)
                        for t in 0..<length {
                            axpy(out, row[t], vp.pointer + t * c.kvDim + kvHead, c.headDim)
                        }
                    }
                    if length * c.headCount * c.headDim < 64 * 1024 {
                        for h in 0..<c.headCount { work(h) }
                    } else {
                        pool.parallelFor(c.headCount, work)
                    }
                }
            }
        }
    }
}
