import Foundation
import XCTest
import Llama

/// The `llama` executable: output shapes and one-line errors with a non-zero exit status.
final class CLITests: XCTestCase {
    var binary: String { Bundle.main.bundleURL.appendingPathComponent("llama").path }

    func run(_ args: [String], stdin: Data? = nil) throws -> (status: Int32, out: String, err: String) {
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw XCTSkip("\(binary) is not built") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        let out = Pipe(), err = Pipe(), input = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(stdin) }
        try input.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    func testTokenizeJSONFromABareTokenizer() throws {
        let model = try SharedData.path("tokenizer/llama2-tokenizer.model")
        let r = try run(["tokenize", "--model", model, "--json", "Hello world"])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertEqual(r.out, "{\"ids\":[15043,3186],\"pieces\":[\"▁Hello\",\"▁world\"]}\n")
        let bos = try run(["tokenize", "--model", model, "--bos"], stdin: Data("Hello world".utf8))
        XCTAssertEqual(bos.out, "1 15043 3186\n")
    }

    func testLogitsMatchReference() throws {
        let dir = try SharedData.path("reference/ref-mha-512")
        let r = try run(["logits", "--model", dir + "/ref-mha-512-f32.gguf", "--ids", "1,300,45"])
        XCTAssertEqual(r.status, 0, r.err)
        let logits = try JSONDecoder().decode([Float].self, from: Data(r.out.utf8))
        let expected = try Data(contentsOf: URL(fileURLWithPath: dir + "/logits-0.f32")).withUnsafeBytes {
            Array($0.bindMemory(to: Float.self)[(2 * 512)..<(3 * 512)])
        }
        XCTAssertEqual(logits.count, 512)
        for i in 0..<512 { XCTAssertEqual(logits[i], expected[i], accuracy: 1e-4) }
        let all = try run(["logits", "--model", dir + "/hf", "--ids", "1,300,45", "--all"])
        XCTAssertEqual(try JSONDecoder().decode([[Float]].self, from: Data(all.out.utf8)).count, 3)
    }

    func testErrorsAreOneLineWithNonZeroStatus() throws {
        let tmp = NSTemporaryDirectory() + "llama-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let gguf = try Data(contentsOf: URL(fileURLWithPath: try SharedData.path("reference/ref-gqa-32k/ref-gqa-32k-f32.gguf")))
        XCTAssertTrue(FileManager.default.createFile(atPath: tmp + "/cut.gguf", contents: gguf.prefix(gguf.count - 1000)))
        let cases: [([String], Data?, String)] = [
            (["run", "--model", tmp + "/cut.gguf", "hi"], nil, "truncated"),
            (["info", "--model", tmp + "/absent.gguf"], nil, "no such file"),
            (["tokenize", "--model", try SharedData.path("tokenizer/llama2-tokenizer.model")], Data([0x48, 0xFF, 0xFE]), "not valid UTF-8"),
            (["run", "--model", try SharedData.path("reference/ref-gqa-32k/hf"), "--ctx-size", "4", "-n", "1",
              "one two three four five six"], nil, "longer than the context"),
            (["logits", "--model", try SharedData.path("reference/ref-gqa-32k/hf"), "--ids", "1,x"], nil, "not an integer"),
        ]
        for (args, stdin, message) in cases {
            let r = try run(args, stdin: stdin)
            XCTAssertNotEqual(r.status, 0, "\(args)")
            XCTAssertTrue(r.err.contains(message), "\(args): \(r.err)")
            XCTAssertFalse(r.err.contains("Fatal error"), "\(args) crashed: \(r.err)")
        }
    }

    func testEvalReportAndRecords() throws {
        let model = try SharedData.path("reference/ref-gqa-32k/hf")
        let tmp = NSTemporaryDirectory() + "llama-eval-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        try Data("""
            {"q": "Is ice cold?", "choices": ["yes", "no"], "answer": "yes"}
            {"q": "Is fire cold?", "choices": ["yes", "no", "maybe"], "answer": "no"}
            """.utf8).write(to: URL(fileURLWithPath: tmp + "/items.jsonl"))
        try Data(#"{"task": "toy", "type": "multiple_choice", "data": "items.jsonl", "prompt": "{q}", "choices_field": "choices", "label_field": "answer"}"#.utf8)
            .write(to: URL(fileURLWithPath: tmp + "/toy.json"))
        let r = try run(["eval", "--model", model, "--task", tmp + "/toy.json", "--json", "--records", tmp + "/records.jsonl"])
        XCTAssertEqual(r.status, 0, r.err)
        let report = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        XCTAssertEqual(report["task"] as? String, "toy")
        XCTAssertEqual(report["items"] as? Int, 2)
        let results = report["results"] as! [[String: Any]]
        XCTAssertEqual(results.map { $0["metric"] as! String }, ["acc", "acc_norm"])
        let records = try String(contentsOfFile: tmp + "/records.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(records.count, 2)
        XCTAssertTrue(records[1].contains("\"gold\":1"))
        let table = try run(["eval", "--model", model, "--task", tmp + "/toy.json", "--records", "-"])
        XCTAssertTrue(table.out.contains("| toy  | acc      |"), table.out)

        for (args, message) in [(["--task", "nosuch"], "neither a built-in task"),
                                (["--task", "piqa", "--data", tmp + "/absent"], "no such file"),
                                (["--task", "piqa", "--data", tmp], "valid.jsonl"),
                                (["--task", tmp + "/toy.json", "--shots", "2"], "few-shot"),
                                (["--task", tmp + "/toy.json", "--limit", "0"], "--limit")] {
            let bad = try run(["eval", "--model", model, "--records", "-"] + args)
            XCTAssertNotEqual(bad.status, 0, "\(args)")
            XCTAssertTrue(bad.err.contains(message), "\(args): \(bad.err)")
        }
    }

    /// `llama reward train` writes a LlamaForSequenceClassification directory that `reward eval`
    /// and `reward score` read back (Tools/check_reward_export.py checks it in transformers).
    func testRewardTrainEvalScore() throws {
        let model = try SharedData.path("reference/ref-gqa-32k/hf")
        let pairs = try SharedData.path("chat/hh-rlhf/harmless-base-2000.jsonl")
        let tmp = NSTemporaryDirectory() + "llama-reward-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let lines = try String(contentsOfFile: pairs, encoding: .utf8).split(separator: "\n").prefix(12)
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: tmp + "/pairs.jsonl"))
        let train = try run(["reward", "train", "-m", model, "--data", tmp + "/pairs.jsonl", "--out", tmp + "/rm", "--seq", "128",
                             "--batch", "2", "--accumulate", "2", "--validation", "0.25"])
        XCTAssertEqual(train.status, 0, train.err)
        XCTAssertTrue(train.out.contains("validation: accuracy"), train.out)
        XCTAssertTrue(train.err.contains("cut to their last 128 tokens"), train.err)
        let config = try String(contentsOfFile: tmp + "/rm/hf/config.json", encoding: .utf8)
        XCTAssertTrue(config.contains("LlamaForSequenceClassification"))
        XCTAssertEqual(try String(contentsOfFile: tmp + "/rm/log.jsonl", encoding: .utf8).split(separator: "\n").count, 3)
        let eval = try run(["reward", "eval", "-m", tmp + "/rm/hf", "--data", tmp + "/pairs.jsonl", "--seq", "128", "--json"])
        XCTAssertEqual(eval.status, 0, eval.err)
        let result = try JSONSerialization.jsonObject(with: Data(eval.out.utf8)) as! [String: Any]
        XCTAssertEqual(result["pairs"] as? Int, 12)
        let a = try run(["reward", "score", "-m", tmp + "/rm/hf", "--prompt", "Hi", "--response", "Hello!"])
        let b = try run(["reward", "score", "-m", tmp + "/rm/hf", "--prompt", "Hi", "--response", "Hello!"])
        XCTAssertEqual(a.status, 0, a.err)
        XCTAssertNotNil(Double(a.out.trimmingCharacters(in: .whitespacesAndNewlines)), a.out)
        XCTAssertEqual(a.out, b.out)
        let bad = try run(["reward", "eval", "-m", model, "--data", tmp + "/pairs.jsonl"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.err.contains("score.weight"), bad.err)

        // A rejection-sampling round with that reward model: samples, the kept answers, and the
        // fine-tuned model; then the fine-tuned model measured against the round's samples.
        let round = try run(["rejection-sample", "-m", model, "--prompts", tmp + "/pairs.jsonl", "--limit", "3", "--reward", tmp + "/rm/hf",
                             "--reward-seq", "128", "-k", "3", "-n", "6", "--seed", "4", "--out", tmp + "/rs",
                             "--epochs", "1", "--seq", "64", "--batch", "1", "--keep-unfinished"])
        XCTAssertEqual(round.status, 0, round.err)
        XCTAssertTrue(round.out.contains("3 prompts × 3 samples: mean reward"), round.out)
        XCTAssertTrue(round.out.contains("cut off by --max-tokens"), round.out)
        let records = try String(contentsOfFile: tmp + "/rs/samples.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(records.count, 3)
        let first = try JSONSerialization.jsonObject(with: Data(records[0].utf8)) as! [String: Any]
        let samples = first["samples"] as! [[String: Any]]
        XCTAssertEqual(samples.count, 3)
        let rewards = samples.map { $0["reward"] as! Double }
        XCTAssertEqual(first["best"] as? Int, rewards.indices.max { rewards[$0] < rewards[$1] })
        XCTAssertEqual(first["kept"] as? Int, first["best"] as? Int)
        let kept = try String(contentsOfFile: tmp + "/rs/best.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(kept.count, 3)
        // Only the sampled answer is learned; the prompt's earlier assistant turns (HH-RLHF's own
        // answers, in the first dialogue) are context with weight 0.
        let keptMessages = try JSONSerialization.jsonObject(with: Data(kept[0].utf8)) as! [String: Any]
        let messages = keptMessages["messages"] as! [[String: Any]]
        XCTAssertEqual(messages.last?["content"] as? String, samples[first["kept"] as! Int]["text"] as? String)
        XCTAssertNil(messages.last?["weight"])
        let context = messages.dropLast().filter { $0["role"] as? String == "assistant" }
        XCTAssertFalse(context.isEmpty)
        XCTAssertTrue(context.allSatisfy { $0["weight"] as? Int == 0 }, "\(context)")
        XCTAssertEqual(try SFTData.load(tmp + "/rs/best.jsonl")[0].learnedAnswers, Array(repeating: false, count: context.count) + [true])
        XCTAssertTrue(FileManager.default.fileExists(atPath: tmp + "/rs/sft/model.gguf"), round.err)
        let after = try run(["rejection-sample", "-m", tmp + "/rs/sft/model.gguf", "--prompts", tmp + "/pairs.jsonl", "--limit", "3",
                             "--reward", tmp + "/rm/hf", "--reward-seq", "128", "-k", "1", "-n", "6", "--seed", "4", "--out", tmp + "/after",
                             "--no-train", "--baseline", tmp + "/rs/samples.jsonl"])
        XCTAssertEqual(after.status, 0, after.err)
        XCTAssertTrue(after.out.contains("mean reward difference"), after.out)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/after/sft"))
        // A mixed file: the safety model trains on the pairs marked as safety pairs only.
        let mixed = lines.prefix(6).enumerated().map { i, l in i % 2 == 0 ? String(l.dropLast()) + #", "safety": true}"# : String(l) }
        try Data((mixed.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: tmp + "/mixed.jsonl"))
        let safety = try run(["reward", "eval", "-m", tmp + "/rm/hf", "--data", tmp + "/mixed.jsonl", "--seq", "128", "--kind", "safety", "--json"])
        XCTAssertEqual(safety.status, 0, safety.err)
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(safety.out.utf8)) as! [String: Any])["pairs"] as? Int, 3)
        XCTAssertTrue(safety.err.contains("3 safety pairs of 6"), safety.err)

        // LoRA instead of the whole trunk: the adapters in PEFT's layout beside the merged export.
        let lora = try run(["reward", "train", "-m", model, "--data", tmp + "/pairs.jsonl", "--out", tmp + "/rm-lora", "--seq", "128",
                            "--batch", "2", "--accumulate", "2", "--validation", "0.25", "--lora-rank", "4", "--lora-targets", "q,v,down"])
        XCTAssertEqual(lora.status, 0, lora.err)
        XCTAssertTrue(lora.err.contains("LoRA rank 4"), lora.err)
        for file in ["adapter/adapter_config.json", "adapter/adapter_model.safetensors", "hf/model.safetensors"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: tmp + "/rm-lora/" + file), file)
        }
        let badLoRA = try run(["reward", "train", "-m", model, "--data", tmp + "/pairs.jsonl", "--out", tmp + "/x", "--lora-rank", "4",
                               "--lora-targets", "q,attn"])
        XCTAssertNotEqual(badLoRA.status, 0)
        XCTAssertTrue(badLoRA.err.contains("unknown LoRA target 'attn'"), badLoRA.err)

        // Six tokens end no answer: by default nothing is kept, and there is nothing to train on.
        let cut = try run(["rejection-sample", "-m", model, "--prompts", tmp + "/pairs.jsonl", "--limit", "2", "--reward", tmp + "/rm/hf",
                           "--reward-seq", "128", "-k", "2", "-n", "6", "--seed", "4", "--out", tmp + "/cut"])
        XCTAssertNotEqual(cut.status, 0)
        XCTAssertTrue(cut.err.contains("2 prompts kept no answer") && cut.err.contains("raise --max-tokens"), cut.err)
        XCTAssertEqual(try String(contentsOfFile: tmp + "/cut/best.jsonl", encoding: .utf8), "")

        // Context distillation with the same reward model as the safety judge: answers with and
        // without the pre-prompt, both scored without it.
        let distill = try run(["distill-safety", "-m", model, "--prompts", tmp + "/pairs.jsonl", "--limit", "2", "--reward", tmp + "/rm/hf",
                               "--reward-seq", "128", "-k", "2", "-n", "6", "--seed", "4", "--out", tmp + "/ds", "--no-train"])
        XCTAssertEqual(distill.status, 0, distill.err)
        XCTAssertTrue(distill.out.contains("with the pre-prompt") && distill.out.contains("answers kept"), distill.out)
        let dsRecords = try String(contentsOfFile: tmp + "/ds/samples.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(dsRecords.count, 2)
        let record = try JSONSerialization.jsonObject(with: Data(dsRecords[0].utf8)) as! [String: Any]
        XCTAssertEqual((record["with_preprompt"] as? [Any])?.count, 2)
        XCTAssertEqual((record["without_preprompt"] as? [Any])?.count, 2)
        let dsSummary = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: tmp + "/ds/summary.json"))) as! [String: Any]
        XCTAssertNotNil(dsSummary["difference"])
        XCTAssertEqual(dsSummary["kept"] as? Int, 0)  // six tokens end no answer
        let nothing = try run(["distill-safety", "-m", model, "--prompts", tmp + "/pairs.jsonl", "--limit", "1", "--reward", tmp + "/rm/hf",
                               "--reward-seq", "128", "-n", "6", "--seed", "4", "--out", tmp + "/ds2"])
        XCTAssertNotEqual(nothing.status, 0)
        XCTAssertTrue(nothing.err.contains("no answer kept"), nothing.err)

        // PPO with that reward model: iterations logged, the held-out prompts measured before and
        // after each, the merged model and the adapters written, and a run that resumes.
        let ppoArgs = ["ppo", "-m", model, "--prompts", tmp + "/pairs.jsonl", "--limit", "4", "--reward", tmp + "/rm/hf",
                       "--reward-seq", "128", "--batch", "2", "--mini-batch", "1", "-n", "6", "--max-prompt", "512",
                       "--held-out", tmp + "/pairs.jsonl", "--held-out-skip", "4", "--held-out-limit", "2", "--eval-every", "1",
                       "--lora-rank", "2", "--missing-eos-penalty", "1", "--lr", "1e-3"]
        let ppo = try run(ppoArgs + ["--iterations", "2", "--out", tmp + "/ppo"])
        XCTAssertEqual(ppo.status, 0, ppo.err)
        func ppoLog() throws -> [[String: Any]] {
            try String(contentsOfFile: tmp + "/ppo/log.jsonl", encoding: .utf8).split(separator: "\n")
                .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        }
        var log = try ppoLog()
        XCTAssertEqual(log.filter { $0["eval"] == nil }.compactMap { $0["iteration"] as? Int }, [1, 2])
        XCTAssertEqual(log.filter { $0["eval"] != nil }.compactMap { $0["iteration"] as? Int }, [0, 1, 2])
        XCTAssertTrue(log.allSatisfy { ($0["kl"] as? Double)?.isFinite == true && $0["mean_reward"] is Double }, "\(log)")
        XCTAssertNotNil(log.last?["paired_difference_from_first"] as? [String: Any])
        for file in ["model.gguf", "adapter/adapter_config.json", "checkpoint.ppockpt"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: tmp + "/ppo/" + file), file)
        }
        XCTAssertEqual(try String(contentsOfFile: tmp + "/ppo/rollouts.jsonl", encoding: .utf8).split(separator: "\n").count, 4)
        let more = try run(ppoArgs + ["--iterations", "3", "--out", tmp + "/ppo", "--resume"])
        XCTAssertEqual(more.status, 0, more.err)
        XCTAssertTrue(more.err.contains("resuming") && more.err.contains("iteration 2"), more.err)
        log = try ppoLog()
        XCTAssertEqual(log.filter { $0["eval"] == nil }.compactMap { $0["iteration"] as? Int }, [1, 2, 3])
        let none = try run(ppoArgs + ["--iterations", "1", "--out", tmp + "/ppo-none", "--resume"])
        XCTAssertNotEqual(none.status, 0)
        XCTAssertTrue(none.err.contains("checkpoint.ppockpt"), none.err)

        let noReward = try run(["rejection-sample", "-m", model, "--prompts", tmp + "/pairs.jsonl", "--reward", model, "--out", tmp + "/x"])
        XCTAssertNotEqual(noReward.status, 0)
        XCTAssertTrue(noReward.err.contains("score.weight"), noReward.err)
    }

    /// LoRA fine-tuning writes PEFT adapters; `merge-lora` merges them into the base model and
    /// gives the model `sft` exported with the adapters merged.
    func testLoRASFTAndMerge() throws {
        let model = try SharedData.path("reference/ref-gqa-32k/hf")
        let tmp = NSTemporaryDirectory() + "llama-lora-cli-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let examples = (0..<12).map { #"{"prompt": "Count to \#($0).", "response": "\#((0...$0).map(String.init).joined(separator: " "))"}"# }
        try Data((examples.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: tmp + "/sft.jsonl"))
        let sft = try run(["sft", "-m", model, "--data", tmp + "/sft.jsonl", "--out", tmp + "/run", "--seq", "32", "--batch", "2",
                           "--steps", "3", "--lr", "1e-2", "--lora-rank", "4", "--lora-targets", "all", "--eval-every", "0"])
        XCTAssertEqual(sft.status, 0, sft.err)
        XCTAssertTrue(sft.err.contains("(PEFT)"), sft.err)
        let merge = try run(["merge-lora", "-m", model, "--adapter", tmp + "/run/adapter", "-o", tmp + "/merged.gguf"])
        XCTAssertEqual(merge.status, 0, merge.err)
        let a = try run(["logits", "--model", tmp + "/merged.gguf", "--ids", "1,300,45"])
        let b = try run(["logits", "--model", tmp + "/run/model.gguf", "--ids", "1,300,45"])
        let base = try run(["logits", "--model", model, "--ids", "1,300,45"])
        let la = try JSONDecoder().decode([Float].self, from: Data(a.out.utf8))
        let lb = try JSONDecoder().decode([Float].self, from: Data(b.out.utf8))
        let l0 = try JSONDecoder().decode([Float].self, from: Data(base.out.utf8))
        XCTAssertLessThan(zip(la, lb).map { abs($0 - $1) }.max()!, 1e-4)
        XCTAssertGreaterThan(zip(la, l0).map { abs($0 - $1) }.max()!, 1e-3, "the adapters changed nothing")
        let missing = try run(["merge-lora", "-m", model, "--adapter", tmp, "-o", tmp + "/x.gguf"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.err.contains("adapter_config.json"), missing.err)
    }

    /// `llama gatt` on the default model: dialogues and training examples whose earlier answers
    /// are context, then adherence measured with the instruction only in the system message.
    func testGattDataAndEval() throws {
        guard case .success(let m) = DefaultModelFixture.model else { throw XCTSkip("default model unavailable") }
        let dialogues = try SharedData.path("chat/hh-rlhf/harmless-base-2000.jsonl")
        let tmp = NSTemporaryDirectory() + "llama-gatt-cli-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let data = try run(["gatt", "-m", m.path, "--dialogues", dialogues, "--limit", "3", "--turns", "2", "-k", "4", "-n", "64",
                            "--families", "persona,hobby", "--seed", "2", "--out", tmp + "/d", "--no-train"])
        XCTAssertEqual(data.status, 0, data.err)
        XCTAssertEqual(try String(contentsOfFile: tmp + "/d/dialogues.jsonl", encoding: .utf8).split(separator: "\n").count, 3)
        let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: tmp + "/d/summary.json"))) as! [String: Any]
        let kept = summary["kept"] as! Int
        XCTAssertEqual(summary["examples"] as? Int, 2 * kept)
        if kept > 0 {
            let examples = try SFTData.load(tmp + "/d/data.jsonl")
            XCTAssertEqual(examples[0].messages.first?.role, .system)
            XCTAssertEqual(examples[1].learnedAnswers, [false, true])
        }
        let eval = try run(["gatt", "--eval", "-m", m.path, "--dialogues", dialogues, "--skip", "1900", "--limit", "2", "--turns", "3",
                            "-n", "16", "--families", "word", "--seed", "2", "--out", tmp + "/e"])
        XCTAssertEqual(eval.status, 0, eval.err)
        XCTAssertTrue(eval.out.contains("turns 3-3: "), eval.out)
        let adherence = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: tmp + "/e/adherence.json"))) as! [String: Any]
        XCTAssertEqual((adherence["per_turn"] as? [[String: Any]])?.count, 3)
        let none = try run(["gatt", "--eval", "-m", m.path, "--dialogues", dialogues, "--families", "persona", "--out", tmp + "/x"])
        XCTAssertNotEqual(none.status, 0)
        XCTAssertTrue(none.err.contains("a program can check"), none.err)
    }

    func testHelp() throws {
        for sub in ["chat", "run", "tokenize", "logits", "info", "pull", "eval", "reward", "rejection-sample", "gatt", "distill-safety", "merge-lora"] {
            let r = try run([sub, "--help"])
            XCTAssertEqual(r.status, 0)
            XCTAssertTrue(r.out.contains("USAGE"), sub)
        }
    }
}
