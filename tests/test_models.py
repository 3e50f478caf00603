"""Models: ReLU convention, flat-vector layout, realisation, generalised gradient
(``relu'(0) = 0``, Jentzen & Riekert arXiv:2107.04479) and initialisation schemes."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax.models.activations import ACTIVATIONS, SMOOTH_ACTIVATIONS, relu, smooth_relu
from gflow_jax.models.base import AbstractModel, partition, trainable_filter
from gflow_jax.models.shallow import ShallowReLU
from gflow_jax.risks.empirical import EmpiricalRisk


def risk_and_grad(params, static, risk):
    """``(L(θ), ∇L(θ))`` by ``jax.value_and_grad`` on the trainable arrays."""
    return jax.value_and_grad(lambda p: risk(eqx.combine(p, static)))(params)


risk_and_grad_jit = eqx.filter_jit(risk_and_grad)  # one compile instead of many eager ops


def _set(model, w, b, v, c):
    arr = lambda a: jnp.asarray(a, model.w.dtype)
    return eqx.tree_at(lambda m: (m.w, m.b, m.v, m.c), model, (arr(w), arr(b), arr(v), arr(c)))


# -- activation ------------------------------------------------------------------------


def test_relu_values_and_derivative_convention():
    x = jnp.array([-2.0, -1e-300, 0.0, 1e-300, 3.0])
    np.testing.assert_array_equal(relu(x), [0.0, 0.0, 0.0, 1e-300, 3.0])
    # relu'(0) = 0 (the generalised gradient), relu' = 1{x > 0} elsewhere
    assert jax.grad(relu)(0.0) == 0.0
    assert jax.grad(relu)(-0.0) == 0.0
    assert jax.grad(relu)(1e-300) == 1.0
    assert jax.grad(relu)(-1e-300) == 0.0
    np.testing.assert_array_equal(jax.vmap(jax.grad(relu))(x), [0.0, 0.0, 0.0, 1.0, 1.0])
    # forward mode agrees, and float32 too
    _, tangent = jax.jvp(relu, (jnp.zeros(3, jnp.float32),), (jnp.ones(3, jnp.float32),))
    assert tangent.dtype == jnp.float32
    np.testing.assert_array_equal(tangent, 0.0)
    # second derivative is 0 everywhere (piecewise linear)
    assert jax.grad(jax.grad(relu))(0.7) == 0.0


def test_smooth_relu_tends_to_relu_and_registry():
    x = jnp.linspace(-2, 2, 101)
    for s in (10.0, 1e3):
        # 0 <= softplus(s x)/s - relu(x) <= log(2)/s, with equality at 0
        gap = smooth_relu(x, s) - relu(x)
        assert float(gap.min()) >= 0.0
        assert float(gap.max()) == pytest.approx(np.log(2) / s, rel=1e-12)
    assert ACTIVATIONS["relu"] is relu
    assert "relu" not in SMOOTH_ACTIVATIONS
    assert SMOOTH_ACTIVATIONS <= set(ACTIVATIONS)


# -- flat parameter vector ---------------------------------------------------------------


def test_to_flat_ordering_scalar_output():
    """Positions in the papers' ordering (1-based): w_j at (j-1)d+1..jd, b at Hd+1..Hd+H,
    v at H(d+1)+1..H(d+2), c last."""
    d, H = 2, 3
    m = ShallowReLU(d, H, key=jax.random.key(0))
    w = np.arange(1, d * H + 1, dtype=float).reshape(H, d)  # w_j = row j
    b = 100.0 + np.arange(1, H + 1)
    v = 200.0 + np.arange(1, H + 1)
    m = _set(m, w, b, v[None, :], [300.0])
    theta = np.asarray(m.to_flat())
    assert theta.shape == (d * H + 2 * H + 1,) == (m.num_params,)
    for j in range(1, H + 1):
        np.testing.assert_array_equal(theta[(j - 1) * d : j * d], w[j - 1])  # 1-based → slice
        assert theta[H * d + j - 1] == b[j - 1]
        assert theta[H * (d + 1) + j - 1] == v[j - 1]
    assert theta[-1] == 300.0
    # d = 1: theta = (w_1..w_H, b_1..b_H, v_1..v_H, c), dim = 3H + 1
    m1 = _set(ShallowReLU(1, 2, key=jax.random.key(1)), [[1.0], [2.0]], [3, 4], [[5, 6]], [7])
    np.testing.assert_array_equal(m1.to_flat(), [1, 2, 3, 4, 5, 6, 7])


def test_to_flat_ordering_vector_output():
    d, H, delta = 1, 3, 2
    m = ShallowReLU(d, H, delta, key=jax.random.key(0))
    m = _set(m, [[1.0], [2.0], [3.0]], [4, 5, 6], [[7, 8, 9], [10, 11, 12]], [13, 14])
    assert m.num_params == d * H + H + delta * H + delta == 14
    # V (delta x H) row-major: output unit by output unit
    np.testing.assert_array_equal(m.to_flat(), np.arange(1, 15))
    back = ShallowReLU.from_flat(jnp.arange(1.0, 15.0), d, H, delta)
    for name in "wbvc":
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name))


@pytest.mark.parametrize("d, H, delta", [(1, 1, 1), (3, 4, 2)])
def test_flat_roundtrip(d, H, delta):
    m = ShallowReLU(d, H, delta, key=jax.random.key(d + H + delta))
    theta = m.to_flat()
    back = ShallowReLU.from_flat(theta, d, H, delta)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(m)
    for name in "wbvc":
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
    np.testing.assert_array_equal(back.to_flat(), theta)
    x = jax.random.normal(jax.random.key(9), (7, d))
    np.testing.assert_array_equal(back(x), m(x))
    # flat -> model -> flat for an arbitrary vector, and dtype preserved
    t32 = jnp.arange(theta.size, dtype=jnp.float32)
    m32 = ShallowReLU.from_flat(t32, d, H, delta)
    assert m32.w.dtype == jnp.float32
    np.testing.assert_array_equal(m32.to_flat(), t32)
    # from_flat works under jit (fixed shapes)
    jitted = jax.jit(lambda t: ShallowReLU.from_flat(t, d, H, delta).to_flat())
    np.testing.assert_array_equal(jitted(theta), theta)


# -- realisation --------------------------------------------------------------------------


def test_realisation_matches_formula():
    """N(x) = c + sum_j v_j relu(w_j . x + b_j), computed independently in numpy."""
    m = ShallowReLU(3, 6, 2, key=jax.random.key(2))
    x = np.asarray(jax.random.normal(jax.random.key(3), (11, 3)))
    w, b, v, c = (np.asarray(getattr(m, n)) for n in "wbvc")
    expected = c[None, :] + np.maximum(x @ w.T + b, 0.0) @ v.T
    np.testing.assert_allclose(m(x), expected, rtol=1e-14, atol=1e-14)
    assert m(x).shape == (11, 2)
    assert (m.d_in, m.width, m.d_out) == (3, 6, 2)


def test_generalised_gradient_at_kinks_matches_closed_form():
    """jax.grad of the empirical risk equals the generalised gradient G with 1{u > 0}, also when
    data points sit exactly on kinks and at a degenerate neuron (w, b) = (0, 0)."""
    xs = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    ys = np.array([0.3, -0.2, 0.9, 0.1, 0.5])
    om = np.array([0.1, 0.3, 0.2, 0.25, 0.15])  # any finite measure
    w = np.array([2.0, -4.0, 0.0, 0.0, 1.5])  # kinks at 0.5 and 0.75 (exact data points)
    b = np.array([-1.0, 3.0, 0.0, 0.4, 0.1])  # neuron 3 degenerate, neuron 4 constant
    v = np.array([0.7, -1.1, 0.9, 0.3, -0.4])
    c = -0.2
    m = _set(ShallowReLU(1, 5, key=jax.random.key(0)), w[:, None], b, v[None, :], [c])
    risk = EmpiricalRisk(xs, ys, om)
    params, static = partition(m)
    L, g = risk_and_grad_jit(params, static, risk)

    pre = np.outer(xs, w) + b  # (N, H)
    act = (pre > 0).astype(float)  # strict indicator: relu'(0) = 0
    r = c + np.maximum(pre, 0) @ v - ys
    assert np.sum(pre == 0) >= 2 + 5  # two kinks on data points, degenerate neuron everywhere
    np.testing.assert_allclose(L, np.sum(om * r**2), rtol=1e-14)
    np.testing.assert_allclose(g.w[:, 0], 2 * v * ((om * r * xs) @ act), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g.b, 2 * v * ((om * r) @ act), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g.v[0], 2 * (om * r) @ np.maximum(pre, 0), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g.c[0], 2 * np.sum(om * r), rtol=1e-13)
    # the degenerate neuron gets exactly zero in its w, b and v slots
    assert g.w[2, 0] == 0.0 and g.b[2] == 0.0 and g.v[0, 2] == 0.0
    # a data point on a kink contributes nothing to w_j, b_j: dropping it (same weights
    # for the others) leaves neuron 1's (w, b) gradient unchanged
    keep = xs != 0.5
    risk_wo = EmpiricalRisk(xs[keep], ys[keep], om[keep])
    _, g_wo = risk_and_grad_jit(params, static, risk_wo)
    assert g.w[0, 0] == pytest.approx(float(g_wo.w[0, 0]), rel=1e-14)
    assert g.b[0] == pytest.approx(float(g_wo.b[0]), rel=1e-14)


# -- initialisation ------------------------------------------------------------------------


def test_init_normal_variances_and_scale():
    m = ShallowReLU(50, 2000, 2, key=jax.random.key(0), scale=0.5)
    # 1e5 samples for w: std error of the variance ≈ 0.45 %
    assert float(jnp.var(m.w)) == pytest.approx(0.25, rel=0.03)
    assert float(jnp.mean(m.w)) == pytest.approx(0.0, abs=0.01)
    assert float(jnp.var(m.b)) == pytest.approx(0.25, rel=0.1)
    assert float(jnp.var(m.v)) == pytest.approx(0.25, rel=0.1)
    assert m.c.shape == (2,)


@pytest.mark.parametrize("init, gain", [("he", 2.0), ("lecun", 1.0)])
def test_init_he_lecun(init, gain):
    d, H, scale = 40, 2500, 3.0
    m = ShallowReLU(d, H, key=jax.random.key(1), init=init, scale=scale)
    assert float(jnp.var(m.w)) == pytest.approx(scale**2 * gain / d, rel=0.03)
    assert float(jnp.var(m.v)) == pytest.approx(scale**2 * gain / H, rel=0.1)
    np.testing.assert_array_equal(m.b, 0.0)
    np.testing.assert_array_equal(m.c, 0.0)


def test_init_dtype_and_determinism():
    m32 = ShallowReLU(2, 3, key=jax.random.key(5), dtype=jnp.float32)
    assert {x.dtype for x in jax.tree_util.tree_leaves(m32)} == {jnp.dtype("float32")}
    m64 = ShallowReLU(2, 3, key=jax.random.key(5))
    assert m64.w.dtype == jnp.float64  # conftest enables x64
    again = ShallowReLU(2, 3, key=jax.random.key(5))
    np.testing.assert_array_equal(again.to_flat(), m64.to_flat())
    other = ShallowReLU(2, 3, key=jax.random.key(6))
    assert not np.array_equal(other.to_flat(), m64.to_flat())


def test_trainable_filter_and_frozen_fields():
    m = ShallowReLU(1, 2, key=jax.random.key(0))
    params, static = partition(m)
    assert all(x is not None for x in (params.w, params.b, params.v, params.c))
    assert jax.tree_util.tree_all(trainable_filter(m))
    # frozen=("v", "c"): the output layer stays in the static part
    f = ShallowReLU(1, 2, key=jax.random.key(0), frozen=("v", "c"))
    params, static = partition(f)
    assert params.v is None and params.c is None and params.w is not None
    back = eqx.combine(params, static)
    np.testing.assert_array_equal(back.v, f.v)
    np.testing.assert_array_equal(back(jnp.ones((3, 1))), m(jnp.ones((3, 1))))

    class Frozen(AbstractModel):  # a model of one's own declares the same interface
        a: jax.Array
        b: jax.Array
        frozen: tuple = eqx.field(static=True, default=("b",))
        is_smooth: ClassVar[bool] = True

        def __call__(self, x):
            return x * self.a[0]

        def well_posed(self):
            return jnp.asarray(True)

        def switching_functions(self, x):
            return jnp.zeros((x.shape[0], 0))

    f = Frozen(jnp.ones(2), jnp.zeros(3))
    params, static = partition(f)
    assert params.b is None and static.b is not None and params.a is not None

    with pytest.raises(ValueError, match="'nope', which is not a field"):
        Frozen(jnp.ones(2), jnp.zeros(3), frozen=("nope",))
    # a model that is not an AbstractModel: every floating array is trainable
    plain = eqx.nn.Linear(2, 1, key=jax.random.key(0))
    assert jax.tree_util.tree_all(trainable_filter(plain))
