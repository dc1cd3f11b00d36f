"""torch 1.13 shims for training with SAELens 6.x / eai-sparsify 1.x (they target torch 2).

The two that training needs, copied from `install_shims` in
scripts/fixtures/make_sae_fixtures.py (that script also emulates
`load_state_dict(..., assign=True)`, which only loading SAEs from disk needs). That script
is not imported here because it re-executes itself with PYTHONHASHSEED=0 on import.

Call `install()` before importing `sae_lens` or `sparsify`.
"""

import os
import warnings

SHIMS = [
    "torch.optim.lr_scheduler.LRScheduler = _LRScheduler (torch 2.0 name; SAELens' "
    "training/optim.py uses it in an annotation at import time)",
    "torch.cuda.is_bf16_supported = lambda: True (sparsify decorates SparseCoder.forward "
    "with torch.autocast('cuda', bfloat16, enabled=torch.cuda.is_bf16_supported()) at "
    "import time; torch 1.13 raises there without CUDA, while with True the autocast only "
    "warns and disables itself because CUDA is absent, so training runs in float32 on the CPU)",
]

_DONE = False


def install():
    global _DONE
    if _DONE:
        return SHIMS
    # Triton is absent on these machines; sparsify then uses its eager embedding_bag decoder.
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    import torch
    import torch.optim.lr_scheduler as lrs

    if not hasattr(lrs, "LRScheduler"):
        lrs.LRScheduler = lrs._LRScheduler
    if not torch.cuda.is_available():
        torch.cuda.is_bf16_supported = lambda *a, **k: True
    warnings.filterwarnings("ignore", message="User provided device_type of 'cuda'")
    _DONE = True
    return SHIMS
