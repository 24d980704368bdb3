import XCTest
import LlamaKernels

/// F16 matrices multiply by the activations rounded to F16, as ggml does (F16's `vec_dot_type`):
/// rounding to nearest even, the same values on every path (decoding's halves, the batch tiles'
/// rounded floats), and only for F16 matrices.
final class HalfActivationTests: XCTestCase {
    /// (input, the binary16 bit pattern IEEE 754 round-to-nearest-even gives)
    static let roundingCases: [(Float, UInt16)] = [
        (1, 0x3C00),
        (1 + 0x1p-11, 0x3C00),      // halfway between 1 and the next half: to the even one, 1
        (1 + 3 * 0x1p-11, 0x3C02),  // halfway between 0x3C01 and 0x3C02: to the even one
        (1 + 0x1p-11 + 0x1p-20, 0x3C01),  // just above halfway: up
        (-2.5, 0xC100),
        (65504, 0x7BFF),            // the largest half
        (65519, 0x7BFF),            // below the halfway point to 65536
        (65520, 0x7C00),            // halfway: to even, which is infinity
        (-1e9, 0xFC00),
        (.infinity, 0x7C00),
        (-0.0, 0x8000),
        (0x1p-24, 0x0001),          // the smallest subnormal
        (0x1p-25, 0x0000),          // halfway to it: to even, zero
        (3 * 0x1p-26, 0x0001),      // above halfway
        (0x1p-14 - 0x1p-25, 0x0400),  // halfway between the largest subnormal and the smallest normal: to even
        (1e-10, 0x0000),
    ]

    func testRoundingIsToNearestEven() {
        // Twice over, offset, so each case goes through both the vector loop and the scalar tail.
        let n = Self.roundingCases.count
        let x = Self.roundingCases.map(\.0) + [0, 0, 0] + Self.roundingCases.map(\.0)
        let expected = Self.roundingCases.map(\.1) + [0, 0, 0] + Self.roundingCases.map(\.1)
        var halves = [UInt16](repeating: 0xFFFF, count: x.count)
        var floats = [Float](repeating: .nan, count: x.count)
        halves.withUnsafeMutableBytes { roundToHalves(x, $0.baseAddress!, x.count) }
        floats.withUnsafeMutableBufferPointer { roundThroughHalves(x, $0.baseAddress!, x.count) }
        for i in 0..<x.count {
            XCTAssertEqual(halves[i], expected[i], "\(x[i]) (case \(i % (n + 3)))")
            XCTAssertEqual(floats[i].bitPattern, Float(Float16(bitPattern: expected[i])).bitPattern, "\(x[i])")
        }
        // NaN stays NaN.
        let nan: [Float] = [.nan]
        halves.withUnsafeMutableBytes { roundToHalves(nan, $0.baseAddress!, 1) }
        XCTAssertTrue(Float16(bitPattern: halves[0]).isNaN)
    }

    private func random(_ count: Int, _ state: inout UInt64, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(state >> 40) % 20001 - 10000) / 10000 * scale
        }
    }

    /// Every path gives the products with the rounded input: decoding's rows (`matvecRows`), a
    /// batch of one and a batch (`matmul`), within float summation of the exact double sum; and
    /// decoding's rows have the bits of the plain F16 dot product of the rounded floats.
    func testEveryPathMultipliesByTheRoundedInput() {
        var state: UInt64 = 7
        for cols in [1, 7, 16, 31, 48, 64, 100, 176, 2072] {
            let rows = 9, batch = 7
            let weights = random(rows * cols, &state)
            // Inputs with 6 decimal digits: rounding them to F16 changes almost every one.
            let inputs = random(batch * cols, &state, scale: 3.7)
            var f16 = [UInt8](repeating: 0, count: rows * cols * 2)
            f16.withUnsafeMutableBytes { out in
                for r in 0..<rows { quantizeRow(.f16, weights.withUnsafeBufferPointer { $0.baseAddress! } + r * cols, cols, out.baseAddress! + r * cols * 2) }
            }
            let rounded = inputs.map { Float(Float16($0)) }
            var batched = [Float](repeating: 0, count: batch * rows)
            var single = [Float](repeating: 0, count: rows)
            var direct = [Float](repeating: 0, count: rows)
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: Activations.byteCount(cols), alignment: 64)
            defer { scratch.deallocate() }
            f16.withUnsafeBytes { raw in
                let m = Matrix(type: .f16, rows: rows, cols: cols, data: raw.baseAddress!)
                batched.withUnsafeMutableBufferPointer { matmul([Product(m, $0.baseAddress!)], inputs, batch: batch) }
                for b in 0..<batch {
                    inputs.withUnsafeBufferPointer { x in
                        matvec(m, x.baseAddress! + b * cols, &single)
                        let a = Activations(x.baseAddress! + b * cols, count: cols, scratch: scratch, for: m)
                        XCTAssertNotNil(a.halves)
                        XCTAssertNil(a.q8)
                        direct.withUnsafeMutableBufferPointer { matvecRows(m, 0..<rows, a, $0.baseAddress!) }
                    }
                    for r in 0..<rows {
                        var expected = 0.0, magnitude = 0.0
                        for k in 0..<cols {
                            let w = Double(Float(Float16(weights[r * cols + k])))
                            expected += w * Double(rounded[b * cols + k])
                            magnitude += abs(w * Double(rounded[b * cols + k]))
                        }
                        let tolerance = 1e-6 * max(1, magnitude)
                        XCTAssertEqual(Double(single[r]), expected, accuracy: tolerance, "\(cols) cols, input \(b), row \(r)")
                        XCTAssertEqual(Double(batched[b * rows + r]), expected, accuracy: tolerance, "\(cols) cols, batch, input \(b), row \(r)")
                        XCTAssertEqual(direct[r].bitPattern, single[r].bitPattern, "\(cols) cols, input \(b), row \(r): matvecRows vs matvec")
                        let plain = rounded.withUnsafeBufferPointer { dot(.f16, raw.baseAddress! + r * cols * 2, $0.baseAddress! + b * cols, cols) }
                        XCTAssertEqual(single[r].bitPattern, plain.bitPattern, "\(cols) cols, input \(b), row \(r): halves vs rounded floats")
                    }
                }
            }
        }
    }

    /// In one matmul call, only the F16 matrix sees the rounded input: an F32 and a BF16 matrix
    /// beside it multiply by the input as it is.
    func testOnlyF16MatricesRound() {
        var state: UInt64 = 3
        let rows = 5, cols = 64
        let weights = random(rows * cols, &state)
        let inputs = random(3 * cols, &state, scale: 2.3)
        let types: [TensorType] = [.f32, .f16, .bf16]
        let data = types.map { type in
            let p = UnsafeMutableRawPointer.allocate(byteCount: rows * cols * 4, alignment: 64)
            weights.withUnsafeBufferPointer { w in
                for r in 0..<rows { quantizeRow(type, w.baseAddress! + r * cols, cols, p + r * cols / type.blockSize * type.blockBytes) }
            }
            return p
        }
        let outputs = types.map { _ in UnsafeMutablePointer<Float>.allocate(capacity: 3 * rows) }
        defer {
            for p in data { p.deallocate() }
            for p in outputs { p.deallocate() }
        }
        let matrices = zip(types, data).map { Matrix(type: $0, rows: rows, cols: cols, data: UnsafeRawPointer($1)) }
        for batch in [1, 3] {
            matmul(zip(matrices, outputs).map { Product($0, $1) }, inputs, batch: batch)
            for (i, m) in matrices.enumerated() {
                var alone = [Float](repeating: 0, count: batch * rows)
                alone.withUnsafeMutableBufferPointer { matmul([Product(m, $0.baseAddress!)], inputs, batch: batch) }
                XCTAssertEqual(Array(UnsafeBufferPointer(start: outputs[i], count: batch * rows)).map(\.bitPattern), alone.map(\.bitPattern),
                               "\(m.type), batch \(batch)")
            }
            // The F32 matrix's products are those of the unrounded input.
            for b in 0..<batch {
                for r in 0..<rows {
                    var exact = 0.0
                    for k in 0..<cols { exact += Double(weights[r * cols + k]) * Double(inputs[b * cols + k]) }
                    XCTAssertEqual(Double(outputs[0][b * rows + r]), exact, accuracy: 1e-5, "F32 row \(r), batch \(batch)")
                }
            }
        }
    }
}
