"""Declared interfaces of models, risks and targets: switching functions against hand
computations, the kink margin (zero on a kink, invariant to rescaling a neuron), frozen
fields, and the clear errors of argument validation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax.models.base import AbstractModel, is_smooth, is_well_posed, partition
from gflow_jax.models.deep import DeepMLP, linearly_independent_data
from gflow_jax.models.implicit import ImplicitReLU
from gflow_jax.models.shallow import ShallowReLU
from gflow_jax.risks.base import AbstractPiecewiseSmoothRisk
from gflow_jax.risks.empirical import EmpiricalRisk
from gflow_jax.risks.measures import Uniform
from gflow_jax.risks.population import PopulationRisk
from gflow_jax.risks.targets import (
    AbstractPiecewiseLinearTarget,
    AbstractTarget,
    Affine,
    Constant,
    FunctionTarget,
    PiecewiseLinear,
    sample_data,
)

KEY = jax.random.key(0)


def shallow(w, b, v, c):
    """A ShallowReLU with the given arrays ``w (H, d), b (H,), v (1, H), c (1,)``."""
    w = np.atleast_2d(np.asarray(w, float))
    template = ShallowReLU(w.shape[1], w.shape[0], key=KEY)
    arrays = tuple(jnp.asarray(a, float) for a in (w, b, v, c))
    return eqx.tree_at(lambda m: (m.w, m.b, m.v, m.c), template, arrays)


def rescale_neuron(model: ShallowReLU, j: int, a: float) -> ShallowReLU:
    """``(w_j, b_j, v_j) ↦ (a w_j, a b_j, v_j / a)``: the same function for ``a > 0``."""
    return eqx.tree_at(
        lambda m: (m.w, m.b, m.v),
        model,
        (model.w.at[j].multiply(a), model.b.at[j].multiply(a), model.v.at[:, j].divide(a)),
    )


# -- the declared interface ---------------------------------------------------------------


def test_models_declare_the_interface():
    x = jnp.ones((2, 3))
    models = {
        "shallow": ShallowReLU(3, 4, key=KEY),
        "deep_tanh": DeepMLP((3, 4, 1), "tanh", key=KEY),
        "deep_relu": DeepMLP((3, 4, 1), "relu", key=KEY),
        "deep_affine_relu": DeepMLP((3, 1), "relu", key=KEY),
        "implicit": ImplicitReLU(3, 4, gamma=0.3, key=KEY, init="spectral"),
    }
    smooth = {"deep_tanh": True, "deep_affine_relu": True}
    for name, model in models.items():
        assert isinstance(model, AbstractModel), name
        assert type(model).__final__  # concrete classes are final (typing.final)
        assert model.frozen == ()
        assert model.is_smooth is smooth.get(name, False) and is_smooth(model) is model.is_smooth
        assert bool(model.well_posed()) and bool(is_well_posed(model)), name
        s = model.switching_functions(x)
        assert s.shape[0] == 2 and (s.shape[1] == 0) == model.is_smooth, name
    # an implicit network that is not a contraction is not well posed
    with pytest.warns(UserWarning):
        bad = ImplicitReLU(3, 4, gamma=1.5, key=KEY, init="spectral")
    assert not bool(bad.well_posed()) and not bool(is_well_posed(bad))
    # a model of one's own that is not an AbstractModel: smooth and well posed
    assert is_smooth(eqx.nn.Linear(2, 1, key=KEY)) and bool(is_well_posed(lambda x: x))


def test_targets_declare_the_interface():
    for target in (Affine(1.0, 2.0), Constant(0.5), PiecewiseLinear([0.0, 1.0], [0.0, 2.0])):
        assert isinstance(target, AbstractPiecewiseLinearTarget)
        assert type(target).__final__
    f = FunctionTarget(jnp.sin)
    assert isinstance(f, AbstractTarget) and not isinstance(f, AbstractPiecewiseLinearTarget)
    with pytest.raises(TypeError):
        AbstractTarget()  # abstract: __call__ is not implemented
    with pytest.raises(TypeError):
        AbstractPiecewiseLinearTarget()  # abstract: knots is not implemented


# -- switching functions against hand computations ----------------------------------------


def test_shallow_switching_functions():
    m = ShallowReLU(2, 3, key=jax.random.key(1))
    x = np.array([[0.5, -1.0], [2.0, 0.25], [0.0, 0.0], [-1.5, 3.0]])
    w, b = np.asarray(m.w), np.asarray(m.b)
    expected = np.array([[w[j] @ x[i] + b[j] for j in range(3)] for i in range(4)])
    np.testing.assert_allclose(m.switching_functions(x), expected, rtol=1e-14, atol=1e-15)
    expected_scale = [np.sqrt(w[j] @ w[j] + b[j] ** 2) for j in range(3)]
    np.testing.assert_allclose(m.switching_scales(), expected_scale, rtol=1e-14)


def test_deep_switching_functions():
    x = np.asarray(jax.random.normal(jax.random.key(2), (5, 2)))
    for init in ("lecun", "ntk"):
        m = DeepMLP((2, 3, 4, 1), "relu", key=jax.random.key(3), init=init)
        m = eqx.tree_at(lambda m: m.biases, m, (jnp.arange(3.0) / 4, -jnp.arange(4.0) / 5))
        W1, W2 = (np.asarray(W) for W in m.weights)
        b1, b2 = (np.asarray(b) for b in m.biases)
        a1, a2, _ = m.multipliers
        z1 = a1 * x @ W1.T + b1
        z2 = a2 * np.maximum(z1, 0.0) @ W2.T + b2
        s = m.switching_functions(x)
        assert s.shape == (5, 7)
        np.testing.assert_allclose(s, np.concatenate([z1, z2], axis=1), rtol=1e-13, atol=1e-14)
        scales = np.concatenate(
            [np.sqrt(a1**2 * np.sum(W1**2, 1) + b1**2), np.sqrt(a2**2 * np.sum(W2**2, 1) + b2**2)]
        )
        np.testing.assert_allclose(m.switching_scales(), scales, rtol=1e-13)
    smooth = DeepMLP((2, 3, 1), "softplus", key=KEY)
    assert smooth.switching_functions(x).shape == (5, 0)
    assert smooth.switching_scales().shape == (0,)


@pytest.mark.parametrize("input_map", ["linear", "relu"])
def test_implicit_switching_functions(input_map):
    m = ImplicitReLU(2, 4, gamma=0.5, key=jax.random.key(4), init="spectral", input_map=input_map)
    x = np.asarray(jax.random.normal(jax.random.key(5), (3, 2)))
    gA, W = 0.5 * np.asarray(m.A), np.asarray(m.W)
    pre_in = x @ W.T
    phi = np.maximum(pre_in, 0.0) if input_map == "relu" else pre_in
    z = np.zeros((3, 4))
    for _ in range(200):  # Picard in numpy: contraction 0.5, error 0.5^200
        z = np.maximum(z @ gA.T + phi, 0.0)
    expected = z @ gA.T + phi
    if input_map == "relu":
        expected = np.concatenate([expected, pre_in], axis=1)
    np.testing.assert_allclose(m.switching_functions(x), expected, rtol=1e-9, atol=1e-10)


# -- kink margins ---------------------------------------------------------------------------


def test_empirical_kink_margin_zero_on_a_kink_and_rescaling_invariant():
    xs = np.array([0.0, 0.25, 0.5, 0.9])
    w, b = np.array([2.0, -1.0, 0.7]), np.array([-1.0, 0.3, 0.2])  # neuron 0's kink: 0.5
    m = shallow(w[:, None], b, [[0.4, -0.3, 1.1]], [0.1])
    risk = EmpiricalRisk(xs, np.sin(xs))
    assert isinstance(risk, AbstractPiecewiseSmoothRisk)
    assert float(risk.kink_margin(m)) == 0.0
    # a kink at a point of weight 0 does not count
    off = EmpiricalRisk(xs, np.sin(xs), weights=[1.0, 1.0, 0.0, 1.0])
    keep = xs != 0.5
    hand = np.min(np.abs(np.outer(xs[keep], w) + b) / np.sqrt(w**2 + b**2))
    assert float(off.kink_margin(m)) == pytest.approx(hand, rel=1e-14) and hand > 0
    # rescaling a neuron changes neither the function nor the margin
    for j, a in ((0, 3.0), (1, 0.01), (2, 250.0)):
        r = rescale_neuron(m, j, a)
        assert float(off(r)) == pytest.approx(float(off(m)), rel=1e-12)
        assert float(off.kink_margin(r)) == pytest.approx(hand, rel=1e-12)
    # the raw min |s_ij| would not be invariant: the scale matters
    r = rescale_neuron(m, 1, 1e-3)
    assert float(np.min(np.abs(r.switching_functions(xs[keep, None])))) < 0.1 * hand
    # a degenerate neuron (w_j, b_j) = 0 sits on its kink everywhere
    dead = eqx.tree_at(lambda m: (m.w, m.b), m, (m.w.at[2].set(0.0), m.b.at[2].set(0.0)))
    assert float(off.kink_margin(dead)) == 0.0


def test_kink_margin_of_deep_smooth_and_foreign_models():
    data = linearly_independent_data(4, 5, jax.random.key(6))
    risk = EmpiricalRisk(data.x, data.y)
    assert float(risk.kink_margin(DeepMLP((5, 3, 1), "tanh", key=KEY))) == np.inf
    assert float(risk.kink_margin(eqx.nn.Linear(5, 1, key=KEY))) == np.inf
    m = DeepMLP((5, 3, 2, 1), "relu", key=jax.random.key(7))
    m = eqx.tree_at(lambda m: m.biases, m, (jnp.array([0.1, -0.2, 0.3]), jnp.array([0.2, -0.1])))
    margin = float(risk.kink_margin(m))
    hand = np.min(np.abs(m.switching_functions(data.x)) / m.switching_scales())
    assert margin == pytest.approx(float(hand), rel=1e-14) and margin > 0
    # rescale hidden neuron 1 of layer 1 (its row, its bias) and divide its column in W_2
    a = 7.0
    W1, W2 = m.weights
    r = eqx.tree_at(
        lambda m: (m.weights, m.biases[0]),
        m,
        ((W1.at[1].multiply(a), W2.at[:, 1].divide(a)), m.biases[0].at[1].multiply(a)),
    )
    np.testing.assert_allclose(r(data.x), m(data.x), rtol=1e-13)
    assert float(risk.kink_margin(r)) == pytest.approx(margin, rel=1e-12)
    # implicit networks: the raw margin over gamma A z* + W x
    imp = ImplicitReLU(5, 3, gamma=0.4, key=KEY, init="spectral")
    raw = np.min(np.abs(np.asarray(imp.switching_functions(data.x))))
    assert float(risk.kink_margin(imp)) == pytest.approx(float(raw), rel=1e-14)


def test_quadrature_kink_margin_at_the_nodes():
    m = shallow([[1.0], [-2.0]], [-0.3, 1.5], [[1.0, 0.5]], [0.0])
    risk = PopulationRisk(Affine(1.0), Uniform(0.0, 1.0), nodes=16)
    assert isinstance(risk, AbstractPiecewiseSmoothRisk)
    nodes = np.asarray(risk.x)[:, 0]
    w, b = np.array([1.0, -2.0]), np.array([-0.3, 1.5])
    hand = np.min(np.abs(np.outer(nodes, w) + b) / np.sqrt(w**2 + b**2))
    assert float(risk.kink_margin(m)) == pytest.approx(hand, rel=1e-13)
    on_node = eqx.tree_at(lambda m: m.b, m, m.b.at[0].set(-nodes[3]))  # kink on node 3
    assert float(risk.kink_margin(on_node)) == 0.0


def test_exact_1d_kink_margin():
    a, b = -0.5, 1.0
    risk = PopulationRisk.uniform_1d(PiecewiseLinear([-1.0, 0.2, 2.0], [0.0, 1.0, -1.0]), a, b)
    assert isinstance(risk, AbstractPiecewiseSmoothRisk)
    w, bias = np.array([1.3, -0.7, 0.4]), np.array([0.2, 0.5, -0.1])
    m = shallow(w[:, None], bias, [[0.8, -1.1, 0.5]], [0.1])
    hand = np.min(np.minimum(np.abs(w * a + bias), np.abs(w * b + bias)) / np.hypot(w, bias))
    assert float(risk.kink_margin(m)) == pytest.approx(hand, rel=1e-14)
    for j, s in ((0, 4.0), (2, 0.05)):
        assert float(risk.kink_margin(rescale_neuron(m, j, s))) == pytest.approx(hand, rel=1e-12)
    # a kink on an end point: margin 0, and there the Hessian of the risk jumps
    at_a = eqx.tree_at(lambda m: m.b, m, m.b.at[0].set(-1.3 * a))
    assert float(risk.kink_margin(at_a)) == 0.0
    params, static = partition(at_a)
    hess_b = jax.jit(
        jax.hessian(lambda bb: risk(eqx.combine(eqx.tree_at(lambda p: p.b, params, bb), static)))
    )
    eps = 1e-7
    jump = hess_b(at_a.b.at[0].add(eps)) - hess_b(at_a.b.at[0].add(-eps))
    assert float(jnp.abs(jump[0, 0])) > 0.1
    # w_j = 0 with b_j != 0 is a smooth point (the kink is far outside [a, b]): margin > 0
    flat = eqx.tree_at(lambda m: m.w, m, m.w.at[1, 0].set(0.0))
    assert float(risk.kink_margin(flat)) > 0.0
    dead = eqx.tree_at(lambda m: (m.w, m.b), m, (m.w.at[1, 0].set(0.0), m.b.at[1].set(0.0)))
    assert float(risk.kink_margin(dead)) == 0.0


# -- frozen fields --------------------------------------------------------------------------


def test_frozen_fields_are_not_trainable():
    cases = [
        (ShallowReLU(2, 3, key=KEY, frozen=("v", "c")), ("v", "c"), ("w", "b")),
        (ShallowReLU(2, 3, key=KEY, frozen="w"), ("w",), ("b", "v", "c")),
        (DeepMLP((2, 3, 3, 1), "tanh", key=KEY, frozen=("weights",)), ("weights",), ("v",)),
        (
            ImplicitReLU(2, 3, gamma=0.3, key=KEY, use_bias=True, frozen=("c", "A")),
            ("A", "c"),
            ("W", "u"),
        ),
    ]
    for model, frozen, trainable in cases:
        assert model.frozen == frozen
        params, static = partition(model)
        for name in frozen:
            assert jax.tree_util.tree_leaves(getattr(params, name)) == [], name
            assert jax.tree_util.tree_leaves(getattr(static, name)) != [], name
        for name in trainable:
            assert jax.tree_util.tree_leaves(getattr(params, name)) != [], name
        back = eqx.combine(params, static)
        np.testing.assert_array_equal(back(jnp.ones((2, 2))), model(jnp.ones((2, 2))))
    with pytest.raises(ValueError, match=r"frozen names unknown fields \['x'\]"):
        ShallowReLU(2, 3, key=KEY, frozen=("x",))
    with pytest.raises(ValueError, match="use_bias=False"):
        DeepMLP((2, 3, 1), key=KEY, use_bias=False, frozen=("biases",))
    with pytest.raises(ValueError, match="use_bias=True"):
        ImplicitReLU(2, 3, gamma=0.3, key=KEY, frozen=("c",))
    with pytest.raises(TypeError, match="frozen must be"):
        ShallowReLU(2, 3, key=KEY, frozen=3)


# -- clear errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: ShallowReLU(1, 2, **kw),
        lambda **kw: DeepMLP((1, 2, 1), **kw),
        lambda **kw: ImplicitReLU(1, 2, gamma=0.1, **kw),
    ],
    ids=["shallow", "deep", "implicit"],
)
def test_clear_errors_for_key_and_dtype(make):
    with pytest.raises(TypeError, match="key is required"):
        make(key=None)
    with pytest.raises(TypeError, match=r"not the number 42: pass key=jax.random.key\(0\)"):
        make(key=42)
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        make(key="seed")
    with pytest.raises(ValueError, match="single PRNG key"):
        make(key=jax.random.split(KEY, 3))
    with pytest.raises(TypeError, match="dtype must be a floating dtype.*int32"):
        make(key=KEY, dtype=jnp.int32)
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        make(key=KEY, dtype="nonsense")
    # legacy raw keys and keys traced under vmap are fine
    assert isinstance(make(key=jax.random.PRNGKey(0)), AbstractModel)
    batch = eqx.filter_vmap(lambda k: make(key=k))(jax.random.split(KEY, 2))
    assert jax.tree_util.tree_leaves(batch)[0].shape[0] == 2


def test_clear_errors_for_targets_and_data():
    with pytest.raises(TypeError, match="slope must be a real number or an array of them"):
        Affine("abc")
    with pytest.raises(TypeError, match="intercept must be a real number"):
        Affine(1.0, "x")
    with pytest.raises(TypeError, match="slope must be real numbers"):
        Affine(1j)
    with pytest.raises(ValueError, match="slope must be finite"):
        Affine(np.nan)
    with pytest.raises(TypeError, match="value must be a real number"):
        Constant(None)
    with pytest.raises(TypeError, match="knots_x must be"):
        PiecewiseLinear("ab", [0.0, 1.0])
    with pytest.raises(TypeError, match="fn must be callable"):
        FunctionTarget(3.0)
    with pytest.raises(TypeError, match=r"pass key=jax.random.key\(0\)"):
        sample_data(Affine(1.0), 4, key=7)
    with pytest.raises(TypeError, match="low must be a concrete real number"):
        sample_data(Affine(1.0), 4, low="0")
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        sample_data(Affine(1.0), 4, dtype=jnp.int32)


def test_clear_errors_for_model_settings():
    with pytest.raises(ValueError, match="init must be 'normal', 'he' or 'lecun', got 'xavier'"):
        ShallowReLU(1, 2, key=KEY, init="xavier")
    with pytest.raises(TypeError, match="d_in must be an int"):
        ShallowReLU("1", 2, key=KEY)
    with pytest.raises(TypeError, match="every entry of widths must be an int"):
        DeepMLP((2, "3", 1), key=KEY)
    with pytest.raises(ValueError, match=r"widths must have length >= 2.*widths=\(16, 32"):
        DeepMLP((2,), key=KEY)
    with pytest.raises(ValueError, match="activation must be 'relu'"):
        DeepMLP((2, 1), "gelu", key=KEY)
    with pytest.raises(TypeError, match="gamma must be a concrete real number"):
        ImplicitReLU(1, 2, gamma="0.5", key=KEY)
    with pytest.raises(ValueError, match="margin must be in"):
        ImplicitReLU(1, 2, gamma=0.1, key=KEY, margin=1.0)
    with pytest.raises(ValueError, match="rtol must be in"):
        ImplicitReLU(1, 2, gamma=0.1, key=KEY, rtol=0.0)
    with pytest.raises(ValueError, match=r"init\['A'\] \(a standard deviation\) must be a finite"):
        ImplicitReLU(1, 2, gamma=0.1, key=KEY, init={"A": -1.0})
    with pytest.raises(ValueError, match="init mapping names unknown fields"):
        ImplicitReLU(1, 2, gamma=0.1, key=KEY, init={"B": 1.0})
    with pytest.raises(TypeError, match="a must be a concrete real number"):
        PopulationRisk.uniform_1d(Affine(1.0), "0", 1.0)
