"""The estimated ball criterion (Chatterjee, arXiv:2203.16462) against closed forms and flows.

Exact case: ``f(θ) = ‖Aθ − y‖²`` with ``A`` (n × p, n < p) of full row rank. With
``e = Aθ − y``, ``∇f = 2Aᵀe`` and, ``Aᵀ`` being injective on ``R^n``,
``‖∇f‖² = 4‖Aᵀe‖² ≥ 4σ_n(A)²‖e‖² = 4σ_n² f``, with equality for ``e ∝ u_n`` (the left
singular vector of ``σ_n``). If the ball contains a minimiser, ``{Aθ − y : θ ∈ B}`` is a
neighbourhood of ``0`` in ``R^n`` and contains every direction, so ``α = 4σ_n²`` exactly;
``∇²f = 2AᵀA`` so ``β = 2σ_1²``. The criterion ``4f(θ_0) < r²α`` then reads
``r > r* = √f(θ_0)/σ_n``, valid for ``r ≥ dist(θ_0, {Aθ = y}) = ‖A⁺e_0‖``.
"""

import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gflow_jax import integrate
from gflow_jax.certificates import (
    CriterionReport,
    Search,
    SearchOptions,
    ball_criterion,
    batched_ball_criterion,
    check_prediction,
    hessian_norm,
    pl_ratio,
    radius_scan,
)
from gflow_jax.models.base import AbstractModel, is_smooth, partition
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


def _flow_with_path(model, risk, t1, n_save):
    """The one place these tests run a gradient flow (saving its parameter path)."""
    return integrate(model, risk, t1, save_path=True, n_save=n_save, limits=None)


P, N = 40, 3
SEARCH = SearchOptions(n_random=32, n_adversarial=3, ascent_steps=120, n_beta=2, hessian_iters=24)


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
        ls["model"], ls["risk"], factors * ls["r_star"], key=jax.random.key(1), search=SEARCH
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
    rep = ball_criterion(ls["model"], ls["risk"], r, key=jax.random.key(2), search=SEARCH)
    assert isinstance(rep, CriterionReport) and bool(rep.holds)
    # found by a local search (the flow probe ends with e ∝ u_n, the flow's slowest mode)
    assert rep.alpha_source_name in ("ADVERSARIAL", "PROBE")
    assert float(rep.alpha) == pytest.approx(ls["alpha"], rel=1e-2)
    e0 = ls["A"] @ ls["theta0"] - ls["y"]
    ratio0 = 4 * np.sum((ls["A"].T @ e0) ** 2) / (e0 @ e0)
    assert float(rep.alpha_center) == pytest.approx(ratio0, rel=1e-12)
    assert float(pl_ratio(ls["model"], ls["risk"])) == pytest.approx(ratio0, rel=1e-12)
    # the reported point is in the ball, at the reported distance, with the reported ratio
    point = np.asarray(rep.alpha_point.theta)
    dist = np.linalg.norm(point - ls["theta0"])
    assert dist == pytest.approx(float(rep.alpha_distance), rel=1e-12) and dist <= r * (1 + 1e-12)
    assert float(pl_ratio(Point(jnp.asarray(point)), ls["risk"])) == pytest.approx(
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
        ls["model"],
        ls["risk"],
        1.1 * ls["r_star"],
        key=jax.random.key(20),
        search=SearchOptions(n_random=0, n_adversarial=0, probe_steps=200, n_beta=0),
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
    rep = ball_criterion(ls["model"], risk, r, key=jax.random.key(4), search=SEARCH)
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
    est = float(hessian_norm(model, risk, key=jax.random.key(8), iters=flat.size))
    assert est == pytest.approx(exact, rel=1e-6)


def test_power_iteration(least_squares):
    ls = least_squares
    est = hessian_norm(ls["model"], ls["risk"], key=jax.random.key(9), iters=300, method="power")
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
    rho0 = float(pl_ratio(model, risk))
    f0 = float(risk(model))
    r = 3 * 2 * np.sqrt(f0 / rho0)  # 3 × the smallest radius that could possibly pass
    traj = _flow_with_path(model, risk, 1.0, n_save=80)
    rep = ball_criterion(model, risk, r, key=jax.random.key(12), trajectory=traj, search=SEARCH)
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
    batch = batched_ball_criterion(models, ls["risk"], radii, keys=keys, search=SEARCH)
    assert batch.alpha.shape == (2,) and batch.alpha_point.theta.shape == (2, P)
    for i, theta in enumerate((ls["theta0"], theta1)):
        single = ball_criterion(
            Point(jnp.asarray(theta)), ls["risk"], radii[i], key=keys[i], search=SEARCH
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
    rep = ball_criterion(model, risk, 1.1 * ls["r_star"], key=jax.random.key(14), search=SEARCH)
    assert rep.alpha.dtype == jnp.float32
    assert float(rep.alpha) == pytest.approx(ls["alpha"], rel=1e-2)
    assert float(rep.beta) == pytest.approx(ls["beta"], rel=1e-4)
    assert bool(rep.holds)


def test_vmap_over_radius_equals_loop(least_squares):
    """One jitted core: ``jax.vmap`` of ball_criterion over r, radius_scan's per-radius
    reports and a Python loop of ball_criterion agree (same key at every radius).

    Every number agrees to round-off. The *location* of the minimiser does not: here
    ``α = 4σ_n²`` is attained on a whole affine set, along which the normalised search
    steps are driven by round-off, so ``alpha_point`` is only checked to be a point of
    the ball with ratio ``α̂``."""
    ls = least_squares
    radii = np.array([0.8, 0.9, 0.97, 1.03, 1.1, 1.5]) * ls["r_star"]
    key = jax.random.key(1)
    loop = [ball_criterion(ls["model"], ls["risk"], r, key=key, search=SEARCH) for r in radii]
    loop = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *loop)
    vmapped = jax.vmap(
        lambda r: ball_criterion(ls["model"], ls["risk"], r, key=key, search=SEARCH)
    )(jnp.asarray(radii))
    scan = radius_scan(ls["model"], ls["risk"], radii[::-1], key=key, search=SEARCH)
    for batch in (vmapped, scan.reports):
        assert jax.tree_util.tree_structure(batch) == jax.tree_util.tree_structure(loop)
        for name in CriterionReport.__dataclass_fields__:
            if name in ("alpha_point", "alpha_distance"):
                continue
            got, want = getattr(batch, name), getattr(loop, name)
            jax.tree_util.tree_map(
                lambda a, b, name=name: np.testing.assert_allclose(
                    np.asarray(a), b, rtol=1e-12, err_msg=name
                ),
                got,
                want,
            )
        dist = np.linalg.norm(np.asarray(batch.alpha_point.theta) - ls["theta0"], axis=1)
        np.testing.assert_allclose(dist, np.asarray(batch.alpha_distance), rtol=1e-12)
        assert np.all(dist <= radii * (1 + 1e-12))
        ratios = jax.vmap(lambda th: pl_ratio(Point(th), ls["risk"]))(batch.alpha_point.theta)
        np.testing.assert_allclose(np.asarray(ratios), np.asarray(batch.alpha), rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(scan.radii), radii)
    np.testing.assert_allclose(np.asarray(scan.alpha), np.minimum.accumulate(loop.alpha))
    np.testing.assert_allclose(np.asarray(scan.beta), np.maximum.accumulate(loop.beta))


def test_bad_inputs(least_squares):
    ls = least_squares
    risk, model = ls["risk"], ls["model"]
    key = jax.random.key(0)
    for r in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="radius"):
            ball_criterion(model, risk, r, key=key)
    with pytest.raises(ValueError):
        radius_scan(model, risk, [1.0, -1.0], key=key)
    with pytest.raises(ValueError):
        radius_scan(model, risk, [], key=key)
    # f(θ_0) = 0: a minimiser
    flat = QuadExp(risk.A, risk.y, risk.u, jnp.zeros(2))  # f ≡ 0
    with pytest.raises(ValueError, match="f\\(θ_0\\) = 0"):
        ball_criterion(model, flat, 1.0, key=key)
    with pytest.raises(ValueError, match="save_path"):
        ball_criterion(model, risk, 1.0, key=key, trajectory=certified_traj_without_path())
    with pytest.raises(TypeError, match="SearchOptions"):
        ball_criterion(model, risk, 1.0, key=key, search=dict(n_random=3))
    with pytest.raises(TypeError):
        ball_criterion(model, risk, 1.0, key=key, n_random=3)  # options live in search=
    with pytest.raises(TypeError):
        radius_scan(model, risk, [1.0], key=key, bogus=1)
    with pytest.raises(TypeError):
        check_prediction("not a report", None)


def test_old_argument_order_is_a_clear_error():
    x = jnp.ones((3, 2))
    model = DeepMLP((2, 3, 1), "tanh", key=jax.random.key(16))
    risk = EmpiricalRisk(x, jnp.zeros((3, 1)))
    key = jax.random.key(0)
    calls = [
        lambda: ball_criterion(risk, model, 1.0, key=key),
        lambda: radius_scan(risk, model, [1.0], key=key),
        lambda: hessian_norm(risk, model, key=key),
        lambda: pl_ratio(risk, model),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="\\(model, risk"):
            call()


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("n_random", -1, ValueError),
        ("n_random", 2.5, TypeError),
        ("n_adversarial", -2, ValueError),
        ("ascent_steps", 0, ValueError),
        ("ascent_lr", 0.0, ValueError),
        ("ascent_lr", float("inf"), ValueError),
        ("probe_steps", True, TypeError),
        ("probe_lr", -1.0, ValueError),
        ("probe_lr", "1", TypeError),
        ("n_beta", -1, ValueError),
        ("hessian_iters", 0, ValueError),
        ("hessian_method", "arnoldi", ValueError),
    ],
)
def test_search_options_validation(field, value, error):
    with pytest.raises(error, match=f"SearchOptions.{field}"):
        SearchOptions(**{field: value})


def test_search_options_are_static_and_hashable():
    a = SearchOptions(n_random=3)
    assert a == SearchOptions(n_random=3) and hash(a) == hash(SearchOptions(n_random=3))
    assert jax.tree_util.tree_leaves(a) == []  # every field static: no recompilation on values
    b = dataclasses.replace(a, probe_steps=0)
    assert b.probe_steps == 0 and b.n_random == 3
    assert SearchOptions(n_adversarial=4).n_starts == 2
    assert SearchOptions(n_adversarial=4, probe_steps=0).n_starts == 3
    with pytest.raises(ValueError, match="n_beta"):
        dataclasses.replace(a, n_beta=-1)
    with pytest.raises(TypeError):
        SearchOptions(bogus=1)


def certified_traj_without_path():
    class T:
        path = None

    return T()


def _zero_risk_for(model, d_in):
    """An EmpiricalRisk whose targets are the model's outputs (so f(θ_0) = 0)."""
    x = jax.random.normal(jax.random.key(15), (3, d_in))
    return EmpiricalRisk(x, model(x))


class _Kinked(AbstractModel):
    """A model that *declares* itself non-smooth (the interface, not its class name)."""

    theta: jax.Array
    frozen: tuple[str, ...] = eqx.field(static=True)
    is_smooth: bool = eqx.field(static=True)

    def __init__(self, theta):
        self.theta = theta
        self.frozen = ()
        self.is_smooth = False

    def __call__(self, x):
        return jnp.maximum(x @ self.theta, 0.0)[:, None]

    def well_posed(self):
        return jnp.asarray(True)

    def switching_functions(self, x):
        return x @ self.theta[:, None]


def test_non_smooth_models_warn():
    """A model with ``is_smooth = False`` violates the C² assumption: a documented
    UserWarning (the f(θ_0) = 0 error afterwards keeps the test from compiling much)."""
    kinked = _Kinked(jnp.array([1.0, 2.0]))
    risk = _zero_risk_for(kinked, 2)
    with pytest.warns(UserWarning, match="C²"):
        with pytest.raises(ValueError):
            ball_criterion(kinked, risk, 1.0, key=jax.random.key(0))
    with pytest.warns(UserWarning, match="is_smooth = False"):
        hessian_norm(kinked, risk, key=jax.random.key(0), iters=2)
    # the library's models warn exactly when they declare themselves non-smooth
    models = [
        DeepMLP((2, 3, 1), "relu", key=jax.random.key(16)),
        ShallowReLU(2, 3, key=jax.random.key(17)),
        DeepMLP((2, 3, 1), "softplus", key=jax.random.key(16)),
    ]
    for model in models:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(ValueError):
                ball_criterion(model, _zero_risk_for(model, 2), 1.0, key=jax.random.key(0))
        warned = any("C²" in str(w.message) for w in caught)
        assert warned == (not is_smooth(model)), type(model).__name__
