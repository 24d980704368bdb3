#!/usr/bin/env python3
"""Dev-time: a llama2.c version-2 checkpoint (int8 weights in groups with fp32 scales, as
karpathy/llama2.c export.py `version2_export` writes it) of the ref-mha-512 reference model,
made from its v1 (fp32) file. Writes Tests/Fixtures/ref-mha-512-v2.bin.

    pip install numpy
    python3 Tools/make_llama2c_v2_fixture.py [../shared]
"""
import os, struct, sys
import numpy as np

shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared")
raw = open(os.path.join(shared, "data", "reference", "ref-mha-512", "ref-mha-512-v1.bin"), "rb").read()
magic, version, dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack("Iiiiiiiii", raw[:36])
shared_cls = raw[36]
assert magic == 0x616B3432 and version == 1
data = np.frombuffer(raw[256:], dtype=np.float32)
pos = 0
def take(n):
    global pos
    out = data[pos:pos + n]
    pos += n
    return out
hd = dim // heads
norms = [take(dim) for _ in range(2 * layers + 1)]
emb = take(vocab * dim)
shapes = [(dim, dim), (kv_heads * hd, dim), (kv_heads * hd, dim), (dim, dim), (hidden, dim), (dim, hidden), (hidden, dim)]
mats = [emb] + [take(r * c) for (r, c) in shapes for _ in range(layers)]
if not shared_cls:
    mats.append(take(vocab * dim))
assert pos == len(data)

group = 64
while dim % group:
    group //= 2
out = bytearray(struct.pack("Ii", 0x616B3432, 2) + struct.pack("iiiiiii", dim, hidden, layers, heads, kv_heads, vocab, seq))
out += struct.pack("B", shared_cls) + struct.pack("i", group)
out += b"\0" * (256 - len(out))
for n in norms:
    out += n.astype(np.float32).tobytes()
scales = []
for w in mats:
    g = w.reshape(-1, group)
    s = np.abs(g).max(axis=1) / 127.0
    q = np.round(g / s[:, None]).astype(np.int8)  # torch.round rounds half to even, as numpy does
    out += q.tobytes()
    scales.append(s.astype(np.float32))
for s in scales:
    out += s.tobytes()
dest = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "ref-mha-512-v2.bin")
open(dest, "wb").write(out)
print("wrote", dest, len(out), "bytes", file=sys.stderr)
