import ArgumentParser
import Foundation
import Llama

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a model's metadata, tensor types and parameter count.")

    @OptionGroup var model: ModelOptions

    @Flag(help: "Also list every metadata key of a GGUF file.")
    var metadata = false

    func run() throws {
        let m = try model.load()
        let c = m.config
        let w = m.weights
        var types: [String: Int] = [:]
        for l in w.layers { for x in [l.wq, l.wk, l.wv, l.wo, l.w1, l.w2, l.w3] { types[x.type.description, default: 0] += 1 } }
        types["\(w.tokenEmbedding.type) (token embedding)", default: 0] += 1
        if !w.tiedEmbeddings { types["\(w.output.type) (output)", default: 0] += 1 }
        let lines = [
            ("name", m.name),
            ("path", m.path),
            ("format", m.format.rawValue),
            ("parameters", String(format: "%d (%.1f M)", w.parameterCount, Double(w.parameterCount) / 1e6)),
            ("layers", "\(c.layerCount)"),
            ("dim", "\(c.dim)"),
            ("ffn dim", "\(c.hiddenDim)"),
            ("heads", "\(c.headCount) query, \(c.kvHeadCount) key/value (head dim \(c.headDim))"),
            ("vocab", "\(c.vocabSize)"),
            ("context", "\(c.contextLength)"),
            ("rope", "theta \(c.ropeTheta), \(c.ropeDim) dims, \(c.ropeLayout.rawValue) pairs"),
            ("rms eps", "\(c.rmsNormEps)"),
            ("embeddings", w.tiedEmbeddings ? "tied" : "untied"),
            ("matrix types", types.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")),
            ("weights read per token", String(format: "%.1f MB", Double(w.bytesPerToken) / 1e6)),
            ("tokenizer", "\(type(of: m.tokenizer)), \(m.tokenizer.vocabSize) tokens, BOS \(m.tokenizer.bosID.map(String.init) ?? "none"), EOS \(m.tokenizer.eosID.map(String.init) ?? "none")"),
            ("chat format", ChatFormat.detect(template: m.chatTemplate, tokenizer: m.tokenizer).rawValue),
        ]
        for (k, v) in lines { emit(k.padding(toLength: 24, withPad: " ", startingAt: 0) + v + "\n") }
        if metadata {
            for (k, v) in m.metadata { emit("  \(k) = \(v)\n") }
        }
    }
}
