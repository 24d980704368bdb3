#!/usr/bin/env python3
"""Load test for `llama serve` (standard library only; loopback only; bounded).

For each concurrency level, that many clients each send streaming chat requests back to back
until the level's request count is reached; reports aggregate generated tokens/s, time to first
token and request latency percentiles, and checks every stream ended with [DONE] and usage.
Also samples the server's RSS (from /proc, when --pid or --start is used).

    python3 Tools/load_test.py --start .build/release/llama --levels 1 4 16 64 --requests 64 --max-tokens 64
    python3 Tools/load_test.py --start .build/release/llama --levels --soak 600 --soak-clients 16

    python3 Tools/load_test.py --start .build/release/llama --levels --faults

--faults sends 1,000 malformed requests of varied kinds, a flood past the queue limit and clients
that hang up mid-stream, then checks that a greedy request gets the answer it got before and that
the server's memory is back near where it was.
--soak SECONDS keeps that many clients sending requests for a fixed time (after the levels) and
prints the server's RSS every --soak-every seconds: memory should stay level once warmed up.
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


def soak(port, pid, clients, seconds, every, max_tokens):
    """Clients send requests back to back until the time is up; RSS is sampled as they run."""
    results, lock = [], threading.Lock()
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))
    counter_lock = threading.Lock()

    def worker():
        while time.perf_counter() < deadline:
            with counter_lock:
                i = next(counter)
            one_request(port, i, max_tokens, results, lock)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    samples = []
    print(f"soak: {clients} clients for {seconds} s")
    print(f"{'seconds':>7} {'requests':>8} {'failed':>6} {'rss MiB':>8}")
    while any(t.is_alive() for t in threads):
        time.sleep(min(every, max(0.1, deadline - time.perf_counter())) if time.perf_counter() < deadline else 1)
        with lock:
            n = len(results)
            failed = sum(1 for r in results if not (r["status"] == 200 and r["done"] and r["tokens"] is not None))
        rss = rss_mib(pid) if pid else float("nan")
        samples.append(rss)
        print(f"{time.perf_counter() - t0:>7.0f} {n:>8} {failed:>6} {rss:>8.0f}", flush=True)
    for t in threads:
        t.join()
    ok = [r for r in results if r["status"] == 200 and r["done"] and r["tokens"] is not None]
    tokens = sum(r["tokens"] for r in ok)
    elapsed = time.perf_counter() - t0
    # The first quarter of the samples is warm-up (allocator pools, the slots' caches).
    settled = samples[len(samples) // 4:] or samples
    summary = {"soak_seconds": round(elapsed), "clients": clients, "requests": len(results), "ok": len(ok),
               "tokens_per_second": tokens / elapsed, "rss_first_mib": samples[0] if samples else float("nan"),
               "rss_settled_min_mib": min(settled) if settled else float("nan"),
               "rss_settled_max_mib": max(settled) if settled else float("nan"),
               "rss_last_mib": samples[-1] if samples else float("nan")}
    print(f"soak: {len(ok)}/{len(results)} requests ok, {summary['tokens_per_second']:.1f} tok/s; RSS first "
          f"{summary['rss_first_mib']:.0f} MiB, after warm-up {summary['rss_settled_min_mib']:.0f}-"
          f"{summary['rss_settled_max_mib']:.0f} MiB, last {summary['rss_last_mib']:.0f} MiB")
    return summary, len(results) - len(ok)


def post(port, path, body, headers=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, body, headers or {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data, dict(resp.getheaders())


def raw(port, data):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        try:
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except OSError:
            pass


def greedy(port):
    body = json.dumps({"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0, "max_tokens": 24})
    status, data, _ = post(port, "/v1/chat/completions", body)
    assert status == 200, (status, data)
    return json.loads(data)["choices"][0]["message"]["content"]


def metric(port, name):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return float("nan")


def faults(port, pid):
    """Malformed requests, a flood past the queue, mid-stream hang-ups; then the server must be as before."""
    import random
    import socket
    rng = random.Random(7)
    before_answer = greedy(port)

    def stream(i, max_tokens=16):
        body = json.dumps({"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": max_tokens, "stream": True})
        try:
            status, data, headers = post(port, "/v1/chat/completions", body)
            return status, status == 200 and data.rstrip().endswith(b"data: [DONE]"), headers.get("Retry-After") or headers.get("retry-after")
        except Exception as e:  # noqa: BLE001
            return f"error: {e}", False, None

    # Warm-up: every slot's cache grows to the lengths the flood below reaches (the cache keeps
    # its high-water mark), so the baseline is the server's working size, not its empty size.
    warm = [threading.Thread(target=stream, args=(i,)) for i in range(48)]
    for t in warm:
        t.start()
    for t in warm:
        t.join()
    baseline = rss_mib(pid) if pid else float("nan")
    user = {"role": "user", "content": "hi"}
    kinds = [
        ("/v1/chat/completions", b"{"), ("/v1/chat/completions", b"[]"), ("/v1/chat/completions", b"null"),
        ("/v1/chat/completions", b'{"messages": []}'), ("/v1/chat/completions", b'{"messages": "hi"}'),
        ("/v1/chat/completions", json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode()),
        ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": 5}]}).encode()),
        ("/v1/chat/completions", json.dumps({"messages": [user], "temperature": "hot"}).encode()),
        ("/v1/chat/completions", json.dumps({"messages": [user], "max_tokens": -3}).encode()),
        ("/v1/chat/completions", json.dumps({"messages": [user], "top_p": [1]}).encode()),
        ("/v1/chat/completions", json.dumps({"messages": [user], "stop": {"a": 1}}).encode()),
        ("/v1/chat/completions", json.dumps({"messages": [user], "stream": "yes"}).encode()),
        ("/v1/chat/completions", json.dumps({"messages": [user], "n": 3}).encode()),
        ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "word " * 5000}]}).encode()),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud800"}]}'),  # a lone surrogate
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "' + bytes([0xFF, 0xFE, 0x80]) + b'"}]}'),
        ("/v1/completions", json.dumps({"prompt": [1, -4]}).encode()), ("/v1/completions", json.dumps({"prompt": ""}).encode()),
        ("/v1/completions", json.dumps({"prompt": 12}).encode()), ("/v1/completions", json.dumps({"prompt": "x", "logprobs": 99}).encode()),
        ("/v1/completions", json.dumps({"prompt": [10**12]}).encode()),
        ("/detokenize", json.dumps({"tokens": ["a"]}).encode()), ("/tokenize", json.dumps({"text": "a"}).encode()),
    ]
    statuses = {}
    not_json = 0
    for i in range(1000):
        if i % 50 == 49:  # not HTTP at all, or a body shorter than its Content-Length
            raw(port, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) if i % 100 == 49 else
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"prompt\"")
            statuses["(raw)"] = statuses.get("(raw)", 0) + 1
            continue
        path, body = kinds[i % len(kinds)]
        status, data, _ = post(port, path, body)
        statuses[status] = statuses.get(status, 0) + 1
        try:
            if "error" not in json.loads(data):
                not_json += 1
        except ValueError:
            not_json += 1
    print(f"faults: 1000 malformed requests -> {dict(sorted(statuses.items(), key=str))}; answers without a JSON error: {not_json}")
    bad = not_json + sum(n for s, n in statuses.items() if s not in (400, 413, "(raw)"))

    # A flood: far more streaming requests at once than slots + queue.
    flood = []
    lock = threading.Lock()

    def flooder(i):
        result = stream(i)
        with lock:
            flood.append(result)

    threads = [threading.Thread(target=flooder, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    served = sum(1 for s, ok, _ in flood if s == 200 and ok)
    refused = sum(1 for s, _, r in flood if s == 503 and r)
    other = len(flood) - served - refused
    print(f"faults: flood of 200 at once -> {served} served, {refused} refused with 503 + Retry-After, {other} other")
    bad += other

    # Clients that hang up after the first streamed chunk.
    def hang_up(i):
        body = json.dumps({"messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": 400, "stream": True}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            got = b""
            while b"data: " not in got:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk

    threads = [threading.Thread(target=hang_up, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(2)
    active = metric(port, "llama_requests_active")
    print(f"faults: 50 clients hung up mid-stream; active requests 2 s later: {active:.0f}")
    if active != 0:
        bad += 1

    after_answer = greedy(port)
    same = after_answer == before_answer
    after = rss_mib(pid) if pid else float("nan")
    print(f"faults: greedy answer afterwards {'equals' if same else 'DIFFERS FROM'} the one before: {after_answer!r}")
    print(f"faults: RSS {baseline:.0f} MiB after warm-up, {after:.0f} MiB after the faults")
    return bad + (0 if same else 1)


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
    ap.add_argument("--levels", type=int, nargs="*", default=[1, 4, 16, 64])
    ap.add_argument("--requests", type=int, default=64, help="requests per level (at least the level)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--soak", type=float, default=0, help="then run --soak-clients clients for this many seconds")
    ap.add_argument("--soak-clients", type=int, default=16)
    ap.add_argument("--soak-every", type=float, default=30, help="seconds between RSS samples during the soak")
    ap.add_argument("--faults", action="store_true", help="malformed requests, a flood and hang-ups, then check the server")
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
        soak_failed = 0
        if args.faults:
            soak_failed += faults(port, pid)
        if args.soak > 0:
            summary, soak_failed = soak(port, pid, args.soak_clients, args.soak, args.soak_every, args.max_tokens)
            rows.append(summary)
        if args.json:
            print(json.dumps(rows))
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=60)
    bad = sum(r["requests"] - r["ok"] for r in rows if "soak_seconds" not in r) + soak_failed
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
