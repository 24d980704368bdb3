#!/usr/bin/env python3
"""Dev-time check: LoRA adapters written by `llama sft --lora-rank …` (OUT/adapter) load in
Hugging Face PEFT on top of the base model and give the logits of our merged export (OUT/hf).

The base model is a Hugging Face directory or a GGUF file (transformers dequantises it, and
undoes llama.cpp's q/k row order as our export does), so the check covers the q/k row
permutation of the adapters too.

    python3 Tools/check_lora_export.py BASE OUT      # BASE: HF directory or .gguf

The other direction: adapters made by PEFT itself (random A and B on every projection, saved
with save_pretrained) merged by `llama merge-lora` give PEFT's logits:

    python3 Tools/check_lora_export.py --from-peft BASE [path/to/llama]
"""
import json
import subprocess
import tempfile
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM


def load_base(base):
    if base.endswith(".gguf"):
        return AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(base)), gguf_file=os.path.basename(base),
                                                    dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)


def from_peft(base, binary):
    model = get_peft_model(load_base(base), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    model.eval()
    ids = [1, 504, 3458, 314, 260, 1979, 30, 216, 1073]
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([ids])).logits[0, -1]
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp + "/adapter")
        subprocess.run([binary, "merge-lora", "-m", base, "--adapter", tmp + "/adapter", "-o", tmp + "/merged.gguf"], check=True)
        out = subprocess.run([binary, "logits", "-m", tmp + "/merged.gguf", "--ids", ",".join(map(str, ids))],
                             capture_output=True, text=True, check=True).stdout
    ours = torch.tensor(json.loads(out))
    print(f"PEFT's own adapters merged by llama merge-lora vs PEFT: largest logit difference {(ours - ref).abs().max().item():.2e}")


def main():
    if sys.argv[1] == "--from-peft":
        return from_peft(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ".build/release/llama")
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
