import XCTest
import Llama

final class SamplerTests: XCTestCase {
    let logits: [Float] = [1.0, 3.0, 2.5, -1.0, 0.0, 2.9]

    func testGreedyIsArgmax() {
        var s = Sampler(.greedy)
        XCTAssertEqual(s.sample(logits, history: []), 1)
    }

    func testSameSeedSameTokens() {
        var o = SamplingOptions()
        o.temperature = 1.5
        o.topK = 0
        o.topP = 1
        o.minP = 0
        o.seed = 42
        var a = Sampler(o), b = Sampler(o)
        let x = (0..<200).map { _ in a.sample(logits, history: []) }
        let y = (0..<200).map { _ in b.sample(logits, history: []) }
        XCTAssertEqual(x, y)
        XCTAssertGreaterThan(Set(x).count, 3, "a high temperature explores")
        o.seed = 43
        var c = Sampler(o)
        XCTAssertNotEqual(x, (0..<200).map { _ in c.sample(logits, history: []) })
    }

    func testTopKOneAndTopPAndMinPRestrictCandidates() {
        var o = SamplingOptions()
        o.temperature = 5
        o.topK = 1
        var s = Sampler(o)
        XCTAssertTrue((0..<50).allSatisfy { _ in s.sample(logits, history: []) == 1 })
        o.topK = 0
        o.minP = 0
        o.topP = 0.5  // the two best (3.0, 2.9) carry more than half the mass at temperature 1
        s = Sampler(o)
        XCTAssertEqual(Set((0..<200).map { _ in s.sample(logits, history: []) }), [1, 5])
        o.topP = 1
        o.minP = 0.5  // p(2.5)/p(3.0) = 0.61, p(1.0)/p(3.0) = 0.14
        s = Sampler(o)
        XCTAssertEqual(Set((0..<300).map { _ in s.sample(logits, history: []) }), [1, 2, 5])
    }

    func testSamplingFollowsTheDistribution() {
        var o = SamplingOptions()
        o.temperature = 1
        o.topK = 0
        o.topP = 1
        o.minP = 0
        o.seed = 7
        var s = Sampler(o)
        let n = 20000
        var counts = [Int](repeating: 0, count: logits.count)
        for _ in 0..<n { counts[s.sample(logits, history: [])] += 1 }
        let z = logits.map { expf($0) }.reduce(0, +)
        for (i, l) in logits.enumerated() {
            XCTAssertEqual(Double(counts[i]) / Double(n), Double(expf(l) / z), accuracy: 0.015, "token \(i)")
        }
    }

    func testRepeatPenalty() {
        var o = SamplingOptions.greedy
        o.repeatPenalty = 2
        var s = Sampler(o)
        // 3.0 / 2 = 1.5 falls below 2.9 and 2.5.
        XCTAssertEqual(s.sample(logits, history: [1]), 5)
        XCTAssertEqual(s.sample(logits, history: [1, 5]), 2)
        o.repeatLastN = 1
        s = Sampler(o)
        XCTAssertEqual(s.sample(logits, history: [1, 5]), 1, "only the last token is penalised")
    }
}
