"""``integrate``: one trajectory of any dynamics, in one compiled program."""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import ArrayLike, PyTree

from .._checks import (
    check_bool,
    check_model,
    check_risk_callable,
    check_scalar_output,
    check_trainable_dtypes,
    evaluate_abstractly,
    one_of_types,
)
from ..limits import LimitAnalysis
from ..models.base import partition
from ..outcomes import Outcome, SolverVerdict
from ..risks.empirical import EmpiricalRisk
from .analysis import decay_of, limit_of
from .base import AbstractDynamics, State
from .flow import GradientFlow
from .piecewise import PiecewiseGradientFlow
from .piecewise import applies as piecewise_applies
from .problem import Problem, check_horizon, check_save_ts, save_grid
from .trajectory import Trajectory

#: Steps per segment of a multi-phase dynamics in :func:`integrate` (speed only: the
#: stiffness checks run every ``GradientFlow.stiffness_check_steps`` of a member's steps).
SEGMENT_STEPS = 128


def check_problem(model: PyTree, risk, *, what: str = "model") -> tuple[PyTree, PyTree, Any]:
    """Validate a (model, risk) pair at the API boundary.

    **Arguments:**

    - `model`: the model (for messages, `what` names where it came from, e.g.
      ``"init(key)"``).
    - `risk`: ``risk(model) -> L``; evaluated abstractly (``jax.eval_shape``) once.

    **Returns:**

    ``(params, static, dtype)``: the trainable arrays, the rest, and their one dtype.
    """
    check_risk_callable(risk)
    check_model(what, model)
    params, static = partition(model)
    leaves = jtu.tree_leaves(params)
    dtype = check_trainable_dtypes(what, leaves)
    out = evaluate_abstractly("risk(model)", risk, model)
    check_scalar_output("risk(model)", out)
    return params, static, dtype


def default_dynamics(model: PyTree, risk) -> AbstractDynamics:
    """The dynamics ``integrate`` and ``run_ensemble`` use when given ``dynamics=None``.

    ``PiecewiseGradientFlow()`` for an :class:`gflow_jax.EmpiricalRisk` of a
    :class:`gflow_jax.ShallowReLU`, of a ReLU :class:`gflow_jax.DeepMLP` or of an
    :class:`gflow_jax.ImplicitReLU` (the gradient field jumps where a kink crosses a data
    point, and this flow locates the crossings as events and integrates sliding modes),
    ``GradientFlow()`` otherwise. Pass
    ``GradientFlow()`` explicitly for the plain flow of the generalised gradient on such
    risks (``relu'(0) = 0``; same solution off sliding surfaces, many rejected steps at
    the kinks). A quadrature :class:`gflow_jax.PopulationRisk` gets ``GradientFlow()``
    although ``PiecewiseGradientFlow`` can integrate it: its jumps shrink with the node
    weights while its crossings grow with the number of nodes (each one ends a step),
    so the kink-aware flow pays off only for coarse rules (measured, width 16 on
    ``U[0, 1]``: 256 nodes, the same wall time with 5x fewer steps for the slowest
    member; 4 096 nodes, over 600 s against 22 s).

    **Arguments:**

    - `model`: the model (its arrays may be abstract or partitioned out).
    - `risk`: the risk callable.

    **Returns:**

    A fresh, unresolved :class:`AbstractDynamics`.
    """
    if isinstance(risk, EmpiricalRisk) and piecewise_applies(model, risk):
        return PiecewiseGradientFlow()
    return GradientFlow()


def make_problem(
    dynamics: AbstractDynamics | None,
    dtype,
    risk,
    static: PyTree,
    t1,
    n_save: int,
    save_ts: ArrayLike | None,
    save_path: bool,
) -> tuple[AbstractDynamics, Problem]:
    """Validate the options and build the resolved dynamics and the :class:`Problem`.

    **Arguments:**

    - `dynamics`: an :class:`AbstractDynamics`, or ``None`` for
      :func:`default_dynamics` of the model and risk.
    - `dtype`: the floating dtype of the trainable arrays (resolves the defaults; the
      problem's ``t1`` and ``save_ts`` have it).
    - `risk`: ``risk(model) -> L``.
    - `static`: the model without its trainable arrays.
    - `t1`: the time horizon (positive, ``inf`` allowed).
    - `n_save`: number of times of the default log-spaced grid (used when `save_ts` is
      ``None``).
    - `save_ts`: explicit save times in ``[0, t1]``, or ``None``.
    - `save_path`: also keep θ at the save times.

    **Returns:**

    ``(dynamics, problem)``: the dynamics resolved for `dtype`, and the :class:`Problem`
    whose save times are the dynamics' :meth:`~AbstractDynamics.save_times` of the
    requested ones.
    """
    t1 = check_horizon(t1)
    if dynamics is None:
        dynamics = default_dynamics(static, risk)
    one_of_types(
        "dynamics",
        dynamics,
        AbstractDynamics,
        "a gflow_jax.GradientFlow(...) or gflow_jax.GradientDescent(...)",
    )
    dynamics = dynamics.resolve(dtype)
    ts = save_grid(t1, n_save) if save_ts is None else check_save_ts(save_ts, t1)
    ts = dynamics.save_times(ts)
    problem = Problem(
        risk=risk,
        static=static,
        t1=jnp.asarray(t1, dtype),
        save_ts=jnp.asarray(ts, dtype),
        save_path=bool(save_path),
    )
    return dynamics, problem


def run_to_end(dynamics: AbstractDynamics, problem: Problem, state: State) -> State:
    """Advance one (unbatched) state until it is finished, respecting its step budget exactly.

    A single-phase dynamics runs in one call (one ``diffeqsolve``: reverse-mode
    differentiable). A multi-phase one runs segments in a ``lax.while_loop``, each in the
    member's current phase (the dynamics counts the budget and the phase checks in the
    member's own state, so the segment length changes nothing but speed).

    **Arguments:**

    - `dynamics`: a resolved :class:`AbstractDynamics`.
    - `problem`: the :class:`Problem` being solved.
    - `state`: the member's :class:`State` (usually from ``dynamics.init``).

    **Returns:**

    The finished :class:`State` (pass it to ``dynamics.finish``).
    """
    budget = dynamics.max_steps
    if not dynamics.changes_phase:
        return dynamics.advance(problem, state, budget, 0)
    seg = min(dynamics.segment_length(SEGMENT_STEPS), budget)
    branches = [
        functools.partial(dynamics.advance, problem, max_steps=seg, phase=p)
        for p in range(dynamics.num_phases)
    ]

    def body(s):
        return jax.lax.switch(s.phase.astype(jnp.int32), [lambda x, b=b: b(x) for b in branches], s)

    return jax.lax.while_loop(lambda s: ~s.finished, body, state)


@eqx.filter_jit
def _integrate(dynamics, problem, params, limits) -> Trajectory:
    state = dynamics.init(problem, params)
    state = run_to_end(dynamics, problem, state)
    traj = dynamics.finish(problem, state, params)
    return eqx.tree_at(
        lambda t: (t.limit, t.decay),
        traj,
        (limit_of(problem, traj, limits), decay_of(traj)),
        is_leaf=lambda x: x is None,
    )


_FAILED = tuple(v for v in SolverVerdict if v.failed)
_SOLVER_FAILED = (
    "integrate: the ODE solver failed ({}) before any stop rule or t1 was reached. {} Or "
    "pass throw=False to get a SOLVER_FAILED outcome with this verdict instead."
)
_REMEDY = {
    SolverVerdict.MAX_SLIDING: "Raise PiecewiseGradientFlow(max_sliding=...).",
}
_DEFAULT_REMEDY = "Loosen the controller's rtol/atol, or use a solver suited to stiff flows."


def _failure_message(verdict: SolverVerdict) -> str:
    return _SOLVER_FAILED.format(verdict.name, _REMEDY.get(verdict, _DEFAULT_REMEDY))


_NEGATIVE_RISK = (
    "integrate: risk(model) became negative (below -Stop.risk_tol). A risk must be "
    "non-negative (e.g. a sum of squares): this one is wrong or unbounded below, so the "
    "flow was stopped as DIVERGED, never CONVERGED. Fix the risk, or pass throw=False to "
    "get the DIVERGED trajectory."
)


def _raise_on_failure(traj: Trajectory, risk_tol) -> Trajectory:
    """``throw=True``: raise if the solver failed or the risk became negative.

    On concrete results (the usual call) the check runs on the host and raises a
    ``RuntimeError``, so the compiled program has no host callback (JAX's persistent
    compilation cache skips programs with callbacks); inside a user's ``jit`` it is an
    ``eqx.error_if`` on the traced results.
    """
    failed = traj.outcome == Outcome.SOLVER_FAILED
    negative = traj.final_risk < -risk_tol
    if isinstance(traj.t_stop, jax.core.Tracer):
        index = jnp.argmax(jnp.asarray([traj.verdict == v for v in _FAILED]))
        messages = tuple(_failure_message(v) for v in _FAILED)
        t_stop = eqx.branched_error_if(traj.t_stop, failed, index, messages)
        t_stop = eqx.error_if(t_stop, negative, _NEGATIVE_RISK)
        return eqx.tree_at(lambda t: t.t_stop, traj, t_stop)
    if bool(failed):
        raise RuntimeError(_failure_message(SolverVerdict(int(traj.verdict))))
    if bool(negative):
        raise RuntimeError(_NEGATIVE_RISK)
    return traj


def integrate(
    model: PyTree,
    risk,
    t1: float,
    dynamics: AbstractDynamics | None = None,
    *,
    n_save: int = 100,
    save_ts: ArrayLike | None = None,
    save_path: bool = False,
    limits: LimitAnalysis | None = LimitAnalysis(),
    throw: bool = True,
) -> Trajectory:
    """Run one trajectory of a dynamics from θ₀ = the model's trainable arrays.

    **Arguments:**

    - `model`: the initial model (its trainable arrays are θ₀).
    - `risk`: ``risk(model) -> L``, a non-negative float scalar.
    - `t1`: the time horizon; ``math.inf`` runs until a stop rule fires or the step
      budget is spent (flows *to the limit*).
    - `dynamics`: any :class:`gflow_jax.AbstractDynamics` (`GradientFlow`,
      `PiecewiseGradientFlow`, `GradientDescent`); ``None`` picks
      ``PiecewiseGradientFlow()`` for an :class:`gflow_jax.EmpiricalRisk` of a
      `ShallowReLU` or a ReLU `DeepMLP` (kinks as events, sliding modes), and
      ``GradientFlow()`` otherwise.
    - `n_save`: number of save times of the default log-spaced grid
      (``[t1·10⁻⁶, t1]``, or ``[10⁻⁴, 10¹²]`` for ``t1 = inf``), or pass `save_ts`.
    - `save_path`: also keep θ at the save times.
    - `limits`: options of the limit classification run when the trajectory stops
      (:class:`gflow_jax.LimitAnalysis`; ``None`` skips it: ``limit`` is then
      ``UNRESOLVED``/``NOT_ANALYSED``).
    - `throw`: raise if the ODE solver fails or the risk becomes negative (a broken
      risk); with ``False`` the trajectory's outcome is ``SOLVER_FAILED`` (its `verdict`
      says why) or ``DIVERGED`` instead.

    **Returns:**

    A :class:`gflow_jax.Trajectory`. Everything runs in one jitted program (with
    `throw`, its failure check then runs on the host: a ``RuntimeError``).
    """
    params, static, dtype = check_problem(model, risk)
    save_path = check_bool("save_path", save_path)
    throw = check_bool("throw", throw)
    dynamics, problem = make_problem(dynamics, dtype, risk, static, t1, n_save, save_ts, save_path)
    if limits is not None:
        one_of_types("limits", limits, LimitAnalysis, "a gflow_jax.LimitAnalysis or None")
    traj = _integrate(dynamics, problem, params, limits)
    return _raise_on_failure(traj, dynamics.stop.risk_tol) if throw else traj
