#!/usr/bin/env python3
"""Dev-time: token ids of the default model's tokenizer (SmolLM2, byte-level BPE) for a varied
set of strings, as llama.cpp (llama-cpp-python) gives them for the same GGUF file, cross-checked
against transformers' tokenizer built from that GGUF. Writes Tests/Fixtures/smollm2_tokenizer.jsonl.

    pip install llama-cpp-python transformers gguf tokenizers
    python3 Tools/make_smollm2_tokenizer_fixtures.py PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf [../shared]
"""
import json
import os
import sys

gguf_path = sys.argv[1]
shared = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..", "shared")

strings = [
    "Hello world", " Hello world", "Hello  world", "hello\n\nworld", "\tTabs\tand\ttabs",
    "The year 2023 was 365 days.", "3.14159265358979", "1,000,000 and 12345678901234567890",
    "I'm sure they'll say it's what we've done, and I'd agree.", "SHOUTING'S LOUD'LL", "don't",
    "naïve café — “quotes” and ‘single’", "日本語のテキスト", "한국어 텍스트입니다", "Привет, мир!",
    "مرحبا بالعالم", "🦙🔥 emoji 👩‍👩‍👧", "   leading spaces", "trailing spaces   ", "", " ", "\n", " \n ", "\r\n\r\n",
    "def f(x):\n    return x ** 2  # square\n", "if (a && b) { c[i] = d->e; }", "<|im_start|>user not special",
    "https://example.com/path?q=1&r=2", "e-mail: someone@example.org", "ＦＵＬＬＷＩＤＴＨ",
    "Ünïcödé ÀÉÎÕÜ ß ǅ", "a\u00a0b\u2003c", "½ ² ³ Ⅻ ٣", "....!!!???", "'s 's 'S",
]
for name in ["ggml-vocab-llama-spm.gguf.inp", "ggml-vocab-llama-bpe.gguf.inp"]:
    p = os.path.join(shared, "data", "tokenizer", "llamacpp", name)
    if os.path.exists(p):
        cases = open(p, encoding="utf-8").read().split("\n__ggml_vocab_test__\n")
        strings += [c for c in cases if c != ""]
seen = set()
strings = [s for s in strings if not (s in seen or seen.add(s))]

from llama_cpp import Llama
llm = Llama(model_path=gguf_path, vocab_only=True, verbose=False)

try:  # transformers' GGUF reader needs torch; the cross-check is skipped without it
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)), gguf_file=os.path.basename(gguf_path))
except Exception as e:
    print("transformers cross-check skipped:", type(e).__name__, file=sys.stderr)
    hf = None

out = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "smollm2_tokenizer.jsonl")
disagree = 0
with open(out, "w", encoding="utf-8") as f:
    for s in strings:
        ids = llm.tokenize(s.encode("utf-8"), add_bos=False, special=False)
        ref = hf.encode(s, add_special_tokens=False) if hf and "<|" not in s else ids
        if ref != ids:
            disagree += 1
            print("transformers and llama.cpp disagree on", repr(s), file=sys.stderr)
        f.write(json.dumps({"text": s, "ids": ids}, ensure_ascii=False) + "\n")
print(f"wrote {len(strings)} cases to {out}; {disagree} where transformers differs", file=sys.stderr)
