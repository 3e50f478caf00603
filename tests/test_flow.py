"""Gradient flow against independent truth: the closed form of linear least squares, the
energy identity along a ReLU trajectory, the Lyapunov function of the constant-target
problem (Jentzen & Riekert, arXiv 2107.04479), finite differences through the solver, float32."""

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sla
from scipy.integrate import simpson
from toys import flow as gradient_flow

import gflow_jax as gf
from gflow_jax.dynamics.problem import save_grid as time_grid
from gflow_jax.models.shallow import ShallowReLU
from gflow_jax.outcomes import Outcome, Stop
from gflow_jax.risks.empirical import EmpiricalRisk
from gflow_jax.risks.targets import Affine, sample_data

NEVER = Stop(risk_tol=1e-300, grad_tol=1e-300)  # integrate to t1 whatever happens
TIGHT = diffrax.PIDController(rtol=1e-10, atol=1e-12)


class Linear(eqx.Module):
    """θ ↦ Xθ: ``model(x) = x @ theta`` (scalar output)."""

    theta: jax.Array

    def __call__(self, x):
        return (x @ self.theta)[:, None]


def _linear_closed_form(X, y, theta0, ts):
    """θ(t) = θ* + exp(−(2/N) XᵀX t)(θ0 − θ*) for L(θ) = (1/N)‖Xθ − y‖², any rank."""
    N = X.shape[0]
    theta_star = np.linalg.pinv(X) @ y  # satisfies the normal equations in any rank
    A = 2.0 / N * X.T @ X
    return np.stack([theta_star + sla.expm(-A * t) @ (theta0 - theta_star) for t in ts])


# -- linear least squares ------------------------------------------------------------------
# All linear flows below have the same shapes (N = 8 data, p = 5 parameters), stop rules and
# number of save times, so they share one compiled solve.

LS_TS = np.array([0.0, 0.05, 0.3, 1.0, 2.5, 6.0])
LS_STOP = Stop(risk_tol=1e-10, grad_tol=1e-300)  # stop only at zero risk


def _linear_flow(X, y, theta0, t1, save_ts=None):
    """save_ts=None: the default log grid, with as many points as LS_TS."""
    return gradient_flow(
        Linear(jnp.asarray(theta0)),
        EmpiricalRisk(X, y),
        t1,
        save_ts=save_ts,
        n_save=LS_TS.size,
        save_path=True,
        stop=LS_STOP,
    )


@pytest.fixture(scope="module")
def full_rank():
    rng = np.random.default_rng(0)
    X, y, theta0 = rng.normal(size=(8, 5)), rng.normal(size=8), rng.normal(size=5)
    return X, y, theta0, _linear_flow(X, y, theta0, 6.0, LS_TS)


def test_linear_least_squares_closed_form(full_rank):
    X, y, theta0, traj = full_rank
    assert traj.outcome == Outcome.UNFINISHED and float(traj.t_stop) == 6.0  # L* > 0
    exact = _linear_closed_form(X, y, theta0, LS_TS)
    got = np.asarray(traj.path.theta)
    rel = np.linalg.norm(got - exact, axis=1) / np.linalg.norm(exact, axis=1)
    assert rel[0] < 1e-15  # θ(0) = θ0 (up to the interpolant's round-off)
    assert rel.max() < 1e-7, rel
    # the saved diagnostics are those of the saved parameters
    risks = [np.mean((X @ th - y) ** 2) for th in exact]
    np.testing.assert_allclose(traj.risk, risks, rtol=1e-7)
    grads = [np.linalg.norm(2 / 8 * X.T @ (X @ th - y)) for th in exact]
    np.testing.assert_allclose(traj.grad_norm, grads, rtol=1e-6)
    np.testing.assert_allclose(traj.param_norm, np.linalg.norm(exact, axis=1), rtol=1e-7)
    np.testing.assert_array_equal(traj.ts, LS_TS)
    assert float(traj.initial_risk) == pytest.approx(risks[0], rel=1e-14)
    np.testing.assert_allclose(traj.model.theta, exact[-1], rtol=1e-7)


def test_linear_rank_deficient_conserves_null_space_and_converges():
    """rank X = 2 < p = 5 and y in the range of X: the null-space component of θ never
    moves, and the flow converges to the interpolating solution closest to θ0 (outcome
    CONVERGED, NaN at save times after t_stop)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(8, 2)) @ rng.normal(size=(2, 5))
    y, theta0 = X @ rng.normal(size=5), rng.normal(size=5)
    ts = np.array([0.0, 0.1, 0.4, 1.0, 3.0, 500.0])
    traj = _linear_flow(X, y, theta0, 500.0, ts)
    assert traj.outcome == Outcome.CONVERGED
    assert float(traj.final_risk) <= 1e-10 < float(traj.initial_risk)
    t_stop = float(traj.t_stop)
    assert 3.0 < t_stop < 500.0
    reached = ts <= t_stop
    exact = _linear_closed_form(X, y, theta0, ts[reached])
    got = np.asarray(traj.path.theta)[reached]
    assert np.max(np.linalg.norm(got - exact, axis=1) / np.linalg.norm(exact, axis=1)) < 1e-7
    # save times after t_stop were never reached: NaN
    assert np.all(np.isnan(np.asarray(traj.path.theta)[~reached]))
    assert np.all(np.isnan(np.asarray(traj.risk)[~reached]))
    assert np.all(np.isfinite(np.asarray(traj.risk)[reached]))
    # null-space projection conserved; limit = θ0 − X⁺(Xθ0 − y)
    P = np.eye(5) - np.linalg.pinv(X) @ X
    final = np.asarray(traj.model.theta)
    np.testing.assert_allclose(P @ final, P @ theta0, atol=1e-9)
    np.testing.assert_allclose(final, theta0 - np.linalg.pinv(X) @ (X @ theta0 - y), atol=1e-4)


# -- energy identity along a ReLU trajectory --------------------------------------------------

ENERGY_T1 = 2.0
ENERGY_TS = np.linspace(0.0, ENERGY_T1, 801)


@pytest.fixture(scope="module")
def relu_trajectory():
    x, y = sample_data(Affine(1.0, 0.5), 16, key=jax.random.key(3))
    model = ShallowReLU(1, 4, key=jax.random.key(2))
    risk = EmpiricalRisk(x, y)
    traj = gradient_flow(
        model, risk, ENERGY_T1, save_ts=ENERGY_TS, save_path=True, controller=TIGHT, stop=NEVER
    )
    return x, risk, traj


def test_energy_identity_relu(relu_trajectory):
    """L(θ0) − L(θ_t) = ∫_0^t ‖∇L(θ_s)‖² ds (the energy identity of a gradient flow),
    Simpson on a dense grid."""
    x, risk, traj = relu_trajectory
    # activation patterns change along this trajectory (kinks cross data points), so
    # ‖∇L‖² has jumps in s: Simpson is O(h) there, ~5e-7 relative on this grid.
    pre = np.asarray(x)[None, :, 0, None] * np.asarray(traj.path.w)[:, None, :, 0]
    pre = pre + np.asarray(traj.path.b)[:, None, :]
    pattern = pre > 0
    crossings = np.sum(np.any(pattern[1:] != pattern[:-1], axis=(1, 2)))
    assert crossings >= 1
    risk_t, g2 = np.asarray(traj.risk), np.asarray(traj.grad_norm) ** 2
    assert np.all(np.diff(risk_t) <= 1e-15)  # non-increasing
    for k in (200, 400, 800):  # t = 0.5, 1, 2
        lhs = risk_t[0] - risk_t[k]
        rhs = simpson(g2[: k + 1], x=ENERGY_TS[: k + 1])
        assert abs(lhs - rhs) <= 1e-5 * lhs, (k, lhs, rhs)
    # saved risk is the risk of the saved parameters
    for k in (0, 333, 800):
        m = ShallowReLU.from_flat(
            jnp.concatenate(
                [traj.path.w[k].ravel(), traj.path.b[k], traj.path.v[k].ravel(), traj.path.c[k]]
            ),
            1,
            4,
        )
        assert float(risk(m)) == pytest.approx(float(traj.risk[k]), rel=1e-13)


# -- constant target: Lyapunov function along a trajectory --------------------------------------


def test_lyapunov_along_trajectory():
    """V(θ_t) − V(θ_0) = −8 ∫_0^t L(θ_s) ds and L(θ_t) ≤ V(θ_0)/(8t) (the constant-target
    Lyapunov function of Jentzen & Riekert, arXiv 2107.04479).
    (Same shapes and options as the energy-identity flow: one compiled solve.)"""
    xi = -0.4
    x = jax.random.uniform(jax.random.key(1), (16, 1), minval=-1.0, maxval=1.0)
    risk = EmpiricalRisk(x, jnp.full((16,), xi))
    model = ShallowReLU(1, 4, key=jax.random.key(13))
    ts = 4.0 * np.linspace(0.0, 1.0, ENERGY_TS.size) ** 2  # dense early: fast transient
    traj = gradient_flow(model, risk, 4.0, save_ts=ts, save_path=True, controller=TIGHT, stop=NEVER)
    assert float(traj.t_stop) == 4.0
    p = traj.path
    V = (
        np.sum(np.asarray(p.w) ** 2, axis=(1, 2))
        + np.sum(np.asarray(p.b) ** 2, axis=1)
        + np.sum(np.asarray(p.v) ** 2, axis=(1, 2))
        + np.sum(np.asarray(p.c) ** 2, axis=1)
        + (np.asarray(p.c)[:, 0] - 2 * xi) ** 2
    )
    L = np.asarray(traj.risk)
    assert L[-1] < 0.01 * L[0]  # the flow did something
    pre = np.einsum("nd,thd->tnh", np.asarray(x), np.asarray(p.w)) + np.asarray(p.b)[:, None]
    crossings = np.sum(np.any((pre[1:] > 0) != (pre[:-1] > 0), axis=(1, 2)))
    assert crossings >= 10  # t ↦ L(θ_t) has kinks there: Simpson is O(h²) (≈7e-7 here)
    for k in (100, 400, 800):
        lhs = V[k] - V[0]
        rhs = -8 * simpson(L[: k + 1], x=ts[: k + 1])
        assert abs(lhs - rhs) <= 2e-6 * abs(rhs), (k, lhs, rhs)
    assert np.all(L[1:] <= V[0] / (8 * ts[1:]))
    assert np.all(np.diff(V) < 0)  # V strictly decreasing while L > 0


# -- frozen fields -----------------------------------------------------------------------------


class FrozenIntercept(gf.AbstractModel):
    """An affine model whose intercept ``b`` is declared frozen (the one mechanism)."""

    a: jax.Array
    b: jax.Array
    frozen: ClassVar[tuple[str, ...]] = ("b",)
    is_smooth: ClassVar[bool] = True

    def __call__(self, x):
        return x @ self.a[:, None] + self.b

    def well_posed(self):
        return jnp.asarray(True)

    def switching_functions(self, x):
        return jnp.zeros((x.shape[0], 0))


def test_frozen_field_is_not_integrated():
    """Only ``a`` moves; the flow stops near the constrained minimiser a* (CRITICAL_POINT),
    where L(a) = L* + m₂ (a − a*)² and ‖∇L‖ = 2 m₂ |a − a*| exactly (m₂ = mean x²)."""
    x, y = sample_data(Affine(2.0, 1.0), 11)
    model = FrozenIntercept(jnp.array([0.5]), jnp.array([0.3]))
    traj = gradient_flow(model, EmpiricalRisk(x, y), 200.0)
    xs = np.asarray(x)[:, 0]
    m2 = np.mean(xs**2)
    a_star = np.mean(xs * (2 * xs + 0.7)) / m2  # argmin_a mean (a x + 0.3 − 2x − 1)²
    min_risk = np.mean((a_star * xs + 0.3 - 2 * xs - 1) ** 2)
    assert traj.outcome == Outcome.CRITICAL_POINT
    assert float(traj.model.b[0]) == 0.3  # frozen: bit-for-bit unchanged
    gap = float(traj.model.a[0]) - a_star
    L, g = float(traj.final_risk), float(traj.final_grad_norm)
    assert g == pytest.approx(2 * m2 * abs(gap), rel=1e-6)
    assert L == pytest.approx(min_risk + m2 * gap**2, rel=1e-12)
    assert g**2 <= Stop().resolve(jnp.float64).grad_tol * L
    assert abs(gap) < 1e-4


# -- time grid -------------------------------------------------------------------------------------


@pytest.mark.parametrize("t1", [0.3, 5.0, 20.0, 1e4])
def test_time_grid_ends_exactly_at_t1(t1):
    g = np.asarray(time_grid(t1, 50))
    assert g.shape == (50,) and g[0] == 0.0 and g[-1] == t1
    assert np.all(np.diff(g) > 0)
    assert g[1] == pytest.approx(t1 * 1e-6, rel=1e-12)
    np.testing.assert_allclose(np.diff(np.log(g[1:])), np.log(1e6) / 48, rtol=1e-9)
    np.testing.assert_array_equal(time_grid(t1, 2), [0.0, t1])


def test_default_grid_t1_where_log_rounds_up(full_rank):
    """Regression: 10**log10(5) > 5 made diffrax reject the default save grid."""
    X, y, theta0, _ = full_rank
    traj = _linear_flow(X, y, theta0, 5.0)  # default log grid with LS_TS.size points
    assert float(traj.ts[-1]) == 5.0 == float(traj.t_stop)
    assert np.all(np.isfinite(np.asarray(traj.risk)))
    exact = _linear_closed_form(X, y, theta0, np.asarray(traj.ts))
    np.testing.assert_allclose(traj.path.theta, exact, rtol=1e-7)


# -- float32 ---------------------------------------------------------------------------------------


def test_float32_flow(relu_trajectory):
    """A float32 model and data give a float32 Trajectory that follows the float64 one."""
    x, risk, t64 = relu_trajectory
    m32 = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float32), ShallowReLU(1, 4, key=jax.random.key(2))
    )
    r32 = EmpiricalRisk(risk.x.astype(jnp.float32), risk.y.astype(jnp.float32))
    sub = slice(None, None, 40)
    t32 = gradient_flow(m32, r32, ENERGY_T1, save_ts=ENERGY_TS[sub])
    for leaf in jax.tree_util.tree_leaves(t32):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32
    assert t32.ts.shape == (21,) and float(t32.ts[-1]) == ENERGY_T1 == float(t32.t_stop)
    assert t32.outcome == Outcome.UNFINISHED
    # default float32 controller: rtol 1e-5 per step; observed ≈ 4e-4 after kink crossings
    np.testing.assert_allclose(t32.risk, t64.risk[sub], rtol=2e-3)
    flat64 = np.concatenate([np.asarray(getattr(t64.path, n)[-1]).ravel() for n in "wbvc"])
    np.testing.assert_allclose(t32.model.to_flat(), flat64, rtol=2e-3, atol=1e-4)


# -- differentiating through the solver -------------------------------------------------------


@pytest.fixture(scope="module")
def sensitivity():
    """s ↦ L(θ_t) with θ_0 = s·θ̂ (t = 0.5), and its derivative at s = 1 by central finite
    differences of the same compiled reverse-mode program."""
    x, y = sample_data(Affine(1.0, 0.5), 16, key=jax.random.key(3))
    risk = EmpiricalRisk(x, y)
    base = ShallowReLU(1, 4, key=jax.random.key(0))

    def final_risk(s, adjoint=None):
        model = jax.tree_util.tree_map(lambda a: s * a, base)
        return gradient_flow(
            model, risk, 0.5, n_save=2, controller=TIGHT, max_steps=4096, adjoint=adjoint
        ).final_risk

    value_and_grad = jax.jit(jax.value_and_grad(final_risk))
    h = 1e-5
    fd = (value_and_grad(1.0 + h)[0] - value_and_grad(1.0 - h)[0]) / (2 * h)
    assert abs(float(fd)) > 1e-2  # a non-trivial derivative
    return final_risk, value_and_grad, float(fd)


def test_grad_of_final_risk_matches_finite_difference(sensitivity):
    """jax.grad through diffeqsolve (default RecursiveCheckpointAdjoint) equals the FD."""
    _, value_and_grad, fd = sensitivity
    _, grad = value_and_grad(1.0)
    assert abs(float(grad) - fd) <= 1e-7 * abs(fd), (grad, fd)


def test_adjoint_is_passed_through(sensitivity):
    """Forward mode needs ``adjoint=diffrax.ForwardMode()``: it works (and matches the FD)
    only if gradient_flow hands the adjoint to diffeqsolve."""
    final_risk, _, fd = sensitivity
    # the default (checkpointed) adjoint is reverse-mode only
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(final_risk, (1.0,), (1.0,))
    _, tangent = jax.jit(
        lambda s: jax.jvp(lambda u: final_risk(u, diffrax.ForwardMode()), (s,), (1.0,))
    )(1.0)
    assert abs(float(tangent) - fd) <= 1e-7 * abs(fd), (tangent, fd)
