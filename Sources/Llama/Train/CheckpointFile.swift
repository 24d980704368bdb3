import Foundation

/// The container both checkpoint kinds use (`LSCKPT01` for pre-training/SFT, `LSPPO001` for
/// PPO): 8 magic bytes, the length of a JSON description as a little-endian UInt64, the JSON,
/// then Float32 buffers back to back. Written atomically (temporary file, fsync, rename), so an
/// interrupted save leaves the previous checkpoint intact.
enum CheckpointFile {
    static func write<Header: Encodable>(_ path: String, magic: String, header: Header, buffers: [FloatBuffer]) throws {
        let json = try JSONEncoder().encode(header)
        try writeFileAtomically(path) { handle in
            var head = Array(magic.utf8)
            withUnsafeBytes(of: UInt64(json.count).littleEndian) { head += $0 }
            try handle.write(contentsOf: head)
            try handle.write(contentsOf: json)
            for buffer in buffers {
                try handle.write(contentsOf: Data(bytesNoCopy: buffer.pointer, count: buffer.count * 4, deallocator: .none))
            }
        }
    }

    /// Maps `path`, checks its magic and decodes its description; the buffers start at `dataOffset`.
    static func read<Header: Decodable>(_ path: String, magic: String, what: String, as: Header.Type) throws
        -> (file: MappedFile, header: Header, dataOffset: Int) {
        let file = try MappedFile(path: path)
        try file.check(offset: 0, count: 16, what: "\(what) header")
        guard [UInt8](UnsafeRawBufferPointer(start: file.base, count: 8)) == Array(magic.utf8) else {
            throw LlamaError.badMagic(file: path, found: String(decoding: UnsafeRawBufferPointer(start: file.base, count: 8), as: UTF8.self),
                                      expected: "llama.swift \(what) (\(magic))")
        }
        let jsonCount = Int(file.base.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian)
        try file.check(offset: 16, count: jsonCount, what: "\(what) description")
        do {
            let header = try JSONDecoder().decode(Header.self, from: Data(bytes: file.base + 16, count: jsonCount))
            return (file, header, 16 + jsonCount)
        } catch {
            throw LlamaError.corrupt(file: path, offset: 16, reason: "unreadable \(what) description: \(error)")
        }
    }
}
