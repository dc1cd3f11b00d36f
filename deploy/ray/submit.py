#!/usr/bin/env python3
"""A sharded `pragma cache` on a Ray cluster: one Ray task per part, each running the
`pragma` binary with PRAGMA_SHARD_INDEX set (`--shard auto/N`), then finalize.

Ray only schedules the tasks; every part writes the shards a single machine would write
to the object store (or a filesystem all nodes share), so a failed task is retried by
Ray (`max_retries`) and resumes its part. Needs `pragma` on PATH (or PRAGMA) and Python
with `ray` on every node.

    ray start --head                      # or an existing cluster (RAY_ADDRESS)
    OUT=s3://acts/run DATA=/shared/corpus.jsonl PARTS=8 python3 deploy/ray/submit.py
    # or: ray job submit --working-dir . -- python3 deploy/ray/submit.py

Environment: OUT, PARTS, DATA, MODEL, HOOKS, CACHE_ARGS, PRAGMA, and for s3:// stores
AWS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ALLOW_HTTP
(passed to the tasks through the runtime environment).
"""

import os
import shlex
import subprocess
import sys

import ray

PRAGMA = os.environ.get("PRAGMA", "pragma")
OUT = os.environ["OUT"]
PARTS = int(os.environ["PARTS"])
CMD = [PRAGMA, "cache", os.environ.get("MODEL", "smollm2-135m-instruct"),
       "--data", os.environ.get("DATA", "fortunes"),
       "--hooks", os.environ.get("HOOKS", "blocks.*.hook_resid_post"),
       "--out", OUT, "--shard", f"auto/{PARTS}", *shlex.split(os.environ.get("CACHE_ARGS", ""))]


@ray.remote(num_cpus=2, max_retries=3)
def part(index: int) -> str:
    env = dict(os.environ, PRAGMA_SHARD_INDEX=str(index))
    r = subprocess.run(CMD, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"part {index} failed:\n{r.stderr[-2000:]}")
    return r.stdout.strip()


def main() -> int:
    passthrough = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "PRAGMA"))}
    ray.init(runtime_env={"env_vars": passthrough})
    for line in ray.get([part.remote(i) for i in range(PARTS)]):
        print(line)
    subprocess.run([PRAGMA, "store", "finalize", OUT, "--verify"], check=True)
    subprocess.run([PRAGMA, "store", "info", OUT], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
