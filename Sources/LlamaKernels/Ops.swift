import Foundation

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
/// Rows per task of the float GEMM (whole 3-row tiles) and inputs per block (whole 3-input
/// tiles; the block's rows stay in L2, each input tile in L1 while the task's rows pass it).
let floatRowsPerChunk = 24, floatInputBlock = 24

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

/// Y = X Wᵀ for a batch of input rows (`batch` × `cols`, row b at `x + b * xStride`) and
/// several weight matrices with the same input (q, k, v; gate, up), in one parallel region.
/// Each task takes a tile of weight rows and runs it against every input row, so the weights
/// are read from memory once per batch, not once per token. Formats with integer kernels
/// quantize each input row once (as llama.cpp does).
public func matmul(_ products: [Product], _ x: UnsafePointer<Float>, xStride: Int? = nil, batch: Int, pool: ThreadPool = .shared) {
    guard let first = products.first?.matrix, batch > 0 else { return }
    let cols = first.cols, stride = xStride ?? cols
    if products.contains(where: { $0.matrix.cols != cols || $0.matrix.type.usesQ8Activations != first.type.usesQ8Activations }) {
        for p in products { matmul([p], x, xStride: stride, batch: batch, pool: pool) }
        return
    }
    // Tasks are (product index, first row) with `chunk` rows each. Decoding gives each thread a
    // few long contiguous ranges (each core's prefetcher follows one stream further); batches
    // use short ranges, whose weight tiles are reused by every input row.
    // Chunks are whole 8-row groups (interleaved matrices need it, the 4-row tiles allow it);
    // float batches take 24 rows, whole 3-row tiles.
    let chunk = batch == 1
        ? max(rowsPerChunk, (first.rows / (4 * pool.threadCount) + 7) / 8 * 8)
        : first.type.isFloat ? floatRowsPerChunk : rowsPerChunk
    var tasks: [(Int, Int)] = []
    var work = 0
    for (i, p) in products.enumerated() {
        for r in Swift.stride(from: 0, to: p.matrix.rows, by: chunk) { tasks.append((i, r)) }
        work += p.matrix.rows * cols * batch
    }
    let run = { (body: (Int) -> Void) in
        if work >= 32 * 1024 { pool.parallelFor(tasks.count, body) } else { for t in 0..<tasks.count { body(t) } }
    }
    #if LLAMA_AVX2
    // A batch of one (decoding) reads rows one after another: one sequential stream is what the
    // hardware prefetcher follows best (measured faster than 4 interleaved rows at 576 and 2048
    // columns). Batches take 4-row tiles, which stay in L1 while every input row uses them.
    if first.type.usesQ8Activations {
        let rowScratch = (Q8Activations.byteCount(cols) + 63) / 64 * 64
        withUnsafeTemporaryAllocation(byteCount: rowScratch * batch, alignment: 64) { buffer in
            let xq = (0..<batch).map { Q8Activations(buffer: buffer.baseAddress! + $0 * rowScratch, count: cols) }
            for b in 0..<batch { xq[b].quantize(x + b * stride) }
            run { t in
                let (i, start) = tasks[t]
                let p = products[i], w = p.matrix
                let end = min(start + chunk, w.rows)
                if case .interleaved8(let groupBytes) = w.layout {
                    interleavedProduct(w, groupBytes: groupBytes, rows: start..<end, xq, p.output, p.outputStride)
                    return
                }
                var r = start
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
        return
    }
    #endif
    precondition(products.allSatisfy { $0.matrix.layout == .rowMajor }, "interleaved matrices need the integer kernels")
    let xin = SendablePointer(UnsafeMutablePointer(mutating: x))
    let tiled = first.type.isFloat
    run { t in
        let (i, start) = tasks[t]
        let p = products[i], w = p.matrix
        let end = min(start + chunk, w.rows)
        var r = start
        // 3 rows × 3 inputs per step where the batch allows (measured 1.4× faster than 2×4 tiles,
        // which read 4 input vectors per 8 FMAs from L2; a 4×3 tile needs all 16 ymm registers
        // and LLVM spilled it). Inputs left over (batch % 3) take plain dot products.
        if tiled {
            let tilesEnd = start + (end - start) / 3 * 3
            let triples = batch / 3 * 3
            for blockStart in Swift.stride(from: 0, to: triples, by: floatInputBlock) {
                let blockEnd = min(triples, blockStart + floatInputBlock)
                for bb in Swift.stride(from: blockStart, to: blockEnd, by: 3) {
                    for rt in Swift.stride(from: start, to: tilesEnd, by: 3) {
                        dotTile3x3(w.type, w.data + rt * w.rowBytes, w.rowBytes, xin.pointer + bb * stride, stride, cols,
                                   p.output + bb * p.outputStride + rt, p.outputStride)
                    }
                }
            }
            for rt in start..<tilesEnd {
                for b in triples..<batch {
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

/// RMSNorm [Zhang & Sennrich 2019; LLaMA §2.2]: out = x / sqrt(mean(x²) + eps) * weight.
/// Accumulates in Double so the result matches PyTorch's float32 reduction to within rounding.
public func rmsnorm(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ n: Int, eps: Float) {
    var ss: Double = 0
    for i in 0..<n { ss += Double(x[i]) * Double(x[i]) }
    let scale = Float(1.0 / (ss / Double(n) + Double(eps)).squareRoot())
    for i in 0..<n { out[i] = weight[i] * (x[i] * scale) }
}

/// In-place softmax over `n` values.
public func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
    guard n > 0 else { return }
    var maxValue = x[0]
    for i in 1..<n where x[i] > maxValue { maxValue = x[i] }
    var sum: Float = 0
    for i in 0..<n {
        x[i] = expf(x[i] - maxValue)
        sum += x[i]
    }
    let inv = 1 / sum
    for i in 0..<n { x[i] *= inv }
}

/// SwiGLU gate [Shazeer 2020, eq. 5]: gate = silu(gate) * up, silu(z) = z * sigmoid(z).
public func swiglu(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, _ n: Int) {
    for i in 0..<n {
        let g = gate[i]
        gate[i] = g / (1 + expf(-g)) * up[i]
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

/// Dot product of two Float32 vectors.
@inlinable @inline(__always)
public func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    dotF32(UnsafeRawPointer(a), b, n)
}
