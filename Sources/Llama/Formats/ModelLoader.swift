import Foundation

/// The model file formats `--model` accepts, told apart by content, not by name.
public enum ModelFormat: String, Sendable {
    case gguf
    case huggingFace
    case llama2c
}

public enum ModelLoader {
    public static func detectFormat(path: String) throws -> ModelFormat {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw LlamaError.fileNotFound(path) }
        if isDir.boolValue {
            guard HFDirectory.isModelDirectory(path) else { throw LlamaError.fileNotFound(path + "/config.json") }
            return .huggingFace
        }
        let file = try MappedFile(path: path)
        if file.size >= 4 && file.base.loadUnaligned(as: UInt32.self) == GGUFFile.magic { return .gguf }
        if Llama2C.looksLikeCheckpoint(file) { return .llama2c }
        throw LlamaError.unknownModelFormat(path)
    }

    /// Reads the weights of any supported model file or directory.
    public static func loadWeights(path: String) throws -> Weights {
        switch try detectFormat(path: path) {
        case .gguf: try GGUFFile(path: path).loadWeights()
        case .huggingFace: try HFDirectory.loadWeights(directory: path).0
        case .llama2c: try Llama2C.loadWeights(path: path)
        }
    }
}
