import Foundation
import XCTest
import Llama

/// `llama eval`: task definitions, lm-evaluation-harness's scoring rules (pinned by fixtures made
/// with the harness's own code, Tools/make_eval_fixtures.py and Tools/eval_reference_harness.py),
/// code execution, and bad input naming the file, field and line.
final class EvalTests: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("eval-tests-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        let path = directory + "/" + name
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    func definition(_ json: String) throws -> EvalTaskDefinition {
        try EvalTaskDefinition.load(path: write("task.json", json))
    }

    func assertError(_ body: @autoclosure () throws -> Any, contains parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            let text = "\(error)"
            for p in parts { XCTAssertTrue(text.contains(p), "'\(text)' does not mention '\(p)'", file: file, line: line) }
        }
    }

    // MARK: definitions

    func testBuiltInDefinitionsRoundTripThroughJSON() throws {
        for name in BuiltInTasks.names {
            let builtIn = try BuiltInTasks.definition(name, dataDirectory: directory)
            let reread = try definition(builtIn.json())
            XCTAssertEqual(reread, builtIn, name)
        }
        let piqa = try BuiltInTasks.definition("piqa", dataDirectory: directory)
        XCTAssertEqual(piqa.prompt, "Question: {goal}\nAnswer:")
        XCTAssertEqual(piqa.metrics, ["acc", "acc_norm"])
        let gsm8k = try BuiltInTasks.definition("gsm8k", dataDirectory: directory)
        XCTAssertEqual(gsm8k.shots, 8)
        XCTAssertEqual(gsm8k.until, ["Question:", "</s>", "<|im_end|>"])
    }

    func testBadDefinitionsNameTheField() throws {
        let base = #""task": "t", "type": "multiple_choice", "data": "d.jsonl", "label_field": "label""#
        assertError(try definition("{\(base), \"prompt\": \"Q: {q}\", \"choices\": [\"{a}\", \"{b}\"], \"promt\": 1}"),
                    contains: ["task.json", "promt", "unknown field"])
        assertError(try definition("{\(base), \"choices\": [\"{a}\", \"{b}\"]}"), contains: ["task.json", "prompt", "required"])
        assertError(try definition(#"{"task": "t", "type": "ranking", "data": "d", "prompt": "p"}"#), contains: ["type", "ranking"])
        assertError(try definition("{\(base), \"prompt\": \"p\", \"choices\": [\"{a}\", \"{b}\"], \"choices_field\": \"c\"}"),
                    contains: ["choices", "exactly one"])
        assertError(try definition("{\(base), \"prompt\": \"p\", \"choices\": [\"{a}\"]}"), contains: ["choices", "two"])
        assertError(try definition("{\(base), \"prompt\": \"p\", \"choices\": [\"{a}\", \"{b}\"], \"metrics\": [\"f1\"]}"),
                    contains: ["metrics", "f1"])
        assertError(try definition("{\(base), \"prompt\": \"Q: {q\", \"choices\": [\"{a}\", \"{b}\"]}"), contains: ["prompt", "'{' without '}'"])
        assertError(try definition("{\(base), \"prompt\": \"p\", \"choices\": [\"{a}\", \"{b}\"], \"shots\": \"two\"}"),
                    contains: ["shots", "integer"])
        assertError(try definition(#"{"task": "t", "type": "generate", "data": "d", "prompt": "p", "target": "{a}"}"#),
                    contains: ["extract"])
        assertError(try definition(#"{"task": "t", "type": "generate", "data": "d", "prompt": "p", "target": "{a}", "extract": [{"name": "x", "regex": "(unclosed"}]}"#),
                    contains: ["extract", "(unclosed"])
        assertError(try definition("[1, 2]"), contains: ["task.json", "JSON object"])
        assertError(try definition("{not json"), contains: ["task.json", "not JSON"])
    }

    func testTemplates() throws {
        let doc = EvalDocument(fields: ["goal": .string("fix {it}"), "n": .number(3), "x": .number(2.5), "ok": .bool(true)], file: "f", line: 7)
        let t = try Template("Q: {goal} ({n}, {x}, {ok}) {{literal}}", file: "f", field: "prompt")
        XCTAssertEqual(try t.render(doc), "Q: fix {it} (3, 2.5, True) {literal}")
        assertError(try Template("{missing}", file: "f", field: "prompt").render(doc), contains: ["f:7", "missing"])
        assertError(try Template("a } b", file: "f", field: "prompt"), contains: ["'}' without '{'"])
    }

    // MARK: data files

    func multipleChoiceTask(_ data: String, labels: String? = nil, extra: String = "") throws -> EvalTaskDefinition {
        try write("d.jsonl", data)
        var json = #"{"task": "t", "type": "multiple_choice", "data": "d.jsonl", "prompt": "Q: {q}\nA:", "choices": ["{a}", "{b}"]"#
        if let labels {
            try write("labels.lst", labels)
            json += #", "labels": "labels.lst""#
        } else {
            json += #", "label_field": "label""#
        }
        return try definition(json + extra + "}")
    }

    func testBadDataNamesTheLine() throws {
        let model = try tinyModel()
        var task = try multipleChoiceTask("{\"q\": \"x\", \"a\": \"1\", \"b\": \"2\", \"label\": 0}\n\n{\"q\": \"y\", \"a\": \"1\", \"label\": 1}\n")
        assertError(try Evaluator(model: model, task: task).run(), contains: ["d.jsonl:3", "no field 'b'"])
        task = try multipleChoiceTask("{\"q\": \"x\", \"a\": \"1\", \"b\": \"2\", \"label\": 2}\n")
        assertError(try Evaluator(model: model, task: task).run(), contains: ["d.jsonl:1", "label 2", "2 choices"])
        task = try multipleChoiceTask("{\"q\": \"x\", \"a\": \"1\", \"b\": \"2\", \"label\": \"C\"}\n")
        assertError(try Evaluator(model: model, task: task).run(), contains: ["d.jsonl:1", "label field"])
        task = try multipleChoiceTask("{\"q\": \"x\", \"a\": \"1\", \"b\": \"2\"}\n{\"q\": \"y\", \"a\": \"1\", \"b\": \"2\"}\n", labels: "0\n")
        assertError(try Evaluator(model: model, task: task).run(), contains: ["labels.lst", "1 labels", "2 items"])
        task = try multipleChoiceTask("{\"q\": \"x\", \"a\": \"1\", \"b\": \"2\"}\n", labels: "first\n")
        assertError(try Evaluator(model: model, task: task).run(), contains: ["labels.lst:1", "first"])
        task = try multipleChoiceTask("{\"q\": \"x\", \"a\": \"1\", \"b\": \"2\", \"label\": 0}\n{\"q\": \"x\", oops}\n")
        assertError(try Evaluator(model: model, task: task).run(), contains: ["d.jsonl:2", "not a JSON object"])
        try write("d.jsonl", "")
        assertError(try Evaluator(model: model, task: task).run(), contains: ["d.jsonl", "no items"])
    }

    /// Labels as indices, digit strings, label_map keys or the text of a choice; the scores of a
    /// tiny model follow the harness's rules (argmax of the raw and per-character
    /// log-likelihoods, and of log-likelihood minus the unconditional one).
    func testMultipleChoiceScoresFollowTheHarnessRules() throws {
        let model = try tinyModel()
        let task = try multipleChoiceTask("""
            {"q": "one", "a": "red", "b": "a much longer answer", "label": 0}
            {"q": "two", "a": "blue", "b": "green", "label": "1"}
            {"q": "three", "a": "x", "b": "y", "label": "y"}
            """, extra: #", "metrics": ["acc", "acc_norm", "acc_mutual_info"], "unconditional_context": "A:""#)
        var records: [EvalRecord] = []
        let report = try Evaluator(model: model, task: task).run(record: { records.append($0) })
        XCTAssertEqual(records.map(\.gold), [0, 1, 1])
        XCTAssertEqual(report.results.map(\.metric), ["acc", "acc_norm", "acc_mutual_info"])
        for r in records {
            let lls = r.logLikelihoods!, choices = r.choices!, u = r.unconditionalLogLikelihoods!
            XCTAssertEqual(r.scores["acc"], Evaluator.argmax(lls) == r.gold ? 1 : 0)
            let norm = zip(lls, choices).map { $0 / Double($1.count) }
            XCTAssertEqual(r.scores["acc_norm"], Evaluator.argmax(norm) == r.gold ? 1 : 0)
            XCTAssertEqual(r.scores["acc_mutual_info"], Evaluator.argmax(zip(lls, u).map { $0 - $1 }) == r.gold ? 1 : 0)
            XCTAssertTrue(lls.allSatisfy { $0 < 0 })
        }
        // Each continuation scored after the shared, cached context equals scoring the whole
        // sequence from scratch.
        let scorer = ChoiceScorer(model: model, transformer: Transformer(weights: model.weights, contextLength: 64))
        let (context, continuation) = scorer.encodePair(context: "Q: two\nA:", continuation: " green")
        let whole = context + continuation
        let fresh = Transformer(weights: model.weights, contextLength: 64)
        let direct = try Scoring.score(fresh, inputs: Array(whole.dropLast()), startPosition: 0, targets: Array(whole.dropFirst()))
            .suffix(continuation.count).reduce(0) { $0 + $1.logProbability }
        XCTAssertEqual(records[1].logLikelihoods![1], direct, accuracy: 1e-4)
        let mean = records.map { $0.scores["acc"]! }.reduce(0, +) / 3
        XCTAssertEqual(report.results[0].value, mean, accuracy: 1e-12)
    }

    /// lm-evaluation-harness's `_encode_pair`: trailing whitespace of the context moves to the
    /// continuation; the continuation is what follows the encoded context in the encoded whole.
    func testEncodePairMovesTrailingSpace() throws {
        let model = try tinyModel()
        let scorer = ChoiceScorer(model: model, transformer: Transformer(weights: model.weights, contextLength: 64))
        let (a, b) = scorer.encodePair(context: "Answer: ", continuation: "yes")
        let (c, d) = scorer.encodePair(context: "Answer:", continuation: " yes")
        XCTAssertEqual(a, c)
        XCTAssertEqual(b, d)
        let t = model.tokenizer
        XCTAssertEqual(a + b, t.encode("Answer: yes", addBOS: t.addsBOS, parseSpecial: false))
        // An empty context is the prefix token (BOS, else EOS).
        let (p, q) = scorer.encodePair(context: "", continuation: " yes")
        XCTAssertEqual(p, [t.bosID ?? t.eosID!])
        XCTAssertEqual(q, t.encode(" yes", addBOS: false, parseSpecial: false))
    }

    // MARK: generation scoring

    func testAnswerExtractionMatchesTheHarness() throws {
        struct Fixture: Decodable {
            struct Case: Decodable {
                let response: String
                let strict: String
                let flexible: String
                let matches: [String: [String]]
                enum CodingKeys: String, CodingKey { case response, strict = "strict-match", flexible = "flexible-extract", matches }
            }
            let references: [String]
            let cases: [Case]
        }
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/eval/gsm8k-extraction.json")))
        let task = try BuiltInTasks.definition("gsm8k", dataDirectory: directory)
        let matcher = try AnswerMatcher(task)
        for c in fixture.cases {
            let strict = matcher.extract(task.extract[0], from: c.response)
            let flexible = matcher.extract(task.extract[1], from: c.response)
            XCTAssertEqual(strict, c.strict, c.response)
            XCTAssertEqual(flexible, c.flexible, c.response)
            for (name, got) in [("strict-match", strict), ("flexible-extract", flexible)] {
                let matched = fixture.references.filter { matcher.matches(got, $0) }
                XCTAssertEqual(matched, c.matches[name] ?? [], "\(name) of \(c.response.debugDescription)")
            }
        }
    }

    func testMeanAndStandardError() {
        let m = MetricResult(metric: "acc", scores: [1, 0, 1, 1])
        XCTAssertEqual(m.value, 0.75)
        // sample standard deviation / sqrt(n): sqrt(0.25) / 2
        XCTAssertEqual(m.stderr, 0.25, accuracy: 1e-12)
        XCTAssertEqual(m.n, 4)
    }

    // MARK: code execution

    func python() throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", "pass"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { throw XCTSkip("python3 is not available") }
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw XCTSkip("python3 is not available") }
        return "python3"
    }

    func testCodeRunner() throws {
        let runner = CodeRunner(python: try python(), timeout: 2)
        XCTAssertTrue(try runner.run("def add(a, b):\n    return a + b\nassert add(2, 3) == 5").passed)
        let wrong = try runner.run("def add(a, b):\n    return a * b\nassert add(2, 3) == 5")
        XCTAssertFalse(wrong.passed)
        XCTAssertTrue(wrong.output.contains("AssertionError"), wrong.output)
        let slow = try runner.run("while True:\n    pass")
        XCTAssertFalse(slow.passed)
        XCTAssertTrue(slow.output.contains("timed out"))
        let network = try runner.run("import socket\nsocket.create_connection(('127.0.0.1', 9))")
        XCTAssertFalse(network.passed)
        XCTAssertTrue(network.output.contains("network access is disabled"), network.output)
        // Runs in a temporary directory that is removed afterwards.
        let cwd = try runner.run("import os, sys\nassert os.getcwd().split('/')[-1].startswith('llama-eval-')")
        XCTAssertTrue(cwd.passed, cwd.output)
    }

    func testCodeTasksNeedConsent() throws {
        let model = try tinyModel()
        try write("code.jsonl", #"{"prompt": "def f():\n", "test": "assert f() == 1", "entry_point": "f"}"# + "\n")
        let task = try definition(#"{"task": "c", "type": "code", "data": "code.jsonl", "prompt": "{prompt}", "test": "{test}"}"#)
        assertError(try Evaluator(model: model, task: task), contains: ["--allow-code-execution"])
    }

    // MARK: real models

    /// PIQA log-likelihoods of the default model in Float32 agree with lm-evaluation-harness run
    /// on the same GGUF through transformers (Tools/eval_reference_harness.py) within 1e-3 nats
    /// on every item, so acc and acc_norm are the same item by item.
    func testPIQAMatchesTheHarnessOnTheDefaultModel() throws {
        let data = try SharedData.path("eval/piqa")
        struct Fixture: Decodable {
            struct Item: Decodable { let index: Int; let logLikelihoods: [Double]; let acc: Double; let acc_norm: Double }
            let model_sha256: String
            let items: [Item]
        }
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/eval/piqa-harness-smollm2-q4_1.json")))
        XCTAssertEqual(fixture.model_sha256, DefaultModel.sha256)
        let model = try DefaultModelFixture.model.get()
        var options = EvalOptions()
        options.limit = ProcessInfo.processInfo.environment["LLAMA_SWIFT_FULL_EVAL"] != nil ? fixture.items.count : 40
        options.float32 = true
        var records: [EvalRecord] = []
        let task = try BuiltInTasks.definition("piqa", dataDirectory: data)
        _ = try Evaluator(model: model, task: task, options: options).run(record: { records.append($0) })
        XCTAssertEqual(records.count, options.limit)
        for (ours, reference) in zip(records, fixture.items) {
            for (a, b) in zip(ours.logLikelihoods!, reference.logLikelihoods) {
                XCTAssertEqual(a, b, accuracy: 1e-3, "item \(reference.index)")
            }
            XCTAssertEqual(ours.scores["acc"], reference.acc, "item \(reference.index)")
            XCTAssertEqual(ours.scores["acc_norm"], reference.acc_norm, "item \(reference.index)")
        }
    }

    /// GSM8K end to end on the default model, one item, two shots: deterministic, stop strings
    /// honoured, answers extracted.
    func testGSM8KIsDeterministic() throws {
        let data = try SharedData.path("eval/gsm8k")
        let model = try DefaultModelFixture.model.get()
        var options = EvalOptions()
        options.limit = 1
        options.shots = 2
        options.maxTokens = 40
        let task = try BuiltInTasks.definition("gsm8k", dataDirectory: data)
        func run() throws -> [EvalRecord] {
            var records: [EvalRecord] = []
            _ = try Evaluator(model: model, task: task, options: options).run(record: { records.append($0) })
            return records
        }
        let first = try run(), second = try run()
        XCTAssertEqual(first.map(\.response), second.map(\.response))
        for r in first {
            XCTAssertFalse(r.response!.contains("Question:"), "the stop string ends the answer")
            XCTAssertEqual(Set(r.extracted!.keys), ["strict-match", "flexible-extract"])
            XCTAssertTrue(r.target!.contains("####"))
            XCTAssertTrue(r.prompt.hasPrefix("Question: "))
        }
    }

    // MARK: helpers

    /// The small reference model of ../shared (random weights, the real Llama 2 tokenizer).
    func tinyModel() throws -> Model {
        try Model(path: try SharedData.path("reference/ref-gqa-32k/hf"))
    }
}
