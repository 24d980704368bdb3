import Foundation
import XCTest
import LlamaKernels
import Llama

/// K-quant encoding equals llama.cpp's quantizer, bytes and tensor-type choices
/// (Tests/Fixtures/kquant_cases.json, made by Tools/make_kquant_fixtures.py).
final class KQuantTests: XCTestCase {
    struct Fixture: Decodable {
        struct Case: Decodable {
            let tensor: String
            let type: String
            let cols: Int
            let source_f16: String
            let quantized: String
        }
        let q4_k_m_types: [String: String]
        let cases: [Case]
    }

    func fixture() throws -> Fixture {
        try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/kquant_cases.json")))
    }

    func testEncodingMatchesLlamaCpp() throws {
        let f = try fixture()
        XCTAssertEqual(Set(f.cases.map(\.type)), ["Q4_K", "Q6_K"])
        for c in f.cases {
            let type = try XCTUnwrap(TensorType.allCases.first { $0.description == c.type })
            let halves = [UInt8](Data(base64Encoded: c.source_f16)!)
            let floats = stride(from: 0, to: halves.count, by: 2).map {
                Float(Float16(bitPattern: UInt16(halves[$0]) | UInt16(halves[$0 + 1]) << 8))
            }
            let expected = [UInt8](Data(base64Encoded: c.quantized)!)
            let rowBytes = type.rowBytes(c.cols)!
            var out = [UInt8](repeating: 0, count: expected.count)
            out.withUnsafeMutableBytes { dst in
                floats.withUnsafeBufferPointer { x in
                    for r in 0..<(floats.count / c.cols) {
                        quantizeRow(type, x.baseAddress! + r * c.cols, c.cols, dst.baseAddress! + r * rowBytes)
                    }
                }
            }
            XCTAssertEqual(out, expected, "\(c.tensor) as \(c.type)")
        }
    }

    func testQ4_K_MChoosesTheSameTypesAsLlamaCpp() throws {
        let f = try fixture()
        let recipe = try XCTUnwrap(GGUFExport.Recipe.named("Q4_K_M"))
        for (name, expected) in f.q4_k_m_types {
            let parts = name.split(separator: ".")
            let role = parts.count == 4 ? String(parts[2]) : name.hasPrefix("output") ? "output" : "token_embd"
            let layer = parts.count == 4 ? Int(parts[1])! : 0
            XCTAssertEqual(recipe.type(role: role, layer: layer, layers: 8).description, expected, name)
        }
    }
}
