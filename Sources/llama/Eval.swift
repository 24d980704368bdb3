import ArgumentParser
import Foundation
import Llama

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a model on a benchmark, scored as lm-evaluation-harness scores it.",
        discussion: """
            Built-in tasks: piqa (multiple choice: acc, and acc_norm = log-likelihood per character \
            of the answer), gsm8k (8-shot, greedy until "Question:", exact match of the strict \
            "#### N" and the flexible last-number answer), humaneval (pass@1: the completed function \
            and its tests run in a separate python3 process; needs --allow-code-execution). Their \
            prompts are lm-evaluation-harness's. The data is not bundled: pass --data DIR, or put it in \
            $LLAMA_SWIFT_DATA/eval/<task> or ./data/eval/<task>.

            Any other multiple-choice or generation set is a task definition file (JSON; \
            `llama eval --task piqa --show-task` prints one to start from; docs/EVALUATION.md lists \
            its keys). Every item's prompt, scores and answer go to a JSONL records file. Results are \
            deterministic: greedy decoding, and few-shot examples drawn once with --seed. Ctrl-C stops \
            and reports the items done.
            """)

    @OptionGroup var model: ModelOptions

    @Option(help: "piqa, gsm8k, humaneval, or a task definition file (.json).")
    var task: String

    @Option(help: "Directory of a built-in task's data files.")
    var data: String?

    @Option(help: "Evaluate only the first N items.")
    var limit: Int?

    @Option(help: "Few-shot examples in each prompt (generation tasks; default: the task's, 8 for gsm8k).")
    var shots: Int?

    @Option(help: "Seed that draws the few-shot examples.")
    var seed: UInt64 = 1234

    @Option(name: .customLong("max-tokens"), help: "Most tokens generated per item (default: the task's).")
    var maxTokens: Int?

    @Option(name: [.short, .customLong("ctx-size")], help: "Context length in tokens (default: the model's, at most 4096).")
    var ctxSize: Int?

    @Option(help: "Per-item records file (JSONL; default: <task>-records.jsonl; '-' for none).")
    var records: String?

    @Flag(help: "Compute in Float32 with the weights dequantized (as transformers does with gguf_file=) instead of with the quantized kernels' 8-bit activations (as llama.cpp does). Slower; 4 bytes per parameter.")
    var f32 = false

    @Flag(help: "Generation tasks: send the prompt (few-shot examples included) as one user message through the model's chat template, as lm-evaluation-harness's --apply_chat_template does.")
    var chat = false

    @Option(help: "Chat format for --chat (default: detected from the model).")
    var template: String?

    @Flag(help: "Print the report as JSON on stdout instead of a table.")
    var json = false

    @Flag(help: "Let code tasks run the programs the model writes (python3, temporary directory, timeout, no sockets; not a sandbox).")
    var allowCodeExecution = false

    @Option(help: "Python interpreter for code tasks.")
    var python = "python3"

    @Flag(help: "Print the task's definition (JSON) and exit.")
    var showTask = false

    func definition() throws -> EvalTaskDefinition {
        if BuiltInTasks.names.contains(task) {
            var candidates: [String] = []
            if let data { candidates.append(data) } else {
                if let root = ProcessInfo.processInfo.environment["LLAMA_SWIFT_DATA"] { candidates.append(root + "/eval/" + task) }
                candidates.append("data/eval/" + task)
            }
            if showTask && data == nil { return try BuiltInTasks.definition(task, dataDirectory: ".") }
            if let data, !FileManager.default.fileExists(atPath: data) { throw LlamaError.fileNotFound(data) }
            return try BuiltInTasks.definition(task, dataDirectory: BuiltInTasks.dataDirectory(for: task, candidates: candidates))
        }
        guard FileManager.default.fileExists(atPath: task) else {
            throw ValidationError("--task: '\(task)' is neither a built-in task (\(BuiltInTasks.names.joined(separator: ", "))) nor a file")
        }
        if data != nil { throw ValidationError("--data is for built-in tasks; a definition file names its data relative to itself") }
        return try EvalTaskDefinition.load(path: task)
    }

    func run() throws {
        let definition = try definition()
        if showTask {
            emit(definition.json() + "\n")
            return
        }
        var options = EvalOptions()
        options.limit = limit
        options.shots = shots
        options.seed = seed
        options.maxTokens = maxTokens
        options.allowCodeExecution = allowCodeExecution
        options.python = python
        options.contextLength = ctxSize
        options.float32 = f32
        let m = try model.load()
        if chat {
            options.chat = try chatFormat(named: template, for: m)
        } else if template != nil {
            throw ValidationError("--template needs --chat")
        }
        let evaluator = try Evaluator(model: m, task: definition, options: options, pool: try model.pool())

        let recordsPath = records ?? "\(definition.task)-records.jsonl"
        var writer: JSONLines?
        if recordsPath != "-" { writer = try JSONLines(path: recordsPath) }
        let bar = ProgressBar(label: definition.task)
        Interrupt.install()
        let report = try Interrupt.stoppable { keepGoing in
            try evaluator.run(shouldContinue: keepGoing, progress: bar.update) { try writer?.write($0) }
        }
        bar.finish()
        try writer?.close()
        if report.interrupted { note("interrupted: the results cover the first \(report.items) items") }
        if report.truncated > 0 { note("\(report.truncated) prompts were cut from the left to fit the context of the evaluation") }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            emit(String(decoding: try encoder.encode(report), as: UTF8.self) + "\n")
        } else {
            emit(Self.table(report))
        }
        if writer != nil { note("per-item records: \(recordsPath)") }
    }

    static func table(_ report: EvalReport) -> String {
        let header = ["task", "metric", "value", "± stderr", "n"]
        let rows = report.results.map {
            [report.task, $0.metric, String(format: "%.4f", $0.value), String(format: "%.4f", $0.stderr), "\($0.n)"]
        }
        let widths = header.indices.map { c in ([header] + rows).map { $0[c].count }.max()! }
        func line(_ cells: [String]) -> String {
            "| " + cells.enumerated().map { c, s in
                c >= 2 ? String(repeating: " ", count: widths[c] - s.count) + s : s + String(repeating: " ", count: widths[c] - s.count)
            }.joined(separator: " | ") + " |\n"
        }
        let rule = "|" + widths.enumerated().map { c, w in c >= 2 ? String(repeating: "-", count: w + 1) + ":" : String(repeating: "-", count: w + 2) }
            .joined(separator: "|") + "|\n"
        var shots = ""
        if let s = report.shots { shots = ", \(s)-shot" }
        return "\(report.model): \(report.task)\(shots), \(report.items) items in \(String(format: "%.1f", report.seconds)) s\n\n"
            + line(header) + rule + rows.map(line).joined()
    }
}

/// "piqa [#######.........] 412/1838  9.8 items/s  ETA 2m25s  acc 0.6012" on one refreshing
/// stderr line (a line every 10% when stderr is not a terminal).
final class ProgressBar {
    let label: String
    let isTerminal = isatty(2) != 0
    var lastTenth = -1
    var lastDraw = 0.0

    init(label: String) { self.label = label }

    func update(_ p: EvalProgress) {
        let fraction = Double(p.done) / Double(max(p.total, 1))
        let tenth = Int(fraction * 10)
        if isTerminal {
            guard p.seconds - lastDraw >= 0.2 || p.done == p.total else { return }
            lastDraw = p.seconds
        } else {
            guard tenth != lastTenth else { return }
            lastTenth = tenth
        }
        let width = 24
        let filled = Int(fraction * Double(width))
        let rate = Double(p.done) / max(p.seconds, 1e-9)
        let eta = Double(p.total - p.done) / max(rate, 1e-9)
        let text = String(format: "%@ [%@%@] %d/%d  %.2f items/s  ETA %@  %@ %.4f", label,
                          String(repeating: "#", count: filled), String(repeating: ".", count: width - filled),
                          p.done, p.total, rate, duration(eta), p.metric, p.value)
        FileHandle.standardError.write(Data((isTerminal ? "\r" + text + "\u{1B}[K" : text + "\n").utf8))
    }

    func finish() {
        if isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
