// Dot products of one weight row (in its stored format) with a Float32 vector.
// Inner loops work on raw pointers and SIMD8 lanes: with AVX2/FMA/F16C enabled
// (Package.swift) each SIMD8<Float> op is one ymm instruction; with AVX-512 the F16/BF16 dots
// run 16 lanes first (Tile512.swift).
//
// Block layouts follow ggml-common.h:
//   Q8_0: { half d; int8  qs[32] }           x[i] = d * qs[i]
//   Q4_0: { half d; uint8 qs[16] }           x[i] = d * ((qs[i] & 15) - 8),  x[i+16] = d * ((qs[i] >> 4) - 8)
//   Q4_1: { half d; half m; uint8 qs[16] }   x[i] = d * (qs[i] & 15) + m,    x[i+16] = d * (qs[i] >> 4) + m

#if LLAMA_AVX2
import _Builtin_intrinsics.intel
#endif

/// Float16 → Float32 for every bit pattern (256 KiB), like ggml's `ggml_table_f32_f16`.
/// Block scales are read through it: a scalar `Float16` load compiles to `vpinsrw`, which
/// merges into whatever register is free, often a loop's accumulator, chaining every block to
/// the previous block's FMA (measured: 14 cycles per block instead of ~5).
/// Written once at first use, read-only afterwards.
nonisolated(unsafe) let halfTable: UnsafePointer<Float> = {
    let t = UnsafeMutablePointer<Float>.allocate(capacity: 65536)
    for i in 0..<65536 { t[i] = Float(Float16(bitPattern: UInt16(i))) }
    return UnsafePointer(t)
}()

/// The Float16 at `p + byteOffset`, through `table` (pass `halfTable`, read once per kernel call).
@inline(__always)
func loadHalf(_ table: UnsafePointer<Float>, _ p: UnsafeRawPointer, _ byteOffset: Int) -> Float {
    table[Int(p.loadUnaligned(fromByteOffset: byteOffset, as: UInt16.self))]
}

/// 8 Float16 values at `p + byteOffset` → 8 floats. With the AVX2 flags, one `vcvtph2ps`: the
/// generic `SIMD8<Float>(SIMD8<Float16>)` conversion is sometimes left as an out-of-line call
/// (measured: it made a GEMM loop 3× slower once inlined into a bigger function).
@inline(__always)
func halfs8(_ p: UnsafeRawPointer, _ byteOffset: Int) -> SIMD8<Float> {
    #if LLAMA_AVX2
    _mm256_cvtph_ps(p.loadUnaligned(fromByteOffset: byteOffset, as: __m128i.self))  // __m256 is SIMD8<Float>
    #else
    SIMD8<Float>(p.loadUnaligned(fromByteOffset: byteOffset, as: SIMD8<Float16>.self))
    #endif
}

/// 8 bfloat16 values → 8 floats (the high halves of the float bit patterns).
@inline(__always)
func bf16x8(_ p: UnsafeRawPointer, _ byteOffset: Int) -> SIMD8<Float> {
    #if LLAMA_AVX2
    let wide = _mm256_cvtepu16_epi32(p.loadUnaligned(fromByteOffset: byteOffset, as: __m128i.self))
    return unsafeBitCast(_mm256_slli_epi32(wide, 16), to: SIMD8<Float>.self)
    #else
    let bits = SIMD8<UInt32>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: byteOffset, as: SIMD8<UInt16>.self)) &<< 16
    return unsafeBitCast(bits, to: SIMD8<Float>.self)
    #endif
}

@inlinable @inline(__always)
func loadF32x8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always)
func int8x8ToFloat(_ p: UnsafeRawPointer, _ byteOffset: Int) -> SIMD8<Float> {
    let b = p.loadUnaligned(fromByteOffset: byteOffset, as: SIMD8<Int8>.self)
    return SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: b))
}

@inline(__always)
func nibbles8(_ p: UnsafeRawPointer, _ byteOffset: Int) -> (lo: SIMD8<Float>, hi: SIMD8<Float>) {
    let b = SIMD8<Int32>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: byteOffset, as: SIMD8<UInt8>.self))
    return (SIMD8<Float>(b & 15), SIMD8<Float>(b &>> 4))
}

@inlinable @inline(__always)
func dotF32(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
    let wf = w.assumingMemoryBound(to: Float.self)
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>()
    var i = 0
    while i + 16 <= n {
        a0.addProduct(UnsafeRawPointer(wf + i).loadUnaligned(as: SIMD8<Float>.self), loadF32x8(x + i))
        a1.addProduct(UnsafeRawPointer(wf + i + 8).loadUnaligned(as: SIMD8<Float>.self), loadF32x8(x + i + 8))
        i += 16
    }
    var s = (a0 + a1).sum()
    while i < n {
        s += w.loadUnaligned(fromByteOffset: i * 4, as: Float.self) * x[i]
        i += 1
    }
    return s
}

@inline(__always)
func dotF16(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
    f16Dot(w, FloatInput(p: x), n)
}

/// An F16 dot product's other operand: Float32 (`FloatInput`) or F16 (`HalfInput`) values.
protocol F16DotInput {
    /// 16 values from element `i` as Float32 (only with AVX-512).
    func v16(_ i: Int) -> SIMD16<Float>
    /// 8 values from element `i` as Float32.
    func v8(_ i: Int) -> SIMD8<Float>
    func scalar(_ i: Int) -> Float
}

struct FloatInput: F16DotInput {
    let p: UnsafePointer<Float>
    @inline(__always) func v16(_ i: Int) -> SIMD16<Float> { UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self) }
    @inline(__always) func v8(_ i: Int) -> SIMD8<Float> { loadF32x8(p + i) }
    @inline(__always) func scalar(_ i: Int) -> Float { p[i] }
}

struct HalfInput: F16DotInput {
    let p: UnsafeRawPointer
    let table: UnsafePointer<Float>
    @inline(__always) func v16(_ i: Int) -> SIMD16<Float> {
        #if LLAMA_AVX512
        loadWeights16(.f16, p, i)
        #else
        SIMD16<Float>(lowHalf: v8(i), highHalf: v8(i + 8))
        #endif
    }
    @inline(__always) func v8(_ i: Int) -> SIMD8<Float> { halfs8(p, i * 2) }
    @inline(__always) func scalar(_ i: Int) -> Float { loadHalf(table, p, i * 2) }
}

/// The one F16 dot product loop, for either kind of input: the same sums in the same order, so
/// an F16 input and the same values as Float32 give the same bits.
@inline(__always)
func f16Dot<X: F16DotInput>(_ w: UnsafeRawPointer, _ x: X, _ n: Int) -> Float {
    let halfs = halfTable
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>()
    var i = 0
    #if LLAMA_AVX512
    // 16 lanes: half the conversions and FMAs per weight (decoding an F16 model is bound by
    // them on a fast memory system, not by the bandwidth).
    // Four sums: with two, each waited on its own FMA's latency every 32 weights, which held
    // an in-cache row to ~70 GB/s per core, too close to what memory delivers for the two to
    // overlap well.
    var b0 = SIMD16<Float>(), b1 = SIMD16<Float>(), b2 = SIMD16<Float>(), b3 = SIMD16<Float>()
    while i + 64 <= n {
        b0.addProduct(loadWeights16(.f16, w, i), x.v16(i))
        b1.addProduct(loadWeights16(.f16, w, i + 16), x.v16(i + 16))
        b2.addProduct(loadWeights16(.f16, w, i + 32), x.v16(i + 32))
        b3.addProduct(loadWeights16(.f16, w, i + 48), x.v16(i + 48))
        i += 64
    }
    while i + 32 <= n {
        b0.addProduct(loadWeights16(.f16, w, i), x.v16(i))
        b1.addProduct(loadWeights16(.f16, w, i + 16), x.v16(i + 16))
        i += 32
    }
    let b = (b0 + b2) + (b1 + b3)
    a0 = b.lowHalf
    a1 = b.highHalf
    #endif
    while i + 16 <= n {
        a0.addProduct(halfs8(w, i * 2), x.v8(i))
        a1.addProduct(halfs8(w, i * 2 + 16), x.v8(i + 8))
        i += 16
    }
    var s = (a0 + a1).sum()
    while i < n {
        s += loadHalf(halfs, w, i * 2) * x.scalar(i)
        i += 1
    }
    return s
}

/// Dot product of an F16 row with activations rounded to F16 (`x`: `n` halves), as ggml's
/// `ggml_vec_dot_f16`: both converted to Float32, the products (exact) summed in Float32.
/// The loop is `dotF16`'s (`f16Dot`), so `dotF16(w, x rounded through F16)` gives the same bits; this one
/// reads half the input bytes, and every load is 32 bytes (one thread streamed an F16 matrix
/// 1.2-1.4× faster on the Zen 4 than with the 64-byte Float32 input loads, whose 22 KB input of
/// W2 also no longer stayed in its L1 beside the stream).
@inline(__always)
func dotF16Halves(_ w: UnsafeRawPointer, _ x: UnsafeRawPointer, _ n: Int) -> Float {
    f16Dot(w, HalfInput(p: x, table: halfTable), n)
}

/// `x` (n floats) rounded to F16, to nearest even (as F16C's `vcvtps2ph` and ggml's
/// `ggml_cpu_fp32_to_fp16` round; beyond ±65504, infinity), into `dst` (n halves).
public func roundToHalves(_ x: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, _ n: Int) {
    var i = 0
    while i + 8 <= n {
        dst.storeBytes(of: SIMD8<Float16>(loadF32x8(x + i)), toByteOffset: i * 2, as: SIMD8<Float16>.self)
        i += 8
    }
    while i < n {
        dst.storeBytes(of: Float16(x[i]), toByteOffset: i * 2, as: Float16.self)
        i += 1
    }
}

/// `x` (n floats) rounded to F16 and back, into `dst`: the values `roundToHalves` gives, as
/// Float32, for the batch tiles (which then multiply by what `dotF16Halves` multiplies by).
public func roundThroughHalves(_ x: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    var i = 0
    while i + 8 <= n {
        UnsafeMutableRawPointer(dst + i).storeBytes(of: SIMD8<Float>(SIMD8<Float16>(loadF32x8(x + i))), as: SIMD8<Float>.self)
        i += 8
    }
    while i < n {
        dst[i] = Float(Float16(x[i]))
        i += 1
    }
}

@inline(__always)
func dotBF16(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var a0 = SIMD8<Float>()
    var i = 0
    #if LLAMA_AVX512
    var b0 = SIMD16<Float>()
    while i + 16 <= n {
        b0.addProduct(loadWeights16(.bf16, w, i), UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self))
        i += 16
    }
    a0 = b0.lowHalf + b0.highHalf
    #endif
    while i + 8 <= n {
        a0.addProduct(bf16x8(w, i * 2), loadF32x8(x + i))
        i += 8
    }
    var s = a0.sum()
    while i < n {
        s += bf16ToFloat(w.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) * x[i]
        i += 1
    }
    return s
}

@inline(__always)
func dotQ8_0(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
    let halfs = halfTable
    var acc = SIMD8<Float>()
    var block = w
    var xp = x
    for _ in 0..<(n / 32) {
        var s = int8x8ToFloat(block, 2) * loadF32x8(xp)
        s.addProduct(int8x8ToFloat(block, 10), loadF32x8(xp + 8))
        s.addProduct(int8x8ToFloat(block, 18), loadF32x8(xp + 16))
        s.addProduct(int8x8ToFloat(block, 26), loadF32x8(xp + 24))
        acc.addProduct(s, SIMD8<Float>(repeating: loadHalf(halfs, block, 0)))
        block += 34
        xp += 32
    }
    return acc.sum()
}

@inline(__always)
func dotQ4_0(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
    let halfs = halfTable
    var acc = SIMD8<Float>()
    var block = w
    var xp = x
    let eight = SIMD8<Float>(repeating: 8)
    for _ in 0..<(n / 32) {
        let (l0, h0) = nibbles8(block, 2)
        let (l1, h1) = nibbles8(block, 10)
        var s = (l0 - eight) * loadF32x8(xp)
        s.addProduct(l1 - eight, loadF32x8(xp + 8))
        s.addProduct(h0 - eight, loadF32x8(xp + 16))
        s.addProduct(h1 - eight, loadF32x8(xp + 24))
        acc.addProduct(s, SIMD8<Float>(repeating: loadHalf(halfs, block, 0)))
        block += 18
        xp += 32
    }
    return acc.sum()
}

@inline(__always)
func dotQ4_1(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
    let halfs = halfTable
    var acc = SIMD8<Float>()
    var block = w
    var xp = x
    for _ in 0..<(n / 32) {
        let (l0, h0) = nibbles8(block, 4)
        let (l1, h1) = nibbles8(block, 12)
        let x0 = loadF32x8(xp), x1 = loadF32x8(xp + 8), x2 = loadF32x8(xp + 16), x3 = loadF32x8(xp + 24)
        var s = l0 * x0
        s.addProduct(l1, x1)
        s.addProduct(h0, x2)
        s.addProduct(h1, x3)
        acc.addProduct(s, SIMD8<Float>(repeating: loadHalf(halfs, block, 0)))
        acc.addProduct((x0 + x1) + (x2 + x3), SIMD8<Float>(repeating: loadHalf(halfs, block, 2)))
        block += 20
        xp += 32
    }
    return acc.sum()
}

/// Lanes `first` to `first + 7` of a Q5 block's high bits (`qh`, bit i for element i) as 0 or 16.
@inline(__always)
func fifthBits8(_ qh: UInt32, _ first: Int) -> SIMD8<Float> {
    let bits = (SIMD8<UInt32>(repeating: qh) &>> (SIMD8<UInt32>(0, 1, 2, 3, 4, 5, 6, 7) &+ UInt32(first))) & 1
    return SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: bits &<< 4))
}

/// Q5_0 { half d; uint32 qh; uint8 qs[16] }: x = d·(q − 16); Q5_1 { half d, m; uint32 qh;
/// uint8 qs[16] }: x = d·q + m. q's low 4 bits are nibbles as in Q4_0 (element j low, j + 16
/// high), its fifth bit is bit j of qh (ggml `dequantize_row_q5_0`, `_q5_1`).
@inline(__always)
func dotQ5(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int, withMin: Bool) -> Float {
    let halfs = halfTable
    var acc = SIMD8<Float>()
    var block = w
    var xp = x
    let blockBytes = withMin ? 24 : 22, qh = withMin ? 4 : 2, qs = qh + 4
    let bias = SIMD8<Float>(repeating: withMin ? 0 : 16)
    for _ in 0..<(n / 32) {
        let high = block.loadUnaligned(fromByteOffset: qh, as: UInt32.self)
        let (l0, h0) = nibbles8(block, qs)
        let (l1, h1) = nibbles8(block, qs + 8)
        let x0 = loadF32x8(xp), x1 = loadF32x8(xp + 8), x2 = loadF32x8(xp + 16), x3 = loadF32x8(xp + 24)
        var s = (l0 + fifthBits8(high, 0) - bias) * x0
        s.addProduct(l1 + fifthBits8(high, 8) - bias, x1)
        s.addProduct(h0 + fifthBits8(high, 16) - bias, x2)
        s.addProduct(h1 + fifthBits8(high, 24) - bias, x3)
        acc.addProduct(s, SIMD8<Float>(repeating: loadHalf(halfs, block, 0)))
        if withMin { acc.addProduct((x0 + x1) + (x2 + x3), SIMD8<Float>(repeating: loadHalf(halfs, block, 2))) }
        block += blockBytes
        xp += 32
    }
    return acc.sum()
}

@inline(__always)
func bf16ToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// Q4_K, and Q5_K with `fifthBit`: see `dotScaleMinKQ8`.
@inline(__always)
func dotScaleMinK(_ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int, fifthBit: Bool) -> Float {
    let halfs = halfTable
    var acc = SIMD8<Float>()
    var offsets: Float = 0
    let blockBytes = fifthBit ? 176 : 144, qs = fifthBit ? 48 : 16
    for sb in 0..<(n / 256) {
        let block = w + sb * blockBytes
        let d = loadHalf(halfs, block, 0), dmin = loadHalf(halfs, block, 2)
        let (sc, mn) = q4KScales(block + 4)
        for j in 0..<8 {
            let xp = x + sb * 256 + j * 32
            var s = SIMD8<Float>(), xs = SIMD8<Float>()
            for g in 0..<4 {
                let b = SIMD8<Int32>(truncatingIfNeeded: block.loadUnaligned(fromByteOffset: qs + (j / 2) * 32 + g * 8, as: SIMD8<UInt8>.self))
                var levels = j % 2 == 0 ? b & 15 : b &>> 4
                if fifthBit {
                    let h = SIMD8<Int32>(truncatingIfNeeded: block.loadUnaligned(fromByteOffset: 16 + g * 8, as: SIMD8<UInt8>.self))
                    levels |= ((h &>> Int32(j)) & 1) &<< 4
                }
                s.addProduct(SIMD8<Float>(levels), loadF32x8(xp + g * 8))
                xs += loadF32x8(xp + g * 8)
            }
            acc.addProduct(s, SIMD8<Float>(repeating: d * Float(sc[j])))
            offsets += dmin * Float(mn[j]) * xs.sum()
        }
    }
    return acc.sum() - offsets
}

/// Q2_K, Q3_K, Q6_K and IQ4_NL through one decoded block at a time, on the stack (the portable
/// path; AVX2 builds use the integer kernels).
@inline(__always)
func dotDecoded(_ type: TensorType, _ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
    let size = type.blockSize
    return withUnsafeTemporaryAllocation(of: Float.self, capacity: size) { block in
        var total: Float = 0
        for b in 0..<(n / size) {
            dequantizeRow(type, w + b * type.blockBytes, block.baseAddress!, size)
            total += dotF32(UnsafeRawPointer(block.baseAddress!), x + b * size, size)
        }
        return total
    }
}

/// IQ4_NL's sixteen levels (ggml `kvalues_iq4nl`): a 4-bit index picks one, times the block's d.
/// A computed property, so it folds to a constant where used: a global `let` is initialized
/// lazily, and its check on every use in an inner loop halved the interleaved IQ4_NL kernels
/// (1.1B decoding 35.6 against 70.4 tokens/s with the table built once per call).
@inline(__always) var iq4nlLevels: SIMD16<Int8> { SIMD16(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113) }

/// Q3_K's sub-block scale j (of 16), a 6-bit value less 32 (ggml: the low 4 bits in bytes 0-7,
/// the low nibble for j < 8 and the high one for j ≥ 8; the high 2 bits in bytes 8-11, byte
/// j % 4, bits 2(j / 4)).
@inline(__always)
func q3KScale(_ p: UnsafeRawPointer, _ j: Int) -> Int {
    let low = (p.load(fromByteOffset: j % 8, as: UInt8.self) >> UInt8(4 * (j / 8))) & 0xF
    let high = (p.load(fromByteOffset: 8 + j % 4, as: UInt8.self) >> UInt8(2 * (j / 4))) & 3
    return Int(low | high << 4) - 32
}

/// All sixteen Q3_K scales (`q3KScale`), as signed bytes, without a loop: the low nibbles of
/// bytes 0-7 then their high nibbles, each ORed with its two bits of bytes 8-11.
@inline(__always)
func q3KScales(_ p: UnsafeRawPointer) -> SIMD16<Int8> {
    let b = p.loadUnaligned(as: SIMD8<UInt8>.self)
    let h = p.loadUnaligned(fromByteOffset: 8, as: SIMD4<UInt8>.self)
    let low = SIMD16<UInt8>(lowHalf: b & 0xF, highHalf: b &>> 4)
    let repeated = SIMD16<UInt8>(lowHalf: SIMD8(lowHalf: h, highHalf: h), highHalf: SIMD8(lowHalf: h, highHalf: h))
    let shifts = SIMD16<UInt8>(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6)
    let six = low | (((repeated &>> shifts) & 3) &<< 4)
    return unsafeBitCast(six &- 32, to: SIMD16<Int8>.self)
}

/// One Q6_K super-block (256 values) → floats (ggml `dequantize_row_q6_K`).
@inline(__always)
func dequantizeQ6_K(_ block: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>) {
    let halfs = halfTable
    let d = loadHalf(halfs, block, 208)
    let b = block.assumingMemoryBound(to: UInt8.self)
    let scales = (block + 192).assumingMemoryBound(to: Int8.self)
    for half in 0..<2 {
        let ql = b + half * 64, qh = b + 128 + half * 32, sc = scales + half * 8, out = y + half * 128
        for l in 0..<32 {
            let i = l / 16
            let q1 = Int(ql[l] & 0xF | ((qh[l] >> 0) & 3) << 4) - 32
            let q2 = Int(ql[l + 32] & 0xF | ((qh[l] >> 2) & 3) << 4) - 32
            let q3 = Int(ql[l] >> 4 | ((qh[l] >> 4) & 3) << 4) - 32
            let q4 = Int(ql[l + 32] >> 4 | ((qh[l] >> 6) & 3) << 4) - 32
            out[l] = d * Float(sc[i]) * Float(q1)
            out[l + 32] = d * Float(sc[i + 2]) * Float(q2)
            out[l + 64] = d * Float(sc[i + 4]) * Float(q3)
            out[l + 96] = d * Float(sc[i + 6]) * Float(q4)
        }
    }
}

@inline(__always)
func loadWeights8(_ type: TensorType, _ w: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
    switch type {
    case .f16: return halfs8(w, i * 2)
    case .bf16: return bf16x8(w, i * 2)
    default: return w.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
    }
}

/// Three rows of a float-format matrix (F32, F16, BF16, rows `rowBytes` apart) times three
/// input vectors: each weight vector is converted once and used three times, each input vector
/// loaded once and used three times (9 accumulators + 6 operands: 15 of the 16 ymm registers).
/// Writes `out[j * outStride + i] = row_i · x_j`.
@inline(__always)
func dotTile3x3(_ type: TensorType, _ w: UnsafeRawPointer, _ rowBytes: Int, _ x: UnsafePointer<Float>, _ xStride: Int,
                _ n: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    switch type {
    case .f16: tile3x3(.f16, w, rowBytes, x, xStride, n, out, outStride) { loadWeights8(.f16, $0, $1) }
    case .bf16: tile3x3(.bf16, w, rowBytes, x, xStride, n, out, outStride) { loadWeights8(.bf16, $0, $1) }
    default: tile3x3(.f32, w, rowBytes, x, xStride, n, out, outStride) { loadWeights8(.f32, $0, $1) }
    }
}

@inline(__always)
private func tile3x3(_ type: TensorType, _ w: UnsafeRawPointer, _ rowBytes: Int, _ x: UnsafePointer<Float>, _ xStride: Int,
                     _ n: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int,
                     _ load: (UnsafeRawPointer, Int) -> SIMD8<Float>) {
    var a00 = SIMD8<Float>(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00
    var a20 = a00, a21 = a00, a22 = a00
    let w0 = w, w1 = w + rowBytes, w2 = w + 2 * rowBytes
    let x0 = x, x1 = x + xStride, x2 = x + 2 * xStride
    var i = 0
    while i + 16 <= n {
        var y0 = loadF32x8(x0 + i), y1 = loadF32x8(x1 + i), y2 = loadF32x8(x2 + i)
        var u0 = load(w0, i), u1 = load(w1, i), u2 = load(w2, i)
        a00.addProduct(u0, y0); a01.addProduct(u0, y1); a02.addProduct(u0, y2)
        a10.addProduct(u1, y0); a11.addProduct(u1, y1); a12.addProduct(u1, y2)
        a20.addProduct(u2, y0); a21.addProduct(u2, y1); a22.addProduct(u2, y2)
        y0 = loadF32x8(x0 + i + 8); y1 = loadF32x8(x1 + i + 8); y2 = loadF32x8(x2 + i + 8)
        u0 = load(w0, i + 8); u1 = load(w1, i + 8); u2 = load(w2, i + 8)
        a00.addProduct(u0, y0); a01.addProduct(u0, y1); a02.addProduct(u0, y2)
        a10.addProduct(u1, y0); a11.addProduct(u1, y1); a12.addProduct(u1, y2)
        a20.addProduct(u2, y0); a21.addProduct(u2, y1); a22.addProduct(u2, y2)
        i &+= 16
    }
    while i + 8 <= n {
        let y0 = loadF32x8(x0 + i), y1 = loadF32x8(x1 + i), y2 = loadF32x8(x2 + i)
        let u0 = load(w0, i), u1 = load(w1, i), u2 = load(w2, i)
        a00.addProduct(u0, y0); a01.addProduct(u0, y1); a02.addProduct(u0, y2)
        a10.addProduct(u1, y0); a11.addProduct(u1, y1); a12.addProduct(u1, y2)
        a20.addProduct(u2, y0); a21.addProduct(u2, y1); a22.addProduct(u2, y2)
        i &+= 8
    }
    // Each row's three sums side by side (sum() adds one lane at a time; see sequentialSums).
    let s0 = sequentialSums(a00, a01, a02, SIMD8()), s1 = sequentialSums(a10, a11, a12, SIMD8())
    let s2 = sequentialSums(a20, a21, a22, SIMD8())
    out[0] = s0[0]; out[outStride] = s0[1]; out[2 * outStride] = s0[2]
    out[1] = s1[0]; out[outStride + 1] = s1[1]; out[2 * outStride + 1] = s1[2]
    out[2] = s2[0]; out[outStride + 2] = s2[1]; out[2 * outStride + 2] = s2[2]
    if i < n {
        // Tail shorter than one vector: finish with plain dot products of the remainder.
        let offset = i * (type == .f32 ? 4 : 2)
        for r in 0..<3 {
            for j in 0..<3 {
                out[j * outStride + r] += dot(type, w + r * rowBytes + offset, x + j * xStride + i, n - i)
            }
        }
    }
}

/// Dot product of row `w` (stored as `type`, `n` elements) with `x`.
@inline(__always)
public func dot(_ type: TensorType, _ w: UnsafeRawPointer, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
    switch type {
    case .f32: dotF32(w, x, n)
    case .f16: dotF16(w, x, n)
    case .bf16: dotBF16(w, x, n)
    case .q8_0: dotQ8_0(w, x, n)
    case .q4_0: dotQ4_0(w, x, n)
    case .q4_1: dotQ4_1(w, x, n)
    case .q5_0: dotQ5(w, x, n, withMin: false)
    case .q5_1: dotQ5(w, x, n, withMin: true)
    case .q4_K: dotScaleMinK(w, x, n, fifthBit: false)
    case .q5_K: dotScaleMinK(w, x, n, fifthBit: true)
    case .q2_K, .q3_K, .q6_K, .iq4_nl: dotDecoded(type, w, x, n)
    default: preconditionFailure("no kernel for \(type); loaders reject it")
    }
}

/// Decodes one row of `n` elements stored as `type` into Float32 (ggml's `dequantize_row_*`).
public func dequantizeRow(_ type: TensorType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
    let halfs = halfTable
    switch type {
    case .f32:
        dst.update(from: src.assumingMemoryBound(to: Float.self), count: n)
    case .f16:
        for i in 0..<n { dst[i] = loadHalf(halfs, src, i * 2) }
    case .bf16:
        for i in 0..<n { dst[i] = bf16ToFloat(src.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)) }
    case .q8_0:
        for b in 0..<(n / 32) {
            let block = src + b * 34
            let d = loadHalf(halfs, block, 0)
            for j in 0..<32 { dst[b * 32 + j] = d * Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) }
        }
    case .q4_0, .iq4_nl:
        // { half d; uint8 qs[16] }: x = d·(q − 8), or for IQ4_NL d·`iq4nlLevels`[q].
        @inline(__always) func level(_ q: UInt8) -> Float { type == .q4_0 ? Float(Int(q) - 8) : Float(iq4nlLevels[Int(q)]) }
        for b in 0..<(n / 32) {
            let block = src + b * 18
            let d = loadHalf(halfs, block, 0)
            for j in 0..<16 {
                let q = block.load(fromByteOffset: 2 + j, as: UInt8.self)
                dst[b * 32 + j] = d * level(q & 15)
                dst[b * 32 + j + 16] = d * level(q >> 4)
            }
        }
    case .q4_1:
        for b in 0..<(n / 32) {
            let block = src + b * 20
            let d = loadHalf(halfs, block, 0), m = loadHalf(halfs, block, 2)
            for j in 0..<16 {
                let q = block.load(fromByteOffset: 4 + j, as: UInt8.self)
                dst[b * 32 + j] = d * Float(q & 15) + m
                dst[b * 32 + j + 16] = d * Float(q >> 4) + m
            }
        }
    case .q5_0, .q5_1:
        let withMin = type == .q5_1, blockBytes = withMin ? 24 : 22, qs = withMin ? 8 : 6
        for b in 0..<(n / 32) {
            let block = src + b * blockBytes
            let d = loadHalf(halfs, block, 0), m: Float = withMin ? loadHalf(halfs, block, 2) : 0
            let high = block.loadUnaligned(fromByteOffset: qs - 4, as: UInt32.self)
            for j in 0..<16 {
                let q = block.load(fromByteOffset: qs + j, as: UInt8.self)
                let q0 = Int(q & 15) | Int((high >> UInt32(j)) & 1) << 4
                let q1 = Int(q >> 4) | Int((high >> UInt32(j + 16)) & 1) << 4
                // Q5_0 as ggml computes it: d·(q − 16), not d·q − 16d.
                dst[b * 32 + j] = withMin ? d * Float(q0) + m : d * Float(q0 - 16)
                dst[b * 32 + j + 16] = withMin ? d * Float(q1) + m : d * Float(q1 - 16)
            }
        }
    case .q4_K, .q5_K:
        // Eight sub-blocks of 32, x = d·sc·q − dmin·m; sub-blocks 2p and 2p + 1 share 32 bytes of
        // nibbles; Q5_K's fifth bit of element l of sub-block j is bit j of qh[l].
        let fifthBit = type == .q5_K, blockBytes = fifthBit ? 176 : 144, qs = fifthBit ? 48 : 16
        for sb in 0..<(n / 256) {
            let block = src + sb * blockBytes
            let d = loadHalf(halfs, block, 0), dmin = loadHalf(halfs, block, 2)
            let (sc, mn) = q4KScales(block + 4)
            for j in 0..<8 {
                let dj = d * Float(sc[j]), mj = dmin * Float(mn[j])
                let out = dst + sb * 256 + j * 32
                for l in 0..<32 {
                    let q = block.load(fromByteOffset: qs + (j / 2) * 32 + l, as: UInt8.self)
                    var level = j % 2 == 0 ? q & 0xF : q >> 4
                    if fifthBit { level += ((block.load(fromByteOffset: 16 + l, as: UInt8.self) >> UInt8(j)) & 1) * 16 }
                    out[l] = dj * Float(level) - mj
                }
            }
        }
    case .q6_K:
        for sb in 0..<(n / 256) { dequantizeQ6_K(src + sb * 210, dst + sb * 256) }
    case .q2_K:
        // { uint8 scales[16] (scale low nibble, min high); uint8 qs[64]; half d, dmin }: 2-bit
        // values, element 32k + l (k = 4h + s) in bits 2s of qs[32h + l]; sub-blocks of 16.
        for sb in 0..<(n / 256) {
            let block = src + sb * 84
            let d = loadHalf(halfs, block, 80), dmin = loadHalf(halfs, block, 82)
            for e in 0..<256 {
                let k = e / 32, l = e % 32
                let q = (block.load(fromByteOffset: 16 + (k / 4) * 32 + l, as: UInt8.self) >> UInt8(2 * (k % 4))) & 3
                let sc = block.load(fromByteOffset: e / 16, as: UInt8.self)
                dst[sb * 256 + e] = d * Float(sc & 0xF) * Float(q) - dmin * Float(sc >> 4)
            }
        }
    case .q3_K:
        // { uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; half d }: 3-bit values q − 4, the
        // low 2 bits as Q2_K's, the third bit of element 32k + l in bit k of hmask[l] (4 is
        // subtracted where that bit is clear); signed 6-bit scales per 16.
        for sb in 0..<(n / 256) {
            let block = src + sb * 110
            let d = loadHalf(halfs, block, 108)
            for e in 0..<256 {
                let k = e / 32, l = e % 32
                let low = (block.load(fromByteOffset: 32 + (k / 4) * 32 + l, as: UInt8.self) >> UInt8(2 * (k % 4))) & 3
                let high = (block.load(fromByteOffset: l, as: UInt8.self) >> UInt8(k)) & 1
                dst[sb * 256 + e] = d * Float(q3KScale(block + 96, e / 16)) * Float(Int(low) - (high == 0 ? 4 : 0))
            }
        }
    default:
        preconditionFailure("no kernel for \(type); loaders reject it")
    }
}

/// Encodes one row of `n` floats (`n` a multiple of the block size) as `type`, with ggml's
/// reference quantizers (`quantize_row_*_ref` in ggml-quants.c; ties round away from zero, as
/// `roundf` does).
public func quantizeRow(_ type: TensorType, _ x: UnsafePointer<Float>, _ n: Int, _ dst: UnsafeMutableRawPointer) {
    // C's float → int cast, clamped so NaN or infinite weights give a value instead of a trap.
    func toInt(_ v: Float) -> Int { v.isNaN ? 0 : Int(max(-1024, min(1024, v))) }
    func storeHalf(_ v: Float, _ offset: Int) { dst.storeBytes(of: Float16(v).bitPattern, toByteOffset: offset, as: UInt16.self) }
    /// A Q4/Q5 block's 32 levels (`level(j)` for element j) from byte `at`: low nibbles, element j
    /// and j + 16 sharing a byte; Q5_0/Q5_1 first put the fifth bits in a uint32 (bit j, element j).
    func storeLevels(_ type: TensorType, _ at: Int, _ level: (Int) -> Int8) {
        let fifthBit = type == .q5_0 || type == .q5_1, qs = fifthBit ? at + 4 : at
        var high: UInt32 = 0
        for j in 0..<16 {
            let q0 = UInt8(truncatingIfNeeded: level(j)), q1 = UInt8(truncatingIfNeeded: level(j + 16))
            dst.storeBytes(of: (q0 & 0xF) | (q1 & 0xF) << 4, toByteOffset: qs + j, as: UInt8.self)
            high |= UInt32(q0 >> 4 & 1) << UInt32(j) | UInt32(q1 >> 4 & 1) << UInt32(j + 16)
        }
        if fifthBit { dst.storeBytes(of: high, toByteOffset: at, as: UInt32.self) }
    }
    switch type {
    case .f32:
        dst.copyMemory(from: x, byteCount: n * 4)
    case .f16:
        for i in 0..<n { storeHalf(x[i], i * 2) }
    case .bf16:
        // Round to nearest even on the upper 16 bits (ggml `ggml_compute_fp32_to_bf16`).
        for i in 0..<n {
            let bits = x[i].bitPattern
            let rounded = x[i].isNaN ? (bits >> 16) | 64 : (bits &+ (0x7FFF &+ ((bits >> 16) & 1))) >> 16
            dst.storeBytes(of: UInt16(truncatingIfNeeded: rounded), toByteOffset: i * 2, as: UInt16.self)
        }
    case .q8_0:
        for b in 0..<(n / 32) {
            let xb = x + b * 32, out = b * 34
            var amax: Float = 0
            for j in 0..<32 { amax = max(amax, abs(xb[j])) }
            let d = amax / 127, id: Float = d != 0 ? 1 / d : 0
            storeHalf(d, out)
            for j in 0..<32 {
                dst.storeBytes(of: Int8(clamping: toInt((xb[j] * id).rounded(.toNearestOrAwayFromZero))), toByteOffset: out + 2 + j, as: Int8.self)
            }
        }
    case .q4_0, .q5_0:
        // d = the block's value of largest magnitude / −8 (−16), q = (x/d + 8.5) (16.5) truncated,
        // at most 15 (31).
        let offset: Float = type == .q4_0 ? 8 : 16, rounding = offset + 0.5  // 8.5 or 16.5 in one add, as ggml
        for b in 0..<(n / 32) {
            let xb = x + b * 32, out = b * type.blockBytes
            var amax: Float = 0, signedMax: Float = 0
            for j in 0..<32 where abs(xb[j]) > amax {
                amax = abs(xb[j])
                signedMax = xb[j]
            }
            let d = signedMax / -offset, id: Float = d != 0 ? 1 / d : 0
            storeHalf(d, out)
            storeLevels(type, out + 2) { min(Int8(2 * offset - 1), Int8(clamping: toInt(xb[$0] * id + rounding))) }
        }
    case .q4_1, .q5_1:
        // d = (max − min) / 15 (31), m = min, q = ((x − min)/d + 0.5) truncated.
        let top: Float = type == .q4_1 ? 15 : 31
        for b in 0..<(n / 32) {
            let xb = x + b * 32, out = b * type.blockBytes
            var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
            for j in 0..<32 {
                lo = min(lo, xb[j])
                hi = max(hi, xb[j])
            }
            let d = (hi - lo) / top, id: Float = d != 0 ? 1 / d : 0
            storeHalf(d, out)
            storeHalf(lo, out + 2)
            storeLevels(type, out + 4) { min(Int8(top), Int8(clamping: toInt((xb[$0] - lo) * id + 0.5))) }
        }
    case .iq4_nl:
        for b in 0..<(n / 32) { quantizeIQ4_NL(x + b * 32, dst + b * 18) }
    case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
        let encode = switch type {
        case .q2_K: quantizeQ2_K
        case .q3_K: quantizeQ3_K
        case .q4_K: quantizeQ4_K
        case .q5_K: quantizeQ5_K
        default: quantizeQ6_K
        }
        for b in 0..<(n / 256) { encode(x + b * 256, dst + b * type.blockBytes) }
    default:
        preconditionFailure("no quantizer for \(type)")
    }
}
