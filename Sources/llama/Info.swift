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
            ("matrix types", w.matrixTypeCounts.map { "\($0.type) ×\($0.count)" }.joined(separator: ", ")
                + " (token embedding \(w.tokenEmbedding.type)\(w.tiedEmbeddings ? ", tied" : ", output \(w.output.type)"))"),
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
