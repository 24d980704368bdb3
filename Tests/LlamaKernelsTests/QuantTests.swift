import Foundation
import XCTest
import LlamaKernels

/// Block decoding equals the `gguf` package's bit for bit; activations quantize to the same
/// Q8_0 blocks as `gguf`'s; and matvec equals the dot product llama.cpp defines for each format
/// (Tests/Fixtures/quant_cases.json, made by Tools/make_quant_fixtures.py).
final class QuantTests: XCTestCase {
    struct Case: Decodable {
        let type: String
        let ggml_type: UInt32
        let rows: Int
        let cols: Int
        let data: String
        let dequantized: [Float]
        let x: [Float]
        let x_q8_0: String
        let x_q8_0_dequantized: [Float]

        var tensorType: TensorType { TensorType(rawValue: ggml_type)! }
        var bytes: [UInt8] { [UInt8](Data(base64Encoded: data)!) }
    }

    static func cases() throws -> [Case] {
        var dir = URL(fileURLWithPath: #filePath)
        dir.deleteLastPathComponent()
        dir.deleteLastPathComponent()
        struct File: Decodable { let cases: [Case] }
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: dir.appendingPathComponent("Fixtures/quant_cases.json"))).cases
    }

    func testDequantizeMatchesGGUFPackage() throws {
        let all = try Self.cases()
        XCTAssertEqual(all.map(\.type), ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "Q5_0", "Q5_1", "Q5_K", "Q2_K", "Q3_K", "IQ4_NL"])
        for c in all {
            let type = c.tensorType
            XCTAssertEqual(type.description, c.type)
            let bytes = c.bytes
            XCTAssertEqual(bytes.count, c.rows * type.rowBytes(c.cols)!)
            bytes.withUnsafeBytes { raw in
                let m = Matrix(type: type, rows: c.rows, cols: c.cols, data: raw.baseAddress!)
                var row = [Float](repeating: 0, count: c.cols)
                for r in 0..<c.rows {
                    m.row(r, into: &row)
                    for j in 0..<c.cols where row[j].bitPattern != c.dequantized[r * c.cols + j].bitPattern {
                        XCTFail("\(c.type) row \(r) col \(j): \(row[j]) vs \(c.dequantized[r * c.cols + j])")
                        return
                    }
                }
            }
        }
    }

    /// Our activation quantizer writes what ggml's `quantize_row_q8_0` writes: same int8 values,
    /// same scale (rounded to Float16).
    func testActivationQuantizationMatchesGGUFPackage() throws {
        for c in try Self.cases() {
            let expected = [UInt8](Data(base64Encoded: c.x_q8_0)!)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: Q8Activations.byteCount(c.cols), alignment: 64)
            defer { buffer.deallocate() }
            let q8 = Q8Activations(buffer: buffer, count: c.cols)
            c.x.withUnsafeBufferPointer { q8.quantize($0.baseAddress!) }
            for b in 0..<(c.cols / 32) {
                let block = Array(expected[(b * 34)..<(b * 34 + 34)])
                let d = Float(Float16(bitPattern: UInt16(block[0]) | UInt16(block[1]) << 8))
                XCTAssertEqual(q8.d[b], d, "\(c.type) block \(b) scale")
                for j in 0..<32 { XCTAssertEqual(q8.q[b * 32 + j], Int8(bitPattern: block[2 + j]), "\(c.type) block \(b) value \(j)") }
            }
        }
    }

    func testMatvecMatchesReferenceDotProduct() throws {
        for c in try Self.cases() {
            let type = c.tensorType
            var y = [Float](repeating: 0, count: c.rows)
            c.bytes.withUnsafeBytes { raw in matvec(Matrix(type: type, rows: c.rows, cols: c.cols, data: raw.baseAddress!), c.x, &y) }
            // Formats with integer kernels multiply by the Q8_0-quantized activations, F16 by the
            // activations rounded to F16, as llama.cpp does.
            let x = type.usesQ8Activations ? c.x_q8_0_dequantized : type.usesHalfActivations ? c.x.map { Float(Float16($0)) } : c.x
            for r in 0..<c.rows {
                var expected: Double = 0, magnitude: Double = 0
                for j in 0..<c.cols {
                    expected += Double(c.dequantized[r * c.cols + j]) * Double(x[j])
                    magnitude += abs(Double(c.dequantized[r * c.cols + j]) * Double(x[j]))
                }
                // Offsets scaled by Σx are stored as Float16 (q8_1's s), worth ~1e-3 of the terms.
                let tolerance = ([.q4_1, .q5_1, .q4_K, .q5_K].contains(type) ? 2e-3 : 1e-5) * max(1, magnitude)
                XCTAssertEqual(Double(y[r]), expected, accuracy: tolerance, "\(c.type) row \(r)")
            }
        }
    }

    /// The float kernels (`dot`: what a build without the AVX2 flags multiplies with, and what
    /// formats without integer kernels use) give the dequantized row times x, for every format.
    func testFloatKernelsMatchReferenceDotProduct() throws {
        for c in try Self.cases() {
            let type = c.tensorType
            let rowBytes = type.rowBytes(c.cols)!
            c.bytes.withUnsafeBytes { raw in
                for r in 0..<c.rows {
                    let y = dot(type, raw.baseAddress! + r * rowBytes, c.x, c.cols)
                    var expected: Double = 0, magnitude: Double = 0
                    for j in 0..<c.cols {
                        expected += Double(c.dequantized[r * c.cols + j]) * Double(c.x[j])
                        magnitude += abs(Double(c.dequantized[r * c.cols + j]) * Double(c.x[j]))
                    }
                    XCTAssertEqual(Double(y), expected, accuracy: 1e-5 * max(1, magnitude), "\(c.type) row \(r)")
                }
            }
        }
    }
}

/// Our quantizers write the bytes the `gguf` package (ggml's reference quantizers) writes.
final class QuantizeTests: XCTestCase {
    func testQuantizeMatchesGGUFPackage() throws {
        let all = try QuantTests.cases()
        let source = all.first { $0.type == "F32" }!
        let floats: [Float] = source.bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        for c in all where ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"].contains(c.type) {
            let type = c.tensorType
            var out = [UInt8](repeating: 0, count: c.rows * type.rowBytes(c.cols)!)
            out.withUnsafeMutableBytes { dst in
                floats.withUnsafeBufferPointer { x in
                    for r in 0..<c.rows {
                        quantizeRow(type, x.baseAddress! + r * c.cols, c.cols, dst.baseAddress! + r * type.rowBytes(c.cols)!)
                    }
                }
            }
            XCTAssertEqual(out, c.bytes, "\(c.type)")
        }
    }

    func testNonFiniteWeightsDoNotTrap() {
        var x = [Float](repeating: 1, count: 32)
        x[3] = .nan
        x[7] = .infinity
        var out = [UInt8](repeating: 0, count: 34)
        for type in [TensorType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1] {
            out.withUnsafeMutableBytes { quantizeRow(type, x, 32, $0.baseAddress!) }
        }
    }
}

/// The batched path (prompts: 4-row integer tiles, 3×3 float tiles × several inputs) gives what
/// the one-input path gives, for every format, including inputs that do not fill a tile and rows
/// that do not fill one.
final class BatchedMatmulTests: XCTestCase {
    func testBatchEqualsOneInputAtATime() throws {
        for c in try QuantTests.cases() {
            for batch in [2, 6, 7, 8, 10, 13, 16] {  // tiles of 6 and 4 inputs, and inputs left over
                try check(c, batch: batch)
            }
        }
    }

    /// Float rows whose length is not a multiple of the 8-lane vector take the tiles' tail path.
    func testFloatTilesWithRaggedRows() {
        let rows = 7, cols = 37, batch = 5
        var state: UInt64 = 12345
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int(state >> 40) % 2001 - 1000) / 1000
        }
        let weights = (0..<rows * cols).map { _ in next() }
        let inputs = (0..<batch * cols).map { _ in next() }
        var out = [Float](repeating: 0, count: batch * rows)
        weights.withUnsafeBytes { raw in
            let m = Matrix(type: .f32, rows: rows, cols: cols, data: raw.baseAddress!)
            out.withUnsafeMutableBufferPointer { matmul([Product(m, $0.baseAddress!)], inputs, batch: batch) }
        }
        for b in 0..<batch {
            for r in 0..<rows {
                var expected = 0.0
                for k in 0..<cols { expected += Double(weights[r * cols + k]) * Double(inputs[b * cols + k]) }
                XCTAssertEqual(Double(out[b * rows + r]), expected, accuracy: 1e-5, "input \(b) row \(r)")
            }
        }
    }

    private func check(_ c: QuantTests.Case, batch: Int) throws {
        let type = c.tensorType
        let bytes = c.bytes
        var inputs = [Float]()
        for b in 0..<batch { inputs += c.x.map { $0 * Float(b + 1) * (b % 2 == 0 ? 1 : -0.5) } }
        var batched = [Float](repeating: 0, count: batch * c.rows)
        var single = [Float](repeating: 0, count: c.rows)
        bytes.withUnsafeBytes { raw in
            let m = Matrix(type: type, rows: c.rows, cols: c.cols, data: raw.baseAddress!)
            batched.withUnsafeMutableBufferPointer { out in
                matmul([Product(m, out.baseAddress!)], inputs, batch: batch)
            }
            for b in 0..<batch {
                inputs.withUnsafeBufferPointer { matvec(m, $0.baseAddress! + b * c.cols, &single) }
                for r in 0..<c.rows {
                    XCTAssertEqual(batched[b * c.rows + r], single[r], accuracy: 1e-4 * max(1, abs(single[r])),
                                   "\(c.type) batch \(batch) input \(b) row \(r)")
                }
            }
        }
    }
}
