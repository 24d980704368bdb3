import Foundation
import Llama
import LlamaKernels
import LlamaServer
import Logging
import XCTest
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `llama serve` end to end over loopback with a plain socket client (so tests can also send
/// malformed requests and hang up mid-stream): the OpenAI shapes, exact greedy answers under
/// concurrency, errors, the queue limit, cancellation by disconnect, and prefix reuse.
final class ServerTests: XCTestCase {
    /// A server on a free port for the duration of `body`.
    /// The tiny reference model unless `model` is given.
    private func withServer(slots: Int = 4, queue: Int = 16, apiKey: String? = nil, context: Int = 256, model: Model? = nil,
                            _ body: (Int, Model) async throws -> Void) async throws {
        let model = try model ?? Model(path: try SharedData.path("reference/ref-gqa-32k/ref-gqa-32k-f32.gguf"))
        let scheduler = BatchScheduler(model: model, slots: slots, contextLength: context, queueLimit: queue, pool: ThreadPool(threads: 1))
        var options = ServerOptions()
        options.port = 0
        options.apiKey = apiKey
        options.maxBodyBytes = 64 << 10
        options.modelName = "ref"
        options.chatFormat = .llama2
        var logger = Logger(label: "llama.serve.test")
        logger.logLevel = .critical  // cancelling the server task at the end logs channel errors
        let server = OpenAIServer(scheduler: scheduler, options: options, logger: logger)
        let port = PortBox()
        let task = Task { try await server.run(handleSignals: false) { await port.set($0) } }
        var p = 0
        for _ in 0..<500 where p == 0 {
            try await Task.sleep(nanoseconds: 10_000_000)
            p = await port.value
        }
        XCTAssertNotEqual(p, 0, "the server did not start")
        do {
            try await body(p, model)
        } catch {
            task.cancel()
            _ = try? await task.value
            throw error
        }
        task.cancel()
        _ = try? await task.value
    }

    actor PortBox {
        var value = 0
        func set(_ p: Int) { value = p }
    }

    private func greedy(_ model: Model, _ prompt: [Int], _ n: Int) throws -> String {
        var o = GenerationOptions()
        o.maxTokens = n
        o.sampling = .greedy
        if let eos = model.tokenizer.eosID { o.stopTokens = [eos] }
        return try Generator(model: model, contextLength: 256).generate(prompt: prompt, options: o).text
    }

    func testCompletionsMatchLocalGenerationStreamedOrNot() async throws {
        try await withServer { port, model in
            let prompts = ["Once upon a time", "The little dog", "One day, Lily", "Tom and his mom", "The sun was", "A big red ball"]
            // Six requests at once on four slots: every greedy answer is what `llama run` gives.
            let replies = try await withThrowingTaskGroup(of: (Int, HTTP.Reply).self) { group in
                for (i, p) in prompts.enumerated() {
                    group.addTask {
                        (i, try await HTTP.request(port: port, "POST", "/v1/completions",
                                             body: Data(#"{"prompt": "\#(p)", "max_tokens": 12, "temperature": 0}"#.utf8)))
                    }
                }
                var out: [Int: HTTP.Reply] = [:]
                for try await (i, r) in group { out[i] = r }
                return out
            }
            let results = try replies.mapValues { try $0.json() }
            for (i, p) in prompts.enumerated() {
                let ids = model.tokenizer.encode(p, addBOS: model.tokenizer.addsBOS, parseSpecial: false)
                let choice = (results[i]!["choices"] as! [[String: Any]])[0]
                XCTAssertEqual(choice["text"] as? String, try greedy(model, ids, 12), p)
                let usage = results[i]!["usage"] as! [String: Any]
                XCTAssertEqual(usage["prompt_tokens"] as? Int, ids.count)
                XCTAssertEqual(results[i]!["object"] as? String, "text_completion")
            }
            // Streamed: the deltas add up to the same text; usage comes last when asked for.
            let body: [String: Any] = ["prompt": prompts[0], "max_tokens": 12, "temperature": 0, "stream": true,
                                       "stream_options": ["include_usage": true]]
            let events = try await HTTP.request(port: port, "POST", "/v1/completions", json: body).events()
            XCTAssertEqual(events.last, "[DONE]")
            let chunks = try events.dropLast().map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
            let text = chunks.compactMap { ($0["choices"] as! [[String: Any]]).first?["text"] as? String }.joined()
            XCTAssertEqual(text, (results[0]!["choices"] as! [[String: Any]])[0]["text"] as? String)
            XCTAssertEqual((chunks.last!["usage"] as? [String: Any])?["completion_tokens"] as? Int, 12)
            XCTAssertEqual((chunks[chunks.count - 2]["choices"] as! [[String: Any]])[0]["finish_reason"] as? String, "length")
        }
    }

    func testChatSeedLogprobsAndPrefixReuse() async throws {
        try await withServer { port, _ in
            let messages: [[String: Any]] = [["role": "system", "content": "Be brief."], ["role": "user", "content": "Tell me a story."]]
            let body: [String: Any] = ["messages": messages, "max_tokens": 10, "temperature": 1.0, "seed": 42,
                                       "logprobs": true, "top_logprobs": 3]
            let a = try await HTTP.request(port: port, "POST", "/v1/chat/completions", json: body).json()
            let b = try await HTTP.request(port: port, "POST", "/v1/chat/completions", json: body).json()
            let choiceA = (a["choices"] as! [[String: Any]])[0], choiceB = (b["choices"] as! [[String: Any]])[0]
            let answer = (choiceA["message"] as! [String: Any])["content"] as! String
            XCTAssertEqual(answer, (choiceB["message"] as! [String: Any])["content"] as? String, "the same seed gives the same answer")
            let content = (choiceA["logprobs"] as! [String: Any])["content"] as! [[String: Any]]
            XCTAssertEqual(content.count, (a["usage"] as! [String: Any])["completion_tokens"] as? Int)
            for entry in content {
                let top = entry["top_logprobs"] as! [[String: Any]]
                XCTAssertEqual(top.count, 3)
                let lp = top.map { $0["logprob"] as! Double }
                XCTAssertEqual(lp, lp.sorted(by: >))
                XCTAssertLessThanOrEqual(entry["logprob"] as! Double, 0)
                XCTAssertLessThanOrEqual(entry["logprob"] as! Double, lp[0] + 1e-6)
            }
            // The second identical request found its prompt in a slot's cache.
            let cached = ((b["usage"] as! [String: Any])["prompt_tokens_details"] as! [String: Any])["cached_tokens"] as! Int
            XCTAssertGreaterThan(cached, 0)
            // A continuing conversation reuses the earlier turns.
            let next: [String: Any] = ["messages": messages + [["role": "assistant", "content": answer], ["role": "user", "content": "More."]],
                                       "max_tokens": 4]
            let c = try await HTTP.request(port: port, "POST", "/v1/chat/completions", json: next).json()
            let usage = c["usage"] as! [String: Any]
            XCTAssertGreaterThan((usage["prompt_tokens_details"] as! [String: Any])["cached_tokens"] as! Int, 10)
        }
    }

    func testMalformedRequestsGetJSONErrorsAndTheServerGoesOn() async throws {
        try await withServer(apiKey: "k") { port, _ in
            let auth = ["Authorization": "Bearer k"]
            let health = try await HTTP.request(port: port, "GET", "/health")
            XCTAssertEqual(health.status, 200)
            let denied = try await HTTP.request(port: port, "GET", "/v1/models")
            XCTAssertEqual(denied.status, 401)
            XCTAssertNotNil(try denied.json()["error"])
            let wrong = try await HTTP.request(port: port, "GET", "/v1/models", headers: ["Authorization": "Bearer wrong"])
            XCTAssertEqual(wrong.status, 401)
            let bad: [(String, String, String?)] = [
                ("/v1/chat/completions", "{", nil),
                ("/v1/chat/completions", "[]", nil),
                ("/v1/chat/completions", #"{"messages": []}"#, "messages"),
                ("/v1/chat/completions", #"{"messages": [{"role": "robot", "content": "x"}]}"#, "messages[0].role"),
                ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": 5}]}"#, "messages[0].content"),
                ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#, "temperature"),
                ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}"#, "max_tokens"),
                ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "x"}], "stop": [1]}"#, "stop"),
                ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "x"}], "n": 2}"#, "n"),
                ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}"#, "tools"),
                ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "x"}], "logit_bias": {"5": 10}}"#, "logit_bias"),
                ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#, "stream"),
                ("/v1/completions", #"{"prompt": [1, -4]}"#, "prompt"),
                ("/v1/completions", #"{"prompt": ""}"#, "prompt"),
                ("/v1/completions", "{\"prompt\": \"" + String(repeating: "word ", count: 400) + "\"}", "prompt"),
                ("/v1/completions", #"{"prompt": "x", "logprobs": 99}"#, "logprobs"),
                ("/detokenize", #"{"tokens": ["a"]}"#, "tokens"),
                ("/tokenize", #"{"text": "a"}"#, "content"),
            ]
            // Each kind several times over (a few hundred bad requests in all).
            for (path, body, param) in Array(repeating: bad, count: 12).joined() {
                let r = try await HTTP.request(port: port, "POST", path, headers: auth, body: Data(body.utf8))
                XCTAssertEqual(r.status, 400, "\(path) \(body.prefix(80))")
                let error = try r.json()["error"] as? [String: Any]
                XCTAssertNotNil(error?["message"] as? String, body)
                if let param { XCTAssertEqual(error?["param"] as? String, param, body) }
            }
            let long = try await HTTP.request(port: port, "POST", "/v1/completions", headers: auth,
                                        body: Data(("{\"prompt\": \"" + String(repeating: "word ", count: 400) + "\"}").utf8))
            XCTAssertEqual((try long.json()["error"] as? [String: Any])?["code"] as? String, "context_length_exceeded")
            let huge = try await HTTP.request(port: port, "POST", "/v1/completions", headers: auth,
                                        body: Data(("{\"prompt\": \"" + String(repeating: "x", count: 70_000) + "\"}").utf8))
            XCTAssertEqual(huge.status, 413)
            let nowhere = try await HTTP.request(port: port, "GET", "/nowhere", headers: auth)
            XCTAssertEqual(nowhere.status, 404)
            // Fields the server does not know are ignored, as llama-server does.
            let extra = try await HTTP.request(port: port, "POST", "/v1/completions", headers: auth,
                                               json: ["prompt": "Once", "max_tokens": 2, "frobnicate": 1, "user": "u"])
            XCTAssertEqual(extra.status, 200)
            // Garbage that is not HTTP, then a well-formed request still works.
            try await HTTP.raw(port: port, Data("NOT HTTP AT ALL\r\n\r\n".utf8))
            let ok = try await HTTP.request(port: port, "POST", "/v1/completions", headers: auth, json: ["prompt": "Once", "max_tokens": 3])
            XCTAssertEqual(ok.status, 200)
            let tokens = try await HTTP.request(port: port, "POST", "/tokenize", headers: auth, json: ["content": "Hello world"]).json()["tokens"] as! [Int]
            let text = try await HTTP.request(port: port, "POST", "/detokenize", headers: auth, json: ["tokens": tokens]).json()["content"] as? String
            XCTAssertEqual(text, "Hello world")
            let metrics = try await HTTP.request(port: port, "GET", "/metrics", headers: auth).text
            XCTAssertTrue(metrics.contains("llama_request_errors_total"), metrics)
        }
    }

    func testFullQueueGets503AndAHangUpFreesTheSlot() async throws {
        // The default model, slow enough (about 100 tokens/s here) that the long stream is
        // certainly still running when the second request comes.
        let model = try DefaultModelFixture.model.get()
        try await withServer(slots: 1, queue: 0, context: 512, model: model) { port, _ in
            // A long stream takes the only slot; the client reads a little, then hangs up.
            let body = try JSONSerialization.data(withJSONObject: ["prompt": "Once upon a time", "max_tokens": 400, "stream": true,
                                                                    "temperature": 0])
            let (socket, received) = try await HTTP.offPool { () throws -> (Int32, Int) in
                let socket = try HTTP.open(port: port)
                try HTTP.sendRequest(socket, "POST", "/v1/completions", headers: [:], body: body)
                var first = [UInt8](repeating: 0, count: 256)
                return (socket, recv(socket, &first, first.count, 0))
            }
            XCTAssertGreaterThan(received, 0)
            let busy = try await HTTP.request(port: port, "POST", "/v1/completions", json: ["prompt": "Hi", "max_tokens": 2])
            XCTAssertEqual(busy.status, 503)
            XCTAssertEqual(busy.headers["retry-after"], "1")
            close(socket)
            // The slot is free again well before the 400 tokens would have ended.
            var active = -1
            for _ in 0..<200 where active != 0 {
                try await Task.sleep(nanoseconds: 20_000_000)
                let m = try await HTTP.request(port: port, "GET", "/metrics").text
                active = Int(m.split(separator: "\n").first { $0.hasPrefix("llama_requests_active ") }!.split(separator: " ")[1])!
            }
            XCTAssertEqual(active, 0)
            let m = try await HTTP.request(port: port, "GET", "/metrics").text
            XCTAssertTrue(m.contains("llama_requests_cancelled_total 1"), m)
            XCTAssertTrue(m.contains("llama_requests_rejected_total 1"), m)
            let generated = Int(m.split(separator: "\n").first { $0.hasPrefix("llama_tokens_generated_total ") }!.split(separator: " ")[1])!
            XCTAssertLessThan(generated, 400)
            let after = try await HTTP.request(port: port, "POST", "/v1/completions", json: ["prompt": "Hi", "max_tokens": 2])
            XCTAssertEqual(after.status, 200)
        }
    }
}

/// A minimal HTTP/1.1 client over a blocking socket (Connection: close).
enum HTTP {
    struct Reply: Sendable {
        var status: Int
        var headers: [String: String]
        var body: Data
        var text: String { String(decoding: body, as: UTF8.self) }
        func json() throws -> [String: Any] {
            guard let o = try JSONSerialization.jsonObject(with: body) as? [String: Any] else { throw LlamaError.invalidArgument("not an object: \(text)") }
            return o
        }
        /// The `data:` payloads of a Server-Sent Events body.
        func events() -> [String] {
            text.components(separatedBy: "\n\n").compactMap { $0.hasPrefix("data: ") ? String($0.dropFirst(6)) : nil }
        }
    }

    static func open(port: Int) throws -> Int32 {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw LlamaError.invalidArgument("socket failed") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard r == 0 else {
            close(fd)
            throw LlamaError.invalidArgument("connect to port \(port) failed")
        }
        return fd
    }

    static func writeAll(_ fd: Int32, _ data: Data) throws {
        try data.withUnsafeBytes { (p: UnsafeRawBufferPointer) in
            var sent = 0
            while sent < p.count {
                let n = send(fd, p.baseAddress! + sent, p.count - sent, 0)
                guard n > 0 else { throw LlamaError.invalidArgument("send failed") }
                sent += n
            }
        }
    }

    static func sendRequest(_ fd: Int32, _ method: String, _ path: String, headers: [String: String], body: Data?) throws {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        try writeAll(fd, Data((head + "\r\n").utf8) + (body ?? Data()))
    }

    static func readAll(_ fd: Int32) -> Data {
        var out = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            out.append(contentsOf: buffer[0..<n])
        }
        return out
    }

    /// Runs a blocking call on its own thread: blocking the few threads Swift concurrency has
    /// would starve the server's own handlers.
    static func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            Thread { c.resume(with: Result { try work() }) }.start()
        }
    }

    static func request(port: Int, _ method: String, _ path: String, headers: [String: String] = [:], json: [String: Any]? = nil,
                        body: Data? = nil) async throws -> Reply {
        let payload = try json.map { try JSONSerialization.data(withJSONObject: $0) } ?? body
        return try await offPool { try blockingRequest(port: port, method, path, headers: headers, body: payload) }
    }

    static func blockingRequest(port: Int, _ method: String, _ path: String, headers: [String: String], body payload: Data?) throws -> Reply {
        let fd = try open(port: port)
        defer { close(fd) }
        try sendRequest(fd, method, path, headers: headers, body: payload)
        return try parse(readAll(fd))
    }

    /// Sends bytes as they are and reads whatever comes back.
    @discardableResult
    static func raw(port: Int, _ bytes: Data) async throws -> Data {
        try await offPool { try blockingRaw(port: port, bytes) }
    }

    static func blockingRaw(port: Int, _ bytes: Data) throws -> Data {
        let fd = try open(port: port)
        defer { close(fd) }
        try writeAll(fd, bytes)
        return readAll(fd)
    }

    static func parse(_ data: Data) throws -> Reply {
        guard let split = data.range(of: Data("\r\n\r\n".utf8)) else { throw LlamaError.invalidArgument("no HTTP header in \(data.count) bytes") }
        let head = String(decoding: data[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let status = Int(head[0].split(separator: " ")[1])!
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(data[split.upperBound...])
        if headers["transfer-encoding"] == "chunked" {
            var out = Data()
            var rest = body[...]
            while let lineEnd = rest.range(of: Data("\r\n".utf8)) {
                let size = Int(String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self), radix: 16) ?? 0
                if size == 0 { break }
                let start = lineEnd.upperBound
                out.append(rest[start..<(start + size)])
                rest = rest[(start + size + 2)...]
            }
            body = out
        }
        return Reply(status: status, headers: headers, body: body)
    }
}
