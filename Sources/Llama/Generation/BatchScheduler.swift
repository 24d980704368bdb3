import Foundation
import LlamaKernels

/// Continuous batching: many generation requests decoded together by one model. A scheduler
/// thread owns a `Transformer` whose cache has one slot per parallel sequence; each step runs
/// one token of every active sequence as a single batch (each weight read once for all), new
/// requests join between steps, finished or cancelled ones leave at once. A slot keeps the
/// tokens it last held, and a request goes to the free slot sharing the longest prefix with its
/// prompt, so a chat continuing its history only computes the new turn.
public final class BatchScheduler: @unchecked Sendable {
    public struct Request: Sendable {
        public var prompt: [Int]
        public var options: GenerationOptions
        /// Report each token's log-probability with this many most likely alternatives (nil: none).
        public var topLogprobs: Int?

        public init(prompt: [Int], options: GenerationOptions, topLogprobs: Int? = nil) {
            self.prompt = prompt
            self.options = options
            self.topLogprobs = topLogprobs
        }
    }

    public struct TokenLogprob: Sendable, Equatable {
        public var token: Int
        /// Natural log of the model's probability (softmax of the raw logits).
        public var logprob: Float
    }

    /// One generated token and the text it released (empty while a character or a possible
    /// stop string is incomplete).
    public struct Piece: Sendable {
        public var token: Int
        public var text: String
        public var logprob: TokenLogprob?
        public var top: [TokenLogprob]
    }

    public struct Completion: Sendable {
        public var finishReason: FinishReason
        /// Text released at the end (held back for a stop string that did not come, or an
        /// unfinished character).
        public var tail: String
        public var promptTokens: Int
        /// Prompt tokens found in the slot's cache, not computed again.
        public var cachedPromptTokens: Int
        public var completionTokens: Int
        public var queueSeconds: Double
        public var promptSeconds: Double
        public var generationSeconds: Double
    }

    public enum Event: Sendable {
        case piece(Piece)
        case done(Completion)
        case failed(String)
    }

    /// The queue is full.
    public struct Busy: Error, CustomStringConvertible {
        public var queued: Int
        public var description: String { "the server is busy (\(queued) requests waiting)" }
    }

    /// Counters since start, for metrics.
    public struct Stats: Sendable {
        public var requests = 0
        public var cancelled = 0
        public var rejected = 0
        public var promptTokens = 0
        public var cachedPromptTokens = 0
        public var generatedTokens = 0
        public var steps = 0
        public var stepSeconds = 0.0
        public var promptSeconds = 0.0
        public var queued = 0
        public var active = 0
    }

    public let model: Model
    public let transformer: Transformer
    public var slots: Int { transformer.sequences }
    public var contextLength: Int { transformer.contextLength }
    /// Requests that may wait for a slot; beyond that `submit` throws `Busy`.
    public let queueLimit: Int

    private final class Job: @unchecked Sendable {
        let id: Int
        let request: Request
        let onEvent: @Sendable (Event) -> Void
        let submitted = DispatchTime.now()
        var cancelled = false  // under the scheduler's lock
        init(id: Int, request: Request, onEvent: @escaping @Sendable (Event) -> Void) {
            self.id = id
            self.request = request
            self.onEvent = onEvent
        }
    }

    private struct Active {
        let job: Job
        var sampler: Sampler
        var decoder: StreamingDecoder
        var stops: StopStringFilter
        var history: [Int]
        var logits: [Float]
        var generated = 0
        var cachedPrompt = 0
        var queueSeconds = 0.0
        var promptSeconds = 0.0
        var started = DispatchTime.now()
    }

    private let condition = NSCondition()
    private var queue: [Job] = []
    private var nextID = 0
    private var stopping = false
    private var stopped = false
    private var stats = Stats()
    // Owned by the scheduler thread.
    private var active: [Active?]
    private var cached: [[Int]]
    private var lastUsed: [Int]
    private var uses = 0

    public init(model: Model, slots: Int, contextLength: Int? = nil, queueLimit: Int = 64, pool: ThreadPool = .shared) {
        self.model = model
        transformer = Transformer(weights: model.weights, contextLength: contextLength, maxBatch: max(32, slots), sequences: slots, pool: pool)
        self.queueLimit = max(0, queueLimit)
        active = Array(repeating: nil, count: transformer.sequences)
        cached = Array(repeating: [], count: transformer.sequences)
        lastUsed = Array(repeating: 0, count: transformer.sequences)
        // The thread keeps the scheduler alive until `shutdown` ends it.
        let thread = Thread { self.loop() }
        thread.name = "llama.scheduler"
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Queues a request; `onEvent` is called on the scheduler thread with each token and then
    /// exactly once with `.done` or `.failed`. Returns an id for `cancel`. Throws `Busy` when
    /// the queue is full, `LlamaError.promptTooLong` when the prompt leaves no room to generate.
    @discardableResult
    public func submit(_ request: Request, onEvent: @escaping @Sendable (Event) -> Void) throws -> Int {
        guard !request.prompt.isEmpty else { throw LlamaError.invalidArgument("the prompt is empty") }
        guard request.prompt.count < contextLength else {
            throw LlamaError.promptTooLong(tokens: request.prompt.count, contextLength: contextLength)
        }
        for t in request.prompt where t < 0 || t >= model.config.vocabSize {
            throw LlamaError.invalidToken(t, vocabSize: model.config.vocabSize)
        }
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { throw LlamaError.cancelled(what: "the server is shutting down") }
        let free = active.count - stats.active
        guard queue.count < queueLimit + free else {
            stats.rejected += 1
            throw Busy(queued: queue.count)
        }
        nextID += 1
        queue.append(Job(id: nextID, request: request, onEvent: onEvent))
        stats.requests += 1
        stats.queued = queue.count
        condition.signal()
        return nextID
    }

    /// Stops a request (queued or running); its slot is free before the next step. It ends
    /// with `.done` and finish reason `.cancelled`.
    public func cancel(_ id: Int) {
        condition.lock()
        defer { condition.unlock() }
        if let i = queue.firstIndex(where: { $0.id == id }) {
            let job = queue.remove(at: i)
            stats.cancelled += 1
            stats.queued = queue.count
            job.onEvent(.done(Completion(finishReason: .cancelled, tail: "", promptTokens: job.request.prompt.count, cachedPromptTokens: 0,
                                         completionTokens: 0, queueSeconds: Self.seconds(since: job.submitted), promptSeconds: 0,
                                         generationSeconds: 0)))
        }
        for case let a? in active where a.job.id == id { a.job.cancelled = true }
        condition.signal()
    }

    public func snapshot() -> Stats {
        condition.lock()
        defer { condition.unlock() }
        return stats
    }

    /// Stops taking requests; running and queued ones finish (`cancelRunning`: end now, as
    /// cancelled). Returns when the scheduler thread has ended.
    public func shutdown(cancelRunning: Bool = false) {
        condition.lock()
        stopping = true
        if cancelRunning {
            for job in queue { job.cancelled = true }
            for case let a? in active { a.job.cancelled = true }
        }
        condition.broadcast()
        while !stopped { condition.wait() }
        condition.unlock()
    }

    // MARK: - The scheduler thread

    private func loop() {
        while true {
            condition.lock()
            while queue.isEmpty && stats.active == 0 && !stopping { condition.wait() }
            if stopping && queue.isEmpty && stats.active == 0 {
                stopped = true
                condition.broadcast()
                condition.unlock()
                return
            }
            // Admit queued requests into free slots, best prefix match first.
            var admitted: [(slot: Int, job: Job)] = []
            while !queue.isEmpty, let slot = bestFreeSlot(for: queue[0].request.prompt, excluding: admitted.map(\.slot)) {
                admitted.append((slot, queue.removeFirst()))
            }
            stats.active += admitted.count
            stats.queued = queue.count
            // Jobs cancelled before they ran end here.
            var cancelledNow: [(Int, Job)] = []
            for (slot, job) in admitted where job.cancelled { cancelledNow.append((slot, job)) }
            condition.unlock()

            for (slot, job) in admitted {
                if cancelledNow.contains(where: { $0.0 == slot }) {
                    finish(slot: slot, state: Active(job: job, sampler: Sampler(job.request.options.sampling),
                                                     decoder: StreamingDecoder(tokenizer: model.tokenizer), stops: StopStringFilter([]),
                                                     history: job.request.prompt, logits: []), reason: .cancelled, tail: "")
                    continue
                }
                start(job, in: slot)
            }
            decodeStep()
        }
    }

    /// The free slot whose cached tokens share the longest prefix with `prompt`; among equals,
    /// the least recently used (its cache is the least likely to be wanted again).
    private func bestFreeSlot(for prompt: [Int], excluding taken: [Int]) -> Int? {
        var best: Int?
        var bestLength = -1
        for s in active.indices where active[s] == nil && !taken.contains(s) {
            let n = zip(cached[s], prompt).prefix { $0 == $1 }.count
            if n > bestLength || (n == bestLength && lastUsed[s] < lastUsed[best!]) {
                best = s
                bestLength = n
            }
        }
        return best
    }

    private func start(_ job: Job, in slot: Int) {
        let prompt = job.request.prompt
        let t0 = DispatchTime.now()
        uses += 1
        lastUsed[slot] = uses
        // Always recompute the last prompt token, for its logits.
        let keep = min(zip(cached[slot], prompt).prefix { $0 == $1 }.count, prompt.count - 1)
        cached[slot] = Array(prompt[..<keep])
        var state = Active(job: job, sampler: Sampler(job.request.options.sampling), decoder: StreamingDecoder(tokenizer: model.tokenizer),
                           stops: StopStringFilter(job.request.options.stopStrings), history: prompt, logits: [])
        state.queueSeconds = Self.seconds(since: job.submitted)
        state.cachedPrompt = keep
        do {
            try transformer.forward(tokens: Array(prompt[keep...]), startPosition: keep, sequence: slot)
        } catch {
            cached[slot] = []
            condition.lock()
            stats.active -= 1
            condition.unlock()
            job.onEvent(.failed("\(error)"))
            return
        }
        cached[slot] = prompt
        state.logits = transformer.logits
        state.promptSeconds = Self.seconds(since: t0)
        state.started = DispatchTime.now()
        condition.lock()
        stats.promptTokens += prompt.count
        stats.cachedPromptTokens += keep
        stats.promptSeconds += state.promptSeconds
        condition.unlock()
        active[slot] = state
    }

    /// Samples the next token of every active sequence, then runs those that go on as one batch.
    private func decodeStep() {
        var entries: [(sequence: Int, token: Int, position: Int)] = []
        var sampled = 0
        defer {
            condition.lock()
            stats.generatedTokens += sampled
            condition.unlock()
        }
        condition.lock()
        let cancelled = active.indices.filter { active[$0]?.job.cancelled == true }
        condition.unlock()
        for slot in active.indices {
            guard var s = active[slot] else { continue }
            if cancelled.contains(slot) {
                finish(slot: slot, state: s, reason: .cancelled, tail: "")
                continue
            }
            let options = s.job.request.options
            if s.generated >= options.maxTokens || s.history.count >= contextLength {
                let (tail, stopped) = release(&s)
                finish(slot: slot, state: s, reason: stopped ? .stop : .length, tail: tail)
                continue
            }
            let token = s.sampler.sample(s.logits, history: s.history)
            if options.stopTokens.contains(token) || token == model.tokenizer.eosID {
                finish(slot: slot, state: s, reason: .stop, tail: release(&s).0)
                continue
            }
            var piece = Piece(token: token, text: "", logprob: nil, top: [])
            if let n = s.job.request.topLogprobs { (piece.logprob, piece.top) = Self.logprobs(s.logits, chosen: token, top: n) }
            s.generated += 1
            sampled += 1
            s.history.append(token)
            let (text, stopped) = s.stops.push(s.decoder.append(token))
            piece.text = text
            s.job.onEvent(.piece(piece))
            if stopped {
                finish(slot: slot, state: s, reason: .stop, tail: "")
                continue
            }
            if s.generated >= options.maxTokens || s.history.count >= contextLength {
                // The last token: no need to run it.
                let (tail, stopped) = release(&s)
                finish(slot: slot, state: s, reason: stopped ? .stop : .length, tail: tail)
                continue
            }
            active[slot] = s
            entries.append((slot, token, s.history.count - 1))
        }
        guard !entries.isEmpty else { return }
        let t0 = DispatchTime.now()
        do {
            let logits = try transformer.step(entries)
            let v = model.config.vocabSize
            for (row, e) in entries.enumerated() {
                active[e.sequence]!.logits = Array(logits[(row * v)..<((row + 1) * v)])
                cached[e.sequence].append(e.token)
            }
        } catch {
            for e in entries {
                let job = active[e.sequence]!.job
                active[e.sequence] = nil
                cached[e.sequence] = []
                job.onEvent(.failed("\(error)"))
            }
            condition.lock()
            stats.active -= entries.count
            condition.unlock()
            return
        }
        condition.lock()
        stats.steps += 1
        stats.stepSeconds += Self.seconds(since: t0)
        condition.unlock()
    }

    /// Text held back at the end: released unless a stop string was reached.
    private func release(_ s: inout Active) -> (String, Bool) {
        let (tail, stopped) = s.stops.push(s.decoder.finish())
        return (tail + (stopped ? "" : s.stops.flush()), stopped)
    }

    private func finish(slot: Int, state s: Active, reason: FinishReason, tail: String) {
        active[slot] = nil
        // The slot keeps what its cache holds (prompt and the tokens run), for the next request.
        let completion = Completion(finishReason: reason, tail: tail, promptTokens: s.job.request.prompt.count,
                                    cachedPromptTokens: s.cachedPrompt, completionTokens: s.generated, queueSeconds: s.queueSeconds,
                                    promptSeconds: s.promptSeconds, generationSeconds: Self.seconds(since: s.started))
        condition.lock()
        stats.active -= 1
        if reason == .cancelled { stats.cancelled += 1 }
        condition.unlock()
        s.job.onEvent(.done(completion))
    }

    /// Log-probability of `chosen` and the `top` most likely tokens, from raw logits.
    static func logprobs(_ logits: [Float], chosen: Int, top: Int) -> (TokenLogprob, [TokenLogprob]) {
        var maxLogit = -Float.infinity
        for x in logits where x > maxLogit { maxLogit = x }
        var sum: Double = 0
        for x in logits { sum += Double(expf(x - maxLogit)) }
        let logZ = maxLogit + Float(log(sum))
        var best: [TokenLogprob] = []
        if top > 0 {
            // A small insertion-sorted list; top is at most 20.
            for (i, x) in logits.enumerated() where best.count < top || x > best.last!.logprob {
                let entry = TokenLogprob(token: i, logprob: x)
                let at = best.firstIndex { $0.logprob < x } ?? best.count
                best.insert(entry, at: at)
                if best.count > top { best.removeLast() }
            }
            for i in best.indices { best[i].logprob -= logZ }
        }
        return (TokenLogprob(token: chosen, logprob: logits[chosen] - logZ), best)
    }

    private static func seconds(since t: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - t.uptimeNanoseconds) / 1e9
    }
}
