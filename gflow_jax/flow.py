"""Gradient flow ``dθ/dt = −∇L(θ)`` (Diffrax) and gradient descent (Optax).

Both integrate the *trainable* arrays of a model (:func:`gflow_jax.models.base.partition`)
against the same vector field, built once by :func:`risk_and_grad`, stop by the same
rules (:mod:`gflow_jax.outcomes`) and return the same :class:`Trajectory`, so GD with
learning rate ``η`` is the explicit Euler scheme of GF with time ``t_k = k η``.
"""

from __future__ import annotations

import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PyTree

from ._checks import positive_float, positive_int
from .models.base import partition
from .outcomes import Outcome, Stop, classify

# ----------------------------------------------------------------------------------
# The vector field and state diagnostics (shared by GF, GD and ensembles)
# ----------------------------------------------------------------------------------


def tree_norm(tree: PyTree) -> Float[Array, ""]:
    """Euclidean norm of all leaves of a pytree of arrays, as one vector."""
    leaves = jtu.tree_leaves(tree)
    if not leaves:
        return jnp.zeros(())
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


def risk_and_grad(params: PyTree, static: PyTree, risk) -> tuple[Float[Array, ""], PyTree]:
    """``(L(θ), ∇L(θ))`` for the trainable arrays ``params`` (ReLU'(0) = 0 throughout)."""
    return jax.value_and_grad(lambda p: risk(eqx.combine(p, static)))(params)


def model_well_posed(model) -> Array:
    """``model.well_posed()`` if the model defines it (e.g. implicit networks), else True."""
    fn = getattr(model, "well_posed", None)
    return jnp.asarray(True) if fn is None else jnp.asarray(fn())


class StateReport(eqx.Module):
    """Diagnostics of one parameter point: risk, ‖∇L‖, ‖θ‖ and its outcome code."""

    risk: Float[Array, ""]
    grad_norm: Float[Array, ""]
    param_norm: Float[Array, ""]
    code: Int[Array, ""]


def diagnose(params: PyTree, static: PyTree, risk, stop: Stop) -> StateReport:
    """Evaluate ``L``, ``‖∇L‖``, ``‖θ‖`` and :func:`gflow_jax.outcomes.classify` at θ."""
    value, grad = risk_and_grad(params, static, risk)
    grad_norm, param_norm = tree_norm(grad), tree_norm(params)
    code = classify(
        value, grad_norm**2, param_norm, model_well_posed(eqx.combine(params, static)), stop
    )
    return StateReport(value, grad_norm, param_norm, code)


def time_grid(t1: float, n_save: int = 100, decades: float = 6.0) -> Float[Array, " n_save"]:
    """Default save times: ``0`` and ``n_save − 1`` log-spaced points in ``[t1·10^−decades, t1]``.

    Gradient-flow dynamics span many decades of ``t``, so a log grid shows them evenly.
    """
    positive_float("t1", t1)
    n_save = positive_int("n_save", n_save, minimum=2)
    t1 = float(t1)
    grid = jnp.concatenate(
        [jnp.zeros(1), jnp.logspace(math.log10(t1) - decades, math.log10(t1), n_save - 1)]
    )
    # 10**log10(t1) can round above t1 (e.g. t1 = 5), which diffrax rejects: pin it.
    return grid.at[-1].set(t1)


# ----------------------------------------------------------------------------------
# Trajectory
# ----------------------------------------------------------------------------------


class Trajectory(eqx.Module):
    """What a gradient flow (or descent) did. Times are gradient-flow time ``t``.

    - ``ts``: save times; ``risk``, ``grad_norm``, ``param_norm``: ``L``, ``‖∇L‖``, ``‖θ‖``
      there (NaN at save times after ``t_stop``, which the trajectory never reached);
    - ``model``: the model at ``t_stop`` (always saved);
    - ``outcome``: an :class:`gflow_jax.Outcome` code; ``t_stop``: time it stopped;
    - ``initial_risk``, ``final_risk``, ``final_grad_norm``;
    - ``num_steps`` / ``num_rejected``: solver steps taken / rejected (GD: 0 rejected);
    - ``path``: trainable parameters at ``ts`` if ``save_path=True`` else ``None``.

    A batch of trajectories (from ``jax.vmap``) has the same fields with a leading axis.
    """

    ts: Float[Array, "... n_save"]
    risk: Float[Array, "... n_save"]
    grad_norm: Float[Array, "... n_save"]
    param_norm: Float[Array, "... n_save"]
    model: Any
    outcome: Int[Array, "..."]
    t_stop: Float[Array, "..."]
    initial_risk: Float[Array, "..."]
    final_risk: Float[Array, "..."]
    final_grad_norm: Float[Array, "..."]
    num_steps: Int[Array, "..."]
    num_rejected: Int[Array, "..."]
    path: Any = None

    @property
    def outcome_name(self) -> str:
        """Name of the outcome of a single trajectory, e.g. ``'CONVERGED'``."""
        return Outcome(int(self.outcome)).name


def _mask_after(ts, values, t_stop):
    return jnp.where(ts <= t_stop, values, jnp.nan)


# ----------------------------------------------------------------------------------
# Gradient flow
# ----------------------------------------------------------------------------------


def default_controller(dtype) -> diffrax.PIDController:
    """``PIDController(rtol=1e-7, atol=1e-10)`` in float64, ``(1e-5, 1e-7)`` in float32."""
    if jnp.dtype(dtype) == jnp.float64:
        return diffrax.PIDController(rtol=1e-7, atol=1e-10)
    return diffrax.PIDController(rtol=1e-5, atol=1e-7)


def _validate(model, risk) -> tuple[PyTree, PyTree, Any]:
    if not callable(risk):
        raise TypeError(f"risk must be callable as risk(model) -> scalar, got {type(risk)}.")
    params, static = partition(model)
    leaves = jtu.tree_leaves(params)
    if not leaves:
        raise ValueError("the model has no trainable floating-point arrays to integrate.")
    dtypes = {jnp.dtype(x.dtype) for x in leaves}
    if len(dtypes) != 1:
        raise TypeError(
            f"all trainable arrays must share one dtype, got {sorted(map(str, dtypes))}."
        )
    out = jax.eval_shape(risk, model)  # surfaces shape errors with the model's message
    if getattr(out, "shape", None) != ():
        raise ValueError(f"risk(model) must return a scalar, got shape {out.shape}.")
    return params, static, dtypes.pop()


def gradient_flow(
    model: PyTree,
    risk,
    t1: float,
    *,
    solver: diffrax.AbstractSolver | None = None,
    controller: diffrax.AbstractStepSizeController | None = None,
    stop: Stop | None = None,
    n_save: int = 100,
    save_ts: ArrayLike | None = None,
    save_path: bool = False,
    dt0: float | None = None,
    max_steps: int = 1_000_000,
    adjoint: diffrax.AbstractAdjoint | None = None,
    throw: bool = True,
) -> Trajectory:
    """Integrate the gradient flow ``dθ/dt = −∇L(θ)``, ``θ(0) = θ_0``, up to ``t1``.

    ``θ`` is the pytree of trainable arrays of ``model``; ``L = risk(model)``. The
    gradient is ``jax.grad`` of the risk, i.e. the generalised gradient ``G`` of MATH.md
    §1.3 for ReLU models (``relu'(0) = 0``). Along an exact solution
    ``L(θ_t) = L(θ_0) − ∫_0^t ‖∇L(θ_s)‖² ds`` (energy identity).

    **Arguments**

    - ``solver``: any ``diffrax.AbstractSolver`` (default ``Tsit5()``).
    - ``controller``: step-size controller (default :func:`default_controller`:
      ``PIDController(rtol=1e-7, atol=1e-10)`` in float64). With
      ``diffrax.ConstantStepSize()`` pass ``dt0``.
    - ``stop``: :class:`gflow_jax.Stop` rules, checked after every accepted step with
      a ``diffrax.Event``; the trajectory ends at the first step that meets one.
    - ``n_save``: number of log-spaced save times (:func:`time_grid`), or pass explicit
      increasing ``save_ts`` in ``[0, t1]``. ``save_path=True`` also keeps ``θ`` there.
    - ``max_steps``: solver step budget; exhausting it gives ``UNFINISHED``.
    - ``adjoint``: passed to ``diffeqsolve`` (gradients of the result with respect to
      ``θ_0`` or risk parameters work through ``jax.grad``).
    - ``throw``: raise if the *solver* fails (e.g. step size underflow). Stops by the
      rules and ``max_steps`` are outcomes, never errors.

    Returns a :class:`Trajectory`. Everything runs in one jitted ``diffeqsolve``.
    """
    params, static, dtype = _validate(model, risk)
    config, save_ts = flow_config(
        dtype,
        t1,
        solver=solver,
        controller=controller,
        stop=stop,
        n_save=n_save,
        save_ts=save_ts,
        save_path=save_path,
        dt0=dt0,
        max_steps=max_steps,
        adjoint=adjoint,
    )
    return _gradient_flow(
        params, static, risk, jnp.asarray(t1, dtype), save_ts, config, throw=bool(throw)
    )


class FlowConfig(eqx.Module):
    """Resolved options of a gradient flow (all static: changing one recompiles)."""

    solver: diffrax.AbstractSolver
    controller: diffrax.AbstractStepSizeController
    stop: Stop
    adjoint: diffrax.AbstractAdjoint
    dt0: float | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    save_path: bool = eqx.field(static=True)


def flow_config(
    dtype,
    t1,
    *,
    solver=None,
    controller=None,
    stop=None,
    n_save=100,
    save_ts=None,
    save_path=False,
    dt0=None,
    max_steps=1_000_000,
    adjoint=None,
) -> tuple[FlowConfig, Float[Array, " n_save"]]:
    """Validate the options of :func:`gradient_flow` and fill in the defaults.

    Returns the :class:`FlowConfig` and the save times (in ``dtype``).
    """
    t1 = positive_float("t1", t1, hint="Pass the final time of the flow, e.g. t1=1e4.")
    max_steps = positive_int("max_steps", max_steps)
    if save_ts is None:
        save_ts = time_grid(t1, n_save)
    else:
        save_ts = np.asarray(save_ts, float)
        if save_ts.ndim != 1 or save_ts.size < 1:
            raise ValueError("save_ts must be a non-empty 1-d array of times.")
        if np.any(np.diff(save_ts) < 0) or save_ts[0] < 0 or save_ts[-1] > t1:
            raise ValueError("save_ts must be non-decreasing and lie in [0, t1].")
    if dt0 is not None:
        dt0 = positive_float("dt0", dt0)
    if solver is not None and not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(f"solver must be a diffrax.AbstractSolver, got {type(solver).__name__}.")
    if controller is not None and not isinstance(controller, diffrax.AbstractStepSizeController):
        raise TypeError("controller must be a diffrax.AbstractStepSizeController.")
    if stop is not None and not isinstance(stop, Stop):
        raise TypeError(f"stop must be a gflow_jax.Stop, got {type(stop).__name__}.")
    config = FlowConfig(
        solver=diffrax.Tsit5() if solver is None else solver,
        controller=default_controller(dtype) if controller is None else controller,
        stop=(Stop() if stop is None else stop).resolve(dtype),
        adjoint=diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint,
        dt0=dt0,
        max_steps=max_steps,
        save_path=bool(save_path),
    )
    return config, jnp.asarray(save_ts, dtype)


class _RecordNextStep(diffrax.AbstractAdaptiveStepSizeController):
    """Wraps a step-size controller and records its proposed next step ``dt`` in its state.

    Diffrax's ``Solution`` does not expose the controller's next step size, which is
    needed to *resume* a solve exactly where it stopped (ensembles integrate in
    segments). The wrapper changes nothing else.
    """

    inner: diffrax.AbstractStepSizeController

    @property
    def rtol(self):
        return getattr(self.inner, "rtol", None)

    @property
    def atol(self):
        return getattr(self.inner, "atol", None)

    @property
    def norm(self):
        return getattr(self.inner, "norm", None)

    def __check_init__(self):
        pass

    def wrap(self, direction):
        return _RecordNextStep(self.inner.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, state = self.inner.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return tnext, (state, tnext - t0)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        keep, tprev, tnext, jump, inner, result = self.inner.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, state[0]
        )
        return keep, tprev, tnext, jump, (inner, tnext - tprev), result


class FlowState(eqx.Module):
    """A resumable gradient-flow solve (one member; batched by ``vmap`` in ensembles).

    Holds the time ``t``, parameters ``y``, the solver's and controller's states, the
    proposed next step ``dt``, step counters and the diagnostics saved so far on the
    save grid (NaN where not reached yet). ``finished`` is True once a stop rule fired,
    ``t1`` was reached or the solver failed.
    """

    t: Array
    y: PyTree
    dt: Array
    solver_state: PyTree
    controller_state: PyTree
    made_jump: Array
    num_steps: Array
    num_rejected: Array
    saved: tuple[Array, Array, Array]
    path: PyTree
    finished: Array
    failed: Array


def _field(static, risk):
    def field(t, y, args):
        return jtu.tree_map(jnp.negative, risk_and_grad(y, static, risk)[1])

    return diffrax.ODETerm(field)


def init_flow_state(params, static, risk, t1, save_ts, config: FlowConfig) -> FlowState:
    """The state of a flow at ``t = 0`` (controller and solver initialised as Diffrax does)."""
    solver, controller, dt0 = config.solver, config.controller, config.dt0
    term = _field(static, risk)
    controller = _RecordNextStep(controller).wrap(1)
    t0 = jnp.zeros_like(t1)
    tnext, cstate = controller.init(
        term, t0, t1, params, dt0, None, solver.func, solver.error_order(term)
    )
    tnext = jnp.minimum(tnext, t1)
    sstate = solver.init(term, t0, tnext, params, None)
    nan = jnp.full(save_ts.shape, jnp.nan, t1.dtype)
    path = (
        jtu.tree_map(lambda x: jnp.full(save_ts.shape + x.shape, jnp.nan, x.dtype), params)
        if config.save_path
        else None
    )
    return FlowState(
        t=t0,
        y=params,
        dt=tnext - t0,
        solver_state=sstate,
        controller_state=cstate,
        made_jump=jnp.asarray(False),
        num_steps=jnp.zeros((), jnp.int32),
        num_rejected=jnp.zeros((), jnp.int32),
        saved=(nan, nan, nan),
        path=path,
        finished=jnp.asarray(False),
        failed=jnp.asarray(False),
    )


def advance_flow(
    state: FlowState, static, risk, t1, save_ts, config: FlowConfig, max_steps: int
) -> FlowState:
    """Continue a flow for at most ``max_steps`` solver steps (one ``diffeqsolve``).

    Resuming from the returned state continues the same solve (same steps up to
    round-off), which is how ensembles integrate in segments.
    """
    stop = config.stop

    def save_report(t, y, args):
        rep = diagnose(y, static, risk, stop)
        return rep.risk, rep.grad_norm, rep.param_norm

    def should_stop(t, y, args, **kwargs):
        return diagnose(y, static, risk, stop).code != Outcome.UNFINISHED

    # Save times already passed are clamped to t and their values discarded below.
    seg_ts = jnp.maximum(save_ts, state.t)
    subs = [diffrax.SubSaveAt(ts=seg_ts, fn=save_report), diffrax.SubSaveAt(t1=True)]
    save_path = state.path is not None
    if save_path:
        subs.append(diffrax.SubSaveAt(ts=seg_ts))
    sol = diffrax.diffeqsolve(
        _field(static, risk),
        config.solver,
        t0=state.t,
        t1=t1,
        dt0=state.dt,
        y0=state.y,
        saveat=diffrax.SaveAt(subs=subs, solver_state=True, controller_state=True, made_jump=True),
        stepsize_controller=_RecordNextStep(config.controller),
        event=diffrax.Event(should_stop),
        max_steps=max_steps,
        adjoint=config.adjoint,
        solver_state=state.solver_state,
        controller_state=state.controller_state,
        made_jump=state.made_jump,
        throw=False,
    )
    fresh = (save_ts > state.t) | ((save_ts == state.t) & (state.num_steps == 0))
    filled = fresh & (sol.ts[0] < jnp.inf)
    saved = tuple(
        jnp.where(filled, new, old) for new, old in zip(sol.ys[0], state.saved, strict=True)
    )
    path = state.path
    if save_path:
        path = jtu.tree_map(
            lambda new, old: jnp.where(filled.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
            sol.ys[2],
            state.path,
        )
    result = sol.result
    ran_out = result == diffrax.RESULTS.max_steps_reached
    ok = (result == diffrax.RESULTS.successful) | (result == diffrax.RESULTS.event_occurred)
    return FlowState(
        t=sol.ts[1][0],
        y=jtu.tree_map(lambda x: x[0], sol.ys[1]),
        dt=sol.controller_state[1],
        solver_state=sol.solver_state,
        controller_state=sol.controller_state,
        made_jump=sol.made_jump,
        num_steps=state.num_steps + sol.stats["num_steps"],
        num_rejected=state.num_rejected + sol.stats["num_rejected_steps"],
        saved=saved,
        path=path,
        finished=~ran_out,
        failed=~(ok | ran_out),
    )


def finish_flow(
    state: FlowState, params0, static, risk, save_ts, stop, *, throw: bool
) -> Trajectory:
    """Classify the final state and assemble the :class:`Trajectory`."""
    report = diagnose(state.y, static, risk, stop)
    t_stop = state.t
    if throw:
        t_stop = eqx.error_if(
            t_stop,
            state.failed & (report.code != Outcome.DIVERGED),
            "gradient_flow: the ODE solver failed before any stop rule or t1 was reached "
            "(e.g. the step size underflowed). Loosen the controller's rtol/atol, use an "
            "implicit solver for stiff flows, or pass throw=False to get an UNFINISHED "
            "outcome instead.",
        )
    # A stop rule met at t = 0 ends the solve before any step, so Diffrax saves nothing;
    # the save times equal to t_stop then get the (exactly known) final state.
    at_stop = (save_ts == state.t) & jnp.isnan(state.saved[0])
    finals = (report.risk, report.grad_norm, report.param_norm)
    risk_ts, grad_ts, norm_ts = (
        jnp.where(at_stop, new, old) for new, old in zip(finals, state.saved, strict=True)
    )
    path = state.path
    if path is not None:
        path = jtu.tree_map(
            lambda old, new: jnp.where(at_stop.reshape((-1,) + (1,) * new.ndim), new, old),
            path,
            state.y,
        )
    return Trajectory(
        ts=save_ts,
        risk=_mask_after(save_ts, risk_ts, t_stop),
        grad_norm=_mask_after(save_ts, grad_ts, t_stop),
        param_norm=_mask_after(save_ts, norm_ts, t_stop),
        model=eqx.combine(state.y, static),
        outcome=report.code,
        t_stop=t_stop,
        initial_risk=risk(eqx.combine(params0, static)),
        final_risk=report.risk,
        final_grad_norm=report.grad_norm,
        num_steps=state.num_steps,
        num_rejected=state.num_rejected,
        path=path,
    )


@eqx.filter_jit
def _gradient_flow(params, static, risk, t1, save_ts, config: FlowConfig, *, throw) -> Trajectory:
    state = init_flow_state(params, static, risk, t1, save_ts, config)
    state = advance_flow(state, static, risk, t1, save_ts, config, config.max_steps)
    return finish_flow(state, params, static, risk, save_ts, config.stop, throw=throw)


# ----------------------------------------------------------------------------------
# Gradient descent
# ----------------------------------------------------------------------------------


def step_grid(steps: int, n_save: int = 100) -> np.ndarray:
    """Save steps for GD: ``0`` and up to ``n_save − 1`` log-spaced distinct ``k ≤ steps``."""
    steps = positive_int("steps", steps)
    n_save = positive_int("n_save", n_save, minimum=2)
    grid = np.round(np.logspace(0, math.log10(steps), n_save - 1))
    grid[-1] = steps  # np.logspace(0, x, 1) is [1], not [steps]: always keep the last step
    return np.unique(np.concatenate([[0], grid])).astype(np.int64)


def gradient_descent(
    model: PyTree,
    risk,
    learning_rate: float,
    steps: int,
    *,
    optimizer: optax.GradientTransformation | None = None,
    stop: Stop | None = None,
    n_save: int = 100,
    save_path: bool = False,
) -> Trajectory:
    """Gradient descent ``θ_{k+1} = θ_k − η ∇L(θ_k)`` for at most ``steps`` steps.

    The explicit Euler scheme of :func:`gradient_flow` with step ``η = learning_rate``;
    the returned :class:`Trajectory` uses the time axis ``t_k = k η`` so GD and GF are
    comparable on one plot. ``optimizer`` is any ``optax.GradientTransformation``
    (default ``optax.sgd(learning_rate)``); ``learning_rate`` still defines the time
    unit. The same :class:`gflow_jax.Stop` rules are checked at every iterate; saving
    is on a log-spaced grid of steps (:func:`step_grid`). One jitted ``lax.while_loop``.
    """
    params, static, dtype = _validate(model, risk)
    learning_rate = positive_float("learning_rate", learning_rate)
    steps = positive_int("steps", steps)
    n_save = positive_int("n_save", n_save, minimum=2)
    stop = (Stop() if stop is None else stop).resolve(dtype)
    optimizer = optax.sgd(learning_rate) if optimizer is None else optimizer
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError("optimizer must be an optax.GradientTransformation.")
    return _gradient_descent(
        params,
        static,
        risk,
        jnp.asarray(learning_rate, dtype),
        jnp.asarray(step_grid(steps, n_save)),
        optimizer=optimizer,
        steps=steps,
        stop=stop,
        save_path=bool(save_path),
    )


@eqx.filter_jit
def _gradient_descent(
    params, static, risk, learning_rate, grid, *, optimizer, steps, stop, save_path
) -> Trajectory:
    n = grid.shape[0]
    dtype = jtu.tree_leaves(params)[0].dtype
    nan = jnp.full((n,), jnp.nan, dtype)
    path0 = (
        jtu.tree_map(lambda x: jnp.full((n,) + x.shape, jnp.nan, x.dtype), params)
        if save_path
        else None
    )

    def body(carry):
        k, p, opt_state, saved, path, ptr, _, _ = carry
        value, grad = risk_and_grad(p, static, risk)
        grad_norm, param_norm = tree_norm(grad), tree_norm(p)
        code = classify(
            value, grad_norm**2, param_norm, model_well_posed(eqx.combine(p, static)), stop
        )
        record = (ptr < n) & (grid[jnp.minimum(ptr, n - 1)] == k)
        idx = jnp.minimum(ptr, n - 1)
        saved = jtu.tree_map(
            lambda buf, val: jnp.where(record, buf.at[idx].set(val), buf),
            saved,
            (value, grad_norm, param_norm),
        )
        if save_path:
            path = jtu.tree_map(
                lambda buf, val: jnp.where(record, buf.at[idx].set(val), buf), path, p
            )
        ptr = ptr + record.astype(ptr.dtype)
        done = (code != Outcome.UNFINISHED) | (k >= steps)
        updates, new_state = optimizer.update(grad, opt_state, p)
        new_p = optax.apply_updates(p, updates)
        keep = lambda old, new: jtu.tree_map(lambda a, b: jnp.where(done, a, b), old, new)
        report = StateReport(value, grad_norm, param_norm, code)
        return (
            jnp.where(done, k, k + 1),
            keep(p, new_p),
            keep(opt_state, new_state),
            saved,
            path,
            ptr,
            done,
            report,
        )

    zero = jnp.zeros((), dtype)
    init_report = StateReport(zero, zero, zero, jnp.zeros((), jnp.int8))
    carry = (
        jnp.zeros((), grid.dtype),
        params,
        optimizer.init(params),
        (nan, nan, nan),
        path0,
        jnp.zeros((), jnp.int32),
        jnp.asarray(False),
        init_report,
    )
    k, p, _, saved, path, _, _, report = jax.lax.while_loop(lambda c: ~c[6], body, carry)
    ts = grid.astype(dtype) * learning_rate
    t_stop = k.astype(dtype) * learning_rate
    return Trajectory(
        ts=ts,
        risk=saved[0],
        grad_norm=saved[1],
        param_norm=saved[2],
        model=eqx.combine(p, static),
        outcome=report.code,
        t_stop=t_stop,
        initial_risk=risk(eqx.combine(params, static)),
        final_risk=report.risk,
        final_grad_norm=report.grad_norm,
        num_steps=k.astype(jnp.int32),
        num_rejected=jnp.zeros((), jnp.int32),
        path=path,
    )
