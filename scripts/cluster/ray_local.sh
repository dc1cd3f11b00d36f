#!/bin/bash
# Run deploy/ray/submit.py on a local one-node Ray cluster and check the finalized store
# equals a single-process `pragma cache` with the same flags (manifest.json, as JSON).
#
#   RAY_PYTHON=/opt/ray-venv/bin/python scripts/cluster/ray_local.sh
#
# Needs a Python with `ray` (pip install "ray[default]") and a built pragma
# (PRAGMA, default target/release/pragma). Starts `ray start --head` on loopback and stops
# it at the end. Not part of CI (Ray is a 100+ MB install).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
py=${RAY_PYTHON:-python3}
ray_bin=$(dirname "$(command -v "$py" || echo "$py")")/ray
export PRAGMA=${PRAGMA:-$repo/target/release/pragma}
work=$(mktemp -d)
trap '"$ray_bin" stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
head -300 "$repo/examples/probes/sentiment.jsonl" > "$work/corpus.jsonl"
export OUT=$work/store PARTS=3 DATA=$work/corpus.jsonl HOOKS=blocks.6.hook_resid_post CACHE_ARGS="--shard-tokens 300"
"$ray_bin" start --head --num-cpus "$(nproc)" --disable-usage-stats >/dev/null
"$py" "$repo/deploy/ray/submit.py"
"$PRAGMA" cache --data "$DATA" --hooks "$HOOKS" --shard-tokens 300 --out "$work/one" >/dev/null 2>&1
"$py" - "$work/store/manifest.json" "$work/one/manifest.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a == b, "the Ray job's store differs from the single-process store"
print(f"PASS: Ray job's store equals the single-process store ({a['n_tokens']} tokens, {len(a['shards'])} shards)")
PY
