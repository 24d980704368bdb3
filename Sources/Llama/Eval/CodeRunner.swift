import Foundation

/// Runs a model-written Python program with its tests, as HumanEval's `check_correctness` does:
/// a separate `python3 -I` process in a fresh temporary directory (deleted afterwards), with a
/// wall-clock timeout, a minimal environment, an address-space limit and sockets disabled. This
/// is a guard against accidents, not a sandbox against a hostile program.
public struct CodeRunner: Sendable {
    public let python: String
    public let timeout: Double

    public init(python: String = "python3", timeout: Double) {
        self.python = python
        self.timeout = timeout
    }

    public struct Outcome: Sendable {
        public var passed: Bool
        /// "passed", "timed out", or the last lines of the program's error output.
        public var output: String
    }

    /// Executed before the program: no network, at most 4 GiB of address space, no core files.
    static let guardPrelude = """
        import resource as _r, socket as _s
        for _lim, _val in ((_r.RLIMIT_AS, 4 << 30), (_r.RLIMIT_CORE, 0)):
            try:
                _r.setrlimit(_lim, (_val, _val))
            except (ValueError, OSError):
                pass
        class _NoSocket(_s.socket):
            def __init__(self, *a, **k):
                raise OSError("network access is disabled while evaluating")
        def _no_network(*a, **k):
            raise OSError("network access is disabled while evaluating")
        _s.socket = _NoSocket
        _s.create_connection = _s.getaddrinfo = _s.socketpair = _no_network
        del _r, _s, _lim, _val

        """

    public func run(_ program: String) throws -> Outcome {
        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("llama-eval-\(UUID().uuidString)")
        try fm.createDirectory(at: dir, withIntermediateDirectories: false)
        defer { try? fm.removeItem(at: dir) }
        let file = dir.appendingPathComponent("program.py")
        try Data((Self.guardPrelude + program + "\n").utf8).write(to: file)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, "-I", "-B", file.path]
        process.currentDirectoryURL = dir
        process.environment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": dir.path,
                               "TMPDIR": dir.path, "LANG": "C.UTF-8"]
        let errors = dir.appendingPathComponent("stderr.txt")
        _ = fm.createFile(atPath: errors.path, contents: nil)
        let errorHandle = try FileHandle(forWritingTo: errors)
        defer { try? errorHandle.close() }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errorHandle
        process.standardInput = FileHandle.nullDevice
        let done = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in done.signal() }
        do { try process.run() } catch {
            throw LlamaError.invalidArgument("cannot run \(python) to test generated code: \(error.localizedDescription)")
        }
        if done.wait(timeout: .now() + timeout) == .timedOut {
            kill(process.processIdentifier, SIGKILL)
            done.wait()
            return Outcome(passed: false, output: "timed out after \(timeout) s")
        }
        if process.terminationStatus == 0 { return Outcome(passed: true, output: "passed") }
        let text = (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
        let tail = text.split(separator: "\n").suffix(3).joined(separator: "\n")
        return Outcome(passed: false, output: tail.isEmpty ? "exit status \(process.terminationStatus)" : tail)
    }
}
