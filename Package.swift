// swift-tools-version:6.0
import PackageDescription
import Foundation

// Kernels need the CPU's vector instructions to be fast: without these flags every
// `SIMD8.addingProduct` becomes eight calls to `fmaf` and every Float16 conversion a library
// call (see docs/ARCHITECTURE.md, "Build flags"). SwiftPM rejects `unsafeFlags` in a package
// that is depended on by version, so a package that wants llama.swift as a versioned
// dependency sets LLAMA_SWIFT_PORTABLE=1 (portable SIMD code, no target flags) or depends on a
// branch/path, where the flags are allowed.
let portable = ProcessInfo.processInfo.environment["LLAMA_SWIFT_PORTABLE"] != nil

// AVX-512 (F, BW, VL) is used when the machine that builds has it, as llama.cpp's GGML_NATIVE
// does; LLAMA_SWIFT_AVX512=0 or 1 overrides the detection (0 for a binary that must also run on
// AVX2-only CPUs). Linux reports the CPU's features in /proc/cpuinfo; elsewhere the default is off.
func buildMachineCPUFlags() -> Set<String> {
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
    return Set(line.split(separator: " ").map(String.init))
}
let cpuFlags = buildMachineCPUFlags()
let avx512 = ProcessInfo.processInfo.environment["LLAMA_SWIFT_AVX512"].map { $0 != "0" }
    ?? ["avx512f", "avx512bw", "avx512vl"].allSatisfy(cpuFlags.contains)
// VNNI (vpdpbusd: four byte products summed into int32 in one instruction) comes with it on most
// AVX-512 CPUs (Ice Lake, Zen 4 and later); forcing LLAMA_SWIFT_AVX512=1 assumes it too.
let vnni = avx512 && (cpuFlags.contains("avx512_vnni") || ProcessInfo.processInfo.environment["LLAMA_SWIFT_AVX512"] == "1")

var kernelFlags: [SwiftSetting] = []
if !portable {
    #if arch(x86_64)
    // AVX2 + FMA + F16C (Haswell, 2013, and every later x86-64 server or desktop CPU).
    // LLAMA_AVX2 turns on the integer-intrinsic kernels, which need these flags to compile.
    kernelFlags.append(.unsafeFlags(["-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c", "-DLLAMA_AVX2"]))
    if avx512 {
        // LLAMA_AVX512: 16 lanes for float-format weights (Sources/LlamaKernels/Tile512.swift).
        kernelFlags.append(.unsafeFlags(["-Xcc", "-mavx512f", "-Xcc", "-mavx512bw", "-Xcc", "-mavx512vl", "-DLLAMA_AVX512"]))
    }
    if vnni {
        // LLAMA_VNNI: the integer kernels' byte products with vpdpbusd (Interleaved.swift).
        kernelFlags.append(.unsafeFlags(["-Xcc", "-mavx512vnni", "-DLLAMA_VNNI"]))
    }
    #endif
    // `swift test` builds debug by default; unoptimised SIMD loops run 100-300x slower.
    kernelFlags.append(.unsafeFlags(["-O"]))
}

let package = Package(
    name: "llama.swift",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Llama", targets: ["Llama"]),
        .library(name: "LlamaKernels", targets: ["LlamaKernels"]),
        .executable(name: "llama", targets: ["llama"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
    ],
    targets: [
        .target(name: "LlamaKernels", swiftSettings: kernelFlags),
        .target(name: "Llama", dependencies: ["LlamaKernels"], swiftSettings: kernelFlags),
        // The OpenAI-compatible HTTP server (`llama serve`).
        .target(
            name: "LlamaServer",
            dependencies: [
                "Llama",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "llama",
            dependencies: [
                "Llama",
                "LlamaServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .testTarget(name: "LlamaKernelsTests", dependencies: ["LlamaKernels"]),
        .testTarget(name: "LlamaTests", dependencies: ["Llama", "LlamaServer", .product(name: "Logging", package: "swift-log")]),
    ]
)
