import XCTest
import LlamaKernels

/// Matrices repacked into interleaved 8-row groups give the products and rows the file layout
/// gives (whose kernels QuantTests pins to the references), for one input and for batches
/// that do and do not fill the 4-input tiles.
final class InterleavedTests: XCTestCase {
    /// `rows` × `cols` of smooth pseudo-random values with a few outliers, quantized to `type`.
    func quantizedMatrix(_ type: TensorType, rows: Int, cols: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000
        }
        let rowBytes = type.rowBytes(cols)!
        var bytes = [UInt8](repeating: 0, count: rows * rowBytes)
        if type == .q2_K || type == .q3_K {
            // No encoders for these: random bits, with scales d (and dmin) of a sensible size.
            for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: Int(next() * 1000) + 1000) }
            let (blockBytes, halves) = type == .q2_K ? (84, [80, 82]) : (110, [108])
            for block in stride(from: 0, to: bytes.count, by: blockBytes) {
                for offset in halves {
                    let d = Float16(0.01 + 0.02 * abs(next()))
                    withUnsafeBytes(of: d.bitPattern) { for k in 0..<2 { bytes[block + offset + k] = $0[k] } }
                }
            }
            return bytes
        }
        var row = [Float](repeating: 0, count: cols)
        for r in 0..<rows {
            for j in 0..<cols { row[j] = next() * (j % 37 == 0 ? 4 : 1) + Float(r % 3) * 0.1 }
            bytes.withUnsafeMutableBytes { quantizeRow(type, row, cols, $0.baseAddress! + r * rowBytes) }
        }
        return bytes
    }

    func testInterleavedMatchesRowMajor() throws {
        for (type, cols) in [(TensorType.q8_0, 96), (.q4_0, 96), (.q4_0, 2048), (.q4_1, 576), (.q5_0, 576), (.q5_1, 96),
                            (.q4_K, 512), (.q5_K, 512), (.q6_K, 512), (.q2_K, 512), (.q3_K, 256), (.iq4_nl, 160)] {
            let rows = 24
            let bytes = quantizedMatrix(type, rows: rows, cols: cols, seed: UInt64(cols))
            try bytes.withUnsafeBytes { raw in
                let m = Matrix(type: type, rows: rows, cols: cols, data: raw.baseAddress!)
                guard let (packed, buffer) = m.interleaved() else {
                    throw XCTSkip("no interleaved kernels on this build (portable SIMD path)")
                }
                XCTAssertGreaterThanOrEqual(buffer.byteCount, m.byteCount)
                var a = [Float](repeating: 0, count: cols), b = a
                for r in 0..<rows {
                    m.row(r, into: &a)
                    packed.row(r, into: &b)
                    XCTAssertEqual(a, b, "\(type) row \(r)")
                }
                for batch in [1, 3, 4, 6, 9] {
                    var x = [Float]()
                    for i in 0..<(batch * cols) { x.append(sin(Float(i) * 0.37) * (i % 11 == 0 ? 3 : 1)) }
                    var expected = [Float](repeating: 0, count: batch * rows), found = expected
                    matmul([Product(m, &expected)], x, batch: batch)
                    matmul([Product(packed, &found)], x, batch: batch)
                    for i in 0..<expected.count {
                        XCTAssertEqual(found[i], expected[i], accuracy: 1e-4 * max(1, abs(expected[i])), "\(type) batch \(batch) [\(i)]")
                    }
                    // Every input gets the bits it gets alone, whichever tile it fell in: a
                    // request's tokens must not depend on how many others share its batch.
                    for b in 0..<batch {
                        var alone = [Float](repeating: 0, count: rows)
                        Array(x[(b * cols)..<((b + 1) * cols)]).withUnsafeBufferPointer { xb in
                            matmul([Product(packed, &alone)], xb.baseAddress!, batch: 1)
                        }
                        XCTAssertEqual(Array(found[(b * rows)..<((b + 1) * rows)]), alone, "\(type) batch \(batch) input \(b)")
                    }
                }
            }
        }
    }
}
