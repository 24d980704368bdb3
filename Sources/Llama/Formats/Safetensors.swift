import Foundation
import LlamaKernels

/// A `.safetensors` file: an 8-byte little-endian header length, a JSON header
/// `{name: {dtype, shape, data_offsets: [begin, end]}}`, then the raw data (huggingface/safetensors).
public final class SafetensorsFile: @unchecked Sendable {
    public struct Entry: Sendable {
        public let dtype: String
        public let shape: [Int]
        /// Absolute byte range in the file.
        public let offset: Int
        public let byteCount: Int
    }

    public let file: MappedFile
    public let entries: [String: Entry]
    public var path: String { file.path }

    public init(path: String) throws {
        file = try MappedFile(path: path)
        var r = file.reader()
        let headerLength = try r.read(UInt64.self, "safetensors header length")
        guard headerLength <= UInt64(file.size - 8) else {
            throw LlamaError.truncated(file: path, offset: 8, needed: Int(clamping: headerLength), what: "safetensors JSON header")
        }
        let header = try r.readBytes(Int(headerLength), "safetensors JSON header")
        let dataStart = 8 + Int(headerLength)
        guard let json = try? JSONSerialization.jsonObject(with: Data(header)) as? [String: Any] else {
            throw LlamaError.corrupt(file: path, offset: 8, reason: "the header is not a JSON object")
        }
        var entries: [String: Entry] = [:]
        for (name, value) in json where name != "__metadata__" {
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int], let range = info["data_offsets"] as? [Int], range.count == 2,
                  range[0] >= 0, range[1] >= range[0]
            else { throw LlamaError.corrupt(file: path, offset: 8, reason: "header entry '\(name)' is malformed") }
            let entry = Entry(dtype: dtype, shape: shape, offset: dataStart + range[0], byteCount: range[1] - range[0])
            try file.check(offset: entry.offset, count: entry.byteCount, what: "data of tensor '\(name)'")
            entries[name] = entry
        }
        self.entries = entries
    }

    static func tensorType(_ dtype: String) -> TensorType? {
        switch dtype {
        case "F32": .f32
        case "F16": .f16
        case "BF16": .bf16
        default: nil
        }
    }

    private func checked(_ name: String, dims: Int) throws -> (Entry, TensorType) {
        guard let e = entries[name] else { throw LlamaError.missingTensor(file: path, tensor: name) }
        guard let type = Self.tensorType(e.dtype) else {
            throw LlamaError.unsupportedTensorType(file: path, tensor: name, type: e.dtype)
        }
        guard e.shape.count == dims else {
            throw LlamaError.shapeMismatch(file: path, tensor: name, expected: dims == 1 ? [-1] : [-1, -1], found: e.shape)
        }
        let expectedBytes = e.shape.reduce(1, *) * type.blockBytes
        guard expectedBytes == e.byteCount else {
            throw LlamaError.corrupt(file: path, offset: e.offset,
                                     reason: "tensor '\(name)' of shape \(e.shape) \(e.dtype) needs \(expectedBytes) bytes, has \(e.byteCount)")
        }
        return (e, type)
    }

    public func matrix(_ name: String) throws -> Matrix {
        let (e, type) = try checked(name, dims: 2)
        return try file.matrix(type, rows: e.shape[0], cols: e.shape[1], offset: e.offset, name: name)
    }

    public func vector(_ name: String) throws -> [Float] {
        let (e, type) = try checked(name, dims: 1)
        return try file.floats(type, count: e.shape[0], offset: e.offset, name: name)
    }
}

/// Writes a safetensors file of Float32 tensors atomically: the header from the names and
/// shapes, then `body(i, handle)` writes tensor i's values (row-major, little-endian).
func writeFloat32Safetensors(_ tensors: [(name: String, shape: [Int])], to path: String,
                             body: (Int, FileHandle) throws -> Void) throws {
    var header: [String: Any] = ["__metadata__": ["format": "pt"]]
    var offset = 0
    for t in tensors {
        let bytes = t.shape.reduce(1, *) * 4
        header[t.name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + bytes]]
        offset += bytes
    }
    var headerBytes = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
    while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
    try writeFileAtomically(path) { handle in
        var prefix = Data()
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { prefix.append(contentsOf: $0) }
        try handle.write(contentsOf: prefix + headerBytes)
        for i in tensors.indices { try body(i, handle) }
    }
}
