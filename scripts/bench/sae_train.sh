#!/usr/bin/env bash
# TopK SAE training throughput: pragma vs EleutherAI sparsify vs SAELens, same machine, one run.
#
# k 32, 4096 tokens per step, d_in 576 (SmolLM2-135M blocks.15.hook_resid_post), AuxK on as
# each tool enables it (dead window min(10M, STEPS*4096/4) tokens for all three), at each
# d_sae in D_SAES, one after another and each in its own process:
#   pragma    $PRAGMA sae train --arch topk --k 32 --d-sae N --tokens 4096*STEPS
#             --batch-tokens 4096 --checkpoint-every 1000000 --json (its Adam, f32)
#   sparsify  scripts/bench/sae_train_ref.py --lib sparsify  (its Trainer.fit, Adam)
#   SAELens   scripts/bench/sae_train_ref.py --lib saelens   (TopKTrainingSAE + SAETrainer.fit)
# then prints a markdown table (one line per run), the ratios pragma/sparsify and
# pragma/SAELens per width, and the CPU model (lscpu). Optimizer, loss and AuxK settings of
# the references: the header of sae_train_ref.py.
#
# What is timed:
#   references  WARMUP untimed steps, then STEPS steps on rows already in memory as float32
#               (read from the store, special-token rows left out, shuffled, before timing).
#   pragma      "pragma (run)": the tokens_per_second of its --json report, over its whole
#               training loop: all STEPS steps (the first one too; no warm-up), each step's
#               batch read from the store's shards (f16 -> f32), and after the last step one
#               checkpoint (weights + Adam state, ~250 MB at d_sae 18432), the SAE save and
#               loss.svg. Its input-scale estimate and initialisation run before its clock
#               starts. This fixed overhead matters at small STEPS.
#               "pragma (steps)": the same run timed like the references, from its log.jsonl
#               (cumulative tokens_per_second per step): steps WARMUP+1..STEPS only.
#   The ratios are given for both.
#
# Usage: scripts/bench/sae_train.sh [STORE [PRAGMA]]
#   STORE   a pragma activation store with blocks.15.hook_resid_post (default /tmp/rm/fort15),
#           made with (~300k tokens of the built-in fortunes corpus, a few minutes):
#             target/release/pragma cache --data fortunes --hooks blocks.15.hook_resid_post \
#                 --max-tokens 300000 --out /tmp/rm/fort15
#   PRAGMA  the pragma binary (default target/release/pragma; `cargo build --release`)
#   env: STEPS=30 (timed steps), WARMUP=2, THREADS=2, D_SAES="4608 18432",
#        SAE_PYTHON=/opt/sae-venv/bin/python (Debian torch 1.13 + sae-lens 6.54.12 +
#        eai-sparsify 1.3.3; setup in scripts/fixtures/make_sae_fixtures.py),
#        OUT=bench-results/sae-<date> (JSON, logs, report.md),
#        OPENBLAS_DIR: see below.
#
# BLAS: Debian's torch multiplies in the system libblas.so.3, netlib's reference BLAS unless
# OpenBLAS is installed, which makes the references 10-20x slower than they are. Do
#   apt-get install libopenblas0-openmp
# or, without touching the system, unpack it and point OPENBLAS_DIR at it:
#   apt-get download libopenblas0-openmp && dpkg-deb -x libopenblas0-openmp_*.deb /opt/openblas
#   export OPENBLAS_DIR=/opt/openblas/usr/lib/x86_64-linux-gnu/openblas-openmp
# sae_train_ref.py then runs with it (this process only); the table's blas column shows
# what torch loaded. Run on an idle machine: the load average before each run is recorded.
set -u
cd "$(dirname "$0")/../.."

STORE=${1:-${STORE:-/tmp/rm/fort15}}
PRAGMA=${2:-${PRAGMA:-target/release/pragma}}
HOOK=blocks.15.hook_resid_post
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-2}
D_SAES=${D_SAES:-"4608 18432"}
BATCH=4096
K=32
SAE_PYTHON=${SAE_PYTHON:-/opt/sae-venv/bin/python}
if [ -z "${OUT:-}" ]; then
    OUT=bench-results/sae-$(date +%Y%m%d-%H%M%S)
fi
mkdir -p "$OUT"

[ -f "$STORE/manifest.json" ] || { echo "error: no activation store at $STORE (see the header)" >&2; exit 1; }
[ -x "$PRAGMA" ] || { echo "error: no pragma binary at $PRAGMA (cargo build --release)" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

run() {  # run NAME CMD...: stdout -> $OUT/NAME.json, stderr -> $OUT/NAME.log
    local name=$1; shift
    echo "$name $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"
    echo "== $name: $*" >&2
    local t0=$SECONDS
    if "$@" >"$OUT/$name.json" 2>"$OUT/$name.log" \
        && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$OUT/$name.json" 2>/dev/null; then
        echo "   done in $((SECONDS - t0)) s" >&2
    else
        rm -f "$OUT/$name.json"
        echo "failed, see $OUT/$name.log: $(tail -n1 "$OUT/$name.log" | cut -c1-160)" >"$OUT/$name.skipped"
        echo "== $name: $(cat "$OUT/$name.skipped")" >&2
    fi
}

for N in $D_SAES; do
    run "pragma-$N" env RAYON_NUM_THREADS="$THREADS" "$PRAGMA" sae train --store "$STORE" \
        --hook "$HOOK" --arch topk --k "$K" --d-sae "$N" --tokens $((BATCH * STEPS)) \
        --batch-tokens "$BATCH" --checkpoint-every 1000000 --json --out "$TMP/pragma-$N"
    [ -f "$TMP/pragma-$N/log.jsonl" ] && cp "$TMP/pragma-$N/log.jsonl" "$OUT/pragma-$N.log.jsonl"
    rm -rf "$TMP/pragma-$N"
    for LIB in sparsify saelens; do
        run "$LIB-$N" "$SAE_PYTHON" scripts/bench/sae_train_ref.py --lib "$LIB" --store "$STORE" \
            --hook "$HOOK" --d-sae "$N" --k "$K" --batch "$BATCH" --steps "$STEPS" \
            --warmup-steps "$WARMUP" --threads "$THREADS"
    done
done

python3 - "$OUT" "$D_SAES" "$WARMUP" "$STORE" <<'EOF' | tee "$OUT/report.md"
import json, subprocess, sys
from pathlib import Path

out, widths, warmup, store = Path(sys.argv[1]), sys.argv[2].split(), int(sys.argv[3]), sys.argv[4]

def load(name):
    p = out / f"{name}.json"
    if p.exists():
        return json.loads(p.read_text())
    s = out / f"{name}.skipped"
    return {"skipped": s.read_text().strip() if s.exists() else "not run"}

def pragma_steps(n):
    """From log.jsonl (cumulative tokens_per_second per step): tok/s over steps
    warmup+1..last, and in how many of those steps AuxK was non-zero."""
    p = out / f"pragma-{n}.log.jsonl"
    if not p.exists():
        return None, None
    lines = [json.loads(l) for l in p.read_text().splitlines() if l.strip()]
    by = {l["step"]: l for l in lines}
    last = max(by, default=0)
    if warmup not in by or last <= warmup:
        return None, None
    t = lambda l: l["tokens"] / l["tokens_per_second"]
    tps = (by[last]["tokens"] - by[warmup]["tokens"]) / (t(by[last]) - t(by[warmup]))
    return tps, sum(1 for s, l in by.items() if s > warmup and l.get("aux", 0) > 0)

def blas(r):
    b = r.get("blas") or ""
    return "OpenBLAS" if "openblas" in b.lower() else (f"**{b or 'unknown'}, not OpenBLAS**")

loads = dict(l.split(" ", 1) for l in (out / "loadavg.txt").read_text().splitlines()) if (out / "loadavg.txt").exists() else {}
try:
    cpu = next(l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if l.startswith("Model name"))
except Exception:
    cpu = "unknown"
print(f"CPU: {cpu}; store {store}; load average (1/5/15 min) before each run in the last column.\n")
print("| d_sae | tool | version | tok/s | timed steps | seconds | dead latents at end | steps with AuxK | final FVU | blas | load |")
print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
ratios = []
for n in widths:
    p, sp, sl = load(f"pragma-{n}"), load(f"sparsify-{n}"), load(f"saelens-{n}")
    ld = lambda k: loads.get(k, "")
    if "skipped" in p:
        print(f"| {n} | pragma | | {p['skipped']} | | | | | | | {ld(f'pragma-{n}')} |")
        ps = None
    else:
        ps, aux_steps = pragma_steps(n)
        dead = round(p.get("dead_fraction", 0) * int(n))
        print(f"| {n} | pragma (run) | | {p['tokens_per_second']:.0f} | {p['steps']} (all) | {p['seconds']:.2f} | {dead} | | {p.get('final_fvu', float('nan')):.4f} | | {ld(f'pragma-{n}')} |")
        if ps:
            print(f"| {n} | pragma (steps) | | {ps:.0f} | {p['steps'] - warmup} | | | {aux_steps} | | | |")
    for r, name in ((sp, "sparsify"), (sl, "SAELens")):
        key = f"{name.lower()}-{n}"
        if "skipped" in r:
            print(f"| {n} | {name} | | {r['skipped']} | | | | | | | {ld(key)} |")
            continue
        fvu = r.get("final_fvu", r.get("final_fvu_or_mse"))
        print(f"| {n} | {name} | {r['version']} | {r['tokens_per_second']:.0f} | {r['steps']} | {r['seconds']:.2f} | {r['dead_latents_final']} | {r['auxk_steps']} | {fvu:.4f} | {blas(r)} | {ld(key)} |")
    for r, name in ((sp, "sparsify"), (sl, "SAELens")):
        if "skipped" in p or "skipped" in r:
            ratios.append(f"d_sae {n}: pragma / {name}: n/a")
            continue
        s = f"d_sae {n}: pragma / {name}: {p['tokens_per_second'] / r['tokens_per_second']:.2f}x (run)"
        if ps:
            s += f", {ps / r['tokens_per_second']:.2f}x (steps)"
        ratios.append(s)
print()
for s in ratios:
    print(f"- {s}")
EOF
