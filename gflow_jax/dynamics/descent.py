"""Gradient descent ``θ_{k+1} = θ_k − η ∇L(θ_k)`` (Optax), on the gradient-flow time axis."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
from jaxtyping import PyTree

from .._checks import positive_float, positive_int
from ..outcomes import Outcome, SolverVerdict, Stop
from .base import AbstractDynamics, State, _where_rows, initial_state
from .problem import Problem


class GradientDescent(AbstractDynamics):
    """Gradient descent, the explicit Euler scheme of the gradient flow with step ``η``.

    Iterate ``k`` sits at gradient-flow time ``t_k = k η``, so GD and GF share a time axis
    and a plot; it runs while ``t_k < t1`` and ``k < max_steps``, checking the same
    :class:`gflow_jax.Stop` rules at every iterate. A save time ``s`` records the first
    iterate with ``t_k ≥ s``.

    **Arguments:**

    - `learning_rate`: ``η > 0`` (also the unit of time per iteration).
    - `optimizer`: any ``optax.GradientTransformation`` (default ``optax.sgd(η)``); `η`
      still defines the time axis.
    - `stop`: :class:`gflow_jax.Stop` rules.
    - `max_steps`: iteration budget per trajectory (``UNFINISHED`` when spent).
    """

    learning_rate: float = eqx.field(static=True)
    optimizer: optax.GradientTransformation | None
    stop: Stop
    max_steps: int = eqx.field(static=True)
    num_phases: ClassVar[int] = 1

    def __init__(
        self,
        learning_rate: float,
        optimizer: optax.GradientTransformation | None = None,
        stop: Stop = Stop(),
        max_steps: int = 2**20,
    ):
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.stop = stop
        self.max_steps = max_steps

    def __check_init__(self):
        positive_float("learning_rate", self.learning_rate)
        positive_int("max_steps", self.max_steps)
        if self.optimizer is not None and not isinstance(
            self.optimizer, optax.GradientTransformation
        ):
            raise TypeError(
                "optimizer must be an optax.GradientTransformation, got "
                f"{type(self.optimizer).__name__}."
            )
        if not isinstance(self.stop, Stop):
            raise TypeError(f"stop must be a gflow_jax.Stop, got {type(self.stop).__name__}.")

    def resolve(self, dtype) -> GradientDescent:
        """A copy whose `stop` rules have the defaults of `dtype` filled in.

        **Arguments:**

        - `dtype`: the floating dtype of the trainable arrays.

        **Returns:**

        A :class:`GradientDescent` with the same `learning_rate`, `optimizer` and
        `max_steps` and ``stop.resolve(dtype)``.
        """
        return GradientDescent(
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,
            stop=self.stop.resolve(dtype),
            max_steps=self.max_steps,
        )

    def _update(self, grad: PyTree, opt_state: PyTree, params: PyTree):
        """One optimizer update; plain SGD ``θ − η∇L`` without Optax state by default.

        (The default is not ``optax.sgd(η)`` built on the fly: a new transformation per
        call would defeat the compilation cache.)
        """
        if self.optimizer is None:
            eta = self.learning_rate
            return jtu.tree_map(lambda g: -eta * g, grad), opt_state
        return self.optimizer.update(grad, opt_state, params)

    def save_times(self, save_ts: np.ndarray) -> np.ndarray:
        """Save times rounded up to iterate times ``k η`` (values are those iterates').

        **Arguments:**

        - `save_ts`: the requested save times (gradient-flow time units).

        **Returns:**

        A NumPy array ``ceil(save_ts/η − 10⁻⁹)·η`` of the same shape.
        """
        eta = self.learning_rate
        return np.ceil(np.asarray(save_ts) / eta - 1e-9) * eta

    def init(self, problem: Problem, params: PyTree) -> State:
        """The :class:`State` at iterate ``k = 0`` (``t = 0``).

        **Arguments:**

        - `problem`: the :class:`Problem` to solve.
        - `params`: θ₀, the pytree of trainable arrays.

        **Returns:**

        The initial :class:`State`; its ``inner`` is ``optimizer.init(params)``, or
        ``None`` for the default plain SGD.
        """
        inner = None if self.optimizer is None else self.optimizer.init(params)
        return initial_state(problem, params, inner)

    def advance(self, problem: Problem, state: State, max_steps: int, phase: int) -> State:
        """Take at most `max_steps` iterations from `state`.

        Each iteration evaluates ``L``, ``‖∇L‖``, ``‖θ‖`` and the outcome at the current
        iterate ``θ_k`` (time ``t_k = k η``), records them at every unfilled save time
        ``≤ t_k``, and then either stops (a stop rule fired, ``k η ≥ t1``, or ``k`` reached
        the dynamics' `max_steps`: ``finished``, with verdict ``MAX_STEPS`` when only the
        budget ended it), pauses (this call's `max_steps` iterations taken), or updates θ
        by the optimizer.

        **Arguments:**

        - `problem`: the :class:`Problem` being solved.
        - `state`: the member's :class:`State`.
        - `max_steps`: the most iterations in this call.
        - `phase`: unused (gradient descent has one phase, ``0``).

        **Returns:**

        The advanced :class:`State` (``t = k η`` of its last evaluated iterate).
        """
        eta = jnp.asarray(self.learning_rate, problem.t1.dtype)
        ts = problem.save_ts
        # the horizon in iterations: k η < t1 (exactly representable k, no drift)
        horizon = jnp.where(jnp.isinf(problem.t1), jnp.inf, jnp.ceil(problem.t1 / eta - 1e-9))
        k_end = state.num_steps + max_steps

        def body(carry):
            s, _ = carry
            k = s.num_steps
            report, grad = problem.evaluate(s.y, self.stop)
            t = k.astype(eta.dtype) * eta
            record = (ts <= t) & jnp.isnan(s.saved[0])
            saved = tuple(
                jnp.where(record, val, buf)
                for buf, val in zip(
                    s.saved, (report.risk, report.grad_norm, report.param_norm), strict=True
                )
            )
            path = s.path
            if problem.save_path:
                path = jtu.tree_map(
                    lambda buf, val: _where_rows(record, jnp.broadcast_to(val, buf.shape), buf),
                    path,
                    s.y,
                )
            stopped = report.code != Outcome.UNFINISHED
            out_of_time = k.astype(horizon.dtype) >= horizon
            out_of_budget = k >= self.max_steps
            finished = stopped | out_of_time | out_of_budget
            pause = finished | (k >= k_end)
            updates, opt_state = self._update(grad, s.inner, s.y)
            y = optax.apply_updates(s.y, updates)
            keep = lambda old, new: jtu.tree_map(lambda a, b: jnp.where(pause, a, b), old, new)
            verdict = jnp.where(
                out_of_budget & ~stopped & ~out_of_time,
                jnp.int8(SolverVerdict.MAX_STEPS),
                s.verdict,
            )
            new = State(
                t=t,
                y=keep(s.y, y),
                num_steps=jnp.where(pause, k, k + 1),
                num_rejected=s.num_rejected,
                num_tail_steps=s.num_tail_steps,
                saved=saved,
                path=path,
                phase=s.phase,
                finished=finished,
                verdict=verdict,
                t_tail=s.t_tail,
                inner=keep(s.inner, opt_state),
            )
            return new, pause

        state, _ = jax.lax.while_loop(lambda c: ~c[1], body, (state, jnp.asarray(False)))
        return state
