#!/usr/bin/env bash
# Transcript scoring throughput against the activation cache's, same machine, one run.
#
# The same transcripts (a collection exported to OpenAI JSONL) go through, one after
# another and each in its own process:
#   cache      pragma cache --data A.jsonl (rendered with the chat template, as score renders
#              them) --hooks HOOK --ctx 2048 --batch 1 --dtype f16: 2048 padded tokens per pass,
#              activations written to a store
#   score-1    pragma transcripts score --sae SAE --batch-tokens 1: one transcript per pass
#   score      pragma transcripts score --sae SAE (default --batch-tokens 1024)
#   score-2048 pragma transcripts score --sae SAE --batch-tokens 2048 (the cache's pass size)
# Each score run imports the JSONL into a fresh database first (not timed: its own
# tokens_per_second covers the forward passes, the SAE encoding and the SQLite writes).
# The cache's rate is its tokens over the command's wall time, less the model load
# measured by `pragma info` (printed).
#
# Usage: scripts/bench/transcripts_score.sh [DB COLLECTION SAE]
#   default: runs/rollouts.db rollouts-a runs/sae-l15 (the README's example collection and
#   SAE); PRAGMA=target/release/pragma.
set -eu
cd "$(dirname "$0")/../.."
DB=${1:-runs/rollouts.db}
COLL=${2:-rollouts-a}
SAE=${3:-runs/sae-l15}
PRAGMA=${PRAGMA:-target/release/pragma}
HOOK=$(python3 -c 'import json,sys; c = json.load(open(sys.argv[1]+"/cfg.json")); print(c.get("hook_name") or c["metadata"]["hook_name"])' "$SAE")
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

"$PRAGMA" transcripts export "$COLL" --out "$T/a.jsonl" --db "$DB" >/dev/null
echo "collection $COLL ($(wc -l <"$T/a.jsonl") transcripts), SAE $SAE at $HOOK; load $(cut -d' ' -f1-3 /proc/loadavg)"
lscpu | grep -m1 'Model name' || true

t0=$(date +%s.%N)
"$PRAGMA" info >/dev/null 2>&1
t1=$(date +%s.%N)
load=$(echo "$t1 - $t0" | bc -l)

t0=$(date +%s.%N)
"$PRAGMA" cache --data "$T/a.jsonl" --hooks "$HOOK" --ctx 2048 --batch 1 --dtype f16 \
    --out "$T/store" >"$T/cache.log" 2>&1
t1=$(date +%s.%N)
ntok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["n_tokens"])' "$T/store/manifest.json")
cache_tps=$(echo "$ntok / ($t1 - $t0 - $load)" | bc -l)
printf '| %-10s | %8d tokens | %8.0f tok/s | %5s |\n' cache "$ntok" "$cache_tps" "1.00"

for bt in 1 1024 2048; do
    "$PRAGMA" transcripts import "$T/a.jsonl" --collection c --db "$T/s$bt.db" >/dev/null
    out=$("$PRAGMA" transcripts score c --sae "$SAE" --batch-tokens "$bt" --json --db "$T/s$bt.db" 2>/dev/null)
    tps=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_second"])')
    tok=$(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["tokens"], r["passes"])')
    printf '| %-10s | %8s tokens, %4s passes | %8.0f tok/s | %5.2f |\n' "score-$bt" ${tok% *} ${tok#* } "$tps" "$(echo "$tps / $cache_tps" | bc -l)"
done
echo "(model load subtracted from the cache's time: $(printf '%.2f' "$load") s)"
