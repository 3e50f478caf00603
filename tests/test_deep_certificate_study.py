"""The deep-certificate study at a tiny size (2 cells, few seeds), run through the
`gflow` command (`gflow run deep_certificate --scale tiny`)."""

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from gflow_jax.cli import app
from gflow_jax.experiments import deep_certificate
from gflow_jax.experiments.deep_certificate import (
    DeepCertificateConfig,
    parse_scheme,
    plot,
    run,
    table,
)
from gflow_jax.outcomes import Outcome
from gflow_jax.statistics import wilson_interval

CONFIG = deep_certificate.PRESETS["tiny"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("deep_certificate")
    args = ["run", "deep_certificate", "--scale", "tiny", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def study(out):
    with xr.open_dataset(out / "deep_certificate.nc", engine="h5netcdf") as ds:
        return ds.load()


def test_study_dataset(study):
    ds = study
    assert dict(ds.sizes) == {
        "scheme": 2,
        "depth": 1,
        "n": 1,
        "seed": 4,
        "radius_factor": 2,
        "certified_row": 2,
        "converged_col": 2,
    }
    pos = ds.sel(scheme="positive:100", depth=1, n=3)
    # Chatterjee's positive initialisation with a large output scale is certified ...
    assert bool(pos["certified"].all())
    # ... and every certified flow converged: no false certificate anywhere
    assert int(ds["false_certificates"].sum()) == 0
    assert int(ds["left_ball"].sum()) == 0
    cert, conv = ds["certified"].values, ds["converged"].values
    assert np.all(conv[cert])
    np.testing.assert_array_equal(conv, ds["outcome"].values == int(Outcome.CONVERGED))
    # fractions and Wilson intervals agree with the per-seed booleans
    for key in ("certified", "converged"):
        counts = ds[key].sum("seed").values
        np.testing.assert_allclose(ds[f"frac_{key}"].values, counts / 4)
        w = wilson_interval(int(counts.ravel()[1]), 4)
        assert float(ds[f"frac_{key}_low"].values.ravel()[1]) == pytest.approx(w.low)
        assert np.all(ds[f"frac_{key}_low"].values <= ds[f"frac_{key}"].values)
        assert np.all(ds[f"frac_{key}"].values <= ds[f"frac_{key}_high"].values)
    np.testing.assert_array_equal(ds["table"].sum(("certified_row", "converged_col")).values, 4)
    # certified means the estimated criterion held at the recorded radius
    margin = pos["margin"].values
    np.testing.assert_array_equal(pos["certified"].values, (margin > 1).any(-1))
    r = pos["radius_certified"].values
    f0, a = pos["initial_risk"].values, pos["alpha_certified"].values
    assert np.all(4 * f0 < r**2 * a)
    # the flow's average rate −log(f_stop/f_0)/t_stop is of the order of α̂ (α̂ ≥ α is an
    # estimate; the theorem gives rate ≥ α)
    obs = pos["observed_rate"].values
    assert np.all(obs >= 0.5 * a)
    assert np.all(pos["final_distance"].values <= r)
    assert float(ds["n_over_d"][0]) == pytest.approx(0.5)
    assert ds["gram_lambda_min"].values[0] > 0


def test_table_and_plot(study, out, tmp_path):
    text = table(study)
    assert (out / "deep_certificate.md").read_text().strip() == text  # the report's table
    assert (out / "deep_certificate.pdf").stat().st_size > 1000
    lines = text.splitlines()
    assert len(lines) == 2 + 2  # header, rule, one row per cell
    assert lines[2].startswith("| positive:100 | 1 | 3 | 0.50 |")
    path = tmp_path / "fractions.png"
    fig = plot(study, path)
    assert path.exists() and path.stat().st_size > 1000
    assert len(fig.axes) == 2  # rows certified / converged, one column per depth


def test_config_validation():
    assert parse_scheme("positive:250") == ("positive", 250.0)
    assert parse_scheme("lecun") == ("lecun", 1.0)
    for bad in ("positive:0", "positive:x", "xavier", "he:-1"):
        with pytest.raises(ValueError):
            parse_scheme(bad)
    with pytest.raises(ValueError):
        DeepCertificateConfig(schemes=("gauss",))
    with pytest.raises(ValueError):
        DeepCertificateConfig(ns=(4, 4))
    with pytest.raises(ValueError):
        DeepCertificateConfig(activation="gelu")
    with pytest.raises(ValueError):
        DeepCertificateConfig(radius_factors=(0.0,))
    with pytest.raises(ValueError):
        DeepCertificateConfig(radius_factors=(2.0, 1.0))
    with pytest.raises(ValueError):
        DeepCertificateConfig(seeds=0)
    with pytest.raises(TypeError):
        run("not a config")
