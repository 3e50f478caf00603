"""The peers benchmark at a tiny size: it runs, writes its JSON, and every peer's answer
agrees with gflow_jax's (timings are not checked)."""

import json
import pathlib
import subprocess
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCHEMA = ("peer", "wall_s", "compile_s", "traj_per_s", "vf_evals_per_traj",
          "accepted_per_traj", "rejected_per_traj", "max_rel_risk_error")  # fmt: skip


def test_peers_tiny_run_schema_and_agreement(tmp_path):
    argv = ["--n", "2", "--width", "3", "--t1", "2", "--gflow", "explicit",
            "--out", str(tmp_path)]  # fmt: skip
    subprocess.run([sys.executable, "-m", "benchmarks.peers", *argv], cwd=ROOT, check=True)
    result = json.loads((tmp_path / "peers.json").read_text())
    assert (tmp_path / "peers.md").read_text().startswith("Machine:")
    rows = {r["peer"]: r for r in result["rows"]}
    assert set(rows) == {
        "diffrax loop", "diffrax vmap", "scipy RK45", "scipy LSODA", "scipy BDF",
        "optax GD", "gflow run_ensemble (tail explicit)",
    }  # fmt: skip
    for r in rows.values():
        assert set(SCHEMA) <= set(r)
        assert r["wall_s"] > 0 and r["traj_per_s"] > 0 and r["vf_evals_per_traj"] > 0
        assert len(r["final_risks"]) == 2
    ref = np.asarray(result["meta"]["reference_risks"])
    gflow = np.asarray(rows["gflow run_ensemble (tail explicit)"]["final_risks"])
    np.testing.assert_allclose(gflow, ref, rtol=1e-5)
    for name in ("diffrax loop", "diffrax vmap", "scipy RK45", "scipy LSODA", "scipy BDF"):
        np.testing.assert_allclose(rows[name]["final_risks"], gflow, rtol=1e-4, err_msg=name)
    # GD reaches the reference's final risk (at most 0.1 % above it)
    assert np.all(np.asarray(rows["optax GD"]["final_risks"]) <= ref * (1 + 1e-3))
