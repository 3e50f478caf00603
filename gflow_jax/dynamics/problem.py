"""The problem a dynamics solves: a risk, the model's fixed part, a horizon and a save grid."""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PyTree

from .._checks import positive_float, positive_int, real_array
from .._numerics import tree_norm
from ..models.base import is_well_posed
from ..outcomes import Stop, classify

#: Default save grid of an infinite horizon: 0 and log-spaced times in [1e-4, 1e12].
INFINITE_HORIZON_DECADES = (-4.0, 12.0)


class Problem(eqx.Module):
    """One gradient-flow problem: ``dθ/dt = −∇L(θ)``, ``θ(0) = θ_0``, on ``[0, t1]``.

    **Arguments:**

    - `risk`: ``risk(model) -> L``, a non-negative scalar.
    - `static`: the model without its trainable arrays (``partition(model)[1]``);
      ``eqx.combine(θ, static)`` is the model at θ.
    - `t1`: the time horizon (``inf``: until a stop rule fires or the step budget ends).
    - `save_ts`: increasing save times in ``[0, t1]``.
    - `save_path`: also keep θ at the save times.
    """

    risk: Callable
    static: PyTree
    t1: Float[Array, ""]
    save_ts: Float[Array, " n_save"]
    save_path: bool = eqx.field(static=True, default=False)

    def model(self, params: PyTree) -> PyTree:
        """The model at θ = `params`.

        **Arguments:**

        - `params`: θ, a pytree of trainable arrays shaped like ``partition(model)[0]``.

        **Returns:**

        ``eqx.combine(params, static)``.
        """
        return eqx.combine(params, self.static)

    def risk_and_grad(self, params: PyTree) -> tuple[Float[Array, ""], PyTree]:
        """``(L(θ), ∇L(θ))`` (the generalised gradient: ``relu'(0) = 0`` throughout).

        **Arguments:**

        - `params`: θ, a pytree of trainable arrays.

        **Returns:**

        The scalar risk ``L(θ)`` and its gradient, a pytree like `params`
        (``jax.value_and_grad``).
        """
        return jax.value_and_grad(lambda p: self.risk(self.model(p)))(params)

    def field(self, t, params: PyTree, args) -> PyTree:
        """The vector field ``−∇L(θ)`` in Diffrax's ``(t, y, args)`` convention.

        **Arguments:**

        - `t`: the time (unused: the flow is autonomous).
        - `params`: θ, a pytree of trainable arrays.
        - `args`: unused.

        **Returns:**

        ``−∇L(θ)``, a pytree like `params`.
        """
        return jtu.tree_map(jnp.negative, self.risk_and_grad(params)[1])

    def evaluate(self, params: PyTree, stop: Stop) -> tuple[Diagnosis, PyTree]:
        """:meth:`diagnose` and the gradient ``∇L(θ)`` from one evaluation.

        **Arguments:**

        - `params`: θ, a pytree of trainable arrays.
        - `stop`: resolved :class:`gflow_jax.Stop` rules.

        **Returns:**

        ``(diagnosis, grad)``: the :class:`Diagnosis` at θ and ``∇L(θ)`` (a pytree like
        `params`).
        """
        value, grad = self.risk_and_grad(params)
        grad_norm, param_norm = tree_norm(grad), tree_norm(params)
        code = classify(value, grad_norm**2, param_norm, is_well_posed(self.model(params)), stop)
        return Diagnosis(value, grad_norm, param_norm, code), grad

    def stop_code(self, params: PyTree, grad: PyTree, stop: Stop) -> Int[Array, ""]:
        """The :func:`gflow_jax.outcomes.classify` code at θ from a gradient already known.

        Only the risk is evaluated (a forward pass, no backward pass): a solver whose
        last stage is ``±∇L(θ)`` (an explicit first-same-as-last Runge–Kutta method)
        thus checks the stop rules after every step at the cost of one forward pass.

        **Arguments:**

        - `params`: θ, a pytree of trainable arrays.
        - `grad`: ``∇L(θ)`` or ``−∇L(θ)`` (only its norm is used), a pytree like `params`.
        - `stop`: resolved :class:`gflow_jax.Stop` rules.

        **Returns:**

        The ``int8`` outcome code (``UNFINISHED``: keep going), the same as
        ``diagnose(params, stop).code`` up to the round-off of the given gradient.
        """
        value = self.risk(self.model(params))
        grad_norm, param_norm = tree_norm(grad), tree_norm(params)
        return classify(value, grad_norm**2, param_norm, is_well_posed(self.model(params)), stop)

    def diagnose(self, params: PyTree, stop: Stop) -> Diagnosis:
        """``L``, ``‖∇L‖``, ``‖θ‖`` at θ and the :func:`gflow_jax.outcomes.classify` code.

        **Arguments:**

        - `params`: θ, a pytree of trainable arrays.
        - `stop`: resolved :class:`gflow_jax.Stop` rules.

        **Returns:**

        A :class:`Diagnosis` of scalars (norms are Euclidean over all trainable arrays;
        the code also uses the model's well-posedness at θ).
        """
        return self.evaluate(params, stop)[0]


class Diagnosis(eqx.Module):
    """Risk, gradient norm, parameter norm and outcome code at one parameter point."""

    risk: Float[Array, ""]
    grad_norm: Float[Array, ""]
    param_norm: Float[Array, ""]
    code: Int[Array, ""]


def save_grid(t1: float, n_save: int) -> np.ndarray:
    """The default save times: ``0`` and ``n_save − 1`` log-spaced times.

    For finite `t1` they span ``[t1·10⁻⁶, t1]``; for ``t1 = inf`` they span
    ``[10⁻⁴, 10¹²]`` (ensembles trim the times no member reached).

    **Arguments:**

    - `t1`: the horizon (positive, may be ``inf``).
    - `n_save`: number of save times (``≥ 2``).

    **Returns:**

    A float64 numpy array of increasing times whose last entry is exactly `t1` when
    `t1` is finite.
    """
    n_save = positive_int("n_save", n_save, minimum=2)
    if math.isinf(t1):
        lo, hi = INFINITE_HORIZON_DECADES
        return np.concatenate([[0.0], np.logspace(lo, hi, n_save - 1)])
    grid = np.concatenate([[0.0], np.logspace(math.log10(t1) - 6, math.log10(t1), n_save - 1)])
    grid[-1] = t1  # 10**log10(t1) can round above t1, which diffrax rejects
    return grid


def check_save_ts(save_ts: ArrayLike, t1: float) -> np.ndarray:
    """Validate user save times: a non-empty 1-d, finite, non-decreasing array in ``[0, t1]``.

    Strings, complex numbers, ``None`` and tracers are a ``TypeError``; NaN/inf, a wrong
    shape, a decrease or a time outside ``[0, t1]`` a ``ValueError`` saying which entry.

    **Arguments:**

    - `save_ts`: the requested save times (concrete, array-like).
    - `t1`: the time horizon (may be ``inf``).

    **Returns:**

    The times as a float64 NumPy array of shape ``(n,)``.
    """
    ts = real_array("save_ts", save_ts, finite=False)
    if ts.ndim != 1 or ts.size < 1:
        raise ValueError(f"save_ts must be a non-empty 1-d array of times, got shape {ts.shape}.")
    bad = np.flatnonzero(~np.isfinite(ts))
    if bad.size:
        raise ValueError(
            f"save_ts must be finite, got {ts[bad[0]]} at index {int(bad[0])}; pass times in "
            f"[0, t1] = [0, {t1}]."
        )
    down = np.flatnonzero(np.diff(ts) < 0)
    if down.size:
        i = int(down[0])
        raise ValueError(
            f"save_ts must be non-decreasing and lie in [0, t1] = [0, {t1}]; it decreases "
            f"from {ts[i]} (index {i}) to {ts[i + 1]}."
        )
    if ts[0] < 0 or ts[-1] > t1:
        raise ValueError(
            f"save_ts must be non-decreasing and lie in [0, t1] = [0, {t1}], got times from "
            f"{ts[0]} to {ts[-1]}."
        )
    return ts


def check_horizon(t1) -> float:
    """Validate a time horizon: a positive number, ``inf`` allowed (flows to the limit).

    A non-scalar array or a non-number is a ``TypeError``; NaN or ``t1 ≤ 0`` a
    ``ValueError``.

    **Arguments:**

    - `t1`: the horizon (a Python/NumPy real or a 0-d array).

    **Returns:**

    ``float(t1)`` (a traced `t1` is returned unchecked).
    """
    if isinstance(t1, (np.ndarray, jax.Array)) and np.ndim(t1) != 0:
        raise TypeError(f"t1 must be a scalar time, got an array of shape {np.shape(t1)}.")
    return positive_float(
        "t1", t1, allow_inf=True, hint="Pass the horizon, e.g. t1=1e4, or t1=math.inf."
    )
