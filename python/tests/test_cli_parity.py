"""Python and the CLI are one engine: on SmolLM2, `run_with_cache` equals `pragma trace`
exactly (bitwise, same forward), and steering and zero-ablation through Python generate
exactly the CLI's greedy text (`pragma generate --steer` / `--ablate`)."""

import numpy as np
from safetensors.numpy import load_file

import pragma_interp as pragma

PROMPT = "The quick brown fox jumps over the lazy dog because"
VECTOR = "fixtures/steering/sentiment.safetensors"


def test_run_with_cache_equals_cli_trace(model, cli, tmp_path):
    out = tmp_path / "trace.safetensors"
    hooks = "blocks.*.hook_resid_post,blocks.3.attn.hook_pattern,blocks.7.mlp.hook_post,hook_embed"
    cli("trace", "--prompt", PROMPT, "--hooks", hooks, "--logits", "-o", str(out))
    want = load_file(str(out))
    logits, cache = model.run_with_cache(PROMPT, names_filter=hooks.split(","))
    assert list(want["tokens"].reshape(-1)) == model.to_tokens(PROMPT)
    assert np.array_equal(logits, want["logits"])
    names = [k for k in want if k not in ("tokens", "logits")]
    assert len(names) == model.cfg["n_layers"] + 3
    for name in names:
        assert np.array_equal(cache[name], want[name].reshape(cache[name].shape)), name


def _cli_text(stdout: str) -> str:
    return stdout.rstrip("\n")


def test_steering_and_ablation_equal_the_cli(model, cli):
    prompt = "Tell me about your day."
    v = pragma.SteeringVector.load(VECTOR)
    for scale in ("2", "-2"):
        want = cli("generate", "--prompt", prompt, "--chat", "--steer", VECTOR, "--scale", scale, "--max-tokens", "16")
        got = model.generate(prompt, chat=True, max_tokens=16, steer=[v.hook(scale=float(scale))])
        assert got.rstrip("\n") == _cli_text(want), (scale, got, want)
    plain = model.generate(prompt, chat=True, max_tokens=16)
    assert got != plain  # the vector does something
    want = cli("generate", "--prompt", prompt, "--chat", "--ablate", "blocks.3.hook_mlp_out", "--max-tokens", "16")
    got = model.generate(prompt, chat=True, max_tokens=16, hooks=[pragma.zero("blocks.3.hook_mlp_out", positions="from:1")])
    assert got.rstrip("\n") == _cli_text(want) and got != plain
