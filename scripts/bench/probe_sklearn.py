#!/usr/bin/env python3
"""Probe-sweep speed: pragma vs scikit-learn on the same activations, same machine, one run.

Both sides do the same work per layer: standardise on train, fit L2 logistic regression
for every C of the grid (lbfgs, gradient tolerance 1e-6 on the mean loss, which is
pragma's stopping rule), score validation to choose C, score test (AUROC, accuracy), and
difference of means. Bootstrap CIs are off on both sides (--bootstrap 0).

    cargo build --release
    target/release/pragma probe train --data examples/probes/facts.jsonl \
        --save-features --out runs/probe-facts          # once: the activations
    python3 scripts/bench/probe_sklearn.py runs/probe-facts/features.safetensors \
        examples/probes/facts.jsonl

Prints pragma's fit time (from results.json, `fit_seconds`), scikit-learn's, and the ratio.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import sklearn
from safetensors.numpy import load_file
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
C_GRID = [0.0001, 0.001, 0.01, 0.1, 1.0]


def sklearn_sweep(feats, tol):
    y = feats["labels"].astype(np.int64)
    split = feats["split"]
    tr, va, te = split == 0, split == 1, split == 2
    layers = sorted(int(k.split(".")[1]) for k in feats if k.startswith("blocks."))
    best = {}
    t = time.perf_counter()
    for layer in layers:
        x = feats["blocks.%d.hook_resid_post" % layer].astype(np.float64)
        sc = StandardScaler().fit(x[tr])
        xs = sc.transform(x)
        top = None
        for c in C_GRID:
            m = LogisticRegression(C=c, tol=tol, max_iter=2000).fit(xs[tr], y[tr])
            v = roc_auc_score(y[va], m.decision_function(xs[va]))
            if top is None or v > top[0] + 1e-12:
                top = (v, m)
        s = top[1].decision_function(xs[te])
        acc = ((s > 0) == (y[te] == 1)).mean()
        d = x[tr][y[tr] == 1].mean(0) - x[tr][y[tr] == 0].mean(0)
        best[layer] = (roc_auc_score(y[te], s), acc, roc_auc_score(y[te], x[te] @ d))
    return time.perf_counter() - t, best


def main():
    features, data = sys.argv[1], sys.argv[2]
    feats = load_file(features)
    n, d = feats[next(k for k in feats if k.startswith("blocks."))].shape
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [os.path.join(ROOT, "target", "release", "pragma"), "probe", "train",
               "--data", data, "--features", features, "--bootstrap", "0",
               "--c", ",".join(map(str, C_GRID)), "--out", tmp]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        res = json.load(open(os.path.join(tmp, "results.json")))
    t_pragma = res["fit_seconds"]
    t_sk, best = sklearn_sweep(feats, 1e-6)
    t_sk4, _ = sklearn_sweep(feats, 1e-4)
    auc_diff = max(abs(best[r["layer"]][0] - r["logistic"]["test_auroc"]) for r in res["layers"])
    print("probe sweep on %d examples x %d layers x d=%d, C grid %s (%s)" % (
        n, len(res["layers"]), d, C_GRID, os.path.basename(data)))
    print("pragma fit_seconds %.2f (rayon, %d cpus)" % (t_pragma, os.cpu_count()))
    print("sklearn %s, tol 1e-6: %.2f s -> pragma is %.1fx faster" % (sklearn.__version__, t_sk, t_sk / t_pragma))
    print("sklearn %s, tol 1e-4 (its default): %.2f s -> pragma is %.1fx faster" % (sklearn.__version__, t_sk4, t_sk4 / t_pragma))
    print("max |test AUROC pragma - sklearn| over layers (tol 1e-6): %.2e" % auc_diff)


if __name__ == "__main__":
    main()
