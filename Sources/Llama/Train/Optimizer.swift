import Foundation
import LlamaKernels

/// AdamW hyper-parameters; the defaults are the LLaMA papers' (SPEC.md §3).
public struct AdamWOptions: Sendable, Equatable, Codable {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    public var eps: Float = 1e-5
    /// Applied to matrices and embeddings only (`TensorSlot.decayed`); RMSNorm gains are not decayed.
    public var weightDecay: Float = 0.1
    /// Global gradient-norm clipping threshold (0 turns clipping off).
    public var clipNorm: Float = 1.0

    public init() {}
}

/// AdamW [Loshchilov & Hutter 2019] exactly as `torch.optim.AdamW` computes it (decoupled decay
/// `p ← p·(1 − lr·wd)`, bias-corrected moments, eps added to √v̂), with the moments in Float32.
public final class AdamW: @unchecked Sendable {
    public let options: AdamWOptions
    /// The tensors it updates, in one flat buffer.
    public let slots: [TensorSlot]
    /// First and second moments, in the parameters' layout.
    public let m: FloatBuffer
    public let v: FloatBuffer
    /// Optimizer steps taken.
    public var step: Int
    /// Tensors left as they are (frozen layers): no update, no weight decay.
    public var frozen: Set<String> = []

    public convenience init(layout: ParameterLayout, options: AdamWOptions = AdamWOptions()) {
        self.init(slots: layout.slots, count: layout.count, options: options)
    }

    /// An optimizer for any flat buffer of tensors (LoRA adapters).
    public init(slots: [TensorSlot], count: Int, options: AdamWOptions = AdamWOptions()) {
        self.options = options
        self.slots = slots
        m = FloatBuffer(count: count)
        v = FloatBuffer(count: count)
        step = 0
    }

    /// The gradients' global L2 norm over the tensors it trains; when it exceeds `clipNorm`,
    /// scales them down to it as `torch.nn.utils.clip_grad_norm_` does (factor
    /// `clip / (norm + 1e-6)`). Returns the norm before clipping.
    @discardableResult
    public func clip(_ gradients: FloatBuffer) -> Float {
        AdamW.clip([(self, gradients)], maxNorm: options.clipNorm)
    }

    /// Clipping over several optimizers' gradients together (LoRA adapters and a reward head):
    /// one global norm, as one `clip_grad_norm_` over all trained parameters.
    @discardableResult
    public static func clip(_ groups: [(AdamW, FloatBuffer)], maxNorm: Float) -> Float {
        var ss = 0.0
        for (optimizer, gradients) in groups {
            let g = gradients.pointer
            for slot in optimizer.slots where !optimizer.frozen.contains(slot.name) {
                for i in slot.offset..<(slot.offset + slot.count) { ss += Double(g[i]) * Double(g[i]) }
            }
        }
        let norm = Float(ss.squareRoot())
        if maxNorm > 0 {
            let factor = maxNorm / (norm + 1e-6)
            if factor < 1 {
                for (_, gradients) in groups { for i in 0..<gradients.count { gradients.pointer[i] *= factor } }
            }
        }
        return norm
    }

    /// One update of `parameters` with `gradients` at learning rate `lr`.
    public func update(_ parameters: FloatBuffer, gradients: FloatBuffer, lr: Float) {
        step += 1
        let o = options
        let bias1 = 1 - powf(o.beta1, Float(step))
        let bias2Sqrt = (1 - powf(o.beta2, Float(step))).squareRoot()
        let stepSize = lr / bias1
        let p = parameters.pointer, g = gradients.pointer, m = m.pointer, v = v.pointer
        for slot in slots where !frozen.contains(slot.name) {
            let decay: Float = slot.decayed ? 1 - lr * o.weightDecay : 1
            for i in slot.offset..<(slot.offset + slot.count) {
                p[i] *= decay
                m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i]
                v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i]
                p[i] -= stepSize * m[i] / (v[i].squareRoot() / bias2Sqrt + o.eps)
            }
        }
    }
}

/// Learning rate by optimizer step: linear warm-up from 0, then cosine decay to
/// `minRatio × peak` at `totalSteps` (SPEC.md §3: 10% of the peak). The same numbers as
/// transformers' `get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate:)`; `constant` keeps
/// the peak after warm-up (PPO's schedule).
public struct LRSchedule: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable { case cosine, constant }
    public var peak: Float
    public var warmupSteps: Int
    public var totalSteps: Int
    public var minRatio: Float = 0.1
    public var kind: Kind = .cosine

    public init(peak: Float, warmupSteps: Int, totalSteps: Int, minRatio: Float = 0.1, kind: Kind = .cosine) {
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.minRatio = minRatio
        self.kind = kind
    }

    /// The rate for the update after `step` updates have been made.
    public func lr(step: Int) -> Float {
        if step < warmupSteps { return peak * Float(step) / Float(max(1, warmupSteps)) }
        if kind == .constant { return peak }
        let progress = min(1, Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps)))
        let cosine = 0.5 * (1 + cos(Double.pi * progress))
        return peak * Float(cosine * Double(1 - minRatio) + Double(minRatio))
    }
}
