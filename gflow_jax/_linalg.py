"""Small dense linear solves in plain XLA operations (no LAPACK custom call).

Why not ``jnp.linalg.solve``: on CPU (jaxlib 0.10) a batched LU is a LAPACK custom call
that splits its batch over XLA's intra-op thread pool and then *blocks* until the pieces
are done. When a program holds several such calls that do not depend on each other (a
``vmap`` over the vertices of a sliding surface, each with its own solves), XLA runs them
concurrently; once every pool thread is one of them, each waiting for work that no
thread is left to run, the process deadlocks: every thread idle in a futex wait, for
ever. Two concurrent calls suffice on a 2-core machine. The piecewise-smooth engine
solves many small systems per step inside its ``while_loop``, so it uses
:func:`solve_without_pivoting`, Gaussian elimination written as XLA operations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

# Up to this size the elimination is unrolled with static indices (XLA fuses the small
# steps; a rolled loop pays a fixed overhead per iteration on CPU); above it a rolled
# loop bounds the size of the compiled program.
_UNROLL_MAX = 16


def _factor(a: Float[Array, "n n"]) -> Float[Array, "n n"]:
    """``A = LU`` by Gaussian elimination without pivoting, packed in one matrix: ``U`` on
    and above the diagonal, the multipliers of the unit lower triangular ``L`` below."""
    n = a.shape[-1]
    if n <= _UNROLL_MAX:
        m = a
        for k in range(n - 1):
            factors = m[k + 1 :, k] / m[k, k]
            m = m.at[k + 1 :, k + 1 :].add(-factors[:, None] * m[k, k + 1 :][None, :])
            m = m.at[k + 1 :, k].set(factors)
        return m
    rows = jnp.arange(n)

    def eliminate(k, m):
        below = rows > k
        factors = jnp.where(below, m[:, k] / m[k, k], 0)
        right = jnp.where(below, m[k], 0)  # row k right of the diagonal (cols > k)
        m = m - factors[:, None] * right[None, :]
        return m.at[:, k].set(jnp.where(below, factors, m[:, k]))

    return jax.lax.fori_loop(0, n - 1, eliminate, a)


def _substitute(
    lu: Float[Array, "n n"], b: Float[Array, " n"], transposed: bool
) -> Float[Array, " n"]:
    """``A⁻¹ b`` (or ``A⁻ᵀ b``) from the packed factors ``lu`` of :func:`_factor`: two
    triangular sweeps, ``O(n²)``. Each sweep solves component ``k`` from the already
    solved ones, which are the only nonzero entries of ``x`` then, so a whole row (or
    column) of ``lu`` can be dotted with ``x``."""
    n = lu.shape[-1]
    unroll = n <= _UNROLL_MAX or 1
    diag = jnp.diagonal(lu)
    first, second = (lu.T, lu.T) if transposed else (lu, lu)
    # A = LU: L y = b (forward, unit diagonal), then U x = y (backward);
    # Aᵀ = UᵀLᵀ: Uᵀ y = b (forward), then Lᵀ x = y (backward, unit diagonal)
    first_diag = diag if transposed else jnp.ones_like(diag)
    second_diag = jnp.ones_like(diag) if transposed else diag

    def forward(k, y):
        return y.at[k].set((b[k] - first[k] @ y) / first_diag[k])

    y = jax.lax.fori_loop(0, n, forward, jnp.zeros_like(b), unroll=unroll)

    def backward(j, x):
        k = n - 1 - j
        return x.at[k].set((y[k] - second[k] @ x) / second_diag[k])

    return jax.lax.fori_loop(0, n, backward, jnp.zeros_like(y), unroll=unroll)


def _solve_one(a: Float[Array, "n n"], b: Float[Array, " n"]) -> Float[Array, " n"]:
    # factored once, outside the solves: under a vmap over right-hand sides only (the
    # rows of a Jacobian pulled back through one system), the factorisation is not batched
    lu = _factor(jax.lax.stop_gradient(a))

    def matvec(x):
        return a @ x

    def solve(_, rhs):
        return _substitute(lu, rhs, transposed=False)

    def transpose_solve(_, rhs):
        return _substitute(lu, rhs, transposed=True)

    return jax.lax.custom_linear_solve(matvec, b, solve, transpose_solve)


def solve_without_pivoting(
    a: Float[Array, "*batch n n"], b: Float[Array, "*batch n"]
) -> Float[Array, "*batch n"]:
    """``A⁻¹ b`` for a batch of small square systems whose symmetric part is positive
    definite, in plain XLA operations (see the module note for why).

    Gaussian elimination without pivoting, ``O(n³)`` per system (``O(n²)`` per further
    right-hand side of the same system: the factors are shared, e.g. by the transposed
    solves of a ``vmap`` of pull-backs). It is meant for
    ``A = S + K`` with ``S = ½(A + Aᵀ) ≻ 0`` (``K`` skew): then every leading block and
    every Schur complement has a positive definite symmetric part too, so no pivot
    vanishes, and the factors obey ``‖|L||U|‖ ≤ n(‖A‖₂ + ‖KS⁻¹K‖₂)`` (Golub & Van Loan,
    *Matrix Computations*, §4.4), so the backward error is that of a pivoted solve times
    about ``1 + ‖KS⁻¹K‖₂/‖A‖₂``. The engine's systems are of that class: Gram matrices
    ``JJᵀ`` of independent rows (plus ``1`` on unused diagonal entries; ``K = 0``), and
    the frozen-pattern equilibrium matrices ``I − γDA`` of implicit networks
    (``0 ≤ D ≤ I``, ``g = γ‖A‖₂ < 1``: ``S ⪰ (1 − g)I``, ``‖K‖₂ ≤ g``, so the factor is at
    most ``1 + g²/(1 − g)``, 9 at ``g = 0.9``). Do not use it for general matrices.
    Derivatives with respect to both ``A`` and ``b`` follow from
    ``jax.lax.custom_linear_solve`` (``dx = A⁻¹(db − dA x)``), so ``grad``, ``jvp`` and
    ``vmap`` compose as for ``jnp.linalg.solve``.

    **Arguments:**

    - `a`: matrices ``(*batch, n, n)`` with positive definite symmetric part.
    - `b`: right-hand sides ``(*batch, n)`` (the same batch shape).

    **Returns:**

    ``x`` with ``A x = b``, shape ``(*batch, n)`` (non-finite where ``A`` is singular).
    """
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"solve_without_pivoting needs square matrices, got {a.shape}.")
    if b.shape != a.shape[:-1]:
        raise ValueError(f"right-hand side of shape {b.shape} for matrices of {a.shape}.")
    fn = _solve_one
    for _ in range(a.ndim - 2):
        fn = jax.vmap(fn)
    return fn(a, b)
