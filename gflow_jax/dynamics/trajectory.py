"""What one trajectory did: the common result of every dynamics."""

from __future__ import annotations

from typing import Any

import equinox as eqx
from jaxtyping import Array, Float, Int

from ..limits import DecayFit, Limit, LimitReason, LimitReport
from ..outcomes import Outcome, SolverVerdict


class Trajectory(eqx.Module):
    """The result of :func:`gflow_jax.integrate`. Times are gradient-flow time ``t``.

    **Fields:**

    - `ts`: save times; `risk`, `grad_norm`, `param_norm`: ``L``, ``‖∇L‖``, ``‖θ‖``
      there (NaN at save times after `t_stop`, which the trajectory never reached).
    - `model`: the model at `t_stop`.
    - `outcome`: an :class:`gflow_jax.Outcome` code (what the flow did).
    - `verdict`: the solver's :class:`gflow_jax.SolverVerdict` (why a
      ``SOLVER_FAILED`` trajectory failed; ``MAX_STEPS`` for a spent budget).
    - `t_stop`: the time it stopped; `t_tail`: the time it switched to the tail solver
      (``inf`` if it never did).
    - `initial_risk`, `final_risk`, `final_grad_norm`.
    - `num_steps`, `num_rejected`: solver steps taken / rejected (GD: iterations, 0);
      `num_tail_steps`: of them, steps of the tail solver.
    - `path`: θ at `ts` if ``save_path=True``, else ``None``.
    - `limit`: a :class:`gflow_jax.LimitReport`: what the flow converges to (limit class,
      refined risk, Hessian spectrum there; see :mod:`gflow_jax.limits`).
    - `decay`: a :class:`gflow_jax.DecayFit`: exponential and power-law fits to the tail.
    - `kinks`: a :class:`gflow_jax.dynamics.piecewise.KinkStats` (crossings of switching
      surfaces, sliding) for :class:`gflow_jax.PiecewiseGradientFlow`, else ``None``.

    A batch (from ``jax.vmap`` or an ensemble) has the same fields with a leading axis.
    """

    ts: Float[Array, "*batch n_save"]
    risk: Float[Array, "*batch n_save"]
    grad_norm: Float[Array, "*batch n_save"]
    param_norm: Float[Array, "*batch n_save"]
    model: Any
    outcome: Int[Array, "*batch"]
    verdict: Int[Array, "*batch"]
    t_stop: Float[Array, "*batch"]
    t_tail: Float[Array, "*batch"]
    initial_risk: Float[Array, "*batch"]
    final_risk: Float[Array, "*batch"]
    final_grad_norm: Float[Array, "*batch"]
    num_steps: Int[Array, "*batch"]
    num_rejected: Int[Array, "*batch"]
    num_tail_steps: Int[Array, "*batch"]
    path: Any = None
    limit: LimitReport | None = None
    decay: DecayFit | None = None
    kinks: Any = None

    @property
    def outcome_name(self) -> str:
        """The outcome of a single trajectory, e.g. ``'CONVERGED'``."""
        return Outcome(int(self.outcome)).name

    @property
    def verdict_name(self) -> str:
        """The solver verdict of a single trajectory, e.g. ``'OK'`` or ``'DT_MIN'``."""
        return SolverVerdict(int(self.verdict)).name

    @property
    def limit_name(self) -> str:
        """The limit class of a single trajectory, e.g. ``'ZERO_RISK'``."""
        return Limit(int(self.limit.limit)).name

    @property
    def limit_reason_name(self) -> str:
        """Why a single trajectory's limit is unresolved (``'NONE'`` if resolved)."""
        return LimitReason(int(self.limit.reason)).name
