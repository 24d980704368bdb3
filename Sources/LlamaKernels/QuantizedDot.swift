// Integer dot products for quantized weights, as llama.cpp computes them: the activation
// vector is quantized once per matmul to int8 in blocks of 32 (ggml's q8_0/q8_1), and each
// weight block is multiplied with it in int8×int8 → int32 arithmetic (AVX2 `maddubs`), then
// scaled. Only built with the AVX2 flags (Package.swift sets LLAMA_AVX2 alongside them);
// elsewhere the float kernels in Dot.swift do the work.

/// Activations quantized to int8 in blocks of 32.
public struct Q8Activations {
    /// (count) int8 values
    public let q: UnsafeMutablePointer<Int8>
    /// (count / 32) block scales, rounded through Float16 as ggml stores them
    public let d: UnsafeMutablePointer<Float>
    /// (count / 32) d × Σq of each block, for formats with an offset (Q4_1, Q5_1, Q4_K, Q5_K)
    public let s: UnsafeMutablePointer<Float>
    /// (count / 16) Σq of each half block (16 values), exact: Q6_K's sub-blocks are 16 long
    public let halfSums: UnsafeMutablePointer<Int32>
    public let count: Int

    /// Bytes of scratch needed for `count` activations.
    public static func byteCount(_ count: Int) -> Int { count + count / 32 * 16 + 64 }

    /// Carves the arrays out of `buffer` (at least `byteCount(count)` bytes, 32-aligned).
    public init(buffer: UnsafeMutableRawPointer, count: Int) {
        self.count = count
        q = buffer.assumingMemoryBound(to: Int8.self)
        let scales = buffer + (count + 31) / 32 * 32
        d = scales.assumingMemoryBound(to: Float.self)
        s = (scales + count / 32 * 4).assumingMemoryBound(to: Float.self)
        halfSums = (scales + count / 32 * 8).assumingMemoryBound(to: Int32.self)
    }

    /// Quantizes `x` (count floats, count a multiple of 32): d = max|x| / 127, q = round(x / d)
    /// (ggml `quantize_row_q8_1`).
    public func quantize(_ x: UnsafePointer<Float>) {
        for b in 0..<(count / 32) {
            #if LLAMA_AVX2
            let (scale, sum, first) = quantizeBlockAVX2(x + b * 32, q + b * 32)
            #else
            let (scale, sum) = quantizeBlock(x + b * 32, q + b * 32)
            var first: Int32 = 0
            for i in 0..<16 { first &+= Int32(q[b * 32 + i]) }
            #endif
            d[b] = Float(Float16(scale))
            s[b] = Float(Float16(Float(sum) * scale))
            halfSums[2 * b] = first
            halfSums[2 * b + 1] = Int32(sum) - first
        }
    }

    /// Σq of block `b` (32 values), exact.
    @inline(__always)
    public func blockSum(_ b: Int) -> Int32 { halfSums[2 * b] &+ halfSums[2 * b + 1] }
}

/// One block of 32: returns the scale and Σq.
@inline(__always)
private func quantizeBlock(_ x: UnsafePointer<Float>, _ q: UnsafeMutablePointer<Int8>) -> (Float, Int) {
    var amax: Float = 0
    for i in 0..<32 { amax = max(amax, abs(x[i])) }
    let scale = amax / 127
    let inverse: Float = scale != 0 ? 1 / scale : 0
    var sum = 0
    for i in 0..<32 {
        let v = Int8((x[i] * inverse).rounded(.toNearestOrEven))
        q[i] = v
        sum += Int(v)
    }
    return (scale, sum)
}

extension TensorType {
    /// Whether matmuls with this weight type quantize the activations to Q8 on this build.
    public var usesQ8Activations: Bool {
        #if LLAMA_AVX2
        switch self {
        case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .iq4_nl, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: return true
        default: return false
        }
        #else
        return false
        #endif
    }
}

#if LLAMA_AVX2
import _Builtin_intrinsics.intel

@inline(__always) private func hsum(_ v: __m256) -> Float {
    v.sum()  // __m256 is SIMD8<Float>
}

/// Σ x·y over 32 signed bytes, as 8 float lanes (each the sum of 4 products).
@inline(__always) private func dotI8(_ x: __m256i, _ y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x)
    let sy = _mm256_sign_epi8(y, x)
    return dotU8I8(ax, sy)
}

/// Σ u·y over 32 bytes, u unsigned (< 128), y signed: pairs summed in int16 then in fours
/// (`maddubs`, `madd`), or with AVX-512 VNNI fours straight into int32 (`vpdpbusd`, one
/// instruction); the sums are exact either way (|u·y| ≤ 127·128, a pair fits in int16).
@inline(__always) private func dotU8I8(_ u: __m256i, _ y: __m256i) -> __m256 {
    #if LLAMA_VNNI
    _mm256_cvtepi32_ps(_mm256_mask_dpbusd_epi32(_mm256_setzero_si256(), 0xFF, u, y))
    #else
    _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1)))
    #endif
}

/// 16 bytes of packed nibbles → 32 bytes: low nibbles first (elements 0-15), then high (16-31).
@inline(__always) private func nibbles(_ p: UnsafeRawPointer) -> __m256i {
    let lo = p.loadUnaligned(as: __m128i.self)
    let hi = _mm_srli_epi16(lo, 4)
    return _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0F))
}

@inline(__always) private func load32(_ p: UnsafeRawPointer) -> __m256i { p.loadUnaligned(as: __m256i.self) }

/// 8 unsigned bytes → 8 floats in two instructions. The generic `SIMD8` conversions compile to
/// out-of-line calls here (15% of a Q4_K decode in a profile).
@inline(__always) private func bytesToFloats(_ v: SIMD8<UInt8>) -> SIMD8<Float> {
    let wide = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(Int64(bitPattern: unsafeBitCast(v, to: UInt64.self))))
    return _mm256_cvtepi32_ps(wide)
}

@inline(__always)
private func quantizeBlockAVX2(_ x: UnsafePointer<Float>, _ q: UnsafeMutablePointer<Int8>) -> (scale: Float, sum: Int, firstHalf: Int32) {
    // Four named registers, not `(0..<4).map`: an array here is a heap allocation per block
    // (it was 6% of a batched decoding step in a profile).
    let signBit = _mm256_set1_ps(-0.0)
    let v0 = UnsafeRawPointer(x).loadUnaligned(as: __m256.self)
    let v1 = UnsafeRawPointer(x + 8).loadUnaligned(as: __m256.self)
    let v2 = UnsafeRawPointer(x + 16).loadUnaligned(as: __m256.self)
    let v3 = UnsafeRawPointer(x + 24).loadUnaligned(as: __m256.self)
    let m8 = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(signBit, v0), _mm256_andnot_ps(signBit, v1)),
                           _mm256_max_ps(_mm256_andnot_ps(signBit, v2), _mm256_andnot_ps(signBit, v3)))
    let high = _mm256_permutevar8x32_ps(m8, _mm256_setr_epi32(4, 5, 6, 7, 0, 1, 2, 3))  // extractf128 is a macro Swift cannot see
    var m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_castps256_ps128(high))
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4))
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4))
    let amax = _mm_cvtss_f32(m4)
    let scale = amax / 127
    let inverse = _mm256_set1_ps(scale != 0 ? 1 / scale : 0)
    // cvtps rounds to nearest even under the default MXCSR, like ggml's AVX2 quantizer.
    let i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, inverse)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, inverse))
    let i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, inverse)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, inverse))
    // (Values are within ±127, so the int32 sums are exact and pack without saturating.)
    let first = unsafeBitCast(_mm256_add_epi32(i0, i1), to: SIMD8<Int32>.self)
    let second = unsafeBitCast(_mm256_add_epi32(i2, i3), to: SIMD8<Int32>.self)
    // Pack 32 int32 → 32 int8 in order (packs interleave 128-bit lanes; the permute restores it).
    let w16a = _mm256_packs_epi32(i0, i1), w16b = _mm256_packs_epi32(i2, i3)
    let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w16a, w16b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    UnsafeMutableRawPointer(q).storeBytes(of: bytes, as: __m256i.self)
    let firstHalf = first.wrappedSum()
    return (scale, Int(firstHalf &+ second.wrappedSum()), firstHalf)
}

/// 32 bits → 32 bytes, 0xFF where bit j of `bits` is set (byte j), as ggml's `bytes_from_bits_32`:
/// each byte gets its bit's byte of `bits`, ORed with every bit but its own.
@inline(__always) private func bitsToBytes(_ bits: UInt32) -> __m256i {
    let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(Int32(bitPattern: bits)),
                                     _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202, 0x0101_0101_0101_0101, 0))
    return _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7FBF_DFEF_F7FB_FDFE)), _mm256_set1_epi64x(-1))
}

/// A Q5_0 block's 32 values q − 16 as signed bytes: the nibble, with 0xF0 (−16) ORed in where
/// the fifth bit is clear.
@inline(__always) private func q5_0Values(_ block: UnsafeRawPointer) -> __m256i {
    let high = bitsToBytes(block.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
    return _mm256_or_si256(nibbles(block + 6), _mm256_andnot_si256(high, _mm256_set1_epi8(-16)))
}

/// A Q5_1 block's 32 values q (0-31) as bytes.
@inline(__always) private func q5_1Values(_ block: UnsafeRawPointer) -> __m256i {
    let high = bitsToBytes(block.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
    return _mm256_or_si256(nibbles(block + 8), _mm256_and_si256(high, _mm256_set1_epi8(0x10)))
}

/// An IQ4_NL block's 32 levels as signed bytes: each nibble looked up in `iq4nlLevels` (one
/// byte shuffle of the table).
@inline(__always) private func iq4nlValues(_ block: UnsafeRawPointer) -> __m256i {
    let table = unsafeBitCast(SIMD32<Int8>(lowHalf: iq4nlLevels, highHalf: iq4nlLevels), to: __m256i.self)
    return _mm256_shuffle_epi8(table, nibbles(block + 2))
}

/// A Q4_0 block's 32 values q − 8 as signed bytes.
@inline(__always) private func q4_0Values(_ block: UnsafeRawPointer) -> __m256i {
    _mm256_sub_epi8(nibbles(block + 2), _mm256_set1_epi8(8))
}

/// One row of a 32-element block format { half d; [half m;] … } against quantized
/// activations: `values` gives a block's 32 values as bytes, signed (Q8_0, Q4_0, Q5_0: x = d·q)
/// or, `withMin`, unsigned with the block's minimum m after d (Q4_1, Q5_1: x = d·q + m, whose
/// m·Σx comes from the activations' block sums).
@inline(__always)
private func dotBlocks(_ w: UnsafeRawPointer, _ x: Q8Activations, blockBytes: Int, withMin: Bool,
                       _ values: (UnsafeRawPointer) -> __m256i) -> Float {
    let halfs = halfTable
    var acc = _mm256_setzero_ps()
    var offsets: Float = 0
    for b in 0..<(x.count / 32) {
        let block = w + b * blockBytes
        let q = values(block), qx = load32(x.q + b * 32)
        if withMin { offsets += loadHalf(halfs, block, 2) * x.s[b] }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(loadHalf(halfs, block, 0) * x.d[b]), withMin ? dotU8I8(q, qx) : dotI8(q, qx), acc)
    }
    return withMin ? hsum(acc) + offsets : hsum(acc)
}

/// Q4_K: 256-element super-blocks { half d, dmin; uint8 scales[12]; uint8 qs[128] }: eight
/// sub-blocks of 32 with 6-bit scales and mins, x = d·sc·q − dmin·m (ggml `dequantize_row_q4_K`).
/// Q5_K (`fifthBit`) adds uint8 qh[32] before qs: element l of sub-block j has bit j of qh[l].
/// Scales, mins and the activation scales of a super-block are combined 8 lanes at a time.
@inline(__always)
func dotScaleMinKQ8(_ w: UnsafeRawPointer, _ x: Q8Activations, fifthBit: Bool) -> Float {
    let halfs = halfTable
    var acc = _mm256_setzero_ps()
    var offsets = SIMD8<Float>()
    let blockBytes = fifthBit ? 176 : 144
    for sb in 0..<(x.count / 256) {
        let block = w + sb * blockBytes
        let d = loadHalf(halfs, block, 0), dmin = loadHalf(halfs, block, 2)
        let (sc, mn) = q4KScales(block + 4)
        let xd = UnsafeRawPointer(x.d + sb * 8).loadUnaligned(as: SIMD8<Float>.self)
        let xs = UnsafeRawPointer(x.s + sb * 8).loadUnaligned(as: SIMD8<Float>.self)
        // d·sc_j·dx_j for each sub-block j, and the offsets dmin·m_j·(dx_j·Σq_j).
        let scales = bytesToFloats(sc) * d * xd
        offsets.addProduct(bytesToFloats(mn) * dmin, xs)
        var high = fifthBit ? load32(block + 16) : _mm256_setzero_si256()
        for pair in 0..<4 {
            let (lo, hi) = scaleMinKPair(block, pair, fifthBit: fifthBit, high)
            let xq = x.q + sb * 256 + pair * 64
            acc = _mm256_fmadd_ps(_mm256_set1_ps(scales[2 * pair]), dotU8I8(lo, load32(xq)), acc)
            acc = _mm256_fmadd_ps(_mm256_set1_ps(scales[2 * pair + 1]), dotU8I8(hi, load32(xq + 32)), acc)
            if fifthBit { high = _mm256_srli_epi16(high, 2) }
        }
    }
    return hsum(acc) - offsets.sum()
}

/// Sub-blocks 2p and 2p + 1 of a Q4_K or Q5_K super-block as bytes: the low and high nibbles of
/// their 32 bytes of qs, and for Q5_K the fifth bits from bits 0 and 1 of `high` (qh shifted
/// right by 2p).
@inline(__always) private func scaleMinKPair(_ block: UnsafeRawPointer, _ p: Int, fifthBit: Bool, _ high: __m256i) -> (__m256i, __m256i) {
    let mask = _mm256_set1_epi8(0x0F)
    let bytes = load32(block + (fifthBit ? 48 : 16) + p * 32)
    let lo = _mm256_and_si256(bytes, mask), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask)
    if !fifthBit { return (lo, hi) }
    return (_mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(1)), 4)),
            _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(2)), 3)))
}

/// Q2_K and Q3_K, one 32-value activation block k at a time: its values are the 2-bit fields
/// at bits 2(k % 4) of qs[32(k / 4) ..< 32(k / 4) + 32] (Q3_K: less 4 where bit k of hmask is
/// clear), in two sub-blocks of 16 with their own scales, as Q6_K's (lanes 0-7 of the pair sums
/// hold the first sub-block, 8-15 the second).
@inline(__always)
func dotLowBitKQ8(_ type: TensorType, _ w: UnsafeRawPointer, _ x: Q8Activations) -> Float {
    let halfs = halfTable
    var acc = _mm256_setzero_ps()
    var offsets = _mm256_setzero_ps()
    let three = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4)
    let q3 = type == .q3_K, blockBytes = q3 ? 110 : 84
    // Each activation scale twice: sub-blocks 2k and 2k + 1 share block k's.
    let pairsOfScales = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)
    return withUnsafeTemporaryAllocation(of: Int16.self, capacity: 16) { scales in
        for sb in 0..<(x.count / 256) {
            let block = w + sb * blockBytes
            let qs = block + (q3 ? 32 : 16)
            let d = loadHalf(halfs, block, q3 ? 108 : 80)
            // The sixteen sub-block scales as int16, stored for the broadcasts below.
            let bytes16: __m128i
            if q3 {
                bytes16 = unsafeBitCast(q3KScales(block + 96), to: __m128i.self)
            } else {
                let packed = block.loadUnaligned(as: __m128i.self)
                bytes16 = _mm_and_si128(packed, _mm_set1_epi8(0x0F))
                // The minimums: dmin·m_j times sub-block j's Σx (dx·Σq of its 16 values, exact).
                let mins = _mm_and_si128(_mm_srli_epi16(packed, 4), _mm_set1_epi8(0x0F))
                let dx = _mm256_castps128_ps256(UnsafeRawPointer(x.d + sb * 8).loadUnaligned(as: __m128.self))
                let dxHigh = _mm256_castps128_ps256(UnsafeRawPointer(x.d + sb * 8 + 4).loadUnaligned(as: __m128.self))
                let m0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(mins))
                let m1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(mins, mins)))
                let h0 = _mm256_cvtepi32_ps(UnsafeRawPointer(x.halfSums + sb * 16).loadUnaligned(as: __m256i.self))
                let h1 = _mm256_cvtepi32_ps(UnsafeRawPointer(x.halfSums + sb * 16 + 8).loadUnaligned(as: __m256i.self))
                let sums = _mm256_fmadd_ps(_mm256_mul_ps(m0, _mm256_permutevar8x32_ps(dx, pairsOfScales)), h0,
                                           _mm256_mul_ps(_mm256_mul_ps(m1, _mm256_permutevar8x32_ps(dxHigh, pairsOfScales)), h1))
                offsets = _mm256_fmadd_ps(_mm256_set1_ps(loadHalf(halfs, block, 82)), sums, offsets)
            }
            UnsafeMutableRawPointer(scales.baseAddress!).storeBytes(of: _mm256_cvtepi8_epi16(bytes16), as: __m256i.self)
            let hmask = load32(block)
            // Blocks k and k + 4 take the 2-bit fields of one 32-byte run (bits 2s, s = k % 4).
            for half in 0..<2 {
                var fields = load32(qs + half * 32)
                for s in 0..<4 {
                    let k = half * 4 + s
                    let bits = _mm256_and_si256(fields, three)
                    fields = _mm256_srli_epi16(fields, 2)
                    let xb = sb * 8 + k, xq = load32(x.q + xb * 32)
                    let pairs: __m256i
                    if q3 {
                        // q − 4 where the hmask bit is clear.
                        let clear = _mm256_cmpeq_epi8(_mm256_and_si256(hmask, _mm256_set1_epi8(Int8(truncatingIfNeeded: 1 << k))), _mm256_setzero_si256())
                        let q = _mm256_sub_epi8(bits, _mm256_and_si256(clear, four))
                        pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xq, q))
                    } else {
                        pairs = _mm256_maddubs_epi16(bits, xq)
                    }
                    let sc = _mm256_set_m128i(_mm_set1_epi16(scales[2 * k + 1]), _mm_set1_epi16(scales[2 * k]))
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d * x.d[xb]), _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, sc)), acc)
                }
            }
        }
        return hsum(acc) - hsum(offsets)
    }
}

/// Q6_K: 256-element super-blocks { uint8 ql[128]; uint8 qh[64]; int8 scales[16]; half d }:
/// 6-bit values q (low 4 bits in ql, high 2 in qh), x = d·scales[i/16]·(q − 32)
/// (ggml `dequantize_row_q6_K`).
@inline(__always)
func dotQ6_KQ8(_ w: UnsafeRawPointer, _ x: Q8Activations) -> Float {
    let halfs = halfTable
    var acc = _mm256_setzero_ps()
    let mask4 = _mm256_set1_epi8(0x0F), mask2 = _mm256_set1_epi8(0x03), m32 = _mm256_set1_epi8(32)
    for sb in 0..<(x.count / 256) {
        let block = w + sb * 210
        let d = loadHalf(halfs, block, 208)
        let scales = (block + 192).assumingMemoryBound(to: Int8.self)
        for half in 0..<2 {
            let ql = block + half * 64, qh = block + 128 + half * 32
            let l0 = load32(ql), l1 = load32(ql + 32), h = load32(qh)
            // The four groups of 32 values of this half, in order (see dequantizeQ6_K), then
            // each group's two 16-value sub-blocks with their own scales.
            @inline(__always) func accumulate(_ low: __m256i, _ high: __m256i, _ g: Int) {
                let q = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(low, mask4), _mm256_slli_epi16(_mm256_and_si256(high, mask2), 4)), m32)
                let xb = sb * 8 + half * 4 + g
                let ax = _mm256_sign_epi8(q, q)
                let sy = _mm256_sign_epi8(load32(x.q + xb * 32), q)
                // Pairs of products as int16; lanes 0-7 cover elements 0-15 (one scale), 8-15 the next.
                let s16 = _mm256_maddubs_epi16(ax, sy)
                let si = (half * 4 + g) * 2
                let sc = _mm256_set_m128i(_mm_set1_epi16(Int16(scales[si + 1])), _mm_set1_epi16(Int16(scales[si])))
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d * x.d[xb]), _mm256_cvtepi32_ps(_mm256_madd_epi16(s16, sc)), acc)
            }
            accumulate(l0, h, 0)
            accumulate(l1, _mm256_srli_epi16(h, 2), 1)
            accumulate(_mm256_srli_epi16(l0, 4), _mm256_srli_epi16(h, 4), 2)
            accumulate(_mm256_srli_epi16(l1, 4), _mm256_srli_epi16(h, 6), 3)
        }
    }
    return hsum(acc)
}

/// Four rows at once (rows `rowBytes` apart), sharing each activation load: several weight
/// streams keep the prefetcher busy, four accumulators hide the FMA latency.
@inline(__always)
func dot4Q8(_ type: TensorType, _ w: UnsafeRawPointer, _ rowBytes: Int, _ x: Q8Activations) -> SIMD4<Float> {
    switch type {
    case .q8_0: return dot4Blocks(w, rowBytes, x, blockBytes: 34, withMin: false) { load32($0 + 2) }
    case .q4_0: return dot4Blocks(w, rowBytes, x, blockBytes: 18, withMin: false, q4_0Values)
    case .q4_1: return dot4Blocks(w, rowBytes, x, blockBytes: 20, withMin: true) { nibbles($0 + 4) }
    case .q5_0: return dot4Blocks(w, rowBytes, x, blockBytes: 22, withMin: false, q5_0Values)
    case .q5_1: return dot4Blocks(w, rowBytes, x, blockBytes: 24, withMin: true, q5_1Values)
    case .iq4_nl: return dot4Blocks(w, rowBytes, x, blockBytes: 18, withMin: false, iq4nlValues)
    default:
        return SIMD4((0..<4).map { dotQ8(type, w + $0 * rowBytes, x) })
    }
}

extension TensorType {
    /// Formats whose batches in the file layout (`LLAMA_SWIFT_REPACK=0`, or a row count that is
    /// not a multiple of 8) take one row against four inputs at a time (`dotQ8x4`): their
    /// unpacking (the fifth bits) would otherwise be repeated for every input.
    var unpacksOncePerFourInputs: Bool { self == .q5_0 || self == .q5_1 || self == .q5_K }
}

/// One row times four inputs, each weight block unpacked once and multiplied four times (Q5_0,
/// Q5_1, Q5_K): `dotQ8`'s sums on each input in the same order (Q5_1's offsets fused into one
/// rounding per block, as in the 4-row tiles).
@inline(__always)
func dotQ8x4(_ type: TensorType, _ w: UnsafeRawPointer, _ x0: Q8Activations, _ x1: Q8Activations,
             _ x2: Q8Activations, _ x3: Q8Activations) -> SIMD4<Float> {
    let halfs = halfTable
    var a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    switch type {
    case .q5_0: return dotBlocksX4(w, x0, x1, x2, x3, blockBytes: 22, withMin: false, q5_0Values)
    case .q5_1: return dotBlocksX4(w, x0, x1, x2, x3, blockBytes: 24, withMin: true, q5_1Values)
    case .q5_K:
        // As dotScaleMinKQ8, each pair of sub-blocks unpacked once for the four inputs.
        var o0 = SIMD8<Float>(), o1 = o0, o2 = o0, o3 = o0
        for sb in 0..<(x0.count / 256) {
            let block = w + sb * 176
            let d = loadHalf(halfs, block, 0), dmin = loadHalf(halfs, block, 2)
            let (sc, mn) = q4KScales(block + 4)
            let scale = bytesToFloats(sc) * d, offset = bytesToFloats(mn) * dmin
            @inline(__always) func dx(_ x: Q8Activations) -> SIMD8<Float> { UnsafeRawPointer(x.d + sb * 8).loadUnaligned(as: SIMD8<Float>.self) }
            @inline(__always) func sx(_ x: Q8Activations) -> SIMD8<Float> { UnsafeRawPointer(x.s + sb * 8).loadUnaligned(as: SIMD8<Float>.self) }
            let s0 = scale * dx(x0), s1 = scale * dx(x1), s2 = scale * dx(x2), s3 = scale * dx(x3)
            o0.addProduct(offset, sx(x0)); o1.addProduct(offset, sx(x1)); o2.addProduct(offset, sx(x2)); o3.addProduct(offset, sx(x3))
            var high = load32(block + 16)
            for pair in 0..<4 {
                let (lo, hi) = scaleMinKPair(block, pair, fifthBit: true, high)
                let o = sb * 256 + pair * 64
                a0 = _mm256_fmadd_ps(_mm256_set1_ps(s0[2 * pair]), dotU8I8(lo, load32(x0.q + o)), a0)
                a0 = _mm256_fmadd_ps(_mm256_set1_ps(s0[2 * pair + 1]), dotU8I8(hi, load32(x0.q + o + 32)), a0)
                a1 = _mm256_fmadd_ps(_mm256_set1_ps(s1[2 * pair]), dotU8I8(lo, load32(x1.q + o)), a1)
                a1 = _mm256_fmadd_ps(_mm256_set1_ps(s1[2 * pair + 1]), dotU8I8(hi, load32(x1.q + o + 32)), a1)
                a2 = _mm256_fmadd_ps(_mm256_set1_ps(s2[2 * pair]), dotU8I8(lo, load32(x2.q + o)), a2)
                a2 = _mm256_fmadd_ps(_mm256_set1_ps(s2[2 * pair + 1]), dotU8I8(hi, load32(x2.q + o + 32)), a2)
                a3 = _mm256_fmadd_ps(_mm256_set1_ps(s3[2 * pair]), dotU8I8(lo, load32(x3.q + o)), a3)
                a3 = _mm256_fmadd_ps(_mm256_set1_ps(s3[2 * pair + 1]), dotU8I8(hi, load32(x3.q + o + 32)), a3)
                high = _mm256_srli_epi16(high, 2)
            }
        }
        return SIMD4(hsum(a0) - o0.sum(), hsum(a1) - o1.sum(), hsum(a2) - o2.sum(), hsum(a3) - o3.sum())
    default:
        return SIMD4(dotQ8(type, w, x0), dotQ8(type, w, x1), dotQ8(type, w, x2), dotQ8(type, w, x3))
    }
}

/// `dotBlocks` for four rows (`rowBytes` apart) sharing each activation load.
@inline(__always)
private func dot4Blocks(_ w: UnsafeRawPointer, _ rowBytes: Int, _ x: Q8Activations, blockBytes: Int, withMin: Bool,
                        _ values: (UnsafeRawPointer) -> __m256i) -> SIMD4<Float> {
    let halfs = halfTable
    var a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    var off = SIMD4<Float>()
    let r0 = w, r1 = w + rowBytes, r2 = w + 2 * rowBytes, r3 = w + 3 * rowBytes
    @inline(__always) func sums(_ block: UnsafeRawPointer, _ qx: __m256i) -> __m256 {
        withMin ? dotU8I8(values(block), qx) : dotI8(values(block), qx)
    }
    for b in 0..<(x.count / 32) {
        let qx = load32(x.q + b * 32)
        let dx = x.d[b]
        let o = b * blockBytes
        let s0 = sums(r0 + o, qx), s1 = sums(r1 + o, qx), s2 = sums(r2 + o, qx), s3 = sums(r3 + o, qx)
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(loadHalf(halfs, r0 + o, 0) * dx), s0, a0)
        a1 = _mm256_fmadd_ps(_mm256_set1_ps(loadHalf(halfs, r1 + o, 0) * dx), s1, a1)
        a2 = _mm256_fmadd_ps(_mm256_set1_ps(loadHalf(halfs, r2 + o, 0) * dx), s2, a2)
        a3 = _mm256_fmadd_ps(_mm256_set1_ps(loadHalf(halfs, r3 + o, 0) * dx), s3, a3)
        if withMin {
            off.addProduct(SIMD4(loadHalf(halfs, r0 + o, 2), loadHalf(halfs, r1 + o, 2), loadHalf(halfs, r2 + o, 2), loadHalf(halfs, r3 + o, 2)),
                           SIMD4(repeating: x.s[b]))
        }
    }
    return SIMD4(hsum(a0), hsum(a1), hsum(a2), hsum(a3)) + off
}

/// `dotBlocks` for one row against four inputs: each block's values built once.
@inline(__always)
private func dotBlocksX4(_ w: UnsafeRawPointer, _ x0: Q8Activations, _ x1: Q8Activations, _ x2: Q8Activations, _ x3: Q8Activations,
                         blockBytes: Int, withMin: Bool, _ values: (UnsafeRawPointer) -> __m256i) -> SIMD4<Float> {
    let halfs = halfTable
    var a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    var off = SIMD4<Float>()
    @inline(__always) func sums(_ q: __m256i, _ x: Q8Activations, _ b: Int) -> __m256 {
        withMin ? dotU8I8(q, load32(x.q + b * 32)) : dotI8(q, load32(x.q + b * 32))
    }
    for b in 0..<(x0.count / 32) {
        let block = w + b * blockBytes
        let q = values(block), d = loadHalf(halfs, block, 0)
        if withMin { off.addProduct(SIMD4(repeating: loadHalf(halfs, block, 2)), SIMD4(x0.s[b], x1.s[b], x2.s[b], x3.s[b])) }
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(d * x0.d[b]), sums(q, x0, b), a0)
        a1 = _mm256_fmadd_ps(_mm256_set1_ps(d * x1.d[b]), sums(q, x1, b), a1)
        a2 = _mm256_fmadd_ps(_mm256_set1_ps(d * x2.d[b]), sums(q, x2, b), a2)
        a3 = _mm256_fmadd_ps(_mm256_set1_ps(d * x3.d[b]), sums(q, x3, b), a3)
    }
    return withMin ? SIMD4(hsum(a0), hsum(a1), hsum(a2), hsum(a3)) + off : SIMD4(hsum(a0), hsum(a1), hsum(a2), hsum(a3))
}

/// Dot product of one weight row with quantized activations.
@inline(__always)
func dotQ8(_ type: TensorType, _ w: UnsafeRawPointer, _ x: Q8Activations) -> Float {
    switch type {
    case .q8_0: dotBlocks(w, x, blockBytes: 34, withMin: false) { load32($0 + 2) }
    case .q4_0: dotBlocks(w, x, blockBytes: 18, withMin: false, q4_0Values)
    case .q4_1: dotBlocks(w, x, blockBytes: 20, withMin: true) { nibbles($0 + 4) }
    case .q5_0: dotBlocks(w, x, blockBytes: 22, withMin: false, q5_0Values)
    case .q5_1: dotBlocks(w, x, blockBytes: 24, withMin: true, q5_1Values)
    case .iq4_nl: dotBlocks(w, x, blockBytes: 18, withMin: false, iq4nlValues)
    case .q4_K: dotScaleMinKQ8(w, x, fifthBit: false)
    case .q5_K: dotScaleMinKQ8(w, x, fifthBit: true)
    case .q2_K, .q3_K: dotLowBitKQ8(type, w, x)
    case .q6_K: dotQ6_KQ8(w, x)
    default: preconditionFailure("\(type) does not use Q8 activations")
    }
}
#endif

/// The 6-bit scales and mins of a Q4_K super-block (ggml `get_scale_min_k4`), four lanes at a
/// time: bytes 0-3 hold scales 0-3 (low 6 bits) and the top bits of scales 4-7, bytes 4-7 the
/// same for the mins, bytes 8-11 the low 4 bits of scales 4-7 (low nibble) and mins 4-7 (high).
@inline(__always)
func q4KScales(_ p: UnsafeRawPointer) -> (SIMD8<UInt8>, SIMD8<UInt8>) {
    let a = p.loadUnaligned(as: SIMD4<UInt8>.self)
    let b = p.loadUnaligned(fromByteOffset: 4, as: SIMD4<UInt8>.self)
    let c = p.loadUnaligned(fromByteOffset: 8, as: SIMD4<UInt8>.self)
    let sc = SIMD8(lowHalf: a & 63, highHalf: (c & 0xF) | ((a &>> 6) &<< 4))
    let mn = SIMD8(lowHalf: b & 63, highHalf: (c &>> 4) | ((b &>> 6) &<< 4))
    return (sc, mn)
}
