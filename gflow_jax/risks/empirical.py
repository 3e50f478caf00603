"""Empirical (finite-data) squared risk."""

from __future__ import annotations

from typing import final

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PyTree

from .._checks import floating_array, weights_array
from ._kinks import switching_margin
from .base import AbstractPiecewiseSmoothRisk


@final
class EmpiricalRisk(AbstractPiecewiseSmoothRisk):
    """``L(θ) = Σ_i ω_i ‖N_θ(x_i) − y_i‖²`` with weights ``ω_i ≥ 0`` (default ``1/N``).

    The default is the mean squared error over the data, i.e. the population risk with
    the empirical measure as input law. Pass ``weights=jnp.full(N, 0.5)`` for the
    ``½ Σ`` convention of the implicit-network paper (Gao & Gao, arXiv:2205.07463).
    Units: squared output units.
    """

    x: Float[Array, "N d_in"]
    y: Float[Array, "N d_out"]
    weights: Float[Array, " N"]

    def __init__(self, x: ArrayLike, y: ArrayLike, weights: ArrayLike | None = None):
        """**Arguments:**

        - `x`: inputs ``(N, d_in)`` (or ``(N,)`` for 1-d inputs), a floating array.
        - `y`: targets ``(N, d_out)`` (or ``(N,)`` for scalar outputs), cast to `x`'s dtype.
        - `weights`: ``(N,)`` finite, non-negative, not all zero (default ``1/N``).

        Value checks (finiteness, signs) are skipped for traced arrays, so a risk can be
        built inside ``jit``/``vmap``.
        """
        x, y = floating_array("x", x, finite=False), floating_array("y", y, finite=False)
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
        x, y = floating_array("x", x), floating_array("y", y)
        n = x.shape[0]
        if weights is None:
            weights = jnp.full((n,), 1.0 / n, x.dtype)
        else:
            weights = weights_array("weights", weights, n, x.dtype)
        self.x, self.y, self.weights = x, y.astype(x.dtype), weights

    def residual(self, model: PyTree) -> Float[Array, "N d_out"]:
        """``N_θ(x_i) − y_i``, shape ``(N, d_out)``.

        **Arguments:**

        - `model`: the model at θ, mapping ``(N, d_in)`` inputs to ``(N, d_out)`` outputs
          (another output shape is a ``ValueError``).

        **Returns:**

        The residuals ``(N, d_out)`` in output units (unweighted).
        """
        out = model(self.x)
        if out.shape != self.y.shape:
            raise ValueError(
                f"model output shape {out.shape} does not match targets {self.y.shape}; "
                "check the model's d_out."
            )
        return out - self.y

    def __call__(self, model: PyTree) -> Float[Array, ""]:
        """``L(θ)`` at θ = `model` (squared output units)."""
        r = self.residual(model)
        return jnp.sum(self.weights * jnp.sum(r * r, axis=-1))

    def kink_margin(self, model: PyTree) -> Float[Array, ""]:
        """How far θ is from the set where ``L`` is not smooth.

        ``min_{i, j} |s_ij(θ)| / scale_j`` over the model's switching functions at the
        data points of positive weight: ``|w_j · x_i + b_j| / sqrt(‖w_j‖² + b_j²)`` for a
        :class:`~gflow_jax.ShallowReLU` (invariant to rescaling a neuron), per hidden
        neuron for a ReLU :class:`~gflow_jax.DeepMLP`, the raw ``min |s_ij|`` for other
        non-smooth models (:class:`~gflow_jax.ImplicitReLU`).

        **Arguments:**

        - `model`: the model at θ.

        **Returns:**

        ``0`` when a data point sits on a kink, ``+inf`` for a smooth model or one that
        is not an :class:`~gflow_jax.models.base.AbstractModel`.
        """
        return switching_margin(model, self.x, self.weights)

    @property
    def num_samples(self) -> int:
        """Number ``N`` of data points."""
        return self.x.shape[0]
