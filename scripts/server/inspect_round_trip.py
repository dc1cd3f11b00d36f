#!/usr/bin/env python3
"""An Inspect AI evaluation against `pragma serve`, unsteered and steered, whose `.eval`
logs then import into pragma's transcript explorer.

Starts `pragma serve MODEL --vectors DIR` on a free loopback port, runs a small task
(`examples/server/inspect_task.jsonl`, questions with one-word answers, scored with
`includes()`) through Inspect's `openai-api` provider (service `pragma`: PRAGMA_BASE_URL,
PRAGMA_API_KEY), once plain and once with `extra_body={"pragma": {"steer": [...]}}`,
imports both logs with `pragma transcripts import` into collections `inspect-plain` and
`inspect-steered`, and prints each run's accuracy and a `pragma transcripts diff` command.

Usage (Inspect AI and the openai client in this interpreter):
  python3 scripts/server/inspect_round_trip.py --model smollm2-135m-instruct \
      --vectors DIR --vector sentiment --scale 4 --out runs/inspect [--pragma target/release/pragma]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from inspect_ai import Task, eval as inspect_eval
from inspect_ai.dataset import json_dataset
from inspect_ai.scorer import includes
from inspect_ai.solver import generate


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--vectors", required=True)
    ap.add_argument("--vector", required=True)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pragma", default="target/release/pragma")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--dataset", default=str(Path(__file__).resolve().parents[2] / "examples/server/inspect_task.jsonl"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    db = out / "transcripts.db"
    port = free_port()
    server = subprocess.Popen(
        [a.pragma, "serve", a.model, "--bind", f"127.0.0.1:{port}", "--vectors", a.vectors, "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        server.stdout.readline()  # the address: the server is up
        os.environ["PRAGMA_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
        os.environ["PRAGMA_API_KEY"] = "unused-on-loopback"
        model = f"openai-api/pragma/{a.model}"
        task = Task(dataset=json_dataset(a.dataset), solver=generate(), scorer=includes())
        runs = {
            "inspect-plain": {},
            "inspect-steered": {"pragma": {"steer": [{"vector": a.vector, "scale": a.scale}]}},
        }
        results = {}
        for name, extra in runs.items():
            log_dir = out / name
            logs = inspect_eval(
                task, model=model, log_dir=str(log_dir), max_tokens=a.max_tokens, temperature=0.0,
                extra_body=extra or None, display="none", max_connections=4,
            )
            log = logs[0]
            assert log.status == "success", log.error.message if log.error else log.status
            acc = log.results.scores[0].metrics["accuracy"].value
            files = sorted(log_dir.glob("*.eval"))
            assert files, f"no .eval log in {log_dir}"
            r = subprocess.run(
                [a.pragma, "transcripts", "import", "--db", str(db), "--collection", name, "--json", str(files[-1])],
                capture_output=True, text=True,
            )
            assert r.returncode == 0, r.stderr
            imported = json.loads(r.stdout)
            results[name] = {"accuracy": acc, "log": str(files[-1]), "import": imported}
            print(f"{name}: accuracy {acc:.3f} over {len(log.samples)} samples; imported {imported}")
        print(f"compare: {a.pragma} transcripts diff inspect-plain inspect-steered --db {db}")
        with open(out / "round_trip.json", "w") as f:
            json.dump(results, f, indent=1, default=str)
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
