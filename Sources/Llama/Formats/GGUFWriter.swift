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
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func string(_ s: String) { u64(UInt64(s.utf8.count)); out += Array(s.utf8) }
        func typeCode(_ v: GGUFValue) -> UInt32 {
            switch v {
            case .uint: 10
            case .int: 11
            case .float: 12
            case .bool: 7
            case .string: 8
            case .array: 9
            }
        }
        func value(_ v: GGUFValue) {
            switch v {
            case .uint(let x): u64(x)
            case .int(let x): u64(UInt64(bitPattern: x))
            case .float(let x): u64(x.bitPattern)
            case .bool(let b): out.append(b ? 1 : 0)
            case .string(let s): string(s)
            case .array(let items):
                u32(items.first.map(typeCode) ?? 8)
                u64(UInt64(items.count))
                for i in items { value(i) }
            }
        }
        u32(GGUFFile.magic)
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (k, v) in metadata {
            string(k)
            u32(typeCode(v))
            value(v)
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            offsets.append(offset)
            offset = (offset + t.data.count + alignment - 1) / alignment * alignment
        }
        for (t, o) in zip(tensors, offsets) {
            string(t.name)
            u32(UInt32(t.dims.count))
            for d in t.dims { u64(UInt64(d)) }
            u32(t.rawType)
            u64(UInt64(o))
        }
        for t in tensors {
            while out.count % alignment != 0 { out.append(0) }
            out += t.data
        }
        return out
    }

    public func write(to path: String) throws {
        try writeAtomically(serialize(), to: path)
    }
}

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one:
/// temporary file in the same directory, fsync, rename.
public func writeAtomically(_ bytes: [UInt8], to path: String) throws {
    let tmp = path + ".tmp-\(ProcessInfo.processInfo.processIdentifier)"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw LlamaError.cannotWrite(file: tmp, reason: "\(String(cString: strerror(errno)))") }
    var ok = true
    bytes.withUnsafeBytes { raw in
        var done = 0
        while done < raw.count {
            let n = Foundation.write(fd, raw.baseAddress! + done, raw.count - done)
            if n <= 0 { ok = false; return }
            done += n
        }
    }
    ok = ok && fsync(fd) == 0
    close(fd)
    guard ok, rename(tmp, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(tmp)
        throw LlamaError.cannotWrite(file: path, reason: reason)
    }
}
