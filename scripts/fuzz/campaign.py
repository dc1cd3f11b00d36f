#!/usr/bin/env python3
"""Run every fuzz target (fuzz/fuzz_targets/) for a stated time and print, per target,
the executions, executions per second, coverage at start and end (libFuzzer's `cov`,
edges reached), the corpus, and crashes; then replay every saved regression input
(fuzz/regressions/TARGET/*, crashes found earlier and since fixed).

    python3 scripts/fuzz/campaign.py --runs 20000 --seed 1 # CI: each target briefly, deterministically
    python3 scripts/fuzz/campaign.py --seconds 300 --md    # a campaign, as RELIABILITY.md's table

Builds the targets with `cargo fuzz build --sanitizer none --debug-assertions` (stable
Rust; debug assertions turn integer overflow into a crash). libFuzzer runs with
-rss_limit_mb=2048, -malloc_limit_mb=1024 (one allocation over 1 GiB is a crash: a
length field must not make pragma allocate what the file does not hold) and -timeout=10
(one input over 10 s is a crash). The working corpus is fuzz/corpus/TARGET (kept between
runs, not committed); it starts from fuzz/seeds/TARGET. A crash's input is written to
fuzz/artifacts/TARGET/. Exits 1 if any target crashed or a regression input fails.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FUZZ = os.path.join(ROOT, "fuzz")
BIN = os.path.join(FUZZ, "target", "x86_64-unknown-linux-gnu", "release")
LIMITS = ["-rss_limit_mb=2048", "-malloc_limit_mb=1024", "-timeout=10"]


def targets():
    return sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(FUZZ, "fuzz_targets", "*.rs")))


def run_target(t, seconds, runs=None, seed=None):
    corpus = os.path.join(FUZZ, "corpus", t)
    seeds = os.path.join(FUZZ, "seeds", t)
    artifacts = os.path.join(FUZZ, "artifacts", t)
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(artifacts, exist_ok=True)
    before = set(os.listdir(artifacts))
    cmd = [os.path.join(BIN, t), corpus, seeds, f"-max_total_time={seconds}", "-print_final_stats=1",
           f"-artifact_prefix={artifacts}/"] + LIMITS
    if runs is not None:
        cmd.append(f"-runs={runs}")
    if seed is not None:
        cmd.append(f"-seed={seed}")
    t0 = time.time()
    p = subprocess.run(cmd, cwd=FUZZ, capture_output=True, text=True, errors="replace")
    wall = time.time() - t0
    log = p.stderr
    with open(os.path.join(FUZZ, "artifacts", f"{t}.log"), "w") as f:
        f.write(log)
    cov = [int(m) for m in re.findall(r"^#\d+\s+\w+\s+cov: (\d+)", log, re.M)]
    inited = re.search(r"INITED cov: (\d+)", log)
    execs = re.search(r"stat::number_of_executed_units: (\d+)", log)
    corp = re.findall(r"corp: (\d+)/", log)
    new = sorted(set(os.listdir(artifacts)) - before)
    kind = None
    if p.returncode != 0:
        for pat in [r"panicked at ([^\n]+)", r"(out-of-memory \([^)]*\))", r"(malloc\(\d+\)[^\n]*)",
                    r"ERROR: libFuzzer: ([^\n]+)", r"(timeout after \d+ seconds)"]:
            m = re.search(pat, log)
            if m:
                kind = m.group(1).strip()
                break
        kind = kind or f"exit {p.returncode}"
    return {
        "target": t,
        "seconds": round(wall, 1),
        "executions": int(execs.group(1)) if execs else None,
        "exec_per_s": round(int(execs.group(1)) / wall) if execs and wall > 0 else None,
        "cov_start": int(inited.group(1)) if inited else (cov[0] if cov else None),
        "cov_end": max(cov) if cov else None,
        "corpus": int(corp[-1]) if corp else None,
        "crash": kind,
        "crash_inputs": [os.path.join(artifacts, n) for n in new],
    }


def replay(t):
    """Run the target once on each saved regression input; (inputs, failures)."""
    files = sorted(glob.glob(os.path.join(FUZZ, "regressions", t, "*")))
    if not files:
        return 0, []
    p = subprocess.run([os.path.join(BIN, t)] + LIMITS + files, cwd=FUZZ,
                       capture_output=True, text=True, errors="replace")
    return len(files), ([] if p.returncode == 0 else [p.stderr[-2000:]])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10, help="per target (default 10; with --runs, at most)")
    ap.add_argument("--runs", type=int, help="stop each target after this many inputs")
    ap.add_argument("--seed", type=int, help="libFuzzer's random seed (with --runs and a fresh corpus: a fixed set of inputs)")
    ap.add_argument("--fresh", action="store_true", help="start from the seeds alone (empty the working corpus)")
    ap.add_argument("--targets", help="comma-separated (default: all)")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    ap.add_argument("--md", action="store_true", help="print a markdown table")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    a = ap.parse_args()
    ts = a.targets.split(",") if a.targets else targets()
    missing = [os.path.relpath(d, ROOT) for d in
               [os.path.join(FUZZ, "seeds", t) for t in ts] + [os.path.join(FUZZ, "seeds", "fixed", "tiny.gguf")]
               if not os.path.exists(d)]
    if missing:
        print(f"error: expected the committed seeds, found none at: {', '.join(missing)} "
              "(write them with: python3 scripts/fuzz/make_seeds.py)", file=sys.stderr)
        return 2
    if not a.no_build:
        subprocess.run(["cargo", "fuzz", "build", "--sanitizer", "none", "--debug-assertions"],
                       cwd=FUZZ, check=True)
    results, failed = [], False
    for t in ts:
        if a.fresh:
            import shutil
            shutil.rmtree(os.path.join(FUZZ, "corpus", t), ignore_errors=True)
        r = run_target(t, a.seconds, a.runs, a.seed)
        n, fails = replay(t)
        r["regressions"] = n
        r["regressions_failing"] = len(fails)
        results.append(r)
        failed |= bool(r["crash"]) or bool(fails)
        print(f"{t:18} {r['executions'] or 0:>10} execs {r['exec_per_s'] or 0:>7}/s  "
              f"cov {r['cov_start']}->{r['cov_end']}  corpus {r['corpus']}  "
              f"regressions {n - len(fails)}/{n} pass  "
              f"{'CRASH: ' + r['crash'] + ' ' + ' '.join(r['crash_inputs']) if r['crash'] else 'no crash'}",
              file=sys.stderr, flush=True)
        for f in fails:
            print(f, file=sys.stderr)
    if a.json:
        print(json.dumps(results, indent=2))
    if a.md:
        print("| target | seconds | executions | exec/s | coverage start -> end | corpus | regression inputs | crashes |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in results:
            print(f"| {r['target']} | {r['seconds']} | {r['executions']} | {r['exec_per_s']} | "
                  f"{r['cov_start']} -> {r['cov_end']} | {r['corpus']} | {r['regressions']} | "
                  f"{r['crash'] or 0} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
