import Foundation
import Synchronization

/// A persistent pool of worker threads for short parallel loops (one matmul, one attention
/// layer) and for regions where every thread runs the same program with barriers (`team`: a
/// whole decoding step). Workers spin on an atomic generation counter for a short while, then sleep on a
/// condition variable; the calling thread takes part in the work. `DispatchQueue.concurrentPerform`
/// does not overlap tasks under ~100 µs on the project's VMs (KERNELS.md), which is every
/// matvec of a small model.
public final class ThreadPool: @unchecked Sendable {
    /// Total threads working on a loop, the caller included.
    public let threadCount: Int
    /// Whether every thread can have a core of its own (no more threads than the process may
    /// use). `team` regions, whose barriers wait for every thread, need it to be fast.
    public let hasCorePerThread: Bool

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
    /// A team region (`team`): each thread runs `body` once with its own index.
    private var teamRegion = false
    // The team's barrier: threads arrived at the current one, and how many have completed.
    private let arrived = Atomic<Int>(0)
    private let barriers = Atomic<Int>(0)
    // Tasks claimed by `Team.forEach` since the region began.
    private let claimed = Atomic<Int>(0)
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
        hasCorePerThread = threadCount <= ProcessInfo.processInfo.activeProcessorCount
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
        for index in 1..<threadCount {
            let thread = Thread { [unowned self] in self.workerLoop(index: index) }
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
            begin(escaping, chunks: count, team: false)
            runChunks()
            if recording { ownShareDone = DispatchTime.now().uptimeNanoseconds }
            finish()
        }
    }

    /// Runs `body` once on every thread of the pool at the same time, each with its own `Team`
    /// (index 0 is the caller), for work that synchronises inside: a whole decoding step with
    /// barriers between its phases instead of one region per matmul. Every thread must reach
    /// the same barriers in the same order, and `body` must not start another region of this
    /// pool (`parallelFor` or `team`).
    public func team(_ body: (inout Team) -> Void) {
        if threadCount == 1 {
            var team = Team(pool: self, index: 0)
            body(&team)
            return
        }
        callerLock.lock()
        defer { callerLock.unlock() }
        let start = recording ? DispatchTime.now().uptimeNanoseconds : 0
        var team = Team(pool: self, index: 0)
        withoutActuallyEscaping(body) { escaping in
            begin({ index in
                var member = Team(pool: self, index: index)
                escaping(&member)
            }, chunks: threadCount, team: true)
            escaping(&team)
            finish()
        }
        if recording {
            record.regions += 1
            record.nanoseconds += Int(DispatchTime.now().uptimeNanoseconds - start)
            record.waitingNanoseconds += team.waitedNanoseconds
        }
    }

    /// What one thread of a `team` region knows: its index, and the shared barrier and task
    /// counter.
    public struct Team {
        unowned let pool: ThreadPool
        /// This thread's index, 0 (the caller) ..< `count`.
        public let index: Int
        /// Threads in the team.
        public var count: Int { pool.threadCount }
        // Tasks `forEach` has handed out before the current call (every thread counts the same).
        private var claimBase = 0
        fileprivate var waitedNanoseconds = 0

        fileprivate init(pool: ThreadPool, index: Int) {
            self.pool = pool
            self.index = index
        }

        /// Waits until every thread of the team has arrived here, calling `idle` while it
        /// waits (a thread that finished its share early can start loading what it needs next)
        /// until `idle` returns false.
        public mutating func barrier(idle: () -> Bool = { false }) {
            guard count > 1 else { return }
            let start = pool.recording && index == 0 ? DispatchTime.now().uptimeNanoseconds : 0
            defer { if start > 0 { waitedNanoseconds += Int(DispatchTime.now().uptimeNanoseconds - start) } }
            let passed = pool.barriers.load(ordering: .acquiring)
            if pool.arrived.add(1, ordering: .acquiringAndReleasing).newValue == count {
                pool.arrived.store(0, ordering: .relaxed)
                pool.barriers.store(passed + 1, ordering: .releasing)
                return
            }
            // Yield soon: with more threads than free cores, a thread spinning here holds the
            // core of one that has yet to arrive.
            var busy = true, spins = 0
            while pool.barriers.load(ordering: .acquiring) == passed {
                if busy { busy = idle(); continue }
                spins += 1
                if spins > 2000 { sched_yield() }
            }
        }

        /// Runs `body(i)` for every `i` in `0..<n`: thread t starts with task t (so it knows
        /// ahead which one, and can preload for it), then takes whichever is next free. Every
        /// thread of the team must call it with the same `n`, and a barrier must separate two
        /// calls (a thread still looking for work in one must not take the next one's).
        public mutating func forEach(_ n: Int, _ body: (Int) -> Void) {
            if count == 1 { for i in 0..<n { body(i) }; return }
            // The counter moves once per task past the first `count` and once per thread
            // finding none left: max(n, count) in all, the same for every thread to add.
            let base = claimBase
            claimBase += max(n, count)
            if index >= n { _ = pool.claimed.add(1, ordering: .relaxed); return }
            body(index)
            while true {
                let i = pool.claimed.add(1, ordering: .relaxed).oldValue - base + count
                if i >= n { return }
                body(i)
            }
        }

        /// The part of `0..<n` that is this thread's in an even split into whole multiples of
        /// `unit`.
        public func share(_ n: Int, unit: Int = 1) -> Range<Int> {
            let units = (n + unit - 1) / unit
            let lower = min(n, units * index / count * unit), upper = min(n, units * (index + 1) / count * unit)
            return lower..<upper
        }
    }

    /// Hands `body` to the workers (written before `generation` moves; they read it after).
    private func begin(_ body: @escaping (Int) -> Void, chunks: Int, team: Bool) {
        self.body = body
        chunkCount = chunks
        teamRegion = team
        nextChunk.store(0, ordering: .sequentiallyConsistent)
        claimed.store(0, ordering: .sequentiallyConsistent)
        unfinished.store(threadCount - 1, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(&mutex)
            pthread_cond_broadcast(&wake)
            pthread_mutex_unlock(&mutex)
        }
    }

    /// Waits for the workers to finish the region.
    private func finish() {
        var spins = 0
        while unfinished.load(ordering: .acquiring) > 0 {
            spins += 1
            if spins > 2000 { sched_yield() }
        }
        body = nil
    }

    private func runChunks() {
        guard let body else { return }
        while true {
            let i = nextChunk.add(1, ordering: .relaxed).oldValue
            if i >= chunkCount { return }
            body(i)
        }
    }

    private func workerLoop(index: Int) {
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
            if teamRegion { body?(index) } else { runChunks() }
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
