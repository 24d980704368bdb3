import Foundation
import LlamaKernels

public struct EvalOptions: Sendable {
    /// Evaluate only the first N items (the harness's `--limit`).
    public var limit: Int?
    /// Few-shot examples (default: the task's).
    public var shots: Int?
    /// Chooses the few-shot examples; the same seed gives the same prompts and results.
    public var seed: UInt64 = 1234
    /// Most generated tokens per item (default: the task's).
    public var maxTokens: Int?
    /// `code` tasks run model-written programs; they refuse to unless this is set.
    public var allowCodeExecution = false
    public var python = "python3"
    /// KV cache length (default: the model's, at most 4096).
    public var contextLength: Int?
    /// Compute with the weights dequantized to Float32 (`Model.dequantized`): agrees with
    /// lm-evaluation-harness running transformers on the same file, not with llama.cpp's
    /// 8-bit activations.
    public var float32 = false
    /// Generation tasks: put the whole prompt (few-shot examples included) in one user turn of
    /// this chat format and let the model answer as the assistant (the harness's
    /// `--apply_chat_template`). Nil: the plain prompt, as the harness does by default.
    public var chat: ChatFormat?

    public init() {}
}

/// One metric over a task: the mean of per-item scores, with the standard error of that mean
/// (sample standard deviation / √n, lm-evaluation-harness's `mean_stderr`).
public struct MetricResult: Sendable, Codable, Equatable {
    public var metric: String
    public var value: Double
    public var stderr: Double
    public var n: Int

    public init(metric: String, scores: [Double]) {
        self.metric = metric
        n = scores.count
        value = scores.isEmpty ? 0 : scores.reduce(0, +) / Double(n)
        if n > 1 {
            let mean = value
            let variance = scores.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1)
            stderr = (variance / Double(n)).squareRoot()
        } else {
            stderr = 0
        }
    }
}

/// What happened on one item, written as one JSON line of the records file.
public struct EvalRecord: Sendable, Codable {
    public var index: Int
    /// The item's line in the data file.
    public var line: Int
    public var prompt: String
    // multiple choice
    public var choices: [String]?
    public var gold: Int?
    public var logLikelihoods: [Double]?
    public var isGreedy: [Bool]?
    public var unconditionalLogLikelihoods: [Double]?
    // generate / code
    public var target: String?
    public var response: String?
    public var extracted: [String: String]?
    public var testOutput: String?
    /// Prompt tokens, those computed (the rest came from the cache), and tokens generated.
    public var promptTokens: Int?
    public var promptTokensComputed: Int?
    public var generatedTokens: Int?
    /// metric → this item's score (1 = right, 0 = wrong).
    public var scores: [String: Double]
    /// Context tokens dropped from the left to fit the context.
    public var truncatedTokens: Int?
}

public struct EvalProgress: Sendable {
    public let done: Int
    public let total: Int
    public let seconds: Double
    /// The first metric so far.
    public let metric: String
    public let value: Double
}

public struct EvalReport: Sendable, Codable {
    public var task: String
    public var model: String
    public var results: [MetricResult]
    public var items: Int
    /// Stopped before the last item (the results cover `items` items).
    public var interrupted: Bool
    public var seconds: Double
    /// Items whose prompt was cut from the left to fit the context.
    public var truncated: Int
    public var shots: Int?
    public var seed: UInt64
    /// The chat format the prompts went through (`--chat`), if any.
    public var chat: String?
    /// Computed in Float32 with dequantized weights (`--f32`).
    public var float32: Bool
}

/// Runs a task over a model: multiple choice by log-likelihood, generation with answer
/// extraction and exact match, or code generation checked by running the item's tests.
public final class Evaluator {
    public let model: Model
    public let task: EvalTaskDefinition
    public let options: EvalOptions
    let pool: ThreadPool
    let contextLength: Int

    public init(model: Model, task: EvalTaskDefinition, options: EvalOptions = EvalOptions(), pool: ThreadPool = .shared) throws {
        if let l = options.limit, l < 1 { throw LlamaError.invalidArgument("--limit must be at least 1") }
        if let s = options.shots, s < 0 { throw LlamaError.invalidArgument("--shots must be >= 0") }
        if let m = options.maxTokens, m < 1 { throw LlamaError.invalidArgument("--max-tokens must be at least 1") }
        if task.type == .code && !options.allowCodeExecution {
            throw LlamaError.invalidArgument("""
                \(task.task) runs the programs the model writes (in a python3 process, in a temporary directory, \
                with a timeout and sockets disabled, but not in a sandbox). Pass --allow-code-execution to accept that.
                """)
        }
        if task.type == .multipleChoice && options.chat != nil {
            throw LlamaError.invalidArgument("--chat is for generation tasks; \(task.task) scores choices after the plain prompt")
        }
        if task.type == .multipleChoice && (options.shots ?? 0) > 0 {
            throw LlamaError.invalidArgument("few-shot prompts are for generation tasks; \(task.task) is scored zero-shot")
        }
        self.model = options.float32 ? try model.dequantized() : model
        self.task = task
        self.options = options
        self.pool = pool
        contextLength = min(options.contextLength ?? min(model.config.contextLength, 4096), model.config.contextLength)
    }

    func path(_ relative: String) -> String {
        relative.hasPrefix("/") ? relative : task.baseDirectory + "/" + relative
    }

    /// Evaluates the task; `record` receives every item's record as it is scored.
    /// Stops early (reporting the items done) when `shouldContinue` returns false.
    public func run(shouldContinue: () -> Bool = { true }, progress: (EvalProgress) -> Void = { _ in },
                    record: (EvalRecord) throws -> Void = { _ in }) throws -> EvalReport {
        var docs = try EvalDocument.readAll(path: path(task.data))
        var labels: [Int?] = Array(repeating: nil, count: docs.count)
        if let labelsFile = task.labels {
            labels = try Self.readLabels(path(labelsFile), count: docs.count, dataFile: path(task.data))
        }
        if let limit = options.limit, limit < docs.count {
            docs = Array(docs[0..<limit])
            labels = Array(labels[0..<limit])
        }
        let start = DispatchTime.now().uptimeNanoseconds
        func elapsed() -> Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
        let metricNames: [String]
        var scores: [String: [Double]] = [:]
        var truncated = 0
        let step: (Int, EvalDocument, Int?) throws -> EvalRecord
        switch task.type {
        case .multipleChoice:
            metricNames = task.metrics
            let scorer = ChoiceScorer(model: model, transformer: Transformer(weights: model.weights, contextLength: contextLength, pool: pool))
            step = { index, doc, label in try self.multipleChoice(index, doc, label, scorer) }
        case .generate, .code:
            metricNames = task.type == .code ? ["pass@1"] : task.extract.map { "exact_match,\($0.name)" }
            let generator = Generator(model: model, contextLength: contextLength, pool: pool)
            let fewshot = try fewshotPrefix(excludingLinesOf: task.fewshotData == nil ? docs : [])
            let matcher = try AnswerMatcher(task)
            step = { index, doc, _ in try self.generate(index, doc, generator, fewshot: fewshot, matcher: matcher) }
        }
        var done = 0
        for (i, doc) in docs.enumerated() {
            guard shouldContinue() else { break }
            let r = try step(i, doc, labels[i])
            done += 1
            for (m, v) in r.scores { scores[m, default: []].append(v) }
            if r.truncatedTokens != nil { truncated += 1 }
            try record(r)
            let first = metricNames[0]
            let values = scores[first] ?? []
            progress(EvalProgress(done: i + 1, total: docs.count, seconds: elapsed(), metric: first,
                                  value: values.reduce(0, +) / Double(max(values.count, 1))))
        }
        return EvalReport(task: task.task, model: model.name,
                          results: metricNames.map { MetricResult(metric: $0, scores: scores[$0] ?? []) },
                          items: done, interrupted: done < docs.count, seconds: elapsed(), truncated: truncated,
                          shots: task.type == .multipleChoice ? nil : options.shots ?? task.shots, seed: options.seed,
                          chat: options.chat?.rawValue, float32: options.float32)
    }

    static func readLabels(_ file: String, count: Int, dataFile: String) throws -> [Int?] {
        guard let data = FileManager.default.contents(atPath: file) else { throw LlamaError.fileNotFound(file) }
        guard let text = String(data: data, encoding: .utf8) else { throw LlamaError.invalidUTF8(what: file) }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        while lines.last == "" { lines.removeLast() }
        guard lines.count == count else {
            throw LlamaError.invalidArgument("\(file) has \(lines.count) labels but \(dataFile) has \(count) items; they must be aligned line by line")
        }
        return try lines.enumerated().map { i, s in
            guard let n = Int(s), n >= 0 else { throw LlamaError.invalidArgument("\(file):\(i + 1): label '\(s)' is not a choice index") }
            return n
        }
    }

    // MARK: multiple choice

    func multipleChoice(_ index: Int, _ doc: EvalDocument, _ label: Int?, _ scorer: ChoiceScorer) throws -> EvalRecord {
        let context = try Template(task.prompt, file: doc.file, field: "prompt").render(doc)
        let choices: [String]
        if let templates = task.choices {
            choices = try templates.map { try Template($0, file: doc.file, field: "choices").render(doc) }
        } else {
            let field = task.choicesField!
            guard let list = try doc.value(field).array, !list.isEmpty else { throw doc.error("field '\(field)' is not an array of choices") }
            choices = try list.map { guard let s = $0.text else { throw doc.error("field '\(field)' holds a choice that is not a string") }; return s }
            guard choices.count >= 2 else { throw doc.error("field '\(field)' has \(choices.count) choice; at least two are needed") }
        }
        let gold = try label ?? goldIndex(doc, choices: choices)
        guard gold < choices.count else { throw doc.error("label \(gold) is out of range for \(choices.count) choices") }

        let conditional = try scorer.score(context: context, continuations: choices.map { task.targetDelimiter + $0 }, doc: doc)
        let lls = conditional.results.map(\.logLikelihood)
        var record = EvalRecord(index: index, line: doc.line, prompt: context, choices: choices, gold: gold,
                                logLikelihoods: lls, isGreedy: conditional.results.map(\.isGreedy), scores: [:])
        if conditional.truncated > 0 { record.truncatedTokens = conditional.truncated }
        for m in task.metrics {
            let values: [Double]
            switch m {
            case "acc": values = lls
            case "acc_norm": values = zip(lls, choices).map { $0 / Double($1.unicodeScalars.count) }
            default:
                let u = try scorer.score(context: task.unconditionalContext, continuations: choices.map { task.targetDelimiter + $0 }, doc: doc)
                record.unconditionalLogLikelihoods = u.results.map(\.logLikelihood)
                values = zip(lls, u.results).map { $0 - $1.logLikelihood }
            }
            record.scores[m] = Self.argmax(values) == gold ? 1 : 0
        }
        return record
    }

    /// numpy's argmax: the first largest value.
    public static func argmax(_ values: [Double]) -> Int {
        var best = 0
        for i in values.indices where values[i] > values[best] { best = i }
        return best
    }

    func goldIndex(_ doc: EvalDocument, choices: [String]) throws -> Int {
        let field = task.labelField!
        let value = try doc.value(field)
        if let n = value.int { return n }
        if let s = value.string {
            if let n = task.labelMap?[s] { return n }
            if task.labelMap == nil, let n = Int(s.trimmingCharacters(in: .whitespaces)) { return n }
            if let n = choices.firstIndex(of: s) { return n }
        }
        throw doc.error("label field '\(field)' (\(value)) is not a choice index\(task.labelMap == nil ? "" : ", a key of label_map") or the text of a choice")
    }

    // MARK: generation

    /// The few-shot examples every prompt starts with: the same examples for every item (drawn
    /// once with the seed), so the key/value cache keeps them from one item to the next.
    func fewshotPrefix(excludingLinesOf evalDocs: [EvalDocument]) throws -> [(text: String, line: Int)] {
        let shots = options.shots ?? task.shots
        guard shots > 0 else { return [] }
        let pool = try task.fewshotData.map { try EvalDocument.readAll(path: path($0)) } ?? evalDocs
        // Drawing from the evaluated items themselves: one spare, so an item never sees itself.
        let spare = task.fewshotData == nil ? 1 : 0
        guard pool.count >= shots + spare else {
            throw LlamaError.invalidArgument("\(shots) shots need \(shots + spare) examples; the few-shot data has \(pool.count)")
        }
        var rng = SplitMix64(seed: options.seed)
        var indices = Array(pool.indices)
        for i in 0..<(shots + spare) { indices.swapAt(i, i + Int(rng.next() % UInt64(indices.count - i))) }
        let chosen = indices[0..<(shots + spare)].map { pool[$0] }
        let prompt = try Template(task.prompt, file: task.data, field: "prompt")
        let target = try Template(task.target ?? "", file: task.data, field: "target")
        return try chosen.map { (try prompt.render($0) + task.targetDelimiter + target.render($0), $0.line) }
    }

    func generate(_ index: Int, _ doc: EvalDocument, _ generator: Generator,
                  fewshot: [(text: String, line: Int)], matcher: AnswerMatcher) throws -> EvalRecord {
        let question = try Template(task.prompt, file: doc.file, field: "prompt").render(doc)
        var prefix = ""
        if !fewshot.isEmpty {
            // Drawn from the evaluated items: never the item itself.
            let examples = fewshot.filter { task.fewshotData != nil || $0.line != doc.line }.prefix(options.shots ?? task.shots)
            prefix = examples.map(\.text).joined(separator: task.fewshotDelimiter) + task.fewshotDelimiter
        }
        let maxTokens = options.maxTokens ?? task.maxTokens
        var tokens: [Int]
        var stopTokens: Set<Int> = []
        if let chat = options.chat {
            tokens = try chat.render([ChatMessage(.user, prefix + question)], tokenizer: model.tokenizer,
                                     defaultSystem: ChatFormat.defaultSystemPrompt(template: model.chatTemplate))
            stopTokens = chat.stopTokens(model.tokenizer)
        } else {
            tokens = model.tokenizer.encode(prefix + question, addBOS: model.tokenizer.addsBOS, parseSpecial: false)
        }
        // As the harness does: keep the last (context − max tokens) prompt tokens.
        let room = contextLength - maxTokens
        guard room > 0 else {
            throw LlamaError.invalidArgument("--max-tokens \(maxTokens) leaves no room for a prompt in a context of \(contextLength)")
        }
        var dropped = 0
        if tokens.count > room {
            dropped = tokens.count - room
            tokens = Array(tokens.suffix(room))
        }
        var options = GenerationOptions()
        options.sampling = .greedy
        options.maxTokens = maxTokens
        options.stopStrings = task.until
        options.stopTokens = stopTokens
        let result = try generator.generate(prompt: tokens, options: options)
        var record = EvalRecord(index: index, line: doc.line, prompt: question, response: result.text, scores: [:])
        record.promptTokens = result.promptTokens
        record.promptTokensComputed = result.promptTokensEvaluated
        record.generatedTokens = result.tokens.count
        if dropped > 0 { record.truncatedTokens = dropped }
        switch task.type {
        case .code:
            let program = question + result.text + "\n" + (try Template(task.test!, file: doc.file, field: "test").render(doc))
            let outcome = try CodeRunner(python: self.options.python, timeout: task.timeout).run(program)
            record.scores["pass@1"] = outcome.passed ? 1 : 0
            record.testOutput = outcome.output
        default:
            let target = try Template(task.target!, file: doc.file, field: "target").render(doc)
            record.target = target
            record.extracted = [:]
            for e in task.extract {
                let answer = matcher.extract(e, from: result.text)
                record.extracted?[e.name] = answer
                record.scores["exact_match,\(e.name)"] = matcher.matches(answer, target) ? 1 : 0
            }
        }
        return record
    }
}

/// Log-likelihoods of choices after a context, tokenized as lm-evaluation-harness does for a
/// causal model: trailing whitespace of the context moves to the continuation, the whole
/// string is encoded, and the continuation is what follows the encoded context.
public struct ChoiceScorer {
    public let model: Model
    public let transformer: Transformer

    public init(model: Model, transformer: Transformer) {
        self.model = model
        self.transformer = transformer
    }

    func encode(_ text: String) -> [Int] {
        model.tokenizer.encode(text, addBOS: model.tokenizer.addsBOS, parseSpecial: false)
    }

    /// (context tokens, continuation tokens) for one pair.
    public func encodePair(context: String, continuation: String) -> ([Int], [Int]) {
        let (contextTokens, parts) = encode(context: context, continuations: [continuation])
        return (contextTokens, parts[0])
    }

    /// The context's tokens (encoded once) and each continuation's.
    func encode(context: String, continuations: [String]) -> ([Int], [[Int]]) {
        if context.isEmpty {
            // The harness conditions an empty context on a prefix token: BOS, or else EOS.
            let prefix = model.tokenizer.bosID ?? model.tokenizer.eosID ?? 0
            return ([prefix], continuations.map { model.tokenizer.encode($0, addBOS: false, parseSpecial: false) })
        }
        let scalars = context.unicodeScalars
        let spaces = scalars.reversed().prefix { $0.properties.isWhitespace }.count
        let cut = scalars.index(scalars.endIndex, offsetBy: -spaces)
        let trimmed = String(scalars[..<cut]), moved = String(scalars[cut...])
        let contextTokens = encode(trimmed)
        return (contextTokens, continuations.map { Array(encode(trimmed + moved + $0).dropFirst(contextTokens.count)) })
    }

    func score(context: String, continuations: [String], doc: EvalDocument) throws
        -> (results: [(logLikelihood: Double, isGreedy: Bool)], truncated: Int) {
        var (contextTokens, parts) = encode(context: context, continuations: continuations)
        guard parts.allSatisfy({ !$0.isEmpty }) else { throw doc.error("a choice encodes to no tokens") }
        // The context and the longest continuation must fit; cut the context from the left.
        let longest = parts.map(\.count).max()!
        let room = transformer.contextLength + 1 - longest
        guard room >= 1 else {
            throw doc.error("a choice is \(longest) tokens, longer than the context of \(transformer.contextLength)")
        }
        var truncated = 0
        if contextTokens.count > room {
            truncated = contextTokens.count - room
            contextTokens = Array(contextTokens.suffix(room))
        }
        return (try Scoring.continuations(transformer, context: contextTokens, parts), truncated)
    }
}

/// The harness's `regex` filter and `exact_match` metric.
public struct AnswerMatcher {
    let patterns: [String: NSRegularExpression]
    let ignore: [NSRegularExpression]
    let ignoreCase: Bool
    static let fallback = "[invalid]"

    public init(_ task: EvalTaskDefinition) throws {
        var p: [String: NSRegularExpression] = [:]
        for e in task.extract { p[e.regex] = try NSRegularExpression(pattern: e.regex) }
        patterns = p
        ignore = try task.ignore.map { try NSRegularExpression(pattern: $0) }
        ignoreCase = task.ignoreCase
    }

    /// Python's `re.findall(pattern, text)[group]`: a match's only group, or its first
    /// non-empty group when it has several, or the whole match when it has none; stripped.
    public func extract(_ e: EvalTaskDefinition.Extractor, from text: String) -> String {
        let regex = patterns[e.regex]!
        let ns = text as NSString
        let matches = regex.matches(in: text, range: NSRange(location: 0, length: ns.length))
        guard !matches.isEmpty else { return Self.fallback }
        let i = e.group < 0 ? matches.count + e.group : e.group
        guard matches.indices.contains(i) else { return Self.fallback }
        let m = matches[i]
        var value: String
        if m.numberOfRanges == 1 {
            value = ns.substring(with: m.range)
        } else if m.numberOfRanges == 2 {
            value = m.range(at: 1).location == NSNotFound ? "" : ns.substring(with: m.range(at: 1))
        } else {
            let groups = (1..<m.numberOfRanges).compactMap { g -> String? in
                let r = m.range(at: g)
                return r.location == NSNotFound || r.length == 0 ? nil : ns.substring(with: r)
            }
            guard let first = groups.first else { return Self.fallback }
            value = first
        }
        return value.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public func normalise(_ s: String) -> String {
        var s = s
        for r in ignore {
            s = r.stringByReplacingMatches(in: s, range: NSRange(location: 0, length: (s as NSString).length), withTemplate: "")
        }
        return ignoreCase ? s.lowercased() : s
    }

    public func matches(_ prediction: String, _ reference: String) -> Bool {
        normalise(prediction) == normalise(reference)
    }
}
