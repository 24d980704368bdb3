#!/usr/bin/env python3
"""Dev-time reference for `llama train-tokenizer`: trains a tokenizer with our CLI on the first
300,000 bytes of ../shared/data/corpora/tinyshakespeare.txt (vocabulary 1000), then has the
`sentencepiece` library load the file and encode held-out strings. Writes
Tests/Fixtures/training/trained-tokenizer.json: the model file's sha256, the strings and the ids
sentencepiece gives (the model itself is not committed: the test trains it again from
../shared, checks the sha256, then checks that our encoder gives the same ids).

Usage: swift build -c release && python3 Tools/make_tokenizer_training_fixture.py [../shared]
Needs: pip install sentencepiece protobuf
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared")
OUT = os.path.join(ROOT, "Tests", "Fixtures", "training")


def main():
    with open(os.path.join(SHARED, "data", "corpora", "tinyshakespeare.txt"), "rb") as f:
        text = f.read()[:300000]
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as t:
        t.write(text)
    model = os.path.join(tempfile.mkdtemp(), "trained-tokenizer.model")
    subprocess.run([os.path.join(ROOT, ".build", "release", "llama"), "train-tokenizer", "--vocab-size", "1000",
                    "-o", model, t.name], check=True)
    os.unlink(t.name)
    sp = spm.SentencePieceProcessor(model_file=model)
    with open(os.path.join(SHARED, "data", "corpora", "kjv.txt"), encoding="utf-8") as f:
        held_out = [line for line in f.read().splitlines() if line.strip()][1000:1040]
    strings = held_out + [
        "Hello world", "ROMEO: What, art thou hurt?", "  two  spaces", "digits 12345 and 3.14",
        "naïve café — “quotes”", "emoji 🙂 ok", "line\nbreak", "", " leading", "trailing ", "tab\there",
        "日本語のテキスト", "Ünïcödé ÄÖÜ ß", "<s> not special </s>", "a" * 40, "The 2nd of May, 1999.",
    ]
    cases = [{"text": s, "ids": sp.encode(s)} for s in strings]
    with open(model, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(OUT, "trained-tokenizer.json"), "w") as f:
        json.dump({"vocab_size": sp.vocab_size(), "sha256": digest, "sentencepiece": spm.__version__, "cases": cases},
                  f, ensure_ascii=False, indent=0)
    os.unlink(model)
    print("wrote trained-tokenizer.json:", len(cases), "cases, model sha256", digest)


if __name__ == "__main__":
    main()
