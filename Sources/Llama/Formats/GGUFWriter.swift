import Foundation
import LlamaKernels

/// Writes GGUF v3 files (gguf.md): header, metadata, tensor table, then tensor data aligned to
/// `general.alignment` (32). The file appears atomically: written to a temporary name beside
/// the destination, flushed to disk, then renamed.
public struct GGUFWriter {
    public struct Tensor {
        public var name: String
        /// ggml order: `dims[0]` is the row length.
        public var dims: [Int]
        public var rawType: UInt32
        public var data: [UInt8]

        public init(name: String, dims: [Int], type: TensorType, data: [UInt8]) {
            self.init(name: name, dims: dims, rawType: type.rawValue, data: data)
        }

        /// `rawType` may be any number, to write files other readers must reject.
        public init(name: String, dims: [Int], rawType: UInt32, data: [UInt8]) {
            self.name = name
            self.dims = dims
            self.rawType = rawType
            self.data = data
        }

        /// A Float32 tensor of shape `dims` (ggml order).
        public static func f32(_ name: String, _ dims: [Int], _ values: [Float]) -> Tensor {
            Tensor(name: name, dims: dims, type: .f32, data: values.withUnsafeBytes { Array($0) })
        }
    }

    public var metadata: [(String, GGUFValue)] = []
    public var tensors: [Tensor] = []
    public let alignment = 32

    public init() {}

    /// The whole file's bytes.
    public func serialize() -> [UInt8] {
        var out = headerBytes(sizes: tensors.map(\.data.count))
        for t in tensors {
            while out.count % alignment != 0 { out.append(0) }
            out += t.data
        }
        return out
    }

    /// Header, metadata and tensor table for tensors of the given data sizes (in order), up to
    /// where the first tensor's (aligned) data starts.
    func headerBytes(sizes: [Int]) -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func string(_ s: String) { u64(UInt64(s.utf8.count)); out += Array(s.utf8) }
        // Numbers are written 32 bits wide where they fit (u32, i32, f32), as llama.cpp's writer
        // does and as its loader expects for keys such as general.file_type.
        func typeCode(_ v: GGUFValue) -> UInt32 {
            switch v {
            case .uint(let x): x <= UInt64(UInt32.max) ? 4 : 10
            case .int(let x): x >= Int64(Int32.min) && x <= Int64(Int32.max) ? 5 : 11
            case .float: 6
            case .bool: 7
            case .string: 8
            case .array: 9
            }
        }
        func value(_ v: GGUFValue, as code: UInt32) {
            switch v {
            case .uint(let x): if code == 4 { u32(UInt32(x)) } else { u64(x) }
            case .int(let x): if code == 5 { u32(UInt32(bitPattern: Int32(x))) } else { u64(UInt64(bitPattern: x)) }
            case .float(let x): u32(Float(x).bitPattern)
            case .bool(let b): out.append(b ? 1 : 0)
            case .string(let s): string(s)
            case .array(let items):
                // One element type for the whole array: the widest any element needs.
                let code = items.map(typeCode).max() ?? 8
                u32(code)
                u64(UInt64(items.count))
                for i in items { value(i, as: code) }
            }
        }
        u32(GGUFFile.magic)
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (k, v) in metadata {
            string(k)
            let code = typeCode(v)
            u32(code)
            value(v, as: code)
        }
        var offset = 0
        var offsets: [Int] = []
        for size in sizes {
            offsets.append(offset)
            offset = (offset + size + alignment - 1) / alignment * alignment
        }
        for (t, o) in zip(tensors, offsets) {
            string(t.name)
            u32(UInt32(t.dims.count))
            for d in t.dims { u64(UInt64(d)) }
            u32(t.rawType)
            u64(UInt64(o))
        }
        return out
    }

    public func write(to path: String) throws {
        let bytes = serialize()
        try writeFileAtomically(path) { try $0.write(contentsOf: bytes) }
    }
}

extension GGUFWriter {
    /// A tensor whose bytes are produced when it is written, so a whole model never sits in
    /// memory at once.
    public struct StreamedTensor {
        public let name: String
        public let dims: [Int]
        public let type: TensorType
        public let produce: (inout [UInt8]) -> Void

        public init(name: String, dims: [Int], type: TensorType, produce: @escaping (inout [UInt8]) -> Void) {
            self.name = name
            self.dims = dims
            self.type = type
            self.produce = produce
        }

        var byteCount: Int { dims.dropFirst().reduce(type.rowBytes(dims[0])!, *) }
    }

    /// Writes metadata and tensors to `path` atomically, producing one tensor at a time.
    /// `shouldContinue` is asked between tensors; when it says no, the temporary file is removed,
    /// `path` is left as it was, and `LlamaError.cancelled` is thrown.
    public static func stream(metadata: [(String, GGUFValue)], tensors: [StreamedTensor], to path: String,
                              progress: (_ done: Int, _ total: Int) -> Void = { _, _ in },
                              shouldContinue: () -> Bool = { true }) throws {
        var header = GGUFWriter()
        header.metadata = metadata
        header.tensors = tensors.map { Tensor(name: $0.name, dims: $0.dims, type: $0.type, data: []) }
        let prefix = header.headerBytes(sizes: tensors.map(\.byteCount))
        try writeFileAtomically(path) { handle in
            try handle.write(contentsOf: prefix)
            var written = prefix.count
            for (i, t) in tensors.enumerated() {
                guard shouldContinue() else { throw LlamaError.cancelled(what: "writing \(path)") }
                var bytes: [UInt8] = []
                bytes.reserveCapacity(t.byteCount + header.alignment)
                while (written + bytes.count) % header.alignment != 0 { bytes.append(0) }
                let start = bytes.count
                t.produce(&bytes)
                precondition(bytes.count - start == t.byteCount, "tensor \(t.name) produced the wrong number of bytes")
                try handle.write(contentsOf: bytes)
                written += bytes.count
                progress(i + 1, tensors.count)
            }
        }
    }
}

/// Creates `path` so that readers see either the old file or the whole new one: `body` writes
/// a temporary file in the same directory, which is flushed to disk and renamed over `path`.
/// If `body` throws, the temporary file is removed and `path` is untouched.
func writeFileAtomically(_ path: String, _ body: (FileHandle) throws -> Void) throws {
    let tmp = path + ".tmp-\(ProcessInfo.processInfo.processIdentifier)"
    guard FileManager.default.createFile(atPath: tmp, contents: nil), let handle = FileHandle(forWritingAtPath: tmp) else {
        throw LlamaError.cannotWrite(file: tmp, reason: "cannot create")
    }
    do {
        try body(handle)
        try handle.synchronize()
        try handle.close()
    } catch {
        try? handle.close()
        unlink(tmp)
        throw (error as? LlamaError) ?? LlamaError.cannotWrite(file: path, reason: "\(error)")
    }
    guard rename(tmp, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(tmp)
        throw LlamaError.cannotWrite(file: path, reason: reason)
    }
}
