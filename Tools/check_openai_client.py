#!/usr/bin/env python3
"""Drive `llama serve` with the official `openai` Python client (dev-time; `pip install openai`).

Starts the server itself (or uses --base-url), then checks chat and text completions, streamed
and not, with stop, seed, max_tokens and logprobs; that streamed text equals non-streamed text
for the same seed; that a greedy completion equals `llama run`; and that errors come back as
the client's own exception types. Exits non-zero on the first failure.

    python3 Tools/check_openai_client.py --llama .build/release/llama [-m MODEL]
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import time

try:
    import openai
except ImportError:
    print("openai is not installed (pip install openai); skipping", file=sys.stderr)
    sys.exit(0 if os.environ.get("SKIP_WITHOUT_OPENAI") else 2)


def start_server(llama, model, port):
    cmd = [llama, "serve", "--port", str(port), "-p", "4", "-c", "2048"] + (["-m", model] if model else [])
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"server exited: {proc.wait()}")
        m = re.search(r"listening on http://[\d.]+:(\d+)", line)
        if m:
            return proc, int(m.group(1))
    raise SystemExit("server did not start")


def check(cond, what):
    if not cond:
        raise SystemExit("FAIL: " + what)
    print("ok:", what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama", default=".build/release/llama")
    ap.add_argument("-m", "--model")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--base-url")
    args = ap.parse_args()

    proc = None
    if args.base_url:
        base = args.base_url
    else:
        proc, port = start_server(args.llama, args.model, args.port)
        base = f"http://127.0.0.1:{port}/v1"
    try:
        client = openai.OpenAI(base_url=base, api_key="unused")
        model = client.models.list().data[0].id
        check(bool(model), f"models.list -> {model!r}")

        # A prompt found in a slot's cache only recomputes its last token; with quantized weights that
        # token's logits can differ slightly from a whole-prompt batch (as in llama.cpp), so the
        # comparisons below are between requests that all find their prompt cached (a first
        # request warms the cache).
        messages = [{"role": "user", "content": "Name three colours."}]
        client.chat.completions.create(model=model, messages=messages, max_tokens=1)
        a = client.chat.completions.create(model=model, messages=messages, max_tokens=24, seed=7, temperature=0.9)
        b = client.chat.completions.create(model=model, messages=messages, max_tokens=24, seed=7, temperature=0.9)
        check(a.choices[0].message.content == b.choices[0].message.content, "chat: the same seed gives the same answer")
        check(a.usage.completion_tokens <= 24 and a.usage.prompt_tokens > 0, "chat: usage within max_tokens")
        check(a.choices[0].finish_reason in ("stop", "length"), "chat: finish_reason")

        chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=24, seed=7, temperature=0.9,
                                                     stream=True, stream_options={"include_usage": True}))
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        check(streamed == a.choices[0].message.content, "chat: streamed text equals the non-streamed text")
        check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == a.usage.completion_tokens,
              "chat: the last chunk carries usage")
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        check(finish == [a.choices[0].finish_reason], "chat: one finish_reason at the end of the stream")

        lp = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0, logprobs=True,
                                            top_logprobs=3)
        content = lp.choices[0].logprobs.content
        check(len(content) == lp.usage.completion_tokens and all(len(t.top_logprobs) == 3 for t in content),
              "chat: logprobs for every token with 3 alternatives")
        check(all(t.logprob <= 0 and t.top_logprobs[0].logprob >= t.logprob - 1e-6 for t in content),
              "chat: greedy tokens are the most likely")

        fresh = client.completions.create(model=model, prompt="One, two, three, four,", max_tokens=30, temperature=0)
        full = client.completions.create(model=model, prompt="One, two, three, four,", max_tokens=30, temperature=0)
        text = full.choices[0].text
        cut = text[5:10].strip() or text[:3]
        stopped = client.completions.create(model=model, prompt="One, two, three, four,", max_tokens=30, temperature=0, stop=[cut])
        check(stopped.choices[0].finish_reason == "stop" and stopped.choices[0].text == text[:text.index(cut)],
              f"completion: stop={cut!r} cuts the text before it")
        lim = client.completions.create(model=model, prompt="One, two, three, four,", max_tokens=5, temperature=0)
        check(lim.usage.completion_tokens == 5 and lim.choices[0].finish_reason == "length", "completion: max_tokens")
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model=model, prompt="One, two, three, four,", max_tokens=30, temperature=0, stream=True) if c.choices)
        check(streamed == text, "completion: streamed text equals the non-streamed text")
        lpc = client.completions.create(model=model, prompt="One, two,", max_tokens=4, temperature=0, logprobs=2)
        check(len(lpc.choices[0].logprobs.token_logprobs) == 4 and len(lpc.choices[0].logprobs.top_logprobs[0]) == 2,
              "completion: logprobs=2")

        if not args.base_url:
            run = subprocess.run([args.llama, "run", "--temp", "0", "-n", "30", "One, two, three, four,"]
                                 + (["-m", args.model] if args.model else []), capture_output=True, text=True, check=True)
            first = fresh.choices[0].text
            check(run.stdout == "One, two, three, four," + first + "\n", "greedy completion (prompt not cached) equals `llama run`")

        try:
            client.chat.completions.create(model=model, messages=[{"role": "robot", "content": "x"}])
            check(False, "an unknown role is refused")
        except openai.BadRequestError as e:
            check("role" in str(e), "an unknown role is a BadRequestError naming the field")
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    print("all checks passed")


if __name__ == "__main__":
    main()
