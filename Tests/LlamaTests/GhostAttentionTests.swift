import Foundation
import XCTest
import Llama

/// Ghost Attention's data: the instruction checks a program can make, the dialogue layouts, and
/// that every token of the earlier turns gets zero loss and zero gradient.
final class GhostAttentionTests: XCTestCase {
    typealias Check = GhostAttention.Check

    func testChecks() throws {
        XCTAssertTrue(Check.lowercase.holds("the moon is far away."))
        XCTAssertFalse(Check.lowercase.holds("The moon is far away."))
        XCTAssertFalse(Check.lowercase.holds("42"))  // no letters: nothing was kept
        XCTAssertTrue(Check.uppercase.holds("THE MOON, 384,400 KM AWAY!"))
        XCTAssertFalse(Check.uppercase.holds("THE MOON is far"))
        XCTAssertTrue(Check.noCommas.holds("No commas here."))
        XCTAssertFalse(Check.noCommas.holds("One, two."))
        XCTAssertTrue(Check.endsWith("Amen").holds("Be kind to others. Amen!"))
        XCTAssertTrue(Check.endsWith("Amen").holds("be kind. amen"))
        XCTAssertFalse(Check.endsWith("Amen").holds("Amen, be kind."))
        XCTAssertTrue(Check.startsWith("Indeed").holds("Indeed, the sky is blue."))
        XCTAssertFalse(Check.startsWith("Indeed").holds("The sky is indeed blue."))
        XCTAssertTrue(Check.maxWords(5).holds("One two three four five."))
        XCTAssertFalse(Check.maxWords(5).holds("One two three four five six."))
        XCTAssertTrue(Check.language("fr").holds("La lune est très loin de la Terre, et je ne peux pas y aller."))
        XCTAssertFalse(Check.language("fr").holds("The moon is very far from the Earth, and I cannot go there."))
        XCTAssertTrue(Check.language("es").holds("La luna está muy lejos de la Tierra y no es posible ir."))
        XCTAssertFalse(Check.lowercase.holds("   "))
        for text in ["lowercase", "uppercase", "no_commas", "starts_with:Indeed", "ends_with:Amen", "max_words:15", "language:fr"] {
            XCTAssertEqual(try Check(parsing: text).description, text)
        }
        XCTAssertThrowsError(try Check(parsing: "rhymes"))
        XCTAssertThrowsError(try Check(parsing: "max_words:none"))
        XCTAssertThrowsError(try Check(parsing: "language:xx"))
        let both = GhostAttention.Instruction(family: "x", text: "…", checks: [.lowercase, .noCommas])
        XCTAssertTrue(both.isKept(by: "yes it is"))
        XCTAssertFalse(both.isKept(by: "yes, it is"))
    }

    /// `--repair`: answers rewritten by program keep the rule, and rules no program can enforce
    /// (a language, or checks that undo each other) give nil.
    func testEnforcedAnswersKeepTheRule() {
        typealias I = GhostAttention.Instruction
        func rule(_ checks: GhostAttention.Check...) -> I { I(family: "t", text: "t", checks: checks) }
        XCTAssertEqual(rule(.lowercase).enforced(on: " Hello World! "), "hello world!")
        XCTAssertEqual(rule(.uppercase).enforced(on: "Hello"), "HELLO")
        XCTAssertEqual(rule(.noCommas).enforced(on: "Yes, of course,really."), "Yes of course really.")
        XCTAssertEqual(rule(.startsWith("Indeed")).enforced(on: "The sky is blue."), "Indeed, the sky is blue.")
        XCTAssertEqual(rule(.startsWith("Indeed")).enforced(on: "I think so."), "Indeed, I think so.")
        XCTAssertEqual(rule(.startsWith("Indeed")).enforced(on: "NASA says so."), "Indeed, NASA says so.")
        XCTAssertEqual(rule(.startsWith("Indeed")).enforced(on: "Indeed it is."), "Indeed it is.")
        XCTAssertEqual(rule(.endsWith("Amen")).enforced(on: "Go well."), "Go well. Amen.")
        XCTAssertEqual(rule(.endsWith("Amen")).enforced(on: "Go well"), "Go well. Amen.")
        XCTAssertEqual(rule(.maxWords(5)).enforced(on: "One two three. Four five six seven."), "One two three.")
        XCTAssertEqual(rule(.maxWords(5)).enforced(on: "one two three four five six"), "one two three four five.")
        XCTAssertNil(rule(.language("fr")).enforced(on: "Hello there, how are you?"))
        XCTAssertEqual(rule(.language("fr")).enforced(on: "Je suis très content, et vous?"), "Je suis très content, et vous?")
        // Combined: word rules, then case, then commas.
        XCTAssertEqual(rule(.uppercase, .startsWith("Indeed")).enforced(on: "the answer"), "INDEED, THE ANSWER")
        XCTAssertEqual(rule(.noCommas, .startsWith("Indeed")).enforced(on: "x y"), "Indeed x y")
        XCTAssertNil(rule(.maxWords(3), .endsWith("Amen")).enforced(on: "a b c d e"), "the added word breaks the limit")
        XCTAssertNil(rule(.lowercase).enforced(on: "  "))
        for text in ["Hello, World.", "I am here", "what?"] {
            for r in [rule(.lowercase), rule(.uppercase), rule(.noCommas), rule(.startsWith("Indeed")), rule(.endsWith("Amen")),
                      rule(.maxWords(2))] {
                if let fixed = r.enforced(on: text) { XCTAssertTrue(r.isKept(by: fixed), "\(r.checks) on \(text): \(fixed)") }
            }
        }
    }

    func testInstructionFileAndDraws() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gatt-\(UUID().uuidString).jsonl")
        try Data("""
            {"instruction": "Answer like a poet."}
            {"instruction": "Reply in lowercase.", "check": "lowercase", "family": "formatting"}
            {"instruction": "Short and French.", "checks": ["max_words:20", "language:fr"]}

            """.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let loaded = try GhostAttention.loadInstructions(file.path)
        XCTAssertEqual(loaded.map(\.checks), [[], [.lowercase], [.maxWords(20), .language("fr")]])
        XCTAssertEqual(loaded.map(\.family), ["file", "formatting", "file"])
        try Data(#"{"instruction": "x", "check": "sparkles"}"#.utf8).write(to: file)
        XCTAssertThrowsError(try GhostAttention.loadInstructions(file.path)) { XCTAssertTrue("\($0)".contains(":1:"), "\($0)") }

        let a = GhostAttention.draw(60, from: GhostAttention.builtIn, combine: true, seed: 3)
        XCTAssertEqual(a, GhostAttention.draw(60, from: GhostAttention.builtIn, combine: true, seed: 3))
        XCTAssertTrue(a.contains { $0.family.contains("+") }, "some combinations")
        // A combination keeps its rule's checks.
        for i in a where i.family.contains("+") { XCTAssertTrue(i.checkable, i.text) }
    }

    /// The control: how often answers given under other instructions keep a dialogue's rules.
    func testChanceRate() {
        let lower = GhostAttention.Instruction(family: "f", text: "lower", checks: [.lowercase])
        let short = GhostAttention.Instruction(family: "f", text: "short", checks: [.maxWords(2)])
        let d: [(instruction: GhostAttention.Instruction, answers: [String])] = [
            (lower, ["all lower here", "Not Lower"]),
            (short, ["Two words", "three words here", "ok"]),
        ]
        // Each dialogue's rules are tried on the other dialogue's answers; dialogues weigh by
        // their answer counts.
        let lowerRate = Double(["Two words", "three words here", "ok"].filter { lower.isKept(by: $0) }.count) / 3
        let shortRate = Double(["all lower here", "Not Lower"].filter { short.isKept(by: $0) }.count) / 2
        XCTAssertEqual(lowerRate, 2.0 / 3)
        XCTAssertEqual(shortRate, 1.0 / 2)
        XCTAssertEqual(GhostAttention.chanceRate(d)!, (2 * lowerRate + 3 * shortRate) / 5, accuracy: 1e-12)
        XCTAssertNil(GhostAttention.chanceRate([(lower, ["a"]), (lower, ["b"])]))
    }

    func testRuleRatesCompareWithAndWithoutTheRule() throws {
        let lower = GhostAttention.Instruction(family: "f", text: "lower", checks: [.lowercase])
        let both = GhostAttention.Instruction(family: "f", text: "lower and short", checks: [.lowercase, .maxWords(2)])
        let short = GhostAttention.Instruction(family: "f", text: "short", checks: [.maxWords(2)])
        let rates = GhostAttention.ruleRates([
            (lower, ["all lower here", "Not Lower"]),
            (both, ["two words"]),
            (short, ["Two words", "three words here", "ok"]),
        ])
        XCTAssertEqual(rates.count, 2)
        // lowercase: given in the first two dialogues (2 of 3 answers keep it), not in the third
        // (2 of 3: "three words here", "ok").
        let l = try XCTUnwrap(rates["lowercase"])
        XCTAssertEqual(l.kept, 2); XCTAssertEqual(l.n, 3); XCTAssertEqual(l.keptWithout, 2); XCTAssertEqual(l.nWithout, 3)
        // at most 2 words: given in the last two (3 of 4 keep it), not in the first (1 of 2: "Not Lower").
        let w = try XCTUnwrap(rates["max_words:2"])
        XCTAssertEqual(w.kept, 3); XCTAssertEqual(w.n, 4); XCTAssertEqual(w.keptWithout, 1); XCTAssertEqual(w.nWithout, 2)
    }

    func testDialoguesAreToppedUpFromTheNextConversations() {
        let prompts = [
            PromptSet.Prompt(messages: [ChatMessage(.user, "a1"), ChatMessage(.assistant, "x"), ChatMessage(.user, "a2")], line: 1),
            PromptSet.Prompt(messages: [ChatMessage(.user, "b1")], line: 2),
            PromptSet.Prompt(messages: [ChatMessage(.user, "c1"), ChatMessage(.assistant, "y"), ChatMessage(.user, "c2")], line: 3),
            PromptSet.Prompt(messages: [ChatMessage(.user, "d1")], line: 4),
        ]
        let d = GhostAttention.dialogues(from: prompts, turns: 3)
        XCTAssertEqual(d.map(\.users), [["a1", "a2", "b1"], ["c1", "c2", "d1"]])
        XCTAssertEqual(d.map(\.lines), [[1, 2], [3, 4]])
    }

    /// The sampling view appends the instruction to every user turn; the training example has it
    /// once, as the system message, and learns only the last answer: every token of the earlier
    /// turns is context, with no loss and no gradient.
    func testTrainingExampleLearnsOnlyTheLastTurn() throws {
        let tokenizer = try TokenizerLoader.load(file: try SharedData.path("tokenizer/llama2-tokenizer.model"))
        let instruction = GhostAttention.Instruction(family: "word", text: "End every answer with Amen.", checks: [.endsWith("Amen")])
        let users = ["Hi there.", "What is the moon?", "And the sun?"]
        let answers = ["Hello. Amen", "A rock in the sky. Amen", "A star. Amen"]
        let sampling = GhostAttention.samplingConversation(users: users, answers: Array(answers.prefix(2)), instruction: instruction)
        XCTAssertEqual(sampling.map(\.role), [.user, .assistant, .user, .assistant, .user])
        XCTAssertTrue(sampling.filter { $0.role == .user }.allSatisfy { $0.content.hasSuffix("\n\nEnd every answer with Amen.") })

        let example = GhostAttention.trainingExample(users: users, answers: answers, instruction: instruction, turns: 3)
        XCTAssertEqual(example.messages.first, ChatMessage(.system, instruction.text))
        XCTAssertEqual(example.messages.filter { $0.role == .user }.map(\.content), users)
        XCTAssertEqual(example.learnedAnswers, [false, false, true])
        let segments = try SFTData.segments(example.messages, format: .llama2, tokenizer: tokenizer, learnedAnswers: example.learnedAnswers)
        let learned = segments.filter(\.learned)
        XCTAssertEqual(learned.count, 1)
        XCTAssertTrue(tokenizer.decode(learned[0].tokens).hasPrefix("A star. Amen"), tokenizer.decode(learned[0].tokens))

        // Gradients on a tiny model: the example's gradient is the gradient of the last answer's
        // tokens alone, and differs from the gradient when the earlier answers are learned too.
        let packed = try SFTData.pack([example], format: .llama2, tokenizer: tokenizer)
        let all = try SFTData.pack([SFTData.Example(example.messages)], format: .llama2, tokenizer: tokenizer)
        XCTAssertEqual(packed.tokens, all.tokens)
        let length = packed.tokens.count - 1
        let config = ModelConfig(dim: 16, hiddenDim: 32, layerCount: 1, headCount: 2, kvHeadCount: 1, vocabSize: tokenizer.vocabSize,
                                 contextLength: length, ropeLayout: .halves)
        let params = TrainableParameters(config: config, tiedEmbeddings: true, seed: 9)
        let model = BackpropModel(parameters: params, batchSize: 1, sequenceLength: length)
        let tokens = Array(packed.tokens.dropLast())
        func gradient(_ targets: [Int]) throws -> [Float] {
            let g = FloatBuffer(count: params.layout.count)
            try model.accumulateGradients(tokens: tokens, targets: targets, gradScale: 1, into: g)
            return g.array
        }
        let gatt = try gradient((1...length).map { packed.learned[$0] ? packed.tokens[$0] : -1 })
        // The last answer's positions, found from the text rather than from the mask.
        let lastAnswer = learned[0].tokens
        let start = (0...(packed.tokens.count - lastAnswer.count)).last { Array(packed.tokens[$0..<($0 + lastAnswer.count)]) == lastAnswer }!
        let handMade = try gradient((1...length).map { (start..<(start + lastAnswer.count)).contains($0) ? packed.tokens[$0] : -1 })
        XCTAssertEqual(gatt, handMade)
        let everyAnswer = try gradient((1...length).map { all.learned[$0] ? all.tokens[$0] : -1 })
        XCTAssertNotEqual(gatt, everyAnswer)
    }
}
