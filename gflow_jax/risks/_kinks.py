"""The kink margin of a risk that is a weighted sum over points (data or quadrature nodes).

``L(θ) = Σ_i ω_i ‖N_θ(x_i) − y_i‖²`` is smooth in θ wherever no switching function
``s_ij(θ)`` (:meth:`gflow_jax.models.base.AbstractModel.switching_functions`) of a point
with ``ω_i > 0`` vanishes. The margin measures how far θ is from that set.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from ..models.base import AbstractModel
from ..models.deep import DeepMLP
from ..models.shallow import ShallowReLU


def switching_margin(
    model: PyTree, x: Float[Array, "n d"], weights: Float[Array, " n"]
) -> Float[Array, ""]:
    """``min_{i: ω_i > 0, j} |s_ij(θ)| / scale_j``, or ``+inf`` for a smooth model.

    The scale is the norm of the coefficients of the switching function as an affine map
    of the previous layer, ``sqrt(‖w_j‖² + b_j²)`` for :class:`~gflow_jax.ShallowReLU`
    and per hidden neuron for a ReLU :class:`~gflow_jax.DeepMLP` (``switching_scales``),
    which makes the margin invariant to rescaling a neuron ``(w_j, b_j, v_j) ↦ (α w_j,
    α b_j, v_j/α)``, ``α > 0``; a degenerate neuron (scale 0) has margin 0. Any other
    non-smooth :class:`~gflow_jax.models.base.AbstractModel` (e.g.
    :class:`~gflow_jax.ImplicitReLU`) has no natural scale: the raw ``min |s_ij|``.

    **Arguments:**

    - `model`: the model at θ.
    - `x`: the points ``(n, d)`` (cast to the model's dtype by the caller).
    - `weights`: their weights ``ω_i ≥ 0``; points of weight 0 do not count.

    **Returns:**

    A non-negative scalar (``inf`` if the model is smooth, is not an
    :class:`~gflow_jax.models.base.AbstractModel`, or has no switching functions).
    """
    inf = jnp.asarray(jnp.inf, x.dtype)
    if not isinstance(model, AbstractModel) or model.is_smooth:
        return inf
    s = model.switching_functions(x)
    if s.shape[-1] == 0 or s.shape[0] == 0:
        return inf
    ratio = jnp.abs(s)
    if isinstance(model, (ShallowReLU, DeepMLP)):
        scale = model.switching_scales()
        positive = (scale > 0)[None, :]
        ratio = jnp.where(positive, ratio / jnp.where(positive, scale[None, :], 1.0), 0.0)
    ratio = jnp.where((weights > 0)[:, None], ratio, jnp.asarray(jnp.inf, ratio.dtype))
    return jnp.min(ratio)
