import XCTest
import LlamaKernels

/// `gemmTN` (C += Aᵀ B, the weight-gradient product) against a plain triple loop, for shapes
/// that leave partial tiles, partial tasks and a partial k-block.
final class GemmTests: XCTestCase {
    func testMatchesNaiveProduct() {
        var state: UInt64 = 99
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(state >> 40) % 2001 - 1000) / 1000
        }
        for (m, n, k) in [(5, 7, 3), (52, 40, 300), (100, 33, 513)] {
            let lda = m + 3, ldb = n + 1, ldc = n + 2
            let a = (0..<(k * lda)).map { _ in next() }
            let b = (0..<(k * ldb)).map { _ in next() }
            var c = (0..<(m * ldc)).map { _ in next() }
            let before = c
            a.withUnsafeBufferPointer { ap in
                b.withUnsafeBufferPointer { bp in
                    c.withUnsafeMutableBufferPointer { cp in
                        gemmTN(ap.baseAddress!, lda: lda, bp.baseAddress!, ldb: ldb, cp.baseAddress!, ldc: ldc, m: m, n: n, k: k)
                    }
                }
            }
            for i in 0..<m {
                for j in 0..<ldc {
                    var expected = Double(before[i * ldc + j])
                    if j < n { for p in 0..<k { expected += Double(a[p * lda + i]) * Double(b[p * ldb + j]) } }
                    XCTAssertEqual(Double(c[i * ldc + j]), expected, accuracy: 1e-3, "\(m)×\(n)×\(k) [\(i), \(j)]")
                }
            }
        }
    }
}
