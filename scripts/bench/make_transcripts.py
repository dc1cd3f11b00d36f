#!/usr/bin/env python3
"""Write N synthetic chat transcripts (OpenAI JSONL) for the import/search benchmark.

Texts are Debian's fortunes (the corpus `pragma cache --data fortunes` fetches, BSD-style
license): each transcript is a system prompt, a user turn and an assistant turn, the
assistant's text a fortune; metadata gives a model name, a task id, a sample id and epoch
and a reward. Usage:

    python3 scripts/bench/make_transcripts.py 100000 /tmp/tx100k.jsonl

Needs ~/.cache/pragma/data/fortunes.jsonl (run any pragma command with --data fortunes
once).
"""
import json
import os
import random
import sys

n = int(sys.argv[1])
out = sys.argv[2]
src = os.path.expanduser("~/.cache/pragma/data/fortunes.jsonl")
texts = [json.loads(l)["text"] for l in open(src, encoding="utf-8") if l.strip()]
rng = random.Random(0)
systems = ["You are a helpful assistant.", "You are terse.", "Answer as a pirate would."]
with open(out, "w", encoding="utf-8") as f:
    for i in range(n):
        msgs = [
            {"role": "system", "content": rng.choice(systems)},
            {"role": "user", "content": f"Tell me something wise (task {i % 500})."},
            {"role": "assistant", "content": rng.choice(texts)},
        ]
        meta = {
            "model": rng.choice(["model-a", "model-b"]),
            "sample_id": str(i % 500),
            "epoch": i // 500 + 1,
            "scores": {"reward": round(rng.random(), 3)},
        }
        f.write(json.dumps({"messages": msgs, "metadata": meta}) + "\n")
