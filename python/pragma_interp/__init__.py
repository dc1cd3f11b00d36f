"""pragma from Python: hooked open-weight language models with TransformerLens hook names,
numpy in and out, and pragma's methods (stores, steering vectors, probes, SAEs).

    import pragma_interp as pragma
    m = pragma.Model("smollm2-135m-instruct")      # a .gguf, an HF folder or a built-in name
    logits, cache = m.run_with_cache("The cat sat on the mat")
    cache["blocks.5.hook_resid_post"]              # numpy float32 [1, pos, d_model]
    cache["resid_post", 5]                         # the same
    steer = pragma.add("blocks.10.hook_resid_post", vector, scale=4.0)   # vector: numpy [d_model]
    m.generate("Tell me about your day.", chat=True, hooks=[steer])   # hooks per call, no global state
    with m.hooks([steer]) as h:                    # or a hooked view for a block of calls
        h.generate("Tell me about your day.", chat=True)
    for tok in m.generate("Hi", chat=True, stream=True, monitor=pragma.Probe.load("probe.safetensors")):
        print(tok.text, tok.probs)

Everything runs in pragma's Rust libraries; this package converts to and from numpy.
"""

from typing import Iterable, List, Optional

from . import _native
from ._native import (
    SAE,
    ActivationCache,
    Generation,
    Hook,
    HookContext,
    PragmaError,
    Probe,
    ProbeSweep,
    SteeringVector,
    Store,
    StoreBatches,
    Token,
    ablate,
    add,
    custom,
    patch,
    replace,
    zero,
)


class Model(_native.Model):
    """A hooked model: a .gguf file, a Hugging Face folder or a built-in name.

    Methods take interventions per call (``hooks=[...]``); ``hooks(...)`` gives a view
    that adds them to every call made through it, for a ``with`` block.
    """

    def hooks(self, hooks: Iterable[Hook]) -> "HookedModel":
        """A view of this model that runs every call with ``hooks`` first.

        The model itself is unchanged (no global state); the view refuses calls after its
        ``with`` block ends.
        """
        return HookedModel(self, list(hooks))


class HookedModel:
    """``Model.hooks(...)``: the model's calls with fixed interventions added."""

    def __init__(self, model: Model, hooks: List[Hook]):
        self.model = model
        self._hooks: Optional[List[Hook]] = hooks

    def __enter__(self) -> "HookedModel":
        return self

    def __exit__(self, *exc) -> None:
        self._hooks = None

    def _with(self, hooks: Optional[List[Hook]]) -> List[Hook]:
        if self._hooks is None:
            raise PragmaError("this hooked view was closed when its with-block ended")
        return self._hooks + list(hooks or [])

    def run(self, input, hooks=None, **kw):
        return self.model.run(input, hooks=self._with(hooks), **kw)

    __call__ = run

    def run_with_cache(self, input, names_filter=None, hooks=None, **kw):
        return self.model.run_with_cache(input, names_filter=names_filter, hooks=self._with(hooks), **kw)

    def generate(self, prompt, hooks=None, **kw):
        return self.model.generate(prompt, hooks=self._with(hooks), **kw)


__all__ = [
    "Model",
    "HookedModel",
    "ActivationCache",
    "Generation",
    "Token",
    "PragmaError",
    "Hook",
    "HookContext",
    "add",
    "ablate",
    "zero",
    "replace",
    "patch",
    "custom",
    "Store",
    "StoreBatches",
    "SteeringVector",
    "Probe",
    "ProbeSweep",
    "SAE",
]
