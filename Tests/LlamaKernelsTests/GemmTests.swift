import XCTest
import LlamaKernels

/// `gemm` (C (+)= op(A) op(B), the training products) against a plain triple loop, for every
/// combination of stored/transposed operands, overwriting and accumulating, and shapes that leave
/// partial tiles, partial tasks, partial panels and partial blocks of the shared dimension.
final class GemmTests: XCTestCase {
    func testMatchesNaiveProduct() {
        var state: UInt64 = 99
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(state >> 40) % 2001 - 1000) / 1000
        }
        for (m, n, k) in [(5, 7, 3), (52, 40, 300), (100, 401, 37), (7, 16, 513)] {
            for aT in [false, true] {
                for bT in [false, true] {
                    for accumulate in [false, true] {
                        let lda = (aT ? m : k) + 3, ldb = (bT ? k : n) + 1, ldc = n + 2
                        let a = (0..<((aT ? k : m) * lda)).map { _ in next() }
                        let b = (0..<((bT ? n : k) * ldb)).map { _ in next() }
                        var c = (0..<(m * ldc)).map { _ in next() }
                        let before = c
                        a.withUnsafeBufferPointer { ap in
                            b.withUnsafeBufferPointer { bp in
                                c.withUnsafeMutableBufferPointer { cp in
                                    gemm(m: m, n: n, k: k, ap.baseAddress!, lda: lda, aTransposed: aT, bp.baseAddress!, ldb: ldb,
                                         bTransposed: bT, cp.baseAddress!, ldc: ldc, accumulate: accumulate)
                                }
                            }
                        }
                        for i in 0..<m {
                            for j in 0..<ldc {
                                var expected = Double(before[i * ldc + j])
                                if j < n {
                                    if !accumulate { expected = 0 }
                                    for p in 0..<k {
                                        let x = aT ? a[p * lda + i] : a[i * lda + p]
                                        let y = bT ? b[j * ldb + p] : b[p * ldb + j]
                                        expected += Double(x) * Double(y)
                                    }
                                }
                                XCTAssertEqual(Double(c[i * ldc + j]), expected, accuracy: 1e-3,
                                               "\(m)×\(n)×\(k) aT \(aT) bT \(bT) acc \(accumulate) [\(i), \(j)]")
                            }
                        }
                    }
                }
            }
        }
    }
}
