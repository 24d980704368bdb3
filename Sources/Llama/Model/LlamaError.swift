import LlamaKernels

/// Everything that can go wrong with user input: each message names the file, field, tensor
/// or offset at fault, in one line.
public enum LlamaError: Error, CustomStringConvertible, Equatable {
    case fileNotFound(String)
    case cannotRead(file: String, reason: String)
    case cannotWrite(file: String, reason: String)
    case truncated(file: String, offset: Int, needed: Int, what: String)
    case badMagic(file: String, found: String, expected: String)
    case unsupportedVersion(file: String, version: Int)
    case corrupt(file: String, offset: Int?, reason: String)
    case missingTensor(file: String, tensor: String)
    case unsupportedTensorType(file: String, tensor: String, type: String)
    case shapeMismatch(file: String, tensor: String, expected: [Int], found: [Int])
    case invalidConfig(file: String, field: String, reason: String)
    case missingMetadata(file: String, key: String)
    case unknownModelFormat(String)
    case missingTokenizer(model: String, looked: [String])
    case invalidUTF8(what: String)
    case promptTooLong(tokens: Int, contextLength: Int)
    case contextFull(position: Int, contextLength: Int)
    case invalidToken(Int, vocabSize: Int)
    case invalidArgument(String)
    case download(String)
    case cancelled(what: String)

    public var description: String {
        switch self {
        case .fileNotFound(let f): "\(f): no such file or directory"
        case .cannotRead(let f, let why): "\(f): cannot read: \(why)"
        case .cannotWrite(let f, let why): "\(f): cannot write: \(why)"
        case .truncated(let f, let off, let n, let what):
            "\(f): truncated: \(what) needs \(n) bytes at offset \(off), past the end of the file"
        case .badMagic(let f, let found, let expected): "\(f): not a \(expected) file (starts with \(found))"
        case .unsupportedVersion(let f, let v): "\(f): unsupported format version \(v)"
        case .corrupt(let f, let off, let why):
            off.map { "\(f): corrupt at offset \($0): \(why)" } ?? "\(f): corrupt: \(why)"
        case .missingTensor(let f, let t): "\(f): tensor '\(t)' is missing"
        case .unsupportedTensorType(let f, let t, let type):
            "\(f): tensor '\(t)' has type \(type), which this build cannot compute with (supported: \(TensorType.allCases.filter(\.isSupported).map(\.description).joined(separator: ", ")))"
        case .shapeMismatch(let f, let t, let e, let found): "\(f): tensor '\(t)' has shape \(found), expected \(e)"
        case .invalidConfig(let f, let field, let why): "\(f): invalid '\(field)': \(why)"
        case .missingMetadata(let f, let k): "\(f): metadata key '\(k)' is missing"
        case .unknownModelFormat(let f):
            "\(f): not a model this program reads (expected a GGUF file, a Hugging Face directory with config.json, or a llama2.c .bin)"
        case .missingTokenizer(let m, let looked):
            "\(m): no tokenizer found (looked for \(looked.joined(separator: ", ")); pass one with --tokenizer"
        case .invalidUTF8(let what): "\(what) is not valid UTF-8"
        case .promptTooLong(let n, let ctx):
            "the prompt is \(n) tokens, longer than the context of \(ctx) tokens (raise --ctx-size or shorten the prompt)"
        case .contextFull(let pos, let ctx): "position \(pos) is outside the context of \(ctx) tokens"
        case .invalidToken(let t, let v): "token id \(t) is outside the vocabulary (0..<\(v))"
        case .invalidArgument(let s): s
        case .download(let s): "download failed: \(s)"
        case .cancelled(let what): "interrupted: \(what) (nothing was written)"
        }
    }
}
