#!/usr/bin/env python3
"""Dev-time: llama.cpp's perplexity of a GGUF model on a text file, computed from llama.cpp's
own logits (llama-cpp-python) with llama-perplexity's procedure: tokens with BOS, windows of
-c tokens, BOS as each window's first token, second half of each window scored.
Prints the same "Final estimate" line as `llama perplexity`.

    pip install llama-cpp-python numpy
    python3 Tools/perplexity_llamacpp.py MODEL.gguf FILE [-c 512] [--chunks N] [-t 2]
"""
import argparse, math
import numpy as np
from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("file")
ap.add_argument("-c", type=int, default=512); ap.add_argument("--chunks", type=int); ap.add_argument("-t", type=int, default=2)
a = ap.parse_args()
llm = Llama(model_path=a.model, n_ctx=a.c, n_batch=a.c, n_threads=a.t, logits_all=True, verbose=False)
add_bos = llm._model.add_bos_token() if hasattr(llm._model, "add_bos_token") else True
tokens = llm.tokenize(open(a.file, encoding="utf-8").read().encode("utf-8"), add_bos=add_bos)
chunks = len(tokens) // a.c
if a.chunks: chunks = min(chunks, a.chunks)
nll = nll2 = 0.0; count = 0
for c in range(chunks):
    window = tokens[c * a.c:(c + 1) * a.c]
    if add_bos: window[0] = llm.token_bos()
    llm.reset()
    llm.eval(window)
    logits = np.array(llm.scores[:a.c], dtype=np.float64)
    for j in range(a.c // 2, a.c - 1):
        row = logits[j]; m = row.max()
        lp = row[window[j + 1]] - m - math.log(np.exp(row - m).sum())
        nll -= lp; nll2 += lp * lp; count += 1
    print(f"[{c + 1}]{math.exp(nll / count):.4f},", end="", flush=True)
mean = nll / count; ppl = math.exp(mean); var = nll2 / count - mean * mean
print(f"\nFinal estimate: PPL = {ppl:.4f} +/- {math.sqrt(var / (count - 1)) * ppl:.5f}")
