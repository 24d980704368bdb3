import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LlamaKernels

/// A read-only memory map of a whole file. Weights point into it; the kernel pages them in on
/// use, so a model never needs to fit in RAM twice.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer
    public let size: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        if fd < 0 {
            if errno == ENOENT { throw LlamaError.fileNotFound(path) }
            throw LlamaError.cannotRead(file: path, reason: String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw LlamaError.cannotRead(file: path, reason: String(cString: strerror(errno))) }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw LlamaError.cannotRead(file: path, reason: "is a directory") }
        size = Int(st.st_size)
        if size == 0 {
            // mmap rejects empty files; give readers an empty, valid region instead.
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw LlamaError.cannotRead(file: path, reason: "mmap: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if size == 0 {
            UnsafeMutableRawPointer(mutating: base).deallocate()
        } else {
            munmap(UnsafeMutableRawPointer(mutating: base), size)
        }
    }

    /// A bounds-checked reader starting at `offset`.
    public func reader(at offset: Int = 0) -> ByteReader { ByteReader(file: self, offset: offset) }

    /// Checks that `count` bytes at `offset` lie inside the file.
    public func check(offset: Int, count: Int, what: String) throws {
        if offset < 0 || count < 0 || offset > size || count > size - offset {
            throw LlamaError.truncated(file: path, offset: offset, needed: count, what: what)
        }
    }

    /// A matrix backed by this file, after checking it fits and its rows are whole blocks.
    func matrix(_ type: TensorType, rows: Int, cols: Int, offset: Int, name: String) throws -> Matrix {
        guard rows > 0, cols > 0, let rowBytes = type.rowBytes(cols) else {
            throw LlamaError.corrupt(file: path, offset: offset,
                                     reason: "tensor '\(name)' of \(rows)×\(cols) \(type) does not divide into \(type.blockSize)-element blocks")
        }
        let (bytes, overflow) = rows.multipliedReportingOverflow(by: rowBytes)
        if overflow { throw LlamaError.corrupt(file: path, offset: offset, reason: "tensor '\(name)' is impossibly large") }
        try check(offset: offset, count: bytes, what: "tensor '\(name)'")
        return Matrix(type: type, rows: rows, cols: cols, data: base + offset)
    }

    /// A small tensor (a norm weight) decoded to Float32.
    func floats(_ type: TensorType, count: Int, offset: Int, name: String) throws -> [Float] {
        let m = try matrix(type, rows: 1, cols: count, offset: offset, name: name)
        return [Float](unsafeUninitializedCapacity: count) { buf, n in
            m.row(0, into: buf.baseAddress!)
            n = count
        }
    }
}

/// Sequential little-endian reads from a mapped file; every read checks the file's end and
/// names the offset when it is passed.
public struct ByteReader {
    let file: MappedFile
    public var offset: Int

    init(file: MappedFile, offset: Int) {
        self.file = file
        self.offset = offset
    }

    public mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        try file.check(offset: offset, count: MemoryLayout<T>.size, what: what)
        let v = T(littleEndian: file.base.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += MemoryLayout<T>.size
        return v
    }

    public mutating func readFloat(_ what: String) throws -> Float {
        Float(bitPattern: try read(UInt32.self, what))
    }

    public mutating func readDouble(_ what: String) throws -> Double {
        Double(bitPattern: try read(UInt64.self, what))
    }

    public mutating func readBytes(_ count: Int, _ what: String) throws -> UnsafeRawBufferPointer {
        try file.check(offset: offset, count: count, what: what)
        let b = UnsafeRawBufferPointer(start: file.base + offset, count: count)
        offset += count
        return b
    }

    /// Bytes that must be UTF-8 text.
    public mutating func readString(_ count: Int, _ what: String) throws -> String {
        let start = offset
        let bytes = try readBytes(count, what)
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw LlamaError.corrupt(file: file.path, offset: start, reason: "\(what) is not valid UTF-8")
        }
        return s
    }
}
