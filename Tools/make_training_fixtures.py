#!/usr/bin/env python3
"""Dev-time reference for the trainer: losses, gradients and AdamW steps from PyTorch.

Writes Tests/Fixtures/training/:
  tiny-gqa.json        a random LlamaForCausalLM (GQA 4:2, tied embeddings): its config and
                       initial parameters, a batch, the loss, every parameter's full gradient,
                       parameters after 3 clipped AdamW steps (tensors as base64 float32),
                       learning-rate schedule values
  shared-refs.json     loss and sampled gradient entries for ../shared/data/reference models
                       (the test loads those models from ../shared and skips without them)

Needs: pip install torch transformers safetensors. CI never runs this.
Usage: python3 Tools/make_training_fixtures.py [../shared]
"""
import base64
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "training")
SHARED = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared")


def batch(vocab, b, t, seed):
    """Token ids and next-token targets; some targets ignored (-100), as an SFT mask does."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (b, t + 1), generator=g)
    inputs, targets = ids[:, :-1].clone(), ids[:, 1:].clone()
    targets[0, :3] = -100          # a masked prompt
    targets[1, t // 2:t // 2 + 2] = -100
    return inputs, targets


def loss_and_grads(model, inputs, targets):
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=inputs).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    return loss.item()


def named(model):
    """Parameters once each (a tied lm_head is the embedding, listed under its own name)."""
    seen, out = set(), []
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        out.append((name, p))
    return out


def flat(t):
    """Base64 of the tensor's float32 values, little-endian, row-major."""
    return base64.b64encode(t.detach().reshape(-1).numpy().astype("<f4").tobytes()).decode()


def tiny():
    torch.manual_seed(1234)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        # Norm weights away from 1 and larger weights, so that mistakes show in the gradients.
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.mul_(8)
    initial = {name: flat(p) for name, p in named(model)}
    config = {"dim": cfg.hidden_size, "hidden_dim": cfg.intermediate_size, "layers": cfg.num_hidden_layers,
              "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads, "vocab_size": cfg.vocab_size,
              "context_length": cfg.max_position_embeddings, "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": 10000.0}

    inputs, targets = batch(cfg.vocab_size, 2, 12, seed=7)
    loss = loss_and_grads(model, inputs, targets)
    grads = {name: flat(p.grad) for name, p in named(model)}

    # AdamW: matrices and embeddings decayed, norm weights not; global-norm clipping at 1.0.
    hp = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)
    params = named(model)
    decay = [p for n, p in params if p.dim() >= 2]
    no_decay = [p for n, p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=hp["lr"], betas=hp["betas"], eps=hp["eps"])
    norms = []
    for step in range(3):
        loss_and_grads(model, inputs, targets)
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)))
        opt.step()
    after = {name: flat(p) for name, p in named(model)}

    # Schedule: transformers' cosine with warm-up, decaying to 10% of the peak.
    sched_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    sched = get_cosine_with_min_lr_schedule_with_warmup(sched_opt, num_warmup_steps=20, num_training_steps=200,
                                                        min_lr_rate=0.1)
    lrs = []
    for step in range(200):
        lrs.append([step, sched.get_last_lr()[0]])
        sched_opt.step()
        sched.step()
    lrs = [x for x in lrs if x[0] in (0, 1, 5, 19, 20, 21, 50, 100, 150, 198, 199)]

    return {
        "config": config, "initial": initial,
        "inputs": inputs.tolist(), "targets": targets.tolist(), "loss": loss, "gradients": grads,
        "adamw": {"lr": hp["lr"], "beta1": 0.9, "beta2": 0.95, "eps": 1e-5, "weight_decay": 0.1, "clip": 1.0,
                  "steps": 3, "grad_norms": norms, "parameters": after},
        "schedule": {"peak": 3e-4, "warmup": 20, "total": 200, "min_ratio": 0.1, "lr": lrs},
    }


def shared_refs():
    out = []
    for ref in ("ref-mha-512", "ref-gqa-32k"):
        path = os.path.join(SHARED, "data", "reference", ref, "hf")
        model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
        inputs, targets = batch(model.config.vocab_size, 2, 16, seed=11)
        loss = loss_and_grads(model, inputs, targets)
        g = torch.Generator().manual_seed(5)
        tensors = []
        for name, p in named(model):
            grad = p.grad.detach().reshape(-1)
            idx = torch.randint(0, grad.numel(), (48,), generator=g)
            # Plus the largest entries, where a wrong gradient is least likely to hide.
            idx = torch.cat([idx, grad.abs().topk(min(16, grad.numel())).indices])
            tensors.append({"name": name, "shape": list(p.shape), "l2": float(grad.norm()),
                            "samples": [[int(i), float(grad[i])] for i in idx]})
        out.append({"model": ref, "inputs": inputs.tolist(), "targets": targets.tolist(), "loss": loss,
                    "tensors": tensors})
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "tiny-gqa.json"), "w") as f:
        json.dump(tiny(), f)
    with open(os.path.join(OUT, "shared-refs.json"), "w") as f:
        json.dump(shared_refs(), f)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
