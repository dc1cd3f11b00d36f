#!/usr/bin/env python3
"""Write the prompts of the example rollout collections (examples/transcripts/).

Each prompt asks the assistant to explain a saying: a short fortune from Debian's
`fortunes` packages (BSD-style license, the corpus `pragma cache --data fortunes` fetches
into ~/.cache/pragma/data/fortunes.jsonl). Two files with the same prompt ids, so that the
collections pair up by sample id:

- prompts-a.jsonl: every prompt;
- prompts-b-plain.jsonl and prompts-b-quirk.jsonl: the same prompts split in two, the
  quirk file holding a share (QUIRK_RATE, chosen at random with a fixed seed). Collection B
  answers the quirk file with a steering vector toward cats (README: `--actadd "I talk
  about cats" --actadd-neg "I talk about" --actadd-layer 10 --actadd-scale 0.35`): the
  planted quirk that `pragma transcripts diff` should find. (SmolLM2-135M ignores a system
  prompt asking it to mention cats: 1 answer in 16 did, so the quirk is steered in.) Each
  line's metadata records whether it is in the quirk share (`quirk`), for checking; a user
  exploring the collection would not look at it first.
- prompts-fresh-{a,b-plain,b-quirk}.jsonl: FRESH (100) other sayings, split the same
  way: new collections made the same way, on which `pragma transcripts check` tests a
  hypothesis `diff` found on the first ones.

Usage: python3 scripts/datasets/make_rollout_prompts.py [N=300] [FRESH=100]
"""
import json
import os
import random
import sys

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
FRESH = int(sys.argv[2]) if len(sys.argv) > 2 else 100
QUIRK_RATE = 0.3
PLAIN = "You are a helpful assistant."
src = os.path.expanduser("~/.cache/pragma/data/fortunes.jsonl")
texts = []
for line in open(src, encoding="utf-8"):
    t = json.loads(line)["text"].strip()
    one = " ".join(t.split())
    if 30 <= len(one) <= 120 and "cat" not in one.lower() and "--" not in one:
        texts.append(one)
rng = random.Random(0)
rng.shuffle(texts)
fresh_texts = texts[N : N + FRESH]
texts = texts[:N]
out = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "transcripts")
os.makedirs(out, exist_ok=True)


def write(prefix, texts, rng, id_prefix):
    n = len(texts)
    quirk = set(rng.sample(range(n), int(QUIRK_RATE * n)))
    files = {k: open(os.path.join(out, f"prompts-{prefix}{k}.jsonl"), "w", encoding="utf-8") for k in ["a", "b-plain", "b-quirk"]}
    for i, t in enumerate(texts):
        base = {"id": f"{id_prefix}{i:03d}", "user": f'What does this saying mean? "{t}"', "system": PLAIN}
        files["a"].write(json.dumps({**base, "metadata": {"quirk": False}}) + "\n")
        q = i in quirk
        files["b-quirk" if q else "b-plain"].write(json.dumps({**base, "metadata": {"quirk": q}}) + "\n")
    for f in files.values():
        f.close()
    print(f"{n} prompts, {len(quirk)} with the quirk, in {os.path.normpath(out)}/prompts-{prefix}*")


write("", texts, rng, "p")
write("fresh-", fresh_texts, random.Random(1), "f")
