#!/usr/bin/env python3
"""Load test for `llama serve` (standard library only; loopback only; bounded).

For each concurrency level, that many clients each send streaming chat requests back to back
until the level's request count is reached; reports aggregate generated tokens/s, time to first
token and request latency percentiles, and checks every stream ended with [DONE] and usage.
Also samples the server's RSS (from /proc, when --pid or --start is used).

    python3 Tools/load_test.py --start .build/release/llama --levels 1 4 16 64 --requests 64 --max-tokens 64
"""
import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import threading
import time

PROMPTS = [
    "Tell me about the moon.", "How do I boil an egg?", "Write a haiku about rain.", "What is a prime number?",
    "Name some fruits that are red.", "Why is the sky blue?", "Give me a tip for learning to code.", "What is Swift?",
]


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def one_request(port, i, max_tokens, results, lock):
    body = json.dumps({"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": max_tokens,
                       "temperature": 0.8, "seed": i, "stream": True, "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    first = None
    tokens = None
    done = False
    status = None
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        status = resp.status
        if status == 200:
            buffer = b""
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    break
                buffer += chunk
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    if not event.startswith(b"data: "):
                        continue
                    payload = event[6:]
                    if payload == b"[DONE]":
                        done = True
                        continue
                    d = json.loads(payload)
                    if d.get("choices") and d["choices"][0].get("delta", {}).get("content") and first is None:
                        first = time.perf_counter() - t0
                    if d.get("usage"):
                        tokens = d["usage"]["completion_tokens"]
        else:
            resp.read()
        conn.close()
    except Exception as e:  # noqa: BLE001 - every failure is counted
        status = f"error: {e}"
    with lock:
        results.append({"status": status, "ttft": first, "latency": time.perf_counter() - t0, "tokens": tokens, "done": done})


def run_level(port, clients, requests, max_tokens):
    results, lock = [], threading.Lock()
    counter = iter(range(requests))
    counter_lock = threading.Lock()

    def worker():
        while True:
            with counter_lock:
                i = next(counter, None)
            if i is None:
                return
            one_request(port, i, max_tokens, results, lock)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--start", help="path of the llama binary: start `llama serve` on a free port")
    ap.add_argument("--server-args", default="-p 16 -c 1024", help="extra arguments for --start")
    ap.add_argument("--pid", type=int, help="server pid, for RSS")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--requests", type=int, default=64, help="requests per level (at least the level)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    proc = None
    port, pid = args.port, args.pid
    if args.start:
        proc = subprocess.Popen([args.start, "serve", "--port", "0"] + args.server_args.split(), stderr=subprocess.PIPE, text=True)
        while True:
            line = proc.stderr.readline()
            if not line:
                sys.exit("server exited")
            m = re.search(r"listening on http://[\d.]+:(\d+)", line)
            if m:
                port, pid = int(m.group(1)), proc.pid
                break
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    rows = []
    try:
        print(f"{'clients':>7} {'requests':>8} {'ok':>4} {'tok/s':>8} {'ttft p50':>9} {'ttft p95':>9} {'lat p50':>8} {'lat p95':>8} {'lat max':>8} {'rss MiB':>8}")
        for level in args.levels:
            results, seconds = run_level(port, level, max(args.requests, level), args.max_tokens)
            ok = [r for r in results if r["status"] == 200 and r["done"] and r["tokens"] is not None]
            tokens = sum(r["tokens"] for r in ok)
            ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
            lat = [r["latency"] for r in ok]
            row = {"clients": level, "requests": len(results), "ok": len(ok), "tokens_per_second": tokens / seconds,
                   "ttft_p50": pct(ttft, 50), "ttft_p95": pct(ttft, 95), "latency_p50": pct(lat, 50),
                   "latency_p95": pct(lat, 95), "latency_max": max(lat) if lat else float("nan"),
                   "rss_mib": rss_mib(pid) if pid else float("nan"),
                   "failures": sorted({str(r["status"]) for r in results if r not in ok})}
            rows.append(row)
            print(f"{level:>7} {len(results):>8} {len(ok):>4} {row['tokens_per_second']:>8.1f} {row['ttft_p50']:>9.3f} "
                  f"{row['ttft_p95']:>9.3f} {row['latency_p50']:>8.2f} {row['latency_p95']:>8.2f} {row['latency_max']:>8.2f} "
                  f"{row['rss_mib']:>8.0f}" + (f"  failures: {row['failures']}" if row["failures"] else ""), flush=True)
        if len(rows) > 1 and rows[0]["clients"] == 1:
            for r in rows[1:]:
                print(f"{r['clients']} clients: {r['tokens_per_second'] / rows[0]['tokens_per_second']:.2f}x one client's tokens/s")
        if args.json:
            print(json.dumps(rows))
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=60)
    bad = sum(r["requests"] - r["ok"] for r in rows)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
