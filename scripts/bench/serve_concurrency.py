#!/usr/bin/env python3
"""Concurrency benchmark: `pragma serve` against llama.cpp's server on the same GGUF.

Runs each server in turn on 127.0.0.1 (2 threads each), sends the same chat requests
(greedy, `max_tokens` tokens, streamed so time to first token is seen) at concurrency 1,
4 and 8, and reports per setting: total generated tokens/s, mean tokens/s per request,
median time to first token. pragma also runs each setting steered (a registered vector
in the body's `pragma` field) and mixed (every other request steered, sharing decode
steps with the unsteered ones). Needs the `openai` client in this interpreter, and
`llama-cpp-python[server]` in `--llama-python`.

Usage:
  python3 scripts/bench/serve_concurrency.py --model M.gguf --vectors DIR --vector NAME \
      [--pragma target/release/pragma] [--llama-python /opt/llama-venv/bin/python] \
      [--requests 16] [--max-tokens 64] [--json out.json]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import openai

PROMPTS = [
    "Write a short review of the restaurant you visited yesterday.",
    "Explain why the sky is blue to a child.",
    "List three uses of a paperclip.",
    "What should I pack for a weekend hike?",
    "Describe your favourite season and why.",
    "Give me a tip for learning a new language.",
    "What makes a good cup of tea?",
    "Summarise the plot of a fairy tale you know.",
]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_up(base: str, proc, timeout: float = 120.0) -> str:
    client = openai.OpenAI(base_url=base, api_key="x", max_retries=0, timeout=5)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            return client.models.list().data[0].id
        except Exception:
            time.sleep(0.5)
    raise RuntimeError("server did not come up")


def one(base: str, model: str, prompt: str, max_tokens: int, extra: dict | None):
    client = openai.OpenAI(base_url=base, api_key="x", max_retries=0, timeout=600)
    t0 = time.perf_counter()
    first = None
    n = 0
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
        temperature=0, stream=True, stream_options={"include_usage": True}, extra_body=extra or {},
    )
    usage = None
    chunks = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
            if first is None:
                first = time.perf_counter() - t0
        if getattr(chunk, "usage", None):
            usage = chunk.usage
    total = time.perf_counter() - t0
    # llama-cpp-python's server sends no usage when streaming: one chunk per token there.
    n = usage.completion_tokens if usage else chunks
    return {"ttft": first if first is not None else total, "total": total, "tokens": n}


def run_setting(base, model, conc, requests, max_tokens, extra):
    """`extra`: one body extension for every request, or a list cycled over them."""
    extras = extra if isinstance(extra, list) else [extra]
    jobs = [(PROMPTS[i % len(PROMPTS)], extras[i % len(extras)]) for i in range(requests)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(conc) as ex:
        res = list(ex.map(lambda j: one(base, model, j[0], max_tokens, j[1]), jobs))
    wall = time.perf_counter() - t0
    toks = sum(r["tokens"] for r in res)
    return {
        "concurrency": conc,
        "requests": requests,
        "total_tok_s": toks / wall,
        "per_request_tok_s": statistics.mean(r["tokens"] / max(r["total"], 1e-9) for r in res),
        "ttft_median_s": statistics.median(r["ttft"] for r in res),
        "tokens": toks,
        "wall_s": wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--vectors", required=True)
    ap.add_argument("--vector", required=True)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--pragma", default="target/release/pragma")
    ap.add_argument("--llama-python", default="/opt/llama-venv/bin/python")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--json")
    a = ap.parse_args()
    concs = [int(c) for c in a.concurrency.split(",")]
    rows = []

    port = free_port()
    db = f"/tmp/pragma-bench-{os.getpid()}.db"
    proc = subprocess.Popen(
        [a.pragma, "serve", a.model, "--bind", f"127.0.0.1:{port}", "--vectors", a.vectors, "--db", db],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/v1"
        model = wait_up(base, proc)
        one(base, model, PROMPTS[0], 8, None)  # warm-up
        steer = {"pragma": {"steer": [{"vector": a.vector, "scale": a.scale}]}}
        for c in concs:
            # "mixed": every other request steered; they share decode steps.
            for label, extra in [("pragma", None), ("pragma steered", steer), ("pragma mixed", [None, steer])]:
                r = run_setting(base, model, c, a.requests, a.max_tokens, extra)
                r["server"] = label
                rows.append(r)
                print(json.dumps(r), flush=True)
    finally:
        proc.terminate()
        proc.wait()

    port = free_port()
    proc = subprocess.Popen(
        [a.llama_python, "-m", "llama_cpp.server", "--model", a.model, "--n_threads", "2",
         "--n_ctx", "4096", "--host", "127.0.0.1", "--port", str(port),
         # By default a new request interrupts the one streaming: queue them instead.
         "--interrupt_requests", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/v1"
        model = wait_up(base, proc)
        one(base, model, PROMPTS[0], 8, None)
        for c in concs:
            r = run_setting(base, model, c, a.requests, a.max_tokens, None)
            r["server"] = "llama.cpp server"
            rows.append(r)
            print(json.dumps(r), flush=True)
    except Exception as e:  # report, do not hide
        print(f"llama.cpp server: {e}", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait()

    print("\n| server | concurrency | total tok/s | per-request tok/s | median TTFT s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['server']} | {r['concurrency']} | {r['total_tok_s']:.1f} | "
              f"{r['per_request_tok_s']:.1f} | {r['ttft_median_s']:.2f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
