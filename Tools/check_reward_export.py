#!/usr/bin/env python3
"""Dev-time check: a reward model written by `llama reward train` loads in transformers as
LlamaForSequenceClassification and gives the rewards `llama reward score` prints.
For Llama 2-format models (a tokenizer.model beside the export): the sequence is Meta's
"[INST] prompt [/INST] answer " with BOS and EOS, read at its last token.

    python3 Tools/check_reward_export.py OUT/hf   # runs `llama reward score` itself
"""
import subprocess
import sys

import sentencepiece as spm
import torch
from transformers import LlamaForSequenceClassification

PAIRS = [("Hi", "Hello!"), ("How do I bake bread?", "Mix flour, water, yeast and salt, let it rise, then bake it."),
         ("Tell me a secret.", "I can't do that.")]


def main():
    directory = sys.argv[1]
    binary = sys.argv[2] if len(sys.argv) > 2 else ".build/release/llama"
    model = LlamaForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()
    sp = spm.SentencePieceProcessor(model_file=f"{directory}/tokenizer.model")
    worst = 0.0
    for prompt, answer in PAIRS:
        ids = [sp.bos_id()] + sp.encode(f"[INST] {prompt.strip()} [/INST] {answer.strip()} ") + [sp.eos_id()]
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
        ours = float(subprocess.run([binary, "reward", "score", "-m", directory, "--prompt", prompt, "--response", answer],
                                    capture_output=True, text=True, check=True).stdout)
        worst = max(worst, abs(ref - ours))
        print(f"{prompt!r}: transformers {ref:.4f}, llama reward score {ours:.4f}")
    print(f"largest difference {worst:.2e}")


if __name__ == "__main__":
    main()
