"""From a finished trajectory to its limit: refinement, Hessian spectrum, decay law.

Bridges the dynamics (a :class:`Problem` and a :class:`Trajectory`) and the
model-agnostic analysis of :mod:`gflow_jax.limits`, which works on flat vectors.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from ..limits import (
    DecayFit,
    DecayLaw,
    LimitAnalysis,
    LimitReason,
    LimitReport,
    analyse_limit,
    fit_decay,
    mark_unresolved,
    pattern_loss,
    unresolved,
)
from ..models.base import partition
from ..outcomes import Outcome
from ..risks.base import AbstractPiecewiseSmoothRisk
from .problem import Problem
from .trajectory import Trajectory


def recent_path_length(traj: Trajectory, decades: float = 1.0) -> Float[Array, ""]:
    """The flow's path length over its last decade of time, ``∫ ‖∇L(θ_t)‖ dt``.

    Along the flow ``‖dθ/dt‖ = ‖∇L‖``, so this is the distance travelled along the path
    over ``[t_stop·10^{−decades}, t_stop]``, by the trapezoidal rule on the save grid
    (plus the final point at ``t_stop``). It is the scale against which a refined limit
    must be close to ``θ_stop`` to count as *this* flow's limit.

    **Arguments:**

    - `traj`: a finished :class:`Trajectory` (its saved ``ts``, ``grad_norm`` and final
      values).
    - `decades`: the length of the window in decades of time (default 1).

    **Returns:**

    The path length (parameter units), ``0`` when fewer than two saved points lie in the
    window.
    """
    ts = jnp.concatenate([traj.ts, traj.t_stop[None]])
    g = jnp.concatenate([traj.grad_norm, traj.final_grad_norm[None]])
    lo = traj.t_stop * 10.0 ** (-decades)
    keep = (ts >= lo) & (ts <= traj.t_stop) & jnp.isfinite(g)
    order = jnp.argsort(jnp.where(keep, ts, jnp.inf))
    ts, g, keep = ts[order], g[order], keep[order]
    both = keep[1:] & keep[:-1]
    pieces = jnp.where(both, 0.5 * (g[1:] + g[:-1]) * (ts[1:] - ts[:-1]), 0.0)
    return jnp.sum(pieces)


def remaining_path_length(traj: Trajectory, decay: DecayFit) -> Float[Array, ""]:
    """The path length the flow still has to go if its fitted decay law continues.

    Along the flow ``dL/dt = −‖∇L‖²``, so a decay law fixes ``‖∇L(t)‖`` for ``t > t_s``
    (``t_s = t_stop``, ``g_s = ‖∇L(θ_stop)‖``) and with it the remaining path length
    ``∫_{t_s}^∞ ‖∇L‖ dt``, the distance the flow still travels towards its limit:

    - exponential, ``L ∝ e^{−r t}``: ``‖∇L‖² = r L``, so ``‖∇L‖ = g_s e^{−r(t − t_s)/2}``
      and the remaining length is ``2 g_s / r``;
    - power law, ``L ∝ t^{−q}`` with ``q > 1``: ``‖∇L‖ = g_s (t/t_s)^{−(q+1)/2}`` and the
      remaining length is ``2 g_s t_s / (q − 1)`` (infinite for ``q ≤ 1``: no estimate).

    A slow linear tail (``r·t_s ≲ 1``) has moved little over its last decade, so the
    recent path length (:func:`recent_path_length`) understates how far its limit is;
    this extrapolation does not.

    **Arguments:**

    - `traj`: a finished :class:`Trajectory`.
    - `decay`: its :class:`gflow_jax.limits.DecayFit` (:func:`decay_of`).

    **Returns:**

    The predicted remaining path length (parameter units); ``0`` when the law is
    ``UNKNOWN``, a power law has ``q ≤ 1``, or a value is not finite.
    """
    g, t = traj.final_grad_norm, traj.t_stop
    rate = decay.exp_rate
    q = -decay.power_exponent
    exponential = (decay.law == DecayLaw.EXPONENTIAL) & (rate > 0)
    power = (decay.law == DecayLaw.POWER) & (q > 1)
    length = jnp.where(
        exponential,
        2 * g / jnp.where(exponential, rate, 1),
        jnp.where(power, 2 * g * t / jnp.where(power, q - 1, 1), 0),
    )
    return jnp.where(jnp.isfinite(length), length, 0).astype(g.dtype)


def decay_of(traj: Trajectory) -> DecayFit:
    """Exponential and power-law fits to the tail of the saved risk curve.

    **Arguments:**

    - `traj`: a finished :class:`Trajectory`.

    **Returns:**

    :func:`gflow_jax.limits.fit_decay` of its saved ``(ts, risk)`` (the last decade).
    """
    return fit_decay(traj.ts, traj.risk)


def limit_of(problem: Problem, traj: Trajectory, options: LimitAnalysis | None) -> LimitReport:
    """The limit class of one finished trajectory.

    Members that diverged, became ill-posed or whose solver failed have no limit to
    refine (``UNRESOLVED``, ``NOT_ANALYSED``); so do all members when `options` is
    ``None`` or the model has more than ``options.max_params`` parameters.

    **Arguments:**

    - `problem`: the :class:`Problem` the trajectory solved (risk and static model part).
    - `traj`: the finished :class:`Trajectory`.
    - `options`: a :class:`gflow_jax.LimitAnalysis` (resolved here for the parameters'
      dtype), or ``None`` to skip the analysis.

    **Returns:**

    A :class:`gflow_jax.limits.LimitReport` (:func:`gflow_jax.limits.analyse_limit` on
    the flat trainable parameters, with the risk's kink margin when it has one).
    """
    params, _ = partition(traj.model)
    flat, unravel = ravel_pytree(params)
    if options is None or flat.size > options.max_params:
        return unresolved(LimitReason.NOT_ANALYSED, flat.dtype, flat.size)
    options = options.resolve(flat.dtype)

    def loss(theta):
        return problem.risk(problem.model(unravel(theta)))

    kink_margin = None
    if isinstance(problem.risk, AbstractPiecewiseSmoothRisk):

        def kink_margin(theta):
            return problem.risk.kink_margin(problem.model(unravel(theta)))

    pattern = getattr(traj.kinks, "pattern", None)
    if pattern is not None:  # PiecewiseGradientFlow: the Hessian inside the final pattern
        loss, kink_margin = pattern_loss(
            problem.risk,
            lambda theta: problem.model(unravel(theta)),
            pattern,
            traj.kinks.num_sliding,
            options.kink_tol,
        )

    # the flow's distance scale: the path of its last decade of time, or the path its
    # fitted decay law still predicts, whichever is longer
    reference = jnp.maximum(
        recent_path_length(traj), remaining_path_length(traj, decay_of(traj))
    ).astype(flat.dtype)
    report = analyse_limit(loss, flat, reference, options, kink_margin)
    no_limit = (
        (traj.outcome == Outcome.DIVERGED)
        | (traj.outcome == Outcome.ILL_POSED)
        | (traj.outcome == Outcome.SOLVER_FAILED)
    )
    return mark_unresolved(report, LimitReason.NOT_ANALYSED, jnp.asarray(no_limit))
