"""Linear (exponential) convergence rates read off a risk curve.

A linearly convergent gradient flow has ``L(t) ≈ C exp(−r t)`` in its tail, so
``log L`` is affine in ``t`` with slope ``−r``. :func:`tail_rate` fits that slope by
least squares on the tail of a saved trajectory; it is the measured counterpart of the
predicted rates ``2 λ_min(H)`` (a quadratic risk with Hessian ``H``), ``2 σ_min(Z)²``
(the PL constant of an implicit ReLU network, ``Z`` its equilibrium features) or ``α``
(the local PL constant of Chatterjee's ball criterion, arXiv:2203.16462;
:mod:`gflow_jax.certificates.ball`).
"""

from __future__ import annotations

import functools as ft

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

__all__ = ["tail_rate"]


@ft.partial(jax.jit, static_argnames=("decades", "min_points"))
def tail_rate(
    ts: Float[ArrayLike, " T"],
    risk: Float[ArrayLike, " T"],
    *,
    decades: float = 3.0,
    min_points: int = 4,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Slope of ``log L`` vs ``t`` over the tail of a trajectory: ``(rate, r²)``.

    **Which points.** A save point is *valid* if ``t`` and ``L`` are finite and
    ``L > 0`` (NaN marks times after the flow stopped). Let ``L_end`` be the risk at
    the last valid point. The tail is every valid point with
    ``L ≤ L_end · 10^decades``, i.e. the last ``decades`` decades of risk decay (for a
    monotone risk this is a final time interval). Early transients and plateaus above
    that level are ignored; a curve that never decays by ``10^decades`` is fitted whole.

    **Fit.** Ordinary least squares of ``y = log L`` (natural log) against ``t`` on the
    tail: ``rate = −Σ(t−t̄)(y−ȳ) / Σ(t−t̄)²`` and ``r² = 1 − SS_res/SS_tot`` (``r² = 1``
    for a tail that is constant up to round-off, which has ``rate ≈ 0``). ``rate > 0`` means decay
    ``L ∝ exp(−rate·t)``; units: 1 / (gradient-flow time).

    **Degenerate cases.** Fewer than ``min_points`` tail points, or all of them at one
    time, give ``(nan, nan)``.

    Fixed shapes and no Python control flow on values: jittable and vmappable, e.g.
    ``jax.vmap(tail_rate)(ts_batch, risk_batch)`` over an ensemble.

    **Arguments:**

    - `ts`: ``(T,)`` save times (any order is accepted, NaN entries are ignored).
    - `risk`: ``(T,)`` risk values at `ts`.
    - `decades`: how many decades of decay (above the final risk) form the tail (static).
    - `min_points`: minimum number of tail points for a fit (``>= 2``, static).

    **Returns:**

    ``(rate, r2)``: the decay rate in 1/(gradient-flow time) and the coefficient of
    determination of the fit, both NaN in the degenerate cases.
    """
    if isinstance(decades, bool) or not isinstance(decades, (int, float)) or not decades > 0:
        raise ValueError(f"decades must be a positive number, got {decades!r}.")
    if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 2:
        raise ValueError(f"min_points must be an int >= 2, got {min_points!r}.")
    ts, risk = jnp.asarray(ts), jnp.asarray(risk)
    if ts.ndim != 1 or risk.shape != ts.shape:
        raise ValueError(
            f"ts and risk must be 1-d arrays of the same length (vmap over a batch); got "
            f"shapes {ts.shape} and {risk.shape}."
        )
    dtype = jnp.result_type(ts.dtype, risk.dtype, jnp.float32)
    ts, risk = ts.astype(dtype), risk.astype(dtype)
    valid = jnp.isfinite(ts) & jnp.isfinite(risk) & (risk > 0)
    y = jnp.log(jnp.where(valid, risk, 1.0))
    t = jnp.where(valid, ts, 0.0)
    # the last valid point in time order
    t_key = jnp.where(valid, t, -jnp.inf)
    last = jnp.argmax(t_key)
    y_end = y[last]
    tail = valid & (y <= y_end + decades * jnp.log(10.0))
    w = tail.astype(dtype)
    n = jnp.sum(w)
    safe_n = jnp.maximum(n, 1.0)
    t_bar = jnp.sum(w * t) / safe_n
    y_bar = jnp.sum(w * y) / safe_n
    dt = jnp.where(tail, t - t_bar, 0.0)
    dy = jnp.where(tail, y - y_bar, 0.0)
    s_tt = jnp.sum(dt * dt)
    s_ty = jnp.sum(dt * dy)
    s_yy = jnp.sum(dy * dy)
    ok = (n >= min_points) & (s_tt > 0)
    slope = s_ty / jnp.where(ok, s_tt, 1.0)
    ss_res = jnp.maximum(s_yy - slope * s_ty, 0.0)
    # a tail that is constant up to round-off has a perfect (flat) fit
    flat = s_yy <= n * (16 * jnp.finfo(dtype).eps * (jnp.abs(y_bar) + 1)) ** 2
    r2 = jnp.where(flat, 1.0, 1.0 - ss_res / jnp.where(flat, 1.0, s_yy))
    nan = jnp.asarray(jnp.nan, dtype)
    return jnp.where(ok, -slope, nan), jnp.where(ok, r2, nan)
