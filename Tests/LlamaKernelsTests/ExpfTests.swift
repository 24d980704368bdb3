import Foundation
import XCTest
import LlamaKernels

/// `expf8` gives the C library's `expf` bit for bit (on x86-64 Linux it reproduces glibc's
/// algorithm; elsewhere it calls the library), so softmax's vector path moves no probability.
final class ExpfTests: XCTestCase {
    func check(_ values: [Float], file: StaticString = #filePath, line: UInt = #line) {
        var mismatches = 0, first = ""
        var i = 0
        while i + 8 <= values.count {
            var x = SIMD8<Float>()
            for k in 0..<8 { x[k] = values[i + k] }
            let y = expf8(x)
            for k in 0..<8 {
                let want = Foundation.expf(x[k])
                if y[k].bitPattern != want.bitPattern && !(y[k].isNaN && want.isNaN) {
                    if mismatches == 0 { first = "expf(\(x[k].bitPattern)) = \(y[k]), library \(want)" }
                    mismatches += 1
                }
            }
            i += 8
        }
        XCTAssertEqual(mismatches, 0, "of \(values.count): first \(first)", file: file, line: line)
    }

    /// Every 997th float bit pattern: all magnitudes, both signs, subnormals, ±∞, NaNs.
    func testSweepOfAllFloats() {
        var values: [Float] = []
        var bits: UInt64 = 0
        while bits < 1 << 32 {
            values.append(Float(bitPattern: UInt32(bits)))
            bits += 997
        }
        values += [0, -0.0, .infinity, -.infinity, .nan, 88.72283, 88.722839, 88.72284, -103.27892, -103.278923, -103.972, -103.97208, -103.9721]
        while values.count % 8 != 0 { values.append(1) }
        check(values)
    }

    /// Softmax's inputs (x − max ≤ 0): a dense sweep of [−24, 0].
    func testDenseSweepOfSoftmaxRange() {
        var values: [Float] = []
        var bits = (-0.0 as Float).bitPattern
        let end = (-24 as Float).bitPattern
        while bits <= end {
            values.append(Float(bitPattern: bits))
            bits += 131
        }
        while values.count % 8 != 0 { values.append(0) }
        check(values)
    }
}
