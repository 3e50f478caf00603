"""Every notebook (jupytext percent scripts in notebooks/) runs end to end at small size."""

import os
import pathlib
import subprocess
import sys

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_small(path, tmp_path):
    env = dict(os.environ, GFLOW_SMALL="1", GFLOW_OUT=str(tmp_path), MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = [p for p in tmp_path.rglob("*") if p.suffix in (".png", ".md")]
    assert outputs, "a notebook must write its figure and table"
