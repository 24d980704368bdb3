#!/usr/bin/env python3
"""Dev-time: blocks quantized or decoded by the `gguf` package (llama.cpp's reference
quantizers in Python), so the kernels are checked bit for bit:
- F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: a random matrix quantized by `gguf`, and its
  dequantization (Q5_0 and Q5_1 come last, so the cases before them keep their random draws);
- Q4_K, Q6_K, Q5_K, Q2_K, Q3_K, IQ4_NL (which `gguf` can decode but not make): random blocks with sane scales, decoded;
- each case's activation vector x, and x quantized to Q8_0 by `gguf` (what llama.cpp multiplies
  quantized weights with), bytes and values.
Writes Tests/Fixtures/quant_cases.json.

    pip install gguf numpy
    python3 Tools/make_quant_fixtures.py
"""
import base64, json, os
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

rng = np.random.default_rng(1234)
b64 = lambda a: base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()

def case(t, q, rows, cols):
    d = dequantize(q, t).astype(np.float32).reshape(rows, cols)
    x = rng.standard_normal(cols).astype(np.float32) * 0.7
    x[3] = 0.0
    xq = quantize(x.reshape(1, -1), T.Q8_0)
    return {"type": t.name, "ggml_type": int(t), "rows": rows, "cols": cols, "data": b64(q),
            "dequantized": [float(v) for v in d.reshape(-1)], "x": [float(v) for v in x],
            "x_q8_0": b64(xq), "x_q8_0_dequantized": [float(v) for v in dequantize(xq, T.Q8_0).reshape(-1)]}

rows, cols = 5, 96
m = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 3, (rows, 1))).astype(np.float32)
m[1, 5] = 0.0
m[2, :32] = 0.0  # an all-zero block
cases = [case(t, quantize(m, t), rows, cols) for t in [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1]]

def random_k(t, block_bytes, half_offsets, rows, cols):
    blocks = rng.integers(0, 256, size=(rows, cols // 256, block_bytes), dtype=np.uint8)
    for off in half_offsets:
        h = rng.uniform(0.001, 0.05, size=(rows, cols // 256)).astype(np.float16).view(np.uint8).reshape(rows, cols // 256, 2)
        blocks[:, :, off:off + 2] = h
    return blocks.reshape(rows, -1)

cases.append(case(T.Q4_K, random_k(T.Q4_K, 144, [0, 2], 5, 512), 5, 512))
cases.append(case(T.Q6_K, random_k(T.Q6_K, 210, [208], 5, 512), 5, 512))
cases.append(case(T.Q5_0, quantize(m, T.Q5_0), rows, cols))
cases.append(case(T.Q5_1, quantize(m, T.Q5_1), rows, cols))
cases.append(case(T.Q5_K, random_k(T.Q5_K, 176, [0, 2], 5, 512), 5, 512))
cases.append(case(T.Q2_K, random_k(T.Q2_K, 84, [80, 82], 5, 512), 5, 512))
cases.append(case(T.Q3_K, random_k(T.Q3_K, 110, [108], 5, 512), 5, 512))
iq4 = rng.integers(0, 256, size=(rows, cols // 32, 18), dtype=np.uint8)
iq4[:, :, 0:2] = rng.uniform(0.001, 0.05, size=(rows, cols // 32)).astype(np.float16).view(np.uint8).reshape(rows, cols // 32, 2)
cases.append(case(T.IQ4_NL, iq4.reshape(rows, -1), rows, cols))
out = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "quant_cases.json")
json.dump({"cases": cases}, open(out, "w"))
print("wrote", out)
