"""pragma_interp on SmolLM2: run_with_cache equals TransformerLens' activations (the
committed fixture fixtures/transformer_lens/smollm2.safetensors, made by
scripts/fixtures/make_tl_fixture.py: TL 2.11, float64, no folding) for every hook name
stored there, within max |pragma - TL| / max |TL| <= 2e-5 per tensor (the bound the Rust
test uses); errors are PragmaError with pragma's message.

Run: pip install the wheel (scripts/python/build_wheel.sh), then pytest python/tests.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

import pragma_interp as pragma

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures/transformer_lens/smollm2.safetensors"
REL_TOL = 2e-5


def test_run_with_cache_equals_transformer_lens(model):
    with safe_open(str(FIXTURE), "np") as f:
        meta = json.loads(f.metadata()["pragma"])
    ids = meta["tokens"]
    tl = load_file(str(FIXTURE))
    names = sorted(k for k in tl if k.startswith(("blocks.", "hook_", "ln_final")))
    assert names, sorted(tl)[:5]
    logits, cache = model.run_with_cache(ids, names_filter=names)
    assert logits.shape == (1, len(ids), model.cfg["d_vocab"]) and logits.dtype == np.float32
    worst = 0.0
    for name in names:
        want = tl[name].astype(np.float64)
        got = cache[name].astype(np.float64)
        got = got.reshape(want.shape) if got.size == want.size else got
        assert got.shape == want.shape, (name, got.shape, want.shape)
        finite = np.isfinite(want)
        assert np.array_equal(finite, np.isfinite(got)), name  # masked scores: -inf in both
        rel = np.abs(got[finite] - want[finite]).max() / max(np.abs(want[finite]).max(), 1e-12)
        worst = max(worst, rel)
        assert rel <= REL_TOL, (name, rel)
    print(f"{len(names)} hooks, worst relative difference {worst:.2e}")


def test_short_names_tokens_and_errors(model):
    ids = model.to_tokens("The cat sat on the mat")
    assert ids[0] == 1 and model.to_string(ids[1:]) == "The cat sat on the mat"
    _, cache = model.run_with_cache("The cat sat on the mat", names_filter="blocks.*.hook_resid_post")
    assert len(cache) == model.cfg["n_layers"]
    assert np.array_equal(cache["resid_post", 5], cache["blocks.5.hook_resid_post"])
    assert cache["blocks.5.hook_resid_post"].shape == (1, len(ids), model.cfg["d_model"])
    with pytest.raises(KeyError):
        cache["blocks.5.hook_mlp_out"]
    with pytest.raises(pragma.PragmaError, match="unknown hook point"):
        model.run_with_cache("x", names_filter="blocks.99.hook_nope")
    with pytest.raises(pragma.PragmaError, match="out of range"):
        model.run_with_cache([1, 10**6])
    with pytest.raises(pragma.PragmaError):
        pragma.Model("/no/such/model.gguf")


def test_generate_is_greedy_and_repeatable(model):
    a = model.generate("Tell me about your day.", max_tokens=12, chat=True)
    assert a == model.generate("Tell me about your day.", max_tokens=12, chat=True)
    assert a.startswith("It's a typical Monday")


def test_interventions_act_for_one_call_only(model):
    d = model.cfg["d_model"]
    v = np.linspace(-1, 1, d).astype(np.float32)
    name = "blocks.3.hook_resid_post"
    _, plain = model.run_with_cache("The cat sat on the mat", names_filter=[name, "blocks.4.hook_resid_pre"])
    _, steered = model.run_with_cache(
        "The cat sat on the mat", names_filter=[name], hooks=[pragma.add(name, v, scale=2.0, positions="from:1")]
    )
    diff = steered[name] - plain[name]
    assert np.allclose(diff[0, 1:], 2.0 * v, atol=1e-4) and np.allclose(diff[0, 0], 0.0)
    # The next call, without hooks, is plain again (nothing global).
    _, again = model.run_with_cache("The cat sat on the mat", names_filter=[name])
    assert np.array_equal(again[name], plain[name])
    _, zeroed = model.run_with_cache("The cat sat", names_filter=[name], hooks=[pragma.zero(name)])
    assert not zeroed[name].any()
    u = v / np.linalg.norm(v)
    _, abl = model.run_with_cache("The cat sat", names_filter=[name], hooks=[pragma.ablate(name, v)])
    assert np.abs(abl[name][0] @ u).max() < 1e-3
    # Steering changes generation; a bad hook name is a PragmaError.
    plain_text = model.generate("Tell me about your day.", max_tokens=12, chat=True)
    steer = pragma.add("blocks.10.hook_resid_post", v * 8, positions="all")
    assert model.generate("Tell me about your day.", max_tokens=12, chat=True, hooks=[steer]) != plain_text
    with pytest.raises(pragma.PragmaError, match="unknown hook point"):
        model.run_with_cache("x", hooks=[pragma.zero("blocks.3.hook_nope")])


def test_batched_inputs_equal_single_runs(model):
    """A batch is left-padded; each row's real positions equal its own run (within 1e-4:
    padding changes the matmul shapes, not the maths) and the mask marks them."""
    texts = ["The cat sat", "Hello there my good friend, how are you"]
    name = "blocks.6.hook_resid_post"
    logits, cache = model.run_with_cache(texts, names_filter=name)
    mask = cache.attention_mask
    assert logits.shape[0] == 2 and mask.shape == logits.shape[:2]
    for b, text in enumerate(texts):
        one_logits, one = model.run_with_cache(text, names_filter=name)
        n = one_logits.shape[1]
        assert mask[b].sum() == n and cache.pad[b] == logits.shape[1] - n
        got = cache[name][b, cache.pad[b]:]
        assert np.abs(got - one[name][0]).max() <= 1e-4 * np.abs(one[name]).max()
        assert np.abs(logits[b, cache.pad[b]:] - one_logits[0]).max() <= 1e-4 * np.abs(one_logits).max()


def test_patching_from_a_cache(model):
    """Patching the residual at every position from the clean run reproduces the clean
    logits (a forward from there is the clean one); patching one position moves only
    that position and later ones."""
    clean, corrupt = "When Mary and John went to the store, John gave a drink to", \
        "When Mary and John went to the store, Mary gave a drink to"
    name = "blocks.8.hook_resid_pre"
    clean_logits, clean_cache = model.run_with_cache(clean, names_filter=name)
    corrupt_logits = model.run(corrupt)
    patched = model.run(corrupt, hooks=[pragma.patch(name, clean_cache[name])])
    assert np.abs(patched - clean_logits).max() < 1e-3
    pos = 10  # the second name
    one = model.run(corrupt, hooks=[pragma.patch(name, clean_cache[name], positions=str(pos))])
    assert np.array_equal(one[0, :pos], corrupt_logits[0, :pos])
    assert not np.allclose(one[0, pos], corrupt_logits[0, pos])


def test_custom_python_hooks(model):
    """A Python function edits the activation (numpy in, numpy out, or in place); only its
    positions take the result; an exception inside it reaches the caller unchanged."""
    name = "blocks.4.hook_resid_post"
    seen = []

    def double(x, hook):
        seen.append((hook.name, hook.layer, x.shape))
        return 2 * x

    _, plain = model.run_with_cache("The cat sat on", names_filter=name)
    _, doubled = model.run_with_cache("The cat sat on", names_filter=name, hooks=[pragma.custom(name, double, positions="from:1")])
    assert seen == [(name, 4, plain[name].shape)]
    assert np.allclose(doubled[name][0, 1:], 2 * plain[name][0, 1:], rtol=1e-5)
    assert np.array_equal(doubled[name][0, 0], plain[name][0, 0])

    def in_place(x, hook):
        x[...] = 0

    _, zeroed = model.run_with_cache("The cat", names_filter=name, hooks=[pragma.custom(name, in_place)])
    assert not zeroed[name].any()

    class Boom(Exception):
        pass

    def boom(x, hook):
        raise Boom("from the hook")

    with pytest.raises(Boom, match="from the hook"):
        model.run("The cat", hooks=[pragma.custom(name, boom)])
    with pytest.raises(pragma.PragmaError, match="shape"):
        model.run("The cat", hooks=[pragma.custom(name, lambda x, h: x[:, :1])])
    # Custom hooks also run while generating (one call per forward: prompt, then tokens).
    calls = []
    model.generate("Hi", max_tokens=3, hooks=[pragma.custom(name, lambda x, h: calls.append(h.offset))])
    assert calls[0] == 0 and calls[1:] == sorted(calls[1:]) and len(calls) >= 2


def test_hooks_context_manager_is_a_view(model):
    name = "blocks.2.hook_resid_post"
    with model.hooks([pragma.zero(name)]) as h:
        _, c = h.run_with_cache("The cat", names_filter=name)
        assert not c[name].any()
        _, c2 = model.run_with_cache("The cat", names_filter=name)  # the model is untouched
        assert c2[name].any()
    with pytest.raises(pragma.PragmaError, match="closed"):
        h.run("The cat")


def test_streaming_equals_generate(model):
    prompt = "Write a short poem about the sea."
    v = np.linspace(-1, 1, model.cfg["d_model"]).astype(np.float32) * 4
    steer = [pragma.add("blocks.10.hook_resid_post", v, positions="from:1")]
    for hooks in ([], steer):
        text = model.generate(prompt, chat=True, max_tokens=20, hooks=hooks)
        stream = model.generate(prompt, chat=True, max_tokens=20, hooks=hooks, stream=True)
        toks = list(stream)
        assert "".join(t.text for t in toks) == text
        assert [t.id for t in toks] == stream.tokens and len(toks) <= 20
    sampled = [t.id for t in model.generate(prompt, chat=True, max_tokens=12, temperature=0.8, seed=3, stream=True)]
    again = model.generate(prompt, chat=True, max_tokens=12, temperature=0.8, seed=3)
    assert model.to_string(sampled) == again


def test_memory_does_not_grow_over_1000_calls(model):
    """1000 run_with_cache calls on a short prompt: resident memory after them is within
    16 MiB of what it was after 100 (no per-call leak in the bindings)."""
    def rss_mib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

    for _ in range(100):
        model.run_with_cache("The cat sat on the mat", names_filter="blocks.*.hook_resid_post")
    before = rss_mib()
    for _ in range(900):
        logits, cache = model.run_with_cache("The cat sat on the mat", names_filter="blocks.*.hook_resid_post")
    after = rss_mib()
    print(f"RSS after 100 calls {before:.1f} MiB, after 1000 {after:.1f} MiB")
    assert after - before < 16, (before, after)
