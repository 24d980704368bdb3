#!/usr/bin/env python3
"""Training speed of PyTorch + transformers on the same shape as `llama bench-train`, to compare
side by side (dev time only). Full fp32 steps: forward, loss, backward, clipping, AdamW.

Usage: python3 Tools/bench_train_pytorch.py [--dim 288 --layers 6 --heads 6 --hidden-dim 768
       --vocab 32000 --batch 8 --seq 256 -t 2 -r 5 --untied]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=288)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--hidden-dim", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-r", type=int, default=5)
    ap.add_argument("--untied", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.t)
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.dim, intermediate_size=a.hidden_dim, num_hidden_layers=a.layers,
                      num_attention_heads=a.heads, num_key_value_heads=a.kv_heads or a.heads,
                      max_position_embeddings=a.seq, tie_word_embeddings=not a.untied)
    model = LlamaForCausalLM(cfg).float().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)
    n = sum(p.numel() for p in model.parameters())
    print(f"model: {n / 1e6:.2f} M parameters; batch {a.batch} x {a.seq}; {a.t} threads")
    speeds = []
    for step in range(a.r + 1):
        ids = torch.randint(0, a.vocab, (a.batch, a.seq + 1))
        start = time.perf_counter()
        logits = model(input_ids=ids[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, a.vocab), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        if step > 0:
            speeds.append(a.batch * a.seq / seconds)
            print(f"step {step}: loss {loss.item():.4f}, {seconds:.2f} s, {speeds[-1]:.1f} tokens/s")
    sd = statistics.stdev(speeds) if len(speeds) > 1 else 0.0
    print(f"train: {statistics.mean(speeds):.1f} ± {sd:.1f} tokens/s ({a.t} threads)")


if __name__ == "__main__":
    main()
