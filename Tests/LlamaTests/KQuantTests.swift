import Foundation
import XCTest
import LlamaKernels
import Llama

/// K-quant encoding equals llama.cpp's quantizer, bytes and the tensor types each recipe chooses
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
        /// The types llama.cpp gave each matrix (type name, row length) for one recipe and model.
        struct Types: Decodable {
            let model: String
            let recipe: String
            let layers: Int
            /// Query heads per key/value head.
            let gqa: Int
            let tensors: [String: [Choice]]
        }
        enum Choice: Decodable {
            case name(String), count(Int)
            init(from decoder: Decoder) throws {
                let c = try decoder.singleValueContainer()
                if let n = try? c.decode(Int.self) { self = .count(n) } else { self = .name(try c.decode(String.self)) }
            }
        }
        let types: [Types]
        let cases: [Case]
    }

    func fixture() throws -> Fixture {
        try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/kquant_cases.json")))
    }

    func testEncodingMatchesLlamaCpp() throws {
        let f = try fixture()
        XCTAssertEqual(Set(f.cases.map(\.type)), ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL"])
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

    /// Every recipe llama.cpp also has, on a model with 512-wide rows and on one whose 320- and
    /// 640-wide rows are not whole 256-blocks (K-quants fall back to Q4_0, Q5_0, Q5_1, Q8_0
    /// there); the Q2_K, Q3_K, Q4_K and IQ4_NL mixes also with 4 query heads per key/value head, and on
    /// an 80-layer model with grouped-query attention (llama.cpp's "70B" rule for attn_v).
    func testRecipesChooseTheSameTypesAsLlamaCpp() throws {
        let f = try fixture()
        XCTAssertEqual(Set(f.types.map(\.recipe)), ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
                                                   "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "IQ4_NL"])
        XCTAssertEqual(Set(f.types.map(\.model)), ["512", "320", "512-gqa", "256-80-layers"])
        for entry in f.types {
            let recipe = try XCTUnwrap(GGUFExport.Recipe.named(entry.recipe))
            for (name, choice) in entry.tensors {
                guard case .name(let expected) = choice[0], case .count(let cols) = choice[1] else { return XCTFail("bad fixture entry \(name)") }
                let parts = name.split(separator: ".")
                let role = parts.count == 4 ? String(parts[2]) : name.hasPrefix("output") ? "output" : "token_embd"
                let layer = parts.count == 4 ? Int(parts[1])! : 0
                XCTAssertEqual(recipe.type(role: role, layer: layer, layers: entry.layers, cols: cols, gqa: entry.gqa).description, expected,
                               "\(entry.recipe) on the \(entry.model)-wide model: \(name)")
            }
        }
    }
}
