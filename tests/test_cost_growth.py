"""The cost-growth benchmark at a tiny size: its JSON schema, its exponent fit and its
roofline numbers (never its timings)."""

import json
import math

import numpy as np
import pytest

from benchmarks import cost_growth


def test_exponent_fit_recovers_a_power_law():
    x = np.array([4.0, 16.0, 64.0, 256.0])
    assert cost_growth._exponent(x, 3.0 * x**1.7) == pytest.approx(1.7, abs=1e-12)
    assert cost_growth._exponent(x, 5.0 + 0 * x) == pytest.approx(0.0, abs=1e-12)


def test_tiny_run_schema_and_roofline(tmp_path):
    # two pool sizes in the B sweep; the other sweeps are the base point alone (no new
    # compilation), so their exponents are undefined
    args = ["--out", str(tmp_path), "--t1", "0.05", "--steps", "32", "--batches", "2,4",
            "--widths", "3", "--points", "4", "--depths", "1", "--base", "2,3,4,1"]  # fmt: skip
    result = cost_growth.main(args)
    stored = json.loads((tmp_path / "cost_growth.json").read_text())
    assert set(stored["sweeps"]) == {"B", "width", "N", "depth"}
    assert (tmp_path / "cost_growth.png").stat().st_size > 1000
    md = (tmp_path / "cost_growth.md").read_text()
    for name, sweep in result["sweeps"].items():
        for row in sweep["rows"]:
            assert row["member_steps"] > 0 and row["wall_s"] > 0
            assert row["field_evals"] == cost_growth.EVALS_PER_STEP * row["member_steps"]
            assert row["us_per_member_step"] == pytest.approx(
                1e6 * row["wall_s"] / row["member_steps"]
            )
        assert f"| {name} | " in md
    # the base point is the same computation in every sweep: same steps
    base_steps = {s["rows"][0]["member_steps"] for s in result["sweeps"].values()}
    assert len(base_steps) == 1
    b = result["sweeps"]["B"]
    steps = [r["member_steps"] for r in b["rows"]]
    assert b["steps_exponent"] == pytest.approx(math.log(steps[1] / steps[0]) / math.log(2))
    assert math.isnan(result["sweeps"]["width"]["wall_exponent"])
    # one member's state holds at least θ (3·width + 1 numbers for width 3) in float64
    assert b["rows"][0]["state_bytes_per_member"] >= 8 * (3 * 3 + 1)
    # XLA's FLOPs of one field evaluation: at least the forward and backward products of
    # the N × width hidden layer; the achieved fraction of the matmul peak is in (0, 1)
    (row,) = result["sweeps"]["width"]["rows"]
    assert row["field_flops_per_eval"] >= 4 * 4 * 3
    assert 0 < row["roofline_fraction"] < 1
    assert row["achieved_flops"] == pytest.approx(
        row["roofline_fraction"] * result["matmul_peak_flops"]
    )
