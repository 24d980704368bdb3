// C (+)= op(A) · op(B) for Float32 matrices, either operand read as stored or transposed: the
// three products of training a linear layer y = x Wᵀ come straight from the row-major
// activations and weights, with no transposed copies:
//   forward          y  = x · Wᵀ       (A = x,       B = W transposed)
//   input gradient   dx = dy · W       (A = dy,      B = W)
//   weight gradient  dW += dyᵀ · x     (A = dy transposed, B = x)
//
// GotoBLAS's loop nest: blocks of NC columns and KC steps of the shared dimension; each block
// of B is copied into 16-column panels (contiguous, shared by the threads); threads take
// blocks of MC rows, copy their block of A contiguous, and run a 6 × 16 register tile over it.

/// Rows of C per register tile, and columns per tile (two 8-lane vectors).
private let tileM = 6, tileN = 16
/// Most steps of the shared dimension per block (a B panel is KC × 16 floats, 16-24 KB: L1);
/// k is cut into equal blocks no longer than this (288 → one block, not 256 + 32).
private let kcBlock = 384
/// Columns of C per block (a packed B block, KC × NC floats, stays in L2).
private let ncBlock = 384
/// Rows of C per task handed to the pool (a packed A block, MC × KC floats).
private let mcBlock = 48

/// C (m × n, row stride `ldc`) = op(A) · op(B), or += with `accumulate`, where op(A) is m × k and
/// op(B) is k × n. `aTransposed`: A is stored k × m (op(A)[i, p] = A[p·lda + i]); otherwise m × k.
/// `bTransposed`: B is stored n × k (op(B)[p, j] = B[j·ldb + p]); otherwise k × n.
/// Each element of C is computed by one thread, in the same order whatever the thread count.
public func gemm(m: Int, n: Int, k: Int,
                 _ a: UnsafePointer<Float>, lda: Int, aTransposed: Bool,
                 _ b: UnsafePointer<Float>, ldb: Int, bTransposed: Bool,
                 _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, pool: ThreadPool = .shared) {
    guard m > 0, n > 0 else { return }
    if k <= 0 {
        if !accumulate { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
        return
    }
    let parallel = m * n * k >= 1 << 18 && pool.threadCount > 1
    let ap = SendablePointer(UnsafeMutablePointer(mutating: a)), bp = SendablePointer(UnsafeMutablePointer(mutating: b))
    let cp = SendablePointer(c)
    let maxPanels = (ncBlock + tileN - 1) / tileN
    let packedB = UnsafeMutablePointer<Float>.allocate(capacity: maxPanels * kcBlock * tileN)
    defer { packedB.deallocate() }
    let pb = SendablePointer(packedB)
    let tasks = (m + mcBlock - 1) / mcBlock
    let kBlocks = (k + kcBlock - 1) / kcBlock, kc = (k + kBlocks - 1) / kBlocks
    for j0 in stride(from: 0, to: n, by: ncBlock) {
        let j1 = min(n, j0 + ncBlock), panels = (j1 - j0 + tileN - 1) / tileN
        for k0 in stride(from: 0, to: k, by: kc) {
            let k1 = min(k, k0 + kc), steps = k1 - k0
            let load = accumulate || k0 > 0
            // Panel q holds op(B)[k0..<k1, j0 + 16q ..< j0 + 16q + 16], row by row; columns past
            // n are zero.
            let pack = { (q: Int) in
                let panel = pb.pointer + q * kcBlock * tileN
                let first = j0 + q * tileN, width = min(tileN, j1 - first)
                if width < tileN { panel.update(repeating: 0, count: steps * tileN) }
                if bTransposed {
                    for col in 0..<width {
                        let src = bp.pointer + (first + col) * ldb + k0
                        for p in 0..<steps { panel[p * tileN + col] = src[p] }
                    }
                } else {
                    for p in 0..<steps { (panel + p * tileN).update(from: bp.pointer + (k0 + p) * ldb + first, count: width) }
                }
            }
            if parallel && panels > 1 { pool.parallelFor(panels, pack) } else { for q in 0..<panels { pack(q) } }
            let body = { (task: Int) in
                let i0 = task * mcBlock, rows = min(m, i0 + mcBlock) - i0
                withUnsafeTemporaryAllocation(of: Float.self, capacity: mcBlock * kcBlock) { buffer in
                    // op(A)[i0..<i0 + rows, k0..<k1], step by step: packed[p · rows + i].
                    let packed = buffer.baseAddress!
                    if aTransposed {
                        for p in 0..<steps { (packed + p * rows).update(from: ap.pointer + (k0 + p) * lda + i0, count: rows) }
                    } else {
                        for i in 0..<rows {
                            let src = ap.pointer + (i0 + i) * lda + k0
                            for p in 0..<steps { packed[p * rows + i] = src[p] }
                        }
                    }
                    for q in 0..<panels {
                        let panel = pb.pointer + q * kcBlock * tileN
                        let first = j0 + q * tileN, width = min(tileN, j1 - first)
                        let cBlock = cp.pointer + i0 * ldc + first
                        var i = 0
                        if width == tileN {
                            while i + tileM <= rows {
                                tile(packed + i, rows, panel, cBlock + i * ldc, ldc, steps, load: load)
                                i += tileM
                            }
                        }
                        if i < rows { edge(packed, rows, panel, cBlock, ldc, i..<rows, width, steps, load: load) }
                    }
                }
            }
            if parallel { pool.parallelFor(tasks, body) } else { for t in 0..<tasks { body(t) } }
        }
    }
}

/// A 6 × 16 block of C (at `c`) from 6 columns of packed A (at `a`, `lda` apart per step) and a
/// packed 16-column panel of B: per step, 6 broadcasts of A and 2 vectors of B feed 12 FMAs into
/// 12 accumulators (15 of the 16 ymm registers). `load`: add to C rather than overwrite it.
@inline(__always)
private func tile(_ a: UnsafeMutablePointer<Float>, _ lda: Int, _ b: UnsafeMutablePointer<Float>,
                  _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ steps: Int, load: Bool) {
    let c0 = c, c1 = c0 + ldc, c2 = c1 + ldc, c3 = c2 + ldc, c4 = c3 + ldc, c5 = c4 + ldc
    var x0 = SIMD8<Float>(), y0 = x0, x1 = x0, y1 = x0, x2 = x0, y2 = x0
    var x3 = x0, y3 = x0, x4 = x0, y4 = x0, x5 = x0, y5 = x0
    if load {
        x0 = load8(c0); y0 = load8(c0 + 8); x1 = load8(c1); y1 = load8(c1 + 8)
        x2 = load8(c2); y2 = load8(c2 + 8); x3 = load8(c3); y3 = load8(c3 + 8)
        x4 = load8(c4); y4 = load8(c4 + 8); x5 = load8(c5); y5 = load8(c5 + 8)
    }
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
        s = SIMD8<Float>(repeating: ar[4])
        x4.addProduct(s, u); y4.addProduct(s, v)
        s = SIMD8<Float>(repeating: ar[5])
        x5.addProduct(s, u); y5.addProduct(s, v)
        ar += lda
        br += tileN
    }
    store8(x0, c0); store8(y0, c0 + 8); store8(x1, c1); store8(y1, c1 + 8)
    store8(x2, c2); store8(y2, c2 + 8); store8(x3, c3); store8(y3, c3 + 8)
    store8(x4, c4); store8(y4, c4 + 8); store8(x5, c5); store8(y5, c5 + 8)
}

/// Rows that do not fill a tile, or a panel narrower than 16 columns.
private func edge(_ a: UnsafeMutablePointer<Float>, _ lda: Int, _ b: UnsafeMutablePointer<Float>,
                  _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ rows: Range<Int>, _ width: Int, _ steps: Int, load: Bool) {
    for i in rows {
        let cr = c + i * ldc
        for j in 0..<width {
            var s: Float = load ? cr[j] : 0
            for p in 0..<steps { s += a[p * lda + i] * b[p * tileN + j] }
            cr[j] = s
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
