"""benchmarks/torch_peers.py at a tiny size: the JSON schema, and every peer's final risk
against the tight reference. Needs the ``bench`` extra (torch, torchdiffeq, torchode);
skipped without it (CI installs only the dev extra)."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchdiffeq")
pytest.importorskip("torchode")

from benchmarks import torch_peers  # noqa: E402

# rtol 1e-6 per step; the final risks (≈ 5e-4 and 3e-2 at t1 = 1) are small differences
# of O(1) residuals, and kink crossings cost the solvers order, so their relative error
# is measured at about 1e-3 (dopri5 and Tsit5 alike): 5e-3 leaves a margin of 5.
RISK_RTOL = 5e-3


def test_tiny_run_schema_and_agreement(tmp_path, capsys):
    torch_peers.main(["--n", "2", "--t1", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert printed.startswith("Machine:")
    result = json.loads((tmp_path / "torch_peers.json").read_text())
    assert (tmp_path / "torch_peers.md").read_text().startswith("Machine:")

    meta = result["meta"]
    assert meta["n"] == 2 and meta["t1"] == 1.0 and meta["width"] == 16
    assert meta["initial_risk_max_abs_diff"] <= 1e-12  # the same θ0 and L in torch and JAX
    ref = np.asarray(meta["reference_risks"])
    assert ref.shape == (2,) and np.all(ref > 0)

    starts = ("torchdiffeq dopri5, loop", "torchdiffeq dopri5, stacked", "torchode Dopri5",
              "gflow run_ensemble", "reference")  # fmt: skip
    peers = [r["peer"] for r in result["rows"]]
    assert len(peers) == len(starts)
    assert all(any(p.startswith(s) for p in peers) for s in starts), peers
    for r in result["rows"]:
        assert set(torch_peers.SCHEMA) <= set(r), r["peer"]
        assert r["wall_s"] > 0 and r["traj_per_s"] > 0 and r["compile_s"] >= 0
        assert r["vf_evals_per_traj"] > 0 and r["accepted_per_traj"] > 0
        assert r["rejected_per_traj"] >= 0
        risks = np.asarray(r["final_risks"])
        assert risks.shape == (2,)
        np.testing.assert_allclose(risks, ref, rtol=RISK_RTOL, err_msg=r["peer"])
        assert r["max_rel_risk_error"] <= RISK_RTOL
        assert f"| {r['peer']} |" in printed

    stacked = next(r for r in result["rows"] if "stacked" in r["peer"])
    assert stacked["shared_steps"] == stacked["accepted_per_traj"] + stacked["rejected_per_traj"]
    torchode_row = next(r for r in result["rows"] if r["peer"].startswith("torchode"))
    assert torchode_row["status"] == [0, 0]  # torchode: every sample succeeded
