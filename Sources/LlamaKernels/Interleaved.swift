// Weights repacked at load time for the integer kernels: groups of 8 rows whose blocks are
// interleaved, so one 32-byte load holds 4 bytes of each of the 8 rows and one `maddubs`
// against a broadcast group of activations advances all 8 dot products. Per 32 weights this
// is about a third of the instructions of the one-row kernels in QuantizedDot.swift, which
// spend most of their time on per-block bookkeeping (sign tricks, converting and scaling
// each block's sum). The same idea as llama.cpp's "repack" buffers (block_q4_0x8,
// block_q4_Kx8); the layouts here are our own.
//
// Q8_0, group of 8 rows, per block b (272 bytes, the same as 8 × 34):
//   [8 × Float16 d][256 bytes: chunk c (0..<8) × row r (0..<8) × 4 bytes], chunk c of row r
//   being elements 4c..<4c+4.
//
// Q4_0, group of 8 rows, per block b (144 bytes, the same as 8 × 18):
//   [8 × Float16 d][128 bytes: chunk c (0..<4) × row r (0..<8) × 4 bytes]
//   chunk c of row r holds bytes 4c..<4c+4 of that row's 16 bytes of nibbles, so its low
//   nibbles are elements 4c..<4c+4 and its high nibbles elements 16+4c..<16+4c+4.
//   Nibbles stay unsigned (0...15); the kernels subtract 8·Σx per block instead.
//
// Q4_1, group of 8 rows, per block b (160 bytes, the same as 8 × 20):
//   [8 × Float16 d][8 × Float16 m][128 bytes laid out as Q4_0's].
//
// IQ4_NL, group of 8 rows, per block b: as Q4_0's (144 bytes), its nibbles indices into the
//   16 nonlinear levels.
//
// Q5_0 and Q5_1, group of 8 rows, per block b (176 and 192 bytes, the same as 8 × 22, 8 × 24):
//   [8 × Float16 d][Q5_1: 8 × Float16 m][32 bytes fifth bits: row r × 4 bytes][128 bytes laid out as Q4_0's]
//   Row r's fifth-bit word holds at bit 8k + 2c + h the fifth bit of the element whose nibble is
//   byte k of chunk c, low (h = 0) or high (h = 1) nibble: shifting it left by 4 − 2c − h puts
//   the bits of one chunk's 4 elements at bit 4 of each byte, so one shift and one mask give the
//   value 16 to OR into 4 nibbles of each row (see `FifthBits`).
//
// Q4_K, group of 8 rows, per super-block (1,184 bytes; 8 × 144 plus 32 for unpacked scales):
//   [8 × Float16 d][8 × Float16 dmin][64 bytes scales: sub-block j × row r]
//   [64 bytes mins: sub-block j × row r][1,024 bytes: pair p (0..<4) × chunk c (0..<8) × row r × 4 bytes]
//   chunk c of pair p of row r holds bytes 32p+4c..<32p+4c+4 of the row's 128 bytes of nibbles:
//   low nibbles are elements 64p+4c..<+4 (sub-block 2p), high nibbles 64p+32+4c..<+4 (2p+1).
//
// Q5_K, group of 8 rows, per super-block (1,440 bytes; 8 × 176 plus 32 for unpacked scales):
//   [160 bytes as Q4_K's], then per pair p (0..<4) 320 bytes: [64 bytes fifth bits: half v (0..<2)
//   × row r × 4 bytes][256 bytes nibbles laid out as Q4_K's pair p]; word v of row r holds at bit
//   8k + 2c + h the fifth bit of byte k of chunk 4v + c, low or high nibble, as Q5_0's. Each
//   pair's bits sit next to its nibbles (one stream, as Q6_K's groups below).

// Q2_K, group of 8 rows, per super-block (672 bytes, the same as 8 × 84):
//   [8 × Float16 d][8 × Float16 dmin][128 bytes scales: pair b (0..<8) × row r × 2 bytes, the
//   file's bytes (scale | min << 4) of sub-blocks 2b and 2b + 1][512 bytes: half n (0..<2) ×
//   chunk c (0..<8) × row r × 4 bytes]; chunk c of half n of row r holds qs[32n + 4c ..< +4],
//   whose 2-bit fields at bits 2j are elements 128n + 32j + 4c + k: one activation block
//   (4n + j) is the field j of a half's 8 chunks, its first sub-block of 16 in chunks 0-3.
//
// Q3_K, group of 8 rows, per super-block (912 bytes; 8 × 110 plus 32 for unpacked scales):
//   [8 × Float16 d][128 bytes scales as Q2_K's, each the signed 6-bit scale − 32]
//   [256 bytes hmask: chunk c × row r × 4 bytes, hmask[4c ..< +4]][512 bytes qs as Q2_K's];
//   element 128n + 32j + 4c + k is (its 2-bit field) + 4·(bit 4n + j of hmask byte 4c + k) − 4.
//
// Q6_K, group of 8 rows, per super-block (1,680 bytes, the same as 8 × 210), with u = q + 32
// the unsigned 6-bit value of element e (ggml `dequantize_row_q6_K`):
//   [8 × Float16 d][128 bytes int8 scales: sub-block s (of 16) × row r]
//   then per group g (of 32 elements; 8 groups), 192 bytes:
//   [128 bytes low bits: chunk c (0..<4) × row r × 4 bytes; byte k holds the low 4 bits of
//    u[32g+4c+k] (low nibble) and of u[32g+16+4c+k] (high nibble)]
//   [64 bytes high bits: chunk pair p (0..<2) × row r × 4 bytes; byte k holds the top 2 bits of
//    u[32g+8p+k], u[32g+16+8p+k], u[32g+8p+4+k], u[32g+16+8p+4+k], from bit 0 up]
//   A group's low and high bits sit together: with all low bits first and all high bits after
//   them (two streams 1 KB apart), decoding read Q6_K at half the rate (17.7 against 38.8 GB/s
//   on one Zen 5 core, `llama bench --kernels`).

/// How a matrix's rows are laid out in memory.
public enum MatrixLayout: Sendable, Equatable {
    /// Row after row, `rowBytes` each, as files store them.
    case rowMajor
    /// Groups of 8 rows with interleaved blocks (Interleaved.swift), `groupBytes` per group.
    case interleaved8(groupBytes: Int)
}

/// Memory owned by an interleaved copy of a matrix.
public final class KernelBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let byteCount: Int

    init(byteCount: Int) {
        self.byteCount = byteCount
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
    }

    deinit { pointer.deallocate() }
}

extension TensorType {
    /// Bytes of one interleaved group of 8 rows of `cols` elements, for the types that have
    /// interleaved kernels on this build (nil for the others).
    func interleavedGroupBytes(cols: Int) -> Int? {
        #if LLAMA_AVX2
        switch self {
        case .q8_0: return cols / 32 * 272
        case .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl: return cols / 32 * NibbleBlocks(self).bytes
        case .q4_K, .q5_K: return cols / 256 * ScaleMinBlocks(self).bytes
        case .q2_K, .q3_K: return cols / 256 * LowBitBlocks(self).bytes
        case .q6_K: return cols / 256 * 1680
        default: return nil
        }
        #else
        return nil
        #endif
    }
}

extension Matrix {
    /// A copy of this matrix in the interleaved layout the integer kernels read fastest, and the
    /// buffer that owns it; nil when this build has no interleaved kernels for the type or the
    /// row count is not a multiple of 8. `pool` spreads the copying over its threads.
    public func interleaved(pool: ThreadPool = .shared) -> (matrix: Matrix, buffer: KernelBuffer)? {
        guard layout == .rowMajor, rows % 8 == 0, let groupBytes = type.interleavedGroupBytes(cols: cols) else { return nil }
        let buffer = KernelBuffer(byteCount: rows / 8 * groupBytes)
        let source = self, out = SendablePointer(buffer.pointer.assumingMemoryBound(to: UInt8.self))
        pool.parallelFor(rows / 8) { g in
            let dst = UnsafeMutableRawPointer(out.pointer) + g * groupBytes
            let src = source.data + g * 8 * source.rowBytes
            switch source.type {
            case .q8_0: interleaveBlocks(src, source.rowBytes, dst, blocks: source.cols / 32, chunks: 8)
            case .q4_0: interleaveBlocks(src, source.rowBytes, dst, blocks: source.cols / 32, chunks: 4)
            case .q4_1: interleaveBlocks(src, source.rowBytes, dst, blocks: source.cols / 32, chunks: 4, halves: 2)
            case .q5_0: interleaveBlocks(src, source.rowBytes, dst, blocks: source.cols / 32, chunks: 4, fifthBits: true)
            case .iq4_nl: interleaveBlocks(src, source.rowBytes, dst, blocks: source.cols / 32, chunks: 4)
            case .q5_1: interleaveBlocks(src, source.rowBytes, dst, blocks: source.cols / 32, chunks: 4, halves: 2, fifthBits: true)
            case .q4_K: interleaveQ4_K(src, source.rowBytes, dst, superBlocks: source.cols / 256)
            case .q5_K: interleaveQ4_K(src, source.rowBytes, dst, superBlocks: source.cols / 256, fifthBits: true)
            case .q2_K, .q3_K: interleaveLowBitK(src, source.rowBytes, dst, superBlocks: source.cols / 256, q3: source.type == .q3_K)
            case .q6_K: interleaveQ6_K(src, source.rowBytes, dst, superBlocks: source.cols / 256)
            default: preconditionFailure()
            }
        }
        return (Matrix(type: type, rows: rows, cols: cols, data: UnsafeRawPointer(buffer.pointer),
                       layout: .interleaved8(groupBytes: groupBytes)), buffer)
    }

    /// Row `r` in its file layout (`rowBytes` bytes), rebuilt from the interleaved groups.
    func fileRow(_ r: Int, into dst: UnsafeMutableRawPointer) {
        guard case .interleaved8(let groupBytes) = layout else {
            dst.copyMemory(from: data + r * rowBytes, byteCount: rowBytes)
            return
        }
        let group = data + r / 8 * groupBytes, lane = r % 8
        switch type {
        case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl:
            let blockBytes = type.blockBytes, halves = type == .q4_1 || type == .q5_1 ? 2 : 1
            let fifth = type == .q5_0 || type == .q5_1, chunks = type == .q8_0 ? 8 : 4
            let qs = 2 * halves + (fifth ? 4 : 0)
            for b in 0..<(cols / 32) {
                let src = group + b * 8 * blockBytes, out = dst + b * blockBytes
                for h in 0..<halves { (out + 2 * h).copyMemory(from: src + 16 * h + 2 * lane, byteCount: 2) }
                if fifth {
                    let word = src.loadUnaligned(fromByteOffset: 16 * halves + 4 * lane, as: UInt32.self)
                    var qh: UInt32 = 0
                    for (bit, e) in FifthBits.block where word >> bit & 1 != 0 { qh |= 1 << e }
                    out.storeBytes(of: qh, toByteOffset: 2 * halves, as: UInt32.self)
                }
                let chunkBase = 16 * halves + (fifth ? 32 : 0)
                for c in 0..<chunks {
                    (out + qs + 4 * c).copyMemory(from: src + chunkBase + 32 * c + 4 * lane, byteCount: 4)
                }
            }
        case .q4_K, .q5_K:
            let f = ScaleMinBlocks(type), fifth = f.fifth
            for sb in 0..<(cols / 256) {
                let src = group + sb * f.bytes, out = dst + sb * type.blockBytes
                out.copyMemory(from: src + 2 * lane, byteCount: 2)
                (out + 2).copyMemory(from: src + 16 + 2 * lane, byteCount: 2)
                let sc = (0..<8).map { src.load(fromByteOffset: 32 + 8 * $0 + lane, as: UInt8.self) }
                let mn = (0..<8).map { src.load(fromByteOffset: 96 + 8 * $0 + lane, as: UInt8.self) }
                for j in 0..<4 {
                    out.storeBytes(of: sc[j] | (sc[j + 4] >> 4) << 6, toByteOffset: 4 + j, as: UInt8.self)
                    out.storeBytes(of: mn[j] | (mn[j + 4] >> 4) << 6, toByteOffset: 8 + j, as: UInt8.self)
                    out.storeBytes(of: (sc[j + 4] & 15) | (mn[j + 4] & 15) << 4, toByteOffset: 12 + j, as: UInt8.self)
                }
                let qs = fifth ? 48 : 16
                for p in 0..<4 {
                    let pair = src + f.bits(p), nibbles = src + f.qs(p)
                    for c in 0..<8 {
                        (out + qs + 32 * p + 4 * c).copyMemory(from: nibbles + 32 * c + 4 * lane, byteCount: 4)
                    }
                    guard fifth else { continue }
                    // qh[l] bit 2p + h is the fifth bit of element 64p + 32h + l.
                    if p == 0 { (out + 16).initializeMemory(as: UInt8.self, repeating: 0, count: 32) }
                    for v in 0..<2 {
                        let word = pair.loadUnaligned(fromByteOffset: 32 * v + 4 * lane, as: UInt32.self)
                        for (bit, e) in FifthBits.pair[v] where word >> bit & 1 != 0 {
                            let l = e % 32, h = e / 32
                            let qh = out.load(fromByteOffset: 16 + l, as: UInt8.self)
                            out.storeBytes(of: qh | UInt8(1 << (2 * p + h)), toByteOffset: 16 + l, as: UInt8.self)
                        }
                    }
                }
            }
        case .q2_K, .q3_K:
            let f = LowBitBlocks(type), q3 = f.q3, qs = q3 ? 32 : 16
            for sb in 0..<(cols / 256) {
                let src = group + sb * f.bytes, out = dst + sb * type.blockBytes
                var sc = [UInt8](repeating: 0, count: 16)
                for i in 0..<16 { sc[i] = src.load(fromByteOffset: f.scales + 16 * (i / 2) + 2 * lane + i % 2, as: UInt8.self) }
                if q3 {
                    (out + 108).copyMemory(from: src + 2 * lane, byteCount: 2)
                    // The 6-bit values sc + 32, packed back as ggml packs them (see `q3KScales`).
                    let v = sc.map { $0 &+ 32 }
                    for j in 0..<8 { out.storeBytes(of: v[j] & 15 | (v[j + 8] & 15) << 4, toByteOffset: 96 + j, as: UInt8.self) }
                    for k in 0..<4 {
                        var high: UInt8 = 0
                        for q in 0..<4 { high |= (v[4 * q + k] >> 4 & 3) << (2 * q) }
                        out.storeBytes(of: high, toByteOffset: 104 + k, as: UInt8.self)
                    }
                    for c in 0..<8 { (out + 4 * c).copyMemory(from: src + f.hmask + 32 * c + 4 * lane, byteCount: 4) }
                } else {
                    (out + 80).copyMemory(from: src + 2 * lane, byteCount: 2)
                    (out + 82).copyMemory(from: src + 16 + 2 * lane, byteCount: 2)
                    for i in 0..<16 { out.storeBytes(of: sc[i], toByteOffset: i, as: UInt8.self) }
                }
                for n in 0..<2 {
                    for c in 0..<8 {
                        (out + qs + 32 * n + 4 * c).copyMemory(from: src + f.qs + 256 * n + 32 * c + 4 * lane, byteCount: 4)
                    }
                }
            }
        case .q6_K:
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256) { u in
                for sb in 0..<(cols / 256) {
                    let src = group + sb * 1680, out = dst + sb * 210
                    for e in 0..<256 {
                        let g = e / 32, i = e % 32, half = i / 16, j = i % 16, c = j / 4, k = j % 4
                        let low = src.load(fromByteOffset: 144 + 192 * g + 32 * c + 4 * lane + k, as: UInt8.self) >> (4 * half) & 15
                        let p = c / 2, shift = 2 * (half + 2 * (c % 2))
                        let high = src.load(fromByteOffset: 272 + 192 * g + 32 * p + 4 * lane + k, as: UInt8.self) >> shift & 3
                        u[e] = low | high << 4
                    }
                    packQ6_K(u.baseAddress!, out)
                    for s in 0..<16 { out.storeBytes(of: src.load(fromByteOffset: 16 + 8 * s + lane, as: UInt8.self), toByteOffset: 192 + s, as: UInt8.self) }
                    (out + 208).copyMemory(from: src + 2 * lane, byteCount: 2)
                }
            }
        default:
            preconditionFailure("no interleaved layout for \(type)")
        }
    }
}

// The layouts above as offsets, for the repacking, `fileRow` and the kernels alike.

/// Layout of an interleaved group of the 32-element 4- and 5-bit formats (Q4_0, Q4_1, Q5_0,
/// Q5_1, IQ4_NL): the bytes of one block of 8 rows, and where its parts start.
struct NibbleBlocks {
    /// Q4_1, Q5_1: x = d·q + m with q unsigned; Q4_0, Q5_0: x = d·(q − zero); IQ4_NL
    /// (`levels`): x = d·level[q], multiplied as `levelBytes` gives them.
    let withMin: Bool, fifth: Bool, levels: Bool
    var bytes: Int { 144 + (withMin ? 16 : 0) + (fifth ? 32 : 0) }
    var bits: Int { withMin ? 32 : 16 }
    var qs: Int { bits + (fifth ? 32 : 0) }
    /// What each integer sum holds per unit of Σx beyond Σ value·x.
    var zero: Int32 { levels ? levelOffset : fifth ? 16 : 8 }

    @inline(__always) init(_ type: TensorType) {
        withMin = type == .q4_1 || type == .q5_1
        fifth = type == .q5_0 || type == .q5_1
        levels = type == .iq4_nl
    }
}

/// What `NibbleBlocks.zero` holds for IQ4_NL: its levels are offset by 128 for `vpdpbusd`.
#if LLAMA_VNNI
let levelOffset: Int32 = 128
#else
let levelOffset: Int32 = 0
#endif

/// Byte offsets in an interleaved Q4_K or Q5_K group: a super-block, and pair p's fifth bits
/// (Q5_K) and nibbles.
struct ScaleMinBlocks {
    let fifth: Bool
    var bytes: Int { fifth ? 1440 : 1184 }
    @inline(__always) func bits(_ p: Int) -> Int { 160 + 320 * p }
    @inline(__always) func qs(_ p: Int) -> Int { fifth ? 224 + 320 * p : 160 + 256 * p }

    @inline(__always) init(_ type: TensorType) { fifth = type == .q5_K }
}

/// Byte offsets in an interleaved Q2_K or Q3_K group (layouts at the top).
struct LowBitBlocks {
    let q3: Bool
    var bytes: Int { q3 ? 912 : 672 }
    var scales: Int { q3 ? 16 : 32 }
    /// Q3_K's hmask.
    var hmask: Int { 144 }
    var qs: Int { q3 ? 400 : 160 }

    @inline(__always) init(_ type: TensorType) { q3 = type == .q3_K }
}

/// Where the fifth bits of Q5_0, Q5_1 and Q5_K sit in the interleaved layouts: a 32-bit word per
/// row for 4 chunks of 4 nibble bytes, bit 8k + 2c + h for byte k of chunk c, low (h = 0) or
/// high (h = 1) nibble.
enum FifthBits {
    /// (bit of the word, element) for Q5_0 and Q5_1: one word per block, whose chunk c holds
    /// elements 4c + k (low nibbles) and 16 + 4c + k (high).
    static let block = layout { c, h, k in 16 * h + 4 * c + k }

    /// (bit of word v, element of the pair's 64) for Q5_K: two words per pair of sub-blocks, word
    /// v for chunks 4v + c, which hold elements 4(4v + c) + k (low nibbles) and 32 + 4(4v + c) + k.
    static let pair = [0, 1].map { v in layout { c, h, k in 32 * h + 4 * (4 * v + c) + k } }

    private static func layout(_ element: (Int, Int, Int) -> Int) -> [(bit: Int, element: Int)] {
        var pairs: [(bit: Int, element: Int)] = []
        for c in 0..<4 {
            for h in 0..<2 {
                for k in 0..<4 { pairs.append((8 * k + 2 * c + h, element(c, h, k))) }
            }
        }
        return pairs
    }
}

/// The 32-element block formats: `halves` leading Float16 values per block (d; Q4_1, Q5_1: d,
/// m), the fifth bits (Q5_0, Q5_1: uint32 qh, bit e for element e), then `chunks` chunks of 4
/// bytes (Q8_0: 8, Q4 and Q5: 4).
private func interleaveBlocks(_ src: UnsafeRawPointer, _ rowBytes: Int, _ dst: UnsafeMutableRawPointer, blocks: Int,
                              chunks: Int, halves: Int = 1, fifthBits: Bool = false) {
    let bitBytes = fifthBits ? 4 : 0, blockBytes = 2 * halves + bitBytes + 4 * chunks
    for b in 0..<blocks {
        let out = dst + b * 8 * blockBytes
        for r in 0..<8 {
            let block = src + r * rowBytes + b * blockBytes
            for h in 0..<halves { (out + 16 * h + 2 * r).copyMemory(from: block + 2 * h, byteCount: 2) }
            if fifthBits {
                let qh = block.loadUnaligned(fromByteOffset: 2 * halves, as: UInt32.self)
                var word: UInt32 = 0
                for (bit, e) in FifthBits.block where qh >> e & 1 != 0 { word |= 1 << bit }
                out.storeBytes(of: word, toByteOffset: 16 * halves + 4 * r, as: UInt32.self)
            }
            for c in 0..<chunks {
                (out + 16 * halves + 8 * bitBytes + 32 * c + 4 * r).copyMemory(from: block + 2 * halves + bitBytes + 4 * c, byteCount: 4)
            }
        }
    }
}

/// Q4_K, or Q5_K with `fifthBits` (uint8 qh[32] after the scales: bit 2p + h of qh[l] for
/// element 64p + 32h + l).
private func interleaveQ4_K(_ src: UnsafeRawPointer, _ rowBytes: Int, _ dst: UnsafeMutableRawPointer, superBlocks: Int,
                            fifthBits: Bool = false) {
    let f = ScaleMinBlocks(fifthBits ? .q5_K : .q4_K), blockBytes = fifthBits ? 176 : 144
    for sb in 0..<superBlocks {
        let out = dst + sb * f.bytes
        for r in 0..<8 {
            let block = src + r * rowBytes + sb * blockBytes
            (out + 2 * r).copyMemory(from: block, byteCount: 2)
            (out + 16 + 2 * r).copyMemory(from: block + 2, byteCount: 2)
            let (sc, mn) = q4KScales(block + 4)
            for j in 0..<8 {
                out.storeBytes(of: sc[j], toByteOffset: 32 + 8 * j + r, as: UInt8.self)
                out.storeBytes(of: mn[j], toByteOffset: 96 + 8 * j + r, as: UInt8.self)
            }
            let qs = block + (fifthBits ? 48 : 16)
            for p in 0..<4 {
                let pair = out + f.bits(p), nibbles = out + f.qs(p)
                for c in 0..<8 {
                    (nibbles + 32 * c + 4 * r).copyMemory(from: qs + 32 * p + 4 * c, byteCount: 4)
                }
                guard fifthBits else { continue }
                for v in 0..<2 {
                    var word: UInt32 = 0
                    for (bit, e) in FifthBits.pair[v] {
                        let qh = block.load(fromByteOffset: 16 + e % 32, as: UInt8.self)
                        if qh >> (2 * p + e / 32) & 1 != 0 { word |= 1 << bit }
                    }
                    pair.storeBytes(of: word, toByteOffset: 32 * v + 4 * r, as: UInt32.self)
                }
            }
        }
    }
}

/// Q2_K (84 bytes: scales[16], qs[64], d, dmin) or Q3_K (110 bytes: hmask[32], qs[64],
/// scales[12], d).
private func interleaveLowBitK(_ src: UnsafeRawPointer, _ rowBytes: Int, _ dst: UnsafeMutableRawPointer, superBlocks: Int,
                               q3: Bool) {
    let f = LowBitBlocks(q3 ? .q3_K : .q2_K), blockBytes = q3 ? 110 : 84, qs = q3 ? 32 : 16
    for sb in 0..<superBlocks {
        let out = dst + sb * f.bytes
        for r in 0..<8 {
            let block = src + r * rowBytes + sb * blockBytes
            let scales: SIMD16<UInt8>
            if q3 {
                (out + 2 * r).copyMemory(from: block + 108, byteCount: 2)
                scales = unsafeBitCast(q3KScales(block + 96), to: SIMD16<UInt8>.self)
                for c in 0..<8 { (out + f.hmask + 32 * c + 4 * r).copyMemory(from: block + 4 * c, byteCount: 4) }
            } else {
                (out + 2 * r).copyMemory(from: block + 80, byteCount: 2)
                (out + 16 + 2 * r).copyMemory(from: block + 82, byteCount: 2)
                scales = block.loadUnaligned(as: SIMD16<UInt8>.self)
            }
            for i in 0..<16 { out.storeBytes(of: scales[i], toByteOffset: f.scales + 16 * (i / 2) + 2 * r + i % 2, as: UInt8.self) }
            for n in 0..<2 {
                for c in 0..<8 {
                    (out + f.qs + 256 * n + 32 * c + 4 * r).copyMemory(from: block + qs + 32 * n + 4 * c, byteCount: 4)
                }
            }
        }
    }
}

/// The unsigned 6-bit values u = q + 32 of a Q6_K block, in element order.
private func unpackQ6_K(_ block: UnsafeRawPointer, _ u: UnsafeMutablePointer<UInt8>) {
    let b = block.assumingMemoryBound(to: UInt8.self)
    for half in 0..<2 {
        let ql = b + half * 64, qh = b + 128 + half * 32, out = u + half * 128
        for l in 0..<32 {
            out[l] = ql[l] & 0xF | (qh[l] & 3) << 4
            out[l + 32] = ql[l + 32] & 0xF | (qh[l] >> 2 & 3) << 4
            out[l + 64] = ql[l] >> 4 | (qh[l] >> 4 & 3) << 4
            out[l + 96] = ql[l + 32] >> 4 | (qh[l] >> 6 & 3) << 4
        }
    }
}

/// The inverse of `unpackQ6_K` for ql and qh (bytes 0..<192 of the block).
private func packQ6_K(_ u: UnsafePointer<UInt8>, _ block: UnsafeMutableRawPointer) {
    let b = block.assumingMemoryBound(to: UInt8.self)
    for half in 0..<2 {
        let ql = b + half * 64, qh = b + 128 + half * 32, v = u + half * 128
        for l in 0..<32 {
            ql[l] = v[l] & 0xF | (v[l + 64] & 0xF) << 4
            ql[l + 32] = v[l + 32] & 0xF | (v[l + 96] & 0xF) << 4
            qh[l] = v[l] >> 4 | (v[l + 32] >> 4) << 2 | (v[l + 64] >> 4) << 4 | (v[l + 96] >> 4) << 6
        }
    }
}

private func interleaveQ6_K(_ src: UnsafeRawPointer, _ rowBytes: Int, _ dst: UnsafeMutableRawPointer, superBlocks: Int) {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256) { buffer in
        let u = buffer.baseAddress!
        for sb in 0..<superBlocks {
            let out = dst + sb * 1680
            for r in 0..<8 {
                let block = src + r * rowBytes + sb * 210
                (out + 2 * r).copyMemory(from: block + 208, byteCount: 2)
                for s in 0..<16 { out.storeBytes(of: block.load(fromByteOffset: 192 + s, as: UInt8.self), toByteOffset: 16 + 8 * s + r, as: UInt8.self) }
                unpackQ6_K(block, u)
                for g in 0..<8 {
                    for c in 0..<4 {
                        for k in 0..<4 {
                            let e = 32 * g + 4 * c + k
                            out.storeBytes(of: u[e] & 15 | (u[e + 16] & 15) << 4, toByteOffset: 144 + 192 * g + 32 * c + 4 * r + k, as: UInt8.self)
                        }
                    }
                    for p in 0..<2 {
                        for k in 0..<4 {
                            let e = 32 * g + 8 * p + k
                            let bits = u[e] >> 4 | (u[e + 16] >> 4) << 2 | (u[e + 4] >> 4) << 4 | (u[e + 20] >> 4) << 6
                            out.storeBytes(of: bits, toByteOffset: 272 + 192 * g + 32 * p + 4 * r + k, as: UInt8.self)
                        }
                    }
                }
            }
        }
    }
}

#if LLAMA_AVX2
import _Builtin_intrinsics.intel

@inline(__always) private func load32(_ p: UnsafeRawPointer) -> __m256i { p.loadUnaligned(as: __m256i.self) }

/// Four activation bytes repeated in every 32-bit lane.
@inline(__always) private func broadcast4(_ p: UnsafeRawPointer) -> __m256i {
    _mm256_set1_epi32(p.loadUnaligned(as: Int32.self))
}

/// `s` plus the products of unsigned bytes `u` and signed bytes `x`, summed in pairs into int16
/// lanes (`maddubs`; callers keep each lane's sum within int16) — or, with AVX-512 VNNI, in
/// fours straight into int32 lanes (`vpdpbusd`), which makes `widen` a no-op. Either way the
/// integer sums are exact and the same.
@inline(__always) private func mac(_ s: __m256i, _ u: __m256i, _ x: __m256i) -> __m256i {
    #if LLAMA_VNNI
    _mm256_mask_dpbusd_epi32(s, 0xFF, u, x)
    #else
    _mm256_add_epi16(s, _mm256_maddubs_epi16(u, x))
    #endif
}

/// Sums accumulated by `mac` as int32 lanes.
@inline(__always) private func widen(_ s: __m256i) -> __m256i {
    #if LLAMA_VNNI
    s
    #else
    _mm256_madd_epi16(s, _mm256_set1_epi16(1))
    #endif
}

/// `s` (int32 lanes) plus the products of `u` and `x` summed in fours (one `vpdpbusd` with VNNI).
@inline(__always) private func mac32(_ s: __m256i, _ u: __m256i, _ x: __m256i) -> __m256i {
    #if LLAMA_VNNI
    _mm256_mask_dpbusd_epi32(s, 0xFF, u, x)
    #else
    _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)))
    #endif
}

/// 8 Float16 values → 8 floats (F16C).
@inline(__always) private func halves8(_ p: UnsafeRawPointer) -> __m256 {
    _mm256_cvtph_ps(p.loadUnaligned(as: __m128i.self))
}

/// 8 unsigned bytes → 8 floats.
@inline(__always) private func bytes8(_ p: UnsafeRawPointer) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p.assumingMemoryBound(to: __m128i.self))))
}

/// 8 rows of Q8_0 · one quantized input. maddubs needs one unsigned operand: |w| times x
/// with w's sign (ggml's trick); two such products fill an int16, so each chunk widens to int32.
@inline(__always)
func gemvQ8_0x8(_ group: UnsafeRawPointer, _ x: Q8Activations) -> __m256 {
    var acc = _mm256_setzero_ps()
    for b in 0..<(x.count / 32) {
        let block = group + b * 272, xq = UnsafeRawPointer(x.q + b * 32)
        var s = _mm256_setzero_si256()
        for c in 0..<8 {
            let v = load32(block + 16 + 32 * c)
            s = mac32(s, _mm256_abs_epi8(v), _mm256_sign_epi8(broadcast4(xq + 4 * c), v))
        }
        acc = _mm256_fmadd_ps(_mm256_mul_ps(halves8(block), _mm256_set1_ps(x.d[b])), _mm256_cvtepi32_ps(s), acc)
    }
    return acc
}

/// 8 rows of Q8_0 · 4 quantized inputs.
@inline(__always)
func gemm4Q8_0x8(_ group: UnsafeRawPointer, _ x0: Q8Activations, _ x1: Q8Activations, _ x2: Q8Activations,
                 _ x3: Q8Activations) -> (__m256, __m256, __m256, __m256) {
    var a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    for b in 0..<(x0.count / 32) {
        let block = group + b * 272, o = b * 32
        let p0 = UnsafeRawPointer(x0.q + o), p1 = UnsafeRawPointer(x1.q + o)
        let p2 = UnsafeRawPointer(x2.q + o), p3 = UnsafeRawPointer(x3.q + o)
        var s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0
        for c in 0..<8 {
            let v = load32(block + 16 + 32 * c)
            let a = _mm256_abs_epi8(v)
            s0 = mac32(s0, a, _mm256_sign_epi8(broadcast4(p0 + 4 * c), v))
            s1 = mac32(s1, a, _mm256_sign_epi8(broadcast4(p1 + 4 * c), v))
            s2 = mac32(s2, a, _mm256_sign_epi8(broadcast4(p2 + 4 * c), v))
            s3 = mac32(s3, a, _mm256_sign_epi8(broadcast4(p3 + 4 * c), v))
        }
        let d = halves8(block)
        a0 = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x0.d[b])), _mm256_cvtepi32_ps(s0), a0)
        a1 = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x1.d[b])), _mm256_cvtepi32_ps(s1), a1)
        a2 = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x2.d[b])), _mm256_cvtepi32_ps(s2), a2)
        a3 = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x3.d[b])), _mm256_cvtepi32_ps(s3), a3)
    }
    return (a0, a1, a2, a3)
}

/// `s` (int32 lanes) plus `u0·x0 + u1·x1` summed in fours per lane; for 5-bit values (u < 32),
/// whose four products may not fit int16 lanes more than once: without VNNI the two `maddubs`
/// (at most 4 × 31 × 127 per lane) are widened at once.
@inline(__always) private func mac2(_ s: __m256i, _ u0: __m256i, _ x0: __m256i, _ u1: __m256i, _ x1: __m256i) -> __m256i {
    #if LLAMA_VNNI
    _mm256_mask_dpbusd_epi32(_mm256_mask_dpbusd_epi32(s, 0xFF, u0, x0), 0xFF, u1, x1)
    #else
    _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(u0, x0), _mm256_maddubs_epi16(u1, x1)),
                                          _mm256_set1_epi16(1)))
    #endif
}

/// The fifth bits of chunk `c`'s low and high nibbles from a row-per-lane fifth-bit word
/// (`FifthBits`: bits 8k + 2c and 8k + 2c + 1), as 16 in each byte, to OR into the nibbles.
@inline(__always) private func fifthBits(_ w: __m256i, _ c: Int) -> (__m256i, __m256i) {
    let sixteen = _mm256_set1_epi8(0x10)
    @inline(__always) func bitFour(_ shift: Int) -> __m256i {
        let v = shift > 0 ? _mm256_slli_epi32(w, Int32(shift)) : shift < 0 ? _mm256_srli_epi32(w, Int32(-shift)) : w
        return _mm256_and_si256(v, sixteen)
    }
    return (bitFour(4 - 2 * c), bitFour(3 - 2 * c))
}


/// IQ4_NL's 16 levels, as the kernels multiply them: with VNNI offset by `levelOffset` = 128
/// (unsigned, for `vpdpbusd`; the sums then hold 128·Σx extra), else signed (multiplied as
/// |level|·(±x) by `macLevels`).
@inline(__always) func levelBytes() -> SIMD16<UInt8> {
    #if LLAMA_VNNI
    SIMD16<UInt8>(truncatingIfNeeded: iq4nlLevels) ^ 0x80
    #else
    unsafeBitCast(iq4nlLevels, to: SIMD16<UInt8>.self)
    #endif
}

/// Σ q·x over one block of 8 interleaved rows (q unsigned: the nibble, plus 16 for a set fifth
/// bit), as 8 int32 lanes, one per row.
@inline(__always)
private func nibbleBlockSums(_ f: NibbleBlocks, _ block: UnsafeRawPointer, _ xq: UnsafeRawPointer, _ mask: __m256i,
                             _ table: __m256i) -> __m256i {
    let qs = block + f.qs
    if f.levels {
        var s = _mm256_setzero_si256()
        for c in 0..<4 {
            let v = load32(qs + 32 * c)
            s = macLevels(s, _mm256_shuffle_epi8(table, _mm256_and_si256(v, mask)), broadcast4(xq + 4 * c))
            s = macLevels(s, _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), mask)), broadcast4(xq + 16 + 4 * c))
        }
        return s
    }
    if f.fifth {
        let w = load32(block + f.bits)
        var s = _mm256_setzero_si256()
        for c in 0..<4 {
            let v = load32(qs + 32 * c), (fl, fh) = fifthBits(w, c)
            s = mac2(s, _mm256_or_si256(_mm256_and_si256(v, mask), fl), broadcast4(xq + 4 * c),
                     _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), mask), fh), broadcast4(xq + 16 + 4 * c))
        }
        return s
    }
    var s = _mm256_setzero_si256()
    for c in 0..<4 {
        let v = load32(qs + 32 * c)
        // Each int16 lane sums 8 products of at most 15 × 127: no saturation.
        s = mac(s, _mm256_and_si256(v, mask), broadcast4(xq + 4 * c))
        s = mac(s, _mm256_and_si256(_mm256_srli_epi16(v, 4), mask), broadcast4(xq + 16 + 4 * c))
    }
    return widen(s)
}

/// The levels table for `_mm256_shuffle_epi8` (IQ4_NL; zeros for the other formats).
@inline(__always) private func levelTable(_ f: NibbleBlocks) -> __m256i {
    guard f.levels else { return _mm256_setzero_si256() }
    let t = levelBytes()
    return unsafeBitCast(SIMD32<UInt8>(lowHalf: t, highHalf: t), to: __m256i.self)
}

/// 8 rows of Q4_0, Q4_1, Q5_0, Q5_1 or IQ4_NL (one interleaved group) · one quantized input: the
/// 8 dot products. Q4_0/Q5_0/IQ4_NL: Σ(q − zero)·x = Σq·x − zero·Σx, exact in int32;
/// Q4_1/Q5_1: d·dx·Σq·x + m·(dx·Σx) per block (ggml's q4_1·q8_1), the offsets summed apart and
/// added last.
@inline(__always)
func gemvNibblesx8(_ type: TensorType, _ group: UnsafeRawPointer, _ x: Q8Activations) -> __m256 {
    let f = NibbleBlocks(type), mask = _mm256_set1_epi8(0x0F), table = levelTable(f)
    var acc = _mm256_setzero_ps(), offsets = _mm256_setzero_ps()
    for b in 0..<(x.count / 32) {
        let block = group + b * f.bytes
        var sums = nibbleBlockSums(f, block, x.q + b * 32, mask, table)
        if f.withMin {
            offsets = _mm256_fmadd_ps(halves8(block + 16), _mm256_set1_ps(x.s[b]), offsets)
        } else {
            sums = _mm256_sub_epi32(sums, _mm256_set1_epi32(f.zero * x.blockSum(b)))
        }
        acc = _mm256_fmadd_ps(_mm256_mul_ps(halves8(block), _mm256_set1_ps(x.d[b])), _mm256_cvtepi32_ps(sums), acc)
    }
    return f.withMin ? _mm256_add_ps(acc, offsets) : acc
}

/// 8 rows of Q4_0, Q4_1, Q5_0, Q5_1 or IQ4_NL · 4 quantized inputs: each weight byte is
/// unpacked once for all four. Each input's sums and their scaling follow `gemvNibblesx8` step
/// for step.
@inline(__always)
func gemm4Nibblesx8(_ type: TensorType, _ group: UnsafeRawPointer, _ x0: Q8Activations, _ x1: Q8Activations,
                    _ x2: Q8Activations, _ x3: Q8Activations) -> (__m256, __m256, __m256, __m256) {
    let f = NibbleBlocks(type), mask = _mm256_set1_epi8(0x0F), table = levelTable(f)
    var a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    for b in 0..<(x0.count / 32) {
        let block = group + b * f.bytes
        let o = b * 32
        let p0 = UnsafeRawPointer(x0.q + o), p1 = UnsafeRawPointer(x1.q + o)
        let p2 = UnsafeRawPointer(x2.q + o), p3 = UnsafeRawPointer(x3.q + o)
        var s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0
        let w = f.fifth ? load32(block + f.bits) : s0
        for c in 0..<4 {
            let v = load32(block + f.qs + 32 * c)
            var lo = _mm256_and_si256(v, mask), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask)
            if f.levels {
                lo = _mm256_shuffle_epi8(table, lo); hi = _mm256_shuffle_epi8(table, hi)
                s0 = macLevels(macLevels(s0, lo, broadcast4(p0 + 4 * c)), hi, broadcast4(p0 + 16 + 4 * c))
                s1 = macLevels(macLevels(s1, lo, broadcast4(p1 + 4 * c)), hi, broadcast4(p1 + 16 + 4 * c))
                s2 = macLevels(macLevels(s2, lo, broadcast4(p2 + 4 * c)), hi, broadcast4(p2 + 16 + 4 * c))
                s3 = macLevels(macLevels(s3, lo, broadcast4(p3 + 4 * c)), hi, broadcast4(p3 + 16 + 4 * c))
            } else if f.fifth {
                let (fl, fh) = fifthBits(w, c)
                lo = _mm256_or_si256(lo, fl); hi = _mm256_or_si256(hi, fh)
                s0 = mac2(s0, lo, broadcast4(p0 + 4 * c), hi, broadcast4(p0 + 16 + 4 * c))
                s1 = mac2(s1, lo, broadcast4(p1 + 4 * c), hi, broadcast4(p1 + 16 + 4 * c))
                s2 = mac2(s2, lo, broadcast4(p2 + 4 * c), hi, broadcast4(p2 + 16 + 4 * c))
                s3 = mac2(s3, lo, broadcast4(p3 + 4 * c), hi, broadcast4(p3 + 16 + 4 * c))
            } else {
                s0 = mac(mac(s0, lo, broadcast4(p0 + 4 * c)), hi, broadcast4(p0 + 16 + 4 * c))
                s1 = mac(mac(s1, lo, broadcast4(p1 + 4 * c)), hi, broadcast4(p1 + 16 + 4 * c))
                s2 = mac(mac(s2, lo, broadcast4(p2 + 4 * c)), hi, broadcast4(p2 + 16 + 4 * c))
                s3 = mac(mac(s3, lo, broadcast4(p3 + 4 * c)), hi, broadcast4(p3 + 16 + 4 * c))
            }
        }
        let d = halves8(block)
        @inline(__always) func finish(_ s: __m256i, _ x: Q8Activations, _ acc: inout __m256) {
            var sums = f.fifth || f.levels ? s : widen(s)
            // Q4_1/Q5_1: q unsigned; the block offsets m·(dx·Σx) are summed apart, below.
            if !f.withMin { sums = _mm256_sub_epi32(sums, _mm256_set1_epi32(f.zero * x.blockSum(b))) }
            acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x.d[b])), _mm256_cvtepi32_ps(sums), acc)
        }
        finish(s0, x0, &a0); finish(s1, x1, &a1); finish(s2, x2, &a2); finish(s3, x3, &a3)
    }
    if f.withMin {
        // Offsets in their own sums, added last, exactly as gemvNibblesx8 (and ggml) adds them:
        // a row's result must not depend on whether it came in a tile of four or alone (the
        // server's batches change size every step; seeds must still reproduce).
        var o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0
        for b in 0..<(x0.count / 32) {
            let m = halves8(group + b * f.bytes + 16)
            o0 = _mm256_fmadd_ps(m, _mm256_set1_ps(x0.s[b]), o0); o1 = _mm256_fmadd_ps(m, _mm256_set1_ps(x1.s[b]), o1)
            o2 = _mm256_fmadd_ps(m, _mm256_set1_ps(x2.s[b]), o2); o3 = _mm256_fmadd_ps(m, _mm256_set1_ps(x3.s[b]), o3)
        }
        a0 = _mm256_add_ps(a0, o0); a1 = _mm256_add_ps(a1, o1); a2 = _mm256_add_ps(a2, o2); a3 = _mm256_add_ps(a3, o3)
    }
    return (a0, a1, a2, a3)
}

/// `s` (int32 lanes) plus level·x summed in fours: with VNNI one `vpdpbusd` of the offset
/// levels; without, |level|·(±x) by `maddubs` (pairs stay within int16: 2 × 127 × 127),
/// widened at once.
@inline(__always) private func macLevels(_ s: __m256i, _ v: __m256i, _ x: __m256i) -> __m256i {
    #if LLAMA_VNNI
    _mm256_mask_dpbusd_epi32(s, 0xFF, v, x)
    #else
    _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(v), _mm256_sign_epi8(x, v)), _mm256_set1_epi16(1)))
    #endif
}


/// The values (nibble, plus 16 for a set fifth bit) of chunk `c` of pair `p`: those of
/// sub-block 2p and of 2p + 1.
@inline(__always)
private func scaleMinChunk(_ f: ScaleMinBlocks, _ block: UnsafeRawPointer, _ p: Int, _ c: Int, _ mask: __m256i) -> (__m256i, __m256i) {
    let v = load32(block + f.qs(p) + 32 * c)
    let lo = _mm256_and_si256(v, mask), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask)
    guard f.fifth else { return (lo, hi) }
    let (fl, fh) = fifthBits(load32(block + f.bits(p) + 32 * (c / 4)), c % 4)
    return (_mm256_or_si256(lo, fl), _mm256_or_si256(hi, fh))
}

/// Σ q·x of the two sub-blocks of pair `p` of a Q4_K or Q5_K super-block of 8 interleaved rows,
/// as int32 lanes. Q4_K's sums stay in int16 pairs to the end (each lane at most 8 × 2 × 15 ×
/// 127); Q5_K's are widened every two chunks (`mac2`).
@inline(__always)
private func scaleMinPairSums(_ f: ScaleMinBlocks, _ block: UnsafeRawPointer, _ p: Int, _ xq: UnsafeRawPointer,
                              _ mask: __m256i) -> (__m256i, __m256i) {
    var lo = _mm256_setzero_si256(), hi = lo
    if f.fifth {
        for c in stride(from: 0, to: 8, by: 2) {
            let (l0, h0) = scaleMinChunk(f, block, p, c, mask), (l1, h1) = scaleMinChunk(f, block, p, c + 1, mask)
            lo = mac2(lo, l0, broadcast4(xq + 4 * c), l1, broadcast4(xq + 4 * c + 4))
            hi = mac2(hi, h0, broadcast4(xq + 32 + 4 * c), h1, broadcast4(xq + 36 + 4 * c))
        }
        return (lo, hi)
    }
    for c in 0..<8 {
        let (l, h) = scaleMinChunk(f, block, p, c, mask)
        lo = mac(lo, l, broadcast4(xq + 4 * c))
        hi = mac(hi, h, broadcast4(xq + 32 + 4 * c))
    }
    return (widen(lo), widen(hi))
}

/// 8 rows of Q4_K or Q5_K · one quantized input. Per sub-block j of 32: d·sc_j·dx_j·Σq·x,
/// minus the offsets dmin·m_j·(dx_j·Σx_j) (as the one-row kernel computes them).
@inline(__always)
func gemvScaleMinx8(_ type: TensorType, _ group: UnsafeRawPointer, _ x: Q8Activations) -> __m256 {
    let f = ScaleMinBlocks(type), mask = _mm256_set1_epi8(0x0F)
    var acc = _mm256_setzero_ps(), offsets = _mm256_setzero_ps()
    for sb in 0..<(x.count / 256) {
        let block = group + sb * f.bytes
        let d = halves8(block), dmin = halves8(block + 16)
        for p in 0..<4 {
            let (lo, hi) = scaleMinPairSums(f, block, p, x.q + sb * 256 + 64 * p, mask)
            for h in 0..<2 {
                let j = 2 * p + h, xb = sb * 8 + j
                let scale = _mm256_mul_ps(_mm256_mul_ps(d, bytes8(block + 32 + 8 * j)), _mm256_set1_ps(x.d[xb]))
                acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(h == 0 ? lo : hi), acc)
                offsets = _mm256_fmadd_ps(_mm256_mul_ps(dmin, bytes8(block + 96 + 8 * j)), _mm256_set1_ps(x.s[xb]), offsets)
            }
        }
    }
    return _mm256_sub_ps(acc, offsets)
}

/// 8 rows of Q4_K or Q5_K · 4 quantized inputs.
@inline(__always)
func gemm4ScaleMinx8(_ type: TensorType, _ group: UnsafeRawPointer, _ x0: Q8Activations, _ x1: Q8Activations,
                     _ x2: Q8Activations, _ x3: Q8Activations) -> (__m256, __m256, __m256, __m256) {
    let f = ScaleMinBlocks(type), mask = _mm256_set1_epi8(0x0F)
    var a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    for sb in 0..<(x0.count / 256) {
        let block = group + sb * f.bytes
        let d = halves8(block)
        for p in 0..<4 {
            let o = sb * 256 + 64 * p
            let p0 = UnsafeRawPointer(x0.q + o), p1 = UnsafeRawPointer(x1.q + o)
            let p2 = UnsafeRawPointer(x2.q + o), p3 = UnsafeRawPointer(x3.q + o)
            var l0 = _mm256_setzero_si256(), l1 = l0, l2 = l0, l3 = l0, h0 = l0, h1 = l0, h2 = l0, h3 = l0
            if f.fifth {
                for c in stride(from: 0, to: 8, by: 2) {
                    let (la, ha) = scaleMinChunk(f, block, p, c, mask), (lb, hb) = scaleMinChunk(f, block, p, c + 1, mask)
                    @inline(__always) func sums(_ xq: UnsafeRawPointer, _ l: inout __m256i, _ h: inout __m256i) {
                        l = mac2(l, la, broadcast4(xq + 4 * c), lb, broadcast4(xq + 4 * c + 4))
                        h = mac2(h, ha, broadcast4(xq + 32 + 4 * c), hb, broadcast4(xq + 36 + 4 * c))
                    }
                    sums(p0, &l0, &h0); sums(p1, &l1, &h1); sums(p2, &l2, &h2); sums(p3, &l3, &h3)
                }
            } else {
                for c in 0..<8 {
                    let (lo, hi) = scaleMinChunk(f, block, p, c, mask)
                    l0 = mac(l0, lo, broadcast4(p0 + 4 * c)); h0 = mac(h0, hi, broadcast4(p0 + 32 + 4 * c))
                    l1 = mac(l1, lo, broadcast4(p1 + 4 * c)); h1 = mac(h1, hi, broadcast4(p1 + 32 + 4 * c))
                    l2 = mac(l2, lo, broadcast4(p2 + 4 * c)); h2 = mac(h2, hi, broadcast4(p2 + 32 + 4 * c))
                    l3 = mac(l3, lo, broadcast4(p3 + 4 * c)); h3 = mac(h3, hi, broadcast4(p3 + 32 + 4 * c))
                }
            }
            for h in 0..<2 {
                let j = 2 * p + h, xb = sb * 8 + j
                let dsc = _mm256_mul_ps(d, bytes8(block + 32 + 8 * j))
                @inline(__always) func finish(_ s: __m256i, _ x: Q8Activations, _ acc: inout __m256) {
                    let sums = _mm256_cvtepi32_ps(f.fifth ? s : widen(s))
                    acc = _mm256_fmadd_ps(_mm256_mul_ps(dsc, _mm256_set1_ps(x.d[xb])), sums, acc)
                }
                finish(h == 0 ? l0 : h0, x0, &a0); finish(h == 0 ? l1 : h1, x1, &a1)
                finish(h == 0 ? l2 : h2, x2, &a2); finish(h == 0 ? l3 : h3, x3, &a3)
            }
        }
    }
    // The offsets dmin·m_j·(dx_j·Σx_j) in their own sums, subtracted last, as gemvScaleMinx8
    // does, so a row gives the same bits in a tile of four as alone.
    var o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0
    for sb in 0..<(x0.count / 256) {
        let block = group + sb * f.bytes
        let dmin = halves8(block + 16)
        for j in 0..<8 {
            let xb = sb * 8 + j, dmn = _mm256_mul_ps(dmin, bytes8(block + 96 + 8 * j))
            o0 = _mm256_fmadd_ps(dmn, _mm256_set1_ps(x0.s[xb]), o0); o1 = _mm256_fmadd_ps(dmn, _mm256_set1_ps(x1.s[xb]), o1)
            o2 = _mm256_fmadd_ps(dmn, _mm256_set1_ps(x2.s[xb]), o2); o3 = _mm256_fmadd_ps(dmn, _mm256_set1_ps(x3.s[xb]), o3)
        }
    }
    return (_mm256_sub_ps(a0, o0), _mm256_sub_ps(a1, o1), _mm256_sub_ps(a2, o2), _mm256_sub_ps(a3, o3))
}


/// The unsigned values of chunk `c` (0..<8) of activation block 4n + j: Q2_K's 2-bit q, Q3_K's
/// q + 4 (its high bit from hmask).
@inline(__always)
private func lowBitChunk(_ f: LowBitBlocks, _ block: UnsafeRawPointer, _ n: Int, _ j: Int, _ c: Int) -> __m256i {
    let v = _mm256_and_si256(_mm256_srli_epi16(load32(block + f.qs + 256 * n + 32 * c), Int32(2 * j)), _mm256_set1_epi8(3))
    guard f.q3 else { return v }
    // Bit 4n + j of each hmask byte moved to bit 2 (4): 16-bit shifts, masked per byte.
    let hm = load32(block + f.hmask + 32 * c), bit = 4 * n + j
    let high = bit <= 2 ? _mm256_slli_epi16(hm, Int32(2 - bit)) : _mm256_srli_epi16(hm, Int32(bit - 2))
    return _mm256_or_si256(v, _mm256_and_si256(high, _mm256_set1_epi8(4)))
}

/// A pair of sub-blocks' scales, lane r = (scale of 2b, scale of 2b + 1) as int16 (Q3_K: signed;
/// Q2_K: the low nibbles), and Q2_K's minimums likewise.
@inline(__always)
private func lowBitScales(_ f: LowBitBlocks, _ block: UnsafeRawPointer, _ b: Int) -> (scales: __m256i, mins: __m256i) {
    let bytes = (block + f.scales + 16 * b).loadUnaligned(as: __m128i.self)
    if f.q3 { return (_mm256_cvtepi8_epi16(bytes), _mm256_setzero_si256()) }
    let wide = _mm256_cvtepu8_epi16(bytes)
    return (_mm256_and_si256(wide, _mm256_set1_epi16(0x0F)), _mm256_srli_epi16(wide, 4))
}

/// Σ u·x of activation block 4n + j's two sub-blocks of 16 (chunks 0-3 and 4-7), as one int16
/// pair per lane (each sum at most 16 × 7 × 127): four `vpdpbusd` per sub-block with VNNI,
/// else `maddubs` pairs summed in int16 and widened once.
@inline(__always)
private func lowBitSums(_ u: (Int) -> __m256i, _ xq: UnsafeRawPointer) -> __m256i {
    var a = _mm256_setzero_si256(), b = a
    for c in 0..<4 {
        a = mac(a, u(c), broadcast4(xq + 4 * c))
        b = mac(b, u(c + 4), broadcast4(xq + 16 + 4 * c))
    }
    return _mm256_or_si256(_mm256_and_si256(widen(a), _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(widen(b), 16))
}

/// One activation block's contribution: d·dx·Σ_s sc_s·(Σu·x − (Q3_K) 4·Σx)_s, less (Q2_K, into
/// `offsets`) dmin·dx·Σ_s m_s·Σx_s; the integer parts are exact, each pair of sub-blocks one
/// `madd`.
@inline(__always)
private func lowBitFinish(_ f: LowBitBlocks, _ sums: __m256i, _ sc: (scales: __m256i, mins: __m256i),
                          _ x: Q8Activations, _ xb: Int, _ d: __m256, _ dmin: __m256, _ acc: inout __m256, _ offsets: inout __m256) {
    // The two half-block sums of x (each within ±16 × 127) as one int16 pair; Q3_K's times 4
    // come off the sums, which stay within int16 (16 × 7 × 127 + 4 × 16 × 127).
    let h = _mm256_set1_epi32(Int32(bitPattern: UInt32(UInt16(truncatingIfNeeded: x.halfSums[2 * xb]))
                                    | UInt32(UInt16(truncatingIfNeeded: x.halfSums[2 * xb + 1])) << 16))
    let dx = _mm256_set1_ps(x.d[xb])
    let t = _mm256_madd_epi16(f.q3 ? _mm256_sub_epi16(sums, _mm256_slli_epi16(h, 2)) : sums, sc.scales)
    if !f.q3 {
        offsets = _mm256_fmadd_ps(_mm256_mul_ps(dmin, dx), _mm256_cvtepi32_ps(_mm256_madd_epi16(sc.mins, h)), offsets)
    }
    acc = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), _mm256_cvtepi32_ps(t), acc)
}

/// 8 rows of Q2_K or Q3_K · one quantized input.
@inline(__always)
func gemvLowBitx8(_ type: TensorType, _ group: UnsafeRawPointer, _ x: Q8Activations) -> __m256 {
    let f = LowBitBlocks(type)
    var acc = _mm256_setzero_ps(), offsets = acc
    for sb in 0..<(x.count / 256) {
        let block = group + sb * f.bytes
        let d = halves8(block), dmin = f.q3 ? d : halves8(block + 16)
        for n in 0..<2 {
            for j in 0..<4 {
                let xb = sb * 8 + 4 * n + j
                let sums = lowBitSums({ lowBitChunk(f, block, n, j, $0) }, x.q + xb * 32)
                lowBitFinish(f, sums, lowBitScales(f, block, 4 * n + j), x, xb, d, dmin, &acc, &offsets)
            }
        }
    }
    return f.q3 ? acc : _mm256_sub_ps(acc, offsets)
}

/// 8 rows of Q2_K or Q3_K · 4 quantized inputs: each chunk's values are unpacked once for all
/// four, and each input's sums and scaling follow `gemvLowBitx8`.
@inline(__always)
func gemm4LowBitx8(_ type: TensorType, _ group: UnsafeRawPointer, _ x0: Q8Activations, _ x1: Q8Activations,
                   _ x2: Q8Activations, _ x3: Q8Activations) -> (__m256, __m256, __m256, __m256) {
    let f = LowBitBlocks(type)
    var a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    var o0 = a0, o1 = a0, o2 = a0, o3 = a0
    for sb in 0..<(x0.count / 256) {
        let block = group + sb * f.bytes
        let d = halves8(block), dmin = f.q3 ? d : halves8(block + 16)
        for n in 0..<2 {
            for j in 0..<4 {
                let xb = sb * 8 + 4 * n + j, o = xb * 32
                let u0 = lowBitChunk(f, block, n, j, 0), u1 = lowBitChunk(f, block, n, j, 1)
                let u2 = lowBitChunk(f, block, n, j, 2), u3 = lowBitChunk(f, block, n, j, 3)
                let u4 = lowBitChunk(f, block, n, j, 4), u5 = lowBitChunk(f, block, n, j, 5)
                let u6 = lowBitChunk(f, block, n, j, 6), u7 = lowBitChunk(f, block, n, j, 7)
                @inline(__always) func u(_ c: Int) -> __m256i {
                    switch c { case 0: u0; case 1: u1; case 2: u2; case 3: u3; case 4: u4; case 5: u5; case 6: u6; default: u7 }
                }
                let sc = lowBitScales(f, block, 4 * n + j)
                lowBitFinish(f, lowBitSums(u, x0.q + o), sc, x0, xb, d, dmin, &a0, &o0)
                lowBitFinish(f, lowBitSums(u, x1.q + o), sc, x1, xb, d, dmin, &a1, &o1)
                lowBitFinish(f, lowBitSums(u, x2.q + o), sc, x2, xb, d, dmin, &a2, &o2)
                lowBitFinish(f, lowBitSums(u, x3.q + o), sc, x3, xb, d, dmin, &a3, &o3)
            }
        }
    }
    if f.q3 { return (a0, a1, a2, a3) }
    return (_mm256_sub_ps(a0, o0), _mm256_sub_ps(a1, o1), _mm256_sub_ps(a2, o2), _mm256_sub_ps(a3, o3))
}

/// The unsigned 6-bit values of chunks 2p and 2p+1 of a Q6_K group of 8 interleaved rows (see
/// the layout at the top): `l0`, `l1` the first 16 elements' chunks, `u0`, `u1` the second 16's.
@inline(__always)
private func q6_KValues(_ low: UnsafeRawPointer, _ high: UnsafeRawPointer, _ p: Int) -> (l0: __m256i, u0: __m256i, l1: __m256i, u1: __m256i) {
    let m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30)
    let h = load32(high + 32 * p)
    let v0 = load32(low + 64 * p), v1 = load32(low + 64 * p + 32)
    // chunk 2p: high bits at 0-1 (first half) and 2-3 (second); chunk 2p+1: 4-5 and 6-7.
    return (_mm256_or_si256(_mm256_and_si256(v0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m2)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v0, 4), m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m2)),
            _mm256_or_si256(_mm256_and_si256(v1, m4), _mm256_and_si256(h, m2)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v1, 4), m4), _mm256_and_si256(_mm256_srli_epi16(h, 2), m2)))
}

/// Adds chunks 2p and 2p+1's products with one input (`xq`: the group's 32 activations) to the
/// sums of the first and second 16 elements, as int32 lanes (u < 64: two products fit an int16,
/// so pairs of chunks are widened without VNNI).
@inline(__always)
private func q6_KAccumulate(_ v: (l0: __m256i, u0: __m256i, l1: __m256i, u1: __m256i), _ xq: UnsafeRawPointer, _ p: Int,
                            _ lo32: inout __m256i, _ hi32: inout __m256i) {
    let c = 8 * p
    #if LLAMA_VNNI
    lo32 = mac32(mac32(lo32, v.l0, broadcast4(xq + c)), v.l1, broadcast4(xq + c + 4))
    hi32 = mac32(mac32(hi32, v.u0, broadcast4(xq + 16 + c)), v.u1, broadcast4(xq + 20 + c))
    #else
    let sl = _mm256_add_epi16(_mm256_maddubs_epi16(v.l0, broadcast4(xq + c)), _mm256_maddubs_epi16(v.l1, broadcast4(xq + c + 4)))
    let sh = _mm256_add_epi16(_mm256_maddubs_epi16(v.u0, broadcast4(xq + 16 + c)), _mm256_maddubs_epi16(v.u1, broadcast4(xq + 20 + c)))
    lo32 = _mm256_add_epi32(lo32, _mm256_madd_epi16(sl, _mm256_set1_epi16(1)))
    hi32 = _mm256_add_epi32(hi32, _mm256_madd_epi16(sh, _mm256_set1_epi16(1)))
    #endif
}

/// Σ u·x over the two halves (16 + 16 elements) of group `g` of a Q6_K super-block of 8
/// interleaved rows, as int32 lanes.
@inline(__always)
private func q6_KGroupSums(_ low: UnsafeRawPointer, _ high: UnsafeRawPointer, _ xq: UnsafeRawPointer) -> (__m256i, __m256i) {
    var lo32 = _mm256_setzero_si256(), hi32 = lo32
    for p in 0..<2 { q6_KAccumulate(q6_KValues(low, high, p), xq, p, &lo32, &hi32) }
    return (lo32, hi32)
}

/// One group's contribution: d·dx·(sc_lo·(Σu·x − 32·Σx_lo) + sc_hi·(Σu·x − 32·Σx_hi)).
@inline(__always)
private func q6_KFinish(_ block: UnsafeRawPointer, _ g: Int, _ sums: (__m256i, __m256i), _ x: Q8Activations,
                        _ xb: Int, _ d: __m256, _ acc: inout __m256) {
    let scLo = _mm256_cvtepi8_epi32(_mm_loadl_epi64((block + 16 + 16 * g).assumingMemoryBound(to: __m128i.self)))
    let scHi = _mm256_cvtepi8_epi32(_mm_loadl_epi64((block + 24 + 16 * g).assumingMemoryBound(to: __m128i.self)))
    let lo = _mm256_sub_epi32(sums.0, _mm256_set1_epi32(32 * x.halfSums[2 * xb]))
    let hi = _mm256_sub_epi32(sums.1, _mm256_set1_epi32(32 * x.halfSums[2 * xb + 1]))
    let t = _mm256_add_epi32(_mm256_mullo_epi32(scLo, lo), _mm256_mullo_epi32(scHi, hi))
    acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x.d[xb])), _mm256_cvtepi32_ps(t), acc)
}

/// 8 rows of Q6_K · one quantized input.
@inline(__always)
func gemvQ6_Kx8(_ group: UnsafeRawPointer, _ x: Q8Activations) -> __m256 {
    var acc = _mm256_setzero_ps()
    for sb in 0..<(x.count / 256) {
        let block = group + sb * 1680
        let d = halves8(block)
        for g in 0..<8 {
            let xb = sb * 8 + g
            let sums = q6_KGroupSums(block + 144 + 192 * g, block + 272 + 192 * g, x.q + xb * 32)
            q6_KFinish(block, g, sums, x, xb, d, &acc)
        }
    }
    return acc
}

/// 8 rows of Q6_K · 4 quantized inputs: each group's 6-bit values are rebuilt once for all
/// four (the one-input kernel rebuilt them per input, which held prompts with Q6_K matrices to
/// 279 GFLOP/s against Q4_K's 623, `llama bench --kernels`). Each input's sums and their
/// finishing follow `gemvQ6_Kx8` step for step, so a row gives the same bits here as alone.
@inline(__always)
func gemm4Q6_Kx8(_ group: UnsafeRawPointer, _ x0: Q8Activations, _ x1: Q8Activations, _ x2: Q8Activations,
                 _ x3: Q8Activations) -> (__m256, __m256, __m256, __m256) {
    var a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    for sb in 0..<(x0.count / 256) {
        let block = group + sb * 1680
        let d = halves8(block)
        for g in 0..<8 {
            let xb = sb * 8 + g, low = block + 144 + 192 * g, high = low + 128, o = xb * 32
            let p0 = UnsafeRawPointer(x0.q + o), p1 = UnsafeRawPointer(x1.q + o)
            let p2 = UnsafeRawPointer(x2.q + o), p3 = UnsafeRawPointer(x3.q + o)
            var lo0 = _mm256_setzero_si256(), lo1 = lo0, lo2 = lo0, lo3 = lo0, hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0
            for p in 0..<2 {
                let v = q6_KValues(low, high, p)
                q6_KAccumulate(v, p0, p, &lo0, &hi0); q6_KAccumulate(v, p1, p, &lo1, &hi1)
                q6_KAccumulate(v, p2, p, &lo2, &hi2); q6_KAccumulate(v, p3, p, &lo3, &hi3)
            }
            q6_KFinish(block, g, (lo0, hi0), x0, xb, d, &a0)
            q6_KFinish(block, g, (lo1, hi1), x1, xb, d, &a1)
            q6_KFinish(block, g, (lo2, hi2), x2, xb, d, &a2)
            q6_KFinish(block, g, (lo3, hi3), x3, xb, d, &a3)
        }
    }
    return (a0, a1, a2, a3)
}

/// 8 rows (one interleaved group) of `type` · one quantized input. Each case passes its type
/// as a literal, so the shared kernels are compiled once per format.
@inline(__always)
private func gemvx8(_ type: TensorType, _ group: UnsafeRawPointer, _ x: Q8Activations) -> __m256 {
    switch type {
    case .q8_0: gemvQ8_0x8(group, x)
    case .q4_0: gemvNibblesx8(.q4_0, group, x)
    case .q4_1: gemvNibblesx8(.q4_1, group, x)
    case .q5_0: gemvNibblesx8(.q5_0, group, x)
    case .q5_1: gemvNibblesx8(.q5_1, group, x)
    case .iq4_nl: gemvNibblesx8(.iq4_nl, group, x)
    case .q4_K: gemvScaleMinx8(.q4_K, group, x)
    case .q5_K: gemvScaleMinx8(.q5_K, group, x)
    case .q2_K: gemvLowBitx8(.q2_K, group, x)
    case .q3_K: gemvLowBitx8(.q3_K, group, x)
    default: gemvQ6_Kx8(group, x)
    }
}

/// 8 rows of `type` · 4 quantized inputs.
@inline(__always)
private func gemm4x8(_ type: TensorType, _ group: UnsafeRawPointer, _ x: UnsafeBufferPointer<Q8Activations>,
                     _ b: Int) -> (__m256, __m256, __m256, __m256) {
    let (x0, x1, x2, x3) = (x[b], x[b + 1], x[b + 2], x[b + 3])
    return switch type {
    case .q8_0: gemm4Q8_0x8(group, x0, x1, x2, x3)
    case .q4_0: gemm4Nibblesx8(.q4_0, group, x0, x1, x2, x3)
    case .q4_1: gemm4Nibblesx8(.q4_1, group, x0, x1, x2, x3)
    case .q5_0: gemm4Nibblesx8(.q5_0, group, x0, x1, x2, x3)
    case .q5_1: gemm4Nibblesx8(.q5_1, group, x0, x1, x2, x3)
    case .iq4_nl: gemm4Nibblesx8(.iq4_nl, group, x0, x1, x2, x3)
    case .q4_K: gemm4ScaleMinx8(.q4_K, group, x0, x1, x2, x3)
    case .q5_K: gemm4ScaleMinx8(.q5_K, group, x0, x1, x2, x3)
    case .q2_K: gemm4LowBitx8(.q2_K, group, x0, x1, x2, x3)
    case .q3_K: gemm4LowBitx8(.q3_K, group, x0, x1, x2, x3)
    default: gemm4Q6_Kx8(group, x0, x1, x2, x3)
    }
}

/// Rows `start..<end` (multiples of 8) of an interleaved matrix times every input.
@inline(__always)
func interleavedProduct(_ w: Matrix, groupBytes: Int, rows: Range<Int>, _ xq: UnsafeBufferPointer<Q8Activations>,
                        _ output: UnsafeMutablePointer<Float>, _ outputStride: Int) {
    @inline(__always) func store(_ v: __m256, _ b: Int, _ r: Int) {
        UnsafeMutableRawPointer(output + b * outputStride + r).storeBytes(of: v, as: __m256.self)
    }
    let batch = xq.count
    var r = rows.lowerBound
    #if LLAMA_VNNI
    // Two groups (16 rows) at a time in 64-byte registers for batches (Interleaved512.swift).
    // From 8 inputs: at 4 (four sequences decoding together) reading two groups side by side
    // cost about what the wider tile saved (1.1B Q4_0 tg32x4 -2%, the default model +2%), and
    // one input at a time it halved decoding speed (two streams where the prefetcher follows one).
    let hasWide = switch w.type { case .q2_K, .q3_K: false; default: true }
    if batch >= 8 && wide16 && hasWide {
        while r + 16 <= rows.upperBound {
            let group = w.data + r / 8 * groupBytes
            var b = 0
            while b + 4 <= batch {
                let next = group + groupBytes
                let (x0, x1, x2, x3) = (xq[b], xq[b + 1], xq[b + 2], xq[b + 3])
                let v = switch w.type {
                case .q8_0: gemm4Q8_0x16(group, next, x0, x1, x2, x3)
                case .q4_0: gemm4Nibblesx16(.q4_0, group, next, x0, x1, x2, x3)
                case .q4_1: gemm4Nibblesx16(.q4_1, group, next, x0, x1, x2, x3)
                case .q5_0: gemm4Nibblesx16(.q5_0, group, next, x0, x1, x2, x3)
                case .q5_1: gemm4Nibblesx16(.q5_1, group, next, x0, x1, x2, x3)
                case .iq4_nl: gemm4Nibblesx16(.iq4_nl, group, next, x0, x1, x2, x3)
                case .q4_K: gemm4ScaleMinx16(.q4_K, group, next, x0, x1, x2, x3)
                case .q5_K: gemm4ScaleMinx16(.q5_K, group, next, x0, x1, x2, x3)
                default: gemm4Q6_Kx16(group, next, x0, x1, x2, x3)
                }
                @inline(__always) func store16(_ v: SIMD16<Float>, _ b: Int) {
                    UnsafeMutableRawPointer(output + b * outputStride + r).storeBytes(of: v, as: SIMD16<Float>.self)
                }
                store16(v.0, b); store16(v.1, b + 1); store16(v.2, b + 2); store16(v.3, b + 3)
                b += 4
            }
            while b < batch {
                for g in 0..<2 { store(gemvx8(w.type, group + g * groupBytes, xq[b]), b, r + 8 * g) }
                b += 1
            }
            r += 16
        }
    }
    #endif
    for r in stride(from: r, to: rows.upperBound, by: 8) {
        let group = w.data + r / 8 * groupBytes
        var b = 0
        while b + 4 <= batch {
            let v = gemm4x8(w.type, group, xq, b)
            store(v.0, b, r); store(v.1, b + 1, r); store(v.2, b + 2, r); store(v.3, b + 3, r)
            b += 4
        }
        while b < batch {
            store(gemvx8(w.type, group, xq[b]), b, r)
            b += 1
        }
    }
}
#endif
