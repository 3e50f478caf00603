"""The main job runs end to end (at a small size) and writes its table, figure and data."""

import numpy as np

import gflow_jax as gf
from gflow_jax import demo


def test_demo_small(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--n", "4", "--width", "3", "--t1", "20"]) == 0
    out = capsys.readouterr().out
    assert "| outcome | count |" in out and "Fraction converged" in out
    for name in ("summary.md", "risk_curves.png", "ensemble.nc"):
        assert (tmp_path / name).stat().st_size > 0
    ens = gf.Ensemble.load(tmp_path / "ensemble.nc")
    assert len(ens) == 4
    # the table's counts are the stored outcomes
    for o in gf.Outcome:
        n = int(np.sum(np.asarray(ens.outcome) == int(o)))
        if n:
            assert f"| {o.name} | {n} |" in out
