"""Sweeps: every cell stored at once, resumed after a kill, combined by setting."""

import json

import numpy as np
import pytest
import xarray as xr

from gflow_jax.sweep import cell_filename, run_sweep


def _cell_factory(calls):
    def cell(width, gamma):
        calls.append((width, gamma))
        return xr.Dataset(
            {"score": ("member", np.arange(3) * width + gamma)},
            coords={"member": np.arange(3)},
        )

    return cell


def test_combined_dims_and_values():
    calls = []
    ds = run_sweep({"width": [1, 2], "gamma": [0.5, 0.25, 0.75]}, _cell_factory(calls))
    assert dict(ds.sizes) == {"width": 2, "gamma": 3, "member": 3}
    np.testing.assert_array_equal(ds["score"].sel(width=2, gamma=0.25), [0.25, 2.25, 4.25])
    assert len(calls) == 6


def test_resume_after_interruption(tmp_path):
    calls = []
    cell = _cell_factory(calls)

    def dying(width, gamma):
        if width == 2 and gamma == 0.5:
            raise KeyboardInterrupt  # killed in the middle of the sweep
        return cell(width, gamma)

    grid = {"width": [1, 2], "gamma": [0.25, 0.5]}
    with pytest.raises(KeyboardInterrupt):
        run_sweep(grid, dying, tmp_path)
    done = sorted(p.name for p in tmp_path.glob("cell_*.nc"))
    assert len(done) == 3 and not list(tmp_path.glob("*.tmp"))
    calls.clear()
    ds = run_sweep(grid, cell, tmp_path)
    assert calls == [(2, 0.5)]  # only the missing cell is computed again
    np.testing.assert_array_equal(ds["score"].sel(width=2, gamma=0.5), [0.5, 2.5, 4.5])
    assert json.loads((tmp_path / "sweep.json").read_text()) == grid


def test_bad_input(tmp_path):
    cell = _cell_factory([])
    with pytest.raises(ValueError, match="non-empty"):
        run_sweep({}, cell)
    with pytest.raises(ValueError, match="duplicates"):
        run_sweep({"width": [1, 1]}, lambda width: None)
    run_sweep({"width": [1], "gamma": [0.5]}, cell, tmp_path)
    with pytest.raises(ValueError, match="another grid"):
        run_sweep({"width": [1, 2], "gamma": [0.5]}, cell, tmp_path)
    with pytest.raises(TypeError, match="Dataset"):
        run_sweep({"width": [3]}, lambda width: 1.0)


def test_filenames_are_stable_and_distinct():
    a = cell_filename({"width": 1, "gamma": 0.5})
    assert a == cell_filename({"width": 1, "gamma": 0.5})
    assert a != cell_filename({"width": 1, "gamma": 0.25})
    assert a.endswith(".nc") and "/" not in a
