import ArgumentParser
import Foundation
import Llama
import LlamaKernels

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a model as a GGUF file with quantized weights (like llama.cpp's llama-quantize).",
        discussion: """
            Input: a GGUF file (F32, F16, BF16 or already quantized), a Hugging Face directory or a \
            llama2.c .bin. Types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K, \
            Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, F16, BF16, F32, encoded with ggml's reference \
            quantizers (no importance matrix) and chosen per tensor as llama.cpp's llama-quantize \
            chooses: norms stay F32; in block-format files the output matrix is Q6_K (Q8_0 in Q8_0 \
            files, or where its rows are not whole 256-blocks); Q4_K_S gives the first four attn_v \
            and the first eighth of ffn_down Q5_K; Q4_K_M and Q5_K_M give attn_v and ffn_down Q6_K \
            in the first and last eighths of the layers and every third layer between; Q2_K gives \
            attn_output and ffn_down Q3_K and attn_v Q3_K (Q4_K with 4+ query heads per key/value \
            head); Q3_K_M gives attn_output Q4_K, ffn_down Q4_K (Q5_K in the first sixteenth of the \
            layers) and attn_v Q5_K in the first two layers, Q4_K after; Q3_K_L gives all three \
            Q5_K; IQ4_NL gives the first eighth of ffn_down Q5_K, and attn_v with 4+ query heads \
            per key/value head. With 80 layers and grouped-query attention (llama.cpp's 70B), a Q3_K or Q4_K \
            attn_v becomes Q5_K. Rows that are not whole 256-blocks take Q4_0 for Q2_K and Q3_K, \
            Q5_0 for Q4_K, Q5_1 for Q5_K, Q8_0 for Q6_K, and F16 where even 32-blocks do not fit. \
            Q4_K is Q4_K everywhere but the output (llama.cpp's Q4_K means Q4_K_M). The file is \
            written atomically, with progress.
            """)

    @Argument(help: "Input model.")
    var input: String
    @Argument(help: "Output GGUF file.")
    var output: String
    @Argument(help: "Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, F16, BF16 or F32.")
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
