"""The methods from Python equal the Rust results and the references:
- SAE.load + encode/decode on the SAELens/sparsify fixture folders equal SAELens' and
  sparsify's outputs (fixtures/sae/io.safetensors, made by
  scripts/fixtures/make_sae_fixtures.py) within 1e-5 absolute, the bound of the Rust test;
- SteeringVector.train, Probe.train and SAE.train give exactly what `pragma steer train`,
  `pragma probe train` and `pragma sae train` write for the same inputs;
- Store reads back the activations the model computes (f32 store: bitwise) and its
  shuffled batches cover every row once;
- streaming monitors score each generated token as the probe scores that token's
  activation from a plain forward over prompt + completion."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import pragma_interp as pragma

ROOT = Path(__file__).resolve().parents[2]
SAE_FIXTURES = ROOT / "fixtures/sae"


@pytest.mark.parametrize(
    "folder,key",
    [
        ("saelens/standard", "saelens.standard"),
        ("saelens/topk", "saelens.topk"),
        ("saelens/jumprelu", "saelens.jumprelu"),
        ("saelens/batchtopk", "saelens.batchtopk"),
        ("saelens_legacy/topk", "saelens_legacy.topk"),
        ("sparsify/layers.3", "sparsify"),
    ],
)
def test_sae_encode_decode_equal_saelens_and_sparsify(folder, key, tmp_path):
    io = load_file(str(SAE_FIXTURES / "io.safetensors"))
    sae = pragma.SAE.load(SAE_FIXTURES / folder)
    assert sae.hook_name == "blocks.3.hook_resid_post"
    f = sae.encode(io["x"])
    out = sae.decode(f)
    assert f.shape == io[f"{key}.feature_acts"].shape and out.shape == io[f"{key}.sae_out"].shape
    assert np.abs(f - io[f"{key}.feature_acts"]).max() < 1e-5
    assert np.abs(out - io[f"{key}.sae_out"]).max() < 1e-5
    # Leading axes are kept; a saved folder loads back to the same latents.
    assert sae.encode(io["x"].reshape(2, 16, -1)).shape == (2, 16, sae.cfg["d_sae"])
    sae.save(tmp_path / "sae")
    assert np.array_equal(pragma.SAE.load(tmp_path / "sae").encode(io["x"]), f)
    with pytest.raises(pragma.PragmaError, match="last axis"):
        sae.encode(np.zeros((3, 7), np.float32))


def test_steering_vector_train_equals_cli(model, cli, tmp_path):
    pairs = ROOT / "examples/steering/sentiment.jsonl"
    out = tmp_path / "v.safetensors"
    cli("steer", "train", "--pairs", str(pairs), "--layers", "8,12", "-o", str(out))
    want = pragma.SteeringVector.load(out)
    got = pragma.SteeringVector.train(model, str(pairs), layers=[8, 12])
    assert got.layers == [8, 12] and np.array_equal(got.directions, want.directions)
    assert got.meta["pairs_sha256"] == want.meta["pairs_sha256"]
    # Pairs given in Python: the same vector.
    rows = [json.loads(l) for l in pairs.read_text().splitlines() if l.strip()]
    listed = pragma.SteeringVector.train(model, [(r["positive"], r["negative"]) for r in rows], layers="8,12")
    assert np.array_equal(listed.directions, want.directions)
    got.save(tmp_path / "back.safetensors")
    assert np.array_equal(pragma.SteeringVector.load(tmp_path / "back.safetensors").direction(12), want.direction(12))
    with pytest.raises(pragma.PragmaError, match="identical"):
        pragma.SteeringVector.train(model, [("same", "same")], layers=[8])


@pytest.fixture(scope="module")
def probe_data(tmp_path_factory):
    """120 labelled sentences of examples/probes/sentiment.jsonl (balanced), with its
    meta file (the prompting baseline's question)."""
    d = tmp_path_factory.mktemp("probe")
    rows = [json.loads(l) for l in (ROOT / "examples/probes/sentiment.jsonl").read_text().splitlines()]
    pos = [r for r in rows if r["label"] == 1][:60]
    neg = [r for r in rows if r["label"] == 0][:60]
    path = d / "sentiment.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pos + neg))
    (d / "sentiment.meta.json").write_text((ROOT / "examples/probes/sentiment.meta.json").read_text())
    return path


@pytest.fixture(scope="module")
def sweep(model, probe_data):
    return pragma.Probe.train(model, probe_data, layers=[6, 7], bootstrap=200)


def test_probe_train_equals_cli(sweep, cli, probe_data, tmp_path):
    out = tmp_path / "probe"
    cli("probe", "train", "--data", str(probe_data), "--hooks", "blocks.6..8.hook_resid_post",
        "--bootstrap", "200", "-o", str(out))
    want = json.loads((out / "results.json").read_text())
    got = sweep.report
    for a, b in zip(got["layers"], want["layers"]):
        assert a["layer"] == b["layer"]
        for m in ("logistic", "diff_means"):
            assert a[m]["test_auroc"] == b[m]["test_auroc"] and a[m]["test_auroc_ci"] == b[m]["test_auroc_ci"]
    assert [b["name"] for b in got["baselines"]] == [b["name"] for b in want["baselines"]]
    cli_probe = pragma.Probe.load(out / "probe.safetensors")
    assert np.array_equal(sweep.logistic.weights, cli_probe.weights) and sweep.logistic.bias == cli_probe.bias
    assert sweep.logistic.hook_name == cli_probe.hook_name
    # score = w . x + b, and predict_proba its sigmoid.
    x = np.random.default_rng(0).normal(size=(5, cli_probe.weights.size)).astype(np.float32)
    s = cli_probe.score(x)
    assert np.allclose(s, x.astype(np.float64) @ cli_probe.weights.astype(np.float64) + cli_probe.bias, rtol=1e-6)
    assert np.allclose(cli_probe.predict_proba(x), 1 / (1 + np.exp(-s)))
    print(sweep.markdown)


def test_streaming_monitor_scores_each_token(model, sweep):
    probe = sweep.logistic
    prompt = "Tell me about a wonderful day at the beach."
    toks = list(model.generate(prompt, chat=True, max_tokens=10, monitor=probe, stream=True))
    assert toks and all(probe.name in t.scores and probe.name in t.probs for t in toks)
    # The same scores from a plain forward over prompt + completion, where each token is the input.
    ids = model.apply_chat_template([{"role": "user", "content": prompt}])
    full = ids + [t.id for t in toks]
    _, cache = model.run_with_cache(full, names_filter=probe.hook_name)
    acts = cache[probe.hook_name][0, len(ids):]
    want = probe.score(acts)
    got = np.array([t.scores[probe.name] for t in toks])
    assert np.abs(got - want).max() < 1e-3 * max(1.0, np.abs(want).max()), (got, want)
    with pytest.raises(pragma.PragmaError, match="stream=True"):
        model.generate(prompt, monitor=probe)


@pytest.fixture(scope="module")
def store(cli, tmp_path_factory):
    d = tmp_path_factory.mktemp("store")
    corpus = d / "corpus.jsonl"
    texts = [json.loads(l)["text"] for l in (ROOT / "examples/probes/sentiment.jsonl").read_text().splitlines()[:300]]
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cli("cache", "--data", str(corpus), "--hooks", "blocks.6.hook_resid_post", "--dtype", "f32", "-o", str(d / "store"))
    return pragma.Store(d / "store"), texts


def test_store_reads_what_the_model_computes(model, store):
    s, texts = store
    hook = "blocks.6.hook_resid_post"
    assert s.hooks == [hook] and s.manifest["n_tokens"] == s.n_tokens == len(s)
    t = s.tokens()
    first = np.flatnonzero(t["doc"] == 0)
    ids = t["token"][first].tolist()
    assert ids == model.to_tokens(texts[0])
    _, cache = model.run_with_cache(ids, names_filter=hook)
    rows = s.gather(hook, first.tolist())
    assert np.abs(rows - cache[hook][0]).max() <= 1e-4 * np.abs(cache[hook]).max()
    assert "[[" in s.context(int(first[2]), model)
    seen = np.concatenate([b for b in s.batches(hook, batch_size=500, seed=1)])
    assert seen.shape == (s.n_tokens, model.cfg["d_model"])
    everything = s.gather(hook, list(range(s.n_tokens)))
    assert np.array_equal(np.sort(seen.sum(1)), np.sort(everything.sum(1)))  # each row once
    docs, pooled = s.pooled(hook, "last")
    assert len(docs) == len(texts) and np.array_equal(pooled[0], rows[-1])


def test_sae_train_equals_cli(store, cli, tmp_path):
    s, _ = store
    hook = "blocks.6.hook_resid_post"
    args = dict(architecture="topk", d_sae=256, k=8, tokens=4096, batch_tokens=512, seed=1)
    sae, result = pragma.SAE.train(s, hook, tmp_path / "py", **args)
    cli("sae", "train", "--store", str(s.path), "--hook", hook, "--arch", "topk", "--k", "8",
        "--d-sae", "256", "--tokens", "4096", "--batch-tokens", "512", "--seed", "1", "-o", str(tmp_path / "cli"))
    want = pragma.SAE.load(tmp_path / "cli")
    assert result["steps"] == 8 and 0 < result["final_fvu"] < 1
    for w in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert np.array_equal(getattr(sae, w), getattr(want, w)), w
    x = s.gather(hook, list(range(64)))
    assert np.array_equal(sae.encode(x), want.encode(x))



def test_sae_splice_equals_cli_trace(model, store, cli, tmp_path):
    """An SAE spliced in with a latent edit (`SAE.hook`) gives the logits `pragma trace
    --sae DIR --sae-error --sae-add L:S` gives, bitwise; with the error term kept and no
    edit the run is the plain one (within float error)."""
    s, _ = store
    hook = "blocks.6.hook_resid_post"
    sae, _ = pragma.SAE.train(s, hook, tmp_path / "sae", architecture="topk", d_sae=256, k=8,
                              tokens=2048, batch_tokens=512, seed=2)
    prompt = "The weather today is lovely"
    out = tmp_path / "trace.safetensors"
    cli("trace", "--prompt", prompt, "--hooks", hook, "--logits", "--sae", str(tmp_path / "sae"),
        "--sae-error", "--sae-add", "5:4", "-o", str(out))
    want = load_file(str(out))["logits"]
    got = model.run(prompt, hooks=[sae.hook(add={5: 4.0})])
    assert np.array_equal(got, want)
    plain = model.run(prompt)
    assert not np.allclose(got, plain)
    assert np.abs(model.run(prompt, hooks=[sae.hook()]) - plain).max() < 1e-3 * np.abs(plain).max()


def test_ctrl_c_stops_sae_training_at_a_checkpoint_that_resumes(store, tmp_path):
    """SIGINT during SAE.train raises KeyboardInterrupt after saving a checkpoint and says
    so; training again with the same folder resumes from that step."""
    import signal
    import subprocess
    import sys
    import time

    s, _ = store
    out = tmp_path / "sae"
    script = f"""
import pragma_interp as pragma
s = pragma.Store({str(s.path)!r})
pragma.SAE.train(s, "blocks.6.hook_resid_post", {str(out)!r}, architecture="topk", d_sae=256, k=8,
                 tokens=50_000_000, batch_tokens=512)
"""

    def start():
        return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    p = start()
    deadline = time.time() + 120
    while not (out / "log.jsonl").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    assert (out / "log.jsonl").exists(), p.communicate()[1][-2000:]
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
    assert "interrupted at step" in err and "resumes it" in err, err[-2000:]
    step = int(err.split("interrupted at step ")[1].split()[0])
    assert step >= 50
    # Again with the same folder: it resumes at that step (then we stop it).
    p = start()
    line = ""
    deadline = time.time() + 120
    while "resuming" not in line and time.time() < deadline:
        line = p.stderr.readline()
        if not line and p.poll() is not None:
            break
    p.kill()
    p.communicate()
    assert f"resuming at step {step} of" in line, line
