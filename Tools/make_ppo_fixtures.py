#!/usr/bin/env python3
"""Dev-time reference for PPO's arithmetic (Sources/Llama/Train/PPO.swift), computed the way
TRL's PPOTrainer does, with PyTorch autograd for the gradients: per-token rewards with the KL
penalty, GAE (gamma, lambda), whitening (unbiased variance, rsqrt(var + 1e-8)), the clipped
surrogate loss and the clipped value loss.

Writes Tests/Fixtures/training/ppo.json. Needs: pip install torch. CI never runs this.
Usage: python3 Tools/make_ppo_fixtures.py
"""
import json
import os

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "training", "ppo.json")


def whiten(x, shift_mean=True):
    mean, var = x.mean(), x.var(unbiased=True)
    w = (x - mean) * torch.rsqrt(var + 1e-8)
    return w if shift_mean else w + mean


def gae(rewards, values, gamma, lam):
    last, out = 0.0, []
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        last = delta + gamma * lam * last
        out.append(last)
    adv = torch.stack(out[::-1])
    return adv, adv + values


def main():
    g = torch.Generator().manual_seed(7)
    T, beta, gamma, lam, clip, vclip = 12, 0.05, 1.0, 0.95, 0.2, 0.2
    logp_old = -torch.rand(T, generator=g, dtype=torch.float64) * 3
    logp_ref = logp_old + 0.3 * torch.randn(T, generator=g, dtype=torch.float64)
    values_old = torch.randn(T, generator=g, dtype=torch.float64)
    score = 1.7
    kl = logp_old - logp_ref
    rewards = -beta * kl
    rewards[-1] += score
    adv, returns = gae(rewards, values_old, gamma, lam)
    adv_w = whiten(adv)
    # The new policy and value head after some updates: some ratios and values beyond the clip.
    logp_new = (logp_old + 0.4 * torch.randn(T, generator=g, dtype=torch.float64)).requires_grad_()
    values_new = (values_old + 0.5 * torch.randn(T, generator=g, dtype=torch.float64)).requires_grad_()
    ratio = torch.exp(logp_new - logp_old)
    pg = torch.max(-adv_w * ratio, -adv_w * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
    clipfrac = (-adv_w * torch.clamp(ratio, 1 - clip, 1 + clip) > -adv_w * ratio).double().mean()
    vclipped = torch.clamp(values_new, values_old - vclip, values_old + vclip)
    vf = 0.5 * torch.max((values_new - returns) ** 2, (vclipped - returns) ** 2).mean()
    vclipfrac = ((vclipped - returns) ** 2 > (values_new - returns) ** 2).double().mean()
    pg.backward()
    vf.backward()
    scores = torch.randn(6, generator=g, dtype=torch.float64) * 2 + 0.5

    f = lambda t: t.detach().tolist()
    out = {"beta": beta, "gamma": gamma, "lambda": lam, "clip": clip, "value_clip": vclip, "score": score,
           "logp_old": f(logp_old), "logp_ref": f(logp_ref), "values_old": f(values_old),
           "rewards": f(rewards), "kl": f(kl), "advantages": f(adv), "returns": f(returns), "advantages_whitened": f(adv_w),
           "logp_new": f(logp_new), "values_new": f(values_new),
           "policy_loss": pg.item(), "policy_grad": f(logp_new.grad), "clipfrac": clipfrac.item(),
           "approx_kl": (0.5 * ((logp_new - logp_old) ** 2).mean()).item(),
           "value_loss": vf.item(), "value_grad": f(values_new.grad), "value_clipfrac": vclipfrac.item(),
           "scores": f(scores), "scores_whitened": f(whiten(scores))}
    with open(OUT, "w") as fh:
        json.dump(out, fh, indent=1)
    print("wrote", OUT, "clipfrac", clipfrac.item(), "value clipfrac", vclipfrac.item())


if __name__ == "__main__":
    main()
