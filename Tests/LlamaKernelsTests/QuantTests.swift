import Foundation
import XCTest
import LlamaKernels

/// Block decoding equals the `gguf` package's dequantisation bit for bit, and every kernel's
/// dot product equals the dot product of the decoded row (Tests/Fixtures/quant_cases.json,
/// made by Tools/make_quant_fixtures.py).
final class QuantTests: XCTestCase {
    struct Fixture: Decodable {
        struct Case: Decodable {
            let type: String
            let ggml_type: UInt32
            let rows: Int
            let cols: Int
            let data: String
            let dequantized: [Float]
        }
        let x: [Float]
        let cases: [Case]
    }

    func fixture() throws -> Fixture {
        var dir = URL(fileURLWithPath: #filePath)
        dir.deleteLastPathComponent()
        dir.deleteLastPathComponent()
        let url = dir.appendingPathComponent("Fixtures/quant_cases.json")
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }

    func testDequantizeMatchesGGUFPackage() throws {
        let f = try fixture()
        XCTAssertEqual(f.cases.count, 6)
        for c in f.cases {
            let type = try XCTUnwrap(TensorType(rawValue: c.ggml_type), c.type)
            XCTAssertEqual(type.description, c.type)
            let bytes = [UInt8](try XCTUnwrap(Data(base64Encoded: c.data)))
            XCTAssertEqual(bytes.count, c.rows * type.rowBytes(c.cols)!)
            bytes.withUnsafeBytes { raw in
                let m = Matrix(type: type, rows: c.rows, cols: c.cols, data: raw.baseAddress!)
                var row = [Float](repeating: 0, count: c.cols)
                for r in 0..<c.rows {
                    m.row(r, into: &row)
                    for j in 0..<c.cols {
                        XCTAssertEqual(row[j].bitPattern, c.dequantized[r * c.cols + j].bitPattern,
                                       "\(c.type) row \(r) col \(j): \(row[j]) vs \(c.dequantized[r * c.cols + j])")
                    }
                }
            }
        }
    }

    func testMatvecMatchesDecodedRows() throws {
        let f = try fixture()
        for c in f.cases {
            let type = TensorType(rawValue: c.ggml_type)!
            let bytes = [UInt8](Data(base64Encoded: c.data)!)
            var y = [Float](repeating: 0, count: c.rows)
            bytes.withUnsafeBytes { raw in
                matvec(Matrix(type: type, rows: c.rows, cols: c.cols, data: raw.baseAddress!), f.x, &y)
            }
            for r in 0..<c.rows {
                var expected: Double = 0
                for j in 0..<c.cols { expected += Double(c.dequantized[r * c.cols + j]) * Double(f.x[j]) }
                XCTAssertEqual(Double(y[r]), expected, accuracy: 1e-4 * max(1, abs(expected)), "\(c.type) row \(r)")
            }
        }
    }
}
