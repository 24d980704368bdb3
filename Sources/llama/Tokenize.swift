import ArgumentParser
import Foundation
import Llama

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the token ids of a text.",
        discussion: """
            Like sentencepiece's encode: no BOS unless --bos, special-token text is plain text unless \
            --parse-special. --model may also be a bare tokenizer: tokenizer.model, tokenizer.json, \
            llama2.c tokenizer.bin, or a vocab-only GGUF. Reads stdin when no text is given.
            """)

    @Option(name: [.short, .long], help: "Model or tokenizer file (default: the default model).")
    var model: String?

    @Argument(help: "The text.")
    var text: String?

    @Flag(help: "Add BOS first.")
    var bos = false

    @Flag(name: .customLong("parse-special"), help: "Turn the text of special tokens (<s>, <|im_start|>) into those tokens.")
    var parseSpecial = false

    @Flag(help: "Print {\"ids\": [...], \"pieces\": [...]}.")
    var json = false

    func run() throws {
        let input = try text ?? readStandardInput()
        let tokenizer = try loadTokenizer(model ?? DefaultModel.ensure())
        let ids = tokenizer.encode(input, addBOS: bos, parseSpecial: parseSpecial)
        if json {
            let object: [String: Any] = ["ids": ids, "pieces": ids.map { tokenizer.piece($0) }]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            emit(String(decoding: data, as: UTF8.self) + "\n")
        } else {
            emit(ids.map(String.init).joined(separator: " ") + "\n")
        }
    }

    /// Only the tokenizer: no weights are read.
    func loadTokenizer(_ path: String) throws -> any Tokenizer {
        if (try? ModelLoader.detectFormat(path: path)) == .llama2c {
            return try Model(path: path).tokenizer
        }
        return try TokenizerLoader.load(file: path)
    }
}
