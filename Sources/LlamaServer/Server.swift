import Foundation
import Hummingbird
import Llama
import Logging

/// How `OpenAIServer` listens and what a request gets when it does not say.
public struct ServerOptions: Sendable {
    public var host = "127.0.0.1"
    /// 0: any free port (`onRunning` tells which).
    public var port = 8080
    /// When set, every route but /health needs `Authorization: Bearer <key>`.
    public var apiKey: String?
    /// Larger request bodies get HTTP 413.
    public var maxBodyBytes = 1 << 20
    /// The name /v1/models lists and responses carry.
    public var modelName = "llama"
    /// Sampling when a request does not set a field (its seed: random per request).
    public var sampling = SamplingOptions()
    /// `max_tokens` when a request does not set it: nil = until the context is full (chat);
    /// completions default to OpenAI's 16.
    public var maxTokens: Int?
    public var chatFormat = ChatFormat.chatml
    public var defaultSystem: String?

    public init() {}
}

/// An OpenAI-compatible HTTP API over a `BatchScheduler`: /v1/chat/completions and
/// /v1/completions (plain JSON or Server-Sent Events), /v1/models, /tokenize, /detokenize,
/// /health and /metrics (Prometheus text).
public final class OpenAIServer: Sendable {
    public let scheduler: BatchScheduler
    public let options: ServerOptions
    let logger: Logger
    let created = Int(Date().timeIntervalSince1970)
    let counters = Counters()

    public init(scheduler: BatchScheduler, options: ServerOptions, logger: Logger = Logger(label: "llama.serve")) {
        self.scheduler = scheduler
        self.options = options
        self.logger = logger
    }

    var tokenizer: any Tokenizer { scheduler.model.tokenizer }

    /// Serves until the task is cancelled or, with `handleSignals`, SIGINT/SIGTERM arrives; then
    /// stops accepting connections, lets running requests finish, and stops the scheduler.
    public func run(handleSignals: Bool = true, onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let app = Application(
            router: router(),
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "llama.swift"),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
        do {
            if handleSignals {
                try await app.runService()
            } else {
                try await app.run()
            }
        } catch {
            scheduler.shutdown(cancelRunning: true)
            throw error
        }
        scheduler.shutdown(cancelRunning: true)
    }

    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: AuthMiddleware(key: options.apiKey))
        router.get("health") { _, _ in Self.json(["status": "ok"]) }
        router.get("v1/models") { [self] _, _ in
            Self.json(["object": "list",
                       "data": [["id": options.modelName, "object": "model", "created": created, "owned_by": "llama.swift"]]])
        }
        router.get("metrics") { [self] _, _ in metrics() }
        router.post("v1/chat/completions") { [self] request, _ in await handle(request, kind: .chat) }
        router.post("v1/completions") { [self] request, _ in await handle(request, kind: .completion) }
        router.post("tokenize") { [self] request, _ in await tokenize(request) }
        router.post("detokenize") { [self] request, _ in await detokenize(request) }
        return router
    }

    // MARK: - Errors and JSON

    /// An OpenAI-style error response.
    struct APIError: Error {
        var status: HTTPResponse.Status
        var message: String
        var type = "invalid_request_error"
        var param: String?
        var code: String?
        var headers: HTTPFields = [:]

        static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
            APIError(status: .badRequest, message: message, param: param, code: code)
        }

        var response: Response {
            var r = OpenAIServer.json(["error": ["message": message, "type": type, "param": param as Any? ?? NSNull(), "code": code as Any? ?? NSNull()]],
                                      status: status)
            r.headers.append(contentsOf: headers)
            return r
        }
    }

    static func json(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func jsonText(_ object: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// The request body as a JSON object, within the size limit.
    func body(_ request: Request) async throws -> [String: JSONValue] {
        var request = request
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: options.maxBodyBytes)
        } catch {
            throw APIError(status: .contentTooLarge, message: "the request body is larger than \(options.maxBodyBytes) bytes")
        }
        let data = Data(buffer.readableBytesView)
        guard let value = try? JSONValue.parse(data) else { throw APIError.invalid("the request body is not valid JSON") }
        guard let object = value.object else { throw APIError.invalid("the request body must be a JSON object") }
        return object
    }

    // MARK: - Completions

    enum Kind { case chat, completion }

    /// A parsed generation request.
    struct Parsed {
        var prompt: [Int]
        var options: GenerationOptions
        var stream: Bool
        var includeUsage: Bool
        var topLogprobs: Int?
    }

    func parse(_ body: [String: JSONValue], kind: Kind) throws -> Parsed {
        let fields = Fields(body)
        // Unknown fields are ignored (as llama-server does, so clients that send extras work);
        // known ones that would change the answer and are not implemented are refused.
        for key in ["tools", "functions", "tool_choice", "function_call", "suffix", "best_of"] {
            if let v = body[key], v != .null, v != .string("none"), v != .array([]) {
                throw APIError.invalid("'\(key)' is not supported", param: key)
            }
        }
        if let bias = body["logit_bias"], bias != .null, bias != .object([:]) {
            throw APIError.invalid("'logit_bias' is not supported", param: "logit_bias")
        }
        if let format = body["response_format"], format != .null, format.object?["type"] != .string("text") {
            throw APIError.invalid("'response_format' other than {\"type\": \"text\"} is not supported", param: "response_format")
        }
        if let n = try fields.int("n", in: 1...128), n != 1 { throw APIError.invalid("only n = 1 is supported", param: "n") }
        var prompt: [Int]
        switch kind {
        case .chat:
            guard let raw = body["messages"] else { throw APIError.invalid("'messages' is required", param: "messages") }
            guard let list = raw.array, !list.isEmpty else { throw APIError.invalid("'messages' must be a non-empty array", param: "messages") }
            var messages: [ChatMessage] = []
            for (i, item) in list.enumerated() {
                let param = "messages[\(i)]"
                guard let m = item.object else { throw APIError.invalid("\(param) must be an object", param: param) }
                guard let roleText = m["role"]?.string else { throw APIError.invalid("\(param).role must be a string", param: param + ".role") }
                let role: ChatMessage.Role
                switch roleText {
                case "system", "developer": role = .system
                case "user": role = .user
                case "assistant": role = .assistant
                default:
                    throw APIError.invalid("\(param).role '\(roleText)' is not one of system, developer, user, assistant", param: param + ".role")
                }
                messages.append(ChatMessage(role, try Self.content(m["content"], param: param + ".content")))
            }
            guard messages.last?.role == .user else {
                throw APIError.invalid("the last message must come from the user", param: "messages")
            }
            do {
                prompt = try options.chatFormat.render(messages, tokenizer: tokenizer, defaultSystem: options.defaultSystem)
            } catch {
                throw APIError.invalid("the messages cannot be rendered in the \(options.chatFormat.rawValue) format: \(error)", param: "messages")
            }
        case .completion:
            guard let raw = body["prompt"] else { throw APIError.invalid("'prompt' is required", param: "prompt") }
            if let text = raw.string ?? (raw.array?.count == 1 ? raw.array![0].string : nil) {
                guard !text.isEmpty else { throw APIError.invalid("'prompt' is empty", param: "prompt") }
                prompt = tokenizer.encode(text, addBOS: tokenizer.addsBOS, parseSpecial: false)
            } else if let ids = raw.array, !ids.isEmpty, ids.allSatisfy({ $0.int != nil }) {
                prompt = ids.map { $0.int! }
                if let bad = prompt.first(where: { $0 < 0 || $0 >= tokenizer.vocabSize }) {
                    throw APIError.invalid("token \(bad) is outside the vocabulary of \(tokenizer.vocabSize)", param: "prompt")
                }
            } else {
                throw APIError.invalid("'prompt' must be a string, an array of one string, or an array of token ids", param: "prompt")
            }
            if try fields.bool("echo") == true { throw APIError.invalid("'echo' is not supported", param: "echo") }
        }
        let context = scheduler.contextLength
        guard prompt.count < context else {
            throw APIError.invalid("the prompt is \(prompt.count) tokens; this server's context is \(context) tokens",
                                   param: kind == .chat ? "messages" : "prompt", code: "context_length_exceeded")
        }

        var o = GenerationOptions()
        var s = options.sampling
        s.seed = UInt64.random(in: 0...UInt64.max)
        if let t = try fields.double("temperature", in: 0...2) { s.temperature = Float(t) }
        if let p = try fields.double("top_p", in: 0...1) { s.topP = Float(p) }
        if let k = try fields.int("top_k", in: 0...1_000_000) { s.topK = k }
        if let p = try fields.double("min_p", in: 0...1) { s.minP = Float(p) }
        if let p = try fields.double("frequency_penalty", in: -2...2) { s.frequencyPenalty = Float(p) }
        if let p = try fields.double("presence_penalty", in: -2...2) { s.presencePenalty = Float(p) }
        if let p = try fields.double("repeat_penalty", in: 0.0001...10) { s.repeatPenalty = Float(p) }
        if let seed = try fields.int("seed", in: Int.min...Int.max) { s.seed = UInt64(bitPattern: Int64(seed)) }
        o.sampling = s
        let room = context - prompt.count
        let requested = try fields.int("max_completion_tokens", in: 1...Int.max) ?? fields.int("max_tokens", in: 1...Int.max)
        o.maxTokens = min(requested ?? options.maxTokens ?? (kind == .chat ? room : 16), room)
        if let stop = body["stop"], stop != .null {
            if let one = stop.string {
                o.stopStrings = [one]
            } else if let list = stop.array, list.count <= 4, list.allSatisfy({ $0.string != nil }) {
                o.stopStrings = list.map { $0.string! }
            } else {
                throw APIError.invalid("'stop' must be a string or an array of at most 4 strings", param: "stop")
            }
        }
        o.stopTokens = kind == .chat ? options.chatFormat.stopTokens(tokenizer) : Set(tokenizer.eosID.map { [$0] } ?? [])
        var topLogprobs: Int?
        switch kind {
        case .chat:
            let top = try fields.int("top_logprobs", in: 0...20)
            if try fields.bool("logprobs") == true {
                topLogprobs = top ?? 0
            } else if top != nil {
                throw APIError.invalid("'top_logprobs' needs 'logprobs': true", param: "top_logprobs")
            }
        case .completion:
            topLogprobs = try fields.int("logprobs", in: 0...5)
        }
        let stream = try fields.bool("stream") ?? false
        var includeUsage = false
        if let so = body["stream_options"], so != .null {
            guard let object = so.object else { throw APIError.invalid("'stream_options' must be an object", param: "stream_options") }
            includeUsage = try Fields(object).bool("include_usage") ?? false
        }
        return Parsed(prompt: prompt, options: o, stream: stream, includeUsage: includeUsage, topLogprobs: topLogprobs)
    }

    /// A message's text: a string or an array of text parts.
    static func content(_ value: JSONValue?, param: String) throws -> String {
        guard let value, value != .null else { throw APIError.invalid("\(param) is required", param: param) }
        if let s = value.string { return s }
        if let parts = value.array {
            return try parts.enumerated().map { i, part in
                guard let p = part.object, p["type"]?.string == "text", let text = p["text"]?.string else {
                    throw APIError.invalid("\(param)[\(i)] must be a {\"type\": \"text\", \"text\": …} part", param: "\(param)[\(i)]")
                }
                return text
            }.joined()
        }
        throw APIError.invalid("\(param) must be a string or an array of text parts", param: param)
    }

    func handle(_ request: Request, kind: Kind) async -> Response {
        let started = DispatchTime.now()
        let parsed: Parsed
        do {
            parsed = try parse(try await body(request), kind: kind)
        } catch let e as APIError {
            counters.add(\.errors)
            return e.response
        } catch {
            counters.add(\.errors)
            return APIError.invalid("\(error)").response
        }
        let id = (kind == .chat ? "chatcmpl-" : "cmpl-") + Self.randomID()
        let (events, continuation) = AsyncStream<BatchScheduler.Event>.makeStream()
        let job: Int
        do {
            job = try scheduler.submit(.init(prompt: parsed.prompt, options: parsed.options, topLogprobs: parsed.topLogprobs)) { event in
                continuation.yield(event)
                switch event {
                case .done, .failed: continuation.finish()
                case .piece: break
                }
            }
        } catch let busy as BatchScheduler.Busy {
            counters.add(\.errors)
            var e = APIError(status: .serviceUnavailable, message: "\(busy); retry later", type: "server_error", code: "overloaded")
            e.headers[.retryAfter] = "1"
            return e.response
        } catch {
            counters.add(\.errors)
            return APIError.invalid("\(error)").response
        }
        let created = Int(Date().timeIntervalSince1970)
        let log: @Sendable (BatchScheduler.Completion) -> Void = { [logger] c in
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
            logger.info("\(id) \(kind == .chat ? "chat" : "completion") prompt \(c.promptTokens) (\(c.cachedPromptTokens) cached) completion \(c.completionTokens) \(c.finishReason.rawValue) \(String(format: "%.2fs %.1f tok/s", seconds, c.generationSeconds > 0 ? Double(c.completionTokens) / c.generationSeconds : 0))")
        }
        if parsed.stream {
            return streamResponse(id: id, job: job, kind: kind, created: created, parsed: parsed, events: events, log: log)
        }
        // Not streamed: collect the answer; a client that goes away cancels it.
        var text = ""
        var logprobs: [BatchScheduler.Piece] = []
        var completion: BatchScheduler.Completion?
        var failure: String?
        await withTaskCancellationHandler {
            for await event in events {
                switch event {
                case .piece(let p):
                    text += p.text
                    if parsed.topLogprobs != nil { logprobs.append(p) }
                case .done(let c):
                    text += c.tail
                    completion = c
                case .failed(let why): failure = why
                }
            }
        } onCancel: { [scheduler] in scheduler.cancel(job) }
        guard let c = completion else {
            return APIError(status: .internalServerError, message: failure ?? "generation failed", type: "server_error").response
        }
        log(c)
        let usage = Self.usage(c)
        let finish: Any = c.finishReason == .cancelled ? NSNull() : c.finishReason.rawValue
        switch kind {
        case .chat:
            var choice: [String: Any] = ["index": 0, "message": ["role": "assistant", "content": text], "finish_reason": finish]
            choice["logprobs"] = parsed.topLogprobs == nil ? NSNull() : ["content": logprobs.map(chatLogprob)]
            return Self.json(["id": id, "object": "chat.completion", "created": created, "model": options.modelName,
                              "choices": [choice], "usage": usage, "system_fingerprint": "llama.swift"])
        case .completion:
            var choice: [String: Any] = ["index": 0, "text": text, "finish_reason": finish]
            choice["logprobs"] = parsed.topLogprobs == nil ? NSNull() : completionLogprobs(logprobs, offset: 0)
            return Self.json(["id": id, "object": "text_completion", "created": created, "model": options.modelName,
                              "choices": [choice], "usage": usage, "system_fingerprint": "llama.swift"])
        }
    }

    func streamResponse(id: String, job: Int, kind: Kind, created: Int, parsed: Parsed, events: AsyncStream<BatchScheduler.Event>,
                        log: @escaping @Sendable (BatchScheduler.Completion) -> Void) -> Response {
        let model = options.modelName
        let object = kind == .chat ? "chat.completion.chunk" : "text_completion"
        let includeUsage = parsed.includeUsage
        let wantsLogprobs = parsed.topLogprobs != nil
        let scheduler = scheduler
        @Sendable func chunk(_ choice: [String: Any]?, usage: Any? = nil) -> ByteBuffer {
            var c: [String: Any] = ["id": id, "object": object, "created": created, "model": model,
                                    "choices": choice.map { [$0] } ?? [], "system_fingerprint": "llama.swift"]
            if includeUsage { c["usage"] = usage ?? NSNull() }
            return ByteBuffer(string: "data: " + Self.jsonText(c) + "\n\n")
        }
        let body = ResponseBody { [self] writer in
            var ended = false
            do {
                if kind == .chat {
                    try await writer.write(chunk(["index": 0, "delta": ["role": "assistant", "content": ""], "logprobs": NSNull(),
                                                  "finish_reason": NSNull()]))
                }
                var pending: [BatchScheduler.Piece] = []  // tokens whose text is not out yet
                var offset = 0
                func content(_ text: String) -> [String: Any] {
                    var choice: [String: Any] = ["index": 0, "finish_reason": NSNull()]
                    if kind == .chat {
                        choice["delta"] = ["content": text]
                        choice["logprobs"] = wantsLogprobs ? ["content": pending.map(chatLogprob)] : NSNull()
                    } else {
                        choice["text"] = text
                        choice["logprobs"] = wantsLogprobs ? completionLogprobs(pending, offset: offset) : NSNull()
                    }
                    offset += text.utf8.count
                    pending = []
                    return choice
                }
                for await event in events {
                    switch event {
                    case .piece(let p):
                        pending.append(p)
                        if !p.text.isEmpty { try await writer.write(chunk(content(p.text))) }
                    case .done(let c):
                        ended = true
                        log(c)
                        if !c.tail.isEmpty || !pending.isEmpty { try await writer.write(chunk(content(c.tail))) }
                        let finish: Any = c.finishReason == .cancelled ? NSNull() : c.finishReason.rawValue
                        var last: [String: Any] = ["index": 0, "finish_reason": finish, "logprobs": NSNull()]
                        if kind == .chat { last["delta"] = [String: Any]() } else { last["text"] = "" }
                        try await writer.write(chunk(last))
                        if includeUsage { try await writer.write(chunk(nil, usage: Self.usage(c))) }
                    case .failed(let why):
                        ended = true
                        try await writer.write(ByteBuffer(string: "data: " + Self.jsonText(["error": ["message": why, "type": "server_error"]]) + "\n\n"))
                    }
                }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await writer.finish(nil)
            } catch {
                // The client went away: free the slot now.
                if !ended { scheduler.cancel(job) }
                throw error
            }
            if Task.isCancelled && !ended { scheduler.cancel(job) }
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }

    static func usage(_ c: BatchScheduler.Completion) -> [String: Any] {
        ["prompt_tokens": c.promptTokens, "completion_tokens": c.completionTokens, "total_tokens": c.promptTokens + c.completionTokens,
         "prompt_tokens_details": ["cached_tokens": c.cachedPromptTokens]]
    }

    func tokenText(_ token: Int) -> (String, [Int]) {
        let bytes = tokenizer.bytes(of: token)
        return (String(decoding: bytes, as: UTF8.self), bytes.map(Int.init))
    }

    /// JSON has no infinities; OpenAI reports -9999 for a probability of zero.
    static func finite(_ x: Float) -> Double { x.isFinite ? Double(x) : -9999 }

    func chatLogprob(_ p: BatchScheduler.Piece) -> [String: Any] {
        let (text, bytes) = tokenText(p.token)
        return ["token": text, "logprob": Self.finite(p.logprob?.logprob ?? 0), "bytes": bytes,
                "top_logprobs": p.top.map { t -> [String: Any] in
                    let (tt, tb) = tokenText(t.token)
                    return ["token": tt, "logprob": Self.finite(t.logprob), "bytes": tb]
                }]
    }

    func completionLogprobs(_ pieces: [BatchScheduler.Piece], offset: Int) -> [String: Any] {
        var offsets: [Int] = []
        var at = offset
        for p in pieces {
            offsets.append(at)
            at += p.text.utf8.count
        }
        return ["tokens": pieces.map { tokenText($0.token).0 },
                "token_logprobs": pieces.map { Self.finite($0.logprob?.logprob ?? 0) },
                "top_logprobs": pieces.map { p in
                    Dictionary(p.top.map { (tokenText($0.token).0, Self.finite($0.logprob)) }, uniquingKeysWith: { a, _ in a })
                },
                "text_offset": offsets]
    }

    static func randomID() -> String {
        (0..<12).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }

    // MARK: - Tokenizer routes (llama.cpp's llama-server shapes)

    func tokenize(_ request: Request) async -> Response {
        do {
            let b = try await body(request)
            guard let text = b["content"]?.string else { throw APIError.invalid("'content' must be a string", param: "content") }
            let fields = Fields(b)
            let special = try fields.bool("add_special") ?? false
            let parse = try fields.bool("parse_special") ?? true
            let ids = tokenizer.encode(text, addBOS: special && tokenizer.addsBOS, parseSpecial: parse)
            if try fields.bool("with_pieces") == true {
                return Self.json(["tokens": ids.map { ["id": $0, "piece": tokenText($0).0] }])
            }
            return Self.json(["tokens": ids])
        } catch let e as APIError {
            counters.add(\.errors)
            return e.response
        } catch {
            return APIError.invalid("\(error)").response
        }
    }

    func detokenize(_ request: Request) async -> Response {
        do {
            let b = try await body(request)
            guard let list = b["tokens"]?.array, list.allSatisfy({ $0.int != nil }) else {
                throw APIError.invalid("'tokens' must be an array of token ids", param: "tokens")
            }
            let ids = list.map { $0.int! }
            if let bad = ids.first(where: { $0 < 0 || $0 >= tokenizer.vocabSize }) {
                throw APIError.invalid("token \(bad) is outside the vocabulary of \(tokenizer.vocabSize)", param: "tokens")
            }
            return Self.json(["content": tokenizer.decode(ids, keepSpecial: false)])
        } catch let e as APIError {
            counters.add(\.errors)
            return e.response
        } catch {
            return APIError.invalid("\(error)").response
        }
    }

    // MARK: - Metrics

    final class Counters: @unchecked Sendable {
        struct Values { var errors = 0 }
        private let lock = NSLock()
        private var values = Values()
        func add(_ key: WritableKeyPath<Values, Int>, _ n: Int = 1) {
            lock.lock()
            values[keyPath: key] += n
            lock.unlock()
        }
        func read() -> Values {
            lock.lock()
            defer { lock.unlock() }
            return values
        }
    }

    func metrics() -> Response {
        let s = scheduler.snapshot()
        let c = counters.read()
        var lines: [String] = []
        func metric(_ name: String, _ type: String, _ help: String, _ value: Double) {
            lines += ["# HELP llama_\(name) \(help)", "# TYPE llama_\(name) \(type)",
                      "llama_\(name) \(value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value))"]
        }
        metric("requests_total", "counter", "Generation requests accepted.", Double(s.requests))
        metric("requests_rejected_total", "counter", "Requests refused because the queue was full (HTTP 503).", Double(s.rejected))
        metric("requests_cancelled_total", "counter", "Requests cancelled, mostly by clients that went away.", Double(s.cancelled))
        metric("request_errors_total", "counter", "Requests answered with an error (HTTP 4xx/5xx).", Double(c.errors))
        metric("prompt_tokens_total", "counter", "Prompt tokens of accepted requests.", Double(s.promptTokens))
        metric("prompt_tokens_cached_total", "counter", "Prompt tokens found in a slot's cache, not computed again.", Double(s.cachedPromptTokens))
        metric("prompt_seconds_total", "counter", "Time spent computing prompts.", s.promptSeconds)
        metric("tokens_generated_total", "counter", "Tokens generated.", Double(s.generatedTokens))
        metric("decode_steps_total", "counter", "Batched decoding steps.", Double(s.steps))
        metric("decode_seconds_total", "counter", "Time spent in batched decoding steps.", s.stepSeconds)
        metric("seconds_per_token", "gauge", "Mean decoding time per generated token.", s.generatedTokens > 0 ? s.stepSeconds / Double(s.generatedTokens) : 0)
        metric("requests_queued", "gauge", "Requests waiting for a slot.", Double(s.queued))
        metric("requests_active", "gauge", "Requests being decoded.", Double(s.active))
        metric("slots", "gauge", "Sequences decoded together at most.", Double(scheduler.slots))
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                        body: .init(byteBuffer: ByteBuffer(string: lines.joined(separator: "\n") + "\n")))
    }
}

/// Requires `Authorization: Bearer <key>` on every route but /health when a key is set.
struct AuthMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let key, request.uri.path != "/health" else { return try await next(request, context) }
        guard request.headers[.authorization] == "Bearer " + key else {
            var e = OpenAIServer.APIError(status: .unauthorized, message: "a valid API key is required (Authorization: Bearer …)",
                                          type: "authentication_error", code: "invalid_api_key")
            e.headers[.wwwAuthenticate] = "Bearer"
            return e.response
        }
        return try await next(request, context)
    }
}

/// Typed, range-checked reads of request fields, each failure naming its field.
struct Fields {
    let object: [String: JSONValue]
    init(_ object: [String: JSONValue]) { self.object = object }

    private func present(_ key: String) -> JSONValue? {
        guard let v = object[key], v != .null else { return nil }
        return v
    }

    func double(_ key: String, in range: ClosedRange<Double>) throws -> Double? {
        guard let v = present(key) else { return nil }
        guard let x = v.number, range.contains(x) else {
            throw OpenAIServer.APIError.invalid("'\(key)' must be a number in \(range.lowerBound)...\(range.upperBound)", param: key)
        }
        return x
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let v = present(key) else { return nil }
        guard let x = v.int, range.contains(x) else {
            let bounds = range.upperBound == Int.max ? "≥ \(range.lowerBound)" : "in \(range.lowerBound)...\(range.upperBound)"
            throw OpenAIServer.APIError.invalid("'\(key)' must be an integer \(range.lowerBound == Int.min ? "" : bounds)"
                .trimmingCharacters(in: .whitespaces), param: key)
        }
        return x
    }

    func bool(_ key: String) throws -> Bool? {
        guard let v = present(key) else { return nil }
        guard let b = v.bool else { throw OpenAIServer.APIError.invalid("'\(key)' must be true or false", param: key) }
        return b
    }
}
