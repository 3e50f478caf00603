"""Target functions ``f`` and data sampling.

A target maps a batch of inputs ``x`` of shape ``(n, d_in)`` to outputs of shape
``(n, d_out)``. Every target subclasses :class:`AbstractTarget`; the continuous
piecewise-linear ones (:class:`Affine`, :class:`Constant`, :class:`PiecewiseLinear`)
subclass :class:`AbstractPiecewiseLinearTarget` and describe themselves by their knots on
an interval, which the exact 1-d population risk (:meth:`gflow_jax.PopulationRisk.uniform_1d`)
needs. The concrete classes are final.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import (
    check_callable,
    check_float_dtype,
    check_key,
    positive_int,
    real_array,
    real_float,
)


def _as_batch(x: ArrayLike) -> Float[Array, "n d"]:
    x = jnp.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"inputs must have shape (n, d_in) or (n,), got {x.shape}.")
    return x


class AbstractTarget(eqx.Module):
    """A target function ``f: R^d_in → R^d_out`` evaluated on a batch."""

    @abc.abstractmethod
    def __call__(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n d_out"]:
        """``f(x)``.

        **Arguments:**

        - `x`: inputs ``(n, d_in)`` (or ``(n,)`` for ``d_in = 1``).

        **Returns:**

        The values ``(n, d_out)``.
        """


class AbstractPiecewiseLinearTarget(AbstractTarget):
    """A continuous target that is affine between finitely many knots (on the line)."""

    @abc.abstractmethod
    def knots(self, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        """The knots of ``f`` on ``[a, b]`` (1-d input, scalar output).

        **Arguments:**

        - `a`, `b`: the interval, ``a < b``.

        **Returns:**

        ``(s, f(s))``: NumPy float64 arrays with ``a = s_0 < s_1 < … < s_M = b``, ``f``
        affine on every ``[s_k, s_{k+1}]``. ``ValueError`` if ``f`` is not a scalar
        function of one variable.
        """


@final
class Affine(AbstractPiecewiseLinearTarget):
    """``f(x) = slope · x + intercept`` (scalar output).

    `slope` is a scalar (1-d input) or a vector of length ``d_in``; `intercept` a scalar
    (finite real numbers).
    """

    slope: Float[Array, "..."]
    intercept: Float[Array, ""]

    def __init__(self, slope: ArrayLike, intercept: ArrayLike = 0.0):
        """**Arguments:**

        - `slope`: a finite scalar (1-d input) or a vector of length ``d_in``.
        - `intercept`: a finite scalar (default ``0``).
        """
        hint = "Affine needs a scalar or 1-d slope and a scalar intercept."
        slope = real_array("slope", slope, max_ndim=1, hint=hint)
        intercept = real_array("intercept", intercept, max_ndim=0, hint=hint)
        self.slope, self.intercept = jnp.asarray(slope), jnp.asarray(intercept)

    def __call__(self, x):
        x = _as_batch(x)
        slope = jnp.broadcast_to(self.slope, (x.shape[-1],))
        return (x @ slope + self.intercept)[:, None]

    def knots(self, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        """``([a, b], [f(a), f(b)])`` (1-d input only: a scalar slope).

        **Arguments:**

        - `a`, `b`: the interval, ``a < b`` (input units).

        **Returns:**

        ``(s, f(s))``: NumPy float64 arrays of shape ``(2,)``, ``s = [a, b]``. A
        ``ValueError`` for a vector slope.
        """
        if self.slope.ndim != 0:
            raise ValueError("knots() is defined for 1-d inputs only (scalar slope).")
        s = np.array([a, b], float)
        return s, float(self.slope) * s + float(self.intercept)


@final
class Constant(AbstractPiecewiseLinearTarget):
    """``f(x) = value`` (`value` a finite scalar, or a vector for ``d_out > 1``)."""

    value: Float[Array, "..."]

    def __init__(self, value: ArrayLike):
        """**Arguments:**

        - `value`: a finite scalar, or a vector of length ``d_out`` for ``d_out > 1``.
        """
        value = real_array(
            "value", value, max_ndim=1, hint="Constant value must be a scalar or a 1-d vector."
        )
        self.value = jnp.asarray(value)

    def __call__(self, x):
        x = _as_batch(x)
        value = jnp.atleast_1d(self.value)
        return jnp.broadcast_to(value, (x.shape[0], value.shape[0])).astype(x.dtype)

    def knots(self, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        """``([a, b], [value, value])`` (scalar constants only).

        **Arguments:**

        - `a`, `b`: the interval, ``a < b`` (input units).

        **Returns:**

        ``(s, f(s))``: NumPy float64 arrays of shape ``(2,)``, ``s = [a, b]``. A
        ``ValueError`` for a vector `value`.
        """
        if self.value.ndim != 0:
            raise ValueError("knots() is defined for scalar constants only.")
        s = np.array([a, b], float)
        return s, np.full(2, float(self.value))


@final
class PiecewiseLinear(AbstractPiecewiseLinearTarget):
    """Continuous piecewise-linear ``f`` on the line through ``(knots_x, knots_y)``.

    `knots_x` must be strictly increasing; outside ``[knots_x[0], knots_x[-1]]`` the
    first / last piece is extended linearly. 1-d input, scalar output.
    """

    knots_x: Float[Array, " k"]
    knots_y: Float[Array, " k"]

    def __init__(self, knots_x: ArrayLike, knots_y: ArrayLike):
        """**Arguments:**

        - `knots_x`: finite, strictly increasing 1-d array of length ``≥ 2`` (input units).
        - `knots_y`: finite values ``f(knots_x)``, same shape as `knots_x`.
        """
        kx = real_array("knots_x", knots_x, finite=False)
        ky = real_array("knots_y", knots_y, finite=False)
        if kx.ndim != 1 or kx.shape != ky.shape or kx.size < 2:
            raise ValueError("knots_x and knots_y must be 1-d arrays of equal length >= 2.")
        if not np.all(np.isfinite(kx)) or not np.all(np.isfinite(ky)):
            raise ValueError("knots must be finite.")
        if not np.all(np.diff(kx) > 0):
            raise ValueError("knots_x must be strictly increasing.")
        self.knots_x, self.knots_y = jnp.asarray(kx), jnp.asarray(ky)

    def __call__(self, x):
        x = _as_batch(x)
        if x.shape[-1] != 1:
            raise ValueError(f"PiecewiseLinear is a 1-d target; got inputs of shape {x.shape}.")
        kx, ky = self.knots_x.astype(x.dtype), self.knots_y.astype(x.dtype)
        u = x[:, 0]
        # index of the piece containing u (first/last piece extended)
        i = jnp.clip(jnp.searchsorted(kx, u, side="right") - 1, 0, kx.shape[0] - 2)
        slope = (ky[i + 1] - ky[i]) / (kx[i + 1] - kx[i])
        return (ky[i] + slope * (u - kx[i]))[:, None]

    def knots(self, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        """``a``, the knots strictly inside ``(a, b)``, ``b``, and ``f`` there.

        **Arguments:**

        - `a`, `b`: the interval, ``a < b`` (input units).

        **Returns:**

        ``(s, f(s))``: NumPy arrays of shape ``(M + 1,)``, ``s = [a, knots_x ∩ (a, b), b]``
        (float64) and ``f(s)`` evaluated by :meth:`__call__` (the first / last piece
        extended outside ``[knots_x[0], knots_x[-1]]``).
        """
        kx = np.asarray(self.knots_x)
        inner = kx[(kx > a) & (kx < b)]
        s = np.concatenate([[a], inner, [b]])
        return s, np.asarray(self(jnp.asarray(s)))[:, 0]


@final
class FunctionTarget(AbstractTarget):
    """Wraps any jittable ``fn(x: (n, d_in)) -> (n,) or (n, d_out)`` as a target.

    Not piecewise linear as far as the library knows (use a quadrature risk with it).
    """

    fn: Callable = eqx.field(static=True)

    def __check_init__(self):
        check_callable("fn", self.fn)

    def __call__(self, x):
        x = _as_batch(x)
        y = jnp.asarray(self.fn(x))
        return y[:, None] if y.ndim == 1 else y


def as_target(f: AbstractTarget | Callable) -> AbstractTarget:
    """`f` if it is a target, else a callable wrapped in :class:`FunctionTarget`.

    **Arguments:**

    - `f`: an :class:`AbstractTarget` or a callable ``f(x: (n, d)) -> (n,) or (n, d_out)``.

    **Returns:**

    An :class:`AbstractTarget`.
    """
    if isinstance(f, AbstractTarget):
        return f
    if callable(f):
        return FunctionTarget(f)
    raise TypeError(f"target must be a gflow_jax target or a callable, got {type(f).__name__}.")


def sample_data(
    target: AbstractTarget | Callable,
    n: int,
    *,
    low: float = 0.0,
    high: float = 1.0,
    d_in: int = 1,
    key: PRNGKeyArray | None = None,
    dtype=None,
) -> tuple[Float[Array, "n d_in"], Float[Array, "n d_out"]]:
    """Inputs on the cube ``[low, high]^d_in`` and the target's values there.

    **Arguments:**

    - `target`: an :class:`AbstractTarget` or a callable (see :func:`as_target`).
    - `n`: number of inputs (a positive int).
    - `low`, `high`: the cube, finite ``low < high``.
    - `d_in`: input dimension.
    - `key`: ``None`` for ``n`` evenly spaced points of ``[low, high]`` (``d_in = 1``
      only, endpoints included), or a JAX PRNG key for i.i.d. uniform inputs.
    - `dtype`: a floating dtype (default JAX's default float).

    **Returns:**

    ``(x, y)`` with ``x: (n, d_in)`` and ``y: (n, d_out)``.
    """
    n = positive_int("n", n)
    d_in = positive_int("d_in", d_in)
    low, high = real_float("low", low, finite=False), real_float("high", high, finite=False)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"need finite low < high, got low={low}, high={high}.")
    dtype = check_float_dtype("dtype", dtype)
    if key is None:
        if d_in != 1:
            raise ValueError("evenly spaced data needs d_in = 1; pass a key for random data.")
        x = jnp.linspace(low, high, n, dtype=dtype)[:, None]
    else:
        x = jax.random.uniform(check_key("key", key), (n, d_in), dtype, low, high)
    return x, as_target(target)(x).astype(dtype)
