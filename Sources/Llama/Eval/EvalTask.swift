import Foundation

/// A benchmark as data: where its items are, how an item becomes a prompt, and how an answer is
/// scored. Multiple-choice sets need no code, only a definition file (JSON, keys below); the
/// built-in tasks are definitions too (`EvalTask.builtIn`). Field names and defaults follow
/// lm-evaluation-harness's task YAML where it has one.
public struct EvalTaskDefinition: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// Score every choice by log-likelihood after the prompt; pick the most likely.
        case multipleChoice = "multiple_choice"
        /// Generate greedily until a stop string; extract an answer; exact match with the target.
        case generate
        /// Generate a function body; run the item's tests in a separate python3 process.
        case code
    }

    /// One way of pulling an answer out of generated text (the harness's `regex` filter).
    public struct Extractor: Sendable, Equatable {
        public var name: String
        public var regex: String
        /// Which match to keep: 0 = first, -1 = last (Python indexing).
        public var group: Int
    }

    public var task: String
    public var type: Kind
    /// JSONL file of items (`.jsonl.gz` is read through gzip), relative to the definition file.
    public var data: String
    /// Optional file of one label per line, aligned with `data` (PIQA's `valid-labels.lst`).
    public var labels: String?
    /// Template of the prompt: `{field}` is the item's field, `{{` and `}}` are literal braces.
    public var prompt: String

    // multiple_choice
    /// Templates of the choices, one per choice…
    public var choices: [String]?
    /// …or the name of a field holding an array of choice strings.
    public var choicesField: String?
    /// Field of the gold choice (a 0-based index, a digit string, a key of `labelMap`, or the text
    /// of a choice), when there is no `labels` file.
    public var labelField: String?
    public var labelMap: [String: Int]?
    /// Put between the prompt and each choice (and between prompt and target in few-shot examples).
    public var targetDelimiter: String
    /// Of `acc`, `acc_norm` (log-likelihood per character of the choice) and `acc_mutual_info`
    /// (log P(choice | prompt) − log P(choice | `unconditionalContext`)).
    public var metrics: [String]
    /// The context of the unconditional likelihood: "" is the harness's `acc_mutual_info`,
    /// "Answer:" the LLaMA paper's normalisation for OpenBookQA and BoolQ.
    public var unconditionalContext: String

    // generate / code
    /// Template of the reference answer (also what follows the prompt in few-shot examples).
    public var target: String?
    /// Few-shot examples come from this JSONL file (relative to the definition file).
    public var fewshotData: String?
    public var shots: Int
    public var fewshotDelimiter: String
    /// Stop strings: the answer ends before the first of them.
    public var until: [String]
    public var maxTokens: Int
    public var extract: [Extractor]
    /// Regexes removed from prediction and reference before they are compared, in order.
    public var ignore: [String]
    public var ignoreCase: Bool
    /// Template of the test program appended to prompt + completion (`code` tasks).
    public var test: String?
    /// Seconds a test program may run.
    public var timeout: Double

    /// The file this definition was read from (data paths are relative to its directory).
    public var baseDirectory: String

    static let keys: Set<String> = [
        "task", "type", "data", "labels", "prompt", "choices", "choices_field", "label_field", "label_map",
        "target_delimiter", "metrics", "unconditional_context", "target", "fewshot_data", "shots",
        "fewshot_delimiter", "until", "max_tokens", "extract", "ignore", "ignore_case", "test", "timeout",
    ]
    static let multipleChoiceMetrics: Set<String> = ["acc", "acc_norm", "acc_mutual_info"]

    /// Reads a definition; every problem names the file and the field.
    public static func load(path: String) throws -> EvalTaskDefinition {
        guard let data = FileManager.default.contents(atPath: path) else { throw LlamaError.fileNotFound(path) }
        let object: JSONValue
        do { object = try JSONValue.parse(data) } catch {
            throw LlamaError.corrupt(file: path, offset: nil, reason: "not JSON (\(error))")
        }
        guard let dict = object.object else {
            throw LlamaError.corrupt(file: path, offset: nil, reason: "a task definition is a JSON object")
        }
        let directory = (URL(fileURLWithPath: path).deletingLastPathComponent().path)
        return try EvalTaskDefinition(json: dict, file: path, baseDirectory: directory)
    }

    init(json: [String: JSONValue], file: String, baseDirectory: String) throws {
        func bad(_ field: String, _ why: String) -> LlamaError { .invalidConfig(file: file, field: field, reason: why) }
        for key in json.keys where !Self.keys.contains(key) {
            throw bad(key, "unknown field (known: \(Self.keys.sorted().joined(separator: ", ")))")
        }
        func string(_ key: String) throws -> String? {
            guard let v = json[key] else { return nil }
            guard let s = v.string else { throw bad(key, "must be a string") }
            return s
        }
        func strings(_ key: String) throws -> [String]? {
            guard let v = json[key] else { return nil }
            guard let a = v.array?.compactMap(\.string), a.count == v.array?.count else { throw bad(key, "must be an array of strings") }
            return a
        }
        func int(_ key: String) throws -> Int? {
            guard let v = json[key] else { return nil }
            guard let n = v.int else { throw bad(key, "must be an integer") }
            return n
        }
        func required(_ key: String) throws -> String {
            guard let s = try string(key) else { throw bad(key, "is required") }
            return s
        }
        task = try required("task")
        let typeName = try required("type")
        guard let kind = Kind(rawValue: typeName) else {
            throw bad("type", "'\(typeName)' is not one of \(Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        type = kind
        data = try required("data")
        labels = try string("labels")
        prompt = try required("prompt")
        choices = try strings("choices")
        choicesField = try string("choices_field")
        labelField = try string("label_field")
        if let v = json["label_map"] {
            guard let m = v.object, m.values.allSatisfy({ $0.int != nil }) else {
                throw bad("label_map", "must be an object of integers, e.g. {\"A\": 0, \"B\": 1}")
            }
            labelMap = m.mapValues { $0.int! }
        }
        targetDelimiter = try string("target_delimiter") ?? " "
        metrics = try strings("metrics") ?? (kind == .multipleChoice ? ["acc", "acc_norm"] : [])
        unconditionalContext = try string("unconditional_context") ?? ""
        target = try string("target")
        fewshotData = try string("fewshot_data")
        shots = try int("shots") ?? 0
        fewshotDelimiter = try string("fewshot_delimiter") ?? "\n\n"
        until = try strings("until") ?? []
        maxTokens = try int("max_tokens") ?? 256
        if let v = json["extract"] {
            guard let list = v.array?.compactMap(\.object), list.count == v.array?.count else {
                throw bad("extract", "must be an array of {name, regex, group}")
            }
            extract = try list.enumerated().map { i, e in
                guard let name = e["name"]?.string, let regex = e["regex"]?.string else {
                    throw bad("extract[\(i)]", "needs a string 'name' and a string 'regex'")
                }
                let group = e["group"]?.int ?? 0
                return Extractor(name: name, regex: regex, group: group)
            }
        } else {
            extract = []
        }
        ignore = try strings("ignore") ?? []
        if let v = json["ignore_case"] {
            guard let b = v.bool else { throw bad("ignore_case", "must be true or false") }
            ignoreCase = b
        } else {
            ignoreCase = false
        }
        test = try string("test")
        if let v = json["timeout"] {
            guard let n = v.number, n > 0 else { throw bad("timeout", "must be a positive number of seconds") }
            timeout = n
        } else {
            timeout = 3
        }
        self.baseDirectory = baseDirectory

        // What each kind needs.
        switch kind {
        case .multipleChoice:
            guard (choices == nil) != (choicesField == nil) else { throw bad("choices", "give exactly one of 'choices' and 'choices_field'") }
            if let c = choices, c.count < 2 { throw bad("choices", "a multiple-choice item needs at least two choices") }
            guard (labels == nil) != (labelField == nil) else { throw bad("labels", "give exactly one of 'labels' (a file) and 'label_field'") }
            guard !metrics.isEmpty else { throw bad("metrics", "name at least one metric") }
            for m in metrics where !Self.multipleChoiceMetrics.contains(m) {
                throw bad("metrics", "'\(m)' is not one of \(Self.multipleChoiceMetrics.sorted().joined(separator: ", "))")
            }
        case .generate:
            guard target != nil else { throw bad("target", "a generation task needs a target template") }
            guard !extract.isEmpty else { throw bad("extract", "a generation task needs at least one extractor") }
        case .code:
            guard test != nil else { throw bad("test", "a code task needs a test template") }
        }
        guard shots >= 0 else { throw bad("shots", "must be >= 0") }
        guard maxTokens > 0 else { throw bad("max_tokens", "must be > 0") }
        for e in extract {
            do { _ = try NSRegularExpression(pattern: e.regex) } catch { throw bad("extract", "'\(e.regex)' is not a valid regex") }
        }
        for r in ignore {
            do { _ = try NSRegularExpression(pattern: r) } catch { throw bad("ignore", "'\(r)' is not a valid regex") }
        }
        _ = try Template(prompt, file: file, field: "prompt")
        for c in choices ?? [] { _ = try Template(c, file: file, field: "choices") }
        if let t = target { _ = try Template(t, file: file, field: "target") }
        if let t = test { _ = try Template(t, file: file, field: "test") }
    }

    /// The definition as JSON, in the form `load` reads (for `llama eval --show-task`).
    public func json() -> String {
        var d: [String: Any] = ["task": task, "type": type.rawValue, "data": data, "prompt": prompt]
        if let labels { d["labels"] = labels }
        switch type {
        case .multipleChoice:
            if let choices { d["choices"] = choices }
            if let choicesField { d["choices_field"] = choicesField }
            if let labelField { d["label_field"] = labelField }
            if let labelMap { d["label_map"] = labelMap }
            d["target_delimiter"] = targetDelimiter
            d["metrics"] = metrics
            if metrics.contains("acc_mutual_info") { d["unconditional_context"] = unconditionalContext }
        case .generate, .code:
            if let target { d["target"] = target }
            if let fewshotData { d["fewshot_data"] = fewshotData }
            d["shots"] = shots
            d["target_delimiter"] = targetDelimiter
            d["fewshot_delimiter"] = fewshotDelimiter
            d["until"] = until
            d["max_tokens"] = maxTokens
            if !extract.isEmpty { d["extract"] = extract.map { ["name": $0.name, "regex": $0.regex, "group": $0.group] } }
            if !ignore.isEmpty { d["ignore"] = ignore }
            if type == .generate { d["ignore_case"] = ignoreCase }
            if let test { d["test"] = test }
            if type == .code { d["timeout"] = timeout }
        }
        let data = try! JSONSerialization.data(withJSONObject: d, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}

/// `{field}` substitution with `{{`/`}}` as literal braces, parsed once.
public struct Template: Sendable, Equatable {
    public enum Part: Sendable, Equatable { case text(String), field(String) }
    public let parts: [Part]

    public init(_ source: String, file: String, field: String) throws {
        var parts: [Part] = []
        var text = ""
        var i = source.startIndex
        while i < source.endIndex {
            let c = source[i]
            let next = source.index(after: i)
            if c == "{" && next < source.endIndex && source[next] == "{" {
                text.append("{")
                i = source.index(after: next)
            } else if c == "}" && next < source.endIndex && source[next] == "}" {
                text.append("}")
                i = source.index(after: next)
            } else if c == "{" {
                guard let close = source[next...].firstIndex(of: "}") else {
                    throw LlamaError.invalidConfig(file: file, field: field, reason: "'{' without '}' in \(source.debugDescription) (write {{ for a literal brace)")
                }
                let name = String(source[next..<close]).trimmingCharacters(in: .whitespaces)
                guard !name.isEmpty else { throw LlamaError.invalidConfig(file: file, field: field, reason: "empty {} in \(source.debugDescription)") }
                if !text.isEmpty { parts.append(.text(text)); text = "" }
                parts.append(.field(name))
                i = source.index(after: close)
            } else if c == "}" {
                throw LlamaError.invalidConfig(file: file, field: field, reason: "'}' without '{' in \(source.debugDescription) (write }} for a literal brace)")
            } else {
                text.append(c)
                i = next
            }
        }
        if !text.isEmpty { parts.append(.text(text)) }
        self.parts = parts
    }

    public func render(_ item: EvalDocument) throws -> String {
        var out = ""
        for p in parts {
            switch p {
            case .text(let t): out += t
            case .field(let name): out += try item.string(name)
            }
        }
        return out
    }
}

/// One line of a task's JSONL data.
public struct EvalDocument: Sendable {
    public let fields: [String: JSONValue]
    public let file: String
    public let line: Int

    public init(fields: [String: JSONValue], file: String, line: Int) {
        self.fields = fields
        self.file = file
        self.line = line
    }

    func error(_ why: String) -> LlamaError { .invalidArgument("\(file):\(line): \(why)") }

    func value(_ name: String) throws -> JSONValue {
        guard let v = fields[name], v != .null else { throw error("no field '\(name)'") }
        return v
    }

    func string(_ name: String) throws -> String {
        guard let s = try value(name).text else { throw error("field '\(name)' is not a string or a number") }
        return s
    }

    /// Reads a JSONL file (through `gzip -dc` when it ends in .gz); blank lines are skipped but
    /// counted, so errors name the line a text editor shows.
    public static func readAll(path: String) throws -> [EvalDocument] {
        let data: Data
        if path.hasSuffix(".gz") {
            data = try gunzip(path)
        } else {
            guard let d = FileManager.default.contents(atPath: path) else { throw LlamaError.fileNotFound(path) }
            data = d
        }
        guard let text = String(data: data, encoding: .utf8) else { throw LlamaError.invalidUTF8(what: path) }
        var docs: [EvalDocument] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if trimmed.isEmpty { continue }
            guard let dict = (try? JSONValue.parse(Data(trimmed.utf8)))?.object else {
                throw LlamaError.invalidArgument("\(path):\(i + 1): not a JSON object")
            }
            docs.append(EvalDocument(fields: dict, file: path, line: i + 1))
        }
        guard !docs.isEmpty else { throw LlamaError.invalidArgument("\(path): no items") }
        return docs
    }

    static func gunzip(_ path: String) throws -> Data {
        guard FileManager.default.fileExists(atPath: path) else { throw LlamaError.fileNotFound(path) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["gzip", "-dc", path]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch {
            throw LlamaError.cannotRead(file: path, reason: "cannot run gzip to decompress it (\(error.localizedDescription)); gunzip it first")
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw LlamaError.corrupt(file: path, offset: nil, reason: "gzip could not decompress it (exit \(process.terminationStatus))")
        }
        return data
    }
}
