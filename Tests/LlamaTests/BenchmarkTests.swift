import XCTest
import Llama
import LlamaKernels

/// `llama bench`'s measurements on a small random model: one speed per repetition, and for
/// generation one read of the model's weights after each repetition, which the bound figures use.
final class BenchmarkTests: XCTestCase {
    func testGenerationReadsTheWeightsBetweenRepetitions() throws {
        let weights = try DecodeRegionTests.model([.q8_0, .f16])
        let bench = Benchmark(weights: weights, pool: ThreadPool(threads: 2))
        let tg = try bench.textGeneration(tokens: 4, repetitions: 3)
        XCTAssertEqual(tg.test, "tg4")
        XCTAssertEqual(tg.tokensPerSecond.count, 3)
        XCTAssertEqual(tg.weightsReadRates.count, 3)
        XCTAssertTrue(tg.weightsReadRates.allSatisfy { $0.isFinite && $0 > 0 })
        let bytes = Double(weights.bytesPerToken)
        let bound = try XCTUnwrap(tg.boundBetweenRepetitions(bytesPerToken: bytes))
        XCTAssertEqual(bound.rate, tg.weightsReadRates.reduce(0, +) / 3, accuracy: bound.rate * 1e-12)
        let expected = (0..<3).map { tg.tokensPerSecond[$0] * bytes / tg.weightsReadRates[$0] }.reduce(0, +) / 3
        XCTAssertEqual(bound.fraction, expected, accuracy: expected * 1e-12)
        // Prompts carry no such reads.
        let pp = try bench.promptProcessing(tokens: 8, repetitions: 2)
        XCTAssertTrue(pp.weightsReadRates.isEmpty)
        XCTAssertNil(pp.boundBetweenRepetitions(bytesPerToken: bytes))
    }
}
