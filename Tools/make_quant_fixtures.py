#!/usr/bin/env python3
"""Dev-time: blocks quantized by the `gguf` package (llama.cpp's reference quantizers in Python)
and their dequantized values, so the kernels' block decoding is checked bit for bit.
Writes Tests/Fixtures/quant_cases.json.

    pip install gguf numpy
    python3 Tools/make_quant_fixtures.py
"""
import base64, json, os
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

rng = np.random.default_rng(1234)
rows, cols = 3, 96
x = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 3, (rows, 1))).astype(np.float32)
x[1, 5] = 0.0
x[2, :32] = 0.0  # an all-zero block
cases = []
for t in [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1]:
    q = quantize(x, t)
    d = dequantize(q, t).astype(np.float32)
    cases.append({"type": t.name, "ggml_type": int(t), "rows": rows, "cols": cols,
                  "data": base64.b64encode(q.tobytes()).decode(),
                  "dequantized": [float(v) for v in d.reshape(-1)]})
vec = rng.standard_normal(cols).astype(np.float32)
out = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "quant_cases.json")
json.dump({"x": [float(v) for v in vec], "cases": cases}, open(out, "w"))
print("wrote", out)
