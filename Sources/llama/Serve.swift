import ArgumentParser
import Foundation
import Llama
import LlamaServer
import Logging

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "An OpenAI-compatible HTTP server (chat and text completions, streaming, several requests decoded together).",
        discussion: """
            Routes: POST /v1/chat/completions, POST /v1/completions (Server-Sent Events with \
            "stream": true), GET /v1/models, POST /tokenize, POST /detokenize, GET /health, GET \
            /metrics (Prometheus). Up to --parallel requests are decoded together, one batched step \
            per token (continuous batching); up to --queue more wait, and beyond that requests get \
            HTTP 503 with Retry-After. A request goes to the free slot whose cache shares the \
            longest prefix with its prompt, so a chat continuing its history only computes the new \
            turn. Each slot has --ctx-size positions. Listens on 127.0.0.1 unless --host says \
            otherwise; with --api-key every route but /health needs "Authorization: Bearer KEY". \
            SIGINT/SIGTERM stop accepting connections and let running requests finish.
            """)

    @OptionGroup var model: ModelOptions
    @OptionGroup var sampling: SamplingOptionGroup

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"
    @Option(help: "Port (0: any free port, printed at start).")
    var port = 8080
    @Option(name: [.customShort("c"), .customLong("ctx-size")], help: "Context length of each slot, in tokens (default: the model's, at most 4096).")
    var ctxSize: Int?
    @Option(name: [.customShort("n"), .customLong("max-tokens")], help: "Default max_tokens when a chat request gives none (default: until the context is full; completions: 16, as OpenAI).")
    var maxTokens: Int?
    @Option(name: [.customShort("p"), .customLong("parallel")], help: "Requests decoded together.")
    var parallel = 4
    @Option(help: "Requests that may wait for a free slot.")
    var queue = 64
    @Option(help: "Require this key as a Bearer token (also read from $LLAMA_API_KEY).")
    var apiKey: String?
    @Option(help: "Largest request body, in bytes.")
    var maxBody = 1 << 20
    @Option(help: "Chat format: llama2, chatml or llama3 (default: from the model file).")
    var template: String?
    @Option(help: "Model name that /v1/models lists (default: the model's own).")
    var alias: String?

    func validate() throws {
        if parallel < 1 { throw ValidationError("--parallel must be at least 1") }
        if queue < 0 { throw ValidationError("--queue must be >= 0") }
        if !(0...65535).contains(port) { throw ValidationError("--port must be in 0...65535") }
        if let c = ctxSize, c < 2 { throw ValidationError("--ctx-size must be at least 2") }
        if let n = maxTokens, n < 1 { throw ValidationError("--max-tokens must be at least 1") }
        if maxBody < 1024 { throw ValidationError("--max-body must be at least 1024") }
    }

    func run() async throws {
        let m = try model.load()
        var options = ServerOptions()
        options.host = host
        options.port = port
        options.apiKey = apiKey ?? ProcessInfo.processInfo.environment["LLAMA_API_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        options.maxBodyBytes = maxBody
        options.modelName = alias ?? m.name
        options.sampling = sampling.options
        options.maxTokens = maxTokens
        options.chatFormat = try chatFormat(named: template, for: m)
        options.defaultSystem = ChatFormat.defaultSystemPrompt(template: m.chatTemplate)
        let context = ctxSize ?? min(m.config.contextLength, 4096)
        let scheduler = BatchScheduler(model: m, slots: parallel, contextLength: context, queueLimit: queue, pool: try model.pool())
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        let server = OpenAIServer(scheduler: scheduler, options: options)
        let banner = "\(m.name): \(options.chatFormat.rawValue) chat, \(parallel) slots × \(scheduler.contextLength) tokens; listening on http://\(host):"
        try await server.run { port in note(banner + String(port)) }
    }
}
