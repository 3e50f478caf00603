"""DeepMLP (Chatterjee, arXiv:2203.16462) against a hand-written numpy forward, finite
differences and the closed-form first-layer gradient at Chatterjee's positive initialisation."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from toys import descend as gradient_descent

from gflow_jax.models.base import partition
from gflow_jax.models.deep import DeepMLP, linearly_independent_data
from gflow_jax.risks.empirical import EmpiricalRisk

NP_ACT = {
    "tanh": np.tanh,
    "sigmoid": lambda u: 1.0 / (1.0 + np.exp(-u)),
    "softplus": lambda u: np.logaddexp(0.0, u),
    "relu": lambda u: np.maximum(u, 0.0),
}


def np_forward(model, x, activation, sharpness=10.0):
    """``h_l = s(a_l W_l h_{l-1} + b_l)``, ``N = a_{L+1} V h_L + c`` in plain numpy."""
    if activation == "smooth_relu":
        act = lambda u: np.logaddexp(0.0, sharpness * u) / sharpness
    else:
        act = NP_ACT[activation]
    h = np.asarray(x, np.float64)
    for layer, W in enumerate(model.weights):
        z = model.multipliers[layer] * h @ np.asarray(W).T
        if model.biases is not None:
            z = z + np.asarray(model.biases[layer])
        h = act(z)
    out = model.multipliers[-1] * h @ np.asarray(model.v).T
    if model.c is not None:
        out = out + np.asarray(model.c)
    return out


def randomise(model, seed, scale=0.5):
    """Replace every array (biases included) by random values, keeping the structure."""
    rng = np.random.default_rng(seed)
    params, static = partition(model)
    flat, unravel = ravel_pytree(params)
    flat = jnp.asarray(scale * rng.standard_normal(flat.shape), flat.dtype)
    return eqx.combine(unravel(flat), static)


@pytest.mark.parametrize(
    "widths, activation, init, use_bias",
    [
        ((3, 5, 4, 2), "tanh", "lecun", True),
        ((3, 5, 4, 2), "sigmoid", "he", True),
        ((2, 6, 1), "softplus", "ntk", True),
        ((4, 3, 3, 3, 1), "smooth_relu", "positive", True),
        ((3, 4, 2), "relu", "lecun", False),
        ((3, 2), "tanh", "ntk", True),  # L = 0: the affine model
    ],
)
def test_forward_matches_numpy(widths, activation, init, use_bias):
    key = jax.random.key(0)
    model = DeepMLP(widths, activation, key=key, init=init, use_bias=use_bias, sharpness=7.0)
    model = randomise(model, 1)  # non-zero biases / first layer too
    x = np.random.default_rng(2).standard_normal((7, widths[0]))
    out = np.asarray(eqx.filter_jit(model)(jnp.asarray(x)))
    assert out.shape == (7, widths[-1])
    np.testing.assert_allclose(out, np_forward(model, x, activation, 7.0), rtol=1e-13, atol=1e-14)
    assert model.widths == widths
    assert model.depth == len(widths) - 2
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(partition(model)[0]))
    assert n_params == model.num_params


def test_init_scalings():
    """Empirical variances of the Gaussian initialisations (160 000 entries each)."""
    widths = (400, 400, 400, 1)
    for init, var in (("lecun", 1 / 400), ("he", 2 / 400), ("ntk", 1.0)):
        m = DeepMLP(widths, "tanh", key=jax.random.key(3), init=init)
        W = np.asarray(m.weights[1])
        assert abs(W.var() / var - 1) < 0.03, init
        assert abs(W.mean()) < 5 * math.sqrt(var / W.size)
        assert all(np.all(np.asarray(b) == 0) for b in m.biases)
    ntk = DeepMLP(widths, "tanh", key=jax.random.key(3), init="ntk")
    assert ntk.multipliers == pytest.approx((1 / 20, 1 / 20, 1 / 20))
    lecun = DeepMLP(widths, "tanh", key=jax.random.key(3), init="lecun")
    assert lecun.multipliers == (1.0,) * 3
    # output_scale multiplies the output weights of a Gaussian init exactly
    a = DeepMLP((3, 4, 2), "tanh", key=jax.random.key(4), init="he")
    b = DeepMLP((3, 4, 2), "tanh", key=jax.random.key(4), init="he", output_scale=3.0)
    np.testing.assert_allclose(np.asarray(b.v), 3.0 * np.asarray(a.v), rtol=1e-15)


def test_positive_init_structure():
    M = 50.0
    widths = (6, 5, 4, 3, 2)
    m = DeepMLP(widths, "tanh", key=jax.random.key(5), init="positive", output_scale=M)
    assert np.all(np.asarray(m.weights[0]) == 0)  # first layer 0
    for layer in (1, 2):  # hidden layers strictly positive, U(0.5, 1.5)/fan_in
        W = np.asarray(m.weights[layer]) * widths[layer]
        assert np.all(W >= 0.5) and np.all(W <= 1.5)
    v = np.asarray(m.v) * widths[-2] / M
    assert np.all(v >= 0.5) and np.all(v <= 1.5)
    assert all(np.all(np.asarray(b) == 0) for b in m.biases) and np.all(np.asarray(m.c) == 0)
    x = jax.random.normal(jax.random.key(6), (9, 6))
    # tanh(0) = 0: the output at initialisation is exactly 0, whatever M
    assert np.all(np.asarray(m(x)) == 0)
    # sigmoid(0) = 1/2: every input gives the same, O(M) output (the caveat of this init)
    s = DeepMLP(widths, "sigmoid", key=jax.random.key(5), init="positive", output_scale=M)
    out = np.asarray(s(x))
    np.testing.assert_allclose(out, np.broadcast_to(out[0], out.shape), rtol=1e-14)
    assert np.all(out > 0.2 * M)


def _np_delta(model):
    """Back-propagated ``∂φ/∂z_1`` at the positive init (same for every input, W_1 = 0)."""
    act_prime = lambda z: 1 - np.tanh(z) ** 2
    zs, h = [], np.zeros(model.widths[1])  # z_1 = W_1 x + b_1 = 0 for every x
    zs.append(h.copy())
    h = np.tanh(h)
    for W in model.weights[1:]:
        z = np.asarray(W) @ h
        zs.append(z)
        h = np.tanh(z)
    delta = act_prime(zs[-1]) * np.asarray(model.v)[0]
    for layer in range(len(model.weights) - 1, 0, -1):
        delta = act_prime(zs[layer - 1]) * (np.asarray(model.weights[layer]).T @ delta)
    return delta


def test_positive_init_first_layer_gradient_and_pl_bound():
    """Chatterjee's initialisation: ``∇_{W_1} f = (2/n) δ (Xᵀe)ᵀ`` and
    ``‖∇f‖²/f ≥ (4/n) λ_min(XXᵀ) ‖δ‖²`` at the positive initialisation."""
    n, d = 5, 7
    data = linearly_independent_data(n, d, jax.random.key(7))
    risk = EmpiricalRisk(data.x, data.y)
    m = DeepMLP((d, 6, 5, 1), "tanh", key=jax.random.key(8), init="positive", output_scale=20.0)
    params, static = partition(m)
    f, grad = jax.jit(jax.value_and_grad(lambda p: risk(eqx.combine(p, static))))(params)
    X, y = np.asarray(data.x), np.asarray(data.y)[:, 0]
    e = np.asarray(m(data.x))[:, 0] - y
    delta = _np_delta(m)
    expected = (2.0 / n) * np.outer(delta, X.T @ e)
    np.testing.assert_allclose(np.asarray(grad.weights[0]), expected, rtol=1e-12, atol=1e-14)
    g2 = float(ravel_pytree(grad)[0] @ ravel_pytree(grad)[0])
    bound = 4.0 / n * data.gram_lambda_min * float(delta @ delta) * float(f)
    assert g2 >= bound > 0
    # λ_min reported by the data helper is that of the n × n Gram matrix
    assert data.gram_lambda_min == pytest.approx(np.linalg.eigvalsh(X @ X.T)[0], rel=1e-12)


def test_gradient_matches_finite_differences():
    m = DeepMLP((3, 4, 3, 2), "softplus", key=jax.random.key(9), init="he")
    m = randomise(m, 10)
    x = jax.random.normal(jax.random.key(11), (6, 3))
    y = jax.random.normal(jax.random.key(12), (6, 2))
    risk = EmpiricalRisk(x, y)
    params, static = partition(m)
    flat, unravel = ravel_pytree(params)
    loss = lambda th: risk(eqx.combine(unravel(th), static))
    grad = np.asarray(jax.jit(jax.grad(loss))(flat))
    h = 1e-6
    steps = h * jnp.eye(flat.size)
    batched = jax.jit(jax.vmap(loss))  # all perturbed points in one compiled call
    fd = (np.asarray(batched(flat + steps)) - np.asarray(batched(flat - steps))) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_float32():
    n, d = 4, 6
    data = linearly_independent_data(n, d, jax.random.key(13), dtype=jnp.float32)
    assert data.x.dtype == jnp.float32 and data.y.dtype == jnp.float32
    risk = EmpiricalRisk(data.x, data.y)
    m = DeepMLP(
        (d, 5, 5, 1),
        "tanh",
        key=jax.random.key(14),
        init="positive",
        output_scale=10.0,
        dtype=jnp.float32,
    )
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(partition(m)[0]))
    assert m(data.x).dtype == jnp.float32
    # the float32 forward agrees with the float64 one to float32 precision
    m64 = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, m
    )
    m_rand = randomise(m64, 15)
    m_rand32 = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, m_rand
    )
    np.testing.assert_allclose(
        np.asarray(m_rand32(data.x)),
        np.asarray(m_rand(data.x.astype(jnp.float64))),
        rtol=1e-5,
        atol=1e-5,
    )
    # gradient descent in float32 reaches the float32 convergence threshold
    traj = gradient_descent(m, risk, learning_rate=2e-2, steps=20_000)
    assert traj.final_risk.dtype == jnp.float32
    assert traj.outcome_name == "CONVERGED"


def test_linearly_independent_data():
    data = linearly_independent_data(6, 9, jax.random.key(16))
    X, y = np.asarray(data.x), np.asarray(data.y)
    assert X.shape == (6, 9) and y.shape == (6, 1)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-14)
    assert np.mean(y**2) == pytest.approx(1.0, rel=1e-14)
    assert data.gram_lambda_min == pytest.approx(np.linalg.eigvalsh(X @ X.T)[0], rel=1e-12)
    assert data.gram_lambda_min > 0
    # same key, same data
    again = linearly_independent_data(6, 9, jax.random.key(16))
    np.testing.assert_array_equal(np.asarray(again.x), X)
    with pytest.raises(ValueError, match="linearly independent"):
        linearly_independent_data(10, 9, jax.random.key(0))
    dep = linearly_independent_data(10, 9, jax.random.key(0), allow_dependent=True)
    assert dep.gram_lambda_min < 1e-12
    for bad in (0, -1):
        with pytest.raises(ValueError):
            linearly_independent_data(bad, 3, jax.random.key(0))
    with pytest.raises(TypeError):
        linearly_independent_data(2.0, 3, jax.random.key(0))


def test_bad_inputs():
    key = jax.random.key(0)
    for widths in ((3,), (), (3, 0, 1), (0, 2)):
        with pytest.raises(ValueError):
            DeepMLP(widths, "tanh", key=key)
    with pytest.raises(TypeError):
        DeepMLP((3, 2.5, 1), "tanh", key=key)
    with pytest.raises(TypeError):
        DeepMLP(3, "tanh", key=key)
    with pytest.raises(ValueError, match="activation must be"):
        DeepMLP((3, 2, 1), "gelu", key=key)
    with pytest.raises(ValueError, match="init"):
        DeepMLP((3, 2, 1), "tanh", key=key, init="xavier")
    for M in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="output_scale"):
            DeepMLP((3, 2, 1), "tanh", key=key, init="positive", output_scale=M)
    with pytest.raises(ValueError, match="sharpness"):
        DeepMLP((3, 2, 1), "smooth_relu", key=key, sharpness=0.0)
    m = DeepMLP((3, 2, 1), "tanh", key=key)
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        m(jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        m(jnp.ones(3))
    assert m.is_smooth and not DeepMLP((3, 2, 1), "relu", key=key).is_smooth
