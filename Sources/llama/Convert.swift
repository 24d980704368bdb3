import ArgumentParser
import Foundation
import Llama
import LlamaKernels

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a model (Hugging Face directory, llama2.c .bin or GGUF) as a GGUF file in F32, F16 or BF16.",
        discussion: "The output loads in llama.cpp and here with the same logits; it is written atomically (temporary file, then rename).")

    @OptionGroup var model: ModelOptions

    @Option(name: [.short, .customLong("output")], help: "Output GGUF path.")
    var output: String

    @Option(help: "Tensor type: f32, f16 or bf16 (block formats: llama quantize).")
    var type: String = "f16"

    func run() throws {
        let types: [String: TensorType] = ["f32": .f32, "f16": .f16, "bf16": .bf16]
        guard let t = types[type.lowercased()] else { throw ValidationError("--type must be f32, f16 or bf16") }
        Interrupt.install()
        let m = try model.load()
        try Interrupt.stoppable { keepGoing in
            try GGUFExport.write(m, to: output, type: t, progress: tensorProgress("writing \(output)"), shouldContinue: keepGoing)
        }
        note("\nwrote \(output)")
    }
}
