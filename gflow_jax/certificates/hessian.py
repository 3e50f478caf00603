"""The Hessian operator norm ``‖∇²f(θ)‖_op`` from Hessian-vector products.

``β(θ_0, r) = sup_{θ ∈ B(θ_0, r)} ‖∇²f(θ)‖_op`` is the local smoothness constant of the
ball criterion (units 1/time for a loss differentiated twice in the parameters). Here it
is estimated at single points, without ever forming the ``p × p`` Hessian: each
matrix-vector product is ``∇²f(θ) v = d/dε ∇f(θ + εv)|_{ε=0}`` (forward-over-reverse
differentiation, :func:`hvp`), and the largest ``|eigenvalue|`` is read off either

- a Lanczos tridiagonalisation with full reorthogonalisation (:func:`lanczos_norm`), or
- power iteration (:func:`gflow_jax._numerics.power_iteration`).

Both are lower bounds of the true norm (up to rounding); Lanczos is exact once the
number of steps reaches ``p``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._checks import positive_int
from .._numerics import finite_eigh, power_iteration
from ._common import check_model_risk, flat_loss, warn_if_not_smooth

__all__ = ["hessian_norm", "hvp", "lanczos_norm", "operator_norm"]


def hvp(
    f: Callable[[Array], Array], theta: Float[Array, " p"], vec: Float[Array, " p"]
) -> Float[Array, " p"]:
    """The Hessian-vector product ``∇²f(θ) v``.

    **Arguments:**

    - `f`: a twice-differentiable scalar function ``R^p → R``.
    - `theta`: the point ``θ``.
    - `vec`: the vector ``v``.

    **Returns:**

    ``∇²f(θ) v``, by ``jax.jvp`` of ``jax.grad(f)`` (one forward-over-reverse pass).
    """
    return jax.jvp(jax.grad(f), (theta,), (vec,))[1]


def lanczos_norm(
    matvec: Callable[[Array], Array], v0: Float[Array, " p"], iters: int
) -> Float[Array, ""]:
    """Largest ``|λ|`` of a symmetric operator by ``iters``-step Lanczos.

    The Krylov basis is reorthogonalised in full (twice per step), so the Ritz values are
    the eigenvalues of an orthonormal projection: ``max |Ritz| ≤ ‖M‖_op``, with equality
    once ``iters ≥ p`` or the Krylov space is exhausted. A breakdown (an off-diagonal
    ``β_j ≈ 0``) continues with zero vectors, which only adds zero Ritz values.

    **Arguments:**

    - `matvec`: ``v ↦ M v`` for a symmetric ``M`` (jittable).
    - `v0`: start vector (need not be normalised; must not be ``0``).
    - `iters`: Lanczos steps (static; at most ``p`` are taken).

    **Returns:**

    The estimate of ``‖M‖_op``, in the units of ``M``.
    """
    p = v0.shape[0]
    k = min(iters, p)
    dtype = v0.dtype
    tiny = 100 * jnp.finfo(dtype).eps
    q0 = v0 / jnp.linalg.norm(v0)

    def body(j, carry):
        V, alphas, betas, q, q_prev, beta_prev = carry
        V = V.at[j].set(q)
        w = matvec(q)
        a = jnp.vdot(q, w)
        w = w - a * q - beta_prev * q_prev
        w = w - V.T @ (V @ w)
        w = w - V.T @ (V @ w)
        b = jnp.linalg.norm(w)
        ok = b > tiny * (jnp.abs(a) + beta_prev + jnp.finfo(dtype).tiny)
        b = jnp.where(ok, b, 0.0)
        q_next = jnp.where(ok, w / jnp.where(ok, b, 1.0), 0.0)
        return V, alphas.at[j].set(a), betas.at[j].set(b), q_next, q, b

    zeros = jnp.zeros((k,), dtype)
    carry = (jnp.zeros((k, p), dtype), zeros, zeros, q0, jnp.zeros_like(q0), jnp.zeros((), dtype))
    _, alphas, betas, *_ = jax.lax.fori_loop(0, k, body, carry)
    T = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    lam, _, finite = finite_eigh(T)
    return jnp.where(finite, jnp.max(jnp.abs(lam)), jnp.nan)


def operator_norm(
    f: Callable[[Array], Array],
    theta: Float[Array, " p"],
    v0: Float[Array, " p"],
    iters: int,
    method: Literal["lanczos", "power"],
) -> Float[Array, ""]:
    """Estimate of ``‖∇²f(θ)‖_op`` by Lanczos or power iteration started at ``v0``.

    **Arguments:**

    - `f`: a twice-differentiable scalar function ``R^p → R``.
    - `theta`: the point ``θ``.
    - `v0`: start vector of the iteration.
    - `iters`: iterations (static).
    - `method`: ``"lanczos"`` (:func:`lanczos_norm`) or ``"power"``
      (:func:`gflow_jax._numerics.power_iteration`).

    **Returns:**

    A lower bound of ``‖∇²f(θ)‖_op`` (up to rounding), in the units of ``f`` per squared
    parameter unit.
    """

    def matvec(v):
        return hvp(f, theta, v)

    if method == "lanczos":
        return lanczos_norm(matvec, v0, iters)
    if method == "power":
        return power_iteration(matvec, v0, iters)[0]
    raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}.")


@eqx.filter_jit
def _hessian_norm_jit(model, risk, key, iters, method):
    flat, f, _ = flat_loss(model, risk)
    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    return operator_norm(f, flat, v0, iters, method)


def hessian_norm(
    model: PyTree,
    risk,
    *,
    key: PRNGKeyArray,
    iters: int = 32,
    method: Literal["lanczos", "power"] = "lanczos",
) -> Float[Array, ""]:
    """Estimate ``‖∇²f(θ)‖_op``, the largest ``|eigenvalue|`` of the Hessian of
    ``f(θ) = risk(model)`` in the model's trainable parameters ``θ``.

    Neither method forms the Hessian; both start from a random vector drawn with `key`
    and return a lower bound of the true norm (up to rounding). Compiled once per model
    structure, `iters` and `method`. Warns (``UserWarning``) for a model that declares
    ``is_smooth = False`` (:func:`gflow_jax.models.base.is_smooth`), whose Hessian is
    not defined at the kinks.

    **Arguments:**

    - `model`: the model at ``θ``.
    - `risk`: ``risk(model) -> scalar``.
    - `key`: PRNG key of the start vector.
    - `iters`: Lanczos / power-iteration steps (``≥ 1``).
    - `method`: ``"lanczos"`` (full reorthogonalisation; exact up to rounding once
      ``iters ≥ p``) or ``"power"`` (error decaying like ``|λ_2/λ_1|^iters``).

    **Returns:**

    A scalar: the estimate, in units of the risk per squared parameter unit.
    """
    check_model_risk(model, risk, "hessian_norm")
    iters = positive_int("iters", iters)
    if method not in ("lanczos", "power"):
        raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}.")
    warn_if_not_smooth(model, "hessian_norm")
    return _hessian_norm_jit(model, risk, key, iters, method)
