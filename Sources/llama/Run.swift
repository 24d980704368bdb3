import ArgumentParser
import Llama

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Continue a prompt (plain completion, no chat template).",
        discussion: "The text streams to stdout; timings go to stderr. Reads the prompt from stdin when none is given. Ctrl-C stops the generation and prints the timings.")

    @OptionGroup var model: ModelOptions
    @OptionGroup var sampling: SamplingOptionGroup
    @OptionGroup var generation: GenerationOptionGroup

    @Argument(help: "The prompt.")
    var prompt: String?

    @Flag(name: .customLong("no-bos"), help: "Do not add BOS even if the model expects it.")
    var noBOS = false

    func run() throws {
        let text = try prompt ?? readStandardInput()
        let m = try model.load()
        let generator = Generator(model: m, contextLength: generation.contextLength(for: m), pool: try model.pool())
        let ids = m.tokenizer.encode(text, addBOS: m.tokenizer.addsBOS && !noBOS, parseSpecial: false)
        var options = GenerationOptions()
        options.maxTokens = generation.n
        options.sampling = sampling.options
        options.stopStrings = generation.stop
        if let eos = m.tokenizer.eosID { options.stopTokens = [eos] }
        Interrupt.install()
        emit(text)
        let result = try Interrupt.stoppable { keepGoing in
            try generator.generate(prompt: ids, options: options) { emit($0); return keepGoing() }
        }
        emit("\n")
        note(stats(result) + (result.finishReason == .cancelled ? " (interrupted)" : ""))
    }
}
