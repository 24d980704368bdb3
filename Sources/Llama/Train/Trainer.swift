import Foundation
import LlamaKernels

/// How a run trains: batch shape, optimizer, schedule, evaluation. Saved in checkpoints.
public struct TrainingOptions: Codable, Sendable, Equatable {
    /// Sequences per micro-batch and tokens per sequence.
    public var batchSize = 8
    public var sequenceLength = 256
    /// Micro-batches whose gradients add up to one optimizer step (the token batch is
    /// batchSize × sequenceLength × accumulationSteps).
    public var accumulationSteps = 1
    /// Optimizer steps in the whole run (the schedule's length).
    public var steps = 1000
    public var schedule = LRSchedule(peak: 1e-3, warmupSteps: 100, totalSteps: 1000)
    public var adamw = AdamWOptions()
    /// Validation loss every this many steps (0: only at the end).
    public var evalEvery = 100
    /// Fraction of each source's windows held out for validation.
    public var validationFraction = 0.01
    public var seed: UInt64 = 1
    /// Train LoRA adapters instead of the weights (absent in checkpoints from before LoRA).
    public var lora: LoRAConfig?
    /// Freeze the embedding and this many lower layers (absent in older checkpoints: none).
    public var frozenLayers: Int?

    public init() {}

    public var tokensPerStep: Int { batchSize * sequenceLength * accumulationSteps }
}

/// What one optimizer step did.
public struct StepReport: Sendable {
    public let step: Int
    public let loss: Double
    public let lr: Float
    public let gradNorm: Float
    public let tokens: Int
    public let seconds: Double
    public var tokensPerSecond: Double { Double(tokens) / max(seconds, 1e-9) }
}

/// A training run: parameters, optimizer state and data position, stepped one optimizer update
/// at a time, saved and resumed exactly (same losses after a resume as without the break).
public final class Trainer: @unchecked Sendable {
    public let parameters: TrainableParameters
    public let optimizer: AdamW
    public let data: DataMixture
    public let options: TrainingOptions
    public let model: BackpropModel
    private let gradients: FloatBuffer
    /// With `options.lora`: the adapters being trained (the weights stay as they are) and their optimizer.
    public let lora: LoRAAdapters?
    public let loraOptimizer: AdamW?
    public var step: Int { (loraOptimizer ?? optimizer).step }

    public init(parameters: TrainableParameters, data: DataMixture, options: TrainingOptions, pool: ThreadPool = .shared) throws {
        guard options.sequenceLength <= parameters.config.contextLength else {
            throw LlamaError.invalidArgument("sequence length \(options.sequenceLength) is longer than the model's context of \(parameters.config.contextLength)")
        }
        guard options.batchSize > 0, options.sequenceLength > 0, options.accumulationSteps > 0, options.steps > 0 else {
            throw LlamaError.invalidArgument("batch size, sequence length, accumulation steps and steps must be positive")
        }
        guard data.sequenceLength == options.sequenceLength else {
            throw LlamaError.invalidArgument("the data is cut into windows of \(data.sequenceLength) tokens, training uses \(options.sequenceLength)")
        }
        self.parameters = parameters
        self.data = data
        self.options = options
        guard (0...parameters.config.layerCount).contains(options.frozenLayers ?? 0) else {
            throw LlamaError.invalidArgument("cannot freeze \(options.frozenLayers!) layers of \(parameters.config.layerCount)")
        }
        optimizer = AdamW(layout: parameters.layout, options: options.adamw)
        optimizer.frozen = parameters.layout.tensorNames(belowLayer: options.frozenLayers ?? 0)
        model = BackpropModel(parameters: parameters, batchSize: options.batchSize, sequenceLength: options.sequenceLength, pool: pool)
        model.frozenLayers = options.frozenLayers ?? 0
        gradients = FloatBuffer(count: parameters.layout.count)
        if let config = options.lora {
            let adapters = try LoRAAdapters(config: config, model: parameters.config, seed: options.seed)
            model.attach(adapters)
            lora = adapters
            loraOptimizer = AdamW(slots: adapters.slots, count: adapters.count, options: options.adamw)
        } else {
            lora = nil
            loraOptimizer = nil
        }
    }

    /// The trained model: the parameters, or for a LoRA run a copy with the adapters merged in.
    public func trainedParameters() throws -> TrainableParameters {
        guard let lora else { return parameters }
        return try lora.merged(with: parameters)
    }

    /// One optimizer step: `accumulationSteps` micro-batches, clipping, AdamW at the scheduled rate.
    public func trainStep() throws -> StepReport {
        let start = DispatchTime.now().uptimeNanoseconds
        let batches = (0..<options.accumulationSteps).map { _ in data.nextBatch(rows: options.batchSize) }
        let counted = batches.reduce(0) { $0 + $1.targets.filter { $0 >= 0 }.count }
        gradients.zero()
        model.loraGradients?.zero()
        // LoRA dropout masks follow from the seed and the step, so a resumed run draws the same ones.
        model.loraPass = options.seed &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(step) << 20
        var lossSum = 0.0
        for b in batches {
            lossSum += try model.accumulateGradients(tokens: b.tokens, targets: b.targets,
                                                     gradScale: 1 / Float(max(counted, 1)), into: gradients).lossSum
        }
        let norm: Float, lr = options.schedule.lr(step: step)
        if let lora, let loraOptimizer, let loraGradients = model.loraGradients {
            norm = loraOptimizer.clip(loraGradients)
            loraOptimizer.update(lora.values, gradients: loraGradients, lr: lr)
        } else {
            norm = optimizer.clip(gradients)
            optimizer.update(parameters.values, gradients: gradients, lr: lr)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return StepReport(step: step, loss: lossSum / Double(max(counted, 1)), lr: lr, gradNorm: norm,
                          tokens: batches.count * options.batchSize * options.sequenceLength, seconds: seconds)
    }

    /// Mean loss over every held-out window.
    public func validationLoss() throws -> Double {
        var sum = 0.0, count = 0
        for b in data.validationBatches(rows: options.batchSize) {
            let r = try model.loss(tokens: b.tokens, targets: b.targets)
            sum += r.lossSum
            count += r.count
        }
        return sum / Double(max(count, 1))
    }

    // MARK: Checkpoints

    /// The header of a checkpoint file.
    struct CheckpointHeader: Codable {
        var format = 1
        var model: ModelShape
        var tiedEmbeddings: Bool
        var options: TrainingOptions
        var step: Int
        var data: DataMixture.State
        var parameterCount: Int
        var sources: [String]
        /// LoRA runs store the adapters and their moments instead of the weights' moments.
        var loraCount: Int?
    }

    static let checkpointMagic = "LSCKPT01"

    /// Writes parameters, AdamW moments, step and data position to `path` atomically
    /// (temporary file, fsync, rename): an interrupted save leaves the previous checkpoint intact.
    public func save(to path: String) throws {
        let header = CheckpointHeader(model: ModelShape(parameters.config), tiedEmbeddings: parameters.layout.tiedEmbeddings,
                                      options: options, step: step, data: data.state,
                                      parameterCount: parameters.layout.count, sources: data.sources.map(\.name),
                                      loraCount: lora?.count)
        let buffers = if let lora, let loraOptimizer { [parameters.values, lora.values, loraOptimizer.m, loraOptimizer.v] }
            else { [parameters.values, optimizer.m, optimizer.v] }
        try CheckpointFile.write(path, magic: Self.checkpointMagic, header: header, buffers: buffers)
    }

    /// A checkpoint read back: the model it trains and where the run was.
    public struct Checkpoint {
        public let parameters: TrainableParameters
        public let options: TrainingOptions
        public let step: Int
        let header: CheckpointHeader
        let m: FloatBuffer
        let v: FloatBuffer
        /// A LoRA run's adapters (their moments are then `m` and `v`).
        let adapters: FloatBuffer?
    }

    public static func loadCheckpoint(_ path: String) throws -> Checkpoint {
        let (file, header, dataOffset) = try CheckpointFile.read(path, magic: checkpointMagic, what: "checkpoint", as: CheckpointHeader.self)
        let config = header.model.config
        try config.validate(source: path)
        let layout = ParameterLayout(config: config, tiedEmbeddings: header.tiedEmbeddings)
        guard layout.count == header.parameterCount else {
            throw LlamaError.corrupt(file: path, offset: 16, reason: "\(header.parameterCount) parameters recorded, the model shape has \(layout.count)")
        }
        let bytes = layout.count * 4
        guard (header.loraCount != nil) == (header.options.lora != nil), (header.loraCount ?? 0) >= 0 else {
            throw LlamaError.corrupt(file: path, offset: 16, reason: "the LoRA settings and the stored adapters disagree")
        }
        let extra = header.loraCount.map { $0 * 4 } ?? bytes
        let needed = bytes + (header.loraCount == nil ? 2 : 3) * extra
        guard file.size == dataOffset + needed else {
            throw LlamaError.truncated(file: path, offset: dataOffset, needed: needed, what: "parameters and optimizer moments")
        }
        func buffer(_ offset: Int, _ byteCount: Int) -> FloatBuffer {
            let b = FloatBuffer(count: byteCount / 4)
            UnsafeMutableRawPointer(b.pointer).copyMemory(from: file.base + dataOffset + offset, byteCount: byteCount)
            return b
        }
        let params = TrainableParameters(layout: layout, values: buffer(0, bytes))
        if header.loraCount != nil {
            return Checkpoint(parameters: params, options: header.options, step: header.step, header: header,
                              m: buffer(bytes + extra, extra), v: buffer(bytes + 2 * extra, extra), adapters: buffer(bytes, extra))
        }
        return Checkpoint(parameters: params, options: header.options, step: header.step, header: header,
                          m: buffer(bytes, bytes), v: buffer(2 * bytes, bytes), adapters: nil)
    }

    /// Continues a checkpointed run with `data` (the same sources, in the same order).
    public convenience init(resuming checkpoint: Checkpoint, data: DataMixture, pool: ThreadPool = .shared) throws {
        let names = data.sources.map(\.name)
        guard names == checkpoint.header.sources else {
            throw LlamaError.invalidArgument("the checkpoint was trained on \(checkpoint.header.sources.joined(separator: ", ")); this run names \(names.joined(separator: ", "))")
        }
        try self.init(parameters: checkpoint.parameters, data: data, options: checkpoint.options, pool: pool)
        let resumed = loraOptimizer ?? optimizer
        if let lora, let adapters = checkpoint.adapters {
            guard adapters.count == lora.count else {
                throw LlamaError.invalidArgument("the checkpoint's adapters have \(adapters.count) values, its LoRA settings make \(lora.count)")
            }
            lora.values.copy(from: adapters)
        }
        resumed.m.copy(from: checkpoint.m)
        resumed.v.copy(from: checkpoint.v)
        resumed.step = checkpoint.step
        try data.restore(checkpoint.header.data)
    }
}

/// `ModelConfig` as it is written into a checkpoint.
struct ModelShape: Codable, Equatable {
    var dim, hiddenDim, layerCount, headCount, kvHeadCount, headDim, vocabSize, contextLength, ropeDim: Int
    var ropeTheta, rmsNormEps: Float
    var ropeLayout: String

    init(_ c: ModelConfig) {
        dim = c.dim; hiddenDim = c.hiddenDim; layerCount = c.layerCount; headCount = c.headCount
        kvHeadCount = c.kvHeadCount; headDim = c.headDim; vocabSize = c.vocabSize; contextLength = c.contextLength
        ropeDim = c.ropeDim; ropeTheta = c.ropeTheta; rmsNormEps = c.rmsNormEps; ropeLayout = c.ropeLayout.rawValue
    }

    var config: ModelConfig {
        ModelConfig(dim: dim, hiddenDim: hiddenDim, layerCount: layerCount, headCount: headCount, kvHeadCount: kvHeadCount,
                    headDim: headDim, vocabSize: vocabSize, contextLength: contextLength, ropeTheta: ropeTheta, ropeDim: ropeDim,
                    ropeLayout: RoPELayout(rawValue: ropeLayout) ?? .halves, rmsNormEps: rmsNormEps)
    }
}
