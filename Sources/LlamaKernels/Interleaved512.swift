// Prompt tiles for the interleaved formats (all but Q2_K and Q3_K) in 64-byte registers, for CPUs with AVX-512
// VNNI (Package.swift sets LLAMA_VNNI). Two adjacent 8-row groups share each register: lanes 0-7
// hold a 4-byte chunk of each row of the first group, lanes 8-15 the same chunk of the second,
// so one `vpdpbusd` against a 4-byte group of activations broadcast to all 16 lanes advances 16
// rows, where the 32-byte kernels advance 8. Each row's integer sums and their scaling are the
// 32-byte kernel's lane for lane, so rows keep their bits (InterleavedTests).

#if LLAMA_VNNI
import _Builtin_intrinsics.intel
import Foundation

/// Whether the 16-row tiles are used (LLAMA_SWIFT_WIDE16=0 turns them off, to compare).
let wide16 = ProcessInfo.processInfo.environment["LLAMA_SWIFT_WIDE16"] != "0"

/// The same 32 bytes of two groups, side by side.
@inline(__always) private func pair(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer) -> __m512i {
    __m512i(lowHalf: a.loadUnaligned(as: __m256i.self), highHalf: b.loadUnaligned(as: __m256i.self))
}

/// 8 Float16 values of each group → 16 floats.
@inline(__always) private func halves16(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer) -> __m512 {
    _mm512_cvtph_ps(_mm256_setr_m128i(a.loadUnaligned(as: __m128i.self), b.loadUnaligned(as: __m128i.self)))
}

/// Four activation bytes in every 32-bit lane.
@inline(__always) private func broadcast4(_ p: UnsafeRawPointer) -> __m512i {
    _mm512_set1_epi32(p.loadUnaligned(as: Int32.self))
}

/// The fifth bits of chunk `c` (`fifthBits` in Interleaved.swift) for both groups.
@inline(__always) private func fifthBits16(_ w: __m512i, _ c: Int) -> (__m512i, __m512i) {
    let sixteen = _mm512_set1_epi8(0x10)
    @inline(__always) func bitFour(_ shift: Int) -> __m512i {
        let v = shift > 0 ? _mm512_slli_epi32(w, UInt32(shift)) : shift < 0 ? _mm512_srli_epi32(w, UInt32(-shift)) : w
        return _mm512_and_si512(v, sixteen)
    }
    return (bitFour(4 - 2 * c), bitFour(3 - 2 * c))
}

/// 16 rows (groups `a` and `b`) of Q4_0, Q4_1, Q5_0, Q5_1 or IQ4_NL · 4 quantized inputs:
/// `gemm4Nibblesx8` on both groups at once.
@inline(__always)
func gemm4Nibblesx16(_ type: TensorType, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ x0: Q8Activations, _ x1: Q8Activations,
                     _ x2: Q8Activations, _ x3: Q8Activations) -> (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>) {
    let f = NibbleBlocks(type), mask = _mm512_set1_epi8(0x0F)
    let t = levelBytes(), t32 = SIMD32(lowHalf: t, highHalf: t)
    let table = f.levels ? unsafeBitCast(SIMD64(lowHalf: t32, highHalf: t32), to: __m512i.self) : _mm512_setzero_si512()
    var a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    for k in 0..<(x0.count / 32) {
        let ba = a + k * f.bytes, bb = b + k * f.bytes, o = k * 32
        let p0 = UnsafeRawPointer(x0.q + o), p1 = UnsafeRawPointer(x1.q + o)
        let p2 = UnsafeRawPointer(x2.q + o), p3 = UnsafeRawPointer(x3.q + o)
        var s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0
        let w = f.fifth ? pair(ba + f.bits, bb + f.bits) : s0
        for c in 0..<4 {
            let v = pair(ba + f.qs + 32 * c, bb + f.qs + 32 * c)
            var lo = _mm512_and_si512(v, mask), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask)
            if f.levels {
                // The levels offset by 128 (`levelBytes`): the sums hold 128·Σx extra (f.zero).
                lo = _mm512_shuffle_epi8(table, lo); hi = _mm512_shuffle_epi8(table, hi)
            } else if f.fifth {
                let (fl, fh) = fifthBits16(w, c)
                lo = _mm512_or_si512(lo, fl); hi = _mm512_or_si512(hi, fh)
            }
            s0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(s0, lo, broadcast4(p0 + 4 * c)), hi, broadcast4(p0 + 16 + 4 * c))
            s1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(s1, lo, broadcast4(p1 + 4 * c)), hi, broadcast4(p1 + 16 + 4 * c))
            s2 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(s2, lo, broadcast4(p2 + 4 * c)), hi, broadcast4(p2 + 16 + 4 * c))
            s3 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(s3, lo, broadcast4(p3 + 4 * c)), hi, broadcast4(p3 + 16 + 4 * c))
        }
        let d = halves16(ba, bb)
        @inline(__always) func finish(_ s: __m512i, _ x: Q8Activations, _ acc: inout __m512) {
            let sums = f.withMin ? s : _mm512_sub_epi32(s, _mm512_set1_epi32(f.zero * x.blockSum(k)))
            acc = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(x.d[k])), _mm512_cvtepi32_ps(sums), acc)
        }
        finish(s0, x0, &a0); finish(s1, x1, &a1); finish(s2, x2, &a2); finish(s3, x3, &a3)
    }
    if f.withMin {
        // The offsets in their own sums, added last, as gemm4Nibblesx8 adds them.
        var o0 = _mm512_setzero_ps(), o1 = o0, o2 = o0, o3 = o0
        for k in 0..<(x0.count / 32) {
            let m = halves16(a + k * f.bytes + 16, b + k * f.bytes + 16)
            o0 = _mm512_fmadd_ps(m, _mm512_set1_ps(x0.s[k]), o0); o1 = _mm512_fmadd_ps(m, _mm512_set1_ps(x1.s[k]), o1)
            o2 = _mm512_fmadd_ps(m, _mm512_set1_ps(x2.s[k]), o2); o3 = _mm512_fmadd_ps(m, _mm512_set1_ps(x3.s[k]), o3)
        }
        a0 = _mm512_add_ps(a0, o0); a1 = _mm512_add_ps(a1, o1); a2 = _mm512_add_ps(a2, o2); a3 = _mm512_add_ps(a3, o3)
    }
    return (a0, a1, a2, a3)
}
/// 16 rows of Q8_0 · 4 quantized inputs. `vpdpbusd` wants one unsigned operand: the weights
/// offset by 128 (one xor per 64 bytes, shared by the four inputs) give Σ(w + 128)·x, and
/// 128·Σx, known per block, comes off as an integer: the same exact sums as `gemm4Q8_0x8`'s.
@inline(__always)
func gemm4Q8_0x16(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ x0: Q8Activations, _ x1: Q8Activations,
                  _ x2: Q8Activations, _ x3: Q8Activations) -> (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>) {
    let offset = _mm512_set1_epi8(-128)
    var a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    for k in 0..<(x0.count / 32) {
        let ba = a + k * 272, bb = b + k * 272, o = k * 32
        let p0 = UnsafeRawPointer(x0.q + o), p1 = UnsafeRawPointer(x1.q + o)
        let p2 = UnsafeRawPointer(x2.q + o), p3 = UnsafeRawPointer(x3.q + o)
        var s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0
        for c in 0..<8 {
            let u = _mm512_xor_si512(pair(ba + 16 + 32 * c, bb + 16 + 32 * c), offset)
            s0 = _mm512_dpbusd_epi32(s0, u, broadcast4(p0 + 4 * c)); s1 = _mm512_dpbusd_epi32(s1, u, broadcast4(p1 + 4 * c))
            s2 = _mm512_dpbusd_epi32(s2, u, broadcast4(p2 + 4 * c)); s3 = _mm512_dpbusd_epi32(s3, u, broadcast4(p3 + 4 * c))
        }
        let d = halves16(ba, bb)
        @inline(__always) func finish(_ s: __m512i, _ x: Q8Activations, _ acc: inout __m512) {
            let sums = _mm512_sub_epi32(s, _mm512_set1_epi32(128 * x.blockSum(k)))
            acc = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(x.d[k])), _mm512_cvtepi32_ps(sums), acc)
        }
        finish(s0, x0, &a0); finish(s1, x1, &a1); finish(s2, x2, &a2); finish(s3, x3, &a3)
    }
    return (a0, a1, a2, a3)
}
/// 8 unsigned bytes of each group → 16 floats.
@inline(__always) private func bytes16(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer) -> __m512 {
    let both = _mm_unpacklo_epi64(_mm_loadl_epi64(a.assumingMemoryBound(to: __m128i.self)),
                                  _mm_loadl_epi64(b.assumingMemoryBound(to: __m128i.self)))
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(both))
}

/// 16 rows of Q4_K or Q5_K · 4 quantized inputs: `gemm4ScaleMinx8` on two groups at once.
@inline(__always)
func gemm4ScaleMinx16(_ type: TensorType, _ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ x0: Q8Activations, _ x1: Q8Activations,
                      _ x2: Q8Activations, _ x3: Q8Activations) -> (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>) {
    let f = ScaleMinBlocks(type), mask = _mm512_set1_epi8(0x0F)
    var a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    for sb in 0..<(x0.count / 256) {
        let ba = a + sb * f.bytes, bb = b + sb * f.bytes
        let d = halves16(ba, bb)
        for p in 0..<4 {
            let qa = ba + f.qs(p), qb = bb + f.qs(p), o = sb * 256 + 64 * p
            let p0 = UnsafeRawPointer(x0.q + o), p1 = UnsafeRawPointer(x1.q + o)
            let p2 = UnsafeRawPointer(x2.q + o), p3 = UnsafeRawPointer(x3.q + o)
            var l0 = _mm512_setzero_si512(), l1 = l0, l2 = l0, l3 = l0, h0 = l0, h1 = l0, h2 = l0, h3 = l0
            for c in 0..<8 {
                let v = pair(qa + 32 * c, qb + 32 * c)
                var lo = _mm512_and_si512(v, mask), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask)
                if f.fifth {
                    let w = pair(ba + f.bits(p) + 32 * (c / 4), bb + f.bits(p) + 32 * (c / 4))
                    let (fl, fh) = fifthBits16(w, c % 4)
                    lo = _mm512_or_si512(lo, fl); hi = _mm512_or_si512(hi, fh)
                }
                l0 = _mm512_dpbusd_epi32(l0, lo, broadcast4(p0 + 4 * c)); h0 = _mm512_dpbusd_epi32(h0, hi, broadcast4(p0 + 32 + 4 * c))
                l1 = _mm512_dpbusd_epi32(l1, lo, broadcast4(p1 + 4 * c)); h1 = _mm512_dpbusd_epi32(h1, hi, broadcast4(p1 + 32 + 4 * c))
                l2 = _mm512_dpbusd_epi32(l2, lo, broadcast4(p2 + 4 * c)); h2 = _mm512_dpbusd_epi32(h2, hi, broadcast4(p2 + 32 + 4 * c))
                l3 = _mm512_dpbusd_epi32(l3, lo, broadcast4(p3 + 4 * c)); h3 = _mm512_dpbusd_epi32(h3, hi, broadcast4(p3 + 32 + 4 * c))
            }
            for h in 0..<2 {
                let j = 2 * p + h, xb = sb * 8 + j
                let dsc = _mm512_mul_ps(d, bytes16(ba + 32 + 8 * j, bb + 32 + 8 * j))
                @inline(__always) func finish(_ s: __m512i, _ x: Q8Activations, _ acc: inout __m512) {
                    acc = _mm512_fmadd_ps(_mm512_mul_ps(dsc, _mm512_set1_ps(x.d[xb])), _mm512_cvtepi32_ps(s), acc)
                }
                finish(h == 0 ? l0 : h0, x0, &a0); finish(h == 0 ? l1 : h1, x1, &a1)
                finish(h == 0 ? l2 : h2, x2, &a2); finish(h == 0 ? l3 : h3, x3, &a3)
            }
        }
    }
    // The offsets dmin·m_j·(dx_j·Σx_j) in their own sums, subtracted last, as gemm4ScaleMinx8 does.
    var o0 = _mm512_setzero_ps(), o1 = o0, o2 = o0, o3 = o0
    for sb in 0..<(x0.count / 256) {
        let ba = a + sb * f.bytes, bb = b + sb * f.bytes
        let dmin = halves16(ba + 16, bb + 16)
        for j in 0..<8 {
            let xb = sb * 8 + j, dmn = _mm512_mul_ps(dmin, bytes16(ba + 96 + 8 * j, bb + 96 + 8 * j))
            o0 = _mm512_fmadd_ps(dmn, _mm512_set1_ps(x0.s[xb]), o0); o1 = _mm512_fmadd_ps(dmn, _mm512_set1_ps(x1.s[xb]), o1)
            o2 = _mm512_fmadd_ps(dmn, _mm512_set1_ps(x2.s[xb]), o2); o3 = _mm512_fmadd_ps(dmn, _mm512_set1_ps(x3.s[xb]), o3)
        }
    }
    return (_mm512_sub_ps(a0, o0), _mm512_sub_ps(a1, o1), _mm512_sub_ps(a2, o2), _mm512_sub_ps(a3, o3))
}
/// 8 signed bytes of each group → 16 int32 lanes.
@inline(__always) private func signedBytes16(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer) -> __m512i {
    _mm512_cvtepi8_epi32(_mm_unpacklo_epi64(_mm_loadl_epi64(a.assumingMemoryBound(to: __m128i.self)),
                                            _mm_loadl_epi64(b.assumingMemoryBound(to: __m128i.self))))
}

/// 16 rows of Q6_K · 4 quantized inputs: `gemm4Q6_Kx8` on two groups at once.
@inline(__always)
func gemm4Q6_Kx16(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ x0: Q8Activations, _ x1: Q8Activations,
                  _ x2: Q8Activations, _ x3: Q8Activations) -> (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>) {
    let m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x30)
    var a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0
    for sb in 0..<(x0.count / 256) {
        let ba = a + sb * 1680, bb = b + sb * 1680
        let d = halves16(ba, bb)
        for g in 0..<8 {
            let xb = sb * 8 + g, la = ba + 144 + 192 * g, lb = bb + 144 + 192 * g, o = xb * 32
            let p0 = UnsafeRawPointer(x0.q + o), p1 = UnsafeRawPointer(x1.q + o)
            let p2 = UnsafeRawPointer(x2.q + o), p3 = UnsafeRawPointer(x3.q + o)
            var lo0 = _mm512_setzero_si512(), lo1 = lo0, lo2 = lo0, lo3 = lo0, hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0
            for p in 0..<2 {
                let h = pair(la + 128 + 32 * p, lb + 128 + 32 * p)
                let v0 = pair(la + 64 * p, lb + 64 * p), v1 = pair(la + 64 * p + 32, lb + 64 * p + 32)
                // As in q6_KGroupSums: chunk 2p (l0, u0) and chunk 2p+1 (l1, u1).
                let l0 = _mm512_or_si512(_mm512_and_si512(v0, m4), _mm512_and_si512(_mm512_slli_epi16(h, 4), m2))
                let u0 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v0, 4), m4), _mm512_and_si512(_mm512_slli_epi16(h, 2), m2))
                let l1 = _mm512_or_si512(_mm512_and_si512(v1, m4), _mm512_and_si512(h, m2))
                let u1 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v1, 4), m4), _mm512_and_si512(_mm512_srli_epi16(h, 2), m2))
                let c = 8 * p
                @inline(__always) func sums(_ xq: UnsafeRawPointer, _ lo: inout __m512i, _ hi: inout __m512i) {
                    lo = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(lo, l0, broadcast4(xq + c)), l1, broadcast4(xq + c + 4))
                    hi = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(hi, u0, broadcast4(xq + 16 + c)), u1, broadcast4(xq + 20 + c))
                }
                sums(p0, &lo0, &hi0); sums(p1, &lo1, &hi1); sums(p2, &lo2, &hi2); sums(p3, &lo3, &hi3)
            }
            // As q6_KFinish: d·dx·(sc_lo·(Σu·x − 32·Σx_lo) + sc_hi·(Σu·x − 32·Σx_hi)).
            let scLo = signedBytes16(ba + 16 + 16 * g, bb + 16 + 16 * g), scHi = signedBytes16(ba + 24 + 16 * g, bb + 24 + 16 * g)
            @inline(__always) func finish(_ lo: __m512i, _ hi: __m512i, _ x: Q8Activations, _ acc: inout __m512) {
                let l = _mm512_sub_epi32(lo, _mm512_set1_epi32(32 * x.halfSums[2 * xb]))
                let h = _mm512_sub_epi32(hi, _mm512_set1_epi32(32 * x.halfSums[2 * xb + 1]))
                let t = _mm512_add_epi32(_mm512_mullo_epi32(scLo, l), _mm512_mullo_epi32(scHi, h))
                acc = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(x.d[xb])), _mm512_cvtepi32_ps(t), acc)
            }
            finish(lo0, hi0, x0, &a0); finish(lo1, hi1, x1, &a1); finish(lo2, hi2, x2, &a2); finish(lo3, hi3, x3, &a3)
        }
    }
    return (a0, a1, a2, a3)
}
#endif
