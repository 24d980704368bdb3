// The float-format batch tile (F32, F16, BF16 weights × Float32 inputs) in 16 lanes, for CPUs
// with AVX-512 (Package.swift sets LLAMA_AVX512 with the flags when the build machine has
// avx512f/bw/vl, or when LLAMA_SWIFT_AVX512=1). With 32 vector registers the tile grows to
// 4 rows × 4 inputs: per 16 columns, 4 input loads and 4 weight conversions (one at a time) feed
// 16 FMAs of 16 lanes (16 accumulators, 4 inputs and a weight vector: 21 of the 32 zmm
// registers). On a core that runs 512-bit FMAs at full rate this is twice the 8-lane tile's
// arithmetic per instruction (measured here: 214 → 313 GFLOP/s, docs/PERFORMANCE.md).

#if LLAMA_AVX512
import _Builtin_intrinsics.intel

/// 16 elements of a float-format row from element `i`, as Float32: one `vcvtph2ps` (F16), a
/// widening shift (BF16) or a load (F32).
@inline(__always)
func loadWeights16(_ type: TensorType, _ w: UnsafeRawPointer, _ i: Int) -> SIMD16<Float> {
    switch type {
    case .f16:
        return _mm512_cvtph_ps(w.loadUnaligned(fromByteOffset: i * 2, as: __m256i.self))
    case .bf16:
        let wide = _mm512_cvtepu16_epi32(w.loadUnaligned(fromByteOffset: i * 2, as: __m256i.self))
        return unsafeBitCast(_mm512_slli_epi32(wide, 16), to: SIMD16<Float>.self)
    default:
        return w.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
    }
}

@inline(__always)
func loadF32x16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}

/// Four rows of a float-format matrix (rows `rowBytes` apart) times four input vectors
/// (`xStride` apart): `out[j * outStride + i] = row_i · x_j`.
@inline(__always)
func dotTile4x4(_ type: TensorType, _ w: UnsafeRawPointer, _ rowBytes: Int, _ x: UnsafePointer<Float>, _ xStride: Int,
                _ n: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    switch type {
    case .f16: tile4x4(.f16, w, rowBytes, x, xStride, n, out, outStride)
    case .bf16: tile4x4(.bf16, w, rowBytes, x, xStride, n, out, outStride)
    default: tile4x4(.f32, w, rowBytes, x, xStride, n, out, outStride)
    }
}

@inline(__always)
private func tile4x4(_ type: TensorType, _ w: UnsafeRawPointer, _ rowBytes: Int, _ x: UnsafePointer<Float>, _ xStride: Int,
                     _ n: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    var a00 = SIMD16<Float>(), a01 = a00, a02 = a00, a03 = a00
    var a10 = a00, a11 = a00, a12 = a00, a13 = a00
    var a20 = a00, a21 = a00, a22 = a00, a23 = a00
    var a30 = a00, a31 = a00, a32 = a00, a33 = a00
    let w0 = w, w1 = w + rowBytes, w2 = w + 2 * rowBytes, w3 = w + 3 * rowBytes
    let x0 = x, x1 = x + xStride, x2 = x + 2 * xStride, x3 = x + 3 * xStride
    var i = 0
    while i + 16 <= n {
        let y0 = loadF32x16(x0 + i), y1 = loadF32x16(x1 + i), y2 = loadF32x16(x2 + i), y3 = loadF32x16(x3 + i)
        var u = loadWeights16(type, w0, i)
        a00.addProduct(u, y0); a01.addProduct(u, y1); a02.addProduct(u, y2); a03.addProduct(u, y3)
        u = loadWeights16(type, w1, i)
        a10.addProduct(u, y0); a11.addProduct(u, y1); a12.addProduct(u, y2); a13.addProduct(u, y3)
        u = loadWeights16(type, w2, i)
        a20.addProduct(u, y0); a21.addProduct(u, y1); a22.addProduct(u, y2); a23.addProduct(u, y3)
        u = loadWeights16(type, w3, i)
        a30.addProduct(u, y0); a31.addProduct(u, y1); a32.addProduct(u, y2); a33.addProduct(u, y3)
        i &+= 16
    }
    // (A copy: a nested function that captured the loop's `var` would box it on the heap.)
    let done = i, offset = i * (type == .f32 ? 4 : 2)
    @inline(__always) func store(_ r: Int, _ a0: SIMD16<Float>, _ a1: SIMD16<Float>, _ a2: SIMD16<Float>, _ a3: SIMD16<Float>) {
        // A row's four sums side by side (16 SIMD16.sum() calls, one lane at a time, were 17%
        // of an F16 prompt).
        let s = sequentialSums(a0.lowHalf + a0.highHalf, a1.lowHalf + a1.highHalf, a2.lowHalf + a2.highHalf, a3.lowHalf + a3.highHalf)
        for j in 0..<4 {
            // Columns past the last whole 16: plain dot products of the remainder.
            let tail = done < n ? dot(type, w + r * rowBytes + offset, x + j * xStride + done, n - done) : 0
            out[j * outStride + r] = s[j] + tail
        }
    }
    store(0, a00, a01, a02, a03)
    store(1, a10, a11, a12, a13)
    store(2, a20, a21, a22, a23)
    store(3, a30, a31, a32, a33)
}
/// Four rows times six input vectors: 24 accumulators, the four rows' weights converted once
/// per 16 columns and each input loaded once for four rows (29 of the 32 registers). Per 16
/// columns: 4 conversions and 6 loads feed 24 FMAs, where the 4 × 4 tile fed 16 with 4 and 4.
@inline(__always)
func dotTile4x6(_ type: TensorType, _ w: UnsafeRawPointer, _ rowBytes: Int, _ x: UnsafePointer<Float>, _ xStride: Int,
                _ n: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    switch type {
    case .f16: tile4x6(.f16, w, rowBytes, x, xStride, n, out, outStride)
    case .bf16: tile4x6(.bf16, w, rowBytes, x, xStride, n, out, outStride)
    default: tile4x6(.f32, w, rowBytes, x, xStride, n, out, outStride)
    }
}

@inline(__always)
private func tile4x6(_ type: TensorType, _ w: UnsafeRawPointer, _ rowBytes: Int, _ x: UnsafePointer<Float>, _ xStride: Int,
                     _ n: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    var a00 = SIMD16<Float>(), a01 = a00, a02 = a00, a03 = a00, a04 = a00, a05 = a00
    var a10 = a00, a11 = a00, a12 = a00, a13 = a00, a14 = a00, a15 = a00
    var a20 = a00, a21 = a00, a22 = a00, a23 = a00, a24 = a00, a25 = a00
    var a30 = a00, a31 = a00, a32 = a00, a33 = a00, a34 = a00, a35 = a00
    let w0 = w, w1 = w + rowBytes, w2 = w + 2 * rowBytes, w3 = w + 3 * rowBytes
    var i = 0
    while i + 16 <= n {
        let u0 = loadWeights16(type, w0, i), u1 = loadWeights16(type, w1, i)
        let u2 = loadWeights16(type, w2, i), u3 = loadWeights16(type, w3, i)
        var y = loadF32x16(x + i)
        a00.addProduct(u0, y); a10.addProduct(u1, y); a20.addProduct(u2, y); a30.addProduct(u3, y)
        y = loadF32x16(x + xStride + i)
        a01.addProduct(u0, y); a11.addProduct(u1, y); a21.addProduct(u2, y); a31.addProduct(u3, y)
        y = loadF32x16(x + 2 * xStride + i)
        a02.addProduct(u0, y); a12.addProduct(u1, y); a22.addProduct(u2, y); a32.addProduct(u3, y)
        y = loadF32x16(x + 3 * xStride + i)
        a03.addProduct(u0, y); a13.addProduct(u1, y); a23.addProduct(u2, y); a33.addProduct(u3, y)
        y = loadF32x16(x + 4 * xStride + i)
        a04.addProduct(u0, y); a14.addProduct(u1, y); a24.addProduct(u2, y); a34.addProduct(u3, y)
        y = loadF32x16(x + 5 * xStride + i)
        a05.addProduct(u0, y); a15.addProduct(u1, y); a25.addProduct(u2, y); a35.addProduct(u3, y)
        i &+= 16
    }
    let done = i, offset = i * (type == .f32 ? 4 : 2)
    @inline(__always) func fold(_ a: SIMD16<Float>) -> SIMD8<Float> { a.lowHalf + a.highHalf }
    @inline(__always) func store(_ r: Int, _ a: (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>)) {
        let s = sequentialSums(fold(a.0), fold(a.1), fold(a.2), fold(a.3))
        let t = sequentialSums(fold(a.4), fold(a.5), SIMD8(), SIMD8())
        for j in 0..<6 {
            // Columns past the last whole 16: plain dot products of the remainder.
            let tail = done < n ? dot(type, w + r * rowBytes + offset, x + j * xStride + done, n - done) : 0
            out[j * outStride + r] = (j < 4 ? s[j] : t[j - 4]) + tail
        }
    }
    store(0, (a00, a01, a02, a03, a04, a05))
    store(1, (a10, a11, a12, a13, a14, a15))
    store(2, (a20, a21, a22, a23, a24, a25))
    store(3, (a30, a31, a32, a33, a34, a35))
}
#endif
