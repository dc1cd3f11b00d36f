# %% [markdown]
# # pragma from Python: a quickstart
#
# A plain script with notebook cells (`# %%`: VS Code, Jupytext and PyCharm open it as a
# notebook). It runs top to bottom in about a minute on two CPU cores, on the default
# model (SmolLM2-135M-Instruct, fetched by pragma on first use), and CI runs it
# (`python/tests/test_example.py`).
#
#     scripts/python/build_wheel.sh --install     # builds and installs the pragma-interp wheel
#     python3 examples/python/quickstart.py

# %%
import json
import tempfile
from pathlib import Path

import numpy as np

import pragma_interp as pragma

ROOT = Path(__file__).resolve().parents[2]
model = pragma.Model("smollm2-135m-instruct")
print(model, model.cfg)

# %% [markdown]
# ## Activations by TransformerLens hook name

# %%
prompt = "When Mary and John went to the store, John gave a drink to"
tokens = model.to_tokens(prompt)
logits, cache = model.run_with_cache(prompt, names_filter=["blocks.*.hook_resid_post", "blocks.5.attn.hook_pattern"])
print(len(tokens), "tokens; logits", logits.shape, "; resid_post 5", cache["resid_post", 5].shape)
print("pattern", cache["blocks.5.attn.hook_pattern"].shape, "(batch, head, query, key)")
top = np.argsort(logits[0, -1])[::-1][:5]
print("next token:", [model.to_string([int(t)]) for t in top])

# %% [markdown]
# ## Activation patching: which layer's residual carries the answer?
# Run the corrupted prompt (the second name swapped) with the clean run's residual patched
# in at the second name's position, one layer at a time, and read the logit difference
# " Mary" - " John".

# %%
corrupt = "When Mary and John went to the store, Mary gave a drink to"
mary, john = model.to_tokens(" Mary", prepend_bos=False)[0], model.to_tokens(" John", prepend_bos=False)[0]
pos = 10  # the second name
_, clean_cache = model.run_with_cache(prompt, names_filter="blocks.*.hook_resid_pre")


def logit_diff(l):
    return float(l[0, -1, mary] - l[0, -1, john])


clean_ld, corrupt_ld = logit_diff(logits), logit_diff(model.run(corrupt))
recovered = []
for layer in range(model.cfg["n_layers"]):
    name = f"blocks.{layer}.hook_resid_pre"
    patched = model.run(corrupt, hooks=[pragma.patch(name, clean_cache[name], positions=str(pos))])
    recovered.append((logit_diff(patched) - corrupt_ld) / (clean_ld - corrupt_ld))
print(f"logit diff clean {clean_ld:.2f}, corrupt {corrupt_ld:.2f}")
print("fraction recovered by layer:", " ".join(f"{r:.2f}" for r in recovered))

# %% [markdown]
# ## A steering vector from contrastive pairs

# %%
vec = pragma.SteeringVector.train(model, ROOT / "examples/steering/sentiment.jsonl", layers=[10, 12])
question = "Tell me about your day."
print("plain:   ", model.generate(question, chat=True, max_tokens=24))
print("steered+:", model.generate(question, chat=True, max_tokens=24, steer=[vec.hook(scale=2.0)]))
print("steered-:", model.generate(question, chat=True, max_tokens=24, steer=[vec.hook(scale=-2.0)]))

# %% [markdown]
# ## A probe, beside baselines, and a per-token monitor while generating

# %%
rows = [json.loads(l) for l in (ROOT / "examples/probes/sentiment.jsonl").read_text().splitlines()]
data = Path(tempfile.mkdtemp()) / "sentiment.jsonl"
data.write_text("".join(json.dumps(r) + "\n" for r in rows[:200]))
(data.parent / "sentiment.meta.json").write_text((ROOT / "examples/probes/sentiment.meta.json").read_text())
sweep = pragma.Probe.train(model, data, layers=[8, 12], bootstrap=200)
print(sweep.markdown)
probe = sweep.logistic
# The probe read the last token of short sentences; here it reads every generated token
# of steered answers. Does it see the steering? (A confound to keep in mind: the probe's
# layer is downstream of, or is, a steered layer, so part of what it sees is the added
# vector itself, not only the text's sentiment.)
for scale in (2.0, -2.0):
    print(f"--- steered {scale:+} ---")
    probs = []
    for tok in model.generate(question, chat=True, max_tokens=16, steer=[vec.hook(scale=scale)], monitor=probe, stream=True):
        probs.append(tok.probs[probe.name])
        print(f"{tok.text!r}:{probs[-1]:.2f}", end=" ")
    print(f"\nmean P(positive) {np.mean(probs):.2f}")

# %% [markdown]
# ## Your own hook: a Python function

# %%
def shrink(x, hook):
    return 0.5 * x


text = model.generate(question, chat=True, max_tokens=16, hooks=[pragma.custom("blocks.3.hook_mlp_out", shrink, positions="from:1")])
print("MLP 3 halved:", text)
