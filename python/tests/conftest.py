"""Shared fixtures: the default model (SmolLM2-135M-Instruct, fetched by pragma) and the
pragma CLI binary the equality tests compare against (PRAGMA_BIN, else the newest of
target/release/pragma and target/debug/pragma; `cargo test` or `cargo build` makes one)."""

import os
import subprocess
from pathlib import Path

import pytest

import pragma_interp as pragma

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model():
    return pragma.Model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def cli():
    """A function running the pragma CLI, returning its stdout (fails on a non-zero exit)."""
    found = [Path(os.environ["PRAGMA_BIN"])] if os.environ.get("PRAGMA_BIN") else [
        p for p in (ROOT / "target/release/pragma", ROOT / "target/debug/pragma") if p.exists()
    ]
    assert found, "no pragma binary: run `cargo build` (or set PRAGMA_BIN)"
    binary = max(found, key=lambda p: p.stat().st_mtime)

    def run(*args: str) -> str:
        r = subprocess.run([str(binary), *args], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, f"pragma {' '.join(args)} failed:\n{r.stderr[-2000:]}"
        return r.stdout

    return run
