"""An actual gradient flow against what the ball criterion predicted for it.

If ``4 f(θ_0) < r² α`` holds (Chatterjee, arXiv:2203.16462), the flow from ``θ_0``
stays within ``2√(f(θ_0)/α) < r`` of ``θ_0`` and ``f(θ_t) ≤ e^{−α t} f(θ_0)``.
:func:`check_prediction` measures both on a saved trajectory, with the estimate ``α̂``
of a :class:`~gflow_jax.certificates.ball.CriterionReport` in place of ``α``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float

from .._checks import positive_float
from ._common import path_points
from .ball import CriterionReport

__all__ = ["PredictionCheck", "check_prediction"]


class PredictionCheck(eqx.Module):
    """An actual flow against a :class:`~gflow_jax.certificates.ball.CriterionReport`
    (arrays on the trajectory's save grid ``ts``, gradient-flow time).

    - `distance`: ``‖θ_t − θ_0‖`` (parameter units); `radius`; `travel_bound`
      ``2√(f(θ_0)/α̂)``;
    - `risk`: ``f(θ_t)``; `risk_bound`: ``e^{−α̂ t} f(θ_0)``;
    - `pl_ratio`: ``‖∇f(θ_t)‖²/f(θ_t)`` (the instantaneous rate ``−d/dt log f``, 1/time);
    - `max_distance`; `stayed_in_ball` (``max_distance ≤ r``);
      `within_travel_bound` (``max_distance ≤ travel_bound``);
    - `max_excess`: ``max_t log(f(θ_t)/(e^{−α̂ t} f(θ_0)))`` (``≤ 0`` when the predicted
      rate holds); `obeyed_rate`: ``max_excess ≤ log(1 + rtol)``;
    - `min_pl_ratio`: the smallest ratio along the flow (``≥ α`` in ``B``; if it is
      below ``α̂`` the search missed it).

    Save times after the trajectory stopped (NaN) are ignored.
    """

    ts: Float[Array, " T"]
    distance: Float[Array, " T"]
    risk: Float[Array, " T"]
    risk_bound: Float[Array, " T"]
    pl_ratio: Float[Array, " T"]
    radius: Float[Array, ""]
    travel_bound: Float[Array, ""]
    max_distance: Float[Array, ""]
    stayed_in_ball: Bool[Array, ""]
    within_travel_bound: Bool[Array, ""]
    max_excess: Float[Array, ""]
    obeyed_rate: Bool[Array, ""]
    min_pl_ratio: Float[Array, ""]


def check_prediction(report: CriterionReport, trajectory, *, rtol: float = 1e-6) -> PredictionCheck:
    """Track a flow against the report's predictions.

    Compares ``‖θ_t − θ_0‖`` with ``r`` and the travel bound, ``f(θ_t)`` with
    ``e^{−α̂ t} f(θ_0)``, and reports the running PL ratio ``‖∇f‖²/f`` from
    ``trajectory.risk`` and ``trajectory.grad_norm``. ``θ_0`` is ``report.center``.

    **Arguments:**

    - `report`: a single (unbatched) :class:`~gflow_jax.certificates.ball.CriterionReport`.
    - `trajectory`: a single :class:`gflow_jax.Trajectory` of the same model saved
      with its path.
    - `rtol`: relative tolerance on the risk bound, for the ODE solver's error.

    **Returns:**

    A :class:`PredictionCheck`.
    """
    if not isinstance(report, CriterionReport):
        raise TypeError("report must be a CriterionReport from ball_criterion.")
    if jnp.ndim(report.alpha) != 0:
        raise ValueError("pass a single (unbatched) CriterionReport.")
    rtol = positive_float("rtol", rtol)
    center = ravel_pytree(report.center)[0]
    path = path_points(trajectory, report.center)
    if jnp.ndim(trajectory.ts) != 1:
        raise ValueError("pass a single (unbatched) trajectory.")
    ts = jnp.asarray(trajectory.ts, center.dtype)
    distance = jnp.linalg.norm(path - center, axis=1)
    risk = jnp.asarray(trajectory.risk)
    bound = jnp.exp(-report.alpha * ts) * report.initial_risk
    pl = trajectory.grad_norm**2 / risk
    valid = jnp.isfinite(distance) & jnp.isfinite(risk)
    max_distance = jnp.max(jnp.where(valid, distance, -jnp.inf))
    excess = jnp.where(valid & (risk > 0), jnp.log(risk) - jnp.log(bound), -jnp.inf)
    max_excess = jnp.max(excess)
    return PredictionCheck(
        ts=ts,
        distance=distance,
        risk=risk,
        risk_bound=bound,
        pl_ratio=pl,
        radius=report.radius,
        travel_bound=report.travel_bound,
        max_distance=max_distance,
        stayed_in_ball=max_distance <= report.radius,
        within_travel_bound=max_distance <= report.travel_bound,
        max_excess=max_excess,
        obeyed_rate=max_excess <= math.log1p(rtol),
        min_pl_ratio=jnp.min(jnp.where(valid & jnp.isfinite(pl), pl, jnp.inf)),
    )
