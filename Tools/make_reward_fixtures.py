#!/usr/bin/env python3
"""Dev-time reference for the reward model: the Llama 2 ranking loss and its gradients from
PyTorch, on transformers' LlamaForSequenceClassification (one label: `score.weight`, [1, dim],
no bias) built from the tiny model of make_training_fixtures.py.

Writes Tests/Fixtures/training/reward-tiny.json: the score head's initial weights, 3 preference
pairs (right-padded sequences of different lengths, each read at its last real token as
transformers does), their margins m(rating), the rewards, the mean loss
-log sigmoid(r_chosen - r_rejected - m) and every parameter's gradient (base64 float32).
The trunk's initial weights are those of tiny-gqa.json.

Needs: pip install torch transformers. CI never runs this.
Usage: python3 Tools/make_reward_fixtures.py
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForSequenceClassification

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_training_fixtures import OUT, flat, named, tiny  # noqa: E402

PAD = 0


def main():
    lm_fixture = tiny()  # re-seeds torch and rebuilds the same causal LM
    torch.manual_seed(1234)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2, pad_token_id=PAD, num_labels=1)
    model = LlamaForSequenceClassification(cfg).float()
    import base64
    import numpy as np
    with torch.no_grad():
        for name, p in model.model.named_parameters():
            v = np.frombuffer(base64.b64decode(lm_fixture["initial"]["model." + name]), dtype="<f4")
            p.copy_(torch.from_numpy(v.copy()).reshape(p.shape))
        g = torch.Generator().manual_seed(99)
        model.score.weight.copy_(torch.randn(model.score.weight.shape, generator=g))

    g = torch.Generator().manual_seed(21)
    lengths = [(9, 12), (14, 6), (11, 11)]   # (chosen, rejected) tokens
    margins = [0.0, 1.0, 2.0 / 3.0]
    T = 16
    chosen = torch.full((3, T), PAD)
    rejected = torch.full((3, T), PAD)
    for i, (lc, lr) in enumerate(lengths):
        chosen[i, :lc] = torch.randint(3, cfg.vocab_size, (lc,), generator=g)
        rejected[i, :lr] = torch.randint(3, cfg.vocab_size, (lr,), generator=g)
        rejected[i, :4] = chosen[i, :4]    # a shared prompt
    last_c = torch.tensor([lc - 1 for lc, _ in lengths])
    last_r = torch.tensor([lr - 1 for _, lr in lengths])

    model.zero_grad(set_to_none=True)
    # Right padding and causal attention: the padding never reaches the positions read.
    rc = model.score(model.model(input_ids=chosen).last_hidden_state)[torch.arange(3), last_c, 0]
    rr = model.score(model.model(input_ids=rejected).last_hidden_state)[torch.arange(3), last_r, 0]
    m = torch.tensor(margins)
    loss = -F.logsigmoid(rc - rr - m).mean()
    loss.backward()
    # The same rewards through transformers' own head selection (last non-pad token).
    with torch.no_grad():
        assert torch.allclose(model(input_ids=chosen).logits[:, 0], rc, atol=1e-5)

    out = {
        "score_initial": flat(model.score.weight),
        "chosen": [chosen[i, :lc].tolist() for i, (lc, _) in enumerate(lengths)],
        "rejected": [rejected[i, :lr].tolist() for i, (_, lr) in enumerate(lengths)],
        "margins": margins,
        "rewards_chosen": rc.tolist(), "rewards_rejected": rr.tolist(),
        "loss": loss.item(),
        "gradients": {("score.weight" if n == "score.weight" else n): flat(p.grad) for n, p in named(model)},
    }
    with open(os.path.join(OUT, "reward-tiny.json"), "w") as f:
        json.dump(out, f)
    print("loss", loss.item(), "tensors", len(out["gradients"]))


if __name__ == "__main__":
    main()
