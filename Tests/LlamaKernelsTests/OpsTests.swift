import Foundation
import XCTest
import LlamaKernels

/// The vectorised element-wise and attention helpers against their plain scalar definitions.
final class OpsTests: XCTestCase {
    func testSwigluMatchesTheScalarFormula() {
        let n = 45  // five vectors of eight and a tail of five
        var gate = (0..<n).map { Float($0 - 22) * 0.9 }
        let up = (0..<n).map { Float(($0 * 7) % 11) - 5 }
        let expected = zip(gate, up).map { g, u in g / (1 + expf(-g)) * u }
        gate.withUnsafeMutableBufferPointer { g in up.withUnsafeBufferPointer { swiglu(g.baseAddress!, $0.baseAddress!, n) } }
        for i in 0..<n { XCTAssertEqual(gate[i].bitPattern, expected[i].bitPattern, "element \(i): \(gate[i]) against \(expected[i])") }
    }

    /// Softmax's vector path gives the bits of the scalar loop it replaced (expf per element, the
    /// sum in element order), at lengths with and without a tail, with a large spread of inputs.
    func testSoftmaxMatchesTheScalarLoop() {
        for n in [1, 7, 8, 13, 64, 301] {
            let values = (0..<n).map { Float(sin(Double($0) * 1.7)) * 12 + Float($0 % 5) }
            var expected = values
            let top = expected.max()!
            var sum: Float = 0
            for i in 0..<n { expected[i] = expf(expected[i] - top); sum += expected[i] }
            for i in 0..<n { expected[i] *= 1 / sum }
            var found = values
            found.withUnsafeMutableBufferPointer { softmax($0.baseAddress!, n) }
            XCTAssertEqual(found.map(\.bitPattern), expected.map(\.bitPattern), "n = \(n)")
            // Two rows at once give each row's bits.
            var first = values, second = values.reversed().map { $0 * 0.5 }, secondAlone = second
            first.withUnsafeMutableBufferPointer { a in second.withUnsafeMutableBufferPointer { softmax(a.baseAddress!, $0.baseAddress!, n) } }
            secondAlone.withUnsafeMutableBufferPointer { softmax($0.baseAddress!, n) }
            XCTAssertEqual(first.map(\.bitPattern), expected.map(\.bitPattern), "pair, first row, n = \(n)")
            XCTAssertEqual(second.map(\.bitPattern), secondAlone.map(\.bitPattern), "pair, second row, n = \(n)")
        }
    }

    func testAttentionHelpersEqualDotAndAxpy() {
        var state: UInt64 = 5
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(state >> 40) % 2001 - 1000) / 1000
        }
        for (n, count, stride) in [(64, 13, 96), (64, 257, 192), (128, 4, 128), (40, 7, 50), (3, 5, 9)] {
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
            // Two heads over the same rows: each gets the bits it gets alone.
            let otherWeights = weights.map { $0 * 0.5 - 0.25 }
            var pair0 = [Float](repeating: 0, count: n), pair1 = pair0, alone1 = pair0
            rows.withUnsafeBufferPointer { r in
                weights.withUnsafeBufferPointer { w0 in
                    otherWeights.withUnsafeBufferPointer { w1 in
                        weightedSums(&pair0, &pair1, w0.baseAddress!, w1.baseAddress!, r.baseAddress!, stride: stride, count: count, n: n)
                        weightedSum(&alone1, w1.baseAddress!, r.baseAddress!, stride: stride, count: count, n: n)
                    }
                }
            }
            XCTAssertEqual(pair0.map(\.bitPattern), out.map(\.bitPattern), "n \(n) first head")
            XCTAssertEqual(pair1.map(\.bitPattern), alone1.map(\.bitPattern), "n \(n) second head")
        }
    }
}
