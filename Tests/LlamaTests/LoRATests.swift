import Foundation
import XCTest
import Llama

/// LoRA against Hugging Face PEFT (Tests/Fixtures/training/lora-tiny.json, made by
/// Tools/make_lora_fixtures.py): the same adapters give the same loss, the same adapter
/// gradients and, merged, the same logits.
final class LoRATests: XCTestCase {
    struct Fixture: Decodable {
        let rank: Int
        let alpha: Float
        let targets: [String]
        let adapters: [String: String]
        let loss: Double
        let gradients: [String: String]
        let merged_logits: String
    }

    func load() throws -> (Fixture, TrainingTests.Tiny, TrainableParameters, LoRAAdapters) {
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/training/lora-tiny.json")))
        let (tiny, params) = try TrainingTests.tiny()
        let config = LoRAConfig(rank: fixture.rank, alpha: fixture.alpha, dropout: 0,
                                targets: try LoRATarget.parse(fixture.targets.joined(separator: ",")))
        let lora = try LoRAAdapters(config: config, model: params.config, seed: 1)
        XCTAssertEqual(Set(lora.slots.map(\.name)), Set(fixture.adapters.keys))
        for slot in lora.slots {
            let v = TrainingTests.floats(fixture.adapters[slot.name]!)
            XCTAssertEqual(v.count, slot.count, slot.name)
            (lora.values.pointer + slot.offset).update(from: v, count: slot.count)
        }
        return (fixture, tiny, params, lora)
    }

    func testGradientsMatchPEFT() throws {
        let (fixture, tiny, params, lora) = try load()
        let model = BackpropModel(parameters: params, batchSize: tiny.inputs.count, sequenceLength: tiny.inputs[0].count)
        model.attach(lora)
        let targets = TrainingTests.targets(tiny.targets)
        let count = targets.filter { $0 >= 0 }.count
        let base = FloatBuffer(count: params.layout.count)
        let (sum, _) = try model.accumulateGradients(tokens: tiny.inputs.flatMap { $0 }, targets: targets,
                                                     gradScale: 1 / Float(count), into: base)
        XCTAssertEqual(sum / Double(count), fixture.loss, accuracy: 1e-5 * fixture.loss)
        let grads = try XCTUnwrap(model.loraGradients)
        for slot in lora.slots {
            let expected = TrainingTests.floats(fixture.gradients[slot.name]!)
            let scale = expected.map { abs($0) }.max()!
            var worst: Float = 0
            for i in 0..<slot.count { worst = max(worst, abs(grads[slot.offset + i] - expected[i])) }
            XCTAssertLessThanOrEqual(worst, 1e-4 * scale, "\(slot.name): largest difference \(worst), largest gradient \(scale)")
        }
        // The base matrices and the embedding are frozen: no gradient is computed for them.
        for slot in params.layout.slots where slot.shape.count == 2 {
            XCTAssertTrue((slot.offset..<(slot.offset + slot.count)).allSatisfy { base[$0] == 0 }, slot.name)
        }
    }

    func testMergedModelGivesPEFTsLogits() throws {
        let (fixture, tiny, params, lora) = try load()
        try lora.merge(into: params)
        let transformer = Transformer(weights: try params.weights(), contextLength: 64)
        let expected = TrainingTests.floats(fixture.merged_logits)
        let v = params.config.vocabSize
        for (row, tokens) in tiny.inputs.enumerated() {
            let logits = try Transformer(weights: transformer.weights, contextLength: 64).forward(tokens: tokens, startPosition: 0, allLogits: true)
            let reference = Array(expected[(row * tokens.count * v)..<((row + 1) * tokens.count * v)])
            let worst = zip(logits, reference).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(worst, 1e-4, "row \(row)")
        }
    }

    /// With dropout, the gradients are those of the loss with the pass's masks: finite differences
    /// of the training loss with the same masks agree.
    func testDropoutGradientsAgreeWithFiniteDifferences() throws {
        let (_, tiny, params, lora) = try load()
        let dropped = try LoRAAdapters(config: LoRAConfig(rank: lora.config.rank, alpha: lora.config.alpha, dropout: 0.3,
                                                          targets: lora.config.targets), model: params.config, seed: 1)
        dropped.values.copy(from: lora.values)
        let model = BackpropModel(parameters: params, batchSize: tiny.inputs.count, sequenceLength: tiny.inputs[0].count)
        model.attach(dropped)
        let tokens = tiny.inputs.flatMap { $0 }, targets = TrainingTests.targets(tiny.targets)
        func loss() throws -> Double {
            model.loraPass = 41
            model.loraGradients!.zero()
            return try model.accumulateGradients(tokens: tokens, targets: targets, gradScale: 1, into: FloatBuffer(count: params.layout.count)).lossSum
        }
        let l0 = try loss()
        let analytic = model.loraGradients!.array
        // Evaluation has no dropout, so its loss differs from the training pass's.
        let eval = try model.loss(tokens: tokens, targets: targets).lossSum
        XCTAssertNotEqual(eval, l0, accuracy: 1e-6)
        // Small enough for the curvature, large enough for Float32 losses.
        let eps: Float = 3e-3
        for name in ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight",
                     "base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight"] {
            let slot = try XCTUnwrap(dropped.slots.first { $0.name == name })
            for i in [0, slot.count / 2, slot.count - 1] {
                let j = slot.offset + i, saved = dropped.values[j]
                dropped.values[j] = saved + eps
                let up = try loss()
                dropped.values[j] = saved - eps
                let down = try loss()
                dropped.values[j] = saved
                let numeric = (up - down) / Double(2 * eps)
                XCTAssertEqual(Double(analytic[j]), numeric, accuracy: 2e-3 * max(1, abs(numeric)), "\(name)[\(i)]")
            }
        }
    }

    func testPEFTExportAndTargets() throws {
        let (_, _, params, lora) = try load()
        let dir = NSTemporaryDirectory() + "lora-export-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try lora.writePEFT(to: dir, taskType: "SEQ_CLS", extra: [("score.weight", [1, params.config.dim], [Float](repeating: 0.5, count: params.config.dim))])
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/adapter_config.json"))) as! [String: Any]
        XCTAssertEqual(config["r"] as? Int, 4)
        XCTAssertEqual(config["lora_alpha"] as? Double, 8)
        XCTAssertEqual(config["peft_type"] as? String, "LORA")
        XCTAssertEqual(config["modules_to_save"] as? [String], ["score"])
        XCTAssertEqual(config["target_modules"] as? [String], ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        let file = try SafetensorsFile(path: dir + "/adapter_model.safetensors")
        let a = try file.matrix("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight")
        XCTAssertEqual([a.rows, a.cols], [4, params.config.hiddenDim])
        XCTAssertEqual(try file.matrix("base_model.model.score.weight").cols, params.config.dim)

        XCTAssertEqual(try LoRATarget.parse("q,v"), [.q, .v])
        XCTAssertEqual(try LoRATarget.parse("v_proj,q_proj,q"), [.q, .v])
        XCTAssertEqual(try LoRATarget.parse("all").count, 7)
        XCTAssertThrowsError(try LoRATarget.parse("q,wx")) { XCTAssertTrue("\($0)".contains("unknown LoRA target 'wx'"), "\($0)") }
        XCTAssertThrowsError(try LoRAAdapters(config: LoRAConfig(rank: 0), model: params.config, seed: 1))
        XCTAssertThrowsError(try LoRAAdapters(config: LoRAConfig(dropout: 1), model: params.config, seed: 1))
        // New adapters start from the base model: B is zero.
        let fresh = try LoRAAdapters(config: LoRAConfig(), model: params.config, seed: 3)
        for ad in fresh.adapters {
            XCTAssertTrue((0..<(ad.outputs * fresh.config.rank)).allSatisfy { fresh.values[ad.b + $0] == 0 })
            XCTAssertTrue((0..<(ad.inputs * fresh.config.rank)).contains { fresh.values[ad.a + $0] != 0 })
        }
    }

    /// Adapters alone fit a batch: AdamW on the adapters lowers its loss a long way.
    func testAdaptersLearn() throws {
        let (_, tiny, params, _) = try load()
        let lora = try LoRAAdapters(config: LoRAConfig(rank: 4, alpha: 8, dropout: 0.05, targets: LoRATarget.allCases), model: params.config, seed: 2)
        let model = BackpropModel(parameters: params, batchSize: tiny.inputs.count, sequenceLength: tiny.inputs[0].count)
        model.attach(lora)
        let optimizer = AdamW(slots: lora.slots, count: lora.count)
        let tokens = tiny.inputs.flatMap { $0 }, targets = TrainingTests.targets(tiny.targets)
        let count = Float(targets.filter { $0 >= 0 }.count)
        let start = try model.loss(tokens: tokens, targets: targets).lossSum
        for _ in 0..<40 {
            model.loraGradients!.zero()
            try model.accumulateGradients(tokens: tokens, targets: targets, gradScale: 1 / count, into: FloatBuffer(count: params.layout.count))
            optimizer.clip(model.loraGradients!)
            optimizer.update(lora.values, gradients: model.loraGradients!, lr: 1e-2)
        }
        let end = try model.loss(tokens: tokens, targets: targets).lossSum
        XCTAssertLessThan(end, 0.5 * start)
    }

    /// A LoRA run leaves the weights frozen, and a run saved halfway and resumed prints the
    /// losses of the uninterrupted one (adapters, their moments and the dropout masks come back).
    func testLoRARunKeepsTheWeightsAndResumesExactly() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("llama-swift-lora-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = LoRAConfig(rank: 4, alpha: 8, dropout: 0.1, targets: LoRATarget.allCases)
        let (straight, _) = try TrainingTests.tinyRun(steps: 30, lora: config)
        let before = straight.parameters.values.array
        var losses: [Double] = []
        for _ in 0..<30 { losses.append(try straight.trainStep().loss) }
        XCTAssertEqual(straight.parameters.values.array, before, "the base weights are frozen")
        XCTAssertNotEqual(try straight.trainedParameters().values.array, before)

        let (first, _) = try TrainingTests.tinyRun(steps: 30, lora: config)
        for _ in 0..<13 { _ = try first.trainStep() }
        try first.save(to: dir + "/c.lsckpt")
        let (_, freshData) = try TrainingTests.tinyRun(steps: 30)
        let checkpoint = try Trainer.loadCheckpoint(dir + "/c.lsckpt")
        XCTAssertEqual(checkpoint.options.lora, config)
        let resumed = try Trainer(resuming: checkpoint, data: freshData)
        XCTAssertEqual(resumed.step, 13)
        for s in 13..<30 { XCTAssertEqual(try resumed.trainStep().loss, losses[s], "step \(s + 1)") }
    }
}

extension LoRATests {
    /// A PEFT directory read back gives the adapters written, on a model in either q/k layout,
    /// and bad directories are refused with the file and the reason.
    func testPEFTDirectoryRoundTrips() throws {
        let (_, _, params, lora) = try load()
        for layout in [RoPELayout.halves, .interleaved] {
            var config = params.config
            config.ropeLayout = layout
            let adapters = try LoRAAdapters(config: lora.config, model: config, seed: 1)
            adapters.values.copy(from: lora.values)
            let dir = NSTemporaryDirectory() + "lora-roundtrip-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try adapters.writePEFT(to: dir, extra: [("score.weight", [1, config.dim], [Float](repeating: 1, count: config.dim))])
            let (back, others, file) = try LoRAAdapters.load(directory: dir, model: config)
            withExtendedLifetime(file) {
                XCTAssertEqual(back.config, lora.config)
                XCTAssertEqual(back.values.array, adapters.values.array, "\(layout)")
                XCTAssertEqual(Array(others.keys), ["base_model.model.score.weight"])
            }
        }
        let dir = NSTemporaryDirectory() + "lora-bad-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try lora.writePEFT(to: dir)
        var json = try String(contentsOfFile: dir + "/adapter_config.json", encoding: .utf8)
        json = json.replacingOccurrences(of: "\"q_proj\",", with: "")
        try json.write(toFile: dir + "/adapter_config.json", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try LoRAAdapters.load(directory: dir, model: params.config)) {
            XCTAssertTrue("\($0)".contains("q_proj.lora_A.weight is a LoRA tensor the adapter config does not describe"), "\($0)")
        }
        XCTAssertThrowsError(try LoRAAdapters.load(directory: dir + "/missing", model: params.config))
    }
}
