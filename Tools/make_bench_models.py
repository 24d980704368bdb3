#!/usr/bin/env python3
"""Dev-time: random-weight models with TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 heads,
4 KV heads, FFN 5632, vocab 32000, the Llama 2 tokenizer) as GGUF files for speed measurements:
F16 written with the `gguf` package, then Q8_0, Q4_0 and Q4_K_M made from it by llama.cpp's own
quantizer (llama-cpp-python). Weights need not be trained to measure speed.

    pip install gguf numpy sentencepiece llama-cpp-python
    python3 Tools/make_bench_models.py OUTPUT_DIR [../shared]
"""
import ctypes, os, sys
import numpy as np
import gguf
import sentencepiece as spm

out = sys.argv[1]
shared = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..", "shared")
os.makedirs(out, exist_ok=True)
dim, layers, heads, kv_heads, ffn, vocab, ctx = 2048, 22, 32, 4, 5632, 32000, 2048
hd = dim // heads
rng = np.random.default_rng(0)
f16 = os.path.join(out, "tinyllama-shape-F16.gguf")
if not os.path.exists(f16):
    w = gguf.GGUFWriter(f16, "llama")
    w.add_name("random TinyLlama-1.1B shape")
    w.add_context_length(ctx)
    w.add_embedding_length(dim)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(1)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(shared, "data", "tokenizer", "llama2-tokenizer.model"))
    w.add_tokenizer_model("llama")
    w.add_token_list([sp.id_to_piece(i).encode("utf-8") for i in range(vocab)])
    w.add_token_scores([sp.get_score(i) for i in range(vocab)])
    types = []
    for i in range(vocab):
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)
    w.add_tensor("token_embd.weight", mat(vocab, dim))
    w.add_tensor("output_norm.weight", np.ones(dim, dtype=np.float32))
    w.add_tensor("output.weight", mat(vocab, dim))
    for i in range(layers):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(dim, dtype=np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(dim, dtype=np.float32))
        w.add_tensor(p + "attn_q.weight", mat(dim, dim))
        w.add_tensor(p + "attn_k.weight", mat(kv_heads * hd, dim))
        w.add_tensor(p + "attn_v.weight", mat(kv_heads * hd, dim))
        w.add_tensor(p + "attn_output.weight", mat(dim, dim))
        w.add_tensor(p + "ffn_gate.weight", mat(ffn, dim))
        w.add_tensor(p + "ffn_up.weight", mat(ffn, dim))
        w.add_tensor(p + "ffn_down.weight", mat(dim, ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", f16, file=sys.stderr)

import llama_cpp
for name, ftype in [("Q8_0", 7), ("Q4_0", 2), ("Q4_K_M", 15)]:
    dest = os.path.join(out, f"tinyllama-shape-{name}.gguf")
    if os.path.exists(dest):
        continue
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(f16.encode(), dest.encode(), ctypes.byref(params))
    print("quantized", dest, "rc", rc, file=sys.stderr)
