#!/usr/bin/env python3
"""Dev-time reference for LoRA: Hugging Face PEFT adapters on the tiny causal LM of
make_training_fixtures.py (rank 4, alpha 8, no dropout, every projection q/k/v/o/gate/up/down),
with A and B both drawn at random so every gradient is non-zero.

Writes Tests/Fixtures/training/lora-tiny.json: the adapters (PEFT's saved tensor names, base64
float32), the mean next-token loss on tiny-gqa.json's batch, the gradient of every adapter
tensor, and the logits of the model with the adapters merged (PEFT's merge_and_unload).

Needs: pip install torch transformers peft. CI never runs this.
Usage: python3 Tools/make_lora_fixtures.py
"""
import base64
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_training_fixtures import OUT, flat, tiny  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    fixture = tiny()
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2)
    base = LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        for name, p in base.named_parameters():
            v = np.frombuffer(base64.b64decode(fixture["initial"][name]), dtype="<f4")
            p.copy_(torch.from_numpy(v.copy()).reshape(p.shape))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS,
                                            task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(77)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    inputs = torch.tensor(fixture["inputs"])
    targets = torch.tensor(fixture["targets"])
    model.train()
    logits = model(input_ids=inputs).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
    loss.backward()

    def saved(name):  # PEFT's saved name drops the adapter's name
        return name.replace(".default", "")

    adapters = {saved(n): flat(p) for n, p in model.named_parameters() if "lora_" in n}
    grads = {saved(n): flat(p.grad) for n, p in model.named_parameters() if "lora_" in n}
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    merged = model.merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(input_ids=inputs).logits
    assert torch.allclose(merged_logits, logits, atol=1e-4)
    out = {"rank": 4, "alpha": 8, "targets": TARGETS, "adapters": adapters, "loss": loss.item(), "gradients": grads,
           "merged_logits": flat(merged_logits)}
    with open(os.path.join(OUT, "lora-tiny.json"), "w") as f:
        json.dump(out, f)
    print("wrote", os.path.join(OUT, "lora-tiny.json"), "loss", loss.item())


if __name__ == "__main__":
    main()
