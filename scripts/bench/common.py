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


# Debian's OpenBLAS builds, preferred first (the OpenMP one shares torch's thread pool).
# Debian's torch 1.13 does its matmuls in whatever libblas.so.3 the system resolves, by
# default netlib's reference BLAS (~10-20x slower here). hf_ref.py has its own copy of this.
OPENBLAS_DIRS = [
    "/usr/lib/x86_64-linux-gnu/openblas-openmp",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread",
]


def use_openblas(threads, argv=None):
    """Re-exec this script with an OpenBLAS libblas.so.3 first on LD_LIBRARY_PATH.

    Looks in $OPENBLAS_DIR (a folder holding libblas.so.3, e.g. from
    `apt-get download libopenblas0-openmp && dpkg-deb -x libopenblas0-openmp_*.deb DIR`,
    then DIR/usr/lib/x86_64-linux-gnu/openblas-openmp), then in Debian's install folders
    (`apt-get install libopenblas0-openmp`). This process only: the system default is left
    alone. Returns without re-executing when none is found or after the re-exec."""
    import sys

    dirs = [os.environ.get("OPENBLAS_DIR", "")] + OPENBLAS_DIRS
    found = [d for d in dirs if d and os.path.isfile(f"{d}/libblas.so.3")]
    if os.environ.get("PRAGMA_BENCH_REEXEC") or not found:
        return
    env = dict(os.environ, PRAGMA_BENCH_REEXEC="1")
    env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [found[0], env.get("LD_LIBRARY_PATH")]))
    os.execve(sys.executable, [sys.executable] + (argv or sys.argv), env)


def loaded_blas():
    """The BLAS libraries mapped into this process, as parent-dir/file."""
    with open("/proc/self/maps") as fh:
        libs = {line.split()[-1] for line in fh if "blas" in line.rsplit("/", 1)[-1]}
    return ", ".join(sorted("/".join(p.split("/")[-2:]) for p in libs)) or None
