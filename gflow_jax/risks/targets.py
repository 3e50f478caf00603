"""Target functions ``f`` and data sampling.

A target maps a batch of inputs ``x`` of shape ``(n, d_in)`` to outputs of shape
``(n, d_out)``. The piecewise-linear targets (:class:`Affine`, :class:`Constant`,
:class:`PiecewiseLinear`) also describe themselves by knots on an interval, which the
exact 1-d population risk (MATH.md §4) needs.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


def _as_batch(x: ArrayLike) -> Float[Array, "n d"]:
    x = jnp.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"inputs must have shape (n, d_in) or (n,), got {x.shape}.")
    return x


class AbstractTarget(eqx.Module):
    """A target function ``f: R^d_in -> R^d_out`` evaluated on a batch."""

    def __call__(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n d_out"]:
        raise NotImplementedError


class Affine(AbstractTarget):
    """``f(x) = slope · x + intercept`` (scalar output).

    ``slope`` is a scalar (1-d input) or a vector of length ``d_in``.
    """

    slope: Float[Array, "..."]
    intercept: Float[Array, ""]

    def __init__(self, slope: ArrayLike, intercept: ArrayLike = 0.0):
        slope, intercept = jnp.asarray(slope, float), jnp.asarray(intercept, float)
        if slope.ndim > 1 or intercept.ndim != 0:
            raise ValueError("Affine needs a scalar or 1-d slope and a scalar intercept.")
        self.slope, self.intercept = slope, intercept

    def __call__(self, x):
        x = _as_batch(x)
        slope = jnp.broadcast_to(self.slope, (x.shape[-1],))
        return (x @ slope + self.intercept)[:, None]

    def knots(self, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        """Knots ``(s, f(s))`` of ``f`` on ``[a, b]`` (1-d input only)."""
        if self.slope.ndim != 0:
            raise ValueError("knots() is defined for 1-d inputs only (scalar slope).")
        s = np.array([a, b], float)
        return s, float(self.slope) * s + float(self.intercept)


class Constant(AbstractTarget):
    """``f(x) = value`` (``value`` scalar, or a vector for ``d_out > 1``)."""

    value: Float[Array, "..."]

    def __init__(self, value: ArrayLike):
        value = jnp.asarray(value, float)
        if value.ndim > 1:
            raise ValueError("Constant value must be a scalar or a 1-d vector.")
        self.value = value

    def __call__(self, x):
        x = _as_batch(x)
        value = jnp.atleast_1d(self.value)
        return jnp.broadcast_to(value, (x.shape[0], value.shape[0])).astype(x.dtype)

    def knots(self, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        if self.value.ndim != 0:
            raise ValueError("knots() is defined for scalar constants only.")
        s = np.array([a, b], float)
        return s, np.full(2, float(self.value))


class PiecewiseLinear(AbstractTarget):
    """Continuous piecewise-linear ``f`` on the line through the knots ``(knots_x, knots_y)``.

    ``knots_x`` must be strictly increasing; outside ``[knots_x[0], knots_x[-1]]`` the
    first / last piece is extended linearly. 1-d input, scalar output.
    """

    knots_x: Float[Array, " k"]
    knots_y: Float[Array, " k"]

    def __init__(self, knots_x: ArrayLike, knots_y: ArrayLike):
        kx, ky = np.asarray(knots_x, float), np.asarray(knots_y, float)
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
        kx = np.asarray(self.knots_x)
        inner = kx[(kx > a) & (kx < b)]
        s = np.concatenate([[a], inner, [b]])
        return s, np.asarray(self(jnp.asarray(s)))[:, 0]


class FunctionTarget(AbstractTarget):
    """Wraps any jittable ``fn(x: (n, d_in)) -> (n,) or (n, d_out)`` as a target."""

    fn: Callable = eqx.field(static=True)

    def __call__(self, x):
        x = _as_batch(x)
        y = jnp.asarray(self.fn(x))
        return y[:, None] if y.ndim == 1 else y


def as_target(f: AbstractTarget | Callable) -> AbstractTarget:
    """Return ``f`` if it is a target, else wrap a callable in :class:`FunctionTarget`."""
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

    With ``key=None`` the inputs are ``n`` evenly spaced points of ``[low, high]``
    (``d_in = 1`` only, endpoints included); with a key they are i.i.d. uniform.
    Returns ``(x, y)`` with ``x: (n, d_in)`` and ``y: (n, d_out)``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}.")
    if isinstance(d_in, bool) or not isinstance(d_in, (int, np.integer)) or d_in < 1:
        raise ValueError(f"d_in must be >= 1 (an int), got {d_in!r}.")
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"need finite low < high, got low={low}, high={high}.")
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    if key is None:
        if d_in != 1:
            raise ValueError("evenly spaced data needs d_in = 1; pass a key for random data.")
        x = jnp.linspace(low, high, n, dtype=dtype)[:, None]
    else:
        x = jax.random.uniform(key, (n, d_in), dtype, low, high)
    return x, as_target(target)(x).astype(dtype)
