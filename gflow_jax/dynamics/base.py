"""The one dynamics interface: ``init / advance / finish`` over a :class:`Problem`.

Gradient flow and gradient descent are both :class:`AbstractDynamics`. A dynamics is
a static description (solver, tolerances, stop rules, budget); the evolving solve is a
:class:`State`. :func:`gflow_jax.integrate` runs one state to the end,
:func:`gflow_jax.run_ensemble` runs thousands in vmapped, compacted pools: both only
call ``init``, ``advance`` and ``finish``, so every dynamics gets the same engine.

A dynamics may have several *phases* (gradient flow: an explicit transient solver,
then a stiff-tail solver). ``advance(problem, state, max_steps, phase)`` integrates
only members in that phase; ensembles pool members by phase so that a vmapped pool
never pays for two solvers.
"""

# No `from __future__ import annotations`: Equinox must see the AbstractVar annotations.
import abc

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PyTree

from ..outcomes import Outcome, SolverVerdict, Stop
from .problem import Problem
from .trajectory import Trajectory


class State(eqx.Module):
    """A resumable solve of one member (batched by ``vmap`` in ensembles).

    **Fields:**

    - `t`, `y`: time and trainable parameters θ.
    - `num_steps`, `num_rejected`, `num_tail_steps`: step counters.
    - `saved`: ``(L, ‖∇L‖, ‖θ‖)`` on the save grid, NaN where not reached yet.
    - `path`: θ on the save grid (``None`` unless requested).
    - `phase`: the phase the member is in (``int8``).
    - `finished`: a stop rule fired, the horizon or budget was reached, or the solver
      failed; `verdict`: the solver's :class:`gflow_jax.SolverVerdict`.
    - `t_tail`: time of the switch to the tail phase (``inf`` before it).
    - `inner`: the dynamics' own state (solver/controller/optimizer state).
    """

    t: Float[Array, ""]
    y: PyTree
    num_steps: Int[Array, ""]
    num_rejected: Int[Array, ""]
    num_tail_steps: Int[Array, ""]
    saved: tuple[Array, Array, Array]
    path: PyTree
    phase: Int[Array, ""]
    finished: Bool[Array, ""]
    verdict: Int[Array, ""]
    t_tail: Float[Array, ""]
    inner: PyTree


def initial_state(problem: Problem, params: PyTree, inner: PyTree) -> State:
    """A :class:`State` at ``t = 0`` with nothing saved yet.

    The saved ``(L, ‖∇L‖, ‖θ‖)`` and the path (if ``problem.save_path``) are NaN at every
    save time, the step counters are 0, the phase is 0, the verdict is ``OK`` and
    ``t_tail = inf``.

    **Arguments:**

    - `problem`: the :class:`Problem` (its ``t1`` dtype is the time dtype; its
      ``save_ts`` shape and ``save_path`` size the buffers).
    - `params`: θ₀, the pytree of trainable arrays.
    - `inner`: the dynamics' own initial state (stored as ``State.inner``).

    **Returns:**

    The unfinished :class:`State` at ``t = 0``, ``y = params``.
    """
    dtype = problem.t1.dtype
    nan = jnp.full(problem.save_ts.shape, jnp.nan, dtype)
    path = None
    if problem.save_path:
        path = jtu.tree_map(
            lambda x: jnp.full(problem.save_ts.shape + x.shape, jnp.nan, x.dtype), params
        )
    zero = jnp.zeros((), jnp.int32)
    return State(
        t=jnp.zeros((), dtype),
        y=params,
        num_steps=zero,
        num_rejected=zero,
        num_tail_steps=zero,
        saved=(nan, nan, nan),
        path=path,
        phase=jnp.zeros((), jnp.int8),
        finished=jnp.asarray(False),
        verdict=jnp.asarray(SolverVerdict.OK, jnp.int8),
        t_tail=jnp.asarray(jnp.inf, dtype),
        inner=inner,
    )


def _where_rows(mask, new, old):
    """``where(mask, new, old)`` row by row along the leading (save-time) axis of `old`."""
    return jnp.where(mask.reshape(mask.shape + (1,) * (old.ndim - mask.ndim)), new, old)


def final_outcome(verdict: Int[Array, ""], code: Int[Array, ""]) -> Int[Array, ""]:
    """The outcome of a finished trajectory: the state's stop-rule `code`, except that a
    failed solver `verdict` makes it ``SOLVER_FAILED`` (unless `code` is ``DIVERGED`` or
    ``ILL_POSED``: those explain the failure).

    **Arguments:**

    - `verdict`: the :class:`gflow_jax.SolverVerdict` code (``int8``).
    - `code`: the :class:`gflow_jax.Outcome` code of the final state.

    **Returns:**

    The ``int8`` outcome code.
    """
    failed = jnp.isin(verdict, jnp.asarray([v for v in SolverVerdict if v.failed], jnp.int8))
    explained = (code == Outcome.DIVERGED) | (code == Outcome.ILL_POSED)
    return jnp.where(failed & ~explained, jnp.int8(Outcome.SOLVER_FAILED), code).astype(jnp.int8)


class AbstractDynamics(eqx.Module):
    """Base class of dynamics ``θ ↦ θ(t)`` driven by ``−∇L``.

    Subclasses declare `stop` (the :class:`gflow_jax.Stop` rules), `max_steps` (the
    step budget per trajectory) and `num_phases`, and implement :meth:`resolve`,
    :meth:`init` and :meth:`advance`. :meth:`finish` is shared.
    """

    stop: eqx.AbstractVar[Stop]
    max_steps: eqx.AbstractVar[int]
    num_phases: eqx.AbstractClassVar[int]

    @property
    def changes_phase(self) -> bool:
        """Whether a member may change phase during a solve (then :func:`gflow_jax.integrate`
        runs it in segments, each in the member's current phase). Default:
        ``num_phases > 1``; a dynamics whose later phases are optional overrides it."""
        return self.num_phases > 1

    @abc.abstractmethod
    def resolve(self, dtype) -> "AbstractDynamics":
        """A copy with every dtype-dependent default filled in (stop rules, tolerances).

        **Arguments:**

        - `dtype`: the floating dtype of the trainable arrays.

        **Returns:**

        A new dynamics of the same type, ready for :meth:`init`.
        """

    @abc.abstractmethod
    def save_times(self, save_ts: np.ndarray) -> np.ndarray:
        """The times at which this dynamics can save, given the requested `save_ts`.

        **Arguments:**

        - `save_ts`: the requested increasing save times (time units of the flow).

        **Returns:**

        A NumPy array of the same shape: the save times actually used.
        """

    @abc.abstractmethod
    def init(self, problem: Problem, params: PyTree) -> State:
        """The :class:`State` at ``t = 0`` from θ₀ = `params`.

        **Arguments:**

        - `problem`: the :class:`Problem` to solve.
        - `params`: θ₀, the pytree of trainable arrays.

        **Returns:**

        The initial (unfinished) :class:`State`, with this dynamics' own ``inner`` state.
        """

    @abc.abstractmethod
    def advance(self, problem: Problem, state: State, max_steps: int, phase: int) -> State:
        """Continue a member in `phase` for at most `max_steps` steps (static).

        Resuming from the returned state continues the same solve. A member whose
        phase changes during the call stops there (it continues in the next call, in
        its new phase). Finished members are returned unchanged.

        **Arguments:**

        - `problem`: the :class:`Problem` being solved.
        - `state`: the member's current :class:`State` (batched under ``vmap``).
        - `max_steps`: the most steps taken in this call (static ``int``).
        - `phase`: the phase to integrate (static ``int``, ``0 ≤ phase < num_phases``).

        **Returns:**

        The advanced :class:`State`.
        """

    def segment_length(self, steps: int) -> int:
        """The length of a segment of about `steps` steps that suits this dynamics.

        The ensemble engine advances pools by this many steps (default: `steps`). Only
        efficiency may depend on it, never a member's result.

        **Arguments:**

        - `steps`: the requested number of steps per segment.

        **Returns:**

        The segment length (an ``int``; this default returns `steps`).
        """
        return steps

    def finish(self, problem: Problem, state: State, params0: PyTree) -> Trajectory:
        """Classify the final state and assemble the :class:`Trajectory`.

        The outcome is :meth:`Problem.diagnose`'s code at the final θ, except that a
        failed solver verdict makes it ``SOLVER_FAILED`` (unless that code is
        ``DIVERGED`` or ``ILL_POSED``). Save times after the stop time are NaN; one equal
        to the stop time that was never filled (e.g. a stop rule met at ``t = 0``) gets
        the final state's values.

        **Arguments:**

        - `problem`: the :class:`Problem` that was solved.
        - `state`: the finished :class:`State`.
        - `params0`: θ₀ (for ``initial_risk``).

        **Returns:**

        The :class:`Trajectory` (its ``limit`` and ``decay`` are ``None``: the caller
        fills them).
        """
        report = problem.diagnose(state.y, self.stop)
        outcome = final_outcome(state.verdict, report.code)
        # A stop rule met at t = 0 ends the solve before any step: the save times equal
        # to t_stop then get the (exactly known) final state.
        at_stop = (problem.save_ts == state.t) & jnp.isnan(state.saved[0])
        finals = (report.risk, report.grad_norm, report.param_norm)
        reached = problem.save_ts <= state.t
        risk_ts, grad_ts, norm_ts = (
            jnp.where(reached, jnp.where(at_stop, new, old), jnp.nan)
            for new, old in zip(finals, state.saved, strict=True)
        )
        path = state.path
        if path is not None:
            path = jtu.tree_map(lambda old, new: _where_rows(at_stop, new, old), path, state.y)
        return Trajectory(
            ts=problem.save_ts,
            risk=risk_ts,
            grad_norm=grad_ts,
            param_norm=norm_ts,
            model=problem.model(state.y),
            outcome=outcome.astype(jnp.int8),
            verdict=state.verdict,
            t_stop=state.t,
            t_tail=state.t_tail,
            initial_risk=problem.risk(problem.model(params0)),
            final_risk=report.risk,
            final_grad_norm=report.grad_norm,
            num_steps=state.num_steps,
            num_rejected=state.num_rejected,
            num_tail_steps=state.num_tail_steps,
            path=path,
        )
