// C += Aᵀ B for Float32 matrices whose shared dimension runs down their rows: the weight
// gradient of a linear layer, dW (out × in) += dyᵀ (out × n) · x (n × in), read straight from
// the row-major activations dy (n × out) and x (n × in), with no transposed copies.

/// Rows of A's transpose (columns of A) per register tile, and columns of B per tile.
private let tileM = 4, tileN = 16
/// Shared-dimension block: a block of B (kBlock × n floats) stays in L2 while every tile of a
/// task passes over it.
private let kBlock = 256
/// Rows of C per task handed to the pool (whole tiles).
private let rowsPerTask = 48

/// C (m × n, row stride `ldc`) += Aᵀ · B, with A (k × m, row stride `lda`) and B (k × n, row
/// stride `ldb`): `C[i, j] += Σ_p A[p, i] · B[p, j]`. Tasks own disjoint rows of C.
public func gemmTN(_ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                   _ c: UnsafeMutablePointer<Float>, ldc: Int, m: Int, n: Int, k: Int, pool: ThreadPool = .shared) {
    guard m > 0, n > 0, k > 0 else { return }
    let ap = SendablePointer(UnsafeMutablePointer(mutating: a)), bp = SendablePointer(UnsafeMutablePointer(mutating: b))
    let cp = SendablePointer(c)
    let tasks = (m + rowsPerTask - 1) / rowsPerTask
    let body = { (task: Int) in
        let m0 = task * rowsPerTask, m1 = min(m, m0 + rowsPerTask), width = m1 - m0
        // The task's columns of A for one k-block, copied contiguous: A's rows can be far apart
        // (a row of logits is the whole vocabulary), and the tiles would touch a new page per step.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: kBlock * rowsPerTask) { buffer in
            let packed = buffer.baseAddress!
            for k0 in stride(from: 0, to: k, by: kBlock) {
                let k1 = min(k, k0 + kBlock)
                for p in k0..<k1 {
                    (packed + (p - k0) * width).update(from: ap.pointer + p * lda + m0, count: width)
                }
                let bBlock = bp.pointer + k0 * ldb, steps = k1 - k0
                var i = 0
                while i + tileM <= width {
                    var j = 0
                    while j + tileN <= n {
                        tile4x16(packed + i, width, bBlock + j, ldb, cp.pointer + (m0 + i) * ldc + j, ldc, steps)
                        j += tileN
                    }
                    if j < n { edge(packed, width, bBlock, ldb, cp.pointer + m0 * ldc, ldc, i..<(i + tileM), j..<n, steps) }
                    i += tileM
                }
                if i < width { edge(packed, width, bBlock, ldb, cp.pointer + m0 * ldc, ldc, i..<width, 0..<n, steps) }
            }
        }
    }
    if m * n * k < 1 << 18 { for t in 0..<tasks { body(t) } } else { pool.parallelFor(tasks, body) }
}

/// A 4 × 16 block of C (at `c`) from 4 columns of A (at `a`) and 16 of B (at `b`), over `steps`
/// rows of both: per step, 4 broadcasts of A and 2 vectors of B feed 8 FMAs into 8 accumulators.
@inline(__always)
private func tile4x16(_ a: UnsafeMutablePointer<Float>, _ lda: Int, _ b: UnsafeMutablePointer<Float>, _ ldb: Int,
                      _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ steps: Int) {
    let c0 = c, c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc
    var x0 = load8(c0), y0 = load8(c0 + 8), x1 = load8(c1), y1 = load8(c1 + 8)
    var x2 = load8(c2), y2 = load8(c2 + 8), x3 = load8(c3), y3 = load8(c3 + 8)
    var ar = a, br = b
    for _ in 0..<steps {
        let u = load8(br), v = load8(br + 8)
        var s = SIMD8<Float>(repeating: ar[0])
        x0.addProduct(s, u); y0.addProduct(s, v)
        s = SIMD8<Float>(repeating: ar[1])
        x1.addProduct(s, u); y1.addProduct(s, v)
        s = SIMD8<Float>(repeating: ar[2])
        x2.addProduct(s, u); y2.addProduct(s, v)
        s = SIMD8<Float>(repeating: ar[3])
        x3.addProduct(s, u); y3.addProduct(s, v)
        ar += lda
        br += ldb
    }
    store8(x0, c0); store8(y0, c0 + 8); store8(x1, c1); store8(y1, c1 + 8)
    store8(x2, c2); store8(y2, c2 + 8); store8(x3, c3); store8(y3, c3 + 8)
}

/// Rows (of C, columns of A) or columns that do not fill a tile.
private func edge(_ a: UnsafeMutablePointer<Float>, _ lda: Int, _ b: UnsafeMutablePointer<Float>, _ ldb: Int,
                  _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ rows: Range<Int>, _ cols: Range<Int>, _ steps: Int) {
    for p in 0..<steps {
        let bp = b + p * ldb
        for i in rows {
            let s = a[p * lda + i]
            let cr = c + i * ldc
            for j in cols { cr[j] += s * bp[j] }
        }
    }
}

@inline(__always)
private func load8(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always)
private func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}
