import ArgumentParser
import Foundation
import Llama

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat with a model: an interactive session, or one turn with --message.",
        discussion: """
            The conversation is rendered with the model's chat template (Llama 2-Chat, ChatML or \
            Llama 3, detected from the file; override with --template). In the interactive session, \
            /reset starts over and /exit (or end of input) quits; Ctrl-C stops an answer being \
            written (what was written stays in the history) and, at the prompt, quits.
            """)

    @OptionGroup var model: ModelOptions
    @OptionGroup var sampling: SamplingOptionGroup
    @OptionGroup var generation: GenerationOptionGroup

    @Option(help: "System prompt (default: the template's own, if it has one).")
    var system: String?

    @Option(help: "Send this one message, print the answer and exit.")
    var message: String?

    @Option(help: "Chat format: llama2, chatml or llama3 (default: from the model file).")
    var template: String?

    func run() throws {
        Interrupt.install()
        let m = try model.load()
        let format = try chatFormat(named: template, for: m)
        let defaultSystem = ChatFormat.defaultSystemPrompt(template: m.chatTemplate)
        let generator = Generator(model: m, contextLength: generation.contextLength(for: m), pool: try model.pool())
        var options = GenerationOptions()
        options.maxTokens = generation.n
        options.sampling = sampling.options
        options.stopStrings = generation.stop
        options.stopTokens = format.stopTokens(m.tokenizer)

        var history: [ChatMessage] = system.map { [ChatMessage(.system, $0)] } ?? []
        func turn(_ text: String) throws {
            history.append(ChatMessage(.user, text))
            let ids = try format.render(history, tokenizer: m.tokenizer, defaultSystem: defaultSystem)
            let result = try Interrupt.stoppable { keepGoing in
                try generator.generate(prompt: ids, options: options) { emit($0); return keepGoing() }
            }
            emit("\n")
            note(stats(result) + (result.finishReason == .cancelled ? " (interrupted)" : ""))
            history.append(ChatMessage(.assistant, result.text))
        }

        if let message {
            try turn(message)
            return
        }
        note("\(m.name) (\(format.rawValue) chat). /reset starts over, /exit quits.")
        while true {
            emit("> ")
            guard let line = readLine(strippingNewline: true) else { break }
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty { continue }
            if text == "/exit" || text == "/quit" { break }
            if text == "/reset" {
                history = system.map { [ChatMessage(.system, $0)] } ?? []
                continue
            }
            do {
                try turn(text)
            } catch LlamaError.promptTooLong(let n, let ctx) {
                history.removeLast()
                note("error: the conversation is \(n) tokens, longer than the context of \(ctx); /reset to start over")
            }
        }
    }
}
