#!/usr/bin/env python3
"""Markdown report of one scripts/bench/run.sh run: every metric for every tool,
and the ratios pragma/llama.cpp and pragma/HF.

Reads DIR/{pragma,llamacpp,hf}.json (or DIR/NAME.skipped), DIR/loadavg.txt.
For tok/s a ratio > 1 means pragma is faster; for RSS a ratio < 1 means pragma
uses less memory. Capture overhead is compared in percentage points (and as a
ratio where the reference's overhead is big enough for one to mean something).

Usage: python3 scripts/bench/report.py bench-results/latest
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

TOOLS = [("pragma", "pragma"), ("llamacpp", "llama.cpp"), ("hf", "HF transformers")]


def load(d, name):
    try:
        return json.loads((d / f"{name}.json").read_text()), None
    except (OSError, ValueError):
        skipped = d / f"{name}.skipped"
        return None, skipped.read_text().strip() if skipped.exists() else "skipped (no result)"


def machine():
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name"))
    except (OSError, StopIteration):
        model = "?"
    return model, os.cpu_count(), len(os.sched_getaffinity(0))


def fmt(v, kind):
    if v is None:
        return "—"
    return {"tps": f"{v:,.1f}", "pct": f"{v * 100:+.1f}%", "mib": f"{v:,.0f}", "s": f"{v:.2f}"}[kind]


def ratio(p, r, kind):
    if p is None or r is None or (kind != "pct" and not r):
        return "—"
    if kind == "pct":
        pp = f"{(p - r) * 100:+.1f} pp"
        return f"{p / r:.2f}× ({pp})" if r >= 0.02 else pp
    return f"{p / r:.2f}×"


def main():
    d = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results/latest")
    res = {name: load(d, name) for name, _ in TOOLS}
    p = res["pragma"][0] or {}
    any_json = next((j for j, _ in res.values() if j), {})
    batch, seq, dec = (any_json.get(k, "?") for k in ("prefill_batch", "prefill_seq", "decode_tokens"))
    rows = [
        (f"prefill tok/s ({batch}×{seq}, last-position logits)", "prefill_tok_s", "tps"),
        ("prefill + capture all resid_post, tok/s", "prefill_capture_all_resid_tok_s", "tps"),
        ("capture overhead", "capture_overhead", "pct"),
        (f"decode tok/s ({dec} greedy after a 16-token prompt)", "decode_tok_s", "tps"),
        ("peak RSS MiB", "peak_rss_mib", "mib"),
        ("peak RSS after load MiB", "peak_rss_after_load_mib", "mib"),
        ("load s", "load_s", "s"),
    ]
    cpu, ncpu, avail = machine()
    out = [
        f"## pragma bench vs references ({d.name})",
        "",
        f"Machine: {cpu}, {ncpu} CPUs ({avail} available); report {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "",
        "| metric | " + " | ".join(t for _, t in TOOLS) + " | pragma / llama.cpp | pragma / HF |",
        "|---|" + "---:|" * (len(TOOLS) + 2),
    ]
    for label, key, kind in rows:
        vals = [(res[n][0] or {}).get(key) for n, _ in TOOLS]
        out.append(
            f"| {label} | " + " | ".join(fmt(v, kind) for v in vals)
            + f" | {ratio(vals[0], vals[1], kind)} | {ratio(vals[0], vals[2], kind)} |"
        )
    out.append("")
    loads = {}
    if (d / "loadavg.txt").exists():
        loads = dict(l.split(" ", 1) for l in (d / "loadavg.txt").read_text().splitlines() if " " in l)
    for name, title in TOOLS:
        j, why = res[name]
        if j is None:
            out.append(f"- {title}: {why}")
            continue
        extra = {k: j[k] for k in ("llama_cpp_python", "torch", "transformers", "blas", "attn_implementation", "prefill_mode") if k in j}
        desc = ", ".join(f"{k} {v}" for k, v in extra.items())
        load_s = f"; load average before: {loads[name]}" if name in loads else ""
        if "blas" in j and "openblas" not in (j["blas"] or ""):
            desc += " (reference BLAS, ~10x slow: apt-get install libopenblas0-openmp)"
        out.append(f"- {title}: {j.get('threads')} threads" + (f", {desc}" if desc else "") + load_s)
        shown = {key for _, key, _ in rows} | {"threads", "prefill_batch", "prefill_seq", "decode_tokens"}
        more = {k: v for k, v in j.items() if k not in shown and isinstance(v, (int, float)) and v is not True}
        if more:  # metrics only this tool reports (e.g. pragma's --cache-tokens)
            out.append("  - also: " + ", ".join(f"{k} {v:,.1f}" if abs(v) >= 100 else f"{k} {v:.3g}" for k, v in more.items()))
    out += [
        "",
        "tok/s ratios > 1: pragma faster; RSS ratio < 1: pragma smaller. "
        "Best of N after a warm-up; each tool in its own process, one after another.",
    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
