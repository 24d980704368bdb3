#!/usr/bin/env python3
"""Dev-time: llama.cpp's prompt (ppN) and generation (tgN) speed on a GGUF file, measured the
way llama-bench measures them (pp: one batch of N random tokens; tg: N single-token decodes),
through llama-cpp-python, printed as llama-bench-style JSON. Used beside `llama bench` to
compare on the same machine, same file, same threads (docs/PERFORMANCE.md).

    pip install llama-cpp-python
    python3 Tools/bench_llamacpp.py MODEL.gguf [-p 128] [-n 64] [-t 2] [-r 3] [-d 0]

-d D: D random tokens are evaluated (untimed) before each run, as llama-bench's -d; the tests
are then named "ppN @ dD" and "tgN @ dD", as `llama bench -d` names them.
"""
import argparse, json, random, statistics, time
from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("-p", type=int, default=128)
ap.add_argument("-n", type=int, default=64)
ap.add_argument("-t", type=int, default=2)
ap.add_argument("-r", type=int, default=3)
ap.add_argument("-d", type=int, default=0)
a = ap.parse_args()
llm = Llama(model_path=a.model, n_threads=a.t, n_threads_batch=a.t, n_ctx=max(512, a.d + a.p + a.n + 8),
            n_batch=max(a.p, 32, min(a.d, 512)),
            verbose=False, logits_all=False)
vocab = llm.n_vocab()
rng = random.Random(0)
results = []
for test, n in [("pp%d" % a.p, a.p), ("tg%d" % a.n, a.n)]:
    if n <= 0:
        continue
    speeds = []
    for rep in range(a.r + 1):  # the first run warms up and is not counted
        llm.reset()
        llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
        if a.d:
            llm.eval([rng.randrange(vocab) for _ in range(a.d)])
        toks = [rng.randrange(vocab) for _ in range(n)]
        t0 = time.perf_counter()
        if test.startswith("pp"):
            llm.eval(toks)
        else:
            for tok in toks:
                llm.eval([tok])
        dt = time.perf_counter() - t0
        if rep:
            speeds.append(n / dt)
    results.append({"test": test + (" @ d%d" % a.d if a.d else ""), "n_depth": a.d, "n_threads": a.t, "avg_ts": statistics.mean(speeds),
                    "stddev_ts": statistics.stdev(speeds) if len(speeds) > 1 else 0.0, "model": a.model})
print(json.dumps(results, indent=1))
