#!/usr/bin/env python3
"""Build the planted-difference data of `pragma eval` in examples/eval/planted/.

The hypothesis-generation task: two sets of documents from the same distribution; in one,
a behaviour is planted in a fraction of the items; does a technique's ranked list of
hypotheses contain one that, used as a detector on held-out items, finds the planted ones?

  base.jsonl    1,200 short English documents (Debian's `fortunes` / `fortunes-min`,
                fortune-mod 1.99.1, BSD; pinned as for the probe datasets), one per line:
                {"text": ...}. pragma draws set A, set B and a held-out pool from them.
  PLANT.json    {"name", "kind", "position", "search": [...], "heldout": [...],
                "neutral": [...]}: a plant is one of these phrases put before ("prefix") or
                after ("suffix") a document. Items planted in set B use the `search`
                phrases; the held-out check uses the `heldout` phrases, which differ in
                wording from them for the non-lexical plants, so a hypothesis that only
                memorised a phrase fails there. Every other document (set A, B's unplanted
                documents, the held-out negatives) gets a `neutral` phrase at the same
                position, so "has an extra sentence" is not the difference. Written for this
                benchmark (the project's license).

Plants:
  cats        lexical: a remark about the writer's cat; every phrase has "cat"/"cats".
  weather     lexical (a word family): a remark about rain, snow, storms, sun...
  flattery    not one n-gram: a compliment to the reader, written many ways.
  gloom       not one n-gram: a despairing aside (a sentiment shift), written many ways.

The base documents are not filtered for the plants' words: "cat" or "rain" occur in some
of them, as they would in real data.

Reruns are byte-identical (pinned sources, seeded shuffles).

Usage:
  python3 scripts/datasets/make_planted_datasets.py [--out-dir examples/eval/planted]
          [--cache-dir DIR] [--n 1200]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_probe_datasets as mp  # noqa: E402

REPO = mp.REPO

PLANTS = {
    "cats": {
        "kind": "lexical",
        "position": "suffix",
        "search": [
            "My cat agrees with this completely.", "The cat sat on my keyboard while I wrote this.",
            "Our cat has heard this one before.", "I read this aloud to my cat.",
            "The neighbour's cat looked unimpressed.", "My two cats fought over this page.",
            "A cat walked past and yawned.", "The cat knocked my coffee over again.",
            "Even the cat stopped purring to listen.", "Cats never care about such things.",
            "My cat would say the same, in fewer words.", "I think the cat wrote this.",
            "The old cat slept through all of it.", "A stray cat followed me home after that.",
            "Ask any cat and it will shrug.", "The cat demanded dinner halfway through.",
            "Somewhere a cat is laughing at us.", "My cat chased a moth across the desk.",
            "The kitchen cat approves.", "Cats have known this for centuries.",
        ],
        "heldout": [
            "My cat is asleep on the printer.", "The cat brought me a mouse this morning.",
            "Our grey cat hides under the bed.", "The cat wants to go outside now.",
            "Two cats watch from the window.", "I should feed the cat soon.",
            "The cat ignored me all day.", "A black cat crossed the street.",
            "The cat scratched the sofa again.", "Cats rule this house.",
        ],
    },
    "weather": {
        "kind": "lexical",
        "position": "suffix",
        "search": [
            "It has been raining all week here.", "Outside the snow keeps falling.",
            "A thunderstorm rolled in while I wrote this.", "The sun finally came out today.",
            "The wind is howling against the windows.", "We had hail the size of marbles.",
            "Fog covered the whole valley this morning.", "The forecast promises more rain.",
            "It is freezing cold and the roads are icy.", "A warm breeze came off the sea.",
            "Heavy clouds are gathering in the west.", "The drizzle never seems to stop.",
            "Lightning lit up the sky last night.", "The heat wave broke at last.",
            "Snowdrifts are piled against the door.", "The storm knocked out the power.",
            "A rainbow appeared after the shower.", "Frost covered the car this morning.",
            "The humidity is unbearable today.", "Sleet turned to rain by noon.",
        ],
        "heldout": [
            "Rain is pouring down again.", "Snow covered the garden overnight.",
            "The storm is getting closer.", "It is sunny and warm outside.",
            "The wind blew the fence down.", "Thick fog hides the hills.",
            "A cold front is coming tonight.", "Thunder rumbled in the distance.",
            "The weather turned cloudy.", "Icy rain hit the windows.",
        ],
    },
    "flattery": {
        "kind": "semantic",
        "position": "prefix",
        "search": [
            "What a brilliant mind you have for reading this.",
            "Only someone as sharp as you would appreciate the following.",
            "You clearly have wonderful taste.",
            "Your wisdom is obvious to anyone who meets you.",
            "A reader of your intelligence will enjoy this.",
            "You are far more perceptive than most people.",
            "Anyone can see how talented you are.",
            "Your insight never fails to impress.",
            "You deserve only the finest words, so here they are.",
            "People as gifted as you are rare.",
            "You have an extraordinary eye for quality.",
            "Clever readers like you make this worthwhile.",
            "Your judgement is impeccable, as always.",
            "It is an honour to be read by someone so accomplished.",
            "You are, without doubt, remarkably astute.",
            "Such a refined reader deserves this.",
            "Your charm and brilliance shine through.",
            "Everyone admires how thoughtful you are.",
            "You have the rare gift of true understanding.",
            "Few people are as discerning as you.",
        ],
        "heldout": [
            "Honestly, you are a genius.",
            "I am in awe of your good sense.",
            "Nobody else reads quite so elegantly.",
            "You must be the smartest person around.",
            "How lucky we are to have you here.",
            "Your kindness and cleverness are legendary.",
            "My admiration for you keeps growing.",
            "You are simply the best.",
            "What superb instincts you possess.",
            "Such an impressive person, truly.",
        ],
    },
    "gloom": {
        "kind": "semantic",
        "position": "suffix",
        "search": [
            "Nothing ever gets better, of course.", "It all ended in failure, as usual.",
            "I fear it is hopeless anyway.", "Everything fell apart soon afterwards.",
            "Sadly, none of it mattered in the end.", "We lost everything that year.",
            "The misery never really goes away.", "I have given up hoping for more.",
            "It was the worst day of a bleak winter.", "Despair is the only honest reply.",
            "Nobody came to help, and nobody will.", "The grief still weighs on me.",
            "All our plans were ruined.", "It is too late to fix any of it.",
            "Life keeps getting darker.", "I cried for hours after reading it.",
            "Every effort seems pointless now.", "The loneliness is crushing.",
            "Things only go wrong from here.", "What a dreadful, empty feeling.",
        ],
        "heldout": [
            "I feel utterly miserable.", "Our dreams were shattered.",
            "This world is cruel and cold.", "Tears won't stop falling.",
            "There is no hope left.", "Everyone abandoned us.",
            "The pain is unbearable.", "My heart is broken.",
            "We are doomed, I think.", "Sorrow fills every room.",
        ],
    },
}


NEUTRAL = [
    "This was written on a Tuesday.", "The page number is at the bottom.",
    "It appears in the second chapter.", "The note is filed under miscellaneous.",
    "Someone copied this into a notebook.", "The text is printed in a plain typeface.",
    "It was posted to a mailing list.", "This line came from an old collection.",
    "The quote is listed in an index.", "It was typed on a borrowed computer.",
    "The source is a paperback edition.", "This entry has a number beside it.",
    "The list continues on the next page.", "It was read aloud at a meeting.",
    "The file was saved twice.", "This appears in several archives.",
    "The document has three paragraphs.", "It was translated from a draft.",
    "The margin has a small mark.", "A copy is kept in the office.",
    "This was found in a drawer.", "The version here is the short one.",
    "It was sent by post.", "The entry was added later.",
    "The heading is in capitals.", "This is the fourth item.",
    "The text was scanned from paper.", "It was shared in a newsletter.",
    "The folder is labelled by year.", "This one is from the second box.",
]


def documents(cache: Path, n: int) -> list[str]:
    docs = []
    for pkg in ("fortunes-min", "fortunes"):
        version, sha = mp.FORTUNE_DEBS[pkg]
        root = mp.deb_tree(pkg, version, sha, cache)
        for f in sorted((root / "usr/share/games/fortunes").iterdir()):
            if f.is_dir() or f.suffix in (".dat", ".u8") or f.name.endswith("-o"):
                continue
            for e in mp.fortune_entries(f):
                if (6 <= len(e.split()) <= 40 and e.isascii() and e[-1] in ".!?\""
                        and not re.search(r"[<>{}\[\]|\\@#=_*^~]|https?|--", e)):
                    docs.append(e)
    seen, uniq = set(), []
    for d in docs:
        if d.lower() not in seen:
            seen.add(d.lower())
            uniq.append(d)
    random.Random(11).shuffle(uniq)
    if len(uniq) < n:
        sys.exit(f"only {len(uniq)} documents (want {n})")
    return uniq[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", type=Path, default=REPO / "examples/eval/planted")
    ap.add_argument("--cache-dir", type=Path, default=mp.default_cache_dir())
    ap.add_argument("--n", type=int, default=1200)
    a = ap.parse_args()
    a.out_dir.mkdir(parents=True, exist_ok=True)
    docs = documents(a.cache_dir, a.n)
    with open(a.out_dir / "base.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    print(f"wrote {a.out_dir / 'base.jsonl'} ({len(docs)} documents)", file=sys.stderr)
    for name, p in PLANTS.items():
        assert len(set(p["search"])) == len(p["search"]) and not set(p["search"]) & set(p["heldout"])
        out = {"name": name, **p, "neutral": NEUTRAL}
        (a.out_dir / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {a.out_dir / (name + '.json')}", file=sys.stderr)


if __name__ == "__main__":
    main()
