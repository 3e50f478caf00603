"""Sweeps: every piece stored at once, resumed after a kill, refused on a changed
configuration, damaged files recomputed, cells chunked by members."""

import json
import shutil

import numpy as np
import pytest
import xarray as xr

from gflow_jax.sweep import cell_filename, run_sweep, sweep_info


def _cell_factory(calls):
    def cell(width, gamma):
        calls.append((width, gamma))
        return xr.Dataset(
            {"score": ("member", np.arange(3) * width + gamma)},
            coords={"member": np.arange(3)},
        )

    return cell


def _member_cell(calls):
    def cell(width, members):
        calls.append((width, members.start, members.stop))
        m = np.arange(members.start, members.stop)
        return xr.Dataset(
            {
                "score": ("member", 10.0 * width + m),
                "curve": (("member", "time"), m[:, None] + [0, 1]),
            },
            coords={"time": [0.0, 1.0]},
        )

    return cell


def test_combined_dims_and_values():
    calls = []
    ds = run_sweep({"width": [1, 2], "gamma": [0.5, 0.25, 0.75]}, _cell_factory(calls))
    assert dict(ds.sizes) == {"width": 2, "gamma": 3, "member": 3}
    assert ds["gamma"].values.tolist() == [0.5, 0.25, 0.75]  # the grid's order
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
        run_sweep(grid, dying, tmp_path, config={"t1": 10.0})
    done = sorted(p.name for p in tmp_path.glob("cell_*.nc"))
    assert len(done) == 3 and not list(tmp_path.glob("*.tmp"))
    info = sweep_info(tmp_path)
    assert (info.cells_done, info.cells_total, info.left) == (
        3,
        4,
        [({"width": 2, "gamma": 0.5}, None)],
    )
    calls.clear()
    ds = run_sweep(grid, cell, tmp_path, config={"t1": 10.0})
    assert calls == [(2, 0.5)]  # only the missing cell is computed again
    np.testing.assert_array_equal(ds["score"].sel(width=2, gamma=0.5), [0.5, 2.5, 4.5])
    manifest = json.loads((tmp_path / "sweep.json").read_text())
    assert manifest["grid"] == grid and manifest["config"] == {"t1": 10.0}
    assert {"python", "jax", "gflow_jax", "xarray"} <= set(manifest["versions"])


def test_changed_configuration_refused_naming_keys(tmp_path):
    cell = _cell_factory([])
    run_sweep({"width": [1], "gamma": [0.5]}, cell, tmp_path, config={"t1": 10.0, "n": 4})
    with pytest.raises(ValueError, match=r"config\.t1: stored 10\.0, now 20\.0") as err:
        run_sweep({"width": [1], "gamma": [0.5]}, cell, tmp_path, config={"t1": 20.0, "n": 4})
    assert "config.n" not in str(err.value)
    with pytest.raises(ValueError, match=r"grid\.width: stored \[1\], now \[1, 2\]"):
        run_sweep({"width": [1, 2], "gamma": [0.5]}, cell, tmp_path, config={"t1": 10.0, "n": 4})
    # an explicit overwrite discards the old results
    calls = []
    run_sweep({"width": [1], "gamma": [0.5]}, _cell_factory(calls), tmp_path,
              config={"t1": 20.0, "n": 4}, overwrite=True)  # fmt: skip
    assert calls == [(1, 0.5)]
    assert json.loads((tmp_path / "sweep.json").read_text())["config"]["t1"] == 20.0


@pytest.mark.parametrize("damage", ["truncate", "empty", "swap", "garbage_manifest"])
def test_damaged_store_is_recomputed(tmp_path, damage):
    grid = {"width": [1, 2], "gamma": [0.5]}
    first = run_sweep(grid, _cell_factory([]), tmp_path)
    a = tmp_path / cell_filename({"width": 1, "gamma": 0.5})
    b = tmp_path / cell_filename({"width": 2, "gamma": 0.5})
    (tmp_path / "tmpabc.nc.tmp").write_bytes(b"half a file")  # left by a killed write
    if damage == "truncate":
        a.write_bytes(a.read_bytes()[: a.stat().st_size // 2])
    elif damage == "empty":
        a.write_bytes(b"")
    elif damage == "swap":
        shutil.copy(b, a)  # another cell's (valid) file under this cell's name
    else:
        (tmp_path / "sweep.json").write_text('{"grid": {"wid')  # bricked manifest
    calls = []
    with pytest.warns(UserWarning, match="recomputed|rewritten"):
        again = run_sweep(grid, _cell_factory(calls), tmp_path)
    assert calls == ([] if damage == "garbage_manifest" else [(1, 0.5)])
    xr.testing.assert_identical(again, first)
    assert not list(tmp_path.glob("*.tmp"))


def test_member_chunks_resume_and_equal_one_piece(tmp_path):
    calls = []
    whole = run_sweep({"width": [1, 2]}, _member_cell(calls), members=5)
    assert calls == [(1, 0, 5), (2, 0, 5)]
    calls.clear()

    def dying(width, members):
        if (width, members.start) == (2, 2):
            raise KeyboardInterrupt
        return _member_cell(calls)(width, members)

    with pytest.raises(KeyboardInterrupt):
        run_sweep({"width": [1, 2]}, dying, tmp_path, members=5, chunk_size=2)
    assert calls == [(1, 0, 2), (1, 2, 4), (1, 4, 5), (2, 0, 2)]
    calls.clear()
    ds = run_sweep({"width": [1, 2]}, _member_cell(calls), tmp_path, members=5, chunk_size=2)
    assert calls == [(2, 2, 4), (2, 4, 5)]  # only the chunks not stored
    xr.testing.assert_identical(ds, whole)
    with pytest.raises(ValueError, match="chunk_size: stored 2, now 3"):
        run_sweep({"width": [1, 2]}, _member_cell([]), tmp_path, members=5, chunk_size=3)


def test_bad_input(tmp_path):
    cell = _cell_factory([])
    with pytest.raises(ValueError, match="non-empty"):
        run_sweep({}, cell)
    with pytest.raises(ValueError, match="duplicates"):
        run_sweep({"width": [1, 1]}, lambda width: None)
    with pytest.raises(TypeError, match="callable"):
        run_sweep({"width": [1]}, "not a function")
    with pytest.raises(TypeError, match="Dataset"):
        run_sweep({"width": [3]}, lambda width: 1.0)
    with pytest.raises(ValueError, match=r"grid name\(s\) \['width'\]"):
        run_sweep({"width": [3]}, lambda width: xr.Dataset(coords={"width": [1, 2]}))
    with pytest.raises(ValueError, match="length 2"):
        run_sweep({"width": [3]}, lambda width, members: xr.Dataset(), members=2)
    afile = tmp_path / "a_file"
    afile.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        run_sweep({"width": [1], "gamma": [0.5]}, cell, afile)
    with pytest.raises(TypeError, match="JSON"):
        run_sweep({"width": [1], "gamma": [0.5]}, cell, tmp_path, config={"f": object()})


def test_filenames_are_stable_and_distinct():
    a = cell_filename({"width": 1, "gamma": 0.5})
    assert a == cell_filename({"width": 1, "gamma": 0.5})
    assert a != cell_filename({"width": 1, "gamma": 0.25})
    assert a != cell_filename({"width": 1, "gamma": 0.5}, (0, 4))
    assert a.endswith(".nc") and "/" not in a


def test_dask_executor_equals_local_and_survives_a_killed_worker(tmp_path):
    """Two worker processes; one is SIGKILLed while it computes a piece: Dask reruns its
    task elsewhere, every piece is stored once, and the dataset equals a local run's."""
    distributed = pytest.importorskip("distributed")
    import os
    import signal
    import threading
    import time

    def cell(width, members):  # defined here: shipped to the workers by value
        time.sleep(0.4)
        m = np.arange(members.start, members.stop)
        return xr.Dataset({"score": ("member", 10.0 * width + m)})

    grid = {"width": [1, 2, 3]}
    local = run_sweep(grid, cell, members=4, chunk_size=2)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pid = list(client.run(os.getpid).values())[0]

        def kill_once_work_is_under_way():
            while not list(tmp_path.glob("cell_*.nc")):
                time.sleep(0.01)
            os.kill(pid, signal.SIGKILL)  # its worker is in the middle of another piece

        killer = threading.Thread(target=kill_once_work_is_under_way, daemon=True)
        killer.start()
        ds = run_sweep(grid, cell, tmp_path, members=4, chunk_size=2, executor=client)
        killer.join(timeout=60)
        assert pid not in client.run(os.getpid).values()  # the worker was replaced
    xr.testing.assert_identical(ds, local)
    assert len(list(tmp_path.glob("cell_*.nc"))) == 6 and not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="store"):
        run_sweep(grid, cell, members=4, executor=client)
    with pytest.raises(TypeError, match="Client"):
        run_sweep(grid, cell, tmp_path / "x", members=4, executor="dask")
