import Foundation
import XCTest
import Llama

/// Supervised fine-tuning data: the loss mask comes from the segments the sequence is built
/// from, the prompt part is exactly what inference renders, and only answer tokens are targets.
final class SFTTests: XCTestCase {
    let conversation = [ChatMessage(.user, "What is 2 + 3?"), ChatMessage(.assistant, "2 + 3 = 5."),
                        ChatMessage(.user, "And 4 + 4?"), ChatMessage(.assistant, "8.")]

    private func check(_ format: ChatFormat, _ tokenizer: any Tokenizer, defaultSystem: String?, endMarker: String) throws {
        let segments = try SFTData.segments(conversation, format: format, tokenizer: tokenizer, defaultSystem: defaultSystem)
        let answers = segments.filter(\.learned)
        XCTAssertEqual(answers.count, 2)
        // Each answer with its end-of-turn marker (Llama 2 keeps Meta's space before </s>).
        for (segment, answer) in zip(answers, ["2 + 3 = 5.", "8."]) {
            let text = tokenizer.decode(segment.tokens, keepSpecial: true)
            XCTAssertTrue(text.hasSuffix(endMarker), text)
            XCTAssertEqual(text.dropLast(endMarker.count).trimmingCharacters(in: .whitespaces), answer)
        }
        // Everything before each answer is what inference renders for that conversation so far.
        for (turn, upTo) in [(0, 1), (1, 3)] {
            var prefix: [Int] = []
            var seen = 0
            for s in segments {
                if s.learned {
                    if seen == turn { break }
                    seen += 1
                }
                prefix += s.tokens
            }
            let rendered = try format.render(Array(conversation[..<upTo]), tokenizer: tokenizer, defaultSystem: defaultSystem)
            XCTAssertEqual(prefix, rendered, "\(format) turn \(turn + 1)")
        }
        // An answer given as context only (weight 0) keeps its tokens and is not learned.
        let partial = try SFTData.segments(conversation, format: format, tokenizer: tokenizer, defaultSystem: defaultSystem,
                                           learnedAnswers: [false, true])
        XCTAssertEqual(partial.flatMap(\.tokens), segments.flatMap(\.tokens))
        XCTAssertEqual(partial.filter(\.learned), [answers[1]])
    }

    func testChatMLSegmentsMatchInferenceRendering() throws {
        guard case .success(let m) = DefaultModelFixture.model else { throw XCTSkip("default model unavailable") }
        try check(.chatml, m.tokenizer, defaultSystem: ChatFormat.defaultSystemPrompt(template: m.chatTemplate), endMarker: "<|im_end|>")
    }

    func testLlama2SegmentsMatchInferenceRendering() throws {
        let tokenizer = try TokenizerLoader.load(file: try SharedData.path("tokenizer/llama2-tokenizer.model"))
        try check(.llama2, tokenizer, defaultSystem: nil, endMarker: "</s>")
    }

    /// Packed into training windows, a target is kept exactly where the token it predicts is an
    /// answer token; every prompt position is ignored, so prompt tokens add nothing to the loss
    /// or the gradient (`BackpropModel` ignores such targets, as `TrainingTests` checks against PyTorch).
    func testOnlyAnswerTokensAreTargets() throws {
        let tokenizer = try TokenizerLoader.load(file: try SharedData.path("tokenizer/llama2-tokenizer.model"))
        let examples = Array(repeating: SFTData.Example(conversation), count: 30)
        let packed = try SFTData.pack(examples, format: .llama2, tokenizer: tokenizer)
        let data = try DataMixture(sources: [.init(name: "sft", weight: 1, tokens: packed.tokens, learned: packed.learned)],
                                   sequenceLength: 16, validationFraction: 0, seed: 1)
        var answerTargets = 0, promptTargets = 0
        for _ in 0..<20 {
            let batch = data.nextBatch(rows: 2)
            for (i, target) in batch.targets.enumerated() {
                let row = i / 16, col = i % 16
                // Recover the window's position in the stream from its tokens.
                let window = Array(batch.tokens[(row * 16)..<(row * 16 + 16)])
                let start = (0...(packed.tokens.count - 17)).first { packed.tokens[$0..<($0 + 16)].elementsEqual(window) && $0 % 17 == 0 }!
                let next = start + col + 1
                if packed.learned[next] {
                    XCTAssertEqual(target, packed.tokens[next])
                    answerTargets += 1
                } else {
                    XCTAssertEqual(target, -1, "a prompt token is a target")
                    promptTargets += 1
                }
            }
        }
        XCTAssertGreaterThan(answerTargets, 0)
        XCTAssertGreaterThan(promptTargets, answerTargets)
    }

    /// What rejection-sample, gatt and distill-safety write is what `load` reads back.
    func testExampleJSONRoundTrip() throws {
        let example = SFTData.Example(context: [ChatMessage(.system, "s")] + Array(conversation.dropLast()), answer: "8.")
        XCTAssertEqual(example.learnedAnswers, [false, true])
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sft-roundtrip-\(UUID().uuidString).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let line = try JSONSerialization.data(withJSONObject: example.jsonObject) + Data("\n".utf8)
        try (line + line).write(to: URL(fileURLWithPath: path))
        XCTAssertEqual(try SFTData.load(path), [example, example])
        let messages = example.jsonObject["messages"] as! [[String: Any]]
        XCTAssertEqual(messages.map { $0["weight"] as? Int }, [nil, nil, 0, nil, nil])
    }

    func testExampleShapesAndBadLines() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("llama-swift-sft-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = """
            {"question": "q1", "answer": "a1"}
            {"prompt": "p", "response": "r"}
            {"instruction": "i", "input": "x", "output": "o"}
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
            {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a", "weight": 0}, {"role": "user", "content": "v"}, {"role": "assistant", "content": "b", "weight": 1}]}
            """
        try good.write(toFile: dir + "/good.jsonl", atomically: true, encoding: .utf8)
        let examples = try SFTData.load(dir + "/good.jsonl")
        XCTAssertEqual(examples.count, 5)
        XCTAssertEqual(examples[2].messages, [ChatMessage(.user, "i\n\nx"), ChatMessage(.assistant, "o")])
        XCTAssertEqual(examples[3].messages.map(\.role), [.system, .user, .assistant])
        XCTAssertEqual(examples[3].learnedAnswers, [true])
        XCTAssertEqual(examples[4].learnedAnswers, [false, true])
        let bad = [
            #"{"messages": [{"role": "robot", "content": "x"}]}"#,
            #"{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a", "weight": 0}]}"#,
            #"{"messages": [{"role": "user", "content": "u", "weight": 1}, {"role": "assistant", "content": "a"}]}"#,
            #"{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a", "weight": 0.5}]}"#,
        ]
        for (i, line) in bad.enumerated() {
            try ("{\"question\": \"q\", \"answer\": \"a\"}\n" + line + "\n").write(toFile: dir + "/bad.jsonl", atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try SFTData.load(dir + "/bad.jsonl"), "bad line \(i)") { e in XCTAssertTrue("\(e)".contains("line 2"), "\(e)") }
        }
    }

    /// `answerLoss` counts exactly the answer tokens that are targets inside whole windows, and
    /// gives the same mean as scoring those windows one by one.
    func testAnswerLossCountsAnswerTargetsOnly() throws {
        let tokenizer = try TokenizerLoader.load(file: try SharedData.path("tokenizer/llama2-tokenizer.model"))
        let packed = try SFTData.pack(Array(repeating: SFTData.Example(conversation), count: 7), format: .llama2, tokenizer: tokenizer)
        let config = ModelConfig(dim: 16, hiddenDim: 32, layerCount: 1, headCount: 2, kvHeadCount: 1, vocabSize: tokenizer.vocabSize,
                                 contextLength: 32, ropeLayout: .halves)
        let params = TrainableParameters(config: config, tiedEmbeddings: true, seed: 4)
        let length = 12, windows = packed.tokens.count / (length + 1)
        let r = try SFTData.answerLoss(params, tokens: packed.tokens, learned: packed.learned, sequenceLength: length, batchSize: 3)
        var expectedCount = 0
        var sum = 0.0
        let one = BackpropModel(parameters: params, batchSize: 1, sequenceLength: length)
        for w in 0..<windows {
            let start = w * (length + 1)
            let tokens = Array(packed.tokens[start..<(start + length)])
            let targets = (1...length).map { packed.learned[start + $0] ? packed.tokens[start + $0] : -1 }
            expectedCount += targets.filter { $0 >= 0 }.count
            sum += try one.loss(tokens: tokens, targets: targets).lossSum
        }
        XCTAssertEqual(r.count, expectedCount)
        XCTAssertEqual(r.loss, sum / Double(expectedCount), accuracy: 1e-5)
    }
}
