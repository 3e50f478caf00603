"""Empirical (finite-data) squared risk."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._checks import is_concrete
from .base import AbstractRisk


class EmpiricalRisk(AbstractRisk):
    """``L(θ) = Σ_i ω_i ‖N_θ(x_i) − y_i‖²`` with weights ``ω_i ≥ 0`` (default ``1/N``).

    The default is the mean squared error over the data, i.e. the population risk of
    MATH.md §1.2 with ``μ`` the empirical measure. Pass ``weights=jnp.full(N, 0.5)`` for
    the ``½ Σ`` convention of the implicit-network papers (MATH.md §2.2).

    Shapes: ``x`` is ``(N, d_in)`` (or ``(N,)`` for 1-d inputs), ``y`` is ``(N, d_out)``
    (or ``(N,)`` for scalar outputs).
    """

    x: Float[Array, "N d_in"]
    y: Float[Array, "N d_out"]
    weights: Float[Array, " N"]

    def __init__(self, x: ArrayLike, y: ArrayLike, weights: ArrayLike | None = None):
        x, y = jnp.asarray(x), jnp.asarray(y)
        if x.ndim == 1:
            x = x[:, None]
        if y.ndim == 1:
            y = y[:, None]
        if x.ndim != 2 or y.ndim != 2:
            raise ValueError(
                f"x must be (N, d_in) or (N,), y must be (N, d_out) or (N,); "
                f"got x {x.shape}, y {y.shape}."
            )
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(
                f"x and y must have the same positive number of rows; got {x.shape[0]} and "
                f"{y.shape[0]}."
            )
        for name, arr in (("x", x), ("y", y)):
            if not jnp.issubdtype(arr.dtype, jnp.floating):
                raise TypeError(f"{name} must be a floating array, got dtype {arr.dtype}.")
            if is_concrete(arr) and not bool(jnp.all(jnp.isfinite(arr))):  # skip under jit
                raise ValueError(f"{name} contains NaN or inf; clean the data first.")
        n = x.shape[0]
        if weights is None:
            weights = jnp.full((n,), 1.0 / n, x.dtype)
        else:
            weights = jnp.asarray(weights, x.dtype)
            if weights.shape != (n,):
                raise ValueError(f"weights must have shape ({n},), got {weights.shape}.")
            w = np.asarray(weights) if is_concrete(weights) else np.ones(n)  # jit: no check
            if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
                raise ValueError("weights must be finite, non-negative and not all zero.")
        self.x, self.y, self.weights = x, y.astype(x.dtype), weights

    def residual(self, model) -> Float[Array, "N d_out"]:
        """``N_θ(x_i) − y_i``."""
        out = model(self.x)
        if out.shape != self.y.shape:
            raise ValueError(
                f"model output shape {out.shape} does not match targets {self.y.shape}; "
                "check the model's d_out."
            )
        return out - self.y

    def __call__(self, model) -> Float[Array, ""]:
        r = self.residual(model)
        return jnp.sum(self.weights * jnp.sum(r * r, axis=-1))

    @property
    def num_samples(self) -> int:
        return self.x.shape[0]
