#!/usr/bin/env python3
"""Dev-time check of a model trained here: its model.gguf in llama.cpp and its hf/ directory in
transformers give the logits our engine gives (`llama logits --all`) on the same token ids.

Usage: python3 Tools/check_trained_export.py RUN_DIR [--ids 1,2,3,...] [--llama .build/release/llama]
Needs: pip install torch transformers llama-cpp-python numpy
"""
import argparse
import json
import subprocess

import numpy as np
import torch
from llama_cpp import Llama
from transformers import LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--ids", default="1,45,320,100,7,260,33,410,461,441,2,5,90,300,301,12")
    ap.add_argument("--llama", default=".build/release/llama")
    a = ap.parse_args()
    ids = [int(x) for x in a.ids.split(",")]
    out = subprocess.run([a.llama, "logits", "-m", a.run + "/model.gguf", "--ids", a.ids, "--all"],
                         capture_output=True, text=True, check=True).stdout
    ours = np.array(json.loads(out))
    cpp = Llama(model_path=a.run + "/model.gguf", logits_all=True, verbose=False, n_ctx=len(ids))
    cpp.eval(ids)
    ref_cpp = np.array(cpp.scores[:len(ids)])
    hf = LlamaForCausalLM.from_pretrained(a.run + "/hf", dtype=torch.float32)
    with torch.no_grad():
        ref_hf = hf(input_ids=torch.tensor([ids])).logits[0].numpy()
    scale = np.abs(ref_hf).max()
    print(f"logits range ±{scale:.3f}")
    print(f"ours vs llama.cpp (GGUF):     max abs difference {np.abs(ours - ref_cpp).max():.2e}")
    print(f"ours vs transformers (hf/):   max abs difference {np.abs(ours - ref_hf).max():.2e}")


if __name__ == "__main__":
    main()
