import ArgumentParser
import Foundation
import Llama
import LlamaKernels

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a model as a GGUF file with quantized weights (like llama.cpp's llama-quantize).",
        discussion: """
            Input: a GGUF file (F32, F16, BF16 or already quantized), a Hugging Face directory or a \
            llama2.c .bin. Types: Q8_0, Q4_0, Q4_1 (ggml's reference quantizers, byte-identical to \
            the gguf package's), F16, BF16, F32. Norms stay F32; the output matrix of a 4-bit file is \
            Q8_0 (llama.cpp uses Q6_K, which this build cannot write yet). The file is written \
            atomically, with progress.
            """)

    @Argument(help: "Input model.")
    var input: String
    @Argument(help: "Output GGUF file.")
    var output: String
    @Argument(help: "Q8_0, Q4_0, Q4_1, F16, BF16 or F32.")
    var type: String

    @Option(help: "Tokenizer file to use instead of the model's own.")
    var tokenizer: String?

    func run() throws {
        guard let t = TensorType.allCases.first(where: { $0.description == type.uppercased() }),
              GGUFExport.fileTypes[t] != nil else {
            throw ValidationError("type must be one of \(GGUFExport.fileTypes.keys.map(\.description).sorted().joined(separator: ", "))")
        }
        let m = try Model(path: input, tokenizerPath: tokenizer)
        try GGUFExport.write(m, to: output, type: t, progress: tensorProgress("quantizing to \(t)"))
        let size = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        note(String(format: "\nwrote %@ (%.1f MiB)", output, Double(size) / 1048576))
    }
}
