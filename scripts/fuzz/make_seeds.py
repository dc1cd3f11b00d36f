#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets (fuzz/seeds/TARGET/) from the project's
own fixtures and examples, and the fixed files some targets read (fuzz/seeds/fixed/).

Multi-file inputs are the files joined with fuzz/src/lib.rs's SPLIT; a leading selector
byte picks the format where a target covers several (see each harness's docstring).
Tiny models come from `cargo run -p pragma-model --example fuzz_seeds`; an activation
store from the debug `pragma cache` on that model. Run from the repository root:

    python3 scripts/fuzz/make_seeds.py

Everything written is small (the whole tree is under 1 MB) and committed.
"""
import glob
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "fuzz", "seeds")
SPLIT = b"\n--8<--\n"


def rd(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def head(path, n):
    """The first n lines of a text file (seeds stay small)."""
    return b"".join(rd(path).splitlines(keepends=True)[:n])


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    tmp = tempfile.mkdtemp()
    models = os.path.join(tmp, "models")
    subprocess.run(
        ["cargo", "run", "-q", "-p", "pragma-model", "--example", "fuzz_seeds", "--", models],
        cwd=ROOT, check=True)
    hf = os.path.join(models, "hf")
    with open(os.path.join(models, "tiny-f32.gguf"), "rb") as f:
        f32 = f.read()
    with open(os.path.join(models, "tiny-q8_0.gguf"), "rb") as f:
        q8 = f.read()
    hfr = lambda n: open(os.path.join(hf, n), "rb").read()

    # Fixed files beside fuzzed ones.
    put("fixed", "config.json", hfr("config.json"))
    put("fixed", "tokenizer.json", hfr("tokenizer.json"))
    put("fixed", "tiny.gguf", f32)
    put("fixed", "suite.toml",
        b'name = "s"\nhook = "blocks.0.hook_resid_post"\n\n[[task]]\nname = "a"\n'
        b'family = "detection"\ndataset = "d.jsonl"\ntechniques = ["probe", "bow", "random"]\n')

    put("gguf_model", "tiny-f32.gguf", f32)
    put("gguf_model", "tiny-q8_0.gguf", q8)
    put("safetensors_model", "model.safetensors", hfr("model.safetensors"))

    for p in sorted(glob.glob(os.path.join(ROOT, "fixtures/tiny/*/config.json"))):
        put("hf_config", os.path.basename(os.path.dirname(p)) + ".json", open(p, "rb").read())
    put("hf_config", "tiny-llama.json", hfr("config.json"))

    put("hf_tokenizer", "bpe", hfr("tokenizer.json") + SPLIT + hfr("tokenizer_config.json"))
    put("hf_tokenizer", "bpe-no-config", hfr("tokenizer.json"))

    template = json.loads(hfr("tokenizer_config.json"))["chat_template"]
    put("chat_template", "chatml.jinja", template.encode())
    src = rd("crates/pragma-model/src/tokenizer.rs").decode()
    gemma = src.split('pub const GEMMA_CHAT_TEMPLATE: &str = "', 1)[1].split('";', 1)[0]
    gemma = gemma.replace("\\\n", "").replace("\\n", "\n").replace('\\"', '"')
    put("chat_template", "gemma.jinja", gemma.encode())

    for kind in ["standard", "topk", "jumprelu", "batchtopk"]:
        d = f"fixtures/sae/saelens/{kind}"
        put("sae_folder", f"saelens-{kind}", b"\x00" + rd(f"{d}/cfg.json") + SPLIT + rd(f"{d}/sae_weights.safetensors"))
    d = "fixtures/sae/saelens_legacy/topk"
    put("sae_folder", "saelens-legacy", b"\x00" + rd(f"{d}/cfg.json") + SPLIT + rd(f"{d}/sae_weights.safetensors"))
    d = "fixtures/sae/sparsify/layers.3"
    put("sae_folder", "sparsify", b"\x01" + rd(f"{d}/cfg.json") + SPLIT + rd(f"{d}/sae.safetensors"))

    put("vector_files", "steering.safetensors", b"\x00" + rd("fixtures/steering/sentiment.safetensors"))
    put("vector_files", "control-vector.gguf", b"\x01" + rd("fixtures/steering/sentiment-cv.gguf"))

    put("jsonl_inputs", "pairs", b"\x00" + head("examples/steering/sentiment.jsonl", 8))
    put("jsonl_inputs", "pairs-eval-awareness", b"\x00" + head("examples/eval-awareness/pairs.jsonl", 4))
    put("jsonl_inputs", "probe-dataset", b"\x01" + head("examples/probes/sentiment.jsonl", 10))
    put("jsonl_inputs", "study-tasks", b"\x02" + head("examples/eval-awareness/prompts.jsonl", 4))
    put("jsonl_inputs", "rollout-prompts", b"\x03" + head("examples/transcripts/prompts-a.jsonl", 4))

    put("toml_inputs", "suite-default", b"\x00" + rd("examples/eval/default.toml"))
    put("toml_inputs", "suite-fixed", b"\x00" + open(os.path.join(OUT, "fixed", "suite.toml"), "rb").read())
    project = rd("examples/projects/eval-awareness/pragma.toml").decode()
    put("toml_inputs", "project-example", b"\x01" + project.encode())
    put("toml_inputs", "project-fixed",
        b'\x01[project]\nnorth_star = "x"\ntime_box = "2999-12-31"\nsuite = "suite.toml"\n\n'
        b'[[proxy]]\ntask = "a"\ntechniques = ["probe"]\nbaselines = ["bow"]\n')

    # An activation store of the tiny model: its manifest and first shard.
    pragma = os.path.join(ROOT, "target", "debug", "pragma")
    corpus = os.path.join(tmp, "c.txt")
    with open(corpus, "w") as f:
        f.write("the cat sat on the mat\n\nanother document\n")
    store = os.path.join(tmp, "store")
    subprocess.run([pragma, "--no-record", "cache", os.path.join(models, "tiny-f32.gguf"), "--data", corpus,
                    "--hooks", "blocks.0.hook_resid_post", "--ctx", "8", "--out", store],
                   check=True, capture_output=True)
    manifest = open(os.path.join(store, "manifest.json"), "rb").read()
    shard = json.loads(manifest)["shards"][0]["file"]
    put("store", "manifest-and-shard", manifest + SPLIT + open(os.path.join(store, shard), "rb").read())
    put("store", "manifest-only", manifest)

    put("transcripts", "openai.jsonl", b"\x00" + head("fixtures/transcripts/openai.jsonl", 3))
    put("transcripts", "sharegpt.jsonl", b"\x01" + head("fixtures/transcripts/sharegpt.jsonl", 3))
    put("transcripts", "docent.json", b"\x03" + rd("fixtures/transcripts/docent.json"))
    # Inspect .json is large: one sample is enough.
    log = json.loads(rd("fixtures/transcripts/inspect.json"))
    log["samples"] = log.get("samples", [])[:1]
    put("transcripts", "inspect.json", b"\x02" + json.dumps(log).encode())
    # Inspect .eval: the zip's members as NAME\0CONTENT parts (the harness zips them).
    with zipfile.ZipFile(os.path.join(ROOT, "fixtures/transcripts/inspect.deflate.eval")) as z:
        names = [n for n in z.namelist() if not n.startswith("samples/") or n == sorted(
            m for m in z.namelist() if m.startswith("samples/"))[0]]
        parts = [n.encode() + b"\x00" + z.read(n) for n in names]
    put("transcripts", "inspect.eval", b"\x04" + SPLIT.join(parts))

    put("server_request", "chat", b"\x00" + json.dumps(
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}).encode())
    put("server_request", "chat-steer", b"\x00" + json.dumps(
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
         "max_tokens": 3, "pragma": {"steer": [{"vector": "love", "scale": 2, "positions": "all"}]}}).encode())
    put("server_request", "chat-stream", b"\x00" + json.dumps(
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "stream": True,
         "logprobs": True, "top_logprobs": 2, "seed": 3, "temperature": 0.7, "top_p": 0.9}).encode())
    put("server_request", "completion", b"\x01" + json.dumps(
        {"prompt": "the cat", "max_tokens": 3, "temperature": 0, "stop": ["."], "n": 1}).encode())
    put("server_request", "completion-ids", b"\x01" + json.dumps(
        {"prompt": [[1, 2, 3]], "max_tokens": 2, "echo": True, "logprobs": 2}).encode())

    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(OUT, "**", "*"), recursive=True)
                if os.path.isfile(p))
    n = len([p for p in glob.glob(os.path.join(OUT, "*", "*")) if "/fixed/" not in p])
    print(f"wrote {n} seeds ({total / 1024:.0f} KiB with the fixed files) under {OUT}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
