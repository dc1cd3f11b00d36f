#!/usr/bin/env bash
# Benchmark pragma against llama.cpp and HF transformers on this machine, in one run.
#
# Runs, one after another and each in its own process, on the same GGUF and the
# same token batch (scripts/bench/common.py, the text of `pragma bench`):
#   pragma     target/release/pragma bench  (built with `cargo build --release` if missing)
#   llama.cpp  scripts/bench/llamacpp_ref.py under $LLAMACPP_PYTHON (default python3)
#   HF         scripts/bench/hf_ref.py      under $HF_PYTHON       (default /usr/bin/python3)
# then scripts/bench/report.py prints a markdown table with the ratios.
# A reference that cannot run is reported as "skipped (reason)"; the run goes on.
#
# Usage: scripts/bench/run.sh [MODEL.gguf]
#   env: BATCH=8 SEQ=128 DECODE=128 REPS=3, OUT=bench-results/<date> (JSON, logs, report.md),
#        PRAGMA_ARGS="..." extra flags for `pragma bench` only (e.g. "--cache-tokens 4096")
# Other work on the machine (a cargo build...) skews the numbers: the report
# shows the load average before each tool. HF is only representative with an
# OpenBLAS installed (`apt-get install libopenblas0-openmp`; see hf_ref.py).
set -u
cd "$(dirname "$0")/../.."

CACHE=${PRAGMA_CACHE:-$HOME/.cache/pragma}
MODEL=${1:-$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf}
ARGS=(--batch "${BATCH:-8}" --seq "${SEQ:-128}" --decode "${DECODE:-128}" --reps "${REPS:-3}")
LLAMACPP_PYTHON=${LLAMACPP_PYTHON:-python3}
HF_PYTHON=${HF_PYTHON:-/usr/bin/python3}
PRAGMA=target/release/pragma
if [ -z "${OUT:-}" ]; then
    OUT=bench-results/$(date +%Y%m%d-%H%M%S)
    mkdir -p "$OUT" && ln -sfn "$(basename "$OUT")" bench-results/latest
fi
mkdir -p "$OUT"

if [ ! -x "$PRAGMA" ]; then
    echo "== building $PRAGMA" >&2
    cargo build --release >&2
fi
if [ ! -f "$MODEL" ] && [ -x "$PRAGMA" ] && [ "$MODEL" = "$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
    echo "== fetching the default model" >&2
    "$PRAGMA" info smollm2-135m-instruct >/dev/null
fi
[ -f "$MODEL" ] || { echo "error: model not found: $MODEL" >&2; exit 1; }

skip() {  # skip NAME REASON
    echo "skipped ($2)" >"$OUT/$1.skipped"
    echo "== $1: skipped ($2)" >&2
}

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
        skip "$name" "failed, see $OUT/$name.log: $(tail -n1 "$OUT/$name.log" | cut -c1-120)"
    fi
}

if [ -x "$PRAGMA" ]; then
    # shellcheck disable=SC2086  # PRAGMA_ARGS is split into words on purpose
    run pragma "$PRAGMA" bench "$MODEL" "${ARGS[@]}" ${PRAGMA_ARGS:-}
else
    skip pragma "no $PRAGMA and cargo build failed"
fi

if ! command -v "$LLAMACPP_PYTHON" >/dev/null; then
    skip llamacpp "$LLAMACPP_PYTHON not found"
elif ! "$LLAMACPP_PYTHON" -c 'import llama_cpp, numpy' 2>/dev/null; then
    skip llamacpp "llama_cpp (llama-cpp-python) not importable by $LLAMACPP_PYTHON"
else
    run llamacpp "$LLAMACPP_PYTHON" scripts/bench/llamacpp_ref.py "$MODEL" "${ARGS[@]}"
fi

if ! command -v "$HF_PYTHON" >/dev/null; then
    skip hf "$HF_PYTHON not found"
elif ! "$HF_PYTHON" -c 'import torch, transformers, gguf' 2>/dev/null; then
    skip hf "torch, transformers or gguf not importable by $HF_PYTHON"
else
    run hf "$HF_PYTHON" scripts/bench/hf_ref.py "$MODEL" "${ARGS[@]}"
fi

python3 scripts/bench/report.py "$OUT" | tee "$OUT/report.md"
