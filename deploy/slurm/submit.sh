#!/bin/bash
# Submit a sharded caching job on Slurm: PARTS array tasks of cache.sbatch, then
# finalize.sbatch once all succeeded, then (if SAE_HOOKS is set) one SAE per hook.
#
#   OUT=s3://bucket/acts PARTS=16 DATA=/shared/corpus.jsonl HOOKS='blocks.*.hook_resid_post' \
#     deploy/slurm/submit.sh
#
# If a task fails, finalize stays pending (DependencyNeverSatisfied): see which parts are
# missing with `pragma store info $OUT`, rerun them (`sbatch --array=2,5
# deploy/slurm/cache.sbatch`), then `sbatch deploy/slurm/finalize.sbatch`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${OUT:?set OUT}" "${PARTS:?set PARTS}"
export OUT PARTS
cache=$(sbatch --parsable --export=ALL --array="0-$((PARTS - 1))" "$here/cache.sbatch")
final=$(sbatch --parsable --export=ALL --dependency="afterok:$cache" "$here/finalize.sbatch")
echo "cache array job $cache ($PARTS tasks), finalize job $final"
if [ -n "${SAE_HOOKS:-}" ]; then
    n=$(awk -F, '{print NF}' <<<"$SAE_HOOKS")
    sae=$(sbatch --parsable --export=ALL --dependency="afterok:$final" --array="0-$((n - 1))" "$here/sae.sbatch")
    echo "sae array job $sae ($n hooks)"
fi
