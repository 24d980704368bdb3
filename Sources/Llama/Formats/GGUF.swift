import Foundation
import LlamaKernels

/// A metadata value of a GGUF file (gguf.md, "Metadata value types").
public indirect enum GGUFValue: Sendable, Equatable, CustomStringConvertible {
    case uint(UInt64)
    case int(Int64)
    case float(Double)
    case bool(Bool)
    case string(String)
    case array([GGUFValue])

    public var int: Int? {
        switch self {
        case .uint(let v): v <= UInt64(Int.max) ? Int(v) : nil
        case .int(let v): Int(v)
        default: nil
        }
    }
    public var double: Double? {
        switch self {
        case .float(let v): v
        case .uint, .int: int.map(Double.init)
        default: nil
        }
    }
    public var string: String? { if case .string(let s) = self { s } else { nil } }
    public var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var array: [GGUFValue]? { if case .array(let a) = self { a } else { nil } }

    public var description: String {
        switch self {
        case .uint(let v): "\(v)"
        case .int(let v): "\(v)"
        case .float(let v): "\(v)"
        case .bool(let v): "\(v)"
        case .string(let s): s.debugDescription
        case .array(let a):
            a.count > 8 ? "[\(a.prefix(4).map(\.description).joined(separator: ", ")), … (\(a.count) items)]"
                        : "[\(a.map(\.description).joined(separator: ", "))]"
        }
    }
}

/// One tensor's entry in a GGUF file's table.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    /// ggml order: `dims[0]` is the length of a row.
    public let dims: [Int]
    /// ggml type number as stored (may be a type this build does not know).
    public let rawType: UInt32
    /// Absolute offset of the data in the file.
    public let offset: Int

    public var type: TensorType? { TensorType(rawValue: rawType) }
    public var elementCount: Int { dims.reduce(1, *) }
    public var typeName: String { type?.description ?? "unknown type \(rawType)" }
}

/// A parsed GGUF file (llama.cpp's format, versions 2 and 3): metadata and the tensor table,
/// with the data left in the memory map.
public final class GGUFFile: @unchecked Sendable {
    public let file: MappedFile
    public let version: Int
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let keys: [String]
    public let tensors: [GGUFTensorInfo]
    public let tensorIndex: [String: Int]
    public var path: String { file.path }

    public static let magic: UInt32 = 0x4655_4747  // "GGUF" little-endian

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        var r = file.reader()
        let magic = try r.read(UInt32.self, "GGUF magic")
        guard magic == Self.magic else {
            throw LlamaError.badMagic(file: file.path, found: Self.describeMagic(file), expected: "GGUF")
        }
        let version = Int(try r.read(UInt32.self, "GGUF version"))
        guard version == 2 || version == 3 else { throw LlamaError.unsupportedVersion(file: file.path, version: version) }
        self.version = version
        let tensorCount = try r.read(UInt64.self, "tensor count")
        let kvCount = try r.read(UInt64.self, "metadata count")
        // Every entry takes at least a few bytes, so counts beyond the file size are corrupt.
        guard tensorCount < UInt64(file.size), kvCount < UInt64(file.size) else {
            throw LlamaError.corrupt(file: file.path, offset: 8, reason: "tensor count \(tensorCount) / metadata count \(kvCount) exceed the file size")
        }
        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        for _ in 0..<Int(kvCount) {
            let key = try Self.readString(&r, "metadata key")
            let typeOffset = r.offset
            let type = try r.read(UInt32.self, "type of '\(key)'")
            metadata[key] = try Self.readValue(&r, type: type, key: key, typeOffset: typeOffset)
            keys.append(key)
        }
        var infos: [GGUFTensorInfo] = []
        var index: [String: Int] = [:]
        for _ in 0..<Int(tensorCount) {
            let nameOffset = r.offset
            let name = try Self.readString(&r, "tensor name")
            let nDims = Int(try r.read(UInt32.self, "dimension count of '\(name)'"))
            guard (1...4).contains(nDims) else {
                throw LlamaError.corrupt(file: file.path, offset: nameOffset, reason: "tensor '\(name)' has \(nDims) dimensions")
            }
            var dims: [Int] = []
            for d in 0..<nDims {
                let v = try r.read(UInt64.self, "dimension \(d) of '\(name)'")
                guard v > 0, v < UInt64(1) << 40 else {
                    throw LlamaError.corrupt(file: file.path, offset: r.offset - 8, reason: "tensor '\(name)' has dimension \(v)")
                }
                dims.append(Int(v))
            }
            let type = try r.read(UInt32.self, "type of '\(name)'")
            let offset = try r.read(UInt64.self, "offset of '\(name)'")
            guard offset < UInt64(file.size) else {
                throw LlamaError.corrupt(file: file.path, offset: r.offset - 8, reason: "tensor '\(name)' data offset \(offset) is past the end of the file")
            }
            index[name] = infos.count
            infos.append(GGUFTensorInfo(name: name, dims: dims, rawType: type, offset: Int(offset)))
        }
        var alignment = 32
        if let a = metadata["general.alignment"] {
            guard let v = a.int, v > 0, v & (v - 1) == 0 else {
                throw LlamaError.corrupt(file: file.path, offset: nil, reason: "general.alignment \(a) is not a power of two")
            }
            alignment = v
        }
        let dataStart = (r.offset + alignment - 1) / alignment * alignment
        self.metadata = metadata
        self.keys = keys
        self.tensorIndex = index
        self.tensors = infos.map { GGUFTensorInfo(name: $0.name, dims: $0.dims, rawType: $0.rawType, offset: dataStart + $0.offset) }
        // Check every tensor's data lies inside the file now, so a truncated download fails at load.
        for t in tensors {
            guard let type = t.type else { continue }
            if let rowBytes = type.rowBytes(t.dims[0]) {
                let rows = t.elementCount / t.dims[0]
                try file.check(offset: t.offset, count: rows * rowBytes, what: "data of tensor '\(t.name)'")
            } else {
                throw LlamaError.corrupt(file: file.path, offset: nil,
                                         reason: "tensor '\(t.name)' row of \(t.dims[0]) is not a whole number of \(type) blocks")
            }
        }
    }

    public func tensor(_ name: String) -> GGUFTensorInfo? { tensorIndex[name].map { tensors[$0] } }

    public func int(_ key: String) throws -> Int {
        guard let v = metadata[key] else { throw LlamaError.missingMetadata(file: path, key: key) }
        guard let i = v.int else { throw LlamaError.invalidConfig(file: path, field: key, reason: "expected an integer, found \(v)") }
        return i
    }

    public func double(_ key: String) throws -> Double {
        guard let v = metadata[key] else { throw LlamaError.missingMetadata(file: path, key: key) }
        guard let d = v.double else { throw LlamaError.invalidConfig(file: path, field: key, reason: "expected a number, found \(v)") }
        return d
    }

    public func string(_ key: String) -> String? { metadata[key]?.string }

    /// A string array such as `tokenizer.ggml.tokens`.
    public func strings(_ key: String) throws -> [String]? {
        guard let v = metadata[key] else { return nil }
        guard let a = v.array else { throw LlamaError.invalidConfig(file: path, field: key, reason: "expected an array") }
        return try a.map {
            guard let s = $0.string else { throw LlamaError.invalidConfig(file: path, field: key, reason: "expected strings") }
            return s
        }
    }

    private static func describeMagic(_ file: MappedFile) -> String {
        let n = min(4, file.size)
        let bytes = UnsafeRawBufferPointer(start: file.base, count: n)
        return n == 0 ? "nothing (empty file)" : bytes.map { String(format: "%02x", $0) }.joined(separator: " ")
    }

    private static func readString(_ r: inout ByteReader, _ what: String) throws -> String {
        let lengthOffset = r.offset
        let n = try r.read(UInt64.self, "length of \(what)")
        guard n <= UInt64(r.file.size) else {
            throw LlamaError.corrupt(file: r.file.path, offset: lengthOffset, reason: "\(what) claims \(n) bytes")
        }
        return try r.readString(Int(n), what)
    }

    private static func readValue(_ r: inout ByteReader, type: UInt32, key: String, typeOffset: Int) throws -> GGUFValue {
        switch type {
        case 0: return .uint(UInt64(try r.read(UInt8.self, key)))
        case 1: return .int(Int64(try r.read(Int8.self, key)))
        case 2: return .uint(UInt64(try r.read(UInt16.self, key)))
        case 3: return .int(Int64(try r.read(Int16.self, key)))
        case 4: return .uint(UInt64(try r.read(UInt32.self, key)))
        case 5: return .int(Int64(try r.read(Int32.self, key)))
        case 6: return .float(Double(try r.readFloat(key)))
        case 7:
            let b = try r.read(UInt8.self, key)
            guard b <= 1 else { throw LlamaError.corrupt(file: r.file.path, offset: r.offset - 1, reason: "'\(key)' bool is \(b)") }
            return .bool(b == 1)
        case 8: return .string(try readString(&r, "value of '\(key)'"))
        case 9:
            let elementType = try r.read(UInt32.self, "array type of '\(key)'")
            let countOffset = r.offset
            let count = try r.read(UInt64.self, "array length of '\(key)'")
            guard count <= UInt64(r.file.size - r.offset) else {
                throw LlamaError.corrupt(file: r.file.path, offset: countOffset, reason: "array '\(key)' claims \(count) items")
            }
            var items: [GGUFValue] = []
            items.reserveCapacity(Int(count))
            for _ in 0..<Int(count) {
                items.append(try readValue(&r, type: elementType, key: key, typeOffset: countOffset - 4))
            }
            return .array(items)
        case 10: return .uint(try r.read(UInt64.self, key))
        case 11: return .int(try r.read(Int64.self, key))
        case 12: return .float(try r.readDouble(key))
        default:
            throw LlamaError.corrupt(file: r.file.path, offset: typeOffset, reason: "metadata '\(key)' has unknown value type \(type)")
        }
    }
}

extension GGUFFile {
    /// Reads the model in this file into `Weights` (architecture `llama` and its relatives).
    public func loadWeights() throws -> Weights {
        let arch = string("general.architecture") ?? "llama"
        let known = ["llama", "mistral", "granite"]
        guard known.contains(arch) else {
            throw LlamaError.invalidConfig(file: path, field: "general.architecture",
                                           reason: "'\(arch)' is not a Llama-architecture model (supported: \(known.joined(separator: ", ")))")
        }
        let dim = try int("\(arch).embedding_length")
        let heads = try int("\(arch).attention.head_count")
        guard let embd = tensor("token_embd.weight") else { throw LlamaError.missingTensor(file: path, tensor: "token_embd.weight") }
        let vocab = metadata["\(arch).vocab_size"]?.int ?? embd.dims.last ?? 0
        let headDim = metadata["\(arch).attention.key_length"]?.int ?? (heads > 0 ? dim / heads : 0)
        let config = ModelConfig(
            dim: dim,
            hiddenDim: try int("\(arch).feed_forward_length"),
            layerCount: try int("\(arch).block_count"),
            headCount: heads,
            kvHeadCount: metadata["\(arch).attention.head_count_kv"]?.int ?? heads,
            headDim: headDim,
            vocabSize: vocab,
            contextLength: try int("\(arch).context_length"),
            ropeTheta: Float(metadata["\(arch).rope.freq_base"]?.double ?? 10000),
            ropeDim: metadata["\(arch).rope.dimension_count"]?.int ?? headDim,
            // convert_hf_to_gguf.py undoes Hugging Face's q/k permutation for llama models.
            ropeLayout: .interleaved,
            rmsNormEps: Float(try double("\(arch).attention.layer_norm_rms_epsilon")))
        try config.validate(source: path)

        func matrix(_ name: String) throws -> Matrix {
            guard let t = tensor(name) else { throw LlamaError.missingTensor(file: path, tensor: name) }
            guard let type = t.type, type.isSupported else {
                throw LlamaError.unsupportedTensorType(file: path, tensor: name, type: t.typeName)
            }
            guard t.dims.count == 2 else {
                throw LlamaError.shapeMismatch(file: path, tensor: name, expected: [2], found: t.dims)
            }
            return try file.matrix(type, rows: t.dims[1], cols: t.dims[0], offset: t.offset, name: name)
        }
        func vector(_ name: String) throws -> [Float] {
            guard let t = tensor(name) else { throw LlamaError.missingTensor(file: path, tensor: name) }
            guard let type = t.type, type.isSupported else {
                throw LlamaError.unsupportedTensorType(file: path, tensor: name, type: t.typeName)
            }
            return try file.floats(type, count: t.elementCount, offset: t.offset, name: name)
        }
        var layers: [LayerWeights] = []
        for i in 0..<config.layerCount {
            let p = "blk.\(i)."
            layers.append(LayerWeights(
                attentionNorm: try vector(p + "attn_norm.weight"),
                wq: try matrix(p + "attn_q.weight"),
                wk: try matrix(p + "attn_k.weight"),
                wv: try matrix(p + "attn_v.weight"),
                wo: try matrix(p + "attn_output.weight"),
                ffnNorm: try vector(p + "ffn_norm.weight"),
                w1: try matrix(p + "ffn_gate.weight"),
                w2: try matrix(p + "ffn_down.weight"),
                w3: try matrix(p + "ffn_up.weight")))
        }
        return try Weights(
            config: config,
            tokenEmbedding: try matrix("token_embd.weight"),
            layers: layers,
            norm: try vector("output_norm.weight"),
            output: tensor("output.weight") == nil ? nil : try matrix("output.weight"),
            storage: [file],
            source: path)
    }
}
