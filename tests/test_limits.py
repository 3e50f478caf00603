"""Limits of stopped flows and decay-law fits, each against a closed form or an independent
answer (numpy least squares, analytic spectra, the closed-form flow of ``L = Σθ⁴``)."""

import functools

import diffrax
import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import toys  # noqa: E402

from gflow_jax._defaults import defaults  # noqa: E402
from gflow_jax.dynamics.analysis import remaining_path_length  # noqa: E402
from gflow_jax.limits import (  # noqa: E402
    DecayLaw,
    Limit,
    LimitAnalysis,
    LimitReason,
    analyse_limit,
    decay_law_names,
    fit_decay,
    limit_names,
    mark_unresolved,
    reason_names,
    unresolved,
)

OPTS = LimitAnalysis().resolve(jnp.float64)
OPTS32 = LimitAnalysis().resolve(jnp.float32)


@functools.cache
def _analyser(loss, options, kink_margin, batched):
    run = lambda t, d: analyse_limit(loss, t, d, options, kink_margin)
    return jax.jit(jax.vmap(run) if batched else run)


def _analyse(loss, theta, reference, options=OPTS, kink_margin=None):
    """``analyse_limit`` through a cached ``jit`` (of ``vmap`` for a batch of θ): one
    compilation per problem however often a test calls it."""
    theta = jnp.asarray(theta)
    batched = theta.ndim == 2
    reference = jnp.asarray(reference, theta.dtype)
    if batched:
        reference = jnp.broadcast_to(reference, theta.shape[:1])
    return _analyser(loss, options, kink_margin, batched)(theta, reference)


_fit_decay = jax.jit(fit_decay, static_argnums=2)  # one compilation per shape


def _zero_margin(theta):
    return jnp.zeros((), theta.dtype)


def _abs_x_margin(theta):
    return jnp.abs(theta[0])


def _codes(report):
    return Limit(int(report.limit)), LimitReason(int(report.reason))


def quartic(theta):
    return jnp.sum(theta**4)


def saddle(z):
    """``x² − y² + y⁴ + 1``: a saddle at 0 (Hessian diag(2, −2), L = 1) and minima at
    ``(0, ±1/√2)`` (Hessian diag(2, 4), L = 3/4)."""
    return z[0] ** 2 - z[1] ** 2 + z[1] ** 4 + 1


def double_well(z):
    """``(x² − 1)² + y²``: zeros at ``(±1, 0)``, Hessian diag(8, 2) there."""
    return (z[0] ** 2 - 1) ** 2 + z[1] ** 2


# --------------------------------------------------------------------------------------
# Zero-risk limits
# --------------------------------------------------------------------------------------


def _quartic_flow(theta0, t):
    """The closed-form flow of ``L = Σθ⁴``: ``θ(t) = θ0 / √(1 + 8θ0²t)``."""
    return theta0 / np.sqrt(1 + 8 * theta0**2 * t)


def _quartic_stop(p=5):
    rng = np.random.default_rng(1)
    theta0 = rng.uniform(0.5, 2.0, p) * rng.choice([-1.0, 1.0], p)
    # L(θ(t)) → p / (64 t²): stop where L ≈ 1e-10
    t_stop = np.sqrt(p / 64 / 1e-10)
    theta_stop = _quartic_flow(theta0, t_stop)
    # path length over the last decade: ∫ ‖θ'‖ dt with θ' = −4θ³ (log-spaced trapezoid)
    ts = np.geomspace(t_stop / 10, t_stop, 20001)
    speed = np.linalg.norm(4 * _quartic_flow(theta0, ts[:, None]) ** 3, axis=1)
    return theta_stop, float(np.trapezoid(speed, ts))


def test_quartic_flow_reaches_zero_risk_with_vanishing_hessian():
    theta_stop, reference = _quartic_stop()
    p = theta_stop.size
    assert 0.9e-10 < np.sum(theta_stop**4) < 1.1e-10
    report = _analyse(quartic, theta_stop, reference)
    assert _codes(report) == (Limit.ZERO_RISK, LimitReason.NONE)
    assert float(report.limit_risk) < 1e-20
    # the Hessian 12 diag(θ²) vanishes at the limit θ = 0: every eigenvalue counts as zero
    assert int(report.limit_num_zero) == p
    assert int(report.limit_num_negative) == 0
    assert 0 <= float(report.limit_min_eig) <= float(report.limit_max_eig) < 1e-8
    # each step of the zero search is the damped Newton step θ ↦ θ − 4θ³/(12θ² + ‖4θ³‖)
    # (the Hessian is diagonal, the damping ‖∇L‖): about θ ↦ 2θ/3 once ‖θ‖ is small
    theta_ref = np.asarray(report.limit_params)
    expected = theta_stop.copy()
    for _ in range(int(report.refine_steps)):
        grad = 4 * expected**3
        expected = expected - grad / (12 * expected**2 + np.linalg.norm(grad))
    np.testing.assert_allclose(theta_ref, expected, rtol=1e-8)
    np.testing.assert_allclose(
        float(report.refine_distance), np.linalg.norm(theta_stop) - np.linalg.norm(theta_ref)
    )
    assert float(report.refine_distance) < reference
    # linear convergence (risk × (2/3)⁴ per Newton step): 10 decades in ~15 steps
    assert 10 <= int(report.refine_steps) <= 25


def test_degenerate_zero_set():
    """``L = ½(xy − 1)²`` vanishes on a hyperbola: at a zero the Hessian ``JᵀJ`` with
    ``J = (y, x)`` has eigenvalues ``0`` and ``x² + y²``."""

    def loss(z):
        return 0.5 * (z[0] * z[1] - 1) ** 2

    start = jnp.array([1.0, 1.0 + 1.4e-5])
    assert 0.5e-10 < float(loss(start)) < 1.5e-10
    report = _analyse(loss, start, 1e-4)
    assert _codes(report) == (Limit.ZERO_RISK, LimitReason.NONE)
    assert float(report.limit_risk) < 1e-20
    x, y = np.asarray(report.limit_params)
    np.testing.assert_allclose(float(report.limit_max_eig), x**2 + y**2, rtol=1e-10)
    assert int(report.limit_num_zero) == 1
    # the refined zero is the nearest one: the step is normal to the hyperbola
    assert float(report.refine_distance) < 1.5e-5


def test_overparametrised_relu_zero_risk_has_zero_eigenvalues_of_the_jacobian_null_space():
    """A width-8 ReLU net (25 parameters) on 5 points, fitted exactly by construction
    (teacher = student): the zero-risk Hessian ``JᵀJ/n`` has ``p − rank J`` zero
    eigenvalues, ``rank J`` from numpy's SVD of the residual Jacobian."""
    x = jnp.linspace(-1, 1, 5)
    rng = np.random.default_rng(3)
    teacher = jnp.asarray(rng.standard_normal(25))

    def predict(th):
        w, b, v, c = th[:8], th[8:16], th[16:24], th[24]
        return jax.nn.relu(x[:, None] * w + b) @ v + c

    y = predict(teacher)

    def loss(th):
        return 0.5 * jnp.mean((predict(th) - y) ** 2)

    def margin(th):
        return jnp.min(jnp.abs(x[:, None] * th[:8] + th[8:16]))

    assert float(margin(teacher)) > 1e-3
    start = teacher + 1e-5 * jnp.asarray(rng.standard_normal(25))
    report = _analyse(loss, start, 1e-4, kink_margin=margin)
    assert _codes(report) == (Limit.ZERO_RISK, LimitReason.NONE)
    jac = np.asarray(jax.jacfwd(predict)(report.limit_params))
    rank = np.linalg.matrix_rank(jac)
    assert int(report.limit_num_zero) == 25 - rank >= 20
    assert int(report.limit_num_negative) == 0
    sigma = np.linalg.svd(jac, compute_uv=False)
    np.testing.assert_allclose(float(report.limit_max_eig), sigma[0] ** 2 / 5, rtol=1e-8)
    np.testing.assert_allclose(float(report.limit_kink_margin), float(margin(report.limit_params)))


# --------------------------------------------------------------------------------------
# Positive-risk critical points
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_least_squares_local_min(rank_deficient):
    """``L = ½‖Aθ − y‖²`` with ``y ∉ range(A)``: the limit risk is the least-squares
    residual and the spectrum is that of ``AᵀA`` (one zero if ``A`` is rank deficient)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 3))
    if rank_deficient:
        A = np.concatenate([A, A[:, :1] + A[:, 1:2]], axis=1)  # rank 3 of 4 columns
    y = rng.standard_normal(6)
    solution, *_ = np.linalg.lstsq(A, y, rcond=None)
    residual = 0.5 * np.sum((A @ solution - y) ** 2)
    assert residual > 0.1
    eigs = np.linalg.eigvalsh(A.T @ A)

    def loss(theta):
        return 0.5 * jnp.sum((jnp.asarray(A) @ theta - jnp.asarray(y)) ** 2)

    start = jnp.asarray(rng.standard_normal(A.shape[1]))
    report = _analyse(loss, start, 1.0)
    assert _codes(report) == (Limit.LOCAL_MIN, LimitReason.NONE)
    np.testing.assert_allclose(float(report.limit_risk), residual, rtol=0, atol=1e-12)
    np.testing.assert_allclose(float(report.limit_max_eig), eigs[-1], rtol=1e-12)
    assert int(report.limit_num_negative) == 0
    if rank_deficient:
        assert int(report.limit_num_zero) == 1
        assert abs(float(report.limit_min_eig)) < 1e-12
    else:
        assert int(report.limit_num_zero) == 0
        np.testing.assert_allclose(float(report.limit_min_eig), eigs[0], rtol=1e-12)
        np.testing.assert_allclose(report.limit_params, solution, atol=1e-12)


def test_degenerate_positive_minimum_counts_zero_eigenvalues():
    """``L = 1 + Σθ⁴``: a minimum at a positive risk whose Hessian vanishes."""
    report = _analyse(lambda t: 1 + jnp.sum(t**4), jnp.array([0.01, -0.02]), 1.0)
    assert _codes(report) == (Limit.LOCAL_MIN, LimitReason.NONE)
    assert float(report.limit_risk) == 1.0
    assert int(report.limit_num_zero) == 2


def test_saddle_from_the_saddle_point():
    report = _analyse(saddle, jnp.zeros(2), 0.0)
    assert _codes(report) == (Limit.SADDLE, LimitReason.NONE)
    assert int(report.limit_num_negative) == 1
    assert int(report.limit_num_zero) == 0
    assert float(report.limit_min_eig) == pytest.approx(-2.0, abs=1e-14)
    assert float(report.limit_max_eig) == pytest.approx(2.0, abs=1e-14)
    assert float(report.limit_risk) == 1.0
    assert float(report.refine_distance) == 0.0


def test_near_a_saddle_the_root_is_the_saddle():
    """A flow stalled next to a saddle is refined *onto* the saddle (root-finding), not
    slid down to a minimum (what minimising L would do)."""
    report = _analyse(saddle, jnp.array([1e-4, 1e-4]), 1e-3)
    assert _codes(report) == (Limit.SADDLE, LimitReason.NONE)
    np.testing.assert_allclose(report.limit_params, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(float(report.refine_distance), np.sqrt(2) * 1e-4, rtol=1e-8)


def test_near_a_minimum_of_the_saddle_function():
    report = _analyse(saddle, jnp.array([0.1, 0.6]), 0.1)
    assert _codes(report) == (Limit.LOCAL_MIN, LimitReason.NONE)
    np.testing.assert_allclose(report.limit_params, [0.0, np.sqrt(0.5)], atol=1e-12)
    assert float(report.limit_risk) == pytest.approx(0.75, abs=1e-14)
    assert float(report.limit_min_eig) == pytest.approx(2.0, abs=1e-10)
    assert float(report.limit_max_eig) == pytest.approx(4.0, abs=1e-10)


# --------------------------------------------------------------------------------------
# Unresolved limits
# --------------------------------------------------------------------------------------


def test_too_far_against_the_reference_distance():
    start = jnp.array([5.0, 3.0])  # the nearest zero (1, 0) is at distance 5
    far = _analyse(double_well, start, 1e-6)
    assert _codes(far) == (Limit.UNRESOLVED, LimitReason.TOO_FAR)
    np.testing.assert_allclose(float(far.refine_distance), 5.0, rtol=1e-10)
    # the same refinement is accepted when the flow's recent path is long enough: the
    # default factor 2 accepts a zero within 2 × the reference distance (here 5 ≤ 2 × 3)
    assert LimitAnalysis().distance_factor == 2.0
    just_short = _analyse(double_well, start, 2.4)
    assert _codes(just_short) == (Limit.UNRESOLVED, LimitReason.TOO_FAR)
    near = _analyse(double_well, start, 3.0)
    assert _codes(near) == (Limit.ZERO_RISK, LimitReason.NONE)
    np.testing.assert_allclose(near.limit_params, [1.0, 0.0], atol=1e-10)
    assert (float(near.limit_min_eig), float(near.limit_max_eig)) == pytest.approx((2.0, 8.0))


def test_not_critical_when_the_gradient_lies_in_the_null_space():
    """``L = 10 + x + y²``: no critical point; Newton fixes ``y`` and cannot move ``x``."""
    report = _analyse(lambda z: 10 + z[0] + z[1] ** 2, jnp.array([0.5, 0.3]), 1.0)
    assert _codes(report) == (Limit.UNRESOLVED, LimitReason.NOT_CRITICAL)
    assert float(report.limit_grad_norm) == pytest.approx(1.0)


def test_out_of_steps_is_a_failed_refinement():
    loss = lambda t: 1 + jnp.sum(t**4)  # linear convergence: 2 steps are not enough
    report = _analyse(loss, jnp.array([0.01]), 1.0, LimitAnalysis(max_steps=2).resolve(float))
    assert _codes(report) == (Limit.UNRESOLVED, LimitReason.REFINEMENT_FAILED)
    assert int(report.refine_steps) == 2


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_start_fails_without_nan_classes(bad):
    report = _analyse(double_well, jnp.array([bad, 1.0]), 1.0)
    assert _codes(report) == (Limit.UNRESOLVED, LimitReason.REFINEMENT_FAILED)
    assert int(report.limit_num_negative) == -1 and int(report.limit_num_zero) == -1
    assert np.isnan(float(report.limit_min_eig))


def test_kink_margin_zero_is_a_kink_at_positive_risk_only():
    report = _analyse(saddle, jnp.zeros(2), 0.0, kink_margin=_zero_margin)
    assert _codes(report) == (Limit.UNRESOLVED, LimitReason.KINK)
    assert float(report.limit_kink_margin) == 0.0
    # a zero of the risk needs no curvature: it stays resolved on a kink
    theta_stop, reference = _quartic_stop()
    zero = _analyse(quartic, theta_stop, reference, kink_margin=_zero_margin)
    assert _codes(zero) == (Limit.ZERO_RISK, LimitReason.NONE)


def test_refinement_onto_a_real_kink():
    """``L = 1 + |x| + y²`` has its minimum on the kink ``x = 0`` (margin ``|x|``)."""
    loss = lambda z: 1 + jnp.abs(z[0]) + z[1] ** 2
    report = _analyse(loss, jnp.array([1e-12, 0.3]), 1.0, kink_margin=_abs_x_margin)
    assert _codes(report) == (Limit.UNRESOLVED, LimitReason.KINK)
    assert float(report.limit_risk) == pytest.approx(1.0, abs=1e-11)


def test_too_many_parameters_and_reports_from_outside():
    options = LimitAnalysis(max_params=3).resolve(jnp.float64)
    report = analyse_limit(quartic, jnp.ones(4), 1.0, options)
    assert _codes(report) == (Limit.UNRESOLVED, LimitReason.NOT_ANALYSED)
    assert report.limit_params.shape == (4,)
    blank = unresolved(LimitReason.NOT_ANALYSED, jnp.float32, 4)
    assert blank.limit_risk.dtype == jnp.float32 and blank.limit.dtype == jnp.int8
    assert np.isnan(blank.limit_params).all() and int(blank.limit_num_zero) == -1
    with pytest.raises(ValueError, match="reason"):
        unresolved(LimitReason.NONE, jnp.float64, 4)
    # mark_unresolved changes only the codes, where asked
    batch = _analyse(saddle, jnp.zeros((6, 2)), 0.0)
    where = jnp.array([True, False, True, False, False, False])
    marked = mark_unresolved(batch, LimitReason.NOT_ANALYSED, where)
    assert limit_names(marked.limit)[:3] == ["UNRESOLVED", "SADDLE", "UNRESOLVED"]
    assert reason_names(marked.reason)[:3] == ["NOT_ANALYSED", "NONE", "NOT_ANALYSED"]
    np.testing.assert_array_equal(marked.limit_min_eig, batch.limit_min_eig)


# --------------------------------------------------------------------------------------
# Transformations and dtypes
# --------------------------------------------------------------------------------------


def test_vmap_and_jit_match_one_by_one():
    starts = jnp.array(
        [[0.0, 0.0], [1e-4, -1e-4], [0.1, -0.6], [np.nan, 0.0], [30.0, 30.0], [0.0, 2.0]]
    )
    references = jnp.array([0.0, 1e-3, 0.1, 1.0, 1e-6, 10.0])
    batched = _analyse(saddle, starts, references)  # jit(vmap)
    singles = [_analyse(saddle, t, d) for t, d in zip(starts, references, strict=True)]  # jit
    assert limit_names(batched.limit) == [
        "SADDLE",
        "SADDLE",
        "LOCAL_MIN",
        "UNRESOLVED",
        "UNRESOLVED",
        "LOCAL_MIN",
    ]
    assert reason_names(batched.reason)[3:5] == ["REFINEMENT_FAILED", "TOO_FAR"]
    for i, single in enumerate(singles):
        for name in ("limit", "reason", "limit_num_negative", "limit_num_zero", "refine_steps"):
            assert int(getattr(batched, name)[i]) == int(getattr(single, name)), (i, name)
        for name in ("limit_risk", "limit_min_eig", "limit_max_eig", "refine_distance"):
            np.testing.assert_allclose(
                getattr(batched, name)[i], getattr(single, name), rtol=1e-12, atol=1e-14
            )
        np.testing.assert_allclose(batched.limit_params[i], single.limit_params, atol=1e-14)


def test_float32():
    theta_stop, reference = _quartic_stop(p=4)
    theta32 = jnp.asarray(theta_stop, jnp.float32)
    report = _analyse(quartic, theta32, reference, OPTS32)
    assert _codes(report) == (Limit.ZERO_RISK, LimitReason.NONE)
    assert report.limit_risk.dtype == jnp.float32 and report.limit_params.dtype == jnp.float32
    assert float(report.limit_risk) <= defaults(jnp.float32).zero_risk
    report = _analyse(saddle, jnp.array([1e-3, 1e-3], jnp.float32), 1e-2, OPTS32)
    assert _codes(report) == (Limit.SADDLE, LimitReason.NONE)
    assert float(report.limit_min_eig) == pytest.approx(-2.0, abs=1e-4)


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------


def test_options_defaults_and_validation():
    for dtype in (jnp.float64, jnp.float32):
        resolved = LimitAnalysis().resolve(dtype)
        assert resolved.zero_risk == defaults(dtype).zero_risk
        assert resolved.curvature_rtol == defaults(dtype).curvature_rtol
        assert resolved.kink_tol == pytest.approx(np.sqrt(np.finfo(dtype).eps))
    assert OPTS.zero_risk == 1e-20 and OPTS32.zero_risk == 1e-10
    kept = LimitAnalysis(zero_risk=1e-12, kink_tol=0.0).resolve(jnp.float32)
    assert kept.zero_risk == 1e-12 and kept.kink_tol == 0.0
    bad = [
        dict(zero_risk=-1.0),
        dict(zero_risk=float("nan")),
        dict(curvature_rtol=1.0),
        dict(distance_factor=0.0),
        dict(max_steps=0),
        dict(max_params=0),
        dict(kink_tol=-1e-3),
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            LimitAnalysis(**kwargs)
    with pytest.raises(TypeError):
        LimitAnalysis(max_steps=2.5)
    with pytest.raises(TypeError):
        LimitAnalysis(zero_risk=True)
    with pytest.raises(ValueError, match="resolve"):
        analyse_limit(quartic, jnp.ones(2), 1.0, LimitAnalysis())
    with pytest.raises(ValueError, match="flat"):
        analyse_limit(quartic, jnp.ones((2, 2)), 1.0, OPTS)
    # distance_factor = inf disables the distance test
    report = _analyse(
        double_well, [5.0, 3.0], 1e-9, LimitAnalysis(distance_factor=np.inf).resolve(float)
    )
    assert _codes(report) == (Limit.ZERO_RISK, LimitReason.NONE)
    # ... also with no reference distance at all (a flow stopped at t = 0 at the saddle)
    report = _analyse(saddle, [0.0, 0.0], 0.0, LimitAnalysis(distance_factor=np.inf).resolve(float))
    assert _codes(report) == (Limit.SADDLE, LimitReason.NONE)


# --------------------------------------------------------------------------------------
# Decay laws
# --------------------------------------------------------------------------------------


def test_power_law_tail():
    ts = np.geomspace(1e-2, 1e4, 61)
    fit = _fit_decay(ts, 3.0 / ts**2)
    assert DecayLaw(int(fit.law)) == DecayLaw.POWER
    assert float(fit.power_exponent) == pytest.approx(-2.0, abs=1e-6)
    assert float(fit.power_r2) == pytest.approx(1.0, abs=1e-12)
    assert float(fit.exp_r2) < float(fit.power_r2)
    assert int(fit.num_points) == 11  # one decade of a 10-per-decade grid, both ends


def test_exponential_tail():
    ts = np.linspace(0.0, 60.0, 121)
    fit = _fit_decay(ts, 2.0 * np.exp(-0.3 * ts))
    assert DecayLaw(int(fit.law)) == DecayLaw.EXPONENTIAL
    assert float(fit.exp_rate) == pytest.approx(0.3, rel=1e-10)
    assert float(fit.exp_r2) == pytest.approx(1.0, abs=1e-12)
    assert float(fit.power_r2) < float(fit.exp_r2)


def test_decay_fit_ignores_nan_padding_and_vmaps():
    ts = np.geomspace(1.0, 1e3, 31)
    risk = 5.0 / ts**2
    padded_t = np.concatenate([ts, np.full(9, np.nan)])
    padded_r = np.concatenate([risk, np.full(9, np.nan)])
    # a stopped flow: NaN after the stop on the shared grid (times given, risk NaN)
    grid = np.concatenate([ts, np.geomspace(2e3, 1e5, 9)])
    batch = jax.jit(jax.vmap(fit_decay))(
        jnp.stack([padded_t, grid, np.concatenate([ts[:-9], np.full(18, np.nan)])]),
        jnp.stack([padded_r, padded_r, np.concatenate([risk[:-9], np.full(18, np.nan)])]),
    )
    direct = _fit_decay(ts, risk)
    for i in range(2):
        assert float(batch.power_exponent[i]) == pytest.approx(float(direct.power_exponent))
        assert int(batch.num_points[i]) == int(direct.num_points)
    assert decay_law_names(batch.law) == ["POWER", "POWER", "POWER"]
    # the third curve stopped earlier: its tail is the decade before its own last point
    assert float(batch.power_exponent[2]) == pytest.approx(-2.0, abs=1e-10)


def test_decay_fit_degenerate_tails():
    few = _fit_decay(np.array([1.0, 2.0, np.nan]), np.array([1.0, 0.5, np.nan]))
    assert DecayLaw(int(few.law)) == DecayLaw.UNKNOWN and np.isnan(float(few.exp_rate))
    ts = np.linspace(1.0, 10.0, 20)
    flat = _fit_decay(ts, np.full(20, 0.25))
    assert DecayLaw(int(flat.law)) == DecayLaw.UNKNOWN
    assert float(flat.exp_rate) == pytest.approx(0.0, abs=1e-12)
    noisy = _fit_decay(ts, np.exp(np.random.default_rng(0).standard_normal(20)))
    assert DecayLaw(int(noisy.law)) == DecayLaw.UNKNOWN
    assert float(noisy.exp_r2) < 0.9 and float(noisy.power_r2) < 0.9
    with pytest.raises(ValueError):
        fit_decay(ts, ts, tail_fraction_decades=0.0)


# --------------------------------------------------------------------------------------
# The flow's distance scale: the path its fitted decay law still predicts
# --------------------------------------------------------------------------------------


class _Quartic(eqx.Module):
    """``L = θ⁴``: ``θ(t) = θ0/√(1 + 8θ0²t)``, ``L ~ 1/(64 t²)`` (power law, q = 2)."""

    def __call__(self, model):
        return jnp.sum(model.theta**4)


@pytest.mark.parametrize(
    "risk, theta0, t1",
    [(toys.Quadratic(), 0.2, 6.0), (_Quartic(), 0.8, 1e4)],
    ids=["exponential", "power"],
)
def test_remaining_path_length_is_the_distance_to_the_limit(risk, theta0, t1):
    """For ``(θ − 1)²`` the remaining path ``2‖∇L‖/r`` (``r = 4``) is exactly ``|θ − 1|``;
    for ``θ⁴`` the power-law formula ``2‖∇L‖t/(q − 1)`` (``q = 2``) is ``8θ³t → θ``: both
    are the distance to the flow's limit, here checked against the closed forms."""
    model = toys.Scalar(jnp.array([theta0]))
    traj = toys.flow(model, risk, t1, controller=diffrax.PIDController(rtol=1e-10, atol=1e-12))
    limit = 1.0 if isinstance(risk, toys.Quadratic) else 0.0
    distance = abs(float(traj.model.theta[0]) - limit)
    predicted = float(remaining_path_length(traj, traj.decay))
    np.testing.assert_allclose(predicted, distance, rtol=0.02)
