#!/usr/bin/env python3
"""Dev-time: small byte-level BPE tokenizer.json files trained with Hugging Face `tokenizers`,
one per pre-tokenizer we support (GPT-2 regex; digits then GPT-2 as SmolLM2; Llama 3's Split
regex), and the ids `tokenizers` gives for test strings. Writes Tests/Fixtures/bpe-*.json and
Tests/Fixtures/bpe_cases.jsonl.

    pip install tokenizers
    python3 Tools/make_bpe_json_fixtures.py [../shared]
"""
import json, os, sys
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders, Regex

shared = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared")
out_dir = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures")
corpus = open(os.path.join(shared, "data", "corpora", "tinyshakespeare.txt"), encoding="utf-8").read()[:200_000]
corpus += "\n".join(["I'm you're we've they'll she'd it's 12345 3.14 2023-11-23 ½ naïve café 日本語 Привет 🦙 def f(x): return x**2"] * 50)

LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
kinds = {
    "gpt2": pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    "digits": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]),
    "llama3": pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
}
strings = [
    "Hello world", " Hello world", "Hello  world", "hello\n\nworld", "\tTabs\tand\ttabs", "The year 2023 was 365 days.",
    "3.14159265358979", "1,000,000 and 12345678901234567890", "I'm sure they'll say it's what we've done, and I'd agree.",
    "SHOUTING'S LOUD'LL DON'T", "naïve café — “quotes”", "日本語のテキスト", "Привет, мир!", "🦙🔥 emoji", "   leading spaces",
    "trailing spaces   ", "", " ", "\n", " \n ", "\r\n\r\n", "a \n\n b", "def f(x):\n    return x ** 2  # square\n",
    "if (a && b) { c[i] = d->e; }", "<|endoftext|> is special", "½ ² ³ Ⅻ ٣", "....!!!???", "'s 's 'S '", "x'y'z",
]
p = os.path.join(shared, "data", "tokenizer", "llamacpp", "ggml-vocab-llama-bpe.gguf.inp")
strings += [c for c in open(p, encoding="utf-8").read().split("\n__ggml_vocab_test__\n") if c]

with open(os.path.join(out_dir, "bpe_cases.jsonl"), "w", encoding="utf-8") as cases:
    for name, pre in kinds.items():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator([corpus], trainer)
        path = os.path.join(out_dir, f"bpe-{name}.json")
        tok.save(path)
        for s in strings:
            ids = tok.encode(s, add_special_tokens=False).ids
            cases.write(json.dumps({"tokenizer": f"bpe-{name}.json", "text": s, "ids": ids}, ensure_ascii=False) + "\n")
print("wrote", out_dir, file=sys.stderr)
