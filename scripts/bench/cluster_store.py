#!/usr/bin/env python3
"""Sharded caching and object-store reads, measured on one machine in one run.

1. `pragma cache --shard I/P` with P = 1, 2, 4 processes at once, writing to local disk
   and to a local S3 server (moto, loopback): wall time, total tokens/s and tokens/s per
   process. On a 2-core machine the ideal is a flat total; what matters is that the
   object store costs little next to the forwards.
2. `pragma store finalize` time, local and S3 (with --verify: every shard re-read).
3. Reading: open the store and read every row of one hook in seeded shuffled batches
   of 4096 (what SAE training does), via the Python bindings (`pragma_interp.Store`):
   local disk and S3 with a warm shard cache (best of 3 after a warm-up), and S3 with a
   cold shard cache (once; the download is included).

Usage: python3 scripts/bench/cluster_store.py [--pragma target/release/pragma] [--docs 3000]
(needs `moto[server]`, `boto3` and the pragma_interp wheel in python3). Prints JSON.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOOKS = "blocks.6.hook_resid_post,blocks.12.hook_resid_post"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pragma", default=str(ROOT / "target/release/pragma"))
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--shard-tokens", type=int, default=2048)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pragma-cluster-bench-"))
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ, AWS_ENDPOINT=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="test",
               AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1", AWS_ALLOW_HTTP="true",
               PRAGMA_STORE_CACHE=str(tmp / "shard-cache"))
    os.environ.update({k: v for k, v in env.items() if k.startswith(("AWS_", "PRAGMA_STORE"))})
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        import boto3

        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                     aws_access_key_id="test", aws_secret_access_key="test").create_bucket(Bucket="bench")
        lines = []
        for name in ("facts", "sentiment", "language", "eval-awareness"):
            lines += (ROOT / f"examples/probes/{name}.jsonl").read_text().splitlines()
        corpus = tmp / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"text": json.loads(l)["text"]}) + "\n"
                                  for l in lines[: a.docs]))
        base = [a.pragma, "cache", "--data", str(corpus), "--hooks", HOOKS,
                "--shard-tokens", str(a.shard_tokens)]
        results = {"machine": f"{os.cpu_count()} CPUs", "docs": a.docs, "hooks": HOOKS, "caching": []}
        n_tokens = None
        for target in ("local", "s3"):
            for procs in (1, 2, 4):
                out = str(tmp / f"{target}-{procs}") if target == "local" else f"s3://bench/p{procs}"
                t = time.perf_counter()
                ps = [subprocess.Popen(base + ["-o", out, "--shard", f"{i}/{procs}"], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                      for i in range(procs)]
                for p in ps:
                    _, err = p.communicate()
                    assert p.returncode == 0, err.decode()[-2000:]
                wall = time.perf_counter() - t
                t = time.perf_counter()
                fin = subprocess.run([a.pragma, "store", "finalize", out, "--json"], env=env,
                                     capture_output=True, text=True, check=True)
                fin_s = time.perf_counter() - t
                t = time.perf_counter()
                subprocess.run([a.pragma, "store", "finalize", out, "--verify"], env=env,
                               capture_output=True, text=True, check=True)
                ver_s = time.perf_counter() - t
                n_tokens = json.loads(fin.stdout)["n_tokens"]
                results["caching"].append({
                    "target": target, "processes": procs, "wall_seconds": wall,
                    "tokens_per_second_total": n_tokens / wall,
                    "tokens_per_second_per_process": n_tokens / wall / procs,
                    "finalize_seconds": fin_s, "finalize_verify_seconds": ver_s,
                })
                print(json.dumps(results["caching"][-1]), file=sys.stderr)
        results["n_tokens"] = n_tokens

        import pragma_interp as pragma

        def read(path: str) -> dict:
            t = time.perf_counter()
            s = pragma.Store(path)
            opened = time.perf_counter() - t
            rows = 0
            for b in s.batches("blocks.6.hook_resid_post", batch_size=4096, seed=0):
                rows += b.shape[0]
            total = time.perf_counter() - t
            return {"open_seconds": opened, "total_seconds": total, "rows": rows,
                    "rows_per_second": rows / total}

        def best(path: str) -> dict:
            return min((read(path) for _ in range(3)), key=lambda r: r["total_seconds"])

        read(str(tmp / "local-1"))  # warm-up: imports, allocator, page cache
        results["reading"] = {"local": best(str(tmp / "local-1"))}
        shutil.rmtree(tmp / "shard-cache", ignore_errors=True)
        results["reading"]["s3_cold"] = read("s3://bench/p1")
        results["reading"]["s3_warm"] = best("s3://bench/p1")
        print(json.dumps(results, indent=1))
    finally:
        moto.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
