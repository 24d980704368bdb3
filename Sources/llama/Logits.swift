import ArgumentParser
import Llama

struct Logits: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the logits after a sequence of token ids, as JSON.",
        discussion: "Prints the last position's logits as a JSON array, or with --all an array of one array per position.")

    @OptionGroup var model: ModelOptions

    @Option(help: "Comma-separated token ids, e.g. 1,15043,3186.")
    var ids: String

    @Flag(help: "Print the logits of every position.")
    var all = false

    func run() throws {
        let tokens = try ids.split(separator: ",").map { piece -> Int in
            guard let v = Int(piece.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--ids: '\(piece)' is not an integer")
            }
            return v
        }
        guard !tokens.isEmpty else { throw ValidationError("--ids is empty") }
        let m = try model.load()
        let transformer = Transformer(weights: m.weights, contextLength: tokens.count, pool: try model.pool())
        guard tokens.count <= m.config.contextLength else {
            throw LlamaError.promptTooLong(tokens: tokens.count, contextLength: m.config.contextLength)
        }
        let logits = try transformer.forward(tokens: tokens, startPosition: 0, allLogits: all)
        let vocab = m.config.vocabSize
        func row(_ r: ArraySlice<Float>) -> String { "[" + r.map { "\($0)" }.joined(separator: ",") + "]" }
        if all {
            emit("[" + (0..<tokens.count).map { row(logits[($0 * vocab)..<(($0 + 1) * vocab)]) }.joined(separator: ",\n") + "]\n")
        } else {
            emit(row(transformer.logits[...]) + "\n")
        }
    }
}
