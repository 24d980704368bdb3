import Foundation
import Synchronization

/// A persistent pool of worker threads for short parallel loops (one matvec, one attention
/// layer). Workers spin on an atomic generation counter for a short while, then sleep on a
/// condition variable; the calling thread takes part in the work. `DispatchQueue.concurrentPerform`
/// does not overlap tasks under ~100 µs on the project's VMs (KERNELS.md), which is every
/// matvec of a small model.
public final class ThreadPool: @unchecked Sendable {
    /// Total threads working on a loop, the caller included.
    public let threadCount: Int

    private let generation = Atomic<Int>(0)
    private let nextChunk = Atomic<Int>(0)
    private let unfinished = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private var mutex = pthread_mutex_t()
    private var wake = pthread_cond_t()
    // Written by the caller before `generation` is bumped, read by workers after they see it.
    private var body: ((Int) -> Void)?
    private var chunkCount = 0
    private let callerLock = NSLock()

    /// What `parallelFor` has cost since `recording` was last set (`llama bench --kernels`):
    /// regions run, wall time inside them, and the part of it the calling thread spent waiting
    /// for the others after its own share. Off by default (two clock reads per region).
    public struct Record: Sendable {
        public var regions = 0
        public var nanoseconds = 0
        public var waitingNanoseconds = 0
    }
    public var recording = false {
        didSet { record = Record() }
    }
    public private(set) var record = Record()

    public init(threads: Int) {
        threadCount = max(1, threads)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
        for _ in 1..<threadCount {
            let thread = Thread { [unowned self] in self.workerLoop() }
            thread.start()
        }
    }

    deinit {
        // Pools live for the life of the process in practice; a stopped pool's workers exit.
        stopping.store(true, ordering: .sequentiallyConsistent)
    }

    /// The default pool, one thread per core the process may use.
    public static let shared = ThreadPool(threads: defaultThreadCount())

    /// Cores available to this process (physical cores where /proc/cpuinfo tells them apart).
    public static func defaultThreadCount() -> Int {
        let logical = ProcessInfo.processInfo.activeProcessorCount
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return logical }
        var cores = Set<String>()
        var physical = "0"
        for line in info.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2 else { continue }
            if parts[0] == "physical id" { physical = parts[1] }
            if parts[0] == "core id" { cores.insert(physical + "/" + parts[1]) }
        }
        return cores.isEmpty ? logical : max(1, min(logical, cores.count))
    }

    /// Runs `body(i)` for every `i` in `0..<count`, spread over the pool's threads.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if threadCount == 1 || count == 1 {
            for i in 0..<count { body(i) }
            return
        }
        callerLock.lock()
        defer { callerLock.unlock() }
        let start = recording ? DispatchTime.now().uptimeNanoseconds : 0
        var ownShareDone: UInt64 = 0
        defer {
            if recording {
                let end = DispatchTime.now().uptimeNanoseconds
                record.regions += 1
                record.nanoseconds += Int(end - start)
                record.waitingNanoseconds += Int(end - ownShareDone)
            }
        }
        withoutActuallyEscaping(body) { escaping in
            self.body = escaping
            chunkCount = count
            nextChunk.store(0, ordering: .sequentiallyConsistent)
            unfinished.store(threadCount - 1, ordering: .sequentiallyConsistent)
            generation.add(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(&mutex)
                pthread_cond_broadcast(&wake)
                pthread_mutex_unlock(&mutex)
            }
            runChunks()
            if recording { ownShareDone = DispatchTime.now().uptimeNanoseconds }
            var spins = 0
            while unfinished.load(ordering: .acquiring) > 0 {
                spins += 1
                if spins > 2000 { sched_yield() }
            }
            self.body = nil
        }
    }

    private func runChunks() {
        guard let body else { return }
        while true {
            let i = nextChunk.add(1, ordering: .relaxed).oldValue
            if i >= chunkCount { return }
            body(i)
        }
    }

    private func workerLoop() {
        var seen = 0
        while !stopping.load(ordering: .relaxed) {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins < 20_000 { continue }
                if spins < 40_000 { sched_yield(); continue }
                sleepers.add(1, ordering: .sequentiallyConsistent)
                pthread_mutex_lock(&mutex)
                while generation.load(ordering: .sequentiallyConsistent) == seen {
                    pthread_cond_wait(&wake, &mutex)
                }
                pthread_mutex_unlock(&mutex)
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
            }
            seen = generation.load(ordering: .acquiring)
            runChunks()
            unfinished.subtract(1, ordering: .releasing)
        }
    }
}

/// A pointer that may cross into the pool's closures. Swift 6 rejects capturing
/// `UnsafeMutablePointer` in a `@Sendable` closure; the pool's loops write disjoint ranges.
public struct SendablePointer<T>: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<T>
    public init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}
