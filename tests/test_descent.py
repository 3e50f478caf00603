"""Gradient descent: exact agreement with hand-written iterations (plain and heavy-ball),
O(η) tracking of the gradient flow, the time axis t_k = kη, and the stop rules with
step counts known in closed form."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg as sla
from toys import BlowUp, Quadratic, Scalar, step_grid
from toys import descend as gradient_descent

import gflow_jax as gf
from gflow_jax import Trajectory
from gflow_jax.models.shallow import ShallowReLU
from gflow_jax.outcomes import Outcome, Stop
from gflow_jax.risks.empirical import EmpiricalRisk
from gflow_jax.risks.targets import Affine, sample_data

NEVER = Stop(risk_tol=1e-300, grad_tol=1e-300)


class Linear(eqx.Module):
    theta: jax.Array

    def __call__(self, x):
        return (x @ self.theta)[:, None]


@pytest.fixture(scope="module")
def lsq():
    rng = np.random.default_rng(0)
    X, y, theta0 = rng.normal(size=(8, 3)), rng.normal(size=8), rng.normal(size=3)
    return X, y, theta0, EmpiricalRisk(X, y)


def _grad(X, y, th):
    return 2.0 / X.shape[0] * X.T @ (X @ th - y)


# -- exact iteration, time axis ---------------------------------------------------------------


def test_gd_is_the_explicit_iteration(lsq):
    X, y, theta0, risk = lsq
    lr, steps = 0.05, 300
    traj = gradient_descent(
        Linear(jnp.asarray(theta0)), risk, lr, steps, stop=NEVER, save_path=True
    )
    assert isinstance(traj, Trajectory)
    grid = step_grid(steps, 100)
    assert grid[0] == 0 and grid[-1] == steps and np.all(np.diff(grid) > 0)
    np.testing.assert_allclose(traj.ts, grid * lr, rtol=1e-15)
    assert traj.outcome == Outcome.UNFINISHED
    assert int(traj.num_steps) == steps and int(traj.num_rejected) == 0
    assert float(traj.t_stop) == pytest.approx(steps * lr, rel=1e-15)
    # hand-written θ_{k+1} = θ_k − η ∇L(θ_k)
    th, iterates = theta0.copy(), [theta0.copy()]
    for _ in range(steps):
        th = th - lr * _grad(X, y, th)
        iterates.append(th)
    iterates = np.array(iterates)
    np.testing.assert_allclose(traj.path.theta, iterates[grid], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(traj.model.theta, iterates[-1], rtol=1e-12)
    risks = np.mean((iterates[grid] @ X.T - y) ** 2, axis=1)
    np.testing.assert_allclose(traj.risk, risks, rtol=1e-12)
    grads = np.linalg.norm([_grad(X, y, t) for t in iterates[grid]], axis=1)
    np.testing.assert_allclose(traj.grad_norm, grads, rtol=1e-11)
    np.testing.assert_allclose(traj.param_norm, np.linalg.norm(iterates[grid], axis=1), rtol=1e-12)
    assert float(traj.initial_risk) == pytest.approx(risks[0], rel=1e-14)
    assert float(traj.final_risk) == pytest.approx(risks[-1], rel=1e-12)


def test_gd_with_momentum_is_heavy_ball(lsq):
    """optax.sgd(η, momentum=β): m_{k+1} = g_k + β m_k, θ_{k+1} = θ_k − η m_{k+1};
    the time axis is still t_k = kη."""
    X, y, theta0, risk = lsq
    lr, beta, steps = 0.02, 0.9, 150
    traj = gradient_descent(
        Linear(jnp.asarray(theta0)),
        risk,
        lr,
        steps,
        stop=NEVER,
        optimizer=optax.sgd(lr, momentum=beta),
        n_save=20,
    )
    th, mom, risks = theta0.copy(), np.zeros(3), [np.mean((X @ theta0 - y) ** 2)]
    for _ in range(steps):
        mom = _grad(X, y, th) + beta * mom
        th = th - lr * mom
        risks.append(np.mean((X @ th - y) ** 2))
    grid = step_grid(steps, 20)
    np.testing.assert_allclose(traj.ts, grid * lr, rtol=1e-15)
    np.testing.assert_allclose(traj.risk, np.array(risks)[grid], rtol=1e-11)
    np.testing.assert_allclose(traj.model.theta, th, rtol=1e-11)
    assert float(traj.t_stop) == pytest.approx(steps * lr, rel=1e-15)


def test_gd_tracks_gradient_flow_to_first_order(lsq):
    """‖θ^GD_{t/η} − θ(t)‖ = O(η): halving η halves the error at t = 1."""
    X, y, theta0, risk = lsq
    theta_star = np.linalg.lstsq(X, y, rcond=None)[0]
    exact = theta_star + sla.expm(-2 / 8 * X.T @ X) @ (theta0 - theta_star)
    errors = []
    for lr, steps in ((0.01, 100), (0.005, 200), (0.0025, 400)):
        traj = gradient_descent(Linear(jnp.asarray(theta0)), risk, lr, steps, stop=NEVER, n_save=2)
        assert float(traj.t_stop) == pytest.approx(1.0, rel=1e-14)
        errors.append(np.linalg.norm(np.asarray(traj.model.theta) - exact))
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    np.testing.assert_allclose(ratios, 2.0, rtol=0.03)
    assert errors[-1] < 1e-2 * np.linalg.norm(exact)


def test_gd_saves_at_iterate_times(lsq):
    """Requested save times are rounded up to iterate times k·η, and the saved values are
    those iterates' (checked against the explicit iteration)."""
    X, y, theta0, risk = lsq
    lr = 0.05
    traj = gf.integrate(
        Linear(jnp.asarray(theta0)),
        risk,
        1.0,
        gf.GradientDescent(lr, stop=NEVER),
        save_ts=[0.0, 0.01, 0.26, 1.0],
        limits=None,
    )
    np.testing.assert_allclose(np.asarray(traj.ts) / lr, [0, 1, 6, 20], atol=1e-9)
    theta, N = np.asarray(theta0, float), X.shape[0]
    risks = []
    for k in range(21):
        if k in (0, 1, 6, 20):
            risks.append(np.mean((X @ theta - y) ** 2))
        theta = theta - lr * 2 / N * X.T @ (X @ theta - y)
    np.testing.assert_allclose(traj.risk, risks, rtol=1e-12)
    assert traj.num_steps == 20 and traj.outcome == Outcome.UNFINISHED


# -- stop rules with exact step counts ----------------------------------------------------------

STEPS = 1000


def test_gd_converged_at_the_exact_step():
    """L_k = (1 − 2η)^{2k} L_0 with L_0 = 1: first k with L_k ≤ 1e-10."""
    lr = 0.1
    traj = gradient_descent(Scalar(jnp.array([0.0])), Quadratic(), lr, STEPS)
    k = math.ceil(math.log(1e-10) / (2 * math.log(1 - 2 * lr)))
    assert traj.outcome == Outcome.CONVERGED
    assert int(traj.num_steps) == k == 52
    assert float(traj.t_stop) == pytest.approx(k * lr, rel=1e-14)
    assert float(traj.final_risk) == pytest.approx((1 - 2 * lr) ** (2 * k), rel=1e-10)
    assert float(traj.model.theta[0]) == pytest.approx(1 - (1 - 2 * lr) ** k, rel=1e-14)
    reached = np.asarray(traj.ts) <= float(traj.t_stop) + 1e-12
    assert np.all(np.isfinite(np.asarray(traj.risk)[reached]))
    assert np.all(np.isnan(np.asarray(traj.risk)[~reached]))


def test_gd_ill_posed_at_the_exact_step():
    """θ_k = 1 − 0.8^k leaves {θ < 1/2} first at k = 4."""
    traj = gradient_descent(Scalar(jnp.array([0.0]), limit=0.5), Quadratic(), 0.1, STEPS)
    assert traj.outcome == Outcome.ILL_POSED
    assert int(traj.num_steps) == math.ceil(math.log(0.5) / math.log(0.8)) == 4
    assert float(traj.model.theta[0]) == pytest.approx(1 - 0.8**4, rel=1e-14)
    m_nan = Scalar(jnp.array([np.nan]), limit=0.5)  # ILL_POSED has priority over DIVERGED
    assert gradient_descent(m_nan, Quadratic(), 0.1, STEPS).outcome == Outcome.ILL_POSED


def test_gd_diverged_at_the_exact_step():
    lr, bound = 1e-3, 10.0
    traj = gradient_descent(Scalar(jnp.array([1.0])), BlowUp(), lr, STEPS, stop=Stop(bound=bound))
    th, k = 1.0, 0
    while abs(th) < bound:
        th, k = th + 4 * lr * th**3, k + 1
    assert traj.outcome == Outcome.DIVERGED
    assert int(traj.num_steps) == k
    assert float(traj.model.theta[0]) == pytest.approx(th, rel=1e-12)
    assert float(traj.t_stop) == pytest.approx(k * lr, rel=1e-14)


def test_gd_nan_initial_parameters_diverge(lsq):
    X, y, theta0, risk = lsq
    bad = Linear(jnp.asarray([np.nan, 1.0, 1.0]))
    traj = gradient_descent(bad, risk, 0.05, 300, stop=NEVER, save_path=True)
    assert traj.outcome == Outcome.DIVERGED and int(traj.num_steps) == 0
    assert float(traj.t_stop) == 0.0 and np.isnan(float(traj.final_risk))


def test_gd_unfinished_when_steps_run_out():
    traj = gradient_descent(Scalar(jnp.array([0.0])), Quadratic(), 1e-4, STEPS)
    assert traj.outcome == Outcome.UNFINISHED and int(traj.num_steps) == STEPS
    assert float(traj.final_risk) == pytest.approx((1 - 2e-4) ** (2 * STEPS), rel=1e-10)
    assert float(traj.t_stop) == pytest.approx(0.1, rel=1e-14)


def test_gd_critical_point_exact_and_approached():
    """Dead width-1 ReLU: only c moves, c_k − ȳ = (1 − 2η)^k (c_0 − ȳ) and
    L_k = Var(y) + (c_k − ȳ)²; the critical-point rule ‖∇L‖² ≤ grad_tol·L fires at the
    step computed by hand."""
    x, y = sample_data(Affine(1.0, 0.5), 21)
    risk = EmpiricalRisk(x, y)
    ybar, var = float(jnp.mean(y)), float(jnp.var(y))

    def model(c):
        m = ShallowReLU(1, 1, key=jax.random.key(0))
        arr = lambda a: jnp.array(a, float)
        return eqx.tree_at(
            lambda m: (m.w, m.b, m.v, m.c), m, (arr([[1.0]]), arr([-2.0]), arr([[0.7]]), arr([c]))
        )

    at = gradient_descent(model(ybar), risk, 0.1, STEPS)
    assert at.outcome == Outcome.CRITICAL_POINT and int(at.num_steps) == 0
    assert float(at.final_risk) == pytest.approx(var, rel=1e-13)
    lr, c0 = 0.1, 3.0
    traj = gradient_descent(model(c0), risk, lr, STEPS)
    grad_tol = Stop().resolve(jnp.float64).grad_tol
    gap, k = c0 - ybar, 0  # the rule: ‖∇L‖² = 4 gap² ≤ grad_tol · (var + gap²)
    while 4 * gap**2 > grad_tol * (var + gap**2):
        gap, k = (1 - 2 * lr) * gap, k + 1
    assert traj.outcome == Outcome.CRITICAL_POINT
    assert abs(int(traj.num_steps) - k) <= 1  # ±1: round-off at the threshold
    final_gap = float(traj.model.c[0]) - ybar
    assert final_gap == pytest.approx((1 - 2 * lr) ** int(traj.num_steps) * (c0 - ybar), rel=1e-6)
    assert float(traj.final_risk) == pytest.approx(var + final_gap**2, rel=1e-12)


# -- float32 ---------------------------------------------------------------------------------------


def test_gd_float32(lsq):
    X, y, theta0, risk = lsq
    r32 = EmpiricalRisk(jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32))
    m32 = Linear(jnp.asarray(theta0, jnp.float32))
    t32 = gradient_descent(m32, r32, 0.05, 300, stop=NEVER.resolve(jnp.float32), n_save=100)
    for leaf in jax.tree_util.tree_leaves(t32):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
    t64 = gradient_descent(Linear(jnp.asarray(theta0)), risk, 0.05, 300, stop=NEVER, save_path=True)
    np.testing.assert_allclose(t32.risk, t64.risk, rtol=1e-5)
    np.testing.assert_allclose(t32.model.theta, t64.model.theta, rtol=1e-5, atol=1e-6)
    assert float(t32.t_stop) == pytest.approx(15.0, rel=1e-7)
