import Foundation
import LlamaKernels

/// The `config.json` fields of a Hugging Face `LlamaForCausalLM` checkpoint that matter here.
public struct HFConfig: Sendable {
    public var config: ModelConfig
    public var tieWordEmbeddings: Bool
    public var bosTokenID: Int?
    public var eosTokenIDs: [Int]

    public init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw LlamaError.fileNotFound(path) }
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LlamaError.corrupt(file: path, offset: nil, reason: "not a JSON object")
        }
        func int(_ key: String) throws -> Int {
            guard let v = json[key] else { throw LlamaError.missingMetadata(file: path, key: key) }
            guard let n = v as? Int else { throw LlamaError.invalidConfig(file: path, field: key, reason: "expected an integer, found \(v)") }
            return n
        }
        func double(_ key: String, in dict: [String: Any]) -> Double? {
            (dict[key] as? NSNumber)?.doubleValue
        }
        if let type = json["model_type"] as? String, !["llama", "mistral"].contains(type) {
            throw LlamaError.invalidConfig(file: path, field: "model_type", reason: "'\(type)' is not a Llama-architecture model")
        }
        // transformers 5 nests rope_theta in rope_parameters; older configs have it at the top level.
        let ropeParameters = (json["rope_parameters"] as? [String: Any]) ?? (json["rope_scaling"] as? [String: Any]) ?? [:]
        if let ropeType = (ropeParameters["rope_type"] ?? ropeParameters["type"]) as? String, ropeType != "default" {
            throw LlamaError.invalidConfig(file: path, field: "rope_type", reason: "RoPE scaling '\(ropeType)' is not supported")
        }
        let theta = double("rope_theta", in: json) ?? double("rope_theta", in: ropeParameters) ?? 10000
        let heads = try int("num_attention_heads")
        let dim = try int("hidden_size")
        config = ModelConfig(
            dim: dim,
            hiddenDim: try int("intermediate_size"),
            layerCount: try int("num_hidden_layers"),
            headCount: heads,
            kvHeadCount: (json["num_key_value_heads"] as? Int) ?? heads,
            headDim: json["head_dim"] as? Int,
            vocabSize: try int("vocab_size"),
            contextLength: (json["max_position_embeddings"] as? Int) ?? 2048,
            ropeTheta: Float(theta),
            ropeLayout: .halves,
            rmsNormEps: Float(double("rms_norm_eps", in: json) ?? 1e-6))
        tieWordEmbeddings = (json["tie_word_embeddings"] as? Bool) ?? false
        bosTokenID = json["bos_token_id"] as? Int
        if let e = json["eos_token_id"] as? Int { eosTokenIDs = [e] } else { eosTokenIDs = (json["eos_token_id"] as? [Int]) ?? [] }
    }
}

/// A Hugging Face model directory: `config.json`, `model.safetensors` or shards listed in
/// `model.safetensors.index.json`, and tokenizer files.
public enum HFDirectory {
    public static func isModelDirectory(_ path: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
            && FileManager.default.fileExists(atPath: path + "/config.json")
    }

    public static func loadWeights(directory: String) throws -> (Weights, HFConfig) {
        let hf = try HFConfig(path: directory + "/config.json")
        let single = directory + "/model.safetensors"
        let index = directory + "/model.safetensors.index.json"
        var files: [String: SafetensorsFile] = [:]
        var owner: [String: String] = [:]
        if FileManager.default.fileExists(atPath: single) {
            let f = try SafetensorsFile(path: single)
            files[single] = f
            for name in f.entries.keys { owner[name] = single }
        } else if let data = FileManager.default.contents(atPath: index) {
            guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let map = json["weight_map"] as? [String: String]
            else { throw LlamaError.corrupt(file: index, offset: nil, reason: "no 'weight_map' object") }
            for (name, shard) in map {
                let p = directory + "/" + shard
                if files[p] == nil { files[p] = try SafetensorsFile(path: p) }
                owner[name] = p
            }
        } else {
            throw LlamaError.fileNotFound(single + " (or model.safetensors.index.json)")
        }
        func file(_ name: String) throws -> SafetensorsFile {
            guard let p = owner[name], let f = files[p] else { throw LlamaError.missingTensor(file: directory, tensor: name) }
            return f
        }
        func matrix(_ name: String) throws -> Matrix { try file(name).matrix(name) }
        func vector(_ name: String) throws -> [Float] { try file(name).vector(name) }
        var layers: [LayerWeights] = []
        for i in 0..<hf.config.layerCount {
            let p = "model.layers.\(i)."
            layers.append(LayerWeights(
                attentionNorm: try vector(p + "input_layernorm.weight"),
                wq: try matrix(p + "self_attn.q_proj.weight"),
                wk: try matrix(p + "self_attn.k_proj.weight"),
                wv: try matrix(p + "self_attn.v_proj.weight"),
                wo: try matrix(p + "self_attn.o_proj.weight"),
                ffnNorm: try vector(p + "post_attention_layernorm.weight"),
                w1: try matrix(p + "mlp.gate_proj.weight"),
                w2: try matrix(p + "mlp.down_proj.weight"),
                w3: try matrix(p + "mlp.up_proj.weight")))
        }
        let untied = !hf.tieWordEmbeddings || owner["lm_head.weight"] != nil
        let weights = try Weights(
            config: hf.config,
            tokenEmbedding: try matrix("model.embed_tokens.weight"),
            layers: layers,
            norm: try vector("model.norm.weight"),
            output: untied ? try matrix("lm_head.weight") : nil,
            storage: Array(files.values),
            source: directory)
        return (weights, hf)
    }
}
