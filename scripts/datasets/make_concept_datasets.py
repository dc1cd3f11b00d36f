#!/usr/bin/env python3
"""Build the concept-detection datasets of `pragma eval` in examples/eval/concepts/.

Each concept is a balanced JSON Lines file of single sentences, `{"text", "label", "kind"}`,
with a NAME.meta.json sidecar (the yes/no question of the prompting technique). `kind`
says why an example is there: "positive", "negative", or "hard-negative" (a negative that
shares surface features with the positives, so that a detector keyed on one word or mark
fails on it). Reruns are byte-identical: sources are pinned (Debian packages by version and
SHA-256, PyPI wheels by SHA-256) and all randomness is seeded.

Sources (licenses in examples/probes/LICENSE.* and examples/eval/concepts/LICENSE.*):
  - English sentences: Debian's `fortunes` and `fortunes-min` (fortune-mod 1.99.1, BSD;
    the same pinned packages as the probe datasets), split into sentences.
  - Python code: the `attrs` 23.2.0 wheel from PyPI (MIT): single source lines.

Concepts (label 1 = the concept present):
  question   a question (final mark removed from every sentence, so punctuation does not
             give it away); hard negatives: statements opening with a wh-word or auxiliary.
  code       a line of Python; hard negatives: English sentences about programs/computers.
  negation   a negated sentence (not, n't, never, no, nothing, nobody, none, neither, nor);
             hard negatives: sentences with "know", "note", "nothing"-free look-alikes
             (words that contain "no" but do not negate).
  past       past tense (was/were/had/did or a verb ending -ed after a pronoun) vs future
             (will, shall, going to); hard negatives: future sentences with -ed adjectives.
  animals    mentions an animal; hard negatives: sentences with animal words used as names
             or idioms are not separable automatically, so: sentences about people/places.
  food       mentions a food or drink; hard negatives: sentences about eating-adjacent
             non-food words (table, kitchen, restaurant without a food).
  person     names a famous person (a name from the fortunes' own attribution lines);
             hard negatives: sentences with other capitalised words (places, months).
  imperative an imperative sentence (opens with a base-form verb or Don't/Never + verb);
             hard negatives: declaratives opening with the same words as nouns/subjects.

Usage:
  python3 scripts/datasets/make_concept_datasets.py [--out-dir examples/eval/concepts]
          [--cache-dir DIR] [--per-class 150]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_probe_datasets as mp  # noqa: E402  (shared pinned sources and helpers)

REPO = mp.REPO
ATTRS = "attrs==23.2.0"
mp.WHEEL_SHA256["attrs-23.2.0-py3-none-any.whl"] = (
    "99b87a485a5820b23b879f04c2305b44b951b502fd64be915879d77a7e8fc6f1")

QUESTIONS = {
    "question": "Is this sentence a question? Answer Yes or No.",
    "code": "Is this text a line of computer code? Answer Yes or No.",
    "negation": "Does this sentence contain a negation? Answer Yes or No.",
    "past": "Is this sentence about the past (rather than the future)? Answer Yes or No.",
    "animals": "Does this sentence mention an animal? Answer Yes or No.",
    "food": "Does this sentence mention a food or a drink? Answer Yes or No.",
    "person": "Does this sentence name a real person? Answer Yes or No.",
    "imperative": "Is this sentence a command or an instruction? Answer Yes or No.",
}
LABELS = {
    "question": ("statement", "question"),
    "code": ("prose", "code"),
    "negation": ("affirmative", "negated"),
    "past": ("future", "past"),
    "animals": ("no animal", "animal"),
    "food": ("no food", "food"),
    "person": ("no person", "person"),
    "imperative": ("declarative", "imperative"),
}

WH = r"(what|who|whom|whose|where|when|why|how|which)"
AUX = r"(is|are|was|were|do|does|did|can|could|will|would|shall|should|have|has|had|may|might|must|am)"
NEG = re.compile(r"\b(not|never|no|nothing|nobody|none|neither|nor|nowhere|cannot)\b|n't\b", re.I)
ANIMALS = ("dog dogs cat cats horse horses cow cows pig pigs sheep goat goats chicken chickens "
           "duck ducks bird birds fish fishes mouse mice rat rats rabbit rabbits lion lions "
           "tiger tigers bear bears wolf wolves fox foxes elephant elephants monkey monkeys "
           "snake snakes frog frogs bee bees ant ants fly flies spider spiders whale whales "
           "shark sharks eagle eagles owl owls crow crows camel camels donkey donkeys mule "
           "mules ox oxen deer moose squirrel squirrels turtle turtles penguin penguins "
           "kitten kittens puppy puppies dinosaur dinosaurs worm worms goose geese swan "
           "pigeon pigeons parrot parrots bat bats cattle lamb lambs hen hens rooster").split()
FOODS = ("bread cheese butter milk egg eggs meat beef pork ham bacon chicken soup salad "
         "apple apples banana bananas orange oranges pie cake cakes cookie cookies candy "
         "chocolate sugar salt pepper rice beans potato potatoes tomato tomatoes pizza "
         "sandwich sandwiches coffee tea beer wine whiskey vodka water juice steak fish "
         "onion onions garlic corn carrot carrots pasta spaghetti noodles honey jam toast "
         "breakfast lunch dinner supper dessert fruit vegetables peanut peanuts nuts doughnut "
         "doughnuts hamburger hamburgers hot-dog sausage lemon lemons grapes cherry cherries "
         "martini champagne gin rum cereal yogurt cream").split()
IMPERATIVE_VERBS = ("be do don't never always take give keep try remember avoid make go get "
                    "let put think look stop start learn love live tell ask read write use "
                    "help eat drink work speak forget know find leave bring call come run "
                    "smile trust believe listen wait show consider beware follow choose").split()


def english_sentences(cache: Path) -> list[str]:
    out = []
    for pkg in ("fortunes-min", "fortunes"):
        version, sha = mp.FORTUNE_DEBS[pkg]
        root = mp.deb_tree(pkg, version, sha, cache)
        for f in sorted((root / "usr/share/games/fortunes").iterdir()):
            if f.is_dir() or f.suffix in (".dat", ".u8") or f.name.endswith("-o"):
                continue
            for e in mp.fortune_entries(f):
                for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", e):
                    s = s.strip().strip('"').strip()
                    if (4 <= len(s.split()) <= 22 and s.isascii() and 15 <= len(s) <= 140
                            and re.match(r"^[A-Z]", s) and s[-1] in ".!?"
                            and not re.search(r"[<>{}\[\]|\\@#=_*^~:;]|https?|--|\(|\)", s)
                            and s.count('"') == 0):
                        out.append(s)
    # Dedup, keep first occurrence order (file order is pinned).
    seen, uniq = set(), []
    for s in out:
        if s.lower() not in seen:
            seen.add(s.lower())
            uniq.append(s)
    return uniq


def attribution_names(cache: Path) -> list[str]:
    names = set()
    for pkg in ("fortunes-min", "fortunes"):
        version, sha = mp.FORTUNE_DEBS[pkg]
        root = mp.deb_tree(pkg, version, sha, cache)
        for f in sorted((root / "usr/share/games/fortunes").iterdir()):
            if f.is_dir() or f.suffix in (".dat", ".u8"):
                continue
            text = f.read_bytes().decode("latin-1")
            for m in re.finditer(r"^\s*--\s*([A-Z][a-z]+(?: [A-Z]\.)? [A-Z][a-z]{2,})\s*,?\s*$",
                                 text, re.M):
                names.add(m.group(1))
    return sorted(names)


def code_lines(cache: Path) -> list[str]:
    whl = mp.pip_wheel(ATTRS, cache)
    lines = []
    with zipfile.ZipFile(whl) as z:
        for name in sorted(z.namelist()):
            if not name.endswith(".py"):
                continue
            in_doc = False
            for ln in z.read(name).decode("utf-8").splitlines():
                s = ln.strip()
                if s.count('"""') % 2 == 1:
                    in_doc = not in_doc
                    continue
                if in_doc or not s or s.startswith("#") or '"""' in s:
                    continue
                if 20 <= len(s) <= 100 and re.search(r"[=():\[\]]", s) and s.isascii():
                    lines.append(s)
    seen, uniq = set(), []
    for s in lines:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


def strip_mark(s: str) -> str:
    return s.rstrip(".!?").rstrip()


def balanced(name, pos, neg, hard, n, rng, transform=lambda s: s):
    """n positives; n negatives of which up to a third are hard negatives."""
    pos, neg, hard = list(pos), list(neg), list(hard)
    for v in (pos, neg, hard):
        rng.shuffle(v)
    if len(pos) < n:
        sys.exit(f"{name}: only {len(pos)} positives (want {n})")
    h = min(len(hard), n // 3)
    negs = [(s, "hard-negative") for s in hard[:h]]
    used = {s for s, _ in negs}
    negs += [(s, "negative") for s in neg if s not in used][: n - h]
    if len(negs) < n:
        sys.exit(f"{name}: only {len(negs)} negatives (want {n})")
    rows = [{"text": transform(s), "label": 1, "kind": "positive"} for s in pos[:n]]
    rows += [{"text": transform(s), "label": 0, "kind": k} for s, k in negs]
    # Distinct texts after the transform.
    seen, out = set(), []
    for r in rows:
        if r["text"] not in seen and r["text"]:
            seen.add(r["text"])
            out.append(r)
    c1 = sum(r["label"] for r in out)
    c0 = len(out) - c1
    m = min(c0, c1)
    out = [r for r in out if r["label"] == 1][:m] + [r for r in out if r["label"] == 0][:m]
    rng.shuffle(out)
    return out


def words(s: str) -> set[str]:
    return set(re.findall(r"[a-z'-]+", s.lower()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", type=Path, default=REPO / "examples/eval/concepts")
    ap.add_argument("--cache-dir", type=Path, default=mp.default_cache_dir())
    ap.add_argument("--per-class", type=int, default=150)
    a = ap.parse_args()
    n = a.per_class
    sents = english_sentences(a.cache_dir)
    print(f"{len(sents)} English sentences", file=sys.stderr)
    sets = {}

    # question vs statement (marks removed)
    q = [s for s in sents if s.endswith("?")]
    st = [s for s in sents if s.endswith(".")]
    hard = [s for s in st if re.match(rf"^({WH}|{AUX})\b", s, re.I)]
    sets["question"] = balanced("question", q, st, hard, n, random.Random(1), strip_mark)

    # code vs prose
    code = code_lines(a.cache_dir)
    tech = [s for s in sents if words(s) & {"program", "programs", "computer", "computers",
                                             "software", "code", "unix", "bug", "bugs",
                                             "programmer", "programmers", "function", "data"}]
    sets["code"] = balanced("code", code, sents, tech, n, random.Random(2))

    # negation
    negd = [s for s in sents if NEG.search(s)]
    aff = [s for s in sents if not NEG.search(s)]
    look = [s for s in aff if re.search(r"\b(know|knows|knew|known|note|notes|noted|nose|"
                                        r"noble|north|novel|now|nod|noise|normal)\b", s, re.I)]
    sets["negation"] = balanced("negation", negd, aff, look, n, random.Random(3))

    # past vs future
    fut = [s for s in sents if re.search(r"\b(will|shall|going to|'ll)\b", s, re.I)
           and not re.search(r"\b(was|were|had|did)\b", s, re.I)]
    past = [s for s in sents if re.search(r"\b(was|were|had|did)\b|\b(I|he|she|they|we) \w+ed\b", s)
            and not re.search(r"\b(will|shall|going to|'ll)\b", s, re.I)]
    fut_ed = [s for s in fut if re.search(r"\b\w{3,}ed\b", s)]
    sets["past"] = balanced("past", past, fut, fut_ed, n, random.Random(4))

    # animals
    an = set(ANIMALS)
    ani = [s for s in sents if words(s) & an]
    noani = [s for s in sents if not words(s) & an]
    people = [s for s in noani if words(s) & {"man", "woman", "men", "women", "child",
                                               "children", "people", "person", "boy", "girl"}]
    sets["animals"] = balanced("animals", ani, noani, people, n, random.Random(5))

    # food
    fd = set(FOODS)
    food = [s for s in sents if words(s) & fd]
    nofood = [s for s in sents if not words(s) & fd]
    adj = [s for s in nofood if words(s) & {"eat", "eats", "ate", "eating", "hungry", "kitchen",
                                             "table", "restaurant", "cook", "cooking", "meal",
                                             "taste", "appetite", "diet", "drink", "drinking"}]
    sets["food"] = balanced("food", food, nofood, adj, n, random.Random(6))

    # person: a name from the attribution lines inside the sentence
    names = attribution_names(a.cache_dir)
    last = {nm.split()[-1] for nm in names}
    pers = [s for s in sents if any(nm in s for nm in names)
            or any(re.search(rf"\b{re.escape(l)}\b", s[1:]) for l in last)]
    pers_set = set(pers)
    nopers = [s for s in sents if s not in pers_set]
    caps = [s for s in nopers if re.search(r"\s[A-Z][a-z]{3,}", s)]
    sets["person"] = balanced("person", pers, [s for s in nopers if s not in caps], caps, n,
                              random.Random(7))

    # imperative
    iv = set(IMPERATIVE_VERBS)
    def first(s):
        return s.split()[0].lower().strip(",")
    imp = [s for s in sents if first(s) in iv and not re.match(rf"^{AUX}\b.*\?$", s, re.I)
           and not s.endswith("?")]
    dec = [s for s in sents if first(s) not in iv and s.endswith(".")
           and re.match(r"^(I|He|She|They|We|It|The|A|My|His|Her|Their|This|That)\b", s)]
    nounish = [s for s in sents if s.endswith(".") and re.match(
        r"^(Love|Work|Life|Time|Help|Trust|Knowledge|Thought|Silence|Talk|Music|Learning)"
        r"\b \w+s\b", s)]
    sets["imperative"] = balanced("imperative", imp, dec, nounish, n, random.Random(8))

    a.out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in sets.items():
        mp.write_jsonl(a.out_dir / f"{name}.jsonl", rows)
        neg_name, pos_name = LABELS[name]
        meta = {"question": QUESTIONS[name], "positive": 1,
                "label_names": {"1": pos_name, "0": neg_name}}
        (a.out_dir / f"{name}.meta.json").write_text(json.dumps(meta) + "\n")
    (a.out_dir / "NAMES.txt").write_text(
        "# attribution names used by the person concept\n" + "\n".join(names) + "\n")


if __name__ == "__main__":
    main()
