"""The example notebook (examples/python/quickstart.py, a script with `# %%` cells) runs
top to bottom, and its results are what it claims: the clean prompt prefers " Mary", the
patching sweep recovers the clean answer early and loses it late, the steered answers
differ, and the probe beats chance."""

import runpy
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/python/quickstart.py"


def test_quickstart_runs(capsys):
    ns = runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "next token: [' Mary'" in out
    r = ns["recovered"]
    assert r[0] > 0.9 and r[-1] < 0.2
    assert ns["sweep"].report["layers"][0]["logistic"]["test_auroc"] > 0.8
    assert "steered+:" in out and "steered-:" in out
