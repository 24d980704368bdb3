import Foundation
import XCTest
import Llama
import LlamaKernels

/// A single token runs through the model in one parallel region, its phases split over the
/// threads (`Transformer.decode`). Its logits must be the bits the per-matmul path gives, on
/// any number of threads, for every weight format and for a mix of them in one model.
final class DecodeRegionTests: XCTestCase {
    /// Memory behind the test's matrices.
    final class Storage {
        var buffers: [UnsafeMutableRawPointer] = []
        func matrix(_ type: TensorType, rows: Int, cols: Int, _ rng: inout SplitMix64) -> Matrix {
            let floats = (0..<(rows * cols)).map { _ in Float(Int(rng.next() % 2001) - 1000) / 10_000 }
            let rowBytes = cols / type.blockSize * type.blockBytes
            let data = UnsafeMutableRawPointer.allocate(byteCount: rows * rowBytes, alignment: 64)
            buffers.append(data)
            floats.withUnsafeBufferPointer { f in
                for r in 0..<rows { quantizeRow(type, f.baseAddress! + r * cols, cols, data + r * rowBytes) }
            }
            return Matrix(type: type, rows: rows, cols: cols, data: UnsafeRawPointer(data))
        }
        deinit { for b in buffers { b.deallocate() } }
    }

    /// Random weights with head dimension 64 and K-quant-sized rows; `types` gives wq, wk, wv,
    /// wo, w1, w2, w3 and the output matrix in turn (cycled).
    static func model(_ types: [TensorType], layers: Int = 2) throws -> Weights {
        let config = ModelConfig(dim: 256, hiddenDim: 512, layerCount: layers, headCount: 8, kvHeadCount: 2, headDim: 64,
                                 vocabSize: 72, contextLength: 32, ropeLayout: .halves)
        let storage = Storage()
        var rng = SplitMix64(seed: 17)
        var next = 0
        func type() -> TensorType { defer { next += 1 }; return types[next % types.count] }
        let norm = { (rng: inout SplitMix64) in (0..<config.dim).map { _ in 0.5 + Float(rng.next() % 100) / 100 } }
        var layerWeights: [LayerWeights] = []
        for _ in 0..<layers {
            let q = config.queryDim, kv = config.kvDim, d = config.dim, h = config.hiddenDim
            layerWeights.append(LayerWeights(
                attentionNorm: norm(&rng),
                wq: storage.matrix(type(), rows: q, cols: d, &rng), wk: storage.matrix(type(), rows: kv, cols: d, &rng),
                wv: storage.matrix(type(), rows: kv, cols: d, &rng), wo: storage.matrix(type(), rows: d, cols: q, &rng),
                ffnNorm: norm(&rng),
                w1: storage.matrix(type(), rows: h, cols: d, &rng), w2: storage.matrix(type(), rows: d, cols: h, &rng),
                w3: storage.matrix(type(), rows: h, cols: d, &rng)))
        }
        let embedding = storage.matrix(.f32, rows: config.vocabSize, cols: config.dim, &rng)
        let output = storage.matrix(type(), rows: config.vocabSize, cols: config.dim, &rng)
        return try Weights(config: config, tokenEmbedding: embedding, layers: layerWeights, norm: norm(&rng), output: output,
                           storage: [storage], source: "test")
    }

    /// Every position's logits of a 20-token sequence decoded one token at a time.
    static func decode(_ weights: Weights, threads: Int, oneRegion: Bool) throws -> [Float] {
        let t = Transformer(weights: weights, contextLength: 32, pool: ThreadPool(threads: threads))
        t.decodesInOneRegion = oneRegion
        var all: [Float] = []
        for (position, token) in [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 3, 2, 38, 4, 6, 26, 43, 3, 71].enumerated() {
            all += try t.forward(token: token, position: position)
        }
        return all
    }

    func check(_ types: [TensorType]) throws {
        let weights = try Self.model(types)
        let reference = try Self.decode(weights, threads: 1, oneRegion: false)
        XCTAssertTrue(reference.allSatisfy(\.isFinite))
        XCTAssertGreaterThan(Set(reference).count, 100, "the logits vary")
        for threads in [1, 2, 3] {
            let logits = try Self.decode(weights, threads: threads, oneRegion: true)
            XCTAssertEqual(logits.map(\.bitPattern), reference.map(\.bitPattern), "\(types), \(threads) threads")
        }
        XCTAssertEqual(try Self.decode(weights, threads: 2, oneRegion: false).map(\.bitPattern), reference.map(\.bitPattern))
    }

    func testFloatFormats() throws {
        try check([.f32])
        try check([.f16, .bf16, .f32])
    }

    func testIntegerFormats() throws {
        for type in [TensorType.q8_0, .q4_0, .q4_1, .q4_K, .q6_K] { try check([type]) }
    }

    /// One model with a different format in each matrix (as Q4_K_M files mix Q4_K and Q6_K),
    /// including float ones next to quantized ones in the same phase.
    func testMixedFormats() throws {
        try check([.q4_K, .q8_0, .q6_K, .q4_0, .q4_1, .q6_K, .f16, .q4_K, .q8_0])
    }

    /// The team's task counter and barriers hand every task out once, in every phase.
    func testTeamForEachAndBarriers() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool(threads: threads)
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: 5 * 37)
            counts.initialize(repeating: 0, count: 5 * 37)
            defer { counts.deallocate() }
            let c = SendablePointer(counts)
            for _ in 0..<3 {
                pool.team { team in
                    for phase in 0..<5 {
                        team.forEach(37) { i in c.pointer[phase * 37 + i] += 1 }
                        team.barrier()
                    }
                }
            }
            XCTAssertEqual(Array(UnsafeBufferPointer(start: counts, count: 5 * 37)), Array(repeating: 3, count: 5 * 37), "\(threads) threads")
        }
    }
}
