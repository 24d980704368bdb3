import Foundation

/// Writes trained parameters as a Hugging Face `LlamaForCausalLM` directory: `config.json`,
/// `model.safetensors` (Float32, transformers' tensor names, rotate-half q/k layout) and the
/// tokenizer file when there is one to copy, so transformers, vLLM and PEFT take the model further.
/// Parameters with a reward head are written as `LlamaForSequenceClassification` with one label.
public enum HFExport {
    public static func write(_ parameters: TrainableParameters, to directory: String, tokenizerFile: String?,
                             bosID: Int?, eosID: Int?, padID: Int? = nil) throws {
        let c = parameters.config
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var config: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": c.dim, "intermediate_size": c.hiddenDim, "num_hidden_layers": c.layerCount,
            "num_attention_heads": c.headCount, "num_key_value_heads": c.kvHeadCount, "head_dim": c.headDim,
            "vocab_size": c.vocabSize, "max_position_embeddings": c.contextLength, "rms_norm_eps": Double(c.rmsNormEps),
            "rope_theta": Double(c.ropeTheta), "tie_word_embeddings": parameters.layout.tiedEmbeddings,
            "hidden_act": "silu", "attention_bias": false, "mlp_bias": false, "torch_dtype": "float32",
        ]
        if c.ropeDim != c.headDim {
            throw LlamaError.invalidArgument("partial rotary embeddings (\(c.ropeDim) of \(c.headDim)) have no LlamaForCausalLM config")
        }
        if let bosID { config["bos_token_id"] = bosID }
        if let eosID { config["eos_token_id"] = eosID }
        if parameters.layout.hasScoreHead {
            config["architectures"] = ["LlamaForSequenceClassification"]
            config["id2label"] = ["0": "LABEL_0"]
            config["label2id"] = ["LABEL_0": 0]
            // transformers reads the reward at the last token that is not padding, so padding
            // must not be a token a sequence ends with (EOS / end of turn).
            if let padID { config["pad_token_id"] = padID }
        }
        let json = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        try writeFileAtomically(directory + "/config.json") { try $0.write(contentsOf: json) }
        try writeSafetensors(parameters, to: directory + "/model.safetensors")
        if let tokenizerFile {
            let name = tokenizerFile.hasSuffix(".json") ? "tokenizer.json" : "tokenizer.model"
            let data = try Data(contentsOf: URL(fileURLWithPath: tokenizerFile))
            try writeFileAtomically(directory + "/" + name) { try $0.write(contentsOf: data) }
        }
    }

    /// Hugging Face row `r` of a q/k matrix stored in Meta's interleaved layout: within each head,
    /// rotate-half row k·d/2 + i is interleaved row 2i + k.
    static func interleavedRow(forHalvesRow r: Int, headDim d: Int) -> Int {
        let head = r / d, j = r % d
        let k = j / (d / 2), i = j % (d / 2)
        return head * d + 2 * i + k
    }

    private static func writeSafetensors(_ parameters: TrainableParameters, to path: String) throws {
        let c = parameters.config, layout = parameters.layout
        let permute = c.ropeLayout == .interleaved
        try writeFloat32Safetensors(layout.slots.map { ($0.name, $0.shape) }, to: path) { i, handle in
            let s = layout.slots[i]
            let base = parameters.values.pointer + s.offset
            let isQK = s.name.hasSuffix("q_proj.weight") || s.name.hasSuffix("k_proj.weight")
            if permute && isQK {
                let cols = s.shape[1]
                var rows = Data(capacity: s.count * 4)
                for r in 0..<s.shape[0] {
                    let source = base + interleavedRow(forHalvesRow: r, headDim: c.headDim) * cols
                    rows.append(UnsafeBufferPointer(start: source, count: cols))
                }
                try handle.write(contentsOf: rows)
            } else {
                try handle.write(contentsOf: Data(bytesNoCopy: base, count: s.count * 4, deallocator: .none))
            }
        }
    }
}
