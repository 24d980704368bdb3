#!/usr/bin/env python3
"""Dev-time: K-quant bytes and per-tensor type choices as llama.cpp's own quantizer writes them.
Builds a small random F16 llama model (dims multiples of 256), quantizes it with llama.cpp
(llama-cpp-python's llama_model_quantize, no importance matrix) to Q6_K, Q4_K_M, Q5_K_M, Q2_K and
Q3_K_M and IQ4_NL, and keeps a few rows of a few tensors: the F16 source values and the encoded bytes. Then
records the tensor types llama.cpp chooses for every mixed and block recipe, for that model, for a
second one whose rows (320, 640) are whole 32-blocks but not 256-blocks, where K-quants fall back,
for one with 4 query heads per key/value head, and for an 80-layer one with grouped-query attention
(llama.cpp's "70B", whose attn_v gets more bits).
Writes Tests/Fixtures/kquant_cases.json.

    pip install gguf numpy sentencepiece llama-cpp-python
    python3 Tools/make_kquant_fixtures.py [../shared]
"""
import base64, ctypes, json, os, sys, tempfile
import numpy as np, gguf, sentencepiece as spm, llama_cpp

shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared")
tmp = tempfile.mkdtemp()
src = os.path.join(tmp, "f16.gguf")
rng = np.random.default_rng(5)
vocab = 32000
sp = spm.SentencePieceProcessor(model_file=os.path.join(shared, "data", "tokenizer", "llama2-tokenizer.model"))

def write_model(src, dim, layers, heads, ffn, kv_heads=None):
    kv_heads = kv_heads or heads
    kv_dim = dim // heads * kv_heads
    w = gguf.GGUFWriter(src, "llama")
    for f, v in [(w.add_context_length, 256), (w.add_embedding_length, dim), (w.add_block_count, layers), (w.add_feed_forward_length, ffn),
                 (w.add_head_count, heads), (w.add_head_count_kv, kv_heads), (w.add_rope_dimension_count, dim // heads)]:
        f(v)
    w.add_rope_freq_base(10000.0); w.add_layer_norm_rms_eps(1e-5); w.add_file_type(1)
    w.add_tokenizer_model("llama")
    w.add_token_list([sp.id_to_piece(i).encode() for i in range(vocab)])
    w.add_token_scores([sp.get_score(i) for i in range(vocab)])
    w.add_token_types([2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1 for i in range(vocab)])
    def mat(r, c):
        m = (rng.standard_normal((r, c), dtype=np.float32) * rng.uniform(0.005, 0.05)).astype(np.float16)
        m[0, :16] = 0  # a zero sub-block
        return m
    w.add_tensor("token_embd.weight", mat(vocab, dim)); w.add_tensor("output_norm.weight", np.ones(dim, np.float32))
    w.add_tensor("output.weight", mat(vocab, dim))
    for i in range(layers):
        p = f"blk.{i}."
        for n in ["attn_norm", "ffn_norm"]: w.add_tensor(p + n + ".weight", np.ones(dim, np.float32))
        for n, (r, c) in [("attn_q", (dim, dim)), ("attn_k", (kv_dim, dim)), ("attn_v", (kv_dim, dim)), ("attn_output", (dim, dim)),
                          ("ffn_gate", (ffn, dim)), ("ffn_up", (ffn, dim)), ("ffn_down", (dim, ffn))]:
            w.add_tensor(p + n + ".weight", mat(r, c))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

write_model(src, 512, 8, 8, 1024)
src_odd = os.path.join(tmp, "f16-odd.gguf")
write_model(src_odd, 320, 8, 5, 640)
src_gqa = os.path.join(tmp, "f16-gqa.gguf")
write_model(src_gqa, 512, 8, 8, 1024, kv_heads=2)
src_80 = os.path.join(tmp, "f16-80.gguf")
write_model(src_80, 256, 80, 4, 512, kv_heads=2)

def quantize(src, name, ftype):
    dst = os.path.join(tmp, os.path.basename(src) + "." + name + ".gguf")
    p = llama_cpp.llama_model_quantize_default_params(); p.ftype = ftype; p.nthread = 2
    assert llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)) == 0
    return gguf.GGUFReader(dst).tensors

out = {"types": [], "cases": []}
source = {t.name: t for t in gguf.GGUFReader(src).tensors}
rows = 3
recipes = [("Q4_0", 2), ("Q4_1", 3), ("Q5_0", 8), ("Q5_1", 9), ("Q8_0", 7), ("Q4_K_S", 14), ("Q4_K_M", 15),
           ("Q5_K_S", 16), ("Q5_K_M", 17), ("Q6_K", 18), ("Q2_K", 10), ("Q3_K_S", 11), ("Q3_K_M", 12), ("Q3_K_L", 13),
           ("IQ4_NL", 25)]
for model, path, layers, gqa, names in [("512", src, 8, 1, None), ("320", src_odd, 8, 1, None),
                                        ("512-gqa", src_gqa, 8, 4, ["Q2_K", "Q3_K_M", "Q4_K_M", "IQ4_NL"]),
                                        ("256-80-layers", src_80, 80, 2, ["Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M"])]:
    for name, ftype in recipes:
        if names and name not in names: continue
        types = {t.name: [t.tensor_type.name, int(t.shape[0])] for t in quantize(path, name, ftype) if len(t.shape) == 2}
        out["types"].append({"model": model, "recipe": name, "layers": layers, "gqa": gqa, "tensors": types})
for name, ftype in [("Q6_K", 18), ("Q4_K_M", 15), ("Q5_K_M", 17), ("Q2_K", 10), ("Q3_K_M", 12), ("IQ4_NL", 25)]:
    for t in quantize(src, name, ftype):
        if t.name in ("blk.0.attn_q.weight", "blk.3.ffn_down.weight", "blk.0.attn_v.weight") and t.tensor_type.name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL"):
            s = np.asarray(source[t.name].data).reshape(-1, int(source[t.name].shape[0]))[:rows]
            q = np.asarray(t.data).view(np.uint8).reshape(int(t.shape[1]), -1)[:rows]
            out["cases"].append({"tensor": t.name, "type": t.tensor_type.name, "cols": int(s.shape[1]),
                                 "source_f16": base64.b64encode(s.astype(np.float16).tobytes()).decode(),
                                 "quantized": base64.b64encode(q.tobytes()).decode()})
dest = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "kquant_cases.json")
json.dump(out, open(dest, "w"))
print("wrote", dest, len(out["cases"]), "cases", file=sys.stderr)
