import ArgumentParser
import Foundation
import Llama

struct PerplexityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity of a model on a text file, as llama.cpp's llama-perplexity computes it.",
        discussion: """
            The file is tokenized (with BOS if the model uses it) and cut into windows of -c tokens; \
            each window starts with BOS and only its second half is scored. Prints the running \
            perplexity after each window ([1]…, [2]…) and the final estimate with its standard error.
            """)

    @OptionGroup var model: ModelOptions

    @Option(name: [.short, .customLong("file")], help: "Text file to score.")
    var file: String

    @Option(name: [.short, .customLong("ctx-size")], help: "Window (context) length in tokens.")
    var ctxSize: Int = 512

    @Option(help: "Score at most this many windows.")
    var chunks: Int?

    func run() throws {
        guard let data = FileManager.default.contents(atPath: file) else { throw LlamaError.fileNotFound(file) }
        guard let text = String(data: data, encoding: .utf8) else { throw LlamaError.invalidUTF8(what: file) }
        let m = try model.load()
        let tokens = m.tokenizer.encode(text, addBOS: m.tokenizer.addsBOS, parseSpecial: false)
        note("\(file): \(tokens.count) tokens, \(tokens.count / ctxSize) windows of \(ctxSize)")
        let transformer = Transformer(weights: m.weights, contextLength: ctxSize, pool: try model.pool())
        let perplexity = Perplexity(transformer: transformer, bos: m.tokenizer.addsBOS ? m.tokenizer.bosID : nil)
        let result = try perplexity.evaluate(tokens: tokens, contextLength: ctxSize, maxChunks: chunks) { p in
            emit(String(format: "[%d]%.4f,", p.chunk, p.runningPerplexity))
            if p.chunk == 1 || p.chunk == p.chunks {
                note(String(format: "  (%d/%d windows, %.1f s, ETA %.0f s)", p.chunk, p.chunks, p.seconds,
                            p.seconds / Double(p.chunk) * Double(p.chunks - p.chunk)))
            }
        }
        emit(String(format: "\nFinal estimate: PPL = %.4f +/- %.5f\n", result.perplexity, result.error))
        note("\(result.scoredTokens) tokens scored in \(result.chunks) windows")
    }
}
