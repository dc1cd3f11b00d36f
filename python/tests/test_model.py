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


@pytest.fixture(scope="module")
def model():
    return pragma.Model("smollm2-135m-instruct")


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
