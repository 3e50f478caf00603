"""The estimated ball criterion (MATH.md §3.2) against closed forms and actual flows.

Exact case: ``f(θ) = ‖Aθ − y‖²`` with ``A`` (n × p, n < p) of full row rank. With
``e = Aθ − y``, ``∇f = 2Aᵀe`` and, ``Aᵀ`` being injective on ``R^n``,
``‖∇f‖² = 4‖Aᵀe‖² ≥ 4σ_n(A)²‖e‖² = 4σ_n² f``, with equality for ``e ∝ u_n`` (the left
singular vector of ``σ_n``). If the ball contains a minimiser, ``{Aθ − y : θ ∈ B}`` is a
neighbourhood of ``0`` in ``R^n`` and contains every direction, so ``α = 4σ_n²`` exactly;
``∇²f = 2AᵀA`` so ``β = 2σ_1²``. The criterion ``4f(θ_0) < r²α`` then reads
``r > r* = √f(θ_0)/σ_n``, valid for ``r ≥ dist(θ_0, {Aθ = y}) = ‖A⁺e_0‖``.
"""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gflow_jax.certificates.ball import (
    CriterionReport,
    Search,
    ball_criterion,
    batched_ball_criterion,
    certification_table,
    check_prediction,
    hessian_norm,
    pl_ratio,
    radius_scan,
)
from gflow_jax.flow import gradient_flow
from gflow_jax.models.base import partition
from gflow_jax.models.deep import DeepMLP, linearly_independent_data
from gflow_jax.models.shallow import ShallowReLU
from gflow_jax.risks.empirical import EmpiricalRisk


class Point(eqx.Module):
    """The tiniest 'model': one parameter vector θ."""

    theta: jax.Array


class QuadExp(eqx.Module):
    """``f(θ) = a ‖Aθ − y‖² + b exp(−2 u·θ)`` (one risk family: the exact least-squares
    case ``b = 0`` and the edge-infimum case ``a = 0`` share one compilation)."""

    A: jax.Array
    y: jax.Array
    u: jax.Array
    ab: jax.Array

    def __call__(self, model):
        e = self.A @ model.theta - self.y
        return self.ab[0] * (e @ e) + self.ab[1] * jnp.exp(-2.0 * (self.u @ model.theta))


P, N = 40, 3
OPTS = dict(n_random=32, n_adversarial=3, ascent_steps=120, n_beta=2, hessian_iters=24)


@pytest.fixture(scope="module")
def least_squares():
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.standard_normal((N, N)))
    V, _ = np.linalg.qr(rng.standard_normal((P, N)))
    s = np.array([2.0, 1.3, 0.7])
    A = U @ np.diag(s) @ V.T
    y = rng.standard_normal(N)
    theta0 = rng.standard_normal(P)
    e0 = A @ theta0 - y
    # make e0 mostly along u_1 so that the minimiser set is well inside the threshold ball
    e0 = U @ np.array([3.0, 0.4, 0.3])
    y = A @ theta0 - e0
    f0 = float(e0 @ e0)
    risk = QuadExp(jnp.asarray(A), jnp.asarray(y), jnp.zeros(P), jnp.array([1.0, 0.0]))
    r_star = np.sqrt(f0) / s[-1]
    dist = np.linalg.norm(np.linalg.pinv(A) @ e0)
    assert dist < 0.8 * r_star  # the exact α = 4σ_n² holds for every radius scanned below
    return dict(
        A=A,
        y=y,
        s=s,
        theta0=theta0,
        f0=f0,
        risk=risk,
        model=Point(jnp.asarray(theta0)),
        r_star=r_star,
        alpha=4 * s[-1] ** 2,
        beta=2 * s[0] ** 2,
    )


def test_exact_least_squares(least_squares):
    ls = least_squares
    factors = np.array([0.8, 0.9, 0.97, 1.03, 1.1, 1.5])
    scan = radius_scan(
        ls["risk"], ls["model"], factors * ls["r_star"], key=jax.random.key(1), **OPTS
    )
    alpha = np.asarray(scan.alpha_raw)
    beta = np.asarray(scan.beta_raw)
    # α̂ ≥ α always (it is a value of the ratio); the adversarial search reaches it to 1 %
    assert np.all(alpha >= ls["alpha"] * (1 - 1e-9))
    np.testing.assert_allclose(alpha, ls["alpha"], rtol=1e-2)
    np.testing.assert_allclose(beta, ls["beta"], rtol=1e-2)
    # the verdict equals the exact criterion r > r* on both sides of the threshold
    exact = 4 * ls["f0"] < (factors * ls["r_star"]) ** 2 * ls["alpha"]
    np.testing.assert_array_equal(np.asarray(scan.holds), exact)
    assert np.asarray(scan.holds).tolist() == [False, False, False, True, True, True]
    assert float(scan.smallest_certified_radius) == pytest.approx(1.03 * ls["r_star"])
    np.testing.assert_allclose(
        np.asarray(scan.travel_bound), 2 * np.sqrt(ls["f0"] / ls["alpha"]), rtol=1e-2
    )


def test_report_fields_and_gd_condition(least_squares):
    ls = least_squares
    r = 1.5 * ls["r_star"]
    rep = ball_criterion(ls["risk"], ls["model"], r, key=jax.random.key(2), **OPTS)
    assert isinstance(rep, CriterionReport) and bool(rep.holds)
    # found by a local search (the flow probe ends with e ∝ u_n, the flow's slowest mode)
    assert rep.alpha_source_name in ("ADVERSARIAL", "PROBE")
    assert float(rep.alpha) == pytest.approx(ls["alpha"], rel=1e-2)
    e0 = ls["A"] @ ls["theta0"] - ls["y"]
    ratio0 = 4 * np.sum((ls["A"].T @ e0) ** 2) / (e0 @ e0)
    assert float(rep.alpha_center) == pytest.approx(ratio0, rel=1e-12)
    assert float(pl_ratio(ls["risk"], ls["model"])) == pytest.approx(ratio0, rel=1e-12)
    # the reported point is in the ball, at the reported distance, with the reported ratio
    point = np.asarray(rep.alpha_point.theta)
    dist = np.linalg.norm(point - ls["theta0"])
    assert dist == pytest.approx(float(rep.alpha_distance), rel=1e-12) and dist <= r * (1 + 1e-12)
    assert float(pl_ratio(ls["risk"], Point(jnp.asarray(point)))) == pytest.approx(
        float(rep.alpha), rel=1e-10
    )
    assert float(rep.margin) == pytest.approx(r**2 * float(rep.alpha) / (4 * ls["f0"]))
    assert float(rep.max_step) == pytest.approx(2 / ls["beta"], rel=1e-2)
    # GD (§3.2): κ = 1 − ηβ/2 and 4 f0 < κ² r² α  ⇔  η < (2/β)(1 − 2√(f0/α)/r)
    eta_max = 2 / float(rep.beta) * (1 - 2 * np.sqrt(ls["f0"] / float(rep.alpha)) / r)
    assert float(rep.gd_max_step) == pytest.approx(eta_max, rel=1e-12)
    kappa, ok, rate = rep.gd_condition(0.99 * eta_max)
    assert bool(ok) and float(kappa) == pytest.approx(1 - 0.99 * eta_max * float(rep.beta) / 2)
    assert float(rate) == pytest.approx(1 - 0.99 * eta_max * float(rep.alpha) * float(kappa))
    assert not bool(rep.gd_condition(1.01 * eta_max)[1])
    assert "ESTIMATED" in rep.summary()


def test_flow_probe_alone_finds_alpha(least_squares):
    """Gradient descent from θ_0 (step 1/β) kills the residual along ``u_1`` at once and
    leaves ``e_k ∝ u_n`` (the slowest mode): the ratio along the probe tends to ``4σ_n²``."""
    ls = least_squares
    rep = ball_criterion(
        ls["risk"],
        ls["model"],
        1.1 * ls["r_star"],
        key=jax.random.key(20),
        n_random=0,
        n_adversarial=0,
        probe_steps=200,
        n_beta=0,
    )
    assert rep.alpha_source_name == "PROBE"
    assert float(rep.alpha) == pytest.approx(ls["alpha"], rel=1e-8)
    assert float(rep.beta_center) == pytest.approx(ls["beta"], rel=1e-10)
    assert bool(rep.holds)


def test_adversarial_beats_random_when_infimum_on_the_edge(least_squares):
    """``f = exp(−2u·θ)``: ``‖∇f‖²/f = 4f``, minimal at the boundary point ``θ_0 + r u``.
    Uniform samples in ``R^40`` have ``u·(θ − θ_0) = O(r/√40)`` and miss it."""
    ls = least_squares
    rng = np.random.default_rng(3)
    u = rng.standard_normal(P)
    u /= np.linalg.norm(u)
    risk = QuadExp(ls["risk"].A, ls["risk"].y, jnp.asarray(u), jnp.array([0.0, 1.0]))
    r = 1.0
    exact = 4 * np.exp(-2 * (u @ ls["theta0"] + r))
    rep = ball_criterion(risk, ls["model"], r, key=jax.random.key(4), **OPTS)
    by = np.asarray(rep.alpha_by_search)
    assert by[Search.ADVERSARIAL] < 0.5 * by[Search.RANDOM]
    assert by[Search.ADVERSARIAL] == pytest.approx(exact, rel=1e-3)
    assert float(rep.alpha) == pytest.approx(exact, rel=1e-3)
    assert float(rep.alpha_distance) == pytest.approx(r, rel=1e-6)
    point = np.asarray(rep.alpha_point.theta)
    np.testing.assert_allclose(point - ls["theta0"], r * u, atol=1e-3)


def test_hessian_norm_matches_dense():
    x = jax.random.normal(jax.random.key(5), (5, 3))
    y = jax.random.normal(jax.random.key(6), (5, 1))
    risk = EmpiricalRisk(x, y)
    model = DeepMLP((3, 4, 3, 1), "tanh", key=jax.random.key(7), init="he")
    params, static = partition(model)
    flat, unravel = ravel_pytree(params)
    H = jax.jit(jax.hessian(lambda th: risk(eqx.combine(unravel(th), static))))(flat)
    exact = np.max(np.abs(np.linalg.eigvalsh(np.asarray(H))))
    est = float(hessian_norm(risk, model, key=jax.random.key(8), iters=flat.size))
    assert est == pytest.approx(exact, rel=1e-6)


def test_power_iteration(least_squares):
    ls = least_squares
    est = hessian_norm(ls["risk"], ls["model"], key=jax.random.key(9), iters=300, method="power")
    assert float(est) == pytest.approx(ls["beta"], rel=1e-8)


@pytest.fixture(scope="module")
def certified_deep():
    """Positive init, tanh, n ≤ d: a case the criterion certifies, and its actual flow."""
    d, n = 8, 4
    data = linearly_independent_data(n, d, jax.random.key(10))
    risk = EmpiricalRisk(data.x, data.y)
    model = DeepMLP(
        (d, 6, 6, 1), "tanh", key=jax.random.key(11), init="positive", output_scale=100.0
    )
    rho0 = float(pl_ratio(risk, model))
    f0 = float(risk(model))
    r = 3 * 2 * np.sqrt(f0 / rho0)  # 3 × the smallest radius that could possibly pass
    traj = gradient_flow(model, risk, t1=1.0, save_path=True, n_save=80)
    rep = ball_criterion(risk, model, r, key=jax.random.key(12), trajectory=traj, **OPTS)
    return dict(risk=risk, model=model, traj=traj, report=rep, r=r)


def test_certified_flow_stays_in_ball_and_obeys_rate(certified_deep):
    rep, traj = certified_deep["report"], certified_deep["traj"]
    assert bool(rep.holds), rep.summary()
    assert traj.outcome_name == "CONVERGED"
    chk = check_prediction(rep, traj)
    assert bool(chk.stayed_in_ball) and bool(chk.within_travel_bound)
    assert float(chk.max_distance) <= float(rep.travel_bound) < float(rep.radius)
    # f(θ_t) ≤ e^{−α̂ t} f(θ_0) up to the solver's tolerance
    assert float(chk.max_excess) <= 1e-6 and bool(chk.obeyed_rate)
    # the flow's points are part of the α search: the running PL ratio never dips below α̂
    assert float(chk.min_pl_ratio) >= float(rep.alpha) * (1 - 1e-6)
    # distances recomputed independently from the saved path
    path = np.asarray(traj.path.weights[0]).reshape(len(traj.ts), -1)
    w0 = np.asarray(certified_deep["model"].weights[0]).ravel()
    ok = np.isfinite(path).all(axis=1)
    assert np.all(np.linalg.norm(path[ok] - w0, axis=1) <= np.asarray(chk.distance)[ok] + 1e-12)
    risk_bound = float(rep.initial_risk) * np.exp(-float(rep.alpha) * np.asarray(traj.ts))
    np.testing.assert_allclose(np.asarray(chk.risk_bound), risk_bound, rtol=1e-12)


def test_batched_matches_single(least_squares):
    ls = least_squares
    theta1 = ls["theta0"] + 0.1
    models = Point(jnp.stack([jnp.asarray(ls["theta0"]), jnp.asarray(theta1)]))
    keys = jax.random.split(jax.random.key(13), 2)
    radii = np.array([1.5, 0.5]) * ls["r_star"]
    batch = batched_ball_criterion(ls["risk"], models, radii, keys=keys, **OPTS)
    assert batch.alpha.shape == (2,) and batch.alpha_point.theta.shape == (2, P)
    for i, theta in enumerate((ls["theta0"], theta1)):
        single = ball_criterion(
            ls["risk"], Point(jnp.asarray(theta)), radii[i], key=keys[i], **OPTS
        )
        for name in ("alpha", "beta", "holds", "travel_bound", "margin"):
            np.testing.assert_allclose(
                getattr(batch, name)[i], getattr(single, name), rtol=1e-8, err_msg=name
            )
    assert np.asarray(batch.holds).tolist() == [True, False]


def test_float32(least_squares):
    ls = least_squares
    risk = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), ls["risk"])
    model = Point(jnp.asarray(ls["theta0"], jnp.float32))
    rep = ball_criterion(risk, model, 1.1 * ls["r_star"], key=jax.random.key(14), **OPTS)
    assert rep.alpha.dtype == jnp.float32
    assert float(rep.alpha) == pytest.approx(ls["alpha"], rel=1e-2)
    assert float(rep.beta) == pytest.approx(ls["beta"], rel=1e-4)
    assert bool(rep.holds)


def test_certification_table():
    cert = np.array([True, True, False, False, True, False])
    conv = np.array([True, False, True, False, True, True])
    t = certification_table(cert, conv)
    np.testing.assert_array_equal(t.counts, [[2, 1], [2, 1]])
    assert t.total == 6 and t.false_certificates == 1
    assert t.certified_fraction == pytest.approx(0.5) and t.converged_fraction == pytest.approx(
        4 / 6
    )
    assert "| certified | 2 | 1 | 3 |" in t.to_markdown()
    with pytest.raises(ValueError):
        certification_table(cert, conv[:3])
    with pytest.raises(TypeError):
        certification_table(cert.astype(int), conv)


def test_bad_inputs(least_squares):
    ls = least_squares
    risk, model = ls["risk"], ls["model"]
    key = jax.random.key(0)
    for r in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="radius"):
            ball_criterion(risk, model, r, key=key)
    with pytest.raises(ValueError):
        radius_scan(risk, model, [1.0, -1.0], key=key)
    with pytest.raises(ValueError):
        radius_scan(risk, model, [], key=key)
    # f(θ_0) = 0: a minimiser
    flat = QuadExp(risk.A, risk.y, risk.u, jnp.zeros(2))  # f ≡ 0
    with pytest.raises(ValueError, match="f\\(θ_0\\) = 0"):
        ball_criterion(flat, model, 1.0, key=key)
    with pytest.raises(ValueError, match="save_path"):
        ball_criterion(risk, model, 1.0, key=key, trajectory=certified_traj_without_path())
    with pytest.raises(ValueError, match="n_random"):
        ball_criterion(risk, model, 1.0, key=key, n_random=-1)
    with pytest.raises(ValueError, match="method"):
        ball_criterion(risk, model, 1.0, key=key, hessian_method="arnoldi")
    with pytest.raises(TypeError):
        radius_scan(risk, model, [1.0], key=key, bogus=1)
    with pytest.raises(TypeError):
        check_prediction("not a report", None)


def certified_traj_without_path():
    class T:
        path = None

    return T()


def _zero_risk_for(model, d_in):
    """An EmpiricalRisk whose targets are the model's outputs (so f(θ_0) = 0)."""
    x = jax.random.normal(jax.random.key(15), (3, d_in))
    return EmpiricalRisk(x, model(x))


def test_non_smooth_models_warn():
    """ReLU models violate the C² assumption: a documented UserWarning (the f(θ_0) = 0
    error afterwards only keeps the test from compiling anything)."""
    relu = DeepMLP((2, 3, 1), "relu", key=jax.random.key(16))
    shallow = ShallowReLU(2, 3, key=jax.random.key(17))
    for model in (relu, shallow):
        risk = _zero_risk_for(model, 2)
        with pytest.warns(UserWarning, match="C²"):
            with pytest.raises(ValueError):
                ball_criterion(risk, model, 1.0, key=jax.random.key(0))
    smooth = DeepMLP((2, 3, 1), "softplus", key=jax.random.key(16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError):
            ball_criterion(_zero_risk_for(smooth, 2), smooth, 1.0, key=jax.random.key(0))
