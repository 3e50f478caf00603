"""The peers benchmark at a tiny size: it runs, writes its JSON, and every peer's answer
agrees with gflow_jax's (timings are not checked)."""

import json
import pathlib
import subprocess
import sys
import time

import numpy as np

from benchmarks.peers import SCHEMA, PeakMemory

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_peak_memory_sees_a_temporary_allocation():
    """The peers' memory column: 64 MiB touched and freed inside the block are counted
    (the sampling thread sees the peak), memory held before the block is not."""
    held = np.ones(2**23)  # 64 MiB, before the block
    with PeakMemory() as mem:
        tmp = np.ones(2**23)
        tmp += 1.0
        time.sleep(0.05)
        del tmp
    assert 48 <= mem.mib <= 160
    with PeakMemory() as idle:
        time.sleep(0.02)
    assert idle.mib < 16
    del held


def test_peers_tiny_run_schema_and_agreement(tmp_path):
    argv = ["--n", "2", "--width", "3", "--t1", "2", "--gflow", "explicit",
            "--pools", "1", "2", "--cost-steps", "8", "--cost-points", "8", "--repeats", "1",
            "--cost-members", "2", "--waste-t1", "0.5", "--waste-n", "4",
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
        assert r["peak_memory_mib"] >= 0
        assert len(r["final_risks"]) == 2
    ref = np.asarray(result["meta"]["reference_risks"])
    gflow = np.asarray(rows["gflow run_ensemble (tail explicit)"]["final_risks"])
    np.testing.assert_allclose(gflow, ref, rtol=1e-5)
    for name in ("diffrax loop", "diffrax vmap", "scipy RK45", "scipy LSODA", "scipy BDF"):
        np.testing.assert_allclose(rows[name]["final_risks"], gflow, rtol=1e-4, err_msg=name)
    # GD reaches the reference's final risk (at most 0.1 % above it)
    assert np.all(np.asarray(rows["optax GD"]["final_risks"]) <= ref * (1 + 1e-3))

    # the engine-cost table (issue 14, item 1): its schema, every member ran its budget,
    # and a verdict row per target
    cost = result["engine_cost"]
    assert [p["pool"] for p in cost["pools"]] == [1, 2]
    for p in cost["pools"]:
        for name in ("vmap_us_per_member_step", "engine_us_per_useful_member_step", "ratio",
                     "engine_us_2_saves", "ratio_2_saves"):  # fmt: skip
            assert np.isfinite(p[name]) and p[name] > 0, name
        assert p["waste"] == 1.0  # every member ends at the step budget: no idle slot
    assert cost["integrate_us_per_step"] > 0 and cost["pool1_vs_integrate"] > 0
    assert cost["waste"]["engine_waste"] >= 1.0 and cost["waste"]["vmap_waste"] >= 1.0
    md = (tmp_path / "peers.md").read_text()
    assert md.count("reached") == 3 and "| target | measured | verdict |" in md
