#!/usr/bin/env python3
"""Dev-time reference for `llama eval --task piqa`: per-item log-likelihoods of the PIQA choices
computed by llama.cpp (through llama-cpp-python) on the same GGUF file, with the prompt format
and tokenization rules of lm-evaluation-harness (piqa.yaml; HFLM-style _encode_pair: trailing
context whitespace moves to the continuation, the whole string is encoded and the continuation is
what follows the encoded context). Each (context + choice) sequence is evaluated from scratch
with logits for every position; the log-softmax is taken in float64.

    pip install llama-cpp-python numpy
    python3 Tools/piqa_reference_llamacpp.py --model ~/.cache/llama.swift/SmolLM2-135M-Instruct.Q4_1.gguf \
        --data ../shared/data/eval/piqa --limit 200 --out Tests/Fixtures/eval/piqa-smollm2-q4_1.json
    # compare with our records (every item, max |difference|, accuracy of both):
    python3 Tools/piqa_reference_llamacpp.py ... --limit 0 --compare piqa-records.jsonl

CI never runs this; its output is a committed fixture.
"""
import argparse, hashlib, json, math, sys, time

import numpy as np
from llama_cpp import Llama


def encode_pair(llm, context, continuation):
    n = len(context) - len(context.rstrip())
    if n > 0:
        continuation = context[-n:] + continuation
        context = context[:-n]
    whole = llm.tokenize((context + continuation).encode(), add_bos=True, special=False)
    ctx = llm.tokenize(context.encode(), add_bos=True, special=False)
    return ctx, whole[len(ctx):]


def loglikelihood(llm, ctx, cont):
    tokens = ctx + cont
    llm.reset()
    llm.eval(tokens)
    logits = np.array(llm.scores[len(ctx) - 1:len(tokens) - 1], dtype=np.float64)
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    lp = sum(logp[i, t] for i, t in enumerate(cont))
    greedy = all(int(np.argmax(logits[i])) == t for i, t in enumerate(cont))
    return float(lp), greedy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="directory with valid.jsonl and valid-labels.lst")
    ap.add_argument("--limit", type=int, default=200, help="first N items (0 = all)")
    ap.add_argument("--out")
    ap.add_argument("--compare", help="records JSONL written by `llama eval --task piqa`")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    docs = [json.loads(l) for l in open(f"{args.data}/valid.jsonl") if l.strip()]
    labels = [int(l) for l in open(f"{args.data}/valid-labels.lst") if l.strip()]
    if args.limit:
        docs, labels = docs[:args.limit], labels[:args.limit]
    llm = Llama(model_path=args.model, n_ctx=512, n_batch=512, n_threads=args.threads, logits_all=True, verbose=False)
    items, acc, acc_norm = [], 0, 0
    start = time.time()
    for i, (doc, gold) in enumerate(zip(docs, labels)):
        context = f"Question: {doc['goal']}\nAnswer:"
        choices = [doc["sol1"], doc["sol2"]]
        results = [loglikelihood(llm, *encode_pair(llm, context, " " + c)) for c in choices]
        lls = [r[0] for r in results]
        acc += int(np.argmax(lls) == gold)
        acc_norm += int(np.argmax([ll / len(c) for ll, c in zip(lls, choices)]) == gold)
        items.append({"index": i, "logLikelihoods": lls, "isGreedy": [r[1] for r in results], "gold": gold})
        if (i + 1) % 100 == 0:
            print(f"{i + 1}/{len(docs)} items, {time.time() - start:.0f} s", file=sys.stderr)
    n = len(items)
    print(f"llama.cpp: acc {acc / n:.4f}  acc_norm {acc_norm / n:.4f}  (n={n})")

    if args.out:
        sha = hashlib.sha256(open(args.model, "rb").read()).hexdigest()
        with open(args.out, "w") as f:
            json.dump({"model_sha256": sha, "tool": "llama-cpp-python", "task": "piqa", "n": n,
                       "acc": acc / n, "acc_norm": acc_norm / n, "items": items}, f, indent=None, separators=(",", ":"))
            f.write("\n")
    if args.compare:
        ours = [json.loads(l) for l in open(args.compare) if l.strip()][:n]
        worst, ours_acc, ours_norm, same = 0.0, 0, 0, 0
        for ref, o in zip(items, ours):
            worst = max(worst, max(abs(a - b) for a, b in zip(ref["logLikelihoods"], o["logLikelihoods"])))
            ours_acc += o["scores"]["acc"]
            ours_norm += o["scores"]["acc_norm"]
        m = len(ours)
        print(f"ours:      acc {ours_acc / m:.4f}  acc_norm {ours_norm / m:.4f}  (n={m})")
        print(f"largest |log-likelihood difference| over {m} items: {worst:.2e} nats")


if __name__ == "__main__":
    main()
