"""The engine's pure-XLA small solves (`gflow_jax._linalg`) against LAPACK and numpy."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax._linalg import _UNROLL_MAX, solve_without_pivoting


def _implicit_systems(n, batch, seed):
    """``I − γDA`` with ``γ‖A‖₂ = 0.95`` and random 0/1 diagonals ``D``: the frozen-pattern
    equilibrium matrices of an implicit network (positive definite symmetric part)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    a *= 0.95 / np.linalg.norm(a, 2)
    d = rng.random((batch, n)) > 0.4
    return np.eye(n)[None] - d[:, :, None] * a[None], rng.standard_normal((batch, n))


def _gram_systems(n, batch, seed):
    """``JJᵀ`` of random rows: the Gram matrices of sliding surfaces (SPD)."""
    rng = np.random.default_rng(seed)
    j = rng.standard_normal((batch, n, 3 * n))
    return j @ np.swapaxes(j, -1, -2), rng.standard_normal((batch, n))


@pytest.mark.parametrize("n", [1, 2, 7, _UNROLL_MAX + 5])  # unrolled and rolled loops
@pytest.mark.parametrize("make", [_implicit_systems, _gram_systems])
def test_solution_matches_numpy(n, make):
    a, b = make(n, 3, seed=n)
    x = np.asarray(solve_without_pivoting(jnp.asarray(a), jnp.asarray(b)))
    ref = np.linalg.solve(a, b[..., None])[..., 0]
    scale = np.linalg.cond(a).max() * np.abs(ref).max()
    assert np.max(np.abs(x - ref)) <= 64 * np.finfo(np.float64).eps * scale
    # a leading batch of two dimensions
    x2 = solve_without_pivoting(jnp.asarray(a).reshape(1, 3, n, n), jnp.asarray(b)[None])
    np.testing.assert_allclose(np.asarray(x2)[0], x, rtol=1e-14, atol=1e-15)


def test_residual_obeys_the_growth_bound_of_the_class():
    """Without pivoting the backward error grows with the skew part: for ``A = S + K``
    (``S`` symmetric positive definite, ``K`` skew) the factors satisfy
    ``‖|L||U|‖ ≤ n(‖A‖₂ + ‖KS⁻¹K‖₂)`` (Golub & Van Loan, Matrix Computations, §4.4.5).
    Tiny diagonal, large skew entries: the bound is large but met, and a symmetric
    matrix of the same diagonal is solved to rounding."""
    a = np.array([[1e-3, 5.0, 0.0], [-5.0, 1e-3, 2.0], [0.0, -2.0, 1.0]])
    b = np.array([1.0, 2.0, 3.0])
    sym, skew = 0.5 * (a + a.T), 0.5 * (a - a.T)
    growth = np.linalg.norm(a, 2) + np.linalg.norm(skew @ np.linalg.solve(sym, skew), 2)
    x = np.asarray(solve_without_pivoting(jnp.asarray(a), jnp.asarray(b)))
    eps = np.finfo(np.float64).eps
    residual = np.max(np.abs(a @ x - b))
    assert residual <= 3 * eps * growth * np.max(np.abs(x))
    assert residual > 100 * eps  # the growth is real: this is not LAPACK's gesv
    xs = np.asarray(solve_without_pivoting(jnp.asarray(sym), jnp.asarray(b)))
    np.testing.assert_allclose(sym @ xs, b, rtol=0, atol=64 * eps * np.max(np.abs(xs)))


@pytest.mark.parametrize("n", [4, _UNROLL_MAX + 3])
def test_derivatives_match_lapack_solve(n):
    """First and second derivatives (reverse, and forward over reverse as in the tail
    phase's Hessian) in both arguments agree with those of `jnp.linalg.solve`."""
    a, b = (jnp.asarray(v) for v in _implicit_systems(n, 2, seed=7))

    def loss(solve):
        return lambda a, b: jnp.sum(jnp.sin(solve(a, b)) * jnp.arange(1, n + 1))

    def lapack(a, b):
        return jnp.linalg.solve(a, b[..., None])[..., 0]

    ours, ref = loss(solve_without_pivoting), loss(lapack)
    for g, g_ref in zip(jax.grad(ours, (0, 1))(a, b), jax.grad(ref, (0, 1))(a, b), strict=True):
        np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12)
    h = jax.jacfwd(jax.grad(ours, 1), 0)(a, b)
    h_ref = jax.jacfwd(jax.grad(ref, 1), 0)(a, b)
    np.testing.assert_allclose(h, h_ref, rtol=1e-9, atol=1e-11)


def test_validation():
    with pytest.raises(ValueError, match="square"):
        solve_without_pivoting(jnp.ones((2, 3)), jnp.ones(2))
    with pytest.raises(ValueError, match="right-hand side"):
        solve_without_pivoting(jnp.eye(3), jnp.ones(2))


def test_concurrent_batched_solves_in_a_loop_finish():
    """Eight independent batched solves per iteration of a compiled loop: with
    `jnp.linalg.solve` (a LAPACK call that parks its thread-pool thread until its batch's
    pieces are done) this program deadlocked on a 2-core machine (every thread idle in a
    futex wait; measured with jaxlib 0.10.2). The pure-XLA solve must finish, and agree
    with numpy."""
    script = textwrap.dedent(
        """
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp, numpy as np
        from gflow_jax._linalg import solve_without_pivoting
        key = jax.random.key(0)
        a = jax.random.normal(key, (8, 8, 32, 32)) / 32 + 2 * jnp.eye(32)
        b = jax.random.normal(jax.random.key(1), (8, 8, 32))

        @jax.jit
        def run(a, b):
            def body(i, x):
                return jnp.stack([solve_without_pivoting(a[k], b[k] + 1e-3 * x[k])
                                  for k in range(8)])
            return jax.lax.fori_loop(0, 50, body, b)

        for _ in range(20):
            x = np.asarray(run(a, b))
        ref = b
        for _ in range(50):
            ref = np.linalg.solve(np.asarray(a), (np.asarray(b) + 1e-3 * ref)[..., None])[..., 0]
        print(np.max(np.abs(x - ref)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[-1]) < 1e-12
