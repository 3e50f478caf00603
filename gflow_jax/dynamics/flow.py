"""Gradient flow ``dθ/dt = −∇L(θ)`` with Diffrax, and its stiff-tail strategy."""

from __future__ import annotations

from typing import ClassVar, Literal

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._checks import check_controller, positive_float, positive_int
from .._defaults import defaults
from .._numerics import fixed_unit_vector
from ..outcomes import Outcome, SolverVerdict, Stop, solver_verdict
from .base import AbstractDynamics, State, _where_rows, initial_state
from .problem import Problem

TailOption = Literal["auto", "explicit"] | diffrax.AbstractSolver

EXPLICIT, TAIL = 0, 1

#: Steps between stiffness checks of a member (``GradientFlow.stiffness_check_steps``).
CHECK_STEPS = 128
_NO_LIMIT = 2**31 - 1  # the step counter of a controller state that was never limited


class _RecordStep(diffrax.AbstractStepSizeController):
    """Wraps a step-size controller: records its proposed next step, and counts steps.

    Diffrax's ``Solution`` does not expose the controller's next step, which is needed
    to *resume* a solve where it stopped. The state is ``(inner_state, dt, tnext, left)``:
    the proposed step and its end time (resuming at ``t`` needs ``dt0`` with
    ``t + dt0 == tnext`` exactly, see :func:`_step_to`), and the number of steps this
    member may still take in this solve. When ``left`` reaches 0 the controller ends the
    solve with ``max_steps_reached``, exactly as Diffrax's own (static, batch-wide)
    ``max_steps`` would, but *per member*: a member's step budget and its stiffness check
    points are its own, whatever its pool. Nothing else changes.
    """

    inner: diffrax.AbstractStepSizeController

    def wrap(self, direction):
        return type(self)(self.inner.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, state = self.inner.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return tnext, (state, tnext - t0, tnext, jnp.asarray(_NO_LIMIT, jnp.int32))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        keep, tprev, tnext, jump, inner, result = self.inner.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, state[0]
        )
        left = state[3] - 1
        result = diffrax.RESULTS.where(
            (left <= 0) & (result == diffrax.RESULTS.successful),
            diffrax.RESULTS.max_steps_reached,
            result,
        )
        return keep, tprev, tnext, jump, (inner, tnext - tprev, tnext, left), result


class _RecordAdaptiveStep(diffrax.AbstractAdaptiveStepSizeController):
    """:class:`_RecordStep` for adaptive controllers (implicit solvers read its tolerances)."""

    inner: diffrax.AbstractAdaptiveStepSizeController

    @property
    def rtol(self):
        return self.inner.rtol

    @property
    def atol(self):
        return self.inner.atol

    @property
    def norm(self):
        return self.inner.norm

    def __check_init__(self):
        pass

    wrap = _RecordStep.wrap
    init = _RecordStep.init
    adapt_step_size = _RecordStep.adapt_step_size


def _recording(controller):
    if isinstance(controller, diffrax.AbstractAdaptiveStepSizeController):
        return _RecordAdaptiveStep(controller)
    return _RecordStep(controller)


def _step_to(t: Float[Array, ""], tnext: Float[Array, ""]) -> Float[Array, ""]:
    """A first step ``dt0`` with ``t + dt0 == tnext`` in floating point.

    Diffrax starts a resumed solve at ``t + dt0``; ``dt0 = tnext − t`` may round so that
    ``t + dt0`` misses ``tnext`` by an ulp, and on a ReLU risk an ulp can change every
    later step. So a member's steps would depend on where its segments end, i.e. on its
    pool's size. Nudging ``dt0`` by ulps makes the resumed solve the uninterrupted one.
    """
    dt = tnext - t
    for _ in range(4):  # the rounding error of tnext − t is at most an ulp of tnext
        s = t + dt
        dt = jnp.where(
            s < tnext,
            jnp.nextafter(dt, jnp.inf),
            jnp.where(s > tnext, jnp.nextafter(dt, -jnp.inf), dt),
        )
    return jnp.where(jnp.isfinite(tnext), dt, tnext - t)


def _solver_init(solver: diffrax.AbstractSolver, term, t0, t1, y0) -> PyTree:
    """``solver.init``, with a first-same-as-last (FSAL) Runge–Kutta state made per member.

    A FSAL Runge–Kutta solver (Tsit5, Kvaerno5, …) starts with ``first_step = True`` and
    no stored ``f0``; Diffrax then evaluates the first stage *for the whole vmapped
    batch* while any member is at its first step (an ``unvmap_any``), and uses the
    evaluated ``f(t0, y0)`` instead of the stored last stage of the previous step. For an
    implicit solver the stored stage is the Newton solution, which differs from
    ``f(y1)`` at the nonlinear solver's tolerance: so a batch-mate that never completes
    a step (NaN, overflow) or a member refilled into a running pool changed *every*
    member's steps. Starting each member with ``first_step = False`` and its own
    ``f0 = f(t0, y0)`` (exactly what the first stage would compute) removes that
    coupling: every member's solve is the same whatever its batch-mates do.
    """
    state = solver.init(term, t0, t1, y0, None)
    if (
        isinstance(solver, diffrax.AbstractRungeKutta)
        and isinstance(state, tuple)
        and len(state) == 2
        and jtu.tree_structure(state[1]) == jtu.tree_structure(y0)
    ):
        return (jnp.asarray(False), solver.func(term, t0, y0, None))
    return state


def _is_none(x) -> bool:
    return x is None


def _stops_on_stage(solver: diffrax.AbstractSolver) -> bool:
    """Whether `solver` evaluates ``f(y1) = −∇L(y1)`` as its last stage (explicit FSAL
    Runge–Kutta: Tsit5, Dopri5, Dopri8, …), so that the stop rules cost one forward pass."""
    return (
        isinstance(solver, diffrax.AbstractERK)
        and not isinstance(solver, diffrax.AbstractImplicitSolver)
        and bool(getattr(solver.tableau, "fsal", False))
    )


class _StopOnStage(diffrax.AbstractAdaptiveSolver, diffrax.AbstractWrappedSolver):
    """An explicit FSAL Runge–Kutta solver that checks the stop rules on every step.

    The wrapped solver's last stage is ``f(y1) = −∇L(y1)`` (kept in its state for the
    next step), so ``‖∇L(y1)‖`` is known; only ``L(y1)`` costs a forward pass. The state
    is ``(solver_state, code)`` with the :func:`gflow_jax.outcomes.classify` code at the
    current ``y`` (kept or discarded with the step, like the rest of the state); an
    accepted step whose end point meets a stop rule ends the solve there, as a
    ``diffrax.Event`` would. This replaces an event whose condition evaluated ``∇L``
    once more after every step.
    """

    solver: diffrax.AbstractSolver
    problem: Problem
    stop: Stop
    # set by Diffrax's adjoints for forward-mode autodiff (as on its Runge–Kutta
    # solvers); passed on to the wrapped solver
    scan_kind: None | str = None

    def _inner(self) -> diffrax.AbstractSolver:
        if self.scan_kind is None or getattr(self.solver, "scan_kind", None) is not None:
            return self.solver
        return eqx.tree_at(lambda s: s.scan_kind, self.solver, self.scan_kind, is_leaf=_is_none)

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore
        return self.solver.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        return self.solver.term_compatible_contr_kwargs

    def order(self, terms):
        return self.solver.order(terms)

    def strong_order(self, terms):
        return self.solver.strong_order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        state = _solver_init(self.solver, terms, t0, t1, y0)
        return state, self.problem.stop_code(y0, state[1], self.stop)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y1, y_error, dense_info, state, result = self._inner().step(
            terms, t0, t1, y0, args, solver_state[0], made_jump
        )
        code = self.problem.stop_code(y1, state[1], self.stop)
        # End the solve after an accepted step that meets a rule. Diffrax lets the
        # controller's result override a solver's `event_occurred`, so the stop is
        # signalled as `max_steps_reached` (what the step budget also returns); the code
        # in the state tells the two apart (see `GradientFlow._solve`).
        stopped = (code != Outcome.UNFINISHED) & (result == diffrax.RESULTS.successful)
        result = diffrax.RESULTS.where(stopped, diffrax.RESULTS.max_steps_reached, result)
        return y1, y_error, dense_info, (state, code), result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)


#: Deferred saving keeps θ at every save time inside a solve when ``n_save · size(θ)`` is
#: at most this (else the reports are evaluated inside Diffrax's save loop).
DEFER_SAVE_LIMIT = 2**16
#: Save times evaluated at once (vmapped) by deferred saving.
SAVE_CHUNK = 8


def _reports_at(
    problem: Problem,
    stop: Stop,
    rows: PyTree,
    filled: Bool[Array, " n_save"],
    adjoint: diffrax.AbstractAdjoint,
) -> tuple[Array, Array, Array]:
    """``(L, ‖∇L‖, ‖θ‖)`` at the save times where `filled` (θ there: `rows`), NaN elsewhere.

    The filled save times of one solve are consecutive; they are evaluated in chunks of
    `SAVE_CHUNK` (so a member costs about ``n_filled`` gradients, not one per step).
    """
    n = problem.save_ts.shape[0]
    k = min(SAVE_CHUNK, n)
    start = jnp.argmax(filled)
    count = filled.sum()
    dtype = problem.t1.dtype
    nan = jnp.full((n,), jnp.nan, dtype)

    def body(carry):
        i, out = carry
        j = jnp.minimum(start + i, n - k)
        chunk = jtu.tree_map(lambda x: jax.lax.dynamic_slice_in_dim(x, j, k), rows)
        report = jax.vmap(lambda y: problem.diagnose(y, stop))(chunk)
        idx = j + jnp.arange(k)
        new = (report.risk, report.grad_norm, report.param_norm)
        out = tuple(o.at[idx].set(v.astype(dtype)) for o, v in zip(out, new, strict=True))
        return i + k, out

    init = (jnp.zeros((), count.dtype), (nan, nan, nan))
    # reverse-mode differentiable (checkpointed), or forward-mode (a plain while loop)
    kind = "lax" if isinstance(adjoint, diffrax.ForwardMode) else "checkpointed"
    _, out = eqxi.while_loop(lambda c: c[0] < count, body, init, max_steps=-(-n // k), kind=kind)
    return tuple(jnp.where(filled, o, jnp.nan) for o in out)


class FlowInner(eqx.Module):
    """Gradient-flow part of a :class:`State`: solver/controller states, next step, phase data.

    `dt` is the controller's proposed next step and `t_next` its end time (resuming
    starts exactly there).
    """

    dt: Float[Array, ""]
    t_next: Float[Array, ""]
    explicit_state: PyTree
    tail_state: PyTree
    controller_state: PyTree
    made_jump: Array
    stiff_vector: Float[Array, " p"]


class GradientFlow(AbstractDynamics):
    """The gradient flow ``dθ/dt = −∇L(θ)`` integrated by a Diffrax solver.

    ``θ`` is the pytree of trainable arrays of the model and ``∇L`` is ``jax.grad`` of the
    risk (the generalised gradient for ReLU models). Along an exact solution
    ``L(θ_t) = L(θ_0) − ∫_0^t ‖∇L(θ_s)‖² ds``.

    **Stiff tails.** Near a minimum the flow is nearly linear with Jacobian ``−∇²L``:
    stiff and often degenerate, so an explicit solver's steps are limited by stability,
    not accuracy. With ``tail="auto"`` (default) every member starts with the explicit
    `solver`; every `stiffness_check_steps` of its own steps it estimates
    ``h·λ_max(∇²L)`` (``h`` the controller's next step, ``λ_max`` by warm-started power iteration on
    Hessian-vector products) and, once ``h·λ_max ≥ stiffness_threshold`` (default 2:
    Tsit5 is stable for ``hλ ≲ 3.3`` on the negative real axis), switches for good to
    the tail solver :class:`gflow_jax.ExponentialTail` (an error-controlled exponential
    Rosenbrock method, exact on quadratic risks). ``tail="explicit"`` never switches;
    any ``diffrax.AbstractSolver`` (e.g. ``diffrax.Kvaerno5()``) is used as the tail
    solver instead.

    **Arguments:**

    - `solver`: the transient solver, any ``diffrax.AbstractSolver`` (default ``Tsit5()``).
    - `controller`: step-size controller (default ``PIDController(rtol=1e-7,
      atol=1e-10)`` in float64, ``(1e-5, 1e-7)`` in float32). ``ConstantStepSize`` needs
      `dt0`.
    - `stop`: :class:`gflow_jax.Stop` rules, checked after every accepted step.
    - `tail`: ``"auto"``, ``"explicit"`` or a ``diffrax.AbstractSolver`` (see above).
    - `stiffness_threshold`: the switching threshold on ``h·λ_max``.
    - `adjoint`: passed to ``diffeqsolve``; reverse-mode gradients through
      :func:`gflow_jax.integrate` need ``tail="explicit"`` (one ``diffeqsolve``).
    - `dt0`: initial step (default: chosen by the controller).
    - `max_steps`: solver step budget per trajectory (``UNFINISHED`` when spent), exact
      per member.
    - `stiffness_check_steps`: with a tail solver, the stiffness test runs after every
      `stiffness_check_steps` steps *of the member* (counted in its own state), so the
      switch step never depends on the ensemble's pool sizes or segments.
    """

    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    controller: diffrax.AbstractStepSizeController | None = None
    stop: Stop = Stop()
    tail: TailOption = "auto"
    stiffness_threshold: float = eqx.field(static=True, default=2.0)
    adjoint: diffrax.AbstractAdjoint = diffrax.RecursiveCheckpointAdjoint()
    dt0: float | None = eqx.field(static=True, default=None)
    max_steps: int = eqx.field(static=True, default=2**20)
    stiffness_check_steps: int = eqx.field(static=True, default=CHECK_STEPS)
    num_phases: ClassVar[int] = 2

    def __check_init__(self):
        if not isinstance(self.solver, diffrax.AbstractSolver):
            raise TypeError(
                "solver must be a diffrax.AbstractSolver (e.g. diffrax.Tsit5() or "
                f"diffrax.Kvaerno5()), got {self.solver!r} ({type(self.solver).__name__})."
            )
        if self.controller is not None:
            if not isinstance(self.controller, diffrax.AbstractStepSizeController):
                raise TypeError(
                    "controller must be a diffrax.AbstractStepSizeController, got "
                    f"{type(self.controller).__name__}."
                )
            check_controller(self.controller, dt0=self.dt0)
        adaptive = self.controller is None or isinstance(
            self.controller, diffrax.AbstractAdaptiveStepSizeController
        )
        for role, solver in (("solver", self.solver), ("tail", self.tail)):
            if (
                adaptive
                and isinstance(solver, diffrax.AbstractSolver)
                and not isinstance(solver, diffrax.AbstractAdaptiveSolver)
            ):
                raise ValueError(
                    f"{role}={type(solver).__name__}() has no error estimate, so an adaptive "
                    "step-size controller (the default PIDController) cannot control its "
                    "steps: use an adaptive solver (e.g. diffrax.Tsit5()), or "
                    "controller=diffrax.ConstantStepSize() with dt0=..., or wrap it in "
                    "diffrax.HalfSolver(...)."
                )
        if not isinstance(self.stop, Stop):
            raise TypeError(f"stop must be a gflow_jax.Stop, got {type(self.stop).__name__}.")
        if not (isinstance(self.tail, diffrax.AbstractSolver) or self.tail in ("auto", "explicit")):
            raise ValueError(
                f"tail must be 'auto', 'explicit' or a diffrax.AbstractSolver, got {self.tail!r}."
            )
        if not isinstance(self.adjoint, diffrax.AbstractAdjoint):
            raise TypeError(
                f"adjoint must be a diffrax.AbstractAdjoint (e.g. "
                "diffrax.RecursiveCheckpointAdjoint() or diffrax.DirectAdjoint()), got "
                f"{self.adjoint!r} ({type(self.adjoint).__name__})."
            )
        positive_float("stiffness_threshold", self.stiffness_threshold)
        if self.dt0 is not None:
            positive_float("dt0", self.dt0)
        positive_int("max_steps", self.max_steps)
        positive_int("stiffness_check_steps", self.stiffness_check_steps)

    def resolve(self, dtype) -> GradientFlow:
        """A copy with the defaults of `dtype` filled in.

        An unset `controller` becomes ``PIDController(rtol, atol)`` with the dtype's
        default tolerances; a ``PIDController``'s ``rtol``/``atol`` are stored as arrays
        of `dtype` (values, so new tolerances reuse the compiled programs);
        ``tail="auto"`` becomes :class:`gflow_jax.ExponentialTail`; `stop` is
        :meth:`gflow_jax.Stop.resolve`-d. Everything else is kept.

        **Arguments:**

        - `dtype`: the floating dtype of the trainable arrays.

        **Returns:**

        The resolved :class:`GradientFlow`.
        """
        table = defaults(dtype)
        controller = self.controller
        if controller is None:
            controller = diffrax.PIDController(rtol=table.rtol, atol=table.atol)
        if isinstance(controller, diffrax.PIDController):
            # tolerances as arrays: values, so new tolerances reuse the compiled programs
            controller = eqx.tree_at(
                lambda c: (c.rtol, c.atol),
                controller,
                (jnp.asarray(controller.rtol, dtype), jnp.asarray(controller.atol, dtype)),
            )
        tail = self.tail
        if tail == "auto":
            from .tail import ExponentialTail

            tail = ExponentialTail()
        return GradientFlow(
            solver=self.solver,
            controller=controller,
            stop=self.stop.resolve(dtype),
            tail=tail,
            stiffness_threshold=self.stiffness_threshold,
            adjoint=self.adjoint,
            dt0=self.dt0,
            max_steps=self.max_steps,
            stiffness_check_steps=self.stiffness_check_steps,
        )

    @property
    def changes_phase(self) -> bool:
        """``True`` unless ``tail="explicit"`` (a member then stays in phase 0)."""
        return self.tail_solver is not None

    @property
    def tail_solver(self) -> diffrax.AbstractSolver | None:
        """The resolved tail solver, or ``None`` for ``tail="explicit"``."""
        return None if isinstance(self.tail, str) else self.tail

    def save_times(self, save_ts: np.ndarray) -> np.ndarray:
        """The save times, unchanged (dense output interpolates between steps).

        **Arguments:**

        - `save_ts`: the requested increasing save times.

        **Returns:**

        `save_ts` itself.
        """
        return save_ts

    def _term(self, problem: Problem) -> diffrax.ODETerm:
        return diffrax.ODETerm(problem.field)

    def _stepper(self, problem: Problem, solver: diffrax.AbstractSolver) -> diffrax.AbstractSolver:
        """`solver`, wrapped in :class:`_StopOnStage` when its last stage gives ``∇L(y1)``."""
        if _stops_on_stage(solver):
            return _StopOnStage(solver, problem, self.stop)
        return solver

    def _init_solver(self, problem: Problem, solver, term, t0, t1, y0) -> PyTree:
        """The per-member initial state of `solver` (with the stop code at `y0` if wrapped)."""
        stepper = self._stepper(problem, solver)
        if isinstance(stepper, _StopOnStage):
            return stepper.init(term, t0, t1, y0, None)
        return _solver_init(solver, term, t0, t1, y0)

    def init(self, problem: Problem, params: PyTree) -> State:
        """The :class:`State` at ``t = 0``, in the explicit phase.

        The controller proposes the first step (from `dt0`, or its own choice when
        ``None``), its end clipped to ``t1``; the solver states (transient and, with a tail
        solver, tail) are initialised per member, and the stiffness test's power
        iteration starts from a fixed unit vector.

        **Arguments:**

        - `problem`: the :class:`Problem` to solve (a :meth:`resolve`-d dynamics).
        - `params`: θ₀, the pytree of trainable arrays.

        **Returns:**

        The initial :class:`State`; its ``inner`` is a :class:`FlowInner`.
        """
        term = self._term(problem)
        controller = _recording(self.controller).wrap(1)
        t0 = jnp.zeros_like(problem.t1)
        tnext, cstate = controller.init(
            term,
            t0,
            problem.t1,
            params,
            self.dt0,
            None,
            self.solver.func,
            self.solver.error_order(term),
        )
        tnext = jnp.minimum(tnext, problem.t1)
        tail = self.tail_solver
        flat, _ = ravel_pytree(params)
        inner = FlowInner(
            dt=tnext - t0,
            t_next=tnext,
            explicit_state=self._init_solver(problem, self.solver, term, t0, tnext, params),
            tail_state=(
                None if tail is None else self._init_solver(problem, tail, term, t0, tnext, params)
            ),
            controller_state=cstate,
            made_jump=jnp.asarray(False),
            stiff_vector=fixed_unit_vector(flat.size, flat.dtype),
        )
        return initial_state(problem, params, inner)

    def segment_length(self, steps: int) -> int:
        """`steps` rounded up to a multiple of `stiffness_check_steps` (with a tail phase).

        Members start at step 0 and are checked at their own multiples of
        `stiffness_check_steps`, so segments of such multiples keep a pool's members in
        step with each other between checks (no member idles while others finish a
        check interval). Results never depend on it.

        **Arguments:**

        - `steps`: the requested number of steps per segment.

        **Returns:**

        `steps` unchanged for ``tail="explicit"``, else the smallest multiple of
        `stiffness_check_steps` that is ``≥ steps``.
        """
        from .tail import checked_segment_length

        tail = self.tail_solver is not None
        return checked_segment_length(steps, self.stiffness_check_steps if tail else None)

    def advance(self, problem: Problem, state: State, max_steps: int, phase: int) -> State:
        """Continue the member's ``diffeqsolve`` in `phase` for at most `max_steps` steps.

        The member stops at step ``min(num_steps + max_steps, self.max_steps)``, at a stop
        rule, at ``t1`` or on a solver failure (``finished`` is set unless only this call's
        steps ran out). In the explicit phase with a tail solver the solve is split at the
        member's own multiples of `stiffness_check_steps`; after each piece the stiffness
        index ``h·λ_max`` is estimated and, once it is ``≥ stiffness_threshold``, the member
        switches to the tail phase (``t_tail`` is set) and this call ends for it. Finished
        members are returned unchanged.

        **Arguments:**

        - `problem`: the :class:`Problem` being solved.
        - `state`: the member's :class:`State` (from :meth:`init` or a previous call).
        - `max_steps`: the most solver steps in this call (static ``int``).
        - `phase`: ``0`` (explicit `solver`) or ``1`` (tail solver; static ``int``).

        **Returns:**

        The advanced :class:`State`. Raises ``ValueError`` for ``phase=1`` with
        ``tail="explicit"``.
        """
        tail = self.tail_solver
        if phase == TAIL and tail is None:
            raise ValueError("this GradientFlow has no tail phase (tail='explicit').")
        # the member's own last step in this call: never past its budget
        end = jnp.minimum(state.num_steps + max_steps, self.max_steps)
        if phase == TAIL or tail is None:
            new = self._solve(problem, state, phase, max_steps, end)
            return jtu.tree_map(lambda a, b: jnp.where(state.finished, a, b), state, new)

        # Explicit phase with a tail: sub-solves that end at the member's own multiples
        # of `stiffness_check_steps` (counted in its state, so independent of the pool
        # and of how the call's steps are segmented), each followed by the check.
        k = self.stiffness_check_steps

        def active(s):
            return ~s.finished & (s.phase == phase) & (s.num_steps < end)

        def body(s):
            target = jnp.minimum((s.num_steps // k + 1) * k, end)
            s = self._solve(problem, s, phase, min(k, max_steps), target)
            return self._maybe_switch(problem, s)

        return jax.lax.while_loop(active, body, state)

    def _solve(
        self, problem: Problem, state: State, phase: int, max_steps: int, target: Int[Array, ""]
    ) -> State:
        """One ``diffeqsolve`` from `state` in `phase`, until the member's step `target`."""
        tail = self.tail_solver
        solver = self.solver if phase == EXPLICIT else tail
        solver_state = state.inner.explicit_state if phase == EXPLICIT else state.inner.tail_state
        stop = self.stop
        stepper = self._stepper(problem, solver)
        lean = isinstance(stepper, _StopOnStage)

        def save_report(t, y, args):
            report = problem.diagnose(y, stop)
            return report.risk, report.grad_norm, report.param_norm

        def should_stop(t, y, args, **kwargs):
            return problem.diagnose(y, stop).code != Outcome.UNFINISHED

        # Save times already passed are clamped to t; their values are discarded below.
        seg_ts = jnp.maximum(problem.save_ts, state.t)
        # Deferred saving: the solve keeps θ at the save times (its dense output, no
        # gradient), and (L, ‖∇L‖, ‖θ‖) are evaluated afterwards at the save times this
        # solve reached. Saving inside the solve evaluated ∇L in Diffrax's save loop, which
        # a vmapped pool runs for every member whenever any member passes a save time.
        defer = problem.save_ts.size * ravel_pytree(state.y)[0].size <= DEFER_SAVE_LIMIT
        if defer:
            subs = [diffrax.SubSaveAt(ts=seg_ts), diffrax.SubSaveAt(t1=True)]
        else:
            subs = [diffrax.SubSaveAt(ts=seg_ts, fn=save_report), diffrax.SubSaveAt(t1=True)]
            if problem.save_path:
                subs.append(diffrax.SubSaveAt(ts=seg_ts))
        cstate = state.inner.controller_state
        left = jnp.maximum(target - state.num_steps, 1).astype(jnp.int32)
        cstate = (*cstate[:3], left)
        sol = diffrax.diffeqsolve(
            self._term(problem),
            stepper,
            t0=state.t,
            t1=problem.t1,
            dt0=_step_to(state.t, state.inner.t_next),
            y0=state.y,
            saveat=diffrax.SaveAt(
                subs=subs, solver_state=True, controller_state=True, made_jump=True
            ),
            stepsize_controller=_recording(self.controller),
            # the stop rules: checked by the wrapped solver on its own last stage, or
            # (other solvers) by an event that evaluates the gradient after every step
            event=None if lean else diffrax.Event(should_stop),
            max_steps=max_steps,
            adjoint=self.adjoint,
            solver_state=solver_state,
            controller_state=cstate,
            made_jump=state.inner.made_jump,
            throw=False,
        )
        fresh = (problem.save_ts > state.t) | (
            (problem.save_ts == state.t) & (state.num_steps == 0)
        )
        filled = fresh & (sol.ts[0] < jnp.inf)
        reports = (
            _reports_at(problem, stop, sol.ys[0], filled, self.adjoint) if defer else sol.ys[0]
        )
        saved = tuple(
            jnp.where(filled, new, old) for new, old in zip(reports, state.saved, strict=True)
        )
        path = state.path
        if problem.save_path:
            rows = sol.ys[0] if defer else sol.ys[2]
            path = jtu.tree_map(lambda new, old: _where_rows(filled, new, old), rows, path)
        steps = sol.stats["num_steps"]
        num_steps = state.num_steps + steps
        t = sol.ts[1][0]
        verdict = solver_verdict(sol.result)
        # the step limit (Diffrax's or the member's own) ended this solve before t1
        segment_spent = (verdict == SolverVerdict.MAX_STEPS) & (t < problem.t1)
        budget_spent = num_steps >= self.max_steps
        verdict = jnp.where(
            (verdict == SolverVerdict.MAX_STEPS) & ~(segment_spent & budget_spent),
            jnp.int8(SolverVerdict.OK),
            verdict,
        )
        finished = ~segment_spent | budget_spent
        if lean:
            # a stop rule ended the solve (signalled as max_steps_reached, see _StopOnStage)
            stopped = sol.solver_state[1] != Outcome.UNFINISHED
            finished = finished | stopped
            verdict = jnp.where(stopped, jnp.int8(SolverVerdict.OK), verdict)
        y = jtu.tree_map(lambda x: x[0], sol.ys[1])
        inner = FlowInner(
            dt=sol.controller_state[1],
            t_next=sol.controller_state[2],
            explicit_state=sol.solver_state if phase == EXPLICIT else state.inner.explicit_state,
            tail_state=sol.solver_state if phase == TAIL else state.inner.tail_state,
            controller_state=sol.controller_state,
            made_jump=sol.made_jump,
            stiff_vector=state.inner.stiff_vector,
        )
        new = State(
            t=t,
            y=y,
            num_steps=num_steps,
            num_rejected=state.num_rejected + sol.stats["num_rejected_steps"],
            num_tail_steps=state.num_tail_steps + (steps if phase == TAIL else 0),
            saved=saved,
            path=path,
            phase=state.phase,
            finished=finished,
            verdict=verdict,
            t_tail=state.t_tail,
            inner=inner,
        )
        if not lean:
            return new
        # a stop rule met at the start (t = 0): no step, as an event at t0 would do
        at_start = solver_state[1] != Outcome.UNFINISHED
        old = eqx.tree_at(lambda s: s.finished, state, jnp.asarray(True))
        return jtu.tree_map(lambda a, b: jnp.where(at_start, a, b), old, new)

    def _maybe_switch(self, problem: Problem, state: State) -> State:
        """At the member's own check points (every `stiffness_check_steps` steps), switch a
        live member to the tail solver once ``h·λ_max ≥ stiffness_threshold``."""
        from .tail import stiffness_index

        tail = self.tail_solver
        term = self._term(problem)
        due = ~state.finished & (state.num_steps % self.stiffness_check_steps == 0)
        index, vector = stiffness_index(
            lambda y: problem.field(None, y, None),
            state.y,
            state.inner.dt,
            state.inner.stiff_vector,
        )
        switch = due & (index >= self.stiffness_threshold)
        t, dt = state.t, state.inner.dt
        tnext, cstate = (
            _recording(self.controller)
            .wrap(1)
            .init(term, t, problem.t1, state.y, dt, None, tail.func, tail.error_order(term))
        )
        tnext = jnp.minimum(tnext, problem.t1)
        tail_state = self._init_solver(problem, tail, term, t, tnext, state.y)
        pick = lambda new, old: jtu.tree_map(lambda a, b: jnp.where(switch, a, b), new, old)
        old = state.inner
        inner = FlowInner(
            dt=old.dt,
            t_next=pick(tnext, old.t_next),
            explicit_state=old.explicit_state,
            tail_state=pick(tail_state, old.tail_state),
            controller_state=pick(cstate, old.controller_state),
            made_jump=jnp.where(switch, False, old.made_jump),
            stiff_vector=jnp.where(due, vector, old.stiff_vector),
        )
        return eqx.tree_at(
            lambda s: (s.phase, s.t_tail, s.inner),
            state,
            (
                jnp.where(switch, jnp.int8(TAIL), state.phase),
                jnp.where(switch, t, state.t_tail),
                inner,
            ),
        )
