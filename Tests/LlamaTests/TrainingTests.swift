import Foundation
import XCTest
import Llama

/// The trainer against PyTorch (Tests/Fixtures/training, made by Tools/make_training_fixtures.py
/// with transformers' LlamaForCausalLM and `loss.backward()`).
final class TrainingTests: XCTestCase {
    func testBuffersAreZeroedAlignedAndWritableAtEverySize() {
        // Small buffers come from the allocator, a megabyte or more from an anonymous map.
        for count in [1, 1000, 1 << 18, (1 << 18) + 7] {
            let b = FloatBuffer(count: count)
            XCTAssertEqual(Int(bitPattern: b.pointer) % 64, 0, "\(count)")
            XCTAssertTrue(b.array.allSatisfy { $0 == 0 }, "\(count)")
            b[count - 1] = 3
            let c = FloatBuffer(count: count)
            c.copy(from: b)
            XCTAssertEqual(c[count - 1], 3)
            b.zero()
            XCTAssertEqual(b[count - 1], 0)
        }
    }

    struct Tiny: Decodable {
        struct AdamW: Decodable {
            let lr, beta1, beta2, eps, weight_decay, clip: Double
            let steps: Int
            let grad_norms: [Double]
            let parameters: [String: String]
        }
        struct Schedule: Decodable {
            let peak: Double, warmup: Int, total: Int, min_ratio: Double
            let lr: [[Double]]
        }
        struct Config: Decodable {
            let dim, hidden_dim, layers, heads, kv_heads, vocab_size, context_length: Int
            let rms_norm_eps, rope_theta: Float
        }
        let config: Config
        let initial: [String: String]
        let inputs: [[Int]]
        let targets: [[Int]]
        let loss: Double
        let gradients: [String: String]
        let adamw: AdamW
        let schedule: Schedule
    }

    struct SharedRef: Decodable {
        struct Tensor: Decodable {
            let name: String
            let shape: [Int]
            let l2: Double
            let samples: [[Double]]
        }
        let model: String
        let inputs: [[Int]]
        let targets: [[Int]]
        let loss: Double
        let tensors: [Tensor]
    }

    static func floats(_ base64: String) -> [Float] {
        let data = Data(base64Encoded: base64)!
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    static func tiny() throws -> (Tiny, TrainableParameters) {
        let dir = Fixtures.root + "/training"
        let fixture = try JSONDecoder().decode(Tiny.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/tiny-gqa.json")))
        // transformers' initial parameters, in its rotate-half q/k layout.
        let c = fixture.config
        let config = ModelConfig(dim: c.dim, hiddenDim: c.hidden_dim, layerCount: c.layers, headCount: c.heads,
                                 kvHeadCount: c.kv_heads, vocabSize: c.vocab_size, contextLength: c.context_length,
                                 ropeTheta: c.rope_theta, ropeLayout: .halves, rmsNormEps: c.rms_norm_eps)
        let layout = ParameterLayout(config: config, tiedEmbeddings: true)
        let values = FloatBuffer(count: layout.count)
        XCTAssertEqual(Set(fixture.initial.keys), Set(layout.slots.map(\.name)))
        for slot in layout.slots {
            let v = floats(fixture.initial[slot.name]!)
            XCTAssertEqual(v.count, slot.count, slot.name)
            (values.pointer + slot.offset).update(from: v, count: slot.count)
        }
        return (fixture, TrainableParameters(layout: layout, values: values))
    }

    /// HF's ignore index is -100; ours is -1.
    static func targets(_ t: [[Int]]) -> [Int] { t.flatMap { $0 }.map { $0 < 0 ? -1 : $0 } }

    /// The mean loss over counted targets and its gradient, as `F.cross_entropy` + `backward()`
    /// compute them for a batch given PyTorch's way (rows of ids, -100 ignored).
    static func meanLossAndGradients(_ params: TrainableParameters, inputs: [[Int]], targets hfTargets: [[Int]],
                                     into grads: FloatBuffer? = nil) throws -> (loss: Double, count: Int, gradients: FloatBuffer) {
        let model = BackpropModel(parameters: params, batchSize: inputs.count, sequenceLength: inputs[0].count)
        let grads = grads ?? FloatBuffer(count: params.layout.count)
        let targets = Self.targets(hfTargets)
        let count = targets.filter { $0 >= 0 }.count
        let (sum, counted) = try model.accumulateGradients(tokens: inputs.flatMap { $0 }, targets: targets,
                                                           gradScale: 1 / Float(count), into: grads)
        XCTAssertEqual(counted, count)
        return (sum / Double(counted), counted, grads)
    }

    /// Loss and every parameter's gradient (GQA, tied embeddings, masked targets) agree with
    /// PyTorch's to 1e-4 of each tensor's largest gradient.
    func testGradientsMatchPyTorch() throws {
        let (fixture, params) = try Self.tiny()
        let (loss, _, grads) = try Self.meanLossAndGradients(params, inputs: fixture.inputs, targets: fixture.targets)
        XCTAssertEqual(loss, fixture.loss, accuracy: 1e-5 * fixture.loss)
        XCTAssertEqual(Set(fixture.gradients.keys), Set(params.layout.slots.map(\.name)))
        for slot in params.layout.slots {
            let expected = Self.floats(fixture.gradients[slot.name]!)
            XCTAssertEqual(expected.count, slot.count, slot.name)
            let scale = expected.map { abs($0) }.max()!
            var worst: Float = 0
            for i in 0..<slot.count { worst = max(worst, abs(grads[slot.offset + i] - expected[i])) }
            XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "\(slot.name): largest difference \(worst), largest gradient \(scale)")
        }
    }

    /// The same for the shared reference models (MHA with an untied output; GQA 4:1 with tied
    /// embeddings and a 32,000-token vocabulary): loss, each tensor's gradient norm, and 64
    /// sampled entries of each tensor (random ones and the largest).
    func testGradientsOfReferenceModelsMatchPyTorch() throws {
        let refs = try JSONDecoder().decode([SharedRef].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/training/shared-refs.json")))
        for ref in refs {
            let (weights, _) = try HFDirectory.loadWeights(directory: try SharedData.path("reference/\(ref.model)/hf"))
            let params = TrainableParameters(weights: weights)
            let (loss, _, grads) = try Self.meanLossAndGradients(params, inputs: ref.inputs, targets: ref.targets)
            XCTAssertEqual(loss, ref.loss, accuracy: 1e-5 * ref.loss, ref.model)
            XCTAssertEqual(ref.tensors.count, params.layout.slots.count, ref.model)
            for t in ref.tensors {
                let slot = try XCTUnwrap(params.layout.slot(named: t.name), "\(ref.model): \(t.name)")
                XCTAssertEqual(slot.shape, t.shape)
                var l2 = 0.0
                for i in 0..<slot.count { l2 += Double(grads[slot.offset + i]) * Double(grads[slot.offset + i]) }
                XCTAssertEqual(l2.squareRoot(), t.l2, accuracy: 1e-4 * t.l2, "\(ref.model) \(t.name) norm")
                let largest = t.samples.map { abs($0[1]) }.max()!
                for s in t.samples {
                    let found = Double(grads[slot.offset + Int(s[0])])
                    XCTAssertEqual(found, s[1], accuracy: 1e-4 * largest, "\(ref.model) \(t.name)[\(Int(s[0]))]")
                }
            }
        }
    }

    /// Three AdamW steps with global-norm clipping (gradients recomputed after each) leave the
    /// parameters where `torch.optim.AdamW` + `clip_grad_norm_` leave them.
    func testAdamWStepsMatchPyTorch() throws {
        let (fixture, params) = try Self.tiny()
        let a = fixture.adamw
        var options = AdamWOptions()
        options.beta1 = Float(a.beta1); options.beta2 = Float(a.beta2); options.eps = Float(a.eps)
        options.weightDecay = Float(a.weight_decay); options.clipNorm = Float(a.clip)
        let optimizer = AdamW(layout: params.layout, options: options)
        let grads = FloatBuffer(count: params.layout.count)
        for step in 0..<a.steps {
            grads.zero()
            _ = try Self.meanLossAndGradients(params, inputs: fixture.inputs, targets: fixture.targets, into: grads)
            let norm = optimizer.clip(grads)
            XCTAssertEqual(Double(norm), a.grad_norms[step], accuracy: 1e-4 * a.grad_norms[step], "step \(step)")
            optimizer.update(params.values, gradients: grads, lr: Float(a.lr))
        }
        for slot in params.layout.slots {
            let expected = Self.floats(a.parameters[slot.name]!)
            var worst: Float = 0
            for i in 0..<slot.count { worst = max(worst, abs(params.values[slot.offset + i] - expected[i])) }
            XCTAssertLessThanOrEqual(worst, 1e-4, "\(slot.name) after \(a.steps) steps")
        }
    }

    /// Warm-up and cosine decay to 10% agree with transformers' scheduler at chosen steps.
    func testScheduleMatchesTransformers() throws {
        let (fixture, _) = try Self.tiny()
        let s = fixture.schedule
        let schedule = LRSchedule(peak: Float(s.peak), warmupSteps: s.warmup, totalSteps: s.total, minRatio: Float(s.min_ratio))
        for pair in s.lr {
            XCTAssertEqual(Double(schedule.lr(step: Int(pair[0]))), pair[1], accuracy: 1e-6 * s.peak, "step \(Int(pair[0]))")
        }
    }

    // MARK: Runs, checkpoints and bad input

    static func tinyRun(steps: Int = 6, accumulation: Int = 2, lora: LoRAConfig? = nil, peak: Float = 1e-2,
                        frozen: Int? = nil) throws -> (Trainer, DataMixture) {
        let config = ModelConfig(dim: 16, hiddenDim: 32, layerCount: 2, headCount: 4, kvHeadCount: 2, vocabSize: 40,
                                 contextLength: 16, ropeLayout: .halves)
        var rng = SplitMix64(seed: 5)
        let a = (0..<600).map { _ in Int(rng.next() % 20) }
        let b = (0..<300).map { _ in 20 + Int(rng.next() % 20) }
        let data = try DataMixture(sources: [.init(name: "a", weight: 2, tokens: a), .init(name: "b", weight: 1, tokens: b)],
                                   sequenceLength: 8, validationFraction: 0.1, seed: 3)
        var options = TrainingOptions()
        options.batchSize = 3
        options.sequenceLength = 8
        options.accumulationSteps = accumulation
        options.steps = steps
        options.schedule = LRSchedule(peak: peak, warmupSteps: 2, totalSteps: steps)
        options.lora = lora
        options.frozenLayers = frozen
        let params = TrainableParameters(config: config, tiedEmbeddings: true, seed: 9)
        return (try Trainer(parameters: params, data: data, options: options), data)
    }

    /// Training learns (loss falls on data with structure), and a run saved halfway and resumed
    /// prints exactly the losses of the uninterrupted run: parameters, moments, step and data
    /// position all come back.
    func testResumeGivesTheSameLossesAsAnUninterruptedRun() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("llama-swift-train-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (straight, _) = try Self.tinyRun(steps: 30)
        var losses: [Double] = []
        for _ in 0..<30 { losses.append(try straight.trainStep().loss) }
        XCTAssertLessThan(losses.suffix(5).reduce(0, +) / 5, losses.prefix(5).reduce(0, +) / 5 - 0.3, "loss does not fall: \(losses)")

        let (first, _) = try Self.tinyRun(steps: 30)
        for _ in 0..<13 { _ = try first.trainStep() }
        try first.save(to: dir + "/c.lsckpt")
        let (_, freshData) = try Self.tinyRun(steps: 30)
        let resumed = try Trainer(resuming: try Trainer.loadCheckpoint(dir + "/c.lsckpt"), data: freshData)
        XCTAssertEqual(resumed.step, 13)
        for s in 13..<30 { XCTAssertEqual(try resumed.trainStep().loss, losses[s], "step \(s + 1)") }
    }

    /// Frozen lower layers stay as they were through a run; the layers above train.
    func testFrozenLayersStayFrozen() throws {
        let (trainer, _) = try Self.tinyRun(steps: 4, frozen: 1)
        let before = trainer.parameters.values.array
        for _ in 0..<4 { _ = try trainer.trainStep() }
        let frozen = trainer.parameters.layout.tensorNames(belowLayer: 1)
        for slot in trainer.parameters.layout.slots {
            let changed = (slot.offset..<(slot.offset + slot.count)).contains { trainer.parameters.values[$0] != before[$0] }
            XCTAssertEqual(changed, !frozen.contains(slot.name), slot.name)
        }
        XCTAssertThrowsError(try Self.tinyRun(frozen: 3))
    }

    func testBadCheckpointsAndDataGiveClearErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("llama-swift-bad-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (trainer, data) = try Self.tinyRun()
        let path = dir + "/c.lsckpt"
        try trainer.save(to: path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        // Truncated.
        try bytes.prefix(bytes.count - 100).write(to: URL(fileURLWithPath: dir + "/short.lsckpt"))
        XCTAssertThrowsError(try Trainer.loadCheckpoint(dir + "/short.lsckpt")) { e in
            XCTAssertTrue("\(e)".contains("short.lsckpt") && "\(e)".contains("truncated"), "\(e)")
        }
        // Not a checkpoint.
        try Data("GGUF and more bytes here".utf8).write(to: URL(fileURLWithPath: dir + "/other.lsckpt"))
        XCTAssertThrowsError(try Trainer.loadCheckpoint(dir + "/other.lsckpt")) { e in XCTAssertTrue("\(e)".contains("not a"), "\(e)") }
        // Corrupt description.
        var corrupt = bytes
        corrupt[20] = 0x7B
        corrupt[21] = 0x7B
        try corrupt.write(to: URL(fileURLWithPath: dir + "/corrupt.lsckpt"))
        XCTAssertThrowsError(try Trainer.loadCheckpoint(dir + "/corrupt.lsckpt")) { e in XCTAssertTrue("\(e)".contains("corrupt"), "\(e)") }
        // Resuming with other data sources.
        let other = try DataMixture(sources: [.init(name: "c", weight: 1, tokens: Array(repeating: 1, count: 100))],
                                    sequenceLength: 8, validationFraction: 0.1, seed: 1)
        XCTAssertThrowsError(try Trainer(resuming: try Trainer.loadCheckpoint(path), data: other)) { e in
            XCTAssertTrue("\(e)".contains("trained on a, b"), "\(e)")
        }
        _ = data
        // Empty or too short data; sequences longer than the context.
        XCTAssertThrowsError(try DataMixture(sources: [.init(name: "empty", weight: 1, tokens: [])], sequenceLength: 8,
                                             validationFraction: 0.1, seed: 1)) { e in XCTAssertTrue("\(e)".contains("empty"), "\(e)") }
        var options = trainer.options
        options.sequenceLength = 64
        let long = try DataMixture(sources: [.init(name: "x", weight: 1, tokens: Array(repeating: 1, count: 1000))], sequenceLength: 64,
                                   validationFraction: 0.1, seed: 1)
        XCTAssertThrowsError(try Trainer(parameters: trainer.parameters, data: long, options: options)) { e in
            XCTAssertTrue("\(e)".contains("longer than the model's context"), "\(e)")
        }
    }

    func testEmptyCorpusIsRejected() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("llama-swift-empty-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/empty.txt", contents: Data("\n\n".utf8)))
        let tokenizer = try TokenizerLoader.load(file: try SharedData.path("tokenizer/tok512.model"))
        XCTAssertThrowsError(try TokenShard.write(files: [dir + "/empty.txt"], tokenizer: tokenizer, to: dir + "/e.tok")) { e in
            XCTAssertTrue("\(e)".contains("empty"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/e.tok"))
    }

    /// A Hugging Face export reads back as the same tensors; from a GGUF (Meta's interleaved q/k
    /// rows) it gives exactly the tensors of the original transformers checkpoint.
    func testHuggingFaceExportRoundTrips() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("llama-swift-hf-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (_, tiny) = try Self.tiny()
        try HFExport.write(tiny, to: dir + "/tiny", tokenizerFile: nil, bosID: 1, eosID: 2)
        let back = TrainableParameters(weights: try HFDirectory.loadWeights(directory: dir + "/tiny").0)
        XCTAssertEqual(back.layout.slots, tiny.layout.slots)
        XCTAssertEqual(back.values.array, tiny.values.array)

        let gguf = try GGUFFile(path: try SharedData.path("reference/ref-gqa-32k/ref-gqa-32k-f32.gguf"))
        let fromGGUF = TrainableParameters(weights: try gguf.loadWeights())
        XCTAssertEqual(fromGGUF.config.ropeLayout, .interleaved)
        try HFExport.write(fromGGUF, to: dir + "/gqa", tokenizerFile: nil, bosID: 1, eosID: 2)
        let exported = TrainableParameters(weights: try HFDirectory.loadWeights(directory: dir + "/gqa").0)
        let original = TrainableParameters(weights: try HFDirectory.loadWeights(directory: try SharedData.path("reference/ref-gqa-32k/hf")).0)
        for slot in original.layout.slots {
            XCTAssertEqual(Array(exported.tensor(slot.name)!), Array(original.tensor(slot.name)!), slot.name)
        }
    }
}
