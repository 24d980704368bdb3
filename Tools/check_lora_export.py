#!/usr/bin/env python3
"""Dev-time check: LoRA adapters written by `llama sft --lora-rank …` (OUT/adapter) load in
Hugging Face PEFT on top of the base model and give the logits of our merged export (OUT/hf).

The base model is a Hugging Face directory or a GGUF file (transformers dequantises it, and
undoes llama.cpp's q/k row order as our export does), so the check covers the q/k row
permutation of the adapters too.

    python3 Tools/check_lora_export.py BASE OUT      # BASE: HF directory or .gguf
"""
import os
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM


def load_base(base):
    if base.endswith(".gguf"):
        return AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(base)), gguf_file=os.path.basename(base),
                                                    dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)


def main():
    base, out = sys.argv[1], sys.argv[2]
    peft = PeftModel.from_pretrained(load_base(base), os.path.join(out, "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(os.path.join(out, "hf"), dtype=torch.float32).eval()
    plain = load_base(base).eval()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, merged.config.vocab_size, (2, 48), generator=g)
    with torch.no_grad():
        a = peft(input_ids=ids).logits
        b = merged(input_ids=ids).logits
        c = plain(input_ids=ids).logits
    print(f"PEFT adapters vs our merged model: largest logit difference {(a - b).abs().max().item():.2e}")
    print(f"(the adapters move the base model's logits by up to {(a - c).abs().max().item():.2e})")


if __name__ == "__main__":
    main()
