"""The main job runs end to end (at a small size) and writes its table, figure and data."""

import numpy as np

import gflow_jax as gf
from gflow_jax import demo


def test_demo_small(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path), "--n", "4", "--width", "3", "--t1", "20"]) == 0
    out = capsys.readouterr().out
    assert "| outcome | count |" in out and "| limit | count |" in out
    assert "Fraction whose risk → 0" in out
    for name in ("summary.md", "risk_curves.png", "ensemble.nc"):
        assert (tmp_path / name).stat().st_size > 0
    ens = gf.Ensemble.load(tmp_path / "ensemble.nc")
    assert len(ens) == 4
    # the tables' counts are the stored outcomes and limit classes, and the headline is
    # the stored fraction whose limit is ZERO_RISK
    for code, field in [
        *((o, ens.outcome) for o in gf.Outcome),
        *((c, ens.limit) for c in gf.Limit),
    ]:
        n = int(np.sum(np.asarray(field) == int(code)))
        if n:
            assert f"| {code.name} | {n} |" in out
    assert str(ens.fraction()) in out
