"""Risks and targets: empirical risk values, targets and their knots, data sampling, and
the Lyapunov identity of the constant-target problem at random θ."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax.models.base import partition
from gflow_jax.models.shallow import ShallowReLU
from gflow_jax.risks.base import AbstractRisk
from gflow_jax.risks.empirical import EmpiricalRisk
from gflow_jax.risks.targets import (
    Affine,
    Constant,
    FunctionTarget,
    PiecewiseLinear,
    as_target,
    sample_data,
)


def risk_and_grad(params, static, risk):
    """``(L(θ), ∇L(θ))`` by ``jax.value_and_grad`` on the trainable arrays."""
    return jax.value_and_grad(lambda p: risk(eqx.combine(p, static)))(params)


# -- empirical risk ----------------------------------------------------------------------


@pytest.mark.parametrize("d_in, d_out", [(1, 1), (2, 3)])
def test_empirical_risk_value(d_in, d_out):
    kx, ky, kw = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (9, d_in))
    y = jax.random.normal(ky, (9, d_out))
    m = ShallowReLU(d_in, 4, d_out, key=jax.random.key(1))
    out = np.asarray(m(x))
    sq = np.sum((out - np.asarray(y)) ** 2, axis=1)
    # default weights 1/N: mean squared error
    assert float(EmpiricalRisk(x, y)(m)) == pytest.approx(sq.mean(), rel=1e-14)
    om = np.asarray(jax.random.uniform(kw, (9,)))
    assert float(EmpiricalRisk(x, y, om)(m)) == pytest.approx(om @ sq, rel=1e-14)
    risk = EmpiricalRisk(x, y)
    assert isinstance(risk, AbstractRisk) and risk.num_samples == 9
    np.testing.assert_allclose(risk.residual(m), out - np.asarray(y), rtol=1e-14)


def test_empirical_risk_accepts_1d_data_and_casts_y():
    x = jnp.linspace(0, 1, 5)
    y = np.arange(5, dtype=np.float32)
    risk = EmpiricalRisk(x, y)
    assert risk.x.shape == (5, 1) and risk.y.shape == (5, 1)
    assert risk.y.dtype == risk.x.dtype == jnp.float64
    np.testing.assert_allclose(risk.weights, 0.2)
    # the risk of the zero network is the mean of y^2
    m = ShallowReLU(1, 2, key=jax.random.key(0))
    m = jax.tree_util.tree_map(jnp.zeros_like, m)
    assert float(risk(m)) == pytest.approx(np.mean(np.arange(5.0) ** 2), rel=1e-15)


def test_empirical_risk_constructible_under_jit_and_vmap():
    """Data-dependent checks are skipped for tracers so a risk can be built in jit/vmap."""
    m = ShallowReLU(1, 3, key=jax.random.key(0))
    x = jnp.linspace(0, 1, 4)
    ys = jax.random.normal(jax.random.key(1), (5, 4))
    batched = jax.jit(jax.vmap(lambda y: EmpiricalRisk(x, y)(m)))(ys)
    expected = [float(EmpiricalRisk(x, y)(m)) for y in ys]
    np.testing.assert_allclose(batched, expected, rtol=1e-14)
    w = jnp.array([0.1, 0.2, 0.3, 0.4])
    out = jax.jit(lambda w: EmpiricalRisk(x, ys[0], w)(m))(w)
    assert float(out) == pytest.approx(float(EmpiricalRisk(x, ys[0], w)(m)), rel=1e-14)


# -- targets -----------------------------------------------------------------------------


def test_affine_target():
    f = Affine(2.5, -1.0)
    x = jnp.array([0.0, 0.4, 1.0])
    np.testing.assert_allclose(f(x), [[-1.0], [0.0], [1.5]], rtol=1e-15)
    s, fs = f.knots(-1.0, 2.0)
    np.testing.assert_array_equal(s, [-1.0, 2.0])
    np.testing.assert_allclose(fs, [-3.5, 4.0], rtol=1e-15)
    # vector slope for d_in = 2
    g = Affine(jnp.array([1.0, -2.0]), 0.5)
    xx = jnp.array([[1.0, 1.0], [0.0, 3.0]])
    np.testing.assert_allclose(g(xx), [[-0.5], [-5.5]], rtol=1e-15)
    with pytest.raises(ValueError, match="1-d inputs only"):
        g.knots(0.0, 1.0)


def test_constant_target():
    f = Constant(0.7)
    np.testing.assert_array_equal(f(jnp.zeros((3, 2))), np.full((3, 1), 0.7))
    s, fs = f.knots(0.0, 1.0)
    np.testing.assert_array_equal(s, [0.0, 1.0])
    np.testing.assert_array_equal(fs, [0.7, 0.7])
    g = Constant([1.0, -2.0])  # d_out = 2
    np.testing.assert_array_equal(g(jnp.zeros(4)), np.tile([1.0, -2.0], (4, 1)))
    assert f(jnp.zeros(2, jnp.float32)).dtype == jnp.float32


def test_piecewise_linear_target():
    kx, ky = [0.0, 0.5, 1.0], [0.0, 1.0, 0.5]
    f = PiecewiseLinear(kx, ky)
    x = jnp.array([0.0, 0.25, 0.5, 0.75, 1.0, -1.0, 2.0])
    # exact at knots, linear interpolation between, extension of end pieces outside
    expected = [0.0, 0.5, 1.0, 0.75, 0.5, -2.0, -0.5]
    np.testing.assert_allclose(f(x)[:, 0], expected, rtol=1e-15, atol=1e-15)
    # continuity at the inner knot from both sides
    eps = 1e-9
    left, right = f(jnp.array([0.5 - eps, 0.5 + eps]))[:, 0]
    assert abs(left - right) < 5e-9
    s, fs = f.knots(0.1, 1.0)
    np.testing.assert_allclose(s, [0.1, 0.5, 1.0])
    np.testing.assert_allclose(fs, [0.2, 1.0, 0.5], rtol=1e-14)
    s, fs = f.knots(-1.0, 0.4)  # no inner knot in (-1, 0.4) other than 0
    np.testing.assert_allclose(s, [-1.0, 0.0, 0.4])
    np.testing.assert_allclose(fs, [-2.0, 0.0, 0.8], rtol=1e-14)
    with pytest.raises(ValueError, match="strictly increasing"):
        PiecewiseLinear([0.0, 0.0, 1.0], [0.0, 1.0, 2.0])


def test_function_target_and_as_target():
    f = as_target(lambda x: jnp.sin(x[:, 0]))
    assert isinstance(f, FunctionTarget)
    x = jnp.linspace(0, 1, 4)
    np.testing.assert_allclose(f(x)[:, 0], np.sin(np.linspace(0, 1, 4)), rtol=1e-15)
    a = Affine(1.0)
    assert as_target(a) is a
    with pytest.raises(TypeError, match="target must be"):
        as_target(3.0)


def test_sample_data_grid_and_random():
    f = Affine(2.0, 1.0)
    x, y = sample_data(f, 5, low=-1.0, high=1.0)
    np.testing.assert_allclose(x[:, 0], [-1.0, -0.5, 0.0, 0.5, 1.0], atol=1e-15)
    np.testing.assert_allclose(y[:, 0], 2 * x[:, 0] + 1, rtol=1e-15)
    x, y = sample_data(f, 4000, low=2.0, high=5.0, key=jax.random.key(0))
    assert x.shape == (4000, 1) and y.shape == (4000, 1)
    assert float(x.min()) >= 2.0 and float(x.max()) <= 5.0
    assert float(x.mean()) == pytest.approx(3.5, abs=0.05)  # U[2,5]: mean 3.5, sd 0.87
    assert float(x.var()) == pytest.approx(0.75, rel=0.05)
    np.testing.assert_allclose(y, 2 * x + 1, rtol=1e-14)
    x2, y2 = sample_data(Affine(jnp.array([1.0, 1.0])), 10, d_in=2, key=jax.random.key(1))
    assert x2.shape == (10, 2) and y2.shape == (10, 1)
    np.testing.assert_allclose(y2[:, 0], x2.sum(axis=1), rtol=1e-14)
    x3, y3 = sample_data(f, 3, dtype=jnp.float32)
    assert x3.dtype == y3.dtype == jnp.float32
    with pytest.raises(ValueError, match="pass a key"):
        sample_data(f, 3, d_in=2)


# -- Lyapunov identity for a constant target ------------------------------------------------


def _tree_dot(a, b):
    leaves = jax.tree_util.tree_leaves
    return sum(jnp.sum(x * y) for x, y in zip(leaves(a), leaves(b), strict=True))


@pytest.mark.parametrize("d_in", [1, 2])
def test_lyapunov_identity_at_random_points(d_in):
    """V(θ) = ‖θ‖² + (c − 2ξ)² has ∇V·(−∇L) = −8L for any width, any finite measure μ."""
    xi = 0.7
    kx, kw = jax.random.split(jax.random.key(d_in))
    x = jax.random.uniform(kx, (30, d_in), minval=-1.0, maxval=2.0)
    weights = jax.random.uniform(kw, (30,))  # not normalised: any finite measure
    risk = EmpiricalRisk(x, jnp.full((30,), xi), weights)

    @jax.jit
    def defect(params, static):
        L, g = risk_and_grad(params, static, risk)
        grad_v = jax.tree_util.tree_map(lambda a: 2 * a, params)
        grad_v = eqx.tree_at(lambda p: p.c, grad_v, grad_v.c + 2 * (params.c - 2 * xi))
        return _tree_dot(grad_v, jax.tree_util.tree_map(jnp.negative, g)) + 8 * L, L

    checked = 0
    for width in (1, 3, 8):
        for seed in range(8):
            scale = 0.3 + seed / 4  # from nearly all-active to many dead neurons
            m = ShallowReLU(d_in, width, key=jax.random.key(100 * width + seed), scale=scale)
            err, L = defect(*partition(m))
            assert abs(float(err)) <= 1e-12 * (1 + float(L)), (width, seed, err, L)
            checked += 1
    assert checked == 24
