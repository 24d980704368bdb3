import Foundation

/// The built-in tasks: definitions in the same JSON a user writes, in lm-evaluation-harness's
/// prompt formats (lm_eval/tasks/{piqa,gsm8k,humaneval}/*.yaml, version 0.4). The data is not
/// bundled; each task names the files it reads from a data directory.
public enum BuiltInTasks {
    public static let names = ["piqa", "gsm8k", "humaneval"]

    static let sources: [String: String] = [
        // PIQA dev (1,838 items): piqa.yaml's prompt, choices [sol1, sol2], acc and acc_norm.
        "piqa": #"""
            {"task": "piqa", "type": "multiple_choice",
             "data": "valid.jsonl", "labels": "valid-labels.lst",
             "prompt": "Question: {goal}\nAnswer:", "choices": ["{sol1}", "{sol2}"],
             "target_delimiter": " ", "metrics": ["acc", "acc_norm"]}
            """#,
        // GSM8K test (1,319): gsm8k.yaml's prompt, stop strings, filters and exact-match
        // normalisation; 8 shots from the train split as in the LLaMA papers (the harness's
        // default is 5).
        "gsm8k": #"""
            {"task": "gsm8k", "type": "generate",
             "data": "test.jsonl", "fewshot_data": "train.jsonl", "shots": 8,
             "prompt": "Question: {question}\nAnswer:", "target": "{answer}",
             "target_delimiter": " ", "fewshot_delimiter": "\n\n",
             "until": ["Question:", "</s>", "<|im_end|>"], "max_tokens": 256,
             "extract": [{"name": "strict-match", "regex": "#### (\\-?[0-9\\.\\,]+)", "group": 0},
                         {"name": "flexible-extract", "regex": "(-?[$0-9.,]{2,})|(-?[0-9]+)", "group": -1}],
             "ignore": [",", "\\$", "(?s).*#### ", "\\.$"], "ignore_case": true}
            """#,
        // HumanEval (164): humaneval.yaml's prompt, stop strings and generation limit; the
        // program run is prompt + completion + "\n" + test + "\ncheck(entry_point)", as the
        // harness's code_eval builds it, with its 3-second timeout.
        "humaneval": #"""
            {"task": "humaneval", "type": "code",
             "data": "HumanEval.jsonl.gz", "prompt": "{prompt}",
             "test": "{test}\ncheck({entry_point})",
             "until": ["\nclass", "\ndef", "\n#", "\nif", "\nprint"], "max_tokens": 1024, "timeout": 3}
            """#,
    ]

    /// Where each task's data comes from, for the error when it is missing.
    static let origins: [String: String] = [
        "piqa": "valid.jsonl and valid-labels.lst from https://yonatanbisk.com/piqa/ (PIQA dev set)",
        "gsm8k": "test.jsonl and train.jsonl from https://github.com/openai/grade-school-math (grade_school_math/data)",
        "humaneval": "HumanEval.jsonl.gz from https://github.com/openai/human-eval (data/)",
    ]

    /// The definition of a built-in task reading its files from `dataDirectory`.
    public static func definition(_ name: String, dataDirectory: String) throws -> EvalTaskDefinition {
        guard let source = sources[name] else {
            throw LlamaError.invalidArgument("no built-in task '\(name)' (built in: \(names.joined(separator: ", ")); or give a task definition file)")
        }
        let json = try JSONValue.parse(Data(source.utf8)).object!
        return try EvalTaskDefinition(json: json, file: "built-in task \(name)", baseDirectory: dataDirectory)
    }

    /// The first directory among `candidates` holding every file the task reads, or an error
    /// saying where to get them.
    public static func dataDirectory(for name: String, candidates: [String]) throws -> String {
        let definition = try definition(name, dataDirectory: "")
        let files = [definition.data, definition.labels, definition.fewshotData].compactMap { $0 }
        for dir in candidates where files.allSatisfy({ FileManager.default.fileExists(atPath: dir + "/" + $0) }) {
            return dir
        }
        throw LlamaError.invalidArgument("""
            the \(name) data was not found (looked in \(candidates.isEmpty ? "no directory" : candidates.joined(separator: ", "))). \
            Pass --data DIR, a directory holding \(origins[name] ?? files.joined(separator: ", ")).
            """)
    }
}
