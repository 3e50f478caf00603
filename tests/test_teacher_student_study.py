"""The teacher–student study (Safran–Shamir setting, exact Gaussian-input risk), tiny,
run through the `gflow` command (`gflow run teacher_student --scale tiny`).

Compilation dominates (about 40 s of CPU per cell: the flow, its stiff tail and the limit
analysis each compile the Gaussian risk's Hessian), so the test runs the tiny preset's
first cell only (k = n = 2, 4 initialisations: ``--set 'students=["k"]'``)."""

import math

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from gflow_jax.cli import app
from gflow_jax.experiments import STUDIES, load, teacher_student
from gflow_jax.experiments.teacher_student import TeacherStudentConfig, student_width
from gflow_jax.limits import Limit, LimitReason


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher_student")
    result = CliRunner().invoke(
        app,
        ["run", "teacher_student", "--scale", "tiny", "--set", 'students=["k"]', "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out / "teacher_student.nc", engine="h5netcdf") as ds:
        return out, ds.load()


def test_registered_and_config_checks():
    assert STUDIES["teacher_student"] == "gflow_jax.experiments.teacher_student"
    assert load("teacher_student") is teacher_student
    assert set(teacher_student.PRESETS) == {"tiny", "laptop", "paper"}
    assert [student_width(r, 4) for r in ("k", "k+1", "2k", "3k+2")] == [4, 5, 8, 14]
    bad_values = [
        {"students": ("n",)},
        {"students": ("0k",)},
        {"teacher_widths": ()},
        {"inits": 0},
        {"t1": 0.0},
        {"init_scale": math.nan},
        {"zero_risk": 0.0},
    ]
    for bad in bad_values:
        with pytest.raises(ValueError):
            TeacherStudentConfig(**bad)


def test_tiny_dataset_numbers(study):
    _, ds = study
    tiny = teacher_student.PRESETS["tiny"]
    assert ds["k"].values.tolist() == [2]
    assert tiny.teacher_widths == (2,) and tiny.students == ("k", "k+1")
    assert ds["student"].values.tolist() == ["k"]
    assert ds["n"].values.tolist() == [[2]]
    np.testing.assert_allclose(ds["ratio"].values, [[1.0]])
    assert dict(ds.sizes)["member"] == tiny.inits
    limit = ds["limit"].values
    valid = {int(c) for c in Limit}
    assert set(np.unique(limit).tolist()) <= valid
    # fractions = counts of ZERO_RISK limits / members, per cell; the counts add up
    np.testing.assert_allclose(
        ds["zero"].values, np.sum(limit == int(Limit.ZERO_RISK), -1) / tiny.inits
    )
    for name, code in (("n_zero", Limit.ZERO_RISK), ("n_local_min", Limit.LOCAL_MIN),
                       ("n_saddle", Limit.SADDLE), ("n_unresolved", Limit.UNRESOLVED)):  # fmt: skip
        np.testing.assert_array_equal(ds[name].values, np.sum(limit == int(code), -1))
    total = sum(ds[n].values for n in ("n_zero", "n_local_min", "n_saddle", "n_unresolved"))
    assert np.all(total == tiny.inits)
    assert np.all(ds["zero_low_all"].values <= ds["zero"].values + 1e-12)
    assert np.all(ds["zero"].values <= ds["zero_high_all"].values + 1e-12)
    # every member not at zero risk has a class and a finite, non-negative limit risk
    rest = teacher_student.others(ds)
    assert len(rest) == int(np.sum(limit != int(Limit.ZERO_RISK)))
    for r in rest:
        assert r["limit"] in ("LOCAL_MIN", "SADDLE", "UNRESOLVED")
        assert math.isfinite(r["limit_risk"]) and r["limit_risk"] >= 0
        assert (r["reason"] == "NONE") == (r["limit"] != "UNRESOLVED")
        assert r["reason"] in LimitReason.__members__
    # the flows started away from zero risk and ended no higher
    assert np.all(ds["initial_risk"].values > 0)
    assert np.all(ds["final_risk"].values <= ds["initial_risk"].values * (1 + 1e-12))


def test_tiny_report_comes_from_the_dataset(study):
    out, ds = study
    for name in ("teacher_student.png", "teacher_student.pdf"):
        assert (out / name).stat().st_size > 500
    md = (out / "teacher_student.md").read_text()
    assert md.strip() == teacher_student.table(ds).strip()
    for s in ds["student"].values:
        c = ds.sel(k=2, student=s)
        row = (
            f"| 2 | {s} | {int(c['n'])} | {float(c['ratio']):.3g} | {c.sizes['member']} | "
            f"{float(c['zero']):.2f} [{float(c['zero_low']):.2f}, {float(c['zero_high']):.2f}] | "
            f"[{float(c['zero_low_all']):.2f}, {float(c['zero_high_all']):.2f}] | "
            f"{int(c['n_zero'])} | {int(c['n_local_min'])} | {int(c['n_saddle'])} | "
            f"{int(c['n_unresolved'])} |"
        )
        assert row in md, row
    rest = teacher_student.others(ds)
    assert ("(none: every limit has zero risk)" in md) == (not rest)
    for r in rest:
        row = (f"| {r['k']} | {r['n']} | {r['member']} | {r['limit']} | {r['reason']} | "
               f"{r['limit_risk']:.6g} |")  # fmt: skip
        assert row in md, row
