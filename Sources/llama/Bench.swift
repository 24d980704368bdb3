import ArgumentParser
import Foundation
import Llama
import LlamaKernels

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prompt and generation speed, like llama.cpp's llama-bench.",
        discussion: """
            ppN: one batch of N random tokens from an empty cache. tgN: N tokens decoded one at a time \
            from an empty cache. With -d D both start after D random tokens already in the cache \
            (ppN @ dD, tgN @ dD). tgNxS (with --parallel S): S sequences decoded together for N steps, \
            the tokens/s of all of them. Each test runs once to warm up, then -r times; the table shows mean ± \
            standard deviation of tokens/s. Also shown: weight bytes read per generated token, the \
            bandwidth that achieves, the machine's measured read bandwidth (the bound on generation \
            speed), the rate at which the threads read the model's own weights after each tgN \
            repetition (a bound measured beside each run, for machines whose bandwidth moves) and \
            peak resident memory. --json prints llama-bench's JSON fields plus these.
            """)

    @Option(name: [.short, .long], help: "Model file or directory (default: the default model).")
    var model: String?
    @Option(name: .short, help: "Prompt tokens (0 to skip).")
    var p: Int = 128
    @Option(name: .short, help: "Generated tokens (0 to skip).")
    var n: Int = 64
    @Option(name: .short, help: "Threads (default: one per physical core).")
    var t: Int?
    @Option(name: .short, help: "Repetitions.")
    var r: Int = 5
    @Option(name: .short, help: "Depth: random tokens put in the cache before ppN and tgN start (llama-bench's -d; the tests are then named ppN @ dD, tgN @ dD).")
    var d: Int = 0
    @Option(help: "Also decode this many sequences together (test tgNxS: S sequences, N steps; tokens/s of all of them).")
    var parallel: Int?
    @Flag(help: "Print JSON instead of a table.")
    var json = false
    @Flag(help: "Also measure the kernels: matrix-vector bandwidth per weight format (from memory, and in L2 on one thread), the fixed cost of one product, where a decoding step's time goes, and batched matmul GFLOP/s.")
    var kernels = false

    func validate() throws {
        if p < 0 || n < 0 || d < 0 || r < 1 { throw ValidationError("-p, -n and -d must be >= 0, -r >= 1") }
        if let t, t < 1 { throw ValidationError("-t must be >= 1") }
        if let parallel, parallel < 1 { throw ValidationError("--parallel must be >= 1") }
    }

    func run() throws {
        let path = try model ?? DefaultModel.ensure()
        let m = try Model(path: path)
        let pool = t.map { ThreadPool(threads: $0) } ?? .shared
        let bench = Benchmark(weights: m.weights, pool: pool)
        var results: [Benchmark.Result] = []
        if p > 0 { results.append(try bench.promptProcessing(tokens: p, repetitions: r, depth: d)) }
        if n > 0 { results.append(try bench.textGeneration(tokens: n, repetitions: r, depth: d)) }
        if n > 0, let parallel { results.append(try bench.batchedGeneration(tokens: n, sequences: parallel, repetitions: r)) }
        let rss = Benchmark.peakResidentBytes  // before the bandwidth probe's buffer
        let bandwidth = Benchmark.readBandwidth(pool: pool)
        let bytesPerToken = Double(m.weights.bytesPerToken)
        let size = Double(m.weights.byteCount)
        let types = m.weights.matrixTypeSummary
        let file = URL(fileURLWithPath: path).lastPathComponent
        if json {
            let objects: [[String: Any]] = results.map { res in
                var o: [String: Any] = [
                    "model_filename": file, "model_type": "\(m.name) \(types)", "model_size": Int(size),
                    "model_n_params": m.weights.parameterCount, "n_threads": res.threads,
                    "n_prompt": res.test.hasPrefix("pp") ? res.tokens : 0, "n_gen": res.test.hasPrefix("tg") ? res.tokens : 0,
                    "n_sequences": res.sequences, "n_depth": res.depth,
                    "test": res.name, "avg_ts": res.mean, "stddev_ts": res.standardDeviation, "samples_ts": res.tokensPerSecond,
                    "weight_bytes_per_token": Int(bytesPerToken), "read_bandwidth_gbs": bandwidth / 1e9, "peak_rss_bytes": rss,
                ]
                if res.test.hasPrefix("tg") && res.sequences == 1 {
                    o["achieved_gbs"] = res.mean * bytesPerToken / 1e9
                    o["bandwidth_bound_ts"] = bandwidth / bytesPerToken
                    if let (rate, fraction) = res.boundBetweenRepetitions(bytesPerToken: bytesPerToken) {
                        o["weights_read_gbs"] = rate / 1e9
                        o["fraction_of_weights_read"] = fraction
                    }
                }
                return o
            }
            let data = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys])
            emit(String(decoding: data, as: UTF8.self) + "\n")
            return
        }
        let header = "| model | size | params | type | threads | test | t/s |"
        emit(header + "\n| --- | ---: | ---: | --- | ---: | ---: | ---: |\n")
        for res in results {
            emit(String(format: "| %@ | %.2f MiB | %.2f M | %@ | %d | %@ | %.2f ± %.2f |\n",
                        m.name, size / 1048576, Double(m.weights.parameterCount) / 1e6, types, res.threads, res.name,
                        res.mean, res.standardDeviation))
        }
        emit(String(format: "\nweights read per generated token: %.1f MB; machine read bandwidth: %.1f GB/s (bound: %.1f tokens/s)\n",
                    bytesPerToken / 1e6, bandwidth / 1e9, bandwidth / bytesPerToken))
        if let tg = results.first(where: { $0.test.hasPrefix("tg") && $0.sequences == 1 }) {
            emit(String(format: "generation achieves %.1f GB/s, %.0f%% of the bound\n",
                        tg.mean * bytesPerToken / 1e9, 100 * tg.mean * bytesPerToken / bandwidth))
            if let (rate, fraction) = tg.boundBetweenRepetitions(bytesPerToken: bytesPerToken) {
                emit(String(format: "the model's weights read at %.1f GB/s between repetitions: generation achieves %.0f%% of that\n",
                            rate / 1e9, 100 * fraction))
            }
        }
        emit(String(format: "peak resident memory: %.1f MiB\n", Double(rss) / 1048576))
        if kernels {
            for (type, bytesPerSecond) in bench.matvecBandwidth() {
                emit(String(format: "matvec %@: %.1f GB/s\n", type.description, bytesPerSecond / 1e9))
            }
            for (type, bytesPerSecond) in bench.matvecInCacheBandwidth() {
                emit(String(format: "matvec %@ in L2, one thread: %.1f GB/s\n", type.description, bytesPerSecond / 1e9))
            }
            let regionBandwidth = bench.regionReadBandwidth()
            var line = String(format: "the probe read in this model's decoding phases: %.1f GB/s (%.0f%% of its one-stream rate)",
                              regionBandwidth / 1e9, 100 * regionBandwidth / bandwidth)
            if let tg = results.first(where: { $0.test.hasPrefix("tg") && $0.sequences == 1 }) {
                line += String(format: "; generation achieves %.0f%% of it", 100 * tg.mean * bytesPerToken / regionBandwidth)
            }
            emit(line + "\n")
            let profile = try bench.decodingProfile(tokens: max(n, 32))
            emit(String(format: "decoding: %.0f µs per token, %.0f%% in %.0f parallel regions (the caller waiting %.0f%%), %.0f%% on one thread\n",
                        profile.token, 100 * profile.inRegions / profile.token, profile.regions, 100 * profile.waiting / profile.token,
                        100 * (1 - profile.inRegions / profile.token)))
            let structures = try bench.decodingStructures(tokens: max(n, 256))
            emit(String(format: "decoding in one region per token: %.1f tokens/s; a region per matmul: %.1f (alternating, %.2fx)\n",
                        structures.oneRegion, structures.perMatmul, structures.oneRegion / structures.perMatmul))
            emit(String(format: "matvec of one layer's matrices in cache: %.2f µs per product\n", bench.matvecCallMicroseconds()))
            for (type, gflops) in bench.matmulThroughput() {
                emit(String(format: "matmul %@, 128 inputs: %.1f GFLOP/s\n", type.description, gflops))
            }
        }
    }
}
