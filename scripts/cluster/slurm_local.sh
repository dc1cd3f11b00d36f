#!/bin/bash
# End-to-end test of the Slurm templates in deploy/slurm on a one-node Slurm cluster on
# this machine (a Debian/Ubuntu box or container where we are root, with or without
# systemd):
#
#   scripts/cluster/slurm_local.sh          set the cluster up (if needed) and run the test
#   scripts/cluster/slurm_local.sh --up     only set the cluster up
#   scripts/cluster/slurm_local.sh --down   stop the daemons this script starts
#
# 1. installs slurm-wlm and munge with apt when slurmctld is missing;
# 2. creates a munge key when there is none and starts munged;
# 3. writes /etc/slurm/slurm.conf for one node (this host, its CPUs and memory, no
#    accounting, no cgroups: proctrack/linuxproc, task/none) - only when there is no
#    slurm.conf or it is the one this script wrote (first line marks it);
# 4. starts slurmctld and slurmd (as root: jobs must read root's model cache) and waits
#    until the node is idle;
# 5. runs deploy/slurm/submit.sh on a 400-document corpus, PARTS=4 cache tasks, finalize,
#    one SAE per hook; waits for the jobs; checks the store is finalized and that its
#    manifest.json equals (as JSON) the one of a single-process `pragma cache` with the
#    same flags, and that each hook's SAE weights exist. Prints PASS or FAIL (with the
#    tail of every job log on FAIL) and exits 0 or 1.
#
# Rerunnable: a running cluster is reused, each test run works in a new temp folder
# (removed on PASS unless KEEP=1), and jobs of a failed or interrupted run are cancelled.
#
# Environment: PRAGMA (the binary; default /tmp/pragma-slurm/bin/pragma, copied from
# target/debug or target/release when missing), MODEL (default smollm2-135m-instruct),
# TIMEOUT (seconds to wait for the jobs, default 3600), KEEP=1 (keep the temp folder).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
mode=${1:-test}
marker="# Written by pragma scripts/cluster/slurm_local.sh (one-node test cluster); safe to rewrite."
conf=/etc/slurm/slurm.conf
state=/var/lib/slurm-local
node=$(hostname -s 2>/dev/null || true)
[ -n "$node" ] || node=localhost

log() { echo "[slurm_local] $*" >&2; }
die() { log "error: $*"; exit 1; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() { # stop the daemon whose pid is in $1 (only that pid), wait for it to go
    local f=$1 pid
    pid_alive "$f" || { rm -f "$f"; return 0; }
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    rm -f "$f"
}

if [ "$mode" = --down ]; then
    stop_pidfile "$state/run/slurmd.pid"
    stop_pidfile "$state/run/slurmctld.pid"
    stop_pidfile /run/munge/munged.pid
    log "stopped slurmd, slurmctld and munged"
    exit 0
fi
[ "$mode" = test ] || [ "$mode" = --up ] || die "usage: $0 [--up|--down]"
[ "$(id -u)" = 0 ] || die "run as root (daemons and jobs run as root)"

# --- 1. packages ------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# --- 2. munge ---------------------------------------------------------------------
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
    munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# --- 3. slurm.conf ----------------------------------------------------------------
cpus=$(nproc)
mem=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
if hw=$(slurmd -C 2>/dev/null | head -1); then # what slurmd will report: never ask for more
    c=$(sed -n 's/.*\bCPUs=\([0-9]*\).*/\1/p' <<<"$hw"); [ -n "$c" ] && cpus=$c
    m=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw"); [ -n "$m" ] && [ "$m" -lt "$mem" ] && mem=$m
fi
mem=$((mem * 95 / 100))
addr=$(getent hosts "$node" | awk '{print $1; exit}')
[ -n "$addr" ] || addr=127.0.0.1
newconf=$(mktemp)
cat >"$newconf" <<EOF
$marker
ClusterName=pragmalocal
SlurmctldHost=$node($addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MinJobAge=600
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
NodeName=$node NodeAddr=$addr CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
mkdir -p /etc/slurm "$state"/{ctld,d,run,log}
restart=0
if [ ! -e "$conf" ]; then
    log "writing $conf (node $node: $cpus CPUs, ${mem} MB)"
    cp "$newconf" "$conf"
elif [ "$(head -1 "$conf")" = "$marker" ]; then
    if ! cmp -s "$newconf" "$conf"; then
        log "updating $conf (node $node: $cpus CPUs, ${mem} MB)"
        cp "$newconf" "$conf"
        restart=1
    fi
else
    log "warning: $conf was not written by this script; using it as it is"
    node=$(sinfo -h -N -o %N 2>/dev/null | head -1)
    [ -n "$node" ] || die "no node in the existing cluster"
fi
rm -f "$newconf"
chmod 0644 "$conf"

# --- 4. daemons -------------------------------------------------------------------
if [ "$restart" = 1 ]; then
    log "restarting slurmd and slurmctld for the new slurm.conf"
    stop_pidfile "$state/run/slurmd.pid"
    stop_pidfile "$state/run/slurmctld.pid"
fi
if ! scontrol ping 2>/dev/null | grep -q 'is UP'; then
    log "starting slurmctld"
    pid_alive "$state/run/slurmctld.pid" || slurmctld ||
        die "slurmctld failed: $(tail -5 "$state/log/slurmctld.log" 2>/dev/null)"
    for _ in $(seq 60); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.5; done
    scontrol ping | grep -q 'is UP' || die "slurmctld is not up: $(tail -5 "$state/log/slurmctld.log")"
fi
if ! pid_alive "$state/run/slurmd.pid"; then
    log "starting slurmd -N $node"
    slurmd -N "$node" || die "slurmd failed: $(tail -5 "$state/log/slurmd.log" 2>/dev/null)"
fi
node_state() { sinfo -h -N -n "$node" -o %T 2>/dev/null | head -1; }
st=
for i in $(seq 120); do
    st=$(node_state)
    case "$st" in
    idle) break ;;
    mixed | allocated | completing) break ;; # up, busy with earlier jobs
    down* | drain* | drained* | fail*)
        # e.g. left down by an earlier slurmd; it registered again, so resume it
        [ $((i % 10)) = 1 ] && { log "node $node is $st ($(sinfo -h -N -n "$node" -o %E)); resuming";
            scontrol update NodeName="$node" State=RESUME 2>/dev/null || true; } ;;
    esac
    sleep 1
done
case "$st" in
idle | mixed | allocated | completing) log "node $node is $st" ;;
*) die "node $node is '$st' after 2 minutes: $(sinfo -h -N -n "$node" -o %E); see $state/log/slurmd.log" ;;
esac
[ "$mode" = --up ] && exit 0

# --- 5. the templates -------------------------------------------------------------
PRAGMA=${PRAGMA:-/tmp/pragma-slurm/bin/pragma}
if [ ! -x "$PRAGMA" ]; then
    src=
    for b in "$repo/target/release/pragma" "$repo/target/debug/pragma"; do [ -x "$b" ] && { src=$b; break; }; done
    [ -n "$src" ] || die "no pragma binary: build it or set PRAGMA"
    mkdir -p "$(dirname "$PRAGMA")"
    cp "$src" "$PRAGMA"
fi
work=$(mktemp -d /tmp/pragma-slurm-test.XXXXXX)
head -n 400 "$repo/examples/probes/sentiment.jsonl" >"$work/corpus.jsonl"
export PRAGMA MODEL=${MODEL:-smollm2-135m-instruct} DATA=$work/corpus.jsonl OUT=$work/store PARTS=4
export HOOKS='blocks.6.hook_resid_post,blocks.12.hook_resid_post' CACHE_ARGS='--shard-tokens 400'
export SAE_HOOKS=$HOOKS SAE_OUT=$work/sae SAE_ARGS='--d-sae 256 --k 8 --tokens 8192 --batch-tokens 512'
jobs=()
cleanup() { # cancel this run's jobs still queued or running (failure or interrupt)
    local left
    [ ${#jobs[@]} -gt 0 ] || return 0
    left=$(squeue -h -j "$(IFS=,; echo "${jobs[*]}")" -o %i 2>/dev/null || true)
    if [ -n "$left" ]; then log "cancelling jobs ${jobs[*]}"; scancel "${jobs[@]}" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$(date +%s)
sub=$(cd "$work" && "$repo/deploy/slurm/submit.sh")
echo "$sub"
cache_job=$(sed -n 's/^cache array job \([0-9]*\).*/\1/p' <<<"$sub")
final_job=$(sed -n 's/.*finalize job \([0-9]*\).*/\1/p' <<<"$sub")
sae_job=$(sed -n 's/^sae array job \([0-9]*\).*/\1/p' <<<"$sub")
[ -n "$cache_job" ] && [ -n "$final_job" ] && [ -n "$sae_job" ] || die "could not parse job ids from submit.sh"
jobs=("$cache_job" "$final_job" "$sae_job")
joblist=$(IFS=,; echo "${jobs[*]}")

timeout=${TIMEOUT:-3600}
stuck=
while :; do
    q=$(squeue -h -j "$joblist" -o '%i %T %r' 2>/dev/null || true)
    [ -n "$q" ] || break
    if grep -q 'DependencyNeverSatisfied' <<<"$q"; then stuck="a job failed: $(grep DependencyNeverSatisfied <<<"$q" | head -1)"; break; fi
    [ $(($(date +%s) - t0)) -lt "$timeout" ] || { stuck="timed out after ${timeout}s"; break; }
    sleep 3
done
wall=$(($(date +%s) - t0))
cleanup
jobs=()

# Single-process reference store: the same command without --shard.
# shellcheck disable=SC2086
"$PRAGMA" cache "$MODEL" --data "$DATA" --hooks "$HOOKS" --out "$work/ref" $CACHE_ARGS \
    >"$work/ref.log" 2>&1 || true

fails=()
[ -z "$stuck" ] || fails+=("$stuck")
info=$("$PRAGMA" store info "$OUT" 2>&1) || fails+=("pragma store info $OUT failed")
"$PRAGMA" store info "$OUT" --json 2>/dev/null |
    python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin).get("finalized") else 1)' 2>/dev/null ||
    fails+=("pragma store info --json does not say finalized")
python3 - "$OUT/manifest.json" "$work/ref/manifest.json" <<'EOF' || fails+=("store is not finalized, or differs from the single-process store")
import json, sys
try:
    a, b = (json.load(open(p)) for p in sys.argv[1:3])
except Exception as e:
    sys.exit(f"  manifest: {e}")
if not a.get("complete"):
    sys.exit("  sharded store's manifest.json is not complete")
if a != b:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    sys.exit(f"  manifests differ in: {', '.join(keys)}")
print(f"  manifests equal: {a['n_tokens']} tokens, {len(a['shards'])} shards, complete")
EOF
IFS=, read -ra hooks <<<"$SAE_HOOKS"
for h in "${hooks[@]}"; do
    [ -s "$SAE_OUT/$h/sae_weights.safetensors" ] || fails+=("missing $SAE_OUT/$h/sae_weights.safetensors")
done
logs=("$work"/pragma-cache-"$cache_job"_*.log "$work"/pragma-finalize-"$final_job".log "$work"/pragma-sae-"$sae_job"_*.log)
nlogs=0
for l in "${logs[@]}"; do [ -f "$l" ] && nlogs=$((nlogs + 1)); done
[ "$nlogs" = $((PARTS + 1 + ${#hooks[@]})) ] || fails+=("expected $((PARTS + 1 + ${#hooks[@]})) job logs, found $nlogs")

echo "---- slurm_local summary ----"
echo "node $node; jobs: cache array $cache_job (0-$((PARTS - 1))), finalize $final_job, sae array $sae_job (0-$((${#hooks[@]} - 1)))"
echo "wall time ${wall}s (submit to last job done); work dir $work"
# Job states without accounting: slurmctld keeps finished jobs for MinJobAge (600 s).
for j in "$cache_job" "$final_job" "$sae_job"; do
    scontrol -o show job "$j" 2>/dev/null | awk '{ delete f; for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = substr($i, length(kv[1]) + 2) }
        id = ("ArrayTaskId" in f) ? f["ArrayJobId"] "_" f["ArrayTaskId"] : f["JobId"]
        printf "  job %-6s %-16s %s exit %s\n", id, f["JobName"], f["JobState"], f["ExitCode"] }' | sort
done
grep -E '^(sharded job|contents|shards)' <<<"$info" | sed 's/^/  store info: /' || true
for h in "${hooks[@]}"; do
    [ -s "$SAE_OUT/$h/sae_weights.safetensors" ] && echo "  sae: $SAE_OUT/$h/sae_weights.safetensors"
done
if [ ${#fails[@]} = 0 ]; then
    echo "PASS: sharded store finalized and equal to the single-process store; ${#hooks[@]} SAEs trained"
    [ "${KEEP:-0}" = 1 ] || { rm -rf "$work"; echo "(work dir removed; KEEP=1 keeps it)"; }
    exit 0
fi
for f in "${fails[@]}"; do echo "FAIL: $f"; done
for l in "${logs[@]}" "$work/ref.log"; do
    [ -f "$l" ] || { echo "== $l: missing"; continue; }
    echo "== tail $l"; tail -n 15 "$l"
done
echo "== store info"; echo "$info" | tail -n 20
exit 1
