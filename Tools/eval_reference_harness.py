#!/usr/bin/env python3
"""Dev-time reference for `llama eval --task piqa --f32`: lm-evaluation-harness itself (lm_eval
0.4, model "hf") running transformers on the same GGUF file (`gguf_file=`, weights dequantized
to float32, or float64 with --dtype float64), on the local PIQA files through a task YAML equal to the harness's piqa.yaml but
reading JSON instead of the Hugging Face hub.

transformers rebuilds the tokenizer from the GGUF's vocabulary, and for SmolLM2 (pre-tokenizer
"smollm") it drops the Digits step of the model's own tokenizer.json, so runs of spaces before a
digit encode differently from the original tokenizer and from llama.cpp. The script puts the
model's pre-tokenizer back (Digits(individual) then ByteLevel, as SmolLM2's tokenizer.json has
it) and checks every string it scores against llama.cpp's tokenizer (llama-cpp-python). Writes every item's log-likelihoods (from the
harness's --log_samples) as a fixture, and compares them with our records file.

    pip install lm_eval accelerate torch transformers gguf
    HF_HUB_OFFLINE=1 python3 Tools/eval_reference_harness.py \
        --model ~/.cache/llama.swift/SmolLM2-135M-Instruct.Q4_1.gguf --data ../shared/data/eval/piqa \
        --limit 300 --out Tests/Fixtures/eval/piqa-harness-smollm2-q4_1.json
    llama eval --task piqa --data ../shared/data/eval/piqa --f32 --records piqa-f32.jsonl
    HF_HUB_OFFLINE=1 python3 Tools/eval_reference_harness.py ... --limit 0 --compare piqa-f32.jsonl

CI never runs this; its output is a committed fixture.
"""
import argparse, hashlib, json, os, sys, tempfile, time

import torch

import gguf
import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

TASK_YAML = """task: piqa_local
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
output_type: multiple_choice
validation_split: validation
doc_to_text: "Question: {{{{goal}}}}\\nAnswer:"
doc_to_target: label
doc_to_choice: "{{{{[sol1, sol2]}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def check_tokenizer(model, tokenizer, docs):
    """Every context and context + choice encodes as llama.cpp encodes it."""
    from llama_cpp import Llama
    llm = Llama(model_path=model, vocab_only=True, verbose=False)
    texts = []
    for d in docs:
        context = f"Question: {d['goal']}\nAnswer:"
        texts += [context] + [context + " " + d[k] for k in ("sol1", "sol2")]
    bad = [t for t in texts if tokenizer(t, add_special_tokens=False)["input_ids"]
           != llm.tokenize(t.encode(), add_bos=False, special=False)]
    print(f"tokenizer check against llama.cpp: {len(texts) - len(bad)}/{len(texts)} strings equal", file=sys.stderr)
    if bad:
        sys.exit(f"the transformers tokenizer differs from llama.cpp's on {len(bad)} strings, e.g. {bad[0]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--data", required=True, help="directory with valid.jsonl and valid-labels.lst")
    ap.add_argument("--limit", type=int, default=300, help="first N items (0 = all)")
    ap.add_argument("--out")
    ap.add_argument("--compare", help="records JSONL written by `llama eval --task piqa --f32`")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args()

    tmp = tempfile.mkdtemp()
    docs = [json.loads(l) for l in open(f"{args.data}/valid.jsonl") if l.strip()]
    labels = [int(l) for l in open(f"{args.data}/valid-labels.lst") if l.strip()]
    with open(f"{tmp}/valid.jsonl", "w") as f:
        for d, label in zip(docs, labels):
            f.write(json.dumps({**d, "label": label}) + "\n")
    with open(f"{tmp}/piqa_local.yaml", "w") as f:
        f.write(TASK_YAML.format(data=f"{tmp}/valid.jsonl"))

    model = os.path.abspath(os.path.expanduser(args.model))
    directory, name = os.path.dirname(model), os.path.basename(model)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    field = gguf.GGUFReader(model).fields.get("tokenizer.ggml.pre")
    pre = bytes(field.parts[field.data[0]]).decode() if field else None
    if pre == "smollm":
        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    check_tokenizer(model, tokenizer, docs[:args.limit or None])
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    hf = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, torch_dtype=dtype)
    lm = HFLM(pretrained=hf, tokenizer=tokenizer, batch_size=8, device="cpu")
    start = time.time()
    out = lm_eval.simple_evaluate(model=lm, tasks=["piqa_local"], task_manager=TaskManager(include_path=tmp),
                                  limit=args.limit or None, log_samples=True)
    samples = sorted(out["samples"]["piqa_local"], key=lambda s: s["doc_id"])
    res = out["results"]["piqa_local"]
    print(f"lm-evaluation-harness {lm_eval.__version__} (hf, gguf_file, {args.dtype}): acc {res['acc,none']:.4f} "
          f"± {res['acc_stderr,none']:.4f}  acc_norm {res['acc_norm,none']:.4f} ± {res['acc_norm_stderr,none']:.4f}  "
          f"(n={len(samples)}, {time.time() - start:.0f} s)")
    items = [{"index": s["doc_id"], "logLikelihoods": [float(r[0]) for r in s["filtered_resps"]],
              "isGreedy": [bool(r[1]) for r in s["filtered_resps"]], "gold": int(s["target"]),
              "acc": s["acc"], "acc_norm": s["acc_norm"]} for s in samples]

    if args.out:
        sha = hashlib.sha256(open(model, "rb").read()).hexdigest()
        with open(args.out, "w") as f:
            json.dump({"model_sha256": sha, "tool": f"lm_eval {lm_eval.__version__}, model=hf gguf_file dtype={args.dtype}, pre-tokenizer {pre}",
                       "task": "piqa", "n": len(items), "acc": res["acc,none"], "acc_norm": res["acc_norm,none"],
                       "items": items}, f, separators=(",", ":"))
            f.write("\n")
    if args.compare:
        ours = [json.loads(l) for l in open(args.compare) if l.strip()]
        n = min(len(ours), len(items))
        diffs = [abs(a - b) for ref, o in zip(items[:n], ours[:n])
                 for a, b in zip(ref["logLikelihoods"], o["logLikelihoods"])]
        same = sum(ref["acc"] == o["scores"]["acc"] and ref["acc_norm"] == o["scores"]["acc_norm"]
                   for ref, o in zip(items[:n], ours[:n]))
        print(f"ours: acc {sum(o['scores']['acc'] for o in ours[:n]) / n:.4f}  "
              f"acc_norm {sum(o['scores']['acc_norm'] for o in ours[:n]) / n:.4f}  (n={n})")
        print(f"largest |log-likelihood difference| {max(diffs):.2e} nats, mean {sum(diffs) / len(diffs):.2e}; "
              f"items scored the same: {same}/{n}")


if __name__ == "__main__":
    main()
