// K-quant encoders, following ggml's reference procedure (ggml-quants.c `quantize_row_q2_K_ref`,
// `quantize_row_q3_K_ref`, `quantize_row_q4_K_ref`, `quantize_row_q5_K_ref`, `quantize_row_q6_K_ref`,
// with their helpers `make_qkx2_quants`, `make_q3_quants` and `make_qx_quants`), so that
// files we write hold the same bytes llama.cpp's quantizer writes (without an importance matrix).

/// Round to nearest, ties to even, through the float adder (ggml `nearest_int`).
@inline(__always)
func nearestInt(_ v: Float) -> Int {
    Int(Int32(bitPattern: (v + 12582912).bitPattern) & 0x007F_FFFF) - 0x0040_0000
}

/// Scale and minimum for `n` values with `nmax + 1` levels: a weighted least-squares search over
/// `nstep + 1` candidate scales, errors measured squared or (`absolute`) as absolute values
/// (ggml `make_qkx2_quants`, its `use_mad`). Returns (scale, -min) and fills `levels`.
func fitScaleAndMin(_ x: UnsafePointer<Float>, _ weights: UnsafePointer<Float>, _ n: Int, _ nmax: Int,
                    _ levels: UnsafeMutablePointer<UInt8>, rmin: Float, rdelta: Float, nstep: Int,
                    absolute: Bool = false) -> (Float, Float) {
    @inline(__always) func cost(_ diff: Float) -> Float { absolute ? abs(diff) : diff * diff }
    var lo = x[0], hi = x[0]
    var sumW = weights[0]
    var sumX = sumW * x[0]
    for i in 1..<n {
        if x[i] < lo { lo = x[i] }
        if x[i] > hi { hi = x[i] }
        sumW += weights[i]
        sumX += weights[i] * x[i]
    }
    if lo > 0 { lo = 0 }
    if hi == lo {
        for i in 0..<n { levels[i] = 0 }
        return (0, -lo)
    }
    var iscale = Float(nmax) / (hi - lo)
    var scale = 1 / iscale
    var bestError: Float = 0
    for i in 0..<n {
        let l = max(0, min(nmax, nearestInt(iscale * (x[i] - lo))))
        levels[i] = UInt8(l)
        bestError += weights[i] * cost(scale * Float(l) + lo - x[i])
    }
    var candidate = [UInt8](repeating: 0, count: n)
    for step in 0...nstep {
        iscale = (rmin + rdelta * Float(step) + Float(nmax)) / (hi - lo)
        var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
        for i in 0..<n {
            let l = max(0, min(nmax, nearestInt(iscale * (x[i] - lo))))
            candidate[i] = UInt8(l)
            let w = weights[i]
            sumL += w * Float(l)
            sumL2 += w * Float(l) * Float(l)
            sumXL += w * Float(l) * x[i]
        }
        let det = sumW * sumL2 - sumL * sumL
        guard det > 0 else { continue }
        var thisScale = (sumW * sumXL - sumX * sumL) / det
        var thisMin = (sumL2 * sumX - sumL * sumXL) / det
        if thisMin > 0 {
            thisMin = 0
            thisScale = sumXL / sumL2
        }
        var error: Float = 0
        for i in 0..<n {
            error += weights[i] * cost(thisScale * Float(candidate[i]) + thisMin - x[i])
        }
        if error < bestError {
            for i in 0..<n { levels[i] = candidate[i] }
            bestError = error
            scale = thisScale
            lo = thisMin
        }
    }
    return (scale, -lo)
}

/// The value of largest magnitude in `x` (the first of equals), or nil when every |x| is below
/// 1e-15; then `levels` are all zero (ggml's `GROUP_MAX_EPS` case).
private func largestValue(_ x: UnsafePointer<Float>, _ n: Int, _ levels: UnsafeMutablePointer<Int8>) -> Float? {
    var maxValue: Float = 0, amax: Float = 0
    for i in 0..<n where abs(x[i]) > amax {
        amax = abs(x[i])
        maxValue = x[i]
    }
    if amax >= 1e-15 { return maxValue }
    for i in 0..<n { levels[i] = 0 }
    return nil
}

/// Levels l = nearestInt(iscale·x) within [-nmax, nmax-1], each passed to `store` with its
/// index, and their x²-weighted sums (Σw·x·l, Σw·l²).
@inline(__always)
private func symmetricLevels(_ x: UnsafePointer<Float>, _ n: Int, _ nmax: Int, _ iscale: Float,
                             _ store: (Int, Int) -> Void = { _, _ in }) -> (sumLX: Float, sumL2: Float) {
    var sumLX: Float = 0, sumL2: Float = 0
    for i in 0..<n {
        let l = max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))
        store(i, l)
        let w = x[i] * x[i]
        sumLX += w * x[i] * Float(l)
        sumL2 += w * Float(l) * Float(l)
    }
    return (sumLX, sumL2)
}

/// Symmetric scale for `n` values in [-nmax, nmax-1], weighted by x² (ggml `make_qx_quants` with
/// rmse_type 1). Fills `levels` with l + nmax.
func fitSymmetricScale(_ x: UnsafePointer<Float>, _ n: Int, _ nmax: Int, _ levels: UnsafeMutablePointer<Int8>) -> Float {
    guard let maxValue = largestValue(x, n, levels) else { return 0 }
    var (sumLX, sumL2) = symmetricLevels(x, n, nmax, -Float(nmax) / maxValue) { levels[$0] = Int8($1 + nmax) }
    var scale = sumL2 != 0 ? sumLX / sumL2 : 0
    var best = scale * sumLX
    for step in -9...9 where step != 0 {
        let iscale = -(Float(nmax) + 0.1 * Float(step)) / maxValue
        (sumLX, sumL2) = symmetricLevels(x, n, nmax, iscale)
        if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
            _ = symmetricLevels(x, n, nmax, iscale) { levels[$0] = Int8($1 + nmax) }
            scale = sumLX / sumL2
            best = scale * sumLX
        }
    }
    return scale
}

/// Symmetric scale for `n` values in [-nmax, nmax-1], refined by moving single levels while that
/// improves the x²-weighted fit, at most five rounds (ggml `make_q3_quants` with `do_rmse`).
/// Fills `levels` with l + nmax.
func fitSymmetricScaleByLevels(_ x: UnsafePointer<Float>, _ n: Int, _ nmax: Int, _ levels: UnsafeMutablePointer<Int8>) -> Float {
    guard let maxValue = largestValue(x, n, levels) else { return 0 }
    var (sumLX, sumL2) = symmetricLevels(x, n, nmax, -Float(nmax) / maxValue) { levels[$0] = Int8($1) }
    for _ in 0..<5 {
        var changed = 0
        for i in 0..<n {
            let w = x[i] * x[i], old = Float(levels[i])
            var slx = sumLX - w * x[i] * old
            guard slx > 0 else { continue }
            var sl2 = sumL2 - w * old * old
            let new = max(-nmax, min(nmax - 1, nearestInt(x[i] * sl2 / slx)))
            guard new != Int(levels[i]) else { continue }
            slx += w * x[i] * Float(new)
            sl2 += w * Float(new) * Float(new)
            if sl2 > 0 && slx * slx * sumL2 > sumLX * sumLX * sl2 {
                levels[i] = Int8(new)
                sumLX = slx
                sumL2 = sl2
                changed += 1
            }
        }
        if changed == 0 { break }
    }
    for i in 0..<n { levels[i] += Int8(nmax) }
    return sumL2 > 0 ? sumLX / sumL2 : 0
}

/// Q2_K and Q3_K store their 2-bit fields alike: levels[128h + 32j + l] at bits 2j of
/// qs[32h + l] (`at` the offset of qs).
private func store2BitFields(_ levels: [UInt8], _ out: UnsafeMutableRawPointer, at: Int) {
    for h in 0..<2 {
        for l in 0..<32 {
            let b = 128 * h + l
            let byte = levels[b] | levels[b + 32] << 2 | levels[b + 64] << 4 | levels[b + 96] << 6
            out.storeBytes(of: byte, toByteOffset: at + 32 * h + l, as: UInt8.self)
        }
    }
}

/// The 256 / `size` sub-blocks of a super-block, each fitted with a scale and a minimum
/// (`fitScaleAndMin`, weights from `weigh`; levels into `levels`), and the largest of each.
private func fitScalesAndMins(_ x: UnsafePointer<Float>, _ levels: inout [UInt8], size: Int, nmax: Int, rmin: Float, nstep: Int,
                              absolute: Bool = false, weigh: (UnsafePointer<Float>, inout [Float]) -> Void)
    -> (scales: [Float], mins: [Float], maxScale: Float, maxMin: Float) {
    let count = 256 / size
    var scales = [Float](repeating: 0, count: count), mins = scales
    var weights = [Float](repeating: 0, count: size)
    var maxScale: Float = 0, maxMin: Float = 0
    levels.withUnsafeMutableBufferPointer { L in
        for j in 0..<count {
            let xs = x + size * j
            weigh(xs, &weights)
            (scales[j], mins[j]) = weights.withUnsafeBufferPointer {
                fitScaleAndMin(xs, $0.baseAddress!, size, nmax, L.baseAddress! + size * j,
                               rmin: rmin, rdelta: 0.1, nstep: nstep, absolute: absolute)
            }
            maxScale = max(maxScale, scales[j])
            maxMin = max(maxMin, mins[j])
        }
    }
    return (scales, mins, maxScale, maxMin)
}

/// One Q2_K super-block (256 values → 84 bytes; ggml `quantize_row_q2_K_ref`): sixteen
/// sub-blocks of 16 with a 4-bit scale and minimum each, fitted by least absolute deviation
/// weighted by |x|, as multiples of the super-block's d and dmin.
func quantizeQ2_K(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
    var levels = [UInt8](repeating: 0, count: 256)
    let (scales, mins, maxScale, maxMin) = fitScalesAndMins(x, &levels, size: 16, nmax: 3, rmin: -0.5, nstep: 15, absolute: true) { xs, w in
        for l in 0..<16 { w[l] = abs(xs[l]) }
    }
    var packed = [UInt8](repeating: 0, count: 16)
    var d: Float16 = 0, dmin: Float16 = 0
    if maxScale > 0 {
        let iscale = 15 / maxScale
        for j in 0..<16 { packed[j] = UInt8(truncatingIfNeeded: nearestInt(iscale * scales[j])) }
        d = Float16(maxScale / 15)
    }
    if maxMin > 0 {
        let iscale = 15 / maxMin
        for j in 0..<16 { packed[j] |= UInt8(truncatingIfNeeded: nearestInt(iscale * mins[j]) << 4) }
        dmin = Float16(maxMin / 15)
    }
    for j in 0..<16 {
        let dj = Float(d) * Float(packed[j] & 0xF)
        if dj == 0 { continue }
        let mj = Float(dmin) * Float(packed[j] >> 4)
        for i in 0..<16 { levels[16 * j + i] = UInt8(max(0, min(3, nearestInt((x[16 * j + i] + mj) / dj)))) }
    }
    for j in 0..<16 { out.storeBytes(of: packed[j], toByteOffset: j, as: UInt8.self) }
    store2BitFields(levels, out, at: 16)
    out.storeBytes(of: d.bitPattern, toByteOffset: 80, as: UInt16.self)
    out.storeBytes(of: dmin.bitPattern, toByteOffset: 82, as: UInt16.self)
}

/// The sixteen sub-blocks of 16 of a super-block, each fitted by `fit` (its levels into
/// `levels`), and the scale of largest magnitude (the first of equals) with that magnitude.
private func fitSixteenScales(_ x: UnsafePointer<Float>, _ levels: inout [Int8],
                              _ fit: (UnsafePointer<Float>, UnsafeMutablePointer<Int8>) -> Float) -> ([Float], Float, Float) {
    var scales = [Float](repeating: 0, count: 16)
    var largest: Float = 0, magnitude: Float = 0
    levels.withUnsafeMutableBufferPointer { L in
        for j in 0..<16 {
            scales[j] = fit(x + 16 * j, L.baseAddress! + 16 * j)
            if abs(scales[j]) > magnitude {
                magnitude = abs(scales[j])
                largest = scales[j]
            }
        }
    }
    return (scales, largest, magnitude)
}

/// One Q3_K super-block (256 values → 110 bytes; ggml `quantize_row_q3_K_ref`): sixteen
/// sub-blocks of 16 with a signed 6-bit scale each, levels −4...3 whose third bit goes to hmask.
func quantizeQ3_K(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
    var levels = [Int8](repeating: 0, count: 256)
    let (scales, maxScale, _) = fitSixteenScales(x, &levels) { fitSymmetricScaleByLevels($0, 16, 4, $1) }
    out.initializeMemory(as: UInt8.self, repeating: 0, count: 110)
    var d: Float16 = 0
    if maxScale != 0 {
        let iscale = -32 / maxScale
        // The 6-bit values sc + 32, packed as `q3KScales` unpacks them.
        for j in 0..<16 {
            let l = UInt8(Int(max(-32, min(31, Int8(truncatingIfNeeded: nearestInt(iscale * scales[j]))))) + 32)
            let low = j < 8 ? 96 + j : 96 + j - 8
            let old = out.load(fromByteOffset: low, as: UInt8.self)
            out.storeBytes(of: old | (j < 8 ? l & 0xF : (l & 0xF) << 4), toByteOffset: low, as: UInt8.self)
            let high = 104 + j % 4
            out.storeBytes(of: out.load(fromByteOffset: high, as: UInt8.self) | (l >> 4) << (2 * (j / 4)), toByteOffset: high, as: UInt8.self)
        }
        d = Float16(1 / iscale)
    }
    let sc = q3KScales(out + 96)
    for j in 0..<16 {
        let dj = Float(d) * Float(sc[j])
        if dj == 0 { continue }
        for i in 0..<16 { levels[16 * j + i] = Int8(max(-4, min(3, nearestInt(x[16 * j + i] / dj))) + 4) }
    }
    // Element e's third bit goes to bit e / 32 of hmask[e % 32].
    var fields = [UInt8](repeating: 0, count: 256)
    for e in 0..<256 {
        var l = UInt8(levels[e])
        if l > 3 {
            let m = e % 32
            out.storeBytes(of: out.load(fromByteOffset: m, as: UInt8.self) | 1 << (e / 32), toByteOffset: m, as: UInt8.self)
            l -= 4
        }
        fields[e] = l
    }
    store2BitFields(fields, out, at: 32)
    out.storeBytes(of: d.bitPattern, toByteOffset: 108, as: UInt16.self)
}

/// The index of the level nearest `x` in the sorted `levels` (ggml `best_index_int8`; a tie
/// goes to the upper level).
private func nearestLevel(_ levels: SIMD16<Int8>, _ x: Float) -> Int {
    if x <= Float(levels[0]) { return 0 }
    if x >= Float(levels[15]) { return 15 }
    var lo = 0, hi = 15
    while hi - lo > 1 {
        let mid = (lo + hi) / 2
        if x < Float(levels[mid]) { hi = mid } else { lo = mid }
    }
    return x - Float(levels[hi - 1]) < Float(levels[hi]) - x ? hi - 1 : hi
}

/// One IQ4_NL block (32 values → 18 bytes; ggml `quantize_row_iq4_nl_ref`, which is
/// `quantize_row_iq4_nl_impl` with one block per super-block, no importance weights and 7
/// tries): d fitted to x²-weighted least squares over the 16 nonlinear levels, trying the
/// scales that put the block's extreme value on each of 15 nearby level positions.
func quantizeIQ4_NL(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
    let levels = iq4nlLevels, ntry = 7
    var amax: Float = 0, maxValue: Float = 0
    for j in 0..<32 where abs(x[j]) > amax {
        amax = abs(x[j])
        maxValue = x[j]
    }
    var scale: Float = 0
    if amax >= 1e-15 {
        var id = 1 / (-maxValue / Float(levels[0]))
        var sumQX: Float = 0, sumQ2: Float = 0
        for j in 0..<32 {
            let q = Float(levels[nearestLevel(levels, id * x[j])]), w = x[j] * x[j]
            sumQX += w * q * x[j]
            sumQ2 += w * q * q
        }
        scale = sumQ2 > 0 ? sumQX / sumQ2 : 0
        var best = scale * sumQX
        for attempt in -ntry...ntry {
            id = (Float(attempt) + Float(levels[0])) / maxValue
            sumQX = 0
            sumQ2 = 0
            for j in 0..<32 {
                let q = Float(levels[nearestLevel(levels, id * x[j])]), w = x[j] * x[j]
                sumQX += w * q * x[j]
                sumQ2 += w * q * q
            }
            if sumQ2 > 0 && sumQX * sumQX > best * sumQ2 {
                scale = sumQX / sumQ2
                best = scale * sumQX
            }
        }
    }
    out.storeBytes(of: Float16(scale).bitPattern, as: UInt16.self)
    // The levels again from the unrounded scale (ggml does the same).
    let id: Float = scale != 0 ? 1 / scale : 0
    for j in 0..<16 {
        let l0 = UInt8(nearestLevel(levels, id * x[j])), l1 = UInt8(nearestLevel(levels, id * x[j + 16]))
        out.storeBytes(of: l0 | l1 << 4, toByteOffset: 2 + j, as: UInt8.self)
    }
}

/// One Q4_K super-block (256 values → 144 bytes).
func quantizeQ4_K(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
    quantizeScaleMinK(x, out, bits: 4)
}

/// One Q5_K super-block (256 values → 176 bytes).
func quantizeQ5_K(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
    quantizeScaleMinK(x, out, bits: 5)
}

/// Q4_K and Q5_K, which differ only in the levels per sub-block (16 or 32, the search's
/// parameters with them) and where the fifth bit goes (ggml `quantize_row_q4_K_ref`,
/// `quantize_row_q5_K_ref`): eight sub-blocks of 32 get a scale and a minimum each, stored as
/// 6-bit multiples of the super-block's d and dmin.
private func quantizeScaleMinK(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer, bits: Int) {
    let nmax = (1 << bits) - 1
    var levels = [UInt8](repeating: 0, count: 256)
    let (scales, mins, maxScale, maxMin) = fitScalesAndMins(x, &levels, size: 32, nmax: nmax, rmin: bits == 4 ? -1 : -0.5,
                                                             nstep: bits == 4 ? 20 : 15) { xs, w in
        var sumX2: Float = 0
        for l in 0..<32 { sumX2 += xs[l] * xs[l] }
        let average = (sumX2 / 32).squareRoot()
        for l in 0..<32 { w[l] = average + abs(xs[l]) }
    }
    let inverseScale: Float = maxScale > 0 ? 63 / maxScale : 0
    let inverseMin: Float = maxMin > 0 ? 63 / maxMin : 0
    var packed = [UInt8](repeating: 0, count: 12)
    for j in 0..<8 {
        let ls = min(63, UInt8(truncatingIfNeeded: nearestInt(inverseScale * scales[j])))
        let lm = min(63, UInt8(truncatingIfNeeded: nearestInt(inverseMin * mins[j])))
        if j < 4 {
            packed[j] = ls
            packed[j + 4] = lm
        } else {
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
            packed[j - 4] |= (ls >> 4) << 6
            packed[j] |= (lm >> 4) << 6
        }
    }
    let d = Float16(maxScale / 63), dmin = Float16(maxMin / 63)
    out.storeBytes(of: d.bitPattern, as: UInt16.self)
    out.storeBytes(of: dmin.bitPattern, toByteOffset: 2, as: UInt16.self)
    for k in 0..<12 { out.storeBytes(of: packed[k], toByteOffset: 4 + k, as: UInt8.self) }
    let (sc, mn) = packed.withUnsafeBytes { q4KScales($0.baseAddress!) }
    for j in 0..<8 {
        let dj = Float(d) * Float(sc[j])
        if dj == 0 { continue }
        let mj = Float(dmin) * Float(mn[j])
        for i in 0..<32 { levels[32 * j + i] = UInt8(max(0, min(nmax, nearestInt((x[32 * j + i] + mj) / dj)))) }
    }
    // Sub-blocks 2p and 2p + 1 share 32 bytes of nibbles; Q5_K keeps sub-block j's fifth bits
    // in bit j of its 32 qh bytes, before the nibbles.
    let qs = bits == 4 ? 16 : 48
    for pair in 0..<4 {
        for l in 0..<32 {
            let a = levels[64 * pair + l], b = levels[64 * pair + 32 + l]
            out.storeBytes(of: (a & 0xF) | ((b & 0xF) << 4), toByteOffset: qs + 32 * pair + l, as: UInt8.self)
        }
    }
    if bits == 5 {
        for l in 0..<32 {
            var high: UInt8 = 0
            for j in 0..<8 { high |= (levels[32 * j + l] >> 4) << UInt8(j) }
            out.storeBytes(of: high, toByteOffset: 16 + l, as: UInt8.self)
        }
    }
}

/// One Q6_K super-block (256 values → 210 bytes).
func quantizeQ6_K(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
    var levels = [Int8](repeating: 0, count: 256)
    let (scales, maxScale, maxAbsScale) = fitSixteenScales(x, &levels) { fitSymmetricScale($0, 16, 32, $1) }
    if maxAbsScale < 1e-15 {
        out.initializeMemory(as: UInt8.self, repeating: 0, count: 210)
        return
    }
    let iscale = -128 / maxScale
    let d = Float16(1 / iscale)
    var blockScales = [Int8](repeating: 0, count: 16)
    for ib in 0..<16 { blockScales[ib] = Int8(truncatingIfNeeded: min(127, nearestInt(iscale * scales[ib]))) }
    for j in 0..<16 {
        let dj = Float(d) * Float(blockScales[j])
        if dj == 0 { continue }
        for i in 0..<16 { levels[16 * j + i] = Int8(max(-32, min(31, nearestInt(x[16 * j + i] / dj))) + 32) }
    }
    for half in 0..<2 {
        let base = 128 * half
        for l in 0..<32 {
            let q1 = UInt8(levels[base + l]), q2 = UInt8(levels[base + l + 32])
            let q3 = UInt8(levels[base + l + 64]), q4 = UInt8(levels[base + l + 96])
            out.storeBytes(of: (q1 & 0xF) | ((q3 & 0xF) << 4), toByteOffset: 64 * half + l, as: UInt8.self)
            out.storeBytes(of: (q2 & 0xF) | ((q4 & 0xF) << 4), toByteOffset: 64 * half + 32 + l, as: UInt8.self)
            out.storeBytes(of: (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6),
                           toByteOffset: 128 + 32 * half + l, as: UInt8.self)
        }
    }
    for ib in 0..<16 { out.storeBytes(of: blockScales[ib], toByteOffset: 192 + ib, as: Int8.self) }
    out.storeBytes(of: d.bitPattern, toByteOffset: 208, as: UInt16.self)
}
