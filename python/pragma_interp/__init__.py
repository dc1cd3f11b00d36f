"""pragma from Python: hooked open-weight language models with TransformerLens hook names.

    import pragma_interp as pragma
    m = pragma.Model("smollm2-135m-instruct")      # a .gguf, an HF folder or a built-in name
    logits, cache = m.run_with_cache("The cat sat on the mat")
    cache["blocks.5.hook_resid_post"]              # numpy float32 [1, pos, d_model]
    cache["resid_post", 5]                         # the same
    steer = pragma.add("blocks.10.hook_resid_post", vector, scale=4.0)   # vector: numpy [d_model]
    m.generate("Tell me about your day.", chat=True, hooks=[steer])   # hooks per call, no global state

Everything runs in pragma's Rust libraries; this package only converts to and from numpy.
"""

from ._native import ActivationCache, Hook, Model, PragmaError, ablate, add, replace, zero

__all__ = ["Model", "ActivationCache", "PragmaError", "Hook", "add", "ablate", "zero", "replace"]
