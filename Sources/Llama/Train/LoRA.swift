import Foundation
import LlamaKernels

/// A projection LoRA can adapt, by its Hugging Face module name.
public enum LoRATarget: String, CaseIterable, Sendable, Codable, Comparable {
    case q = "q_proj", k = "k_proj", v = "v_proj", o = "o_proj", gate = "gate_proj", up = "up_proj", down = "down_proj"

    public static func < (a: LoRATarget, b: LoRATarget) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }

    /// "q,v", "all" or "attention" → targets.
    public static func parse(_ text: String) throws -> [LoRATarget] {
        switch text {
        case "all": return allCases
        case "attention": return [.q, .k, .v, .o]
        case "mlp": return [.gate, .up, .down]
        default:
            let names = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let targets = try names.map { name -> LoRATarget in
                if let t = LoRATarget(rawValue: name) ?? LoRATarget(rawValue: name + "_proj") { return t }
                throw LlamaError.invalidArgument("unknown LoRA target '\(name)' (q, k, v, o, gate, up, down, their *_proj names, all, attention or mlp)")
            }
            guard !targets.isEmpty else { throw LlamaError.invalidArgument("no LoRA targets given") }
            return Array(Set(targets)).sorted()
        }
    }

    var module: String { self == .gate || self == .up || self == .down ? "mlp" : "self_attn" }
}

/// LoRA [Hu et al. 2021] as Hugging Face PEFT defines it: a frozen projection W gains
/// `scale · B A` with A (rank × in), B (out × rank), scale = alpha / rank, and dropout on the
/// input of the A B branch only.
public struct LoRAConfig: Sendable, Equatable, Codable {
    public var rank = 8
    public var alpha: Float = 16
    public var dropout: Float = 0.05
    /// PEFT's default for Llama: the query and value projections.
    public var targets: [LoRATarget] = [.q, .v]

    public init(rank: Int = 8, alpha: Float = 16, dropout: Float = 0.05, targets: [LoRATarget] = [.q, .v]) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.targets = targets
    }

    public var scale: Float { alpha / Float(rank) }

    public func validate() throws {
        guard rank >= 1 else { throw LlamaError.invalidArgument("the LoRA rank must be at least 1") }
        guard alpha > 0 else { throw LlamaError.invalidArgument("the LoRA alpha must be positive") }
        guard (0..<1).contains(dropout) else { throw LlamaError.invalidArgument("the LoRA dropout is in [0, 1)") }
        guard !targets.isEmpty else { throw LlamaError.invalidArgument("LoRA needs at least one target projection") }
    }
}

/// The adapters of every targeted projection of every layer, in one flat buffer with PEFT's
/// tensor names (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`), so the
/// optimizer, checkpoints and the export see one list of tensors.
public final class LoRAAdapters: @unchecked Sendable {
    /// One adapted projection.
    public struct Adapter: Sendable {
        public let layer: Int
        public let target: LoRATarget
        public let inputs: Int
        public let outputs: Int
        /// Offsets of A (rank × inputs) and B (outputs × rank) in `values`.
        public let a: Int
        public let b: Int

        /// PEFT's name of the adapted module; its tensors are NAME.lora_A.weight and NAME.lora_B.weight.
        public var peftName: String { "base_model.model.model.layers.\(layer).\(target.module).\(target.rawValue)" }
    }

    public let config: LoRAConfig
    public let model: ModelConfig
    public let slots: [TensorSlot]
    public let adapters: [Adapter]
    public let values: FloatBuffer
    public var count: Int { values.count }
    private let index: [Int: Int]

    /// New adapters initialised as PEFT does: A uniform in ±1/√inputs (Kaiming-uniform with
    /// a = √5), B zero, so training starts from the base model exactly.
    public init(config: LoRAConfig, model: ModelConfig, seed: UInt64) throws {
        try config.validate()
        self.config = config
        self.model = model
        var slots: [TensorSlot] = [], adapters: [Adapter] = [], index: [Int: Int] = [:]
        var next = 0
        for l in 0..<model.layerCount {
            for t in config.targets.sorted() {
                let (outputs, inputs) = Self.shape(t, model)
                let ad = Adapter(layer: l, target: t, inputs: inputs, outputs: outputs, a: next, b: next + config.rank * inputs)
                slots += [TensorSlot(name: ad.peftName + ".lora_A.weight", shape: [config.rank, inputs], offset: ad.a),
                          TensorSlot(name: ad.peftName + ".lora_B.weight", shape: [outputs, config.rank], offset: ad.b)]
                next = ad.b + outputs * config.rank
                index[l * 8 + LoRATarget.allCases.firstIndex(of: t)!] = adapters.count
                adapters.append(ad)
            }
        }
        self.slots = slots
        self.adapters = adapters
        self.index = index
        values = FloatBuffer(count: next)
        var rng = SplitMix64(seed: seed)
        for ad in adapters {
            let bound = 1 / Float(ad.inputs).squareRoot()
            for i in 0..<(config.rank * ad.inputs) {
                values[ad.a + i] = (Float(Double(rng.next() >> 11) * 0x1.0p-53) * 2 - 1) * bound
            }
        }
    }

    /// (outputs, inputs) of a projection.
    static func shape(_ t: LoRATarget, _ c: ModelConfig) -> (Int, Int) {
        switch t {
        case .q: (c.queryDim, c.dim)
        case .k, .v: (c.kvDim, c.dim)
        case .o: (c.dim, c.queryDim)
        case .gate, .up: (c.hiddenDim, c.dim)
        case .down: (c.dim, c.hiddenDim)
        }
    }

    /// The position in `adapters` of a layer's adapter for `target`, if it has one.
    public func adapterIndex(layer: Int, _ target: LoRATarget) -> Int? {
        index[layer * 8 + LoRATarget.allCases.firstIndex(of: target)!]
    }

    /// A copy of `parameters` with the adapters merged in; `parameters` stay as they are.
    public func merged(with parameters: TrainableParameters) throws -> TrainableParameters {
        let copy = FloatBuffer(count: parameters.layout.count)
        copy.copy(from: parameters.values)
        let merged = TrainableParameters(layout: parameters.layout, values: copy)
        try merge(into: merged)
        return merged
    }

    /// Adds `scale · B A` to each adapted matrix of `parameters` (PEFT's `merge_and_unload`).
    public func merge(into parameters: TrainableParameters) throws {
        guard parameters.config.layerCount == model.layerCount, parameters.config.dim == model.dim,
              parameters.config.hiddenDim == model.hiddenDim, parameters.config.kvDim == model.kvDim else {
            throw LlamaError.invalidArgument("the adapters were made for another model shape")
        }
        let r = config.rank, s = config.scale
        for ad in adapters {
            let name = "model.layers.\(ad.layer).\(ad.target.module).\(ad.target.rawValue).weight"
            guard let w = parameters.tensor(name) else { throw LlamaError.invalidArgument("the model has no \(name)") }
            let b = values.pointer + ad.b, a = values.pointer + ad.a
            // W (outputs × inputs) += s · B (outputs × r) · A (r × inputs)
            for o in 0..<ad.outputs {
                for k in 0..<r {
                    let f = s * b[o * r + k]
                    if f == 0 { continue }
                    let row = w.baseAddress! + o * ad.inputs, arow = a + k * ad.inputs
                    for i in 0..<ad.inputs { row[i] += f * arow[i] }
                }
            }
        }
    }

    /// Writes a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`),
    /// each file atomically. `extra` tensors (a reward model's `score.weight`) are saved under
    /// `base_model.model.NAME` and listed as modules to save, as PEFT does for SEQ_CLS.
    public func writePEFT(to directory: String, taskType: String = "CAUSAL_LM", baseModel: String? = nil,
                          extra: [(name: String, shape: [Int], values: [Float])] = []) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // Our q/k rows may be in Meta's interleaved RoPE layout; Hugging Face's are rotate-half
        // (HFExport permutes the base matrices the same way), and B's rows are W's rows.
        let permute = model.ropeLayout == .interleaved
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        for ad in adapters {
            let name = ad.peftName
            let r = config.rank
            tensors.append((name + ".lora_A.weight", [r, ad.inputs], Array(UnsafeBufferPointer(start: values.pointer + ad.a, count: r * ad.inputs))))
            var b = [Float](repeating: 0, count: ad.outputs * r)
            for row in 0..<ad.outputs {
                let source = permute && (ad.target == .q || ad.target == .k)
                    ? HFExport.interleavedRow(forHalvesRow: row, headDim: model.headDim) : row
                for k in 0..<r { b[row * r + k] = values[ad.b + source * r + k] }
            }
            tensors.append((name + ".lora_B.weight", [ad.outputs, r], b))
        }
        tensors += extra.map { ("base_model.model." + $0.name, $0.shape, $0.values) }
        try Self.writeSafetensors(tensors, to: directory + "/adapter_model.safetensors")
        var peft: [String: Any] = [
            "peft_type": "LORA", "task_type": taskType, "r": config.rank, "lora_alpha": Double(config.alpha),
            "lora_dropout": Double(config.dropout), "target_modules": config.targets.sorted().map(\.rawValue), "bias": "none",
            "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true, "use_rslora": false, "use_dora": false,
            "base_model_name_or_path": baseModel ?? NSNull(),
        ]
        if !extra.isEmpty { peft["modules_to_save"] = extra.map { String($0.name.split(separator: ".").first!) } }
        let json = try JSONSerialization.data(withJSONObject: peft, options: [.prettyPrinted, .sortedKeys])
        try writeFileAtomically(directory + "/adapter_config.json") { try $0.write(contentsOf: json) }
    }

    /// Adapters from a PEFT LoRA directory (ours or Hugging Face PEFT's) for a model of shape
    /// `model`: `adapter_config.json` gives rank, alpha, dropout and targets, and
    /// `adapter_model.safetensors` the A and B of every adapted projection (F32, F16 or BF16).
    /// For a model in Meta's interleaved q/k layout, the rows of B for q and k are brought from
    /// Hugging Face's rotate-half order into it. Tensors that are not LoRA matrices (a head saved
    /// as a module to save) are returned by name.
    public static func load(directory: String, model: ModelConfig) throws -> (adapters: LoRAAdapters, others: [String: Matrix], file: SafetensorsFile) {
        let configPath = directory + "/adapter_config.json"
        guard let data = FileManager.default.contents(atPath: configPath) else { throw LlamaError.fileNotFound(configPath) }
        guard let object = (try? JSONValue.parse(data))?.object else {
            throw LlamaError.corrupt(file: configPath, offset: 0, reason: "not a JSON object")
        }
        func field(_ name: String) -> LlamaError { .corrupt(file: configPath, offset: 0, reason: "'\(name)' is missing or not a number") }
        if let type = object["peft_type"]?.string, type != "LORA" {
            throw LlamaError.invalidArgument("\(configPath): a \(type) adapter, not LoRA")
        }
        guard let rank = object["r"]?.int else { throw field("r") }
        guard let alpha = object["lora_alpha"]?.number else { throw field("lora_alpha") }
        if object["use_rslora"]?.bool == true || object["use_dora"]?.bool == true {
            throw LlamaError.invalidArgument("\(configPath): rsLoRA and DoRA adapters are not supported")
        }
        let modules: [String]
        if let list = object["target_modules"]?.array {
            modules = list.compactMap(\.string)
        } else if let one = object["target_modules"]?.string {
            modules = [one]
        } else {
            throw LlamaError.corrupt(file: configPath, offset: 0, reason: "'target_modules' is missing")
        }
        let targets = try LoRATarget.parse(modules.joined(separator: ","))
        let config = LoRAConfig(rank: rank, alpha: Float(alpha), dropout: Float(object["lora_dropout"]?.number ?? 0), targets: targets)
        let adapters = try LoRAAdapters(config: config, model: model, seed: 0)
        let file = try SafetensorsFile(path: directory + "/adapter_model.safetensors")
        let permute = model.ropeLayout == .interleaved
        var used: Set<String> = []
        for ad in adapters.adapters {
            let base = ad.peftName
            for (suffix, rows, cols, offset) in [(".lora_A.weight", rank, ad.inputs, ad.a), (".lora_B.weight", ad.outputs, rank, ad.b)] {
                let name = base + suffix
                guard file.entries[name] != nil else {
                    throw LlamaError.invalidArgument("\(file.path): no tensor \(name) (the adapter config targets \(ad.target.rawValue))")
                }
                let m = try file.matrix(name)
                guard m.rows == rows, m.cols == cols else {
                    throw LlamaError.shapeMismatch(file: file.path, tensor: name, expected: [rows, cols], found: [m.rows, m.cols])
                }
                for r in 0..<rows {
                    let target = suffix == ".lora_B.weight" && permute && (ad.target == .q || ad.target == .k)
                        ? HFExport.interleavedRow(forHalvesRow: r, headDim: model.headDim) : r
                    m.row(r, into: adapters.values.pointer + offset + target * cols)
                }
                used.insert(name)
            }
        }
        var others: [String: Matrix] = [:]
        for name in file.entries.keys.sorted() where !used.contains(name) {
            if name.contains(".lora_") {
                throw LlamaError.invalidArgument("\(file.path): \(name) is a LoRA tensor the adapter config does not describe")
            }
            if let m = try? file.matrix(name) { others[name] = m }
        }
        return (adapters, others, file)
    }

    /// A safetensors file of Float32 tensors, written atomically.
    static func writeSafetensors(_ tensors: [(name: String, shape: [Int], values: [Float])], to path: String) throws {
        for t in tensors { precondition(t.shape.reduce(1, *) == t.values.count, t.name) }
        try writeFloat32Safetensors(tensors.map { ($0.name, $0.shape) }, to: path) { i, handle in
            try tensors[i].values.withUnsafeBufferPointer { try handle.write(contentsOf: Data(buffer: $0)) }
        }
    }

    // MARK: Dropout

    /// Keep-or-drop of input element `i` of adapter `adapter` in pass `pass`: a hash, so the
    /// backward pass sees the forward pass's mask without storing it.
    @inline(__always)
    static func keeps(pass: UInt64, adapter: Int, element: Int, threshold: UInt64) -> Bool {
        var z = pass &+ UInt64(adapter) &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(element) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return z >> 11 >= threshold
    }
}
