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

var kernelFlags: [SwiftSetting] = []
if !portable {
    #if arch(x86_64)
    // AVX2 + FMA + F16C (Haswell, 2013, and every later x86-64 server or desktop CPU).
    // LLAMA_AVX2 turns on the integer-intrinsic kernels, which need these flags to compile.
    kernelFlags.append(.unsafeFlags(["-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c", "-DLLAMA_AVX2"]))
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
