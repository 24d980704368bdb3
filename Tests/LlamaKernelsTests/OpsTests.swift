import Foundation
import XCTest
import LlamaKernels

/// The vectorised element-wise and attention helpers against their plain scalar definitions.
final class OpsTests: XCTestCase {
    func testExp8IsWithinTwoUlpOfExpf() {
        var worst: Float = 0
        var x: Float = -87
        while x < 87.98 {  // every lane below the clamp at 88
            let lanes = SIMD8<Float>((0..<8).map { x + Float($0) * 0.0013 })
            let e = exp8(lanes)
            for i in 0..<8 {
                let reference = expf(lanes[i])
                worst = max(worst, abs(e[i] - reference) / reference)
            }
            x += 0.0137
        }
        XCTAssertLessThan(worst, 2.5e-7)  // 2 ulp = 2.4e-7 relative
        // Beyond the clamp the result stays finite and ordered, as SiLU needs.
        let extremes = exp8(SIMD8(-1000, -100, -88, 0, 1, 88, 100, 1000))
        XCTAssertEqual(extremes[3], 1)
        XCTAssertEqual(extremes[4], expf(1), accuracy: 3e-7)
        for i in 0..<8 { XCTAssertTrue(extremes[i].isFinite && extremes[i] > 0, "\(extremes)") }
    }

    func testSwigluMatchesTheScalarFormula() {
        let n = 45  // five vectors of eight and a tail of five
        var gate = (0..<n).map { Float($0 - 22) * 0.9 }
        let up = (0..<n).map { Float(($0 * 7) % 11) - 5 }
        let expected = zip(gate, up).map { g, u in g / (1 + expf(-g)) * u }
        gate.withUnsafeMutableBufferPointer { g in up.withUnsafeBufferPointer { swiglu(g.baseAddress!, $0.baseAddress!, n) } }
        for i in 0..<n { XCTAssertEqual(gate[i], expected[i], accuracy: 3e-7 * max(1, abs(expected[i])), "element \(i)") }
    }

    func testAttentionHelpersEqualDotAndAxpy() {
        var state: UInt64 = 5
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(state >> 40) % 2001 - 1000) / 1000
        }
        for (n, count, stride) in [(64, 13, 96), (128, 4, 128), (40, 7, 50), (3, 5, 9)] {
            let rows = (0..<(count * stride)).map { _ in next() }
            let q = (0..<n).map { _ in next() }
            let weights = (0..<count).map { _ in next() }
            var scores = [Float](repeating: 0, count: count), out = [Float](repeating: 0, count: n)
            var expectedOut = [Float](repeating: 0, count: n)
            rows.withUnsafeBufferPointer { r in
                q.withUnsafeBufferPointer { qp in
                    scaledDots(&scores, qp.baseAddress!, r.baseAddress!, stride: stride, count: count, n: n, scale: 0.125)
                    for t in 0..<count {
                        XCTAssertEqual(scores[t], dot(qp.baseAddress!, r.baseAddress! + t * stride, n) * 0.125, "n \(n) row \(t)")
                    }
                }
                weights.withUnsafeBufferPointer { w in
                    weightedSum(&out, w.baseAddress!, r.baseAddress!, stride: stride, count: count, n: n)
                    for t in 0..<count { axpy(&expectedOut, w[t], r.baseAddress! + t * stride, n) }
                }
            }
            // Vector lanes fuse the multiply-add as axpy's do; the scalar tail may round once more.
            for j in 0..<n { XCTAssertEqual(out[j], expectedOut[j], accuracy: 1e-6, "n \(n) output \(j)") }
        }
    }
}
