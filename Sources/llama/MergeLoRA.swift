import ArgumentParser
import Foundation
import Llama

struct MergeLoRA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge-lora",
        abstract: "Merge LoRA adapters (a PEFT directory: ours or Hugging Face PEFT's) into a model and write a GGUF.",
        discussion: """
            Adds (alpha / r) · B A to every adapted projection of --model (dequantised to Float32) and \
            writes --out as a GGUF of --type with the model's tokenizer and chat template, atomically. \
            The adapter directory holds adapter_config.json and adapter_model.safetensors, as \
            `llama sft --lora-rank` and PEFT's save_pretrained write them. Tensors saved beside the \
            adapters as modules to save (a reward model's score head) have no place in a GGUF \
            language model and are reported, not merged.
            """)

    @OptionGroup var model: ModelOptions

    @Option(help: "PEFT adapter directory.")
    var adapter: String

    @Option(name: [.short, .long], help: "Output GGUF file.")
    var out: String

    @Option(help: "Type of the written tensors: f32, f16 or bf16.")
    var type: ExportType = .f32

    func run() throws {
        let m = try model.load()
        let params = TrainableParameters(weights: m.weights)
        let (lora, others, file) = try LoRAAdapters.load(directory: adapter, model: m.config)
        try withExtendedLifetime(file) {
            let c = lora.config
            note(String(format: "%@: rank %d, alpha %g, %d adapted projections (%@)", adapter, c.rank, Double(c.alpha),
                        lora.adapters.count, c.targets.map(\.rawValue).joined(separator: ",")))
            if !others.isEmpty { note("not merged (no place in a GGUF language model): " + others.keys.sorted().joined(separator: ", ")) }
            try lora.merge(into: params)
        }
        Interrupt.install()
        try Interrupt.stoppable { keepGoing in
            try GGUFExport.write(weights: try params.weights(), tokenizer: m.tokenizer, name: m.name + " + LoRA",
                                 chatTemplate: m.chatTemplate, source: adapter, to: out, recipe: GGUFExport.Recipe.uniform(type.tensorType)!,
                                 progress: tensorProgress("writing \(out)"), shouldContinue: keepGoing)
        }
        note("wrote \(out)")
    }
}
