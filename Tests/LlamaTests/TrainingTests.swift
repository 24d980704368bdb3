import Foundation
import XCTest
import Llama

/// The trainer against PyTorch (Tests/Fixtures/training, made by Tools/make_training_fixtures.py
/// with transformers' LlamaForCausalLM and `loss.backward()`).
final class TrainingTests: XCTestCase {
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
        let (weights, _) = try HFDirectory.loadWeights(directory: dir + "/tiny-gqa")
        return (fixture, TrainableParameters(weights: weights))
    }

    /// HF's ignore index is -100; ours is -1.
    static func targets(_ t: [[Int]]) -> [Int] { t.flatMap { $0 }.map { $0 < 0 ? -1 : $0 } }

    /// Loss and every parameter's gradient (GQA, tied embeddings, masked targets) agree with
    /// PyTorch's to 1e-4 of each tensor's largest gradient.
    func testGradientsMatchPyTorch() throws {
        let (fixture, params) = try Self.tiny()
        let model = BackpropModel(parameters: params, batchSize: fixture.inputs.count, sequenceLength: fixture.inputs[0].count)
        let grads = FloatBuffer(count: params.layout.count)
        let targets = Self.targets(fixture.targets)
        let count = targets.filter { $0 >= 0 }.count
        let (sum, counted) = try model.accumulateGradients(tokens: fixture.inputs.flatMap { $0 }, targets: targets,
                                                           gradScale: 1 / Float(count), into: grads)
        XCTAssertEqual(counted, count)
        XCTAssertEqual(sum / Double(counted), fixture.loss, accuracy: 1e-5 * fixture.loss)
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
            let model = BackpropModel(parameters: params, batchSize: ref.inputs.count, sequenceLength: ref.inputs[0].count)
            let grads = FloatBuffer(count: params.layout.count)
            let targets = Self.targets(ref.targets)
            let count = targets.filter { $0 >= 0 }.count
            let (sum, _) = try model.accumulateGradients(tokens: ref.inputs.flatMap { $0 }, targets: targets,
                                                         gradScale: 1 / Float(count), into: grads)
            XCTAssertEqual(sum / Double(count), ref.loss, accuracy: 1e-5 * ref.loss, ref.model)
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
        let model = BackpropModel(parameters: params, batchSize: fixture.inputs.count, sequenceLength: fixture.inputs[0].count)
        let grads = FloatBuffer(count: params.layout.count)
        let targets = Self.targets(fixture.targets)
        let count = targets.filter { $0 >= 0 }.count
        for step in 0..<a.steps {
            grads.zero()
            try model.accumulateGradients(tokens: fixture.inputs.flatMap { $0 }, targets: targets, gradScale: 1 / Float(count), into: grads)
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
}
