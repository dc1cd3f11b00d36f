#!/usr/bin/env python3
"""Activation patching speed: TransformerLens against `pragma patch`, same machine, one run.

Times TransformerLens 2.11's `patching.get_act_patch_resid_pre` (float32 copy of the
model built as in scripts/fixtures/make_tl_fixture.py, torch with 2 threads) and
`pragma patch --hooks resid` (the default model, its Q4_1 weights) on the same prompt
pair, and prints both, the ratio, and the largest difference between their grids.

Usage (TransformerLens in the interpreter, e.g. /opt/tl-venv/bin/python):
  python scripts/bench/patching_vs_tl.py [--pragma target/release/pragma] [--pair 1]
"""

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "fixtures"))
import make_patching_fixture as pf  # noqa: E402
import make_smollm2_fixtures as m  # noqa: E402
import make_tl_fixture as tlf  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pragma", default="target/release/pragma")
    ap.add_argument("--pair", type=int, default=1)
    a = ap.parse_args()
    import torch
    from transformer_lens import patching

    torch.set_num_threads(2)
    p = pf.PAIRS[a.pair]
    cfg, w_gguf, _ = m.load_weights(m.default_gguf())
    model = copy.deepcopy(tlf.build_model(cfg, m.to_hf_layout(cfg, w_gguf), torch)).to(torch.float32)
    model.cfg.dtype = torch.float32
    good, bad = p["good"][1], p["bad"][1]
    clean = torch.tensor([p["clean_ids"]])
    corrupt = torch.tensor([p["corrupt_ids"]])
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
        t0 = time.perf_counter()
        tl = patching.get_act_patch_resid_pre(
            model, corrupt, clean_cache, lambda lg: lg[0, -1, good] - lg[0, -1, bad]).numpy()
        t_tl = time.perf_counter() - t0
    metric = f'logit-diff:"{p["good"][0]}","{p["bad"][0]}"'
    t0 = time.perf_counter()
    out = subprocess.run([a.pragma, "patch", "--clean", p["clean"], "--corrupt", p["corrupt"],
                          "--metric", metric, "--hooks", "resid", "--json"],
                         check=True, capture_output=True, text=True).stdout
    t_pragma = time.perf_counter() - t0
    r = json.loads(out)
    ours = np.array(r["grids"][0]["raw"])
    print(json.dumps({
        "pair": p["clean"], "runs": int(tl.size),
        "transformer_lens_s": round(t_tl, 2), "pragma_s_total": round(t_pragma, 2),
        "pragma_s_sweep": round(r["seconds"], 2),
        "ratio_total": round(t_tl / t_pragma, 1), "ratio_sweep": round(t_tl / r["seconds"], 1),
        "max_abs_diff": float(np.abs(ours - tl).max()),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
