"""Numerics at the bottom of the package: tree norms, power iteration, PL ratio.

Every other module imports these from here (models, risks, dynamics, certificates);
this module imports nothing from ``gflow_jax``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PyTree


def tree_sq_norm(tree: PyTree) -> Float[Array, ""]:
    """``Σ_leaves Σ x²``: the squared Euclidean norm of a pytree read as one vector.

    **Arguments:**

    - `tree`: a pytree of floating arrays (no leaves gives ``0``).

    **Returns:**

    A scalar in the leaves' units squared.
    """
    leaves = jtu.tree_leaves(tree)
    if not leaves:
        return jnp.zeros(())
    return sum(jnp.sum(jnp.square(x)) for x in leaves)


def tree_norm(tree: PyTree) -> Float[Array, ""]:
    """The Euclidean norm ``sqrt(Σ x²)`` of a pytree read as one vector.

    **Arguments:**

    - `tree`: a pytree of floating arrays.

    **Returns:**

    A non-negative scalar.
    """
    return jnp.sqrt(tree_sq_norm(tree))


def fixed_unit_vector(k: int, dtype) -> Array:
    """A fixed generic unit vector of length `k` (numpy seed 0: no RNG in compiled code)."""
    v = np.random.default_rng(0).standard_normal(k)
    return jnp.asarray(v / np.linalg.norm(v), dtype)


def power_iteration(
    matvec: Callable[[Array], Array],
    v0: Float[ArrayLike, " k"],
    iters: int,
) -> tuple[Float[Array, ""], Float[Array, " k"]]:
    """Largest ``|eigenvalue|`` of a symmetric linear map by power iteration.

    ``v_{j+1} = M v_j / ‖M v_j‖`` for `iters` steps, then ``λ = ‖M v‖``. For a
    symmetric positive semi-definite ``M`` (``AᵀA``, a Hessian near a minimum) ``λ`` is
    a lower bound of ``λ_max`` whose error decays like ``(λ₂/λ₁)^iters``.

    **Arguments:**

    - `matvec`: ``v ↦ M v`` (jittable).
    - `v0`: start vector (need not be normalised; must not be orthogonal to the top
      eigenvector — :func:`fixed_unit_vector` is a generic choice).
    - `iters`: number of iterations (static, ``≥ 0``).

    **Returns:**

    ``(λ, v)``: the estimate and the last unit vector (pass it back as `v0` to
    warm-start a later estimate on a slowly changing ``M``).
    """
    v0 = jnp.asarray(v0)
    tiny = jnp.finfo(v0.dtype).tiny

    def normalise(x):
        return x / jnp.maximum(jnp.linalg.norm(x), tiny)

    v = jax.lax.fori_loop(0, int(iters), lambda _, x: normalise(matvec(x)), normalise(v0))
    return jnp.linalg.norm(matvec(v)), v


def spectral_norm(
    A: Float[ArrayLike, "m k"], *, iters: int = 100, v0: Float[ArrayLike, " k"] | None = None
) -> tuple[Float[Array, ""], Float[Array, " k"]]:
    """``‖A‖₂`` (largest singular value) by :func:`power_iteration` on ``AᵀA``.

    **Arguments:**

    - `A`: a matrix.
    - `iters`: iterations (static).
    - `v0`: optional warm start (default :func:`fixed_unit_vector`).

    **Returns:**

    ``(σ, v)`` with ``σ = ‖A v‖ ≤ ‖A‖₂`` (always a lower bound) and ``v`` the unit vector.
    """
    A = jnp.asarray(A)
    v = fixed_unit_vector(A.shape[1], A.dtype) if v0 is None else jnp.asarray(v0, A.dtype)
    _, v = power_iteration(lambda x: A.T @ (A @ x), v, iters)
    return jnp.linalg.norm(A @ v), v


def pl_ratio(value: Float[ArrayLike, ""], grad_sq: Float[ArrayLike, ""]) -> Float[Array, ""]:
    """The Polyak–Łojasiewicz ratio ``‖∇L‖² / L`` (units 1/time), NaN where ``L ≤ 0``.

    Along the gradient flow ``d/dt log L = −‖∇L‖²/L``: the instantaneous decay rate.

    **Arguments:**

    - `value`: ``L(θ)``.
    - `grad_sq`: ``‖∇L(θ)‖²``.

    **Returns:**

    The ratio, or NaN where it is undefined.
    """
    value, grad_sq = jnp.asarray(value), jnp.asarray(grad_sq)
    positive = value > 0
    return jnp.where(positive, grad_sq / jnp.where(positive, value, 1.0), jnp.nan)


def finite_eigh(
    matrix: Float[Array, "p p"],
) -> tuple[Float[Array, " p"], Float[Array, "p p"], Bool[Array, ""]]:
    """``eigh`` of a symmetric matrix that may be non-finite, without handing LAPACK a NaN.

    LAPACK's symmetric eigensolvers iterate; on a matrix with ``NaN`` or ``inf`` entries
    their result is undefined (some builds loop or fail), so a non-finite matrix is
    replaced by ``0`` before the call and reported through `finite`. Callers
    must treat ``finite = False`` as a failed evaluation (e.g. an infinite step error).

    **Arguments:**

    - `matrix`: a symmetric ``p × p`` matrix (only its lower triangle is read).

    **Returns:**

    ``(eigenvalues ascending, eigenvectors as columns, finite)``; for a non-finite
    `matrix` the eigen-decomposition of the zero matrix and ``finite = False``.
    """
    finite = jnp.all(jnp.isfinite(matrix))
    lam, vecs = jnp.linalg.eigh(jnp.where(finite, matrix, 0), symmetrize_input=False)
    return lam, vecs, finite
