"""tail_rate: the slope of log L(t) over the tail, against closed forms."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from gflow_jax import GradientFlow, integrate
from gflow_jax.certificates.rates import tail_rate
from gflow_jax.outcomes import Outcome, Stop
from gflow_jax.risks.empirical import EmpiricalRisk


def test_exact_exponential():
    ts = jnp.linspace(0.0, 10.0, 50)
    rate, r2 = tail_rate(ts, 3.0 * jnp.exp(-0.7 * ts))
    np.testing.assert_allclose(float(rate), 0.7, rtol=1e-12)
    np.testing.assert_allclose(float(r2), 1.0, atol=1e-12)


def test_tail_ignores_plateau_transient_and_nan():
    ts = jnp.linspace(0.0, 20.0, 201)
    # plateau at 1 until t = 5, then exp(-2 (t-5)); NaN after the flow stopped at t = 15
    risk = jnp.where(ts < 5, 1.0, jnp.exp(-2.0 * (ts - 5)))
    risk = jnp.where(ts > 15, jnp.nan, risk)
    rate, r2 = tail_rate(ts, risk, decades=3.0)
    np.testing.assert_allclose(float(rate), 2.0, rtol=1e-12)
    # a two-rate curve: fast transient 10, slow tail 0.5; the tail sees only 0.5
    two = jnp.exp(-10.0 * ts) + 1e-3 * jnp.exp(-0.5 * ts)
    np.testing.assert_allclose(float(tail_rate(ts, two, decades=2.0)[0]), 0.5, rtol=1e-6)
    # no decay at all: rate 0 with a perfect fit
    rate, r2 = tail_rate(ts, jnp.full_like(ts, 0.3))
    assert abs(float(rate)) < 1e-12 and float(r2) >= 1.0 - 1e-12


def test_batched_jit_and_degenerate_cases():
    ts = jnp.linspace(0.0, 5.0, 40)
    rates = jnp.array([0.1, 1.0, 3.0])
    risk = jnp.exp(-rates[:, None] * ts[None, :])
    risk = risk.at[0, 30:].set(jnp.nan)  # a trajectory stopped early
    risk = risk.at[2, :].set(jnp.where(jnp.arange(40) < 3, risk[2], jnp.nan))  # 3 points only
    out, r2 = jax.jit(jax.vmap(tail_rate))(jnp.broadcast_to(ts, risk.shape), risk)
    np.testing.assert_allclose(np.asarray(out[:2]), [0.1, 1.0], rtol=1e-10)
    assert np.isnan(float(out[2])) and np.isnan(float(r2[2]))  # fewer than min_points
    # noise lowers r2 below 1
    noisy = jnp.exp(-ts + 0.3 * jnp.sin(7 * ts))
    assert 0.5 < float(tail_rate(ts, noisy)[1]) < 1.0
    # non-positive risks and all-NaN input are ignored / give NaN, never raise
    assert np.isnan(float(tail_rate(ts, jnp.full_like(ts, jnp.nan))[0]))
    assert np.isnan(float(tail_rate(ts, jnp.zeros_like(ts))[0]))


def test_bad_arguments():
    ts = jnp.linspace(0.0, 1.0, 10)
    with pytest.raises(ValueError, match="decades"):
        tail_rate(ts, ts, decades=0)
    with pytest.raises(ValueError, match="min_points"):
        tail_rate(ts, ts, min_points=1)
    with pytest.raises(ValueError, match="same length"):
        tail_rate(ts, ts[:5])


class _Linear(eqx.Module):
    theta: jax.Array

    def __call__(self, x):
        return x @ self.theta[:, None]


def test_linear_least_squares_flow_rate():
    """L(θ) = (1/N)‖Xθ − y‖², H = ∇²L = 2XᵀX/N: θ(t) − θ* = exp(−Ht)(θ₀ − θ*), so
    L(t) = ½ Σ_k λ_k c_k² exp(−2λ_k t) and the tail rate is 2 λ_min(2XᵀX/N)."""
    n, d = 12, 3
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.normal(size=(n, d)))
    V, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam_h = np.array([0.5, 2.0, 4.0])  # eigenvalues of H = 2 XᵀX / N
    X = U @ np.diag(np.sqrt(lam_h * n / 2)) @ V.T
    theta_star = rng.normal(size=d)
    y = X @ theta_star
    theta0 = np.zeros(d)
    H = 2 * X.T @ X / n
    np.testing.assert_allclose(np.linalg.eigvalsh(H), lam_h, rtol=1e-12)

    ts = np.linspace(0.0, 40.0, 161)
    flow = GradientFlow(
        controller=diffrax.PIDController(rtol=1e-10, atol=1e-14),
        stop=Stop(risk_tol=1e-13, grad_tol=1e-30),
    )
    traj = integrate(
        _Linear(jnp.asarray(theta0)), EmpiricalRisk(X, y), 40.0, flow, save_ts=ts, limits=None
    )
    assert traj.outcome == Outcome.CONVERGED
    # the flow's risk curve against the closed form, where it was saved
    exact = np.array(
        [
            np.mean((X @ (theta_star + scipy.linalg.expm(-H * t) @ (theta0 - theta_star)) - y) ** 2)
            for t in ts
        ]
    )
    risk = np.asarray(traj.risk)
    seen = np.isfinite(risk)
    np.testing.assert_allclose(risk[seen], exact[seen], rtol=1e-5, atol=1e-16)
    rate, r2 = tail_rate(traj.ts, traj.risk)
    np.testing.assert_allclose(float(rate), 2 * lam_h.min(), rtol=1e-4)
    assert float(r2) > 0.999999
    # and on the exact curve itself
    np.testing.assert_allclose(float(tail_rate(ts, exact)[0]), 2 * lam_h.min(), rtol=1e-6)
