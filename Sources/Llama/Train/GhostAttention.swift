import Foundation

/// Ghost Attention (Llama 2 §3.3, SPEC.md §4.5): an instruction that should hold for a whole
/// dialogue is appended to every user turn while the current model samples the answers; the
/// training dialogue then carries it once, as the system message, and only the last answer is
/// learned, every earlier turn being context with zero loss. A model fine-tuned on such data
/// keeps following an instruction it saw only at the start.
public enum GhostAttention {
    /// A dialogue-wide instruction and, when a program can tell, how to check an answer keeps it.
    public struct Instruction: Sendable, Equatable {
        public var family: String
        public var text: String
        /// All must hold; empty when no program can check it (persona, hobby).
        public var checks: [Check]

        public init(family: String, text: String, checks: [Check] = []) {
            self.family = family
            self.text = text
            self.checks = checks
        }

        public var checkable: Bool { !checks.isEmpty }

        /// Whether `answer` keeps every checkable part of the instruction.
        public func isKept(by answer: String) -> Bool { checks.allSatisfy { $0.holds(answer) } }

        /// `answer` rewritten by program to keep every check (word rules first, then letter case,
        /// then commas), or nil when a check cannot be enforced (a language) or the result
        /// still fails one.
        public func enforced(on answer: String) -> String? {
            let order: (Check) -> Int = {
                switch $0 {
                case .maxWords: 0
                case .startsWith, .endsWith: 1
                case .lowercase, .uppercase: 2
                case .noCommas: 3
                case .language: 4
                }
            }
            var text = answer.trimmingCharacters(in: .whitespacesAndNewlines)
            for check in checks.sorted(by: { order($0) < order($1) }) {
                guard let next = check.enforced(on: text) else { return nil }
                text = next
            }
            return isKept(by: text) ? text : nil
        }
    }

    /// What a program can verify in an answer.
    public enum Check: Sendable, Equatable, CustomStringConvertible {
        case lowercase
        case uppercase
        case noCommas
        case startsWith(String)
        case endsWith(String)
        case maxWords(Int)
        /// Written in this language ("fr", "es", "de"): more of its common words than English's.
        case language(String)

        /// Parses "lowercase", "uppercase", "no_commas", "starts_with:WORD", "ends_with:WORD",
        /// "max_words:N" or "language:fr|es|de".
        public init(parsing text: String) throws {
            let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
            let value = parts.count > 1 ? parts[1].trimmingCharacters(in: .whitespaces) : ""
            switch parts.first ?? "" {
            case "lowercase": self = .lowercase
            case "uppercase": self = .uppercase
            case "no_commas": self = .noCommas
            case "starts_with" where !value.isEmpty: self = .startsWith(value)
            case "ends_with" where !value.isEmpty: self = .endsWith(value)
            case "max_words":
                guard let n = Int(value), n > 0 else { throw LlamaError.invalidArgument("max_words needs a positive count: \(text)") }
                self = .maxWords(n)
            case "language" where GhostAttention.commonWords[value] != nil: self = .language(value)
            default:
                throw LlamaError.invalidArgument("unknown check \"\(text)\" (lowercase, uppercase, no_commas, starts_with:W, ends_with:W, max_words:N, language:fr|es|de)")
            }
        }

        public var description: String {
            switch self {
            case .lowercase: "lowercase"
            case .uppercase: "uppercase"
            case .noCommas: "no_commas"
            case .startsWith(let w): "starts_with:\(w)"
            case .endsWith(let w): "ends_with:\(w)"
            case .maxWords(let n): "max_words:\(n)"
            case .language(let l): "language:\(l)"
            }
        }

        /// `answer` rewritten to keep this rule alone, or nil for a language (no program translates).
        public func enforced(on answer: String) -> String? {
            let text = answer.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty else { return nil }
            switch self {
            case .lowercase: return text.lowercased()
            case .uppercase: return text.uppercased()
            case .noCommas:
                return text.replacingOccurrences(of: ",", with: " ").split(separator: " ", omittingEmptySubsequences: true)
                    .joined(separator: " ")
            case .startsWith(let w):
                if holds(text) { return text }
                // "Indeed, the answer…": the old first letter lowered unless it starts "I" or an acronym.
                let first = text.prefix { !$0.isWhitespace }
                let keepCase = first == "I" || first.hasPrefix("I'") || (first.count > 1 && first == first.uppercased())
                return w + ", " + (keepCase ? text : text.prefix(1).lowercased() + text.dropFirst())
            case .endsWith(let w):
                if holds(text) { return text }
                return text + (text.last.map { ".!?".contains($0) } ?? false ? " " : ". ") + w + "."
            case .maxWords(let n):
                if holds(text) { return text }
                // The first n words, cut after the last sentence that ends within them when there is one.
                let words = text.split(whereSeparator: \.isWhitespace).prefix(n)
                var cut = words.joined(separator: " ")
                if let end = cut.lastIndex(where: { ".!?".contains($0) }), cut.distance(from: cut.startIndex, to: end) > 0 {
                    cut = String(cut[...end])
                } else if let last = cut.last, !".!?".contains(last) {
                    cut = cut.trimmingCharacters(in: CharacterSet.punctuationCharacters) + "."
                }
                return cut
            case .language: return holds(text) ? text : nil
            }
        }

        public func holds(_ answer: String) -> Bool {
            let text = answer.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !text.isEmpty else { return false }
            let letters = text.unicodeScalars.filter { CharacterSet.letters.contains($0) }
            switch self {
            case .lowercase: return !letters.isEmpty && text == text.lowercased()
            case .uppercase: return !letters.isEmpty && text == text.uppercased()
            case .noCommas: return !text.contains(",")
            case .startsWith(let w): return GhostAttention.words(text).first == GhostAttention.normalised(w)
            case .endsWith(let w): return GhostAttention.words(text).last == GhostAttention.normalised(w)
            case .maxWords(let n): return GhostAttention.words(text).count <= n
            case .language(let l):
                let words = GhostAttention.words(text)
                let own = words.filter { GhostAttention.commonWords[l]!.contains($0) }.count
                let english = words.filter { GhostAttention.commonWords["en"]!.contains($0) }.count
                return own >= 2 && own > english
            }
        }
    }

    /// Lowercased words, punctuation trimmed (apostrophes kept inside words).
    static func words(_ text: String) -> [String] {
        text.lowercased().split { $0.isWhitespace }.map { normalised(String($0)) }.filter { !$0.isEmpty }
    }

    static func normalised(_ word: String) -> String {
        word.lowercased().trimmingCharacters(in: CharacterSet.punctuationCharacters.union(.symbols).union(.whitespaces))
    }

    /// Frequent short words of each language, enough to tell a paragraph's language apart.
    static let commonWords: [String: Set<String>] = [
        "en": ["the", "and", "is", "are", "you", "to", "of", "a", "in", "that", "it", "for", "with", "this", "be", "not", "i", "can", "your", "have", "on", "or", "as", "what", "they", "we", "but", "if", "there"],
        "fr": ["le", "la", "les", "de", "des", "du", "et", "est", "un", "une", "je", "vous", "nous", "il", "elle", "pas", "que", "qui", "pour", "dans", "sur", "avec", "ce", "cette", "mais", "ou", "au", "aux", "sont", "être", "très", "bien", "c'est", "j'ai"],
        "es": ["el", "la", "los", "las", "de", "del", "y", "es", "un", "una", "yo", "usted", "que", "por", "para", "en", "con", "no", "pero", "muy", "está", "son", "como", "más", "lo", "se", "su"],
        "de": ["der", "die", "das", "und", "ist", "ein", "eine", "ich", "sie", "nicht", "zu", "mit", "für", "auf", "den", "dem", "es", "wir", "sind", "aber", "oder", "auch", "wie", "kann", "sehr"],
    ]

    /// The built-in families: programmatically checkable rules (language, formatting, word
    /// rules) and the paper's persona and hobby families, which no program checks.
    public static let builtIn: [Instruction] = [
        Instruction(family: "formatting", text: "Always answer in lowercase letters only, without any capital letters.", checks: [.lowercase]),
        Instruction(family: "formatting", text: "ALWAYS ANSWER IN CAPITAL LETTERS ONLY.", checks: [.uppercase]),
        Instruction(family: "formatting", text: "Never use a comma in your answers.", checks: [.noCommas]),
        Instruction(family: "formatting", text: "Answer in at most 15 words.", checks: [.maxWords(15)]),
        Instruction(family: "word", text: "End every answer with the word \"Amen\".", checks: [.endsWith("Amen")]),
        Instruction(family: "word", text: "Start every answer with the word \"Indeed\".", checks: [.startsWith("Indeed")]),
        Instruction(family: "language", text: "Always answer in French.", checks: [.language("fr")]),
        Instruction(family: "language", text: "Always answer in Spanish.", checks: [.language("es")]),
        Instruction(family: "persona", text: "Act as Napoleon Bonaparte."),
        Instruction(family: "persona", text: "Act as a pirate captain."),
        Instruction(family: "persona", text: "Act as a friendly kindergarten teacher."),
        Instruction(family: "hobby", text: "You enjoy playing tennis."),
        Instruction(family: "hobby", text: "You love gardening and talk about plants."),
        Instruction(family: "hobby", text: "You are passionate about astronomy."),
    ]

    /// `count` instructions drawn with `seed` from `pool`; with `combine`, about a third are a
    /// checkable rule joined with a persona or hobby (the paper's random combinations).
    public static func draw(_ count: Int, from pool: [Instruction], combine: Bool, seed: UInt64) -> [Instruction] {
        precondition(!pool.isEmpty)
        var rng = SplitMix64(seed: seed)
        let checkable = pool.filter(\.checkable), free = pool.filter { !$0.checkable }
        return (0..<count).map { _ in
            let first = pool[Int(rng.next() % UInt64(pool.count))]
            guard combine, !free.isEmpty, !checkable.isEmpty, rng.next() % 3 == 0 else { return first }
            let rule = checkable[Int(rng.next() % UInt64(checkable.count))]
            let flavour = free[Int(rng.next() % UInt64(free.count))]
            return Instruction(family: "\(flavour.family)+\(rule.family)", text: "\(flavour.text) \(rule.text)", checks: rule.checks)
        }
    }

    /// Instructions from a JSONL file: `{"instruction": text, "check"?: "lowercase" | … }` (or
    /// `"checks": [...]`), `"family"` optional.
    public static func loadInstructions(_ path: String) throws -> [Instruction] {
        guard let data = FileManager.default.contents(atPath: path) else { throw LlamaError.fileNotFound(path) }
        guard let text = String(data: data, encoding: .utf8) else { throw LlamaError.invalidUTF8(what: path) }
        var out: [Instruction] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            func bad(_ why: String) -> LlamaError { .invalidArgument("\(path):\(n + 1): \(why)") }
            guard let object = (try? JSONValue.parse(Data(trimmed.utf8)))?.object else { throw bad("not a JSON object") }
            guard let instruction = object["instruction"]?.string, !instruction.isEmpty else { throw bad("needs a non-empty 'instruction'") }
            var checks: [Check] = []
            do {
                if let c = object["check"]?.string { checks.append(try Check(parsing: c)) }
                if let cs = object["checks"]?.array {
                    for c in cs {
                        guard let s = c.string else { throw bad("'checks' holds strings") }
                        checks.append(try Check(parsing: s))
                    }
                }
            } catch let error as LlamaError { throw bad("\(error)") }
            out.append(Instruction(family: object["family"]?.string ?? "file", text: instruction, checks: checks))
        }
        guard !out.isEmpty else { throw LlamaError.invalidArgument("\(path): no instructions") }
        return out
    }

    /// A user turn as the model sees it while the data is sampled: the instruction appended.
    public static func withInstruction(_ user: String, _ instruction: Instruction) -> String {
        user.trimmingCharacters(in: .whitespacesAndNewlines) + "\n\n" + instruction.text
    }

    /// The conversation the model answers turn `answers.count + 1` of, while sampling: every user
    /// turn so far with the instruction appended, and the answers kept so far.
    public static func samplingConversation(users: [String], answers: [String], instruction: Instruction) -> [ChatMessage] {
        var messages: [ChatMessage] = []
        for (i, user) in users.prefix(answers.count + 1).enumerated() {
            messages.append(ChatMessage(.user, withInstruction(user, instruction)))
            if i < answers.count { messages.append(ChatMessage(.assistant, answers[i])) }
        }
        return messages
    }

    /// The conversation as the instruction-following model will see it: the instruction once, as
    /// the system message, then the plain user turns and the answers so far.
    public static func plainConversation(users: [String], answers: [String], instruction: Instruction) -> [ChatMessage] {
        var messages = [ChatMessage(.system, instruction.text)]
        for (i, user) in users.prefix(answers.count + 1).enumerated() {
            messages.append(ChatMessage(.user, user))
            if i < answers.count { messages.append(ChatMessage(.assistant, answers[i])) }
        }
        return messages
    }

    /// The GAtt training example for the first `turns` turns: the instruction as the system
    /// message, user turns without it, and every answer but the last as context (zero loss on
    /// every token of the earlier turns).
    public static func trainingExample(users: [String], answers: [String], instruction: Instruction, turns: Int) -> SFTData.Example {
        precondition(turns >= 1 && turns <= answers.count && answers.count <= users.count)
        return SFTData.Example(context: plainConversation(users: users, answers: Array(answers.prefix(turns - 1)), instruction: instruction),
                               answer: answers[turns - 1])
    }

    /// The control for an adherence rate: for each dialogue's answers, the share of the answers
    /// given under *other* instructions (different checks) that keep this dialogue's rules anyway,
    /// averaged over all answers (each dialogue weighted by its answer count). nil when no
    /// dialogue has answers under another instruction to compare with.
    public static func chanceRate(_ dialogues: [(instruction: Instruction, answers: [String])]) -> Double? {
        var chance = 0.0, counted = 0
        for d in dialogues where !d.answers.isEmpty {
            let others = dialogues.filter { $0.instruction.checks != d.instruction.checks }.flatMap(\.answers)
            guard !others.isEmpty else { continue }
            chance += Double(others.filter { d.instruction.isKept(by: $0) }.count) / Double(others.count) * Double(d.answers.count)
            counted += d.answers.count
        }
        return counted > 0 ? chance / Double(counted) : nil
    }

    /// How often each rule (a check, e.g. `starts_with:Indeed`) holds in answers to dialogues
    /// whose instruction has it, against answers to the dialogues whose instruction does not:
    /// the second count is what the model does anyway, so a rule kept more often *with* it than
    /// without is an instruction followed, not a style the training taught (a model that
    /// always answers briefly keeps a word limit everywhere). Keyed by the check's description.
    public static func ruleRates(_ dialogues: [(instruction: Instruction, answers: [String])])
        -> [String: (kept: Int, n: Int, keptWithout: Int, nWithout: Int)] {
        var rules: [Check] = []
        for d in dialogues { for c in d.instruction.checks where !rules.contains(c) { rules.append(c) } }
        var out: [String: (kept: Int, n: Int, keptWithout: Int, nWithout: Int)] = [:]
        for rule in rules {
            var r = (kept: 0, n: 0, keptWithout: 0, nWithout: 0)
            for d in dialogues {
                let kept = d.answers.filter { rule.holds($0) }.count
                if d.instruction.checks.contains(rule) {
                    r.kept += kept; r.n += d.answers.count
                } else {
                    r.keptWithout += kept; r.nWithout += d.answers.count
                }
            }
            out[rule.description] = r
        }
        return out
    }

    /// Multi-turn dialogues of `turns` user messages from a prompt set: the user turns of each
    /// conversation in file order, topped up with the user turns of the following conversations
    /// when one has fewer (the turns need not be about one topic for a dialogue-wide rule).
    public static func dialogues(from prompts: [PromptSet.Prompt], turns: Int) -> [(lines: [Int], users: [String])] {
        var out: [(lines: [Int], users: [String])] = []
        var lines: [Int] = [], users: [String] = []
        for p in prompts {
            let own = p.messages.filter { $0.role == .user }.map(\.content).filter { !$0.isEmpty }
            for u in own where users.count < turns { users.append(u) }
            lines.append(p.line)
            if users.count == turns {
                out.append((lines, users))
                lines = []; users = []
            }
        }
        return out
    }
}
