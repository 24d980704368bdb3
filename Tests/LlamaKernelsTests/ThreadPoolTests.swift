import XCTest
import Synchronization
import LlamaKernels

final class ThreadPoolTests: XCTestCase {
    func testEveryIndexRunsExactlyOnce() {
        let pool = ThreadPool(threads: 3)
        for n in [1, 2, 7, 100, 1000] {
            // Each index is written by the one thread that runs it, so plain memory suffices.
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: n)
            counts.initialize(repeating: 0, count: n)
            defer { counts.deallocate() }
            let shared = SendablePointer(counts)
            for _ in 0..<50 {
                pool.parallelFor(n) { i in shared.pointer[i] += 1 }
            }
            for i in 0..<n { XCTAssertEqual(counts[i], 50, "n=\(n) i=\(i)") }
        }
    }

    func testWorkersWakeAfterSleeping() {
        let pool = ThreadPool(threads: 2)
        let total = Atomic<Int>(0)
        pool.parallelFor(4) { _ in total.add(1, ordering: .relaxed) }
        usleep(300_000)  // long enough for the workers to go to sleep
        pool.parallelFor(4) { _ in total.add(1, ordering: .relaxed) }
        XCTAssertEqual(total.load(ordering: .relaxed), 8)
    }

    /// `recording` counts regions and their time (bench's decoding profile); setting it again
    /// starts from zero, and a pool that does not record counts nothing.
    func testRecordingCountsRegions() {
        let pool = ThreadPool(threads: 2)
        pool.parallelFor(4) { _ in }
        XCTAssertEqual(pool.record.regions, 0)
        pool.recording = true
        for _ in 0..<3 { pool.parallelFor(4) { _ in usleep(1000) } }
        pool.parallelFor(1) { _ in }  // one task runs inline: not a parallel region
        let r = pool.record
        XCTAssertEqual(r.regions, 3)
        XCTAssertGreaterThanOrEqual(r.nanoseconds, 3 * 2_000_000)  // two tasks of 1 ms per thread
        XCTAssertLessThanOrEqual(r.waitingNanoseconds, r.nanoseconds)
        pool.recording = true
        XCTAssertEqual(pool.record.regions, 0)
        pool.recording = false
    }

    func testLargeMatvecMatchesSerial() {
        let rows = 300, cols = 256
        var w = [Float](repeating: 0, count: rows * cols)
        var rng = SystemRandomNumberGenerator()
        for i in 0..<w.count { w[i] = Float.random(in: -1...1, using: &rng) }
        let x = (0..<cols).map { _ in Float.random(in: -1...1, using: &rng) }
        var y = [Float](repeating: 0, count: rows)
        w.withUnsafeBytes { raw in
            matvec(Matrix(type: .f32, rows: rows, cols: cols, data: raw.baseAddress!), x, &y, pool: ThreadPool(threads: 2))
        }
        for r in 0..<rows {
            var s: Float = 0
            for j in 0..<cols { s += w[r * cols + j] * x[j] }
            XCTAssertEqual(y[r], s, accuracy: 1e-3)
        }
    }
}
