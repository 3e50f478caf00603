"""The `gflow` command: studies at tiny size end to end, config errors naming the key,
a changed configuration refused, and a run SIGKILLed twice (once during a write) then
resumed giving the dataset of an uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from gflow_jax.cli import app
from gflow_jax.experiments import STUDIES, shallow_relu
from gflow_jax.experiments._config import config_dict
from gflow_jax.limits import Limit

runner = CliRunner()
# the kill test: one cell (flow, width 1), four stored chunks of one member each
SMALL = ["--scale", "tiny", "--set", "widths=[1]", "--set", "learning_rates=[]",
         "--set", "chunk_size=1"]  # fmt: skip


def _gflow() -> list[str]:
    exe = shutil.which("gflow", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "gflow_jax.cli"]


@pytest.fixture(scope="module")
def shallow(tmp_path_factory):
    out = tmp_path_factory.mktemp("shallow")
    result = runner.invoke(app, ["run", "shallow_relu", "--scale", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out / "shallow_relu.nc", engine="h5netcdf") as ds:
        return out, ds.load(), result.output


def test_shallow_relu_tiny_report_comes_from_the_dataset(shallow, tmp_path):
    out, ds, printed = shallow
    tiny = shallow_relu.PRESETS["tiny"]
    assert dict(ds.sizes)["member"] == tiny.inits
    assert ds["dynamics"].values.tolist() == ["flow", "gd:0.1"]
    assert ds["width"].values.tolist() == [1, 2]
    limit = ds["limit"].values
    np.testing.assert_allclose(ds["zero"].values, np.mean(limit == int(Limit.ZERO_RISK), -1))
    assert np.all(ds["max_param_norm"].values >= ds["initial_param_norm"].values * (1 - 1e-12))
    for name in ("shallow_relu.png", "shallow_relu.pdf", "shallow_relu.md"):
        assert (out / name).stat().st_size > 500
    md = (out / "shallow_relu.md").read_text()
    assert md.strip() in printed
    for dyn in ds["dynamics"].values:
        for width in ds["width"].values:
            c = ds.sel(dynamics=dyn, width=width)
            row = f"| {dyn} | {width} | {tiny.inits} | {float(c['zero']):.2f} ["
            assert row in md, row
    # the members that stop at a positive risk sit on the constant fit, risk α²/12
    clusters = shallow_relu.limit_clusters(ds)
    for cl in clusters:
        assert f"| {cl['value']:.6g} | {cl['over_alpha2']:.6g} |" in md
    known = [cl for cl in clusters if cl["label"].startswith("α²/12")]
    for cl in known:
        assert cl["value"] == pytest.approx(2.0**2 / 12, rel=1e-8)
    # info and report read the folder
    result = runner.invoke(app, ["info", str(out)])
    assert result.exit_code == 0 and "cells 4/4 done, pieces 8/8 done" in result.output
    assert "widths = [1, 2]" in result.output and "jax " in result.output
    result = runner.invoke(app, ["report", str(out), "--to", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "shallow_relu.md").read_text() == md


def test_config_errors_name_the_key(tmp_path):
    # a run folder of the tiny preset (only its run.json is read before refusing)
    out = tmp_path / "run"
    out.mkdir()
    record = {"study": "shallow_relu", "scale": "tiny", "x64": True,
              "config": config_dict(shallow_relu.PRESETS["tiny"])}  # fmt: skip
    (out / "run.json").write_text(json.dumps(record))

    def fails(*args):
        result = runner.invoke(app, list(args))
        assert result.exit_code == 2, result.output
        return result.output

    msg = fails(
        "run", "shallow_relu", "--scale", "tiny", "--set", "widht=[3]", "--out", str(tmp_path)
    )
    assert "unknown config key 'widht'" in msg and "widths" in msg
    assert "config key 'widths'" in fails("run", "shallow_relu", "--set", "widths=abc")
    assert "inits must be a positive int" in fails("run", "shallow_relu", "--set", "inits=0")
    toml = tmp_path / "bad.toml"
    toml.write_text("[config]\nlearning_rate = 0.1\n")
    assert "unknown config key 'learning_rate'" in fails(
        "run", "shallow_relu", "--config", str(toml)
    )
    assert "unknown study 'shalow'" in fails("run", "shalow")
    assert "unknown scale" in fails("run", "shallow_relu", "--scale", "huge")
    # a finished run folder refuses another configuration, naming the keys
    msg = fails("run", "shallow_relu", "--scale", "tiny", "--set", "inits=5", "--out", str(out))
    assert "config.inits: stored 4, now 5" in msg and "--overwrite" in msg
    assert "not a gflow run folder" in fails("info", str(tmp_path))
    assert not (out / "store").exists()  # refused before any work


def test_list_names_every_study():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(STUDIES)


def _count(store, pattern):
    return len(list(store.glob(pattern))) if store.exists() else 0


def _run_until(cmd, env, store, stop, log) -> bool:
    """Start `cmd`; SIGKILL it as soon as `stop(store)` holds; True if it was killed."""
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if stop(store):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.001)
        assert proc.poll() is not None, "timed out"
        assert proc.returncode == 0, open(log).read()[-3000:]
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_twice_then_resume_equals_uninterrupted(tmp_path):
    ref = tmp_path / "ref"
    result = runner.invoke(app, ["run", "shallow_relu", *SMALL, "--out", str(ref)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "killed"
    store = out / "store"
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")  # fmt: skip
    cmd = [*_gflow(), "run", "shallow_relu", *SMALL, "--out", str(out)]
    # kill 1: once the first chunk is stored
    assert _run_until(cmd, env, store, lambda s: _count(s, "cell_*.nc") >= 1, tmp_path / "1.log")
    first = _count(store, "cell_*.nc")
    assert 1 <= first < 4
    # kill 2: during the write of the next chunk (a temporary file exists), or once stored
    assert _run_until(
        cmd,
        env,
        store,
        lambda s: _count(s, "*.tmp") or _count(s, "cell_*.nc") > first,
        tmp_path / "2.log",
    )
    # resume: finishes, removes the stale temporary file, recomputes nothing stored
    resume = subprocess.run([*_gflow(), "resume", str(out)], env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert not list(out.rglob("*.tmp"))
    assert _count(store, "cell_*.nc") == 4
    with (
        xr.open_dataset(out / "shallow_relu.nc", engine="h5netcdf") as got,
        xr.open_dataset(ref / "shallow_relu.nc", engine="h5netcdf") as want,
    ):
        xr.testing.assert_identical(got.load(), want.load())
    manifest = json.loads((store / "sweep.json").read_text())
    assert manifest["config"]["chunk_size"] == 1 and manifest["members"] == 4


def test_demo_is_the_main_job(tmp_path):
    """`gflow run demo` (= `make demo`): its table's counts and headline are the stored
    ensemble's, on the devices named by --devices; a bad --devices spec is refused."""
    import gflow_jax as gf

    args = ["run", "demo", "--scale", "tiny", "--out", str(tmp_path), "--devices", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    ens = gf.Ensemble.load(tmp_path / "demo.nc")
    assert len(ens) == 4
    md = (tmp_path / "demo.md").read_text()
    assert md.strip() in result.output
    assert f"Fraction whose risk → 0: {ens.fraction()}" in md
    assert "| outcome | count |" in md and "| limit | count |" in md
    for code, field in [
        *((o, ens.outcome) for o in gf.Outcome),
        *((c, ens.limit) for c in gf.Limit),
    ]:
        n = int(np.sum(np.asarray(field) == int(code)))
        if n:
            assert f"| {code.name} | {n} |" in md
    assert f"solver steps: {ens.stats['useful_member_steps']} " in md
    for name in ("demo.png", "demo.pdf"):
        assert (tmp_path / name).stat().st_size > 1000
    result = runner.invoke(app, ["run", "demo", "--scale", "tiny", "--devices", "tpu:7"])
    assert result.exit_code == 2 and "--devices 'tpu:7'" in result.output
    result = runner.invoke(app, ["run", "demo", "--scale", "tiny", "--devices", "99"])
    assert result.exit_code == 2 and "device(s)" in result.output
