"""Activation functions with the derivative conventions the theory needs.

The ReLU here has the *generalised* derivative ``relu'(0) = 0`` of Jentzen & Riekert
(arXiv:2107.04479): the limit of gradients of C¹ approximations ``R_r -> relu`` with
``R_r' -> 1{x > 0}``.
It is defined with an explicit ``jax.custom_jvp`` so the convention never depends on
how a JAX version happens to differentiate ``max(x, 0)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike


@jax.custom_jvp
def relu(x: ArrayLike) -> Array:
    """``relu(u) = max(u, 0)`` with derivative ``1{u > 0}`` (so ``relu'(0) = 0``).

    **Arguments:**

    - `x`: an array ``u`` of any shape.

    **Returns:**

    ``max(u, 0)`` elementwise, same shape and dtype as `x`.
    """
    x = jnp.asarray(x)
    return jnp.maximum(x, jnp.zeros_like(x))


@relu.defjvp
def _relu_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    x = jnp.asarray(x)
    return relu(x), jnp.where(x > 0, dx, jnp.zeros_like(dx))


def smooth_relu(x: ArrayLike, sharpness: float = 10.0) -> Array:
    """``softplus(s x) / s``: smooth, strictly increasing, tends to ``relu`` as ``s -> inf``.

    ``softplus(s x)/s = log(1 + exp(s x))/s`` lies above ``relu(x)`` by at most
    ``log(2)/s`` (attained at ``x = 0``).

    **Arguments:**

    - `x`: an array of any shape.
    - `sharpness`: ``s > 0`` (default ``10.0``); larger is closer to ``relu``.

    **Returns:**

    ``softplus(s x) / s`` elementwise, same shape as `x`.
    """
    x = jnp.asarray(x)
    return jax.nn.softplus(sharpness * x) / sharpness


ACTIVATIONS = {
    "relu": relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "smooth_relu": smooth_relu,
}
"""Activations by name. ``relu`` is the only non-smooth one."""

SMOOTH_ACTIVATIONS = frozenset({"tanh", "sigmoid", "softplus", "smooth_relu"})
