import ArgumentParser
import Foundation
import Llama
import LlamaKernels

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a model as a GGUF file with quantized weights (like llama.cpp's llama-quantize).",
        discussion: """
            Input: a GGUF file (F32, F16, BF16 or already quantized), a Hugging Face directory or a \
            llama2.c .bin. Types: Q8_0, Q4_0, Q4_1, Q4_K, Q4_K_M, Q6_K, F16, BF16, F32, encoded with \
            ggml's reference quantizers (no importance matrix). Norms stay F32. The output matrix is \
            Q8_0 in Q4_0/Q4_1 files and Q6_K in K-quant files; Q4_K_M also gives attn_v and ffn_down \
            Q6_K in llama.cpp's chosen layers. Matrices whose rows are not whole blocks fall back to \
            Q8_0 or F16. The file is written atomically, with progress.
            """)

    @Argument(help: "Input model.")
    var input: String
    @Argument(help: "Output GGUF file.")
    var output: String
    @Argument(help: "Q8_0, Q4_0, Q4_1, Q4_K, Q4_K_M, Q6_K, F16, BF16 or F32.")
    var type: String

    @Option(help: "Tokenizer file to use instead of the model's own.")
    var tokenizer: String?

    func run() throws {
        guard let recipe = GGUFExport.Recipe.named(type) else {
            throw ValidationError("type must be one of \(GGUFExport.Recipe.all.map(\.name).joined(separator: ", "))")
        }
        Interrupt.install()
        let m = try Model(path: input, tokenizerPath: tokenizer)
        try Interrupt.stoppable { keepGoing in
            try GGUFExport.write(m, to: output, recipe: recipe, progress: tensorProgress("quantizing to \(recipe.name)"), shouldContinue: keepGoing)
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        note(String(format: "\nwrote %@ (%.1f MiB)", output, Double(size) / 1048576))
    }
}
