"""Shared by the benchmark references (stdlib only: imported by two different Pythons).

The token batch and timing rules mirror `pragma bench` (crates/pragma-cli/src/bench.rs).
"""

import os
import time
from pathlib import Path

# Same text as bench_tokens() in bench.rs; tokenized without special tokens or BOS.
TEXT = (
    "The history of science is the study of the development of science and scientific "
    "knowledge, including both the natural and social sciences. Science is a body of "
    "empirical, theoretical, and practical knowledge about the natural world, produced by "
    "scientists who emphasize the observation, explanation, and prediction of real-world phenomena."
)
PROMPT_LEN = 16  # decode starts from the first 16 tokens of row 0
DEFAULT_MODEL = Path.home() / ".cache" / "pragma" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def batch_rows(ids, batch, seq):
    """Row b is ids cycled, skipping b*7 tokens, taking seq (as bench.rs)."""
    return [[ids[(b * 7 + i) % len(ids)] for i in range(seq)] for b in range(batch)]


def best_of(reps, f):
    """One untimed warm-up, then the fastest of `reps` timed calls, in seconds.

    If f returns a number, that is the time (f timed only part of its work)."""
    f()
    best = float("inf")
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        r = f()
        best = min(best, r if r is not None else time.perf_counter() - t)
    return best


def peak_rss_mib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return None


def default_threads():
    """Like Rust's available_parallelism(), which pragma uses: the CPUs we may run on."""
    return len(os.sched_getaffinity(0))


def add_common_args(ap):
    ap.add_argument("model", nargs="?", default=str(DEFAULT_MODEL), help="GGUF file")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=default_threads())
