// expf eight at a time, giving the bits glibc's `expf` gives (glibc 2.27 and later on x86-64,
// the FMA build its ifunc picks on any CPU with AVX2), so attention's softmax can drop the
// per-element library call without moving a single probability: the default model's answers
// sit on near ties that a 2-ulp exp flips (docs/PERFORMANCE.md). Built from the published
// algorithm (Szabolcs Nagy's, Arm optimized-routines, in glibc since 2.27) and read off the
// library's machine code for which steps are fused:
//
//   k  = round(x · 32/ln2)                   kd + 0x1.8p52 = fma(32/ln2, x, 0x1.8p52)
//   r  = fma(32/ln2, x, −k)                  |r| ≤ 1/2, never rounded before the fma
//   s  = 2^(k/32)                            table[k mod 32] with k div 32 added to its exponent
//   y  = s · fma(fma(r, C0, C1), r², fma(r, C2, 1))
//   expf(x) = Float(y)                       one rounding, to nearest
//
// all in Double. Outside [-103.28, 88.72] the library's special cases are reproduced: +∞ above,
// 2⁻¹⁴⁹ then 0 below, NaN for NaN. `ExpfTests` checks every result against the C library on a
// sweep of inputs.

#if LLAMA_AVX2
import _Builtin_intrinsics.intel

/// 32/ln2, the polynomial's coefficients (for r in units of ln2/32) and the rounding shift.
private let invLn2N = 0x1.71547652b82fep+5, shift = 0x1.8p+52
private let c0 = 0x1.c6af84b912394p-20, c1 = 0x1.ebfce50fac4f3p-13, c2 = 0x1.62e42ff0c52d6p-6

/// 2^(i/32) rounded to nearest, minus i << 47 (so adding k << 47 scales by 2^(k div 32)).
private let expTable: [UInt64] = [
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51,
    0x3fef72b83c7d517b, 0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715, 0x3feef1a7373aa9cb, 0x3feedea64c123422, 0x3feece086061892d,
    0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429, 0x3feea47eb03a5585,
    0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d,
    0x3feee89f995ad3ad, 0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069,
    0x3fef5818dcfba487, 0x3fef7c97337b9b5f, 0x3fefa4afa2a490da, 0x3fefd0765b6e4540,
]

/// The lanes the general path does not cover: above 88.72, below −103.28, ±∞ and NaN (a float's
/// magnitude bits compare as integers; the limit depends on the sign).
@inline(__always)
private func outsideGeneralRange(_ x: __m256) -> Int32 {
    let magnitude = _mm256_and_si256(unsafeBitCast(x, to: __m256i.self), _mm256_set1_epi32(0x7fff_ffff))
    let above = _mm256_castsi256_ps(_mm256_set1_epi32(Int32(bitPattern: Float(0x1.62e42ep6).bitPattern)))
    let below = _mm256_castsi256_ps(_mm256_set1_epi32(Int32(bitPattern: Float(0x1.9d1d9ep6).bitPattern)))
    let limit = _mm256_castps_si256(_mm256_blendv_ps(above, below, x))  // the sign bit picks `below`
    return _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(magnitude, limit)))
}

/// glibc's answers outside the general path's range.
private func expfSpecial(_ x: Float) -> Float {
    if x.isNaN { return x + x }
    if x > 0x1.62e42ep6 { return .infinity }
    if x < -0x1.9fe368p6 { return 0 }
    return .leastNonzeroMagnitude  // x < −0x1.9d1d9ep6: the library's "may underflow" value
}

/// glibc's `expf` of eight floats (the same bits; see the top of this file).
@inline(__always)
public func expf8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    #if LLAMA_AVX512
    let xd = _mm512_cvtps_pd(x)
    let kShifted = _mm512_fmadd_pd(_mm512_set1_pd(invLn2N), xd, _mm512_set1_pd(shift))
    let ki = _mm512_castpd_si512(kShifted)
    let r = _mm512_fmsub_pd(_mm512_set1_pd(invLn2N), xd, _mm512_sub_pd(kShifted, _mm512_set1_pd(shift)))
    // table[k mod 32]: two 16-entry lookups (index bits 0-3) and bit 4 choosing between them.
    let (t0, t1, t2, t3) = expTableRegisters
    let low = _mm512_permutex2var_epi64(t0, ki, t1), high = _mm512_permutex2var_epi64(t2, ki, t3)
    let t = _mm512_mask_blend_epi64(_mm512_test_epi64_mask(ki, _mm512_set1_epi64(16)), low, high)
    let s = _mm512_castsi512_pd(_mm512_add_epi64(t, _mm512_slli_epi64(ki, 47)))
    let z = _mm512_fmadd_pd(r, _mm512_set1_pd(c0), _mm512_set1_pd(c1))
    let y = _mm512_fmadd_pd(z, _mm512_mul_pd(r, r), _mm512_fmadd_pd(r, _mm512_set1_pd(c2), _mm512_set1_pd(1)))
    var e: SIMD8<Float> = _mm512_cvtpd_ps(_mm512_mul_pd(y, s))
    #else
    let low = expf4(_mm256_cvtps_pd(_mm256_castps256_ps128(x)))
    let high = expf4(_mm256_cvtps_pd(_mm256_castps256_ps128(_mm256_permutevar8x32_ps(x, _mm256_setr_epi32(4, 5, 6, 7, 0, 1, 2, 3)))))
    var e: SIMD8<Float> = _mm256_setr_m128(low, high)
    #endif
    if outsideGeneralRange(x) != 0 {
        for i in 0..<8 where !(x[i] >= -0x1.9d1d9ep6 && x[i] <= 0x1.62e42ep6) { e[i] = expfSpecial(x[i]) }
    }
    return e
}

#if LLAMA_AVX512
/// The table as four registers of eight entries (`expTable`, highest lane first), built from
/// constants so the compiler keeps them in its constant pool: a global initialised at first use
/// would be a once-check on every call.
@inline(__always)
private var expTableRegisters: (__m512i, __m512i, __m512i, __m512i) {
    (_mm512_set_epi64(0x3fef1e9df51fdee1, 0x3fef387a6e756238, 0x3fef54873168b9aa, 0x3fef72b83c7d517b,
                      0x3fef9301d0125b51, 0x3fefb5586cf9890f, 0x3fefd9b0d3158574, 0x3ff0000000000000),
     _mm512_set_epi64(0x3feea47eb03a5585, 0x3feeab07dd485429, 0x3feeb42b569d4f82, 0x3feebfdad5362a27,
                      0x3feece086061892d, 0x3feedea64c123422, 0x3feef1a7373aa9cb, 0x3fef06fe0a31b715),
     _mm512_set_epi64(0x3feed503b23e255d, 0x3feec49182a3f090, 0x3feeb737b0cdc5e5, 0x3feeace5422aa0db,
                      0x3feea589994cce13, 0x3feea11473eb0187, 0x3fee9f75e8ec5f74, 0x3feea09e667f3bcd),
     _mm512_set_epi64(0x3fefd0765b6e4540, 0x3fefa4afa2a490da, 0x3fef7c97337b9b5f, 0x3fef5818dcfba487,
                      0x3fef3720dcef9069, 0x3fef199bdd85529c, 0x3feeff76f2fb5e47, 0x3feee89f995ad3ad))
}
#else
/// The general path on four doubles (AVX2 has no two-register permute: the table is read lane by lane).
@inline(__always)
private func expf4(_ xd: __m256d) -> __m128 {
    let kShifted = _mm256_fmadd_pd(_mm256_set1_pd(invLn2N), xd, _mm256_set1_pd(shift))
    let r = _mm256_fmsub_pd(_mm256_set1_pd(invLn2N), xd, _mm256_sub_pd(kShifted, _mm256_set1_pd(shift)))
    let ki = unsafeBitCast(kShifted, to: SIMD4<UInt64>.self)
    var t = SIMD4<UInt64>()
    for lane in 0..<4 { t[lane] = expTable[Int(ki[lane] & 31)] &+ (ki[lane] &<< 47) }
    let s = unsafeBitCast(t, to: __m256d.self)
    let z = _mm256_fmadd_pd(r, _mm256_set1_pd(c0), _mm256_set1_pd(c1))
    let y = _mm256_fmadd_pd(z, _mm256_mul_pd(r, r), _mm256_fmadd_pd(r, _mm256_set1_pd(c2), _mm256_set1_pd(1)))
    return _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
}
#endif

#else
import Foundation

/// The C library's `expf` of eight floats (builds without the x86 kernels).
@inline(__always)
public func expf8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    var y = SIMD8<Float>()
    for i in 0..<8 { y[i] = Foundation.expf(x[i]) }
    return y
}
#endif
