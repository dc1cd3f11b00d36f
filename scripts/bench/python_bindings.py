#!/usr/bin/env python3
"""The Python bindings, measured: per-call overhead of `run_with_cache` on a short
prompt, and `run_with_cache` throughput against TransformerLens, same machine, one run.

1. Overhead: `Model.run_with_cache(prompt, names_filter=...)` wall time per call, against
   the same forward timed inside Rust (`Model._forward_seconds`: no numpy conversion, no
   argument parsing), both the median of N interleaved calls. Overhead = the difference
   over the forward.
2. Throughput: `run_with_cache` of a batch (8 x 128 tokens) caching every
   `hook_resid_post`, tokens/s: pragma_interp (default Q4_1 weights, and with
   PRAGMA_WEIGHTS=f32 dequantized at load) against TransformerLens 2.11's
   `HookedTransformer.run_with_cache` (float32 copy of the same weights built as in
   scripts/fixtures/make_tl_fixture.py, torch with as many threads as cores), best of
   `--reps`, rounds alternating between the two.

Usage (pragma_interp installed in python3; TransformerLens in --tl-python):
  python3 scripts/bench/python_bindings.py [--tl-python /opt/tl-venv/bin/python] [--reps 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEXT = ("The history of science is the study of the development of science and scientific knowledge, "
        "including both the natural and social sciences. ") * 20


def tokens(batch: int, seq: int):
    import pragma_interp as pragma

    ids = pragma.Model("smollm2-135m-instruct").to_tokens(TEXT)[:seq]
    return [ids] * batch


def pragma_side(batch: int, seq: int, reps: int, weights: str) -> dict:
    os.environ["PRAGMA_WEIGHTS"] = weights
    import pragma_interp as pragma

    m = pragma.Model("smollm2-135m-instruct")
    # 1. Overhead on a short prompt, interleaved.
    short = "The cat sat on the mat"
    names = "blocks.*.hook_resid_post"
    for _ in range(20):
        m.run_with_cache(short, names_filter=names)
    wall, inner = [], []
    for _ in range(200):
        t = time.perf_counter()
        m.run_with_cache(short, names_filter=names)
        wall.append(time.perf_counter() - t)
        inner.append(m._forward_seconds(short, names_filter=names))
    w, f = statistics.median(wall), statistics.median(inner)
    # 2. Throughput.
    ids = tokens(batch, seq)
    m.run_with_cache(ids, names_filter=names)
    best = min(_timed(lambda: m.run_with_cache(ids, names_filter=names)) for _ in range(reps))
    return {
        "weights": weights,
        "short_prompt_tokens": len(m.to_tokens(short)),
        "call_ms": w * 1e3,
        "forward_ms": f * 1e3,
        "overhead_fraction": (w - f) / f,
        "batch_seconds": best,
        "tokens_per_second": batch * seq / best,
    }


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def tl_side(batch: int, seq: int, reps: int, ids) -> dict:
    import copy

    import torch

    sys.path.insert(0, str(HERE.parent / "fixtures"))
    import make_smollm2_fixtures as m  # noqa: E402
    import make_tl_fixture as tlf  # noqa: E402

    torch.set_num_threads(os.cpu_count() or 1)
    cfg, w_gguf, _ = m.load_weights(m.default_gguf())
    model = copy.deepcopy(tlf.build_model(cfg, m.to_hf_layout(cfg, w_gguf), torch)).to(torch.float32)
    model.cfg.dtype = torch.float32
    toks = torch.tensor(ids)
    keep = lambda n: n.endswith("hook_resid_post")  # noqa: E731
    with torch.no_grad():
        model.run_with_cache(toks, names_filter=keep)
        best = min(_timed(lambda: model.run_with_cache(toks, names_filter=keep)) for _ in range(reps))
        short = torch.tensor([ids[0][:7]])
        for _ in range(5):
            model.run_with_cache(short, names_filter=keep)
        per = statistics.median(_timed(lambda: model.run_with_cache(short, names_filter=keep)) for _ in range(50))
    return {"batch_seconds": best, "tokens_per_second": batch * seq / best, "short_call_ms": per * 1e3,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tl-python", default="/opt/tl-venv/bin/python")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--side", choices=["driver", "pragma", "tl"], default="driver")
    ap.add_argument("--weights", default="native")
    ap.add_argument("--ids", default="")
    a = ap.parse_args()
    if a.side == "pragma":
        print(json.dumps(pragma_side(a.batch, a.seq, a.reps, a.weights)))
        return 0
    if a.side == "tl":
        print(json.dumps(tl_side(a.batch, a.seq, a.reps, json.loads(a.ids))))
        return 0
    ids = tokens(a.batch, a.seq)
    common = ["--batch", str(a.batch), "--seq", str(a.seq), "--reps", str(a.reps)]
    runs = {"pragma": [], "pragma_f32": [], "transformer_lens": []}
    for _ in range(a.rounds):
        for key, cmd in (
            ("pragma", [sys.executable, __file__, "--side", "pragma", "--weights", "native", *common]),
            ("pragma_f32", [sys.executable, __file__, "--side", "pragma", "--weights", "f32", *common]),
            ("transformer_lens", [a.tl_python, __file__, "--side", "tl", "--ids", json.dumps(ids), *common]),
        ):
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[key].append(json.loads(out.strip().splitlines()[-1]))
    best = {k: min(v, key=lambda r: r["batch_seconds"]) for k, v in runs.items()}
    tl = best["transformer_lens"]["tokens_per_second"]
    report = {
        "machine": f"{os.cpu_count()} CPUs",
        "workload": f"run_with_cache {a.batch}x{a.seq} tokens, every hook_resid_post",
        **best,
        "ratio_pragma_over_tl": best["pragma"]["tokens_per_second"] / tl,
        "ratio_pragma_f32_over_tl": best["pragma_f32"]["tokens_per_second"] / tl,
        "overhead_fraction_median_of_rounds": statistics.median(
            r["overhead_fraction"] for r in runs["pragma"] + runs["pragma_f32"]),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
