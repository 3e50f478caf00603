"""The linear-width study of implicit ReLU networks (Gao & Gao, arXiv:2205.07463), tiny,
run through the `gflow` command (`gflow run implicit_width --scale tiny`)."""

import dataclasses
import math

import jax
import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from gflow_jax.cli import app
from gflow_jax.experiments import implicit_width
from gflow_jax.experiments.implicit_width import (
    ImplicitWidthConfig,
    make_data,
    plot,
    run,
    table,
)
from gflow_jax.models.implicit import ImplicitReLU
from gflow_jax.outcomes import Outcome

# N = 6 points; widths m = 3 (m < N: no PL constant) and m = 12 (m = 2N)
SMALL = implicit_width.PRESETS["tiny"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("implicit_width")
    args = ["run", "implicit_width", "--scale", "tiny", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def study(out):
    with xr.open_dataset(out / "implicit_width.nc", engine="h5netcdf") as ds:
        return ds.load()


def _numpy_gram_lambda_min(config, n, m, gamma, member):
    """σ_min(Z₀)²/m from an independent numpy Picard solve of z = relu(γAz + Wx)."""
    x, _ = make_data(n, config.d_in, jax.random.fold_in(jax.random.key(config.data_seed), n))
    key = jax.random.split(jax.random.key(config.seed), config.seeds)[member]
    model = ImplicitReLU(config.d_in, m, gamma=gamma, key=key, init=config.init)
    A, W, x = (np.asarray(a) for a in (model.A, model.W, x))
    np.testing.assert_allclose(np.linalg.norm(A, 2), 1.0, rtol=1e-12)  # spectral init
    z = np.zeros((n, m))
    for _ in range(200):  # contraction 0.5: 0.5^200 is far below round-off
        z = np.maximum(gamma * z @ A.T + x @ W.T, 0)
    return np.linalg.eigvalsh(z @ z.T / m)[0]


def test_study_dataset(study):
    ds = study
    assert dict(ds.sizes) == {"N": 1, "ratio": 2, "gamma": 1, "member": 4}
    assert ds["width"].values.tolist() == [[3, 12]]
    outcome = ds["outcome"].values
    # per-cell fractions are the member counts
    np.testing.assert_allclose(
        ds["converged"].values, np.mean(outcome == int(Outcome.CONVERGED), axis=-1)
    )
    assert np.all(ds["converged_low"].values <= ds["converged"].values)
    assert np.all(ds["converged"].values <= ds["converged_high"].values)
    total = sum(
        ds[k].values
        for k in ("converged", "ill_posed", "diverged", "unfinished", "critical", "solver_failed")
    )
    np.testing.assert_allclose(total, 1.0)
    conv = outcome == int(Outcome.CONVERGED)
    assert np.all(ds["final_risk"].values[conv] <= SMALL.risk_tol)
    # GD: time t = k η, so t_stop = num_steps · η and never beyond the horizon
    np.testing.assert_allclose(
        ds["t_stop"].values, ds["num_steps"].values * ds["step"].values[..., None], rtol=1e-12
    )
    assert np.all(ds["t_stop"].values <= ds["t_end"].values[..., None] * (1 + 1e-12))
    # gamma = gamma ||A(0)||_2 with the spectral init (power iteration is a lower bound)
    np.testing.assert_allclose(ds["contraction_initial"].values, 0.5, rtol=1e-3)
    assert np.all(ds["contraction_initial"].values <= 0.5 * (1 + 1e-12))


def test_gram_quantity_against_numpy(study):
    ds = study
    # m = 12 >= N = 6: λ_min(Z₀Z₀ᵀ)/m against an independent numpy solve
    for member in (0, 3):
        expected = _numpy_gram_lambda_min(SMALL, 6, 12, 0.5, member)
        got = float(ds["sigma_min_sq_over_m"].sel(N=6, ratio=2.0, gamma=0.5, member=member))
        np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-14)
        assert expected > 0
    # m = 3 < N = 6: Z₀Z₀ᵀ is singular, no PL constant, the PL ratio is undefined
    assert np.all(ds["sigma_min_sq_over_m"].sel(ratio=0.5).values == 0.0)
    assert math.isnan(float(ds["pl_ratio_median"].sel(N=6, ratio=0.5, gamma=0.5)))


def test_wide_cell_converges_linearly(study):
    """m = 2N: every initialisation reaches L ≤ 1e-8, and the tail of log L is straight."""
    c = study.sel(N=6, ratio=2.0, gamma=0.5)
    assert float(c["converged"]) == 1.0
    assert float(c["rate_median"]) > 0 and float(c["rate_r2_median"]) > 0.99
    assert float(c["ill_posed"]) == 0.0
    assert float(c["contraction_final_median"]) < 1 - SMALL.margin


def test_table_plot_and_netcdf(study, out, tmp_path):
    md = table(study)
    assert (out / "implicit_width.md").read_text().strip() == md  # the report's table
    for name in ("implicit_width.pdf", "implicit_width_gamma.png"):
        assert (out / name).stat().st_size > 1000
    lines = md.splitlines()
    assert len(lines) == 2 + 2 and lines[0].startswith("| N | m/N | m | γ |")
    assert lines[3].startswith("| 6 | 2 | 12 | 0.5 | 1.00 [")
    p1, p2 = plot(study, tmp_path / "width.png")
    for p in (p1, p2):
        with open(p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    path = tmp_path / "study.nc"
    study.to_netcdf(path, engine="h5netcdf")
    back = xr.open_dataset(path, engine="h5netcdf").load()
    xr.testing.assert_allclose(back["converged"], study["converged"])


def test_config_validation():
    for bad in (
        dict(ratios=()),
        dict(ratios=(1.0, 1.0)),
        dict(gammas=(0.0,)),
        dict(sizes=(0,)),
        dict(method="sgd"),
        dict(init="xavier"),
        dict(seeds=0),
        dict(t1=float("inf")),
        dict(margin=1.0),
        dict(max_sliding=0),
    ):
        with pytest.raises(ValueError):
            ImplicitWidthConfig(**bad)
    with pytest.raises(TypeError):
        run(config={"sizes": (4,)})
    assert SMALL.width(6, 0.25) == 2 and SMALL.width(2, 0.1) == 1


@pytest.mark.slow
def test_flow_method_matches_gradient_descent(study):
    """The gradient-flow variant (PiecewiseGradientFlow: error-controlled Tsit5 steps,
    kinks located as events, no step floor) on the wide cell: same members, same data;
    GD with η = 0.25/‖Z₀‖_F² is its Euler scheme, so the tail rates agree up to
    O(η · rate). The flow reports no learning rate (`step` is NaN)."""
    config = dataclasses.replace(
        SMALL, ratios=(2.0,), seeds=2, method="flow", compact=False, chunk_size=2
    )
    flow = run(config).sel(N=6, ratio=2.0, gamma=0.5)
    gd = study.sel(N=6, ratio=2.0, gamma=0.5, member=[0, 1])
    assert np.all(flow["outcome"].values == int(Outcome.CONVERGED))
    np.testing.assert_allclose(flow["tail_rate"].values, gd["tail_rate"].values, rtol=0.1)
    assert np.all(flow["verdict"].values == 0) and np.isnan(float(flow["step"]))
