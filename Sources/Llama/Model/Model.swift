import Foundation

/// A model as a user has it: weights, tokenizer and the chat template its file names, loaded
/// from a GGUF file, a Hugging Face directory or a llama2.c checkpoint.
public final class Model: @unchecked Sendable {
    public let path: String
    public let format: ModelFormat
    public let weights: Weights
    public let tokenizer: any Tokenizer
    /// The Jinja chat template stored with the model, if any (`tokenizer.chat_template`).
    public let chatTemplate: String?
    /// A readable name (`general.name`, or the file name).
    public let name: String
    /// Metadata for `llama info`: (key, value) in file order.
    public let metadata: [(String, String)]

    public var config: ModelConfig { weights.config }

    private init(path: String, format: ModelFormat, weights: Weights, tokenizer: any Tokenizer, chatTemplate: String?,
                 name: String, metadata: [(String, String)]) {
        self.path = path
        self.format = format
        self.weights = weights
        self.tokenizer = tokenizer
        self.chatTemplate = chatTemplate
        self.name = name
        self.metadata = metadata
    }

    /// The model with every weight dequantized to Float32 and computed in Float32 (no 8-bit
    /// activations): the numbers a float reference loading the same file gives (transformers
    /// with `gguf_file=`), at 4 bytes per parameter and float speed.
    public func dequantized() throws -> Model {
        Model(path: path, format: format, weights: try TrainableParameters(weights: weights).weights(), tokenizer: tokenizer,
              chatTemplate: chatTemplate, name: name, metadata: metadata)
    }

    /// The same model (tokenizer, template, name) with other weights of the same shape: a
    /// policy being trained, generating with its current parameters.
    public func replacingWeights(_ weights: Weights) throws -> Model {
        guard weights.config == self.weights.config else {
            throw LlamaError.invalidArgument("the new weights' shape differs from \(name)'s")
        }
        return Model(path: path, format: format, weights: weights, tokenizer: tokenizer, chatTemplate: chatTemplate,
                     name: name, metadata: metadata)
    }

    public init(path: String, tokenizerPath: String? = nil) throws {
        self.path = path
        format = try ModelLoader.detectFormat(path: path)
        var metadata: [(String, String)] = []
        var template: String?
        var name = URL(fileURLWithPath: path).lastPathComponent
        let explicitTokenizer = try tokenizerPath.map { try TokenizerLoader.load(file: $0) }
        switch format {
        case .gguf:
            let gguf = try GGUFFile(path: path)
            weights = try gguf.loadWeights()
            tokenizer = try explicitTokenizer ?? TokenizerLoader.load(gguf: gguf)
            template = gguf.string("tokenizer.chat_template")
            name = gguf.string("general.name") ?? name
            // File order, the chat template left out, vocabulary arrays summarised and listed last.
            var vocabularyArrays: [(String, String)] = []
            for key in gguf.keys where key != "tokenizer.chat_template" {
                let value = gguf.metadata[key]!
                if key.hasPrefix("tokenizer.ggml."), let items = value.array {
                    vocabularyArrays.append((key, "[\(items.count) items]"))
                } else {
                    metadata.append((key, value.description))
                }
            }
            metadata += vocabularyArrays
        case .huggingFace:
            let (w, hf) = try HFDirectory.loadWeights(directory: path)
            weights = w
            tokenizer = try explicitTokenizer ?? Self.loadTokenizer(forDirectory: path, config: hf)
            template = TokenizerLoader.tokenizerConfig(besides: path + "/tokenizer.json")["chat_template"] as? String
        case .llama2c:
            weights = try Llama2C.loadWeights(path: path)
            if let t = explicitTokenizer {
                tokenizer = t
            } else {
                let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
                let candidate = dir + "/tokenizer.bin"
                guard FileManager.default.fileExists(atPath: candidate) else {
                    throw LlamaError.missingTokenizer(model: path, looked: [candidate])
                }
                tokenizer = try SentencePieceTokenizer(llama2cFile: candidate, vocabSize: weights.config.vocabSize)
            }
        }
        if tokenizer.vocabSize > weights.config.vocabSize {
            throw LlamaError.invalidConfig(file: path, field: "vocab_size",
                                           reason: "the tokenizer has \(tokenizer.vocabSize) tokens, the model only \(weights.config.vocabSize)")
        }
        chatTemplate = template
        self.name = name
        self.metadata = metadata
    }

    /// `tokenizer.model` (SentencePiece) or `tokenizer.json` in a model directory.
    static func loadTokenizer(forDirectory dir: String, config: HFConfig?) throws -> any Tokenizer {
        let spm = dir + "/tokenizer.model", json = dir + "/tokenizer.json"
        if FileManager.default.fileExists(atPath: spm) {
            let t = try SentencePieceTokenizer(modelFile: spm)
            guard let config else { return t }
            return SentencePieceTokenizer(vocabulary: t.vocabulary, bosID: config.bosTokenID ?? t.bosID,
                                          eosID: config.eosTokenIDs.first ?? t.eosID, unknownID: t.unknownID,
                                          addDummyPrefix: t.addDummyPrefix, byteFallback: t.byteFallback)
        }
        if FileManager.default.fileExists(atPath: json) {
            return try TokenizerLoader.load(tokenizerJSON: json, bosID: config?.bosTokenID, eosID: config?.eosTokenIDs.first)
        }
        throw LlamaError.missingTokenizer(model: dir, looked: [spm, json])
    }
}
