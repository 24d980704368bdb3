import Foundation
import Synchronization
#if LLAMA_AVX2
import _Builtin_intrinsics.intel
#endif

/// A weight matrix of `rows` × `cols` in its stored format, row-major (PyTorch's `[out, in]`,
/// ggml's `ne = [cols, rows]`). The memory belongs to whoever made it (usually a mapped file).
public struct Matrix: @unchecked Sendable {
    public let type: TensorType
    public let rows: Int
    public let cols: Int
    public let data: UnsafeRawPointer
    /// Bytes of one row in the file format.
    public let rowBytes: Int
    public let layout: MatrixLayout

    public init(type: TensorType, rows: Int, cols: Int, data: UnsafeRawPointer, layout: MatrixLayout = .rowMajor) {
        precondition(cols % type.blockSize == 0, "row length \(cols) is not a whole number of \(type) blocks")
        self.type = type
        self.rows = rows
        self.cols = cols
        self.data = data
        self.rowBytes = cols / type.blockSize * type.blockBytes
        self.layout = layout
    }

    /// Bytes of the matrix in the file format (what a product reads, give or take the few
    /// bytes an interleaved layout adds).
    public var byteCount: Int { rows * rowBytes }

    /// Decodes row `r` into `dst` (`cols` floats).
    public func row(_ r: Int, into dst: UnsafeMutablePointer<Float>) {
        if layout == .rowMajor {
            dequantizeRow(type, data + r * rowBytes, dst, cols)
        } else {
            withUnsafeTemporaryAllocation(byteCount: rowBytes, alignment: 64) { buffer in
                fileRow(r, into: buffer.baseAddress!)
                dequantizeRow(type, UnsafeRawPointer(buffer.baseAddress!), dst, cols)
            }
        }
    }
}

/// Rows per task handed to the pool: small enough to balance two cores, large enough that
/// scheduling costs nothing next to the arithmetic.
@usableFromInline let rowsPerChunk = 16
/// Rows per task of the float GEMM (whole tiles) and inputs per block (whole tiles; the
/// block's rows stay in L2, each input tile in L1 while the task's rows pass it).
let floatRowsPerChunk = 24, floatInputBlock = 24
/// Rows of the float tile: 3 in 8 lanes (3 × 3 tiles), 4 in 16 (4 × 6 tiles, 4 × 4 for four or
/// five inputs left over); 3, 4 and 6 divide 24.
#if LLAMA_AVX512
let floatTile = 4
#else
let floatTile = 3
#endif

/// One product of a batched matmul: `output[b * outputStride + r]` = row r of `matrix` · x[b].
public struct Product: @unchecked Sendable {
    public let matrix: Matrix
    public let output: UnsafeMutablePointer<Float>
    public let outputStride: Int

    public init(_ matrix: Matrix, _ output: UnsafeMutablePointer<Float>, stride: Int? = nil) {
        self.matrix = matrix
        self.output = output
        outputStride = stride ?? matrix.rows
    }
}

/// y = W x, with W `rows` × `cols` in any supported format, x `cols` floats, y `rows` floats.
public func matvec(_ w: Matrix, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, pool: ThreadPool = .shared) {
    matmul([Product(w, y)], x, batch: 1, pool: pool)
}

extension Matrix {
    /// Where rows `rows` are stored (whole 8-row groups for interleaved matrices).
    public func storage(ofRows rows: Range<Int>) -> UnsafeRawBufferPointer {
        switch layout {
        case .rowMajor:
            return UnsafeRawBufferPointer(start: data + rows.lowerBound * rowBytes, count: rows.count * rowBytes)
        case .interleaved8(let groupBytes):
            let first = rows.lowerBound / 8, end = (rows.upperBound + 7) / 8
            return UnsafeRawBufferPointer(start: data + first * groupBytes, count: (end - first) * groupBytes)
        }
    }
}

/// Memory a thread is about to read, brought into its caches a little at a time while it has
/// nothing else to do (waiting at a barrier): one load per 64-byte line, `step` lines a call.
public struct Preload {
    private var next: UnsafeRawPointer?
    private var end: UnsafeRawPointer?
    private var then: UnsafeRawBufferPointer?
    private var sink: UInt8 = 0

    /// `first`, then `second`, at most `limit` bytes of each.
    public init(_ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer? = nil, limit: Int = 256 << 10) {
        next = first.baseAddress
        end = first.baseAddress.map { $0 + min(first.count, limit) }
        then = second.map { UnsafeRawBufferPointer(start: $0.baseAddress, count: min($0.count, limit)) }
    }

    /// Touches the next `lines` cache lines; false when there is nothing left.
    public mutating func step(lines: Int = 16) -> Bool {
        guard var p = next, let end else { return false }
        var acc = sink
        var n = 0
        while n < lines && p < end {
            acc ^= p.load(as: UInt8.self)
            p += 64
            n += 1
        }
        sink = acc
        if p < end {
            next = p
            return true
        }
        if let then, let base = then.baseAddress {
            next = base
            self.end = base + then.count
            self.then = nil
            return true
        }
        next = nil
        // Keep the loads: the value escapes (it never matters).
        if acc == 0x5A { preloadSink.store(Int(acc), ordering: .relaxed) }
        return false
    }
}

private let preloadSink = Atomic<Int>(0)

extension TensorType {
    /// Whether matmuls with this weight type multiply by the activations rounded to F16, on
    /// every build: ggml does so for F16 weights (F16 is their `vec_dot_type`), as transformers
    /// does in float16. The products of two halves are exact in Float32; decoding reads half the
    /// input bytes.
    public var usesHalfActivations: Bool { self == .f16 }
}

/// One input vector in the forms its matrices multiply by: Float32, quantized to Q8 for the
/// integer kernels (`TensorType.usesQ8Activations`), rounded to F16 for F16 matrices
/// (`usesHalfActivations`). Prepared once per matmul (per thread, in decoding's region).
public struct Activations {
    public let floats: UnsafePointer<Float>
    public let q8: Q8Activations?
    /// (count) Float16 values
    public let halves: UnsafeRawPointer?

    /// Bytes of scratch that `init(_:count:scratch:quantized:halves:)` may use for `count` activations.
    public static func byteCount(_ count: Int) -> Int { (Q8Activations.byteCount(count) + 63) / 64 * 64 + count * 2 }

    /// `x` (count floats), quantized and/or rounded into `scratch` (`byteCount(count)` bytes,
    /// 64-aligned) as asked.
    public init(_ x: UnsafePointer<Float>, count: Int, scratch: UnsafeMutableRawPointer, quantized: Bool, halves: Bool) {
        floats = x
        if quantized {
            let a = Q8Activations(buffer: scratch, count: count)
            a.quantize(x)
            q8 = a
        } else {
            q8 = nil
        }
        if halves {
            let h = scratch + (Q8Activations.byteCount(count) + 63) / 64 * 64
            roundToHalves(x, h, count)
            self.halves = UnsafeRawPointer(h)
        } else {
            self.halves = nil
        }
    }

    /// `x` prepared for `m`, `m2` and `m3` (not variadic: an array per call showed in decoding's
    /// allocations).
    public init(_ x: UnsafePointer<Float>, count: Int, scratch: UnsafeMutableRawPointer, for m: Matrix, _ m2: Matrix? = nil, _ m3: Matrix? = nil) {
        func any(_ wants: (TensorType) -> Bool) -> Bool { wants(m.type) || m2.map { wants($0.type) } == true || m3.map { wants($0.type) } == true }
        self.init(x, count: count, scratch: scratch, quantized: any(\.usesQ8Activations), halves: any(\.usesHalfActivations))
    }
}

/// Rows `rows` of y = W x for one input, written to `y[r]`: a thread's share of a matvec that
/// it runs inside a `ThreadPool.team` region, with the bits `matmul` gives for a batch of one.
/// `x` must be prepared for `w` (`Activations`). Interleaved matrices take whole 8-row groups.
public func matvecRows(_ w: Matrix, _ rows: Range<Int>, _ x: Activations, _ y: UnsafeMutablePointer<Float>) {
    #if LLAMA_AVX2
    if w.type.usesQ8Activations {
        guard var xq = x.q8 else { preconditionFailure("\(w.type) products need quantized activations") }
        if case .interleaved8(let groupBytes) = w.layout {
            withUnsafePointer(to: &xq) { one in
                interleavedProduct(w, groupBytes: groupBytes, rows: rows, UnsafeBufferPointer(start: one, count: 1), y, w.rows)
            }
        } else {
            for r in rows { y[r] = dotQ8(w.type, w.data + r * w.rowBytes, xq) }
        }
        return
    }
    #endif
    precondition(w.layout == .rowMajor, "interleaved matrices need the integer kernels")
    if w.type.usesHalfActivations {
        guard let xh = x.halves else { preconditionFailure("\(w.type) products need activations rounded to F16") }
        for r in rows { y[r] = dotF16Halves(w.data + r * w.rowBytes, xh, w.cols) }
        return
    }
    for r in rows { y[r] = dot(w.type, w.data + r * w.rowBytes, x.floats, w.cols) }
}

/// Y = X Wᵀ for a batch of input rows (`batch` × `cols`, row b at `x + b * xStride`) and
/// several weight matrices with the same input (q, k, v; gate, up), in one parallel region.
/// Each task takes a tile of weight rows and runs it against every input row, so the weights
/// are read from memory once per batch, not once per token. Formats with integer kernels
/// quantize each input row once, and F16 matrices multiply by it rounded to F16, as llama.cpp
/// does both.
public func matmul(_ products: [Product], _ x: UnsafePointer<Float>, xStride: Int? = nil, batch: Int, pool: ThreadPool = .shared) {
    guard let first = products.first?.matrix, batch > 0 else { return }
    let cols = first.cols, stride = xStride ?? cols
    if products.contains(where: {
        $0.matrix.cols != cols || $0.matrix.type.usesQ8Activations != first.type.usesQ8Activations
            || $0.matrix.type.usesHalfActivations != first.type.usesHalfActivations
    }) {
        for p in products { matmul([p], x, xStride: stride, batch: batch, pool: pool) }
        return
    }
    // Tasks are (product index, first row) with `chunk` rows each. Decoding gives each thread
    // one contiguous range of each matrix: one stream its core's prefetcher follows, one
    // claim of the shared task counter (four ranges per thread made the default model's
    // decoding 1.25-1.3× slower: its ranges of ~40 KB each paid a cold stream start and a
    // counter round trip between cores; no change at 1.1B). Batches use short ranges, whose
    // weight tiles are reused by every input row.
    // Interleaved matrices take long ranges at any batch size: each 8-row group (a few KB) stays
    // in L1 while every input row uses it, so short ranges only cost prefetching (16-row chunks
    // made a 4-sequence decoding step read the weights at a third of the single-token rate).
    // Chunks are whole 8-row groups (interleaved matrices need it, the 4-row tiles allow it);
    // float batches take 24 rows, whole 3-row tiles.
    let interleaved = products.allSatisfy { if case .interleaved8 = $0.matrix.layout { true } else { false } }
    let rangesPerThread = batch == 1 ? 1 : 4
    let chunk = batch == 1 || interleaved
        ? max(rowsPerChunk, (first.rows / (rangesPerThread * pool.threadCount) + 7) / 8 * 8)
        : first.type.isFloat ? floatRowsPerChunk : rowsPerChunk
    // Task t is found by walking the products (a handful), not kept in an array: a small
    // model makes some 150 of these calls per token, and each allocation showed in profiles.
    var taskCount = 0, work = 0
    for p in products {
        taskCount += (p.matrix.rows + chunk - 1) / chunk
        work += p.matrix.rows * cols * batch
    }
    @inline(__always) func task(_ t: Int) -> (product: Int, start: Int) {
        var i = 0, t = t
        while true {
            let n = (products[i].matrix.rows + chunk - 1) / chunk
            if t < n { return (i, t * chunk) }
            t -= n
            i += 1
        }
    }
    let run = { (body: (Int) -> Void) in
        if work >= 32 * 1024 { pool.parallelFor(taskCount, body) } else { for t in 0..<taskCount { body(t) } }
    }
    #if LLAMA_AVX2
    // A batch of one (decoding) reads rows one after another: one sequential stream is what the
    // hardware prefetcher follows best (measured faster than 4 interleaved rows at 576 and 2048
    // columns). Batches take 4-row tiles, which stay in L1 while every input row uses them.
    if first.type.usesQ8Activations {
        let rowScratch = (Q8Activations.byteCount(cols) + 63) / 64 * 64
        withUnsafeTemporaryAllocation(byteCount: rowScratch * batch, alignment: 64) { buffer in
            withUnsafeTemporaryAllocation(of: Q8Activations.self, capacity: batch) { activations in
                for b in 0..<batch {
                    activations.initializeElement(at: b, to: Q8Activations(buffer: buffer.baseAddress! + b * rowScratch, count: cols))
                    activations[b].quantize(x + b * stride)
                }
                let xq = UnsafeBufferPointer(activations)
                run { t in
                    let (i, start) = task(t)
                    let p = products[i], w = p.matrix
                    let end = min(start + chunk, w.rows)
                    if case .interleaved8(let groupBytes) = w.layout {
                        interleavedProduct(w, groupBytes: groupBytes, rows: start..<end, xq, p.output, p.outputStride)
                        return
                    }
                    var r = start
                    if w.type.unpacksOncePerFourInputs && batch >= 4 {
                        // One row against four inputs at a time: each block unpacked once per
                        // four inputs, not once per input as in the 4-row tiles.
                        while r < end {
                            let row = w.data + r * w.rowBytes
                            var b = 0
                            while b + 4 <= batch {
                                let v = dotQ8x4(w.type, row, xq[b], xq[b + 1], xq[b + 2], xq[b + 3])
                                for k in 0..<4 { p.output[(b + k) * p.outputStride + r] = v[k] }
                                b += 4
                            }
                            while b < batch {
                                p.output[b * p.outputStride + r] = dotQ8(w.type, row, xq[b])
                                b += 1
                            }
                            r += 1
                        }
                        return
                    }
                    while r + 4 <= end && batch > 1 {
                        for b in 0..<batch {
                            let v = dot4Q8(w.type, w.data + r * w.rowBytes, w.rowBytes, xq[b])
                            let out = p.output + b * p.outputStride + r
                            out[0] = v[0]; out[1] = v[1]; out[2] = v[2]; out[3] = v[3]
                        }
                        r += 4
                    }
                    while r < end {
                        for b in 0..<batch { p.output[b * p.outputStride + r] = dotQ8(w.type, w.data + r * w.rowBytes, xq[b]) }
                        r += 1
                    }
                }
            }
        }
        return
    }
    #endif
    precondition(products.allSatisfy { $0.matrix.layout == .rowMajor }, "interleaved matrices need the integer kernels")
    if first.type.usesHalfActivations {
        if batch == 1 {
            // Decoding: each row against the input's halves (half the bytes of Float32), through
            // `matvecRows`, which decoding's region calls too.
            withUnsafeTemporaryAllocation(byteCount: Activations.byteCount(cols), alignment: 64) { buffer in
                let input = Activations(x, count: cols, scratch: buffer.baseAddress!, quantized: false, halves: true)
                run { t in
                    let (i, start) = task(t)
                    let p = products[i]
                    matvecRows(p.matrix, start..<min(start + chunk, p.matrix.rows), input, p.output)
                }
            }
        } else {
            // Batches: the float tiles, on the inputs rounded through F16.
            withUnsafeTemporaryAllocation(of: Float.self, capacity: batch * cols) { rounded in
                for b in 0..<batch { roundThroughHalves(x + b * stride, rounded.baseAddress! + b * cols, cols) }
                floatProducts(UnsafePointer(rounded.baseAddress!), cols)
            }
        }
        return
    }
    floatProducts(x, stride)

    /// The float formats' products, from inputs `stride` floats apart.
    func floatProducts(_ x: UnsafePointer<Float>, _ stride: Int) {
        let xin = SendablePointer(UnsafeMutablePointer(mutating: x))
        let tiled = first.type.isFloat
        run { t in
            let (i, start) = task(t)
            let p = products[i], w = p.matrix
            let end = min(start + chunk, w.rows)
            var r = start
            // 3 rows × 3 inputs per step where the batch allows (measured 1.4× faster than 2×4 tiles,
            // which read 4 input vectors per 8 FMAs from L2; a 4×3 tile needs all 16 ymm registers
            // and LLVM spilled it); 4 × 6 in 16 lanes with AVX-512 (32 registers). Inputs left over
            // (batch % tile; with AVX-512, below four) take plain dot products.
            if tiled {
                let tilesEnd = start + (end - start) / floatTile * floatTile
                #if LLAMA_AVX512
                // 4 rows × 6 inputs; then 4 × 4 for four or five inputs left over.
                let sixes = batch / 6 * 6
                let whole = batch - sixes >= 4 ? sixes + 4 : sixes
                #else
                let whole = batch / floatTile * floatTile
                #endif
                for blockStart in Swift.stride(from: 0, to: whole, by: floatInputBlock) {
                    let blockEnd = min(whole, blockStart + floatInputBlock)
                    #if LLAMA_AVX512
                    var bb = blockStart
                    while bb < blockEnd {
                        let six = bb + 6 <= sixes
                        for rt in Swift.stride(from: start, to: tilesEnd, by: floatTile) {
                            if six {
                                dotTile4x6(w.type, w.data + rt * w.rowBytes, w.rowBytes, xin.pointer + bb * stride, stride, cols,
                                           p.output + bb * p.outputStride + rt, p.outputStride)
                            } else {
                                dotTile4x4(w.type, w.data + rt * w.rowBytes, w.rowBytes, xin.pointer + bb * stride, stride, cols,
                                           p.output + bb * p.outputStride + rt, p.outputStride)
                            }
                        }
                        bb += six ? 6 : 4
                    }
                    #else
                    for bb in Swift.stride(from: blockStart, to: blockEnd, by: floatTile) {
                        for rt in Swift.stride(from: start, to: tilesEnd, by: floatTile) {
                            dotTile3x3(w.type, w.data + rt * w.rowBytes, w.rowBytes, xin.pointer + bb * stride, stride, cols,
                                       p.output + bb * p.outputStride + rt, p.outputStride)
                        }
                    }
                    #endif
                }
                for rt in start..<tilesEnd {
                    for b in whole..<batch {
                        p.output[b * p.outputStride + rt] = dot(w.type, w.data + rt * w.rowBytes, xin.pointer + b * stride, cols)
                    }
                }
                r = tilesEnd
            }
            for rr in r..<end {
                let row = w.data + rr * w.rowBytes
                for bb in 0..<batch { p.output[bb * p.outputStride + rr] = dot(w.type, row, xin.pointer + bb * stride, cols) }
            }
        }
    }
}

/// RMSNorm [Zhang & Sennrich 2019; LLaMA §2.2]: out = x / sqrt(mean(x²) + eps) * weight.
/// Accumulates in Double so the result matches PyTorch's float32 reduction to within rounding.
public func rmsnorm(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ n: Int, eps: Float) {
    var ss: Double = 0
    var i = 0
    #if LLAMA_AVX2
    // Two sums of four doubles: one scalar sum waits on its own add at every element, and
    // decoding runs two of these per layer on one thread while the others wait. (Squares of
    // floats are exact in double; only the order of the additions differs.)
    var s0 = _mm256_setzero_pd(), s1 = s0
    while i + 8 <= n {
        let a = _mm256_cvtps_pd(UnsafeRawPointer(x + i).loadUnaligned(as: __m128.self))
        let b = _mm256_cvtps_pd(UnsafeRawPointer(x + i + 4).loadUnaligned(as: __m128.self))
        s0 = _mm256_fmadd_pd(a, a, s0)
        s1 = _mm256_fmadd_pd(b, b, s1)
        i += 8
    }
    let s = _mm256_add_pd(s0, s1)  // __m256d is SIMD4<Double>
    ss = (s[0] + s[1]) + (s[2] + s[3])
    #endif
    while i < n { ss += Double(x[i]) * Double(x[i]); i += 1 }
    let scale = Float(1.0 / (ss / Double(n) + Double(eps)).squareRoot())
    let sv = SIMD8<Float>(repeating: scale)
    i = 0
    while i + 8 <= n {
        let v = loadF32x8(weight + i) * (loadF32x8(x + i) * sv)
        UnsafeMutableRawPointer(out + i).storeBytes(of: v, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { out[i] = weight[i] * (x[i] * scale); i += 1 }
}

/// In-place softmax over `n` values.
/// The exponentials come eight at a time from `expf8`, which gives the C library's bits (a call
/// per element was 15% of a 512-token prompt on the default model); the sum stays in element
/// order, so the result is what the scalar loop gave, bit for bit.
public func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
    guard n > 0 else { return }
    let (sum, _) = exponentiate(x, x, n)
    normalize(x, n, 1 / sum)
}

/// `softmax` of two rows of the same length (two heads of a group): the same bits as two
/// calls. The sums must add in element order, one dependent add per element; the two rows'
/// chains run side by side.
public func softmax(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    guard n > 0 else { return }
    let (sx, sy) = exponentiate(x, y, n)
    normalize(x, n, 1 / sx)
    normalize(y, n, 1 / sy)
}

/// The largest of `n` values (the maximum does not depend on the order it is taken in).
@inline(__always)
private func largest(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var i = 0
    var best = x[0]
    if n >= 8 {
        var top = loadF32x8(x)
        i = 8
        while i + 8 <= n {
            #if LLAMA_AVX2
            top = _mm256_max_ps(top, loadF32x8(x + i))
            #else
            top = pointwiseMax(top, loadF32x8(x + i))
            #endif
            i += 8
        }
        best = top[0]
        for k in 1..<8 where top[k] > best { best = top[k] }
    }
    while i < n { if x[i] > best { best = x[i] }; i += 1 }
    return best
}

/// x ← exp(x − max x) and y likewise (in place; `y` may be `x`, then done once), returning the
/// sums in element order.
@inline(__always)
private func exponentiate(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) -> (Float, Float) {
    let two = x != y
    let shiftX = SIMD8<Float>(repeating: largest(x, n)), shiftY = two ? SIMD8<Float>(repeating: largest(y, n)) : shiftX
    var sx: Float = 0, sy: Float = 0
    var i = 0
    while i + 8 <= n {
        let e = expf8(loadF32x8(x + i) - shiftX)
        UnsafeMutableRawPointer(x + i).storeBytes(of: e, as: SIMD8<Float>.self)
        if two {
            let f = expf8(loadF32x8(y + i) - shiftY)
            UnsafeMutableRawPointer(y + i).storeBytes(of: f, as: SIMD8<Float>.self)
            sx += e[0]; sy += f[0]; sx += e[1]; sy += f[1]; sx += e[2]; sy += f[2]; sx += e[3]; sy += f[3]
            sx += e[4]; sy += f[4]; sx += e[5]; sy += f[5]; sx += e[6]; sy += f[6]; sx += e[7]; sy += f[7]
        } else {
            sx += e[0]; sx += e[1]; sx += e[2]; sx += e[3]; sx += e[4]; sx += e[5]; sx += e[6]; sx += e[7]
        }
        i += 8
    }
    if i < n {
        // The tail through expf8 too (padded with the maximum), so where an element falls
        // does not change its value.
        var tx = shiftX, ty = shiftY
        for k in 0..<(n - i) { tx[k] = x[i + k]; ty[k] = y[i + k] }
        let e = expf8(tx - shiftX), f = expf8(ty - shiftY)
        for k in 0..<(n - i) {
            x[i + k] = e[k]; sx += e[k]
            if two { y[i + k] = f[k]; sy += f[k] }
        }
    }
    return (sx, sy)
}

@inline(__always)
private func normalize(_ x: UnsafeMutablePointer<Float>, _ n: Int, _ scale: Float) {
    let v = SIMD8<Float>(repeating: scale)
    var i = 0
    while i + 8 <= n {
        UnsafeMutableRawPointer(x + i).storeBytes(of: loadF32x8(x + i) * v, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { x[i] *= scale; i += 1 }
}

/// SwiGLU gate [Shazeer 2020, eq. 5]: gate = silu(gate) * up, silu(z) = z * sigmoid(z).
/// Eight at a time with `expf8` (libm's scalar `expf` was 13% of a batched decoding step, run
/// while the other threads waited): the scalar formula's bits, as training's forward pass
/// (Backprop.swift) computes them.
public func swiglu(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, _ n: Int) {
    swiglu(into: gate, gate, up, n)
}

/// out = silu(gate) * up, keeping `gate` (training needs it for the backward pass); `out` may
/// be `gate`.
public func swiglu(into out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, _ n: Int) {
    var i = 0
    while i + 8 <= n {
        let g = loadF32x8(gate + i)
        let v = g / (1 + expf8(-g)) * loadF32x8(up + i)
        UnsafeMutableRawPointer(out + i).storeBytes(of: v, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n {
        let g = gate[i]
        out[i] = g / (1 + expf(-g)) * up[i]
        i += 1
    }
}

/// y += a * x
@inlinable @inline(__always)
public func axpy(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>, _ n: Int) {
    let av = SIMD8<Float>(repeating: a)
    var i = 0
    while i + 8 <= n {
        var v = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
        v.addProduct(av, loadF32x8(x + i))
        UnsafeMutableRawPointer(y + i).storeBytes(of: v, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n {
        y[i] += a * x[i]
        i += 1
    }
}

/// Two heads' weighted sums over the same value rows (grouped-query attention): `weightedSum`
/// for each, with each value row loaded once for both and two independent chains of FMAs per
/// column (one chain waited on its own FMA's latency at every row). Same bits as two calls.
public func weightedSums(_ out0: UnsafeMutablePointer<Float>, _ out1: UnsafeMutablePointer<Float>,
                         _ weights0: UnsafePointer<Float>, _ weights1: UnsafePointer<Float>, _ rows: UnsafePointer<Float>,
                         stride: Int, count: Int, n: Int) {
    var j = 0
    #if LLAMA_AVX512
    while j + 64 <= n {
        var a0 = SIMD16<Float>(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0
        for t in 0..<count {
            let u = SIMD16<Float>(repeating: weights0[t]), w = SIMD16<Float>(repeating: weights1[t]), r = rows + t * stride + j
            let v0 = loadF32x16(r), v1 = loadF32x16(r + 16), v2 = loadF32x16(r + 32), v3 = loadF32x16(r + 48)
            a0.addProduct(u, v0); a1.addProduct(u, v1); a2.addProduct(u, v2); a3.addProduct(u, v3)
            b0.addProduct(w, v0); b1.addProduct(w, v1); b2.addProduct(w, v2); b3.addProduct(w, v3)
        }
        let o = UnsafeMutableRawPointer(out0 + j), p = UnsafeMutableRawPointer(out1 + j)
        o.storeBytes(of: a0, as: SIMD16<Float>.self); o.storeBytes(of: a1, toByteOffset: 64, as: SIMD16<Float>.self)
        o.storeBytes(of: a2, toByteOffset: 128, as: SIMD16<Float>.self); o.storeBytes(of: a3, toByteOffset: 192, as: SIMD16<Float>.self)
        p.storeBytes(of: b0, as: SIMD16<Float>.self); p.storeBytes(of: b1, toByteOffset: 64, as: SIMD16<Float>.self)
        p.storeBytes(of: b2, toByteOffset: 128, as: SIMD16<Float>.self); p.storeBytes(of: b3, toByteOffset: 192, as: SIMD16<Float>.self)
        j += 64
    }
    #else
    while j + 32 <= n {
        var a0 = SIMD8<Float>(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0
        for t in 0..<count {
            let u = SIMD8<Float>(repeating: weights0[t]), w = SIMD8<Float>(repeating: weights1[t]), r = rows + t * stride + j
            let v0 = loadF32x8(r), v1 = loadF32x8(r + 8), v2 = loadF32x8(r + 16), v3 = loadF32x8(r + 24)
            a0.addProduct(u, v0); a1.addProduct(u, v1); a2.addProduct(u, v2); a3.addProduct(u, v3)
            b0.addProduct(w, v0); b1.addProduct(w, v1); b2.addProduct(w, v2); b3.addProduct(w, v3)
        }
        let o = UnsafeMutableRawPointer(out0 + j), p = UnsafeMutableRawPointer(out1 + j)
        o.storeBytes(of: a0, as: SIMD8<Float>.self); o.storeBytes(of: a1, toByteOffset: 32, as: SIMD8<Float>.self)
        o.storeBytes(of: a2, toByteOffset: 64, as: SIMD8<Float>.self); o.storeBytes(of: a3, toByteOffset: 96, as: SIMD8<Float>.self)
        p.storeBytes(of: b0, as: SIMD8<Float>.self); p.storeBytes(of: b1, toByteOffset: 32, as: SIMD8<Float>.self)
        p.storeBytes(of: b2, toByteOffset: 64, as: SIMD8<Float>.self); p.storeBytes(of: b3, toByteOffset: 96, as: SIMD8<Float>.self)
        j += 32
    }
    #endif
    if j < n {
        weightedSum(out0 + j, weights0, rows + j, stride: stride, count: count, n: n - j)
        weightedSum(out1 + j, weights1, rows + j, stride: stride, count: count, n: n - j)
    }
}

/// `SIMD4(s0.sum(), s1.sum(), s2.sum(), s3.sum())` with the same bits: `sum()` adds the lanes
/// one after another (lane 0 + lane 1, then + lane 2, …), seven dependent scalar adds with
/// extractions between them, which were most of `scaledDots`' time in a profile. Transposed,
/// the four sums run side by side in one register, in the same order.
@inline(__always)
func sequentialSums(_ s0: SIMD8<Float>, _ s1: SIMD8<Float>, _ s2: SIMD8<Float>, _ s3: SIMD8<Float>) -> SIMD4<Float> {
    #if LLAMA_AVX2
    let lo01 = _mm256_castps_pd(_mm256_unpacklo_ps(s0, s1)), hi01 = _mm256_castps_pd(_mm256_unpackhi_ps(s0, s1))
    let lo23 = _mm256_castps_pd(_mm256_unpacklo_ps(s2, s3)), hi23 = _mm256_castps_pd(_mm256_unpackhi_ps(s2, s3))
    // Column k (lane k of each input) in the low half of ck…, column k + 4 in the high half.
    let c04 = unsafeBitCast(_mm256_unpacklo_pd(lo01, lo23), to: SIMD8<Float>.self)
    let c15 = unsafeBitCast(_mm256_unpackhi_pd(lo01, lo23), to: SIMD8<Float>.self)
    let c26 = unsafeBitCast(_mm256_unpacklo_pd(hi01, hi23), to: SIMD8<Float>.self)
    let c37 = unsafeBitCast(_mm256_unpackhi_pd(hi01, hi23), to: SIMD8<Float>.self)
    var sum = c04.lowHalf + c15.lowHalf
    sum += c26.lowHalf; sum += c37.lowHalf
    sum += c04.highHalf; sum += c15.highHalf; sum += c26.highHalf; sum += c37.highHalf
    return sum
    #else
    return SIMD4(s0.sum(), s1.sum(), s2.sum(), s3.sum())
    #endif
}

/// Attention scores: out[t] = (q · rows[t]) × scale for `count` rows `stride` floats apart, `n`
/// floats each. Four rows at a time share each load of q; every dot sums as `dot` does, so the
/// scores are bit-identical to `dot(q, row, n) * scale`.
public func scaledDots(_ out: UnsafeMutablePointer<Float>, _ q: UnsafePointer<Float>, _ rows: UnsafePointer<Float>,
                       stride: Int, count: Int, n: Int, scale: Float) {
    var t = 0
    let wide = n / 16 * 16
    #if LLAMA_AVX512
    // 16 lanes: lanes 0-7 of an accumulator are the 8-lane loop's `a`, lanes 8-15 its `b`, each
    // summed in the same order, so the scores keep their bits with half the instructions. Eight
    // rows at a time: each accumulator waits on its own FMA once per 16 columns, and eight
    // chains keep both FMA units busy where four left one idle.
    while t + 8 <= count {
        let r0 = rows + t * stride, r1 = r0 + stride, r2 = r1 + stride, r3 = r2 + stride
        let r4 = r3 + stride, r5 = r4 + stride, r6 = r5 + stride, r7 = r6 + stride
        var a0 = SIMD16<Float>(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0
        var i = 0
        while i < wide {
            let qv = loadF32x16(q + i)
            a0.addProduct(loadF32x16(r0 + i), qv); a1.addProduct(loadF32x16(r1 + i), qv)
            a2.addProduct(loadF32x16(r2 + i), qv); a3.addProduct(loadF32x16(r3 + i), qv)
            a4.addProduct(loadF32x16(r4 + i), qv); a5.addProduct(loadF32x16(r5 + i), qv)
            a6.addProduct(loadF32x16(r6 + i), qv); a7.addProduct(loadF32x16(r7 + i), qv)
            i += 16
        }
        var s = sequentialSums(a0.lowHalf + a0.highHalf, a1.lowHalf + a1.highHalf,
                               a2.lowHalf + a2.highHalf, a3.lowHalf + a3.highHalf)
        var u = sequentialSums(a4.lowHalf + a4.highHalf, a5.lowHalf + a5.highHalf,
                               a6.lowHalf + a6.highHalf, a7.lowHalf + a7.highHalf)
        while i < n {
            s += SIMD4(r0[i], r1[i], r2[i], r3[i]) * q[i]
            u += SIMD4(r4[i], r5[i], r6[i], r7[i]) * q[i]
            i += 1
        }
        out[t] = s[0] * scale; out[t + 1] = s[1] * scale; out[t + 2] = s[2] * scale; out[t + 3] = s[3] * scale
        out[t + 4] = u[0] * scale; out[t + 5] = u[1] * scale; out[t + 6] = u[2] * scale; out[t + 7] = u[3] * scale
        t += 8
    }
    while t + 4 <= count {
        let r0 = rows + t * stride, r1 = r0 + stride, r2 = r1 + stride, r3 = r2 + stride
        var a0 = SIMD16<Float>(), a1 = a0, a2 = a0, a3 = a0
        var i = 0
        while i < wide {
            let qv = loadF32x16(q + i)
            a0.addProduct(loadF32x16(r0 + i), qv); a1.addProduct(loadF32x16(r1 + i), qv)
            a2.addProduct(loadF32x16(r2 + i), qv); a3.addProduct(loadF32x16(r3 + i), qv)
            i += 16
        }
        var s = sequentialSums(a0.lowHalf + a0.highHalf, a1.lowHalf + a1.highHalf,
                               a2.lowHalf + a2.highHalf, a3.lowHalf + a3.highHalf)
        while i < n {
            s += SIMD4(r0[i], r1[i], r2[i], r3[i]) * q[i]
            i += 1
        }
        out[t] = s[0] * scale; out[t + 1] = s[1] * scale; out[t + 2] = s[2] * scale; out[t + 3] = s[3] * scale
        t += 4
    }
    #endif
    while t + 4 <= count {
        let r0 = rows + t * stride, r1 = r0 + stride, r2 = r1 + stride, r3 = r2 + stride
        var a0 = SIMD8<Float>(), b0 = SIMD8<Float>(), a1 = SIMD8<Float>(), b1 = SIMD8<Float>()
        var a2 = SIMD8<Float>(), b2 = SIMD8<Float>(), a3 = SIMD8<Float>(), b3 = SIMD8<Float>()
        var i = 0
        while i < wide {
            let qa = loadF32x8(q + i), qb = loadF32x8(q + i + 8)
            a0.addProduct(loadF32x8(r0 + i), qa); b0.addProduct(loadF32x8(r0 + i + 8), qb)
            a1.addProduct(loadF32x8(r1 + i), qa); b1.addProduct(loadF32x8(r1 + i + 8), qb)
            a2.addProduct(loadF32x8(r2 + i), qa); b2.addProduct(loadF32x8(r2 + i + 8), qb)
            a3.addProduct(loadF32x8(r3 + i), qa); b3.addProduct(loadF32x8(r3 + i + 8), qb)
            i += 16
        }
        var s = sequentialSums(a0 + b0, a1 + b1, a2 + b2, a3 + b3)
        while i < n {
            s += SIMD4(r0[i], r1[i], r2[i], r3[i]) * q[i]
            i += 1
        }
        out[t] = s[0] * scale; out[t + 1] = s[1] * scale; out[t + 2] = s[2] * scale; out[t + 3] = s[3] * scale
        t += 4
    }
    while t < count {
        out[t] = dot(rows + t * stride, q, n) * scale
        t += 1
    }
}

/// out = Σₜ weights[t] · rows[t] over `count` rows `stride` floats apart, `n` floats each (the
/// attention-weighted sum of value rows). Thirty-two outputs stay in registers across all rows,
/// where an `axpy` per row loads and stores the whole output each time; each output still sums
/// in row order with fused multiply-adds, as the axpy loop did.
public func weightedSum(_ out: UnsafeMutablePointer<Float>, _ weights: UnsafePointer<Float>, _ rows: UnsafePointer<Float>,
                        stride: Int, count: Int, n: Int) {
    var j = 0
    #if LLAMA_AVX512
    // 64 outputs in four 16-lane registers (a head of 64 in one pass over the rows); each
    // output's sum is the same chain of fused multiply-adds in row order.
    while j + 64 <= n {
        var a0 = SIMD16<Float>(), a1 = a0, a2 = a0, a3 = a0
        for t in 0..<count {
            let w = SIMD16<Float>(repeating: weights[t]), r = rows + t * stride + j
            a0.addProduct(w, loadF32x16(r)); a1.addProduct(w, loadF32x16(r + 16))
            a2.addProduct(w, loadF32x16(r + 32)); a3.addProduct(w, loadF32x16(r + 48))
        }
        let o = UnsafeMutableRawPointer(out + j)
        o.storeBytes(of: a0, as: SIMD16<Float>.self); o.storeBytes(of: a1, toByteOffset: 64, as: SIMD16<Float>.self)
        o.storeBytes(of: a2, toByteOffset: 128, as: SIMD16<Float>.self); o.storeBytes(of: a3, toByteOffset: 192, as: SIMD16<Float>.self)
        j += 64
    }
    #endif
    while j + 32 <= n {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        for t in 0..<count {
            let w = SIMD8<Float>(repeating: weights[t]), r = rows + t * stride + j
            a0.addProduct(w, loadF32x8(r)); a1.addProduct(w, loadF32x8(r + 8))
            a2.addProduct(w, loadF32x8(r + 16)); a3.addProduct(w, loadF32x8(r + 24))
        }
        let o = UnsafeMutableRawPointer(out + j)
        o.storeBytes(of: a0, as: SIMD8<Float>.self); o.storeBytes(of: a1, toByteOffset: 32, as: SIMD8<Float>.self)
        o.storeBytes(of: a2, toByteOffset: 64, as: SIMD8<Float>.self); o.storeBytes(of: a3, toByteOffset: 96, as: SIMD8<Float>.self)
        j += 32
    }
    while j + 8 <= n {
        var a = SIMD8<Float>()
        for t in 0..<count { a.addProduct(SIMD8(repeating: weights[t]), loadF32x8(rows + t * stride + j)) }
        UnsafeMutableRawPointer(out + j).storeBytes(of: a, as: SIMD8<Float>.self)
        j += 8
    }
    while j < n {
        var a: Float = 0
        for t in 0..<count { a += weights[t] * rows[t * stride + j] }
        out[j] = a
        j += 1
    }
}

/// Dot product of two Float32 vectors.
@inlinable @inline(__always)
public func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    dotF32(UnsafeRawPointer(a), b, n)
}
