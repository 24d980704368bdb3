import Foundation

/// Builds a tokenizer from whatever file holds it.
public enum TokenizerLoader {
    /// From a GGUF file's `tokenizer.ggml.*` metadata (a model or a vocab-only file).
    public static func load(gguf: GGUFFile) throws -> any Tokenizer {
        let path = gguf.path
        guard let model = gguf.string("tokenizer.ggml.model") else {
            throw LlamaError.missingMetadata(file: path, key: "tokenizer.ggml.model")
        }
        guard let tokens = try gguf.strings("tokenizer.ggml.tokens") else {
            throw LlamaError.missingMetadata(file: path, key: "tokenizer.ggml.tokens")
        }
        let types = gguf.metadata["tokenizer.ggml.token_type"]?.array?.map { TokenKind(rawValue: $0.int ?? 1) ?? .normal }
        let kinds = types ?? [TokenKind](repeating: .normal, count: tokens.count)
        guard kinds.count == tokens.count else {
            throw LlamaError.invalidConfig(file: path, field: "tokenizer.ggml.token_type",
                                           reason: "\(kinds.count) types for \(tokens.count) tokens")
        }
        let scores = gguf.metadata["tokenizer.ggml.scores"]?.array?.map { Float($0.double ?? 0) }
            ?? [Float](repeating: 0, count: tokens.count)
        guard scores.count == tokens.count else {
            throw LlamaError.invalidConfig(file: path, field: "tokenizer.ggml.scores", reason: "\(scores.count) scores for \(tokens.count) tokens")
        }
        func id(_ key: String) -> Int? {
            guard let v = gguf.metadata[key]?.int, v >= 0, v < tokens.count else { return nil }
            return v
        }
        let vocabulary = Vocabulary(pieces: tokens, kinds: kinds, scores: scores)
        switch model {
        case "llama":
            return SentencePieceTokenizer(
                vocabulary: vocabulary, bosID: id("tokenizer.ggml.bos_token_id"), eosID: id("tokenizer.ggml.eos_token_id"),
                unknownID: id("tokenizer.ggml.unknown_token_id"),
                addsBOS: gguf.metadata["tokenizer.ggml.add_bos_token"]?.bool ?? true,
                addDummyPrefix: gguf.metadata["tokenizer.ggml.add_space_prefix"]?.bool ?? true)
        case "gpt2":
            guard let merges = try gguf.strings("tokenizer.ggml.merges") else {
                throw LlamaError.missingMetadata(file: path, key: "tokenizer.ggml.merges")
            }
            let preName = gguf.string("tokenizer.ggml.pre") ?? "default"
            guard let pre = PreTokenizer(ggufName: preName) else {
                throw LlamaError.invalidConfig(file: path, field: "tokenizer.ggml.pre", reason: "pre-tokenizer '\(preName)' is not supported")
            }
            return ByteLevelBPETokenizer(
                vocabulary: vocabulary, merges: merges, preTokenizer: pre, bosID: id("tokenizer.ggml.bos_token_id"),
                eosID: id("tokenizer.ggml.eos_token_id"), addsBOS: gguf.metadata["tokenizer.ggml.add_bos_token"]?.bool ?? false)
        default:
            throw LlamaError.invalidConfig(file: path, field: "tokenizer.ggml.model",
                                           reason: "tokenizer '\(model)' is not supported (supported: llama, gpt2)")
        }
    }

    /// From a Hugging Face `tokenizer.json` (byte-level BPE models). `bos`/`eos` come from the
    /// model's config; `tokenizer_config.json` beside it, when present, may name them too.
    public static func load(tokenizerJSON path: String, bosID: Int? = nil, eosID: Int? = nil) throws -> any Tokenizer {
        guard let data = FileManager.default.contents(atPath: path) else { throw LlamaError.fileNotFound(path) }
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LlamaError.corrupt(file: path, offset: nil, reason: "not a JSON object")
        }
        guard let model = json["model"] as? [String: Any], let type = model["type"] as? String else {
            throw LlamaError.missingMetadata(file: path, key: "model.type")
        }
        guard type == "BPE", let vocab = model["vocab"] as? [String: Int] else {
            throw LlamaError.invalidConfig(file: path, field: "model.type", reason: "'\(type)' tokenizers are not supported (only BPE)")
        }
        let pre = try preTokenizer(json["pre_tokenizer"], path: path)
        let merges: [String] = try ((model["merges"] as? [Any]) ?? []).map {
            if let s = $0 as? String { return s }
            if let pair = $0 as? [String], pair.count == 2 { return pair[0] + " " + pair[1] }
            throw LlamaError.corrupt(file: path, offset: nil, reason: "model.merges has an entry that is neither \"a b\" nor [a, b]")
        }
        var added: [(Int, String, Bool)] = []
        for case let t as [String: Any] in (json["added_tokens"] as? [Any]) ?? [] {
            if let id = t["id"] as? Int, let content = t["content"] as? String {
                added.append((id, content, (t["special"] as? Bool) ?? false))
            }
        }
        let count = max((vocab.values.max() ?? -1) + 1, (added.map(\.0).max() ?? -1) + 1)
        var pieces = [String](repeating: "", count: count)
        var kinds = [TokenKind](repeating: .unused, count: count)
        for (piece, id) in vocab where id >= 0 {
            pieces[id] = piece
            kinds[id] = .normal
        }
        for (id, content, special) in added {
            pieces[id] = content
            kinds[id] = special ? .control : .userDefined
        }
        let config = tokenizerConfig(besides: path)
        func idOf(_ key: String) -> Int? {
            let v = config[key]
            let s = (v as? String) ?? ((v as? [String: Any])?["content"] as? String)
            guard let s else { return nil }
            return vocab[s] ?? added.first(where: { $0.1 == s })?.0
        }
        let vocabulary = Vocabulary(pieces: pieces, kinds: kinds, scores: [Float](repeating: 0, count: count))
        return ByteLevelBPETokenizer(vocabulary: vocabulary, merges: merges, preTokenizer: pre,
                                     bosID: bosID ?? idOf("bos_token"), eosID: eosID ?? idOf("eos_token"),
                                     addsBOS: (config["add_bos_token"] as? Bool) ?? false)
    }

    /// `tokenizer_config.json` in the same directory, or an empty dictionary.
    static func tokenizerConfig(besides path: String) -> [String: Any] {
        let p = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent("tokenizer_config.json").path
        guard let data = FileManager.default.contents(atPath: p),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
        return json
    }

    private static func preTokenizer(_ spec: Any?, path: String) throws -> PreTokenizer {
        guard let spec = spec as? [String: Any], let type = spec["type"] as? String else {
            throw LlamaError.invalidConfig(file: path, field: "pre_tokenizer",
                                           reason: "missing: SentencePiece-style tokenizer.json files are not supported, use tokenizer.model")
        }
        func describe(_ s: [String: Any]) -> String { (s["type"] as? String) ?? "?" }
        switch type {
        case "ByteLevel":
            return .gpt2
        case "Sequence":
            let parts = (spec["pretokenizers"] as? [[String: Any]]) ?? []
            let types = parts.map(describe)
            if types == ["Digits", "ByteLevel"], parts[0]["individual_digits"] as? Bool == true { return .digitsThenGPT2 }
            if types == ["Split", "ByteLevel"],
               let pattern = (parts[0]["pattern"] as? [String: Any])?["Regex"] as? String {
                if pattern.contains("\\p{N}{1,3}") { return .llama3 }
                if pattern.contains("\\p{N}|") && pattern.contains("[\\r\\n]*") { return .llama3SingleDigits }
            }
            throw LlamaError.invalidConfig(file: path, field: "pre_tokenizer", reason: "sequence \(types) is not supported")
        default:
            throw LlamaError.invalidConfig(file: path, field: "pre_tokenizer", reason: "'\(type)' is not supported")
        }
    }

    /// A bare tokenizer file given as `--model` to `llama tokenize`: `tokenizer.model`,
    /// `tokenizer.json`, llama2.c `tokenizer.bin`, or a (vocab-only) GGUF.
    public static func load(file path: String) throws -> any Tokenizer {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw LlamaError.fileNotFound(path) }
        if isDir.boolValue { return try Model.loadTokenizer(forDirectory: path, config: try? HFConfig(path: path + "/config.json")) }
        if path.hasSuffix(".json") { return try load(tokenizerJSON: path) }
        let file = try MappedFile(path: path)
        if file.size >= 4 && file.base.loadUnaligned(as: UInt32.self) == GGUFFile.magic {
            return try load(gguf: GGUFFile(file: file))
        }
        // A protobuf ModelProto starts with field 1 (pieces), wire type 2: byte 0x0A.
        if file.size > 0 && file.base.load(as: UInt8.self) == 0x0A { return try SentencePieceTokenizer(modelFile: path) }
        return try SentencePieceTokenizer(llama2cFile: path)
    }
}
