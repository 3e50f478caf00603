"""Population risks: exact 1-d closed form and quadrature / QMC rules.

Truth comes from independent sources: adaptive ``scipy.integrate.quad`` with the kinks
and knots as breakpoints (plain NumPy reference below), finite differences, closed-form
critical values (Jentzen & Riekert, arXiv:2107.04479), Gaussian moments, and plain Monte Carlo.
"""

from __future__ import annotations

import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
from toys import flow as gradient_flow

from gflow_jax.models.base import partition
from gflow_jax.models.shallow import ShallowReLU
from gflow_jax.risks.exact1d import _exact_uniform_1d_risk, _ExactUniform1DRisk
from gflow_jax.risks.measures import AbstractMeasure, Gaussian, QuadratureError, Uniform
from gflow_jax.risks.population import PopulationRisk
from gflow_jax.risks.targets import Affine, Constant, FunctionTarget, PiecewiseLinear


def risk_and_grad(params, static, risk):
    """``(L(θ), ∇L(θ))`` by ``jax.value_and_grad`` on the trainable arrays."""
    return jax.value_and_grad(lambda p: risk(eqx.combine(p, static)))(params)


PL_TARGET = PiecewiseLinear([-1.0, 0.2, 0.5, 0.9, 2.0], [0.3, -0.4, 0.8, 0.1, 1.0])
TARGETS = {
    "affine": Affine(1.5, -0.3),
    "constant": Constant(0.7),
    "pl3": PL_TARGET,  # 3 knots inside both intervals below
}
INTERVALS = [(0.0, 1.0), (-0.7, 1.3)]


def model_from(w, b, v, c, dtype=jnp.float64) -> ShallowReLU:
    """A ShallowReLU with the given arrays ``w (H, d), b (H,), v (δ, H), c (δ,)``."""
    w, b = np.atleast_2d(np.asarray(w, float)), np.asarray(b, float).reshape(-1)
    v, c = np.atleast_2d(np.asarray(v, float)), np.asarray(c, float).reshape(-1)
    # eval_shape: a template without running (or compiling) the random initialiser
    template = eqx.filter_eval_shape(
        ShallowReLU, w.shape[1], w.shape[0], v.shape[0], key=jax.random.key(0), dtype=dtype
    )
    return eqx.tree_at(
        lambda m: (m.w, m.b, m.v, m.c), template, tuple(jnp.asarray(z, dtype) for z in (w, b, v, c))
    )


def make_model(w, b, v, c, dtype=jnp.float64) -> ShallowReLU:
    """1-d model from flat ``w, b, v`` (length H) and scalar ``c``."""
    w = np.asarray(w, float).reshape(-1, 1)
    return model_from(w, b, np.reshape(v, (1, -1)), c, dtype)


def random_model(d_in, width, seed, d_out=1) -> ShallowReLU:
    """N(0, 1) parameters (as ``init="normal"``) from a NumPy generator."""
    rng = np.random.default_rng(seed)
    return model_from(
        rng.normal(size=(width, d_in)),
        rng.normal(size=width),
        rng.normal(size=(d_out, width)),
        rng.normal(size=d_out),
    )


@eqx.filter_jit
def value_and_g(risk, model):
    """``(L, G)`` of an exact risk, ``G`` from its closed form (jitted once per shape)."""
    return risk(model), risk.generalised_gradient(model)


@eqx.filter_jit
def value_and_autograd(risk, model):
    """``(L, ∇L)`` by ``jax.grad`` through the model's trainable arrays (as the flow does)."""
    return risk_and_grad(*partition(model), risk)


# ----------------------------------------------------------------------------------
# Independent reference: adaptive quadrature with breakpoints, plain NumPy
# ----------------------------------------------------------------------------------


def reference(w, b, v, c, kx, ky, lo, hi):
    """(L, G_w, G_b, G_v, G_c) by scipy.integrate.quad, G with relu'(0) = 0."""
    w, b, v = map(np.asarray, (w, b, v))

    def net(x):
        return c + np.sum(v * np.maximum(w * x + b, 0.0))

    def res(x):
        return net(x) - np.interp(x, kx, ky)

    kinks = [-bi / wi for wi, bi in zip(w, b, strict=True) if wi != 0 and lo < -bi / wi < hi]
    inner = [s for s in kx if lo < s < hi]
    pts = sorted(set(kinks + inner)) or None

    def integral(fn):
        with warnings.catch_warnings():  # "roundoff error" near 1e-15: expected, harmless
            warnings.simplefilter("ignore", scipy.integrate.IntegrationWarning)
            val, _ = scipy.integrate.quad(
                fn, lo, hi, points=pts, epsabs=1e-15, epsrel=1e-14, limit=500
            )
        return val / (hi - lo)

    risk = integral(lambda x: res(x) ** 2)
    g_c = 2 * integral(res)
    g_w, g_b, g_v = (np.zeros(w.size) for _ in range(3))
    for i in range(w.size):
        ind = lambda x, i=i: float(w[i] * x + b[i] > 0)
        g_w[i] = 2 * v[i] * integral(lambda x, i=i, ind=ind: x * ind(x) * res(x))
        g_b[i] = 2 * v[i] * integral(lambda x, i=i, ind=ind: ind(x) * res(x))
        g_v[i] = 2 * integral(lambda x, i=i: max(w[i] * x + b[i], 0.0) * res(x))
    return risk, g_w, g_b, g_v, g_c


@pytest.fixture(scope="module")
def batched_exact():
    """jit(vmap(value_and_grad)) of the custom-JVP risk: compiled once per shape."""
    fn = jax.value_and_grad(_exact_uniform_1d_risk, argnums=(0, 1, 2, 3))
    return jax.jit(jax.vmap(fn, in_axes=(0, 0, 0, 0, None, None)))


def random_sets(rng, width, count, kx, lo, hi):
    w = rng.normal(size=(count, width))
    b = rng.normal(size=(count, width))
    v = rng.normal(size=(count, width))
    c = rng.normal(size=count)
    for k in range(count):  # special cases, cycled through the batch
        case = (k + width) % 6
        i = k % width
        if case == 0:
            w[k, i], b[k, i] = 0.0, abs(b[k, i]) + 0.1  # constant neuron
        elif case == 1:
            w[k, i], b[k, i] = 0.0, -abs(b[k, i]) - 0.1  # dead
        elif case == 2:
            w[k, i], b[k, i] = 0.0, 0.0  # degenerate
        elif case == 3:
            inner = kx[(kx > lo) & (kx < hi)]
            s = inner[0] if inner.size else 0.5 * (lo + hi)
            w[k, i], b[k, i] = 1.3, -1.3 * s  # kink exactly on a target knot
        elif case == 4:
            w[k, i], b[k, i] = -0.8, 0.8 * lo  # kink exactly at a
    return w, b, v, c


@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize("target_name", list(TARGETS))
def test_exact_risk_and_gradient_vs_scipy_quad(batched_exact, target_name, interval):
    lo, hi = interval
    risk = PopulationRisk.uniform_1d(TARGETS[target_name], lo, hi)
    kx, ky = np.asarray(risk.knots_x), np.asarray(risk.knots_y)
    rng = np.random.default_rng([list(TARGETS).index(target_name), INTERVALS.index(interval)])
    checked = 0
    for width in range(1, 9):
        count = 2 if width > 1 else 4
        w, b, v, c = random_sets(rng, width, count, kx, lo, hi)
        vals, grads = batched_exact(w, b, v, c, risk.knots_x, risk.knots_y)
        for k in range(count):
            ref = reference(w[k], b[k], v[k], c[k], kx, ky, lo, hi)
            assert abs(float(vals[k]) - ref[0]) < 1e-12 * max(1.0, ref[0])
            for got, want in zip(grads, ref[1:], strict=True):
                np.testing.assert_allclose(np.asarray(got[k]), want, rtol=0, atol=1e-10)
            checked += 1
    assert checked == 18  # 6 (target, interval) combinations x 18 = 108 parameter sets


def test_generalised_gradient_matches_jax_grad_through_flow():
    risk = PopulationRisk.uniform_1d(PL_TARGET, -0.7, 1.3)
    model = random_model(1, 6, 3)
    value, grad = value_and_autograd(risk, model)
    value_g, g = value_and_g(risk, model)
    assert isinstance(g, ShallowReLU) and g.w.shape == model.w.shape
    assert float(value) == float(value_g)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(g), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    ref = reference(
        model.w[:, 0],
        model.b,
        model.v[0],
        float(model.c[0]),
        np.asarray(risk.knots_x),
        np.asarray(risk.knots_y),
        -0.7,
        1.3,
    )
    np.testing.assert_allclose(
        g.to_flat(), np.concatenate(ref[1:3] + (ref[3], [ref[4]])), atol=1e-10
    )


def test_gradient_vs_central_finite_differences(batched_exact):
    """Generic points (all w ≠ 0): G is the true gradient."""
    risk = PopulationRisk.uniform_1d(PL_TARGET, -0.7, 1.3)
    kx, ky = risk.knots_x, risk.knots_y
    width, eps = 5, 1e-6
    rng = np.random.default_rng(7)
    for _ in range(3):
        theta = rng.normal(size=(1, 3 * width + 1))
        steps = np.concatenate([np.eye(theta.size), -np.eye(theta.size)]) * eps
        batch = theta + steps  # all ± perturbations in one batched call
        split = lambda t: (
            t[:, :width],
            t[:, width : 2 * width],
            t[:, 2 * width : 3 * width],
            t[:, -1],
        )
        vals, _ = batched_exact(*split(batch), kx, ky)
        vals = np.asarray(vals)
        fd = (vals[: theta.size] - vals[theta.size :]) / (2 * eps)
        _, grads = batched_exact(*split(theta), kx, ky)
        g = np.concatenate([np.asarray(x).reshape(-1) for x in grads])
        np.testing.assert_allclose(g, fd, atol=2e-8)


def test_hessian_vector_product_vs_finite_differences_of_g():
    """Second derivatives differentiate the closed form of G (cell boundaries move)."""
    risk = PopulationRisk.uniform_1d(Affine(2.0, 1.0), 0.0, 1.0)
    theta = jnp.asarray(np.random.default_rng(11).normal(size=13))
    grad = jax.grad(lambda t: risk(ShallowReLU.from_flat(t, 1, 4)))
    u = jnp.asarray(np.random.default_rng(12).normal(size=13))
    eps = 1e-6

    @jax.jit
    def hvp_and_fd(theta, u):
        hvp = jax.jvp(grad, (theta,), (u,))[1]
        return hvp, (grad(theta + eps * u) - grad(theta - eps * u)) / (2 * eps)

    hvp, fd = hvp_and_fd(theta, u)
    np.testing.assert_allclose(hvp, fd, atol=1e-6)


def test_degenerate_neuron_gradient_is_the_left_derivative():
    lo, hi = -0.7, 1.3
    target = Affine(1.5, -0.3)
    risk = PopulationRisk.uniform_1d(target, lo, hi)
    w, b, v, c = [0.0, 1.1, -0.6], [0.0, -0.2, 0.5], [1.3, 0.8, -0.4], 0.9
    model = make_model(w, b, v, c)
    _, g = value_and_g(risk, model)
    assert float(g.w[0, 0]) == 0.0 and float(g.b[0]) == 0.0
    assert float(g.v[0, 0]) == 0.0  # relu(0·x + 0) = 0

    def risk_at(w0, b0):
        return float(value_and_g(risk, make_model([w0, *w[1:]], [b0, *b[1:]], v, c))[0])

    h = 1e-7
    base = risk_at(0.0, 0.0)
    left_b = (base - risk_at(0.0, -h)) / h
    right_b = (risk_at(0.0, h) - base) / h
    assert abs(left_b) < 1e-12  # = G_b = 0
    kx, ky = np.array([lo, hi]), 1.5 * np.array([lo, hi]) - 0.3

    def mean_of(fn):  # ∫ fn dμ for μ = U[lo, hi]
        return scipy.integrate.quad(fn, lo, hi, points=[0.0, 0.2 / 1.1, 1.25])[0] / (hi - lo)

    def res(x):
        return (
            c
            + sum(vi * max(wi * x + bi, 0.0) for wi, bi, vi in zip(w, b, v, strict=True))
            - np.interp(x, kx, ky)
        )

    predicted = 2 * v[0] * mean_of(res)
    assert abs(right_b) > 0.1  # the right derivative differs from G
    assert right_b == pytest.approx(predicted, abs=1e-5)
    # one-sided w-derivatives (0 ∈ (lo, hi)): 2 v ∫ x 1{x>0} r dμ and 2 v ∫ x 1{x<0} r dμ
    right_w = (risk_at(h, 0.0) - base) / h
    left_w = (base - risk_at(-h, 0.0)) / h
    assert right_w == pytest.approx(2 * v[0] * mean_of(lambda x: x * (x > 0) * res(x)), abs=1e-5)
    assert left_w == pytest.approx(2 * v[0] * mean_of(lambda x: x * (x < 0) * res(x)), abs=1e-5)


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.0, 1.0), (-0.7, 0.4)])
def test_dead_neuron_critical_value(alpha, beta):
    risk = PopulationRisk.uniform_1d(Affine(alpha, beta), 0.0, 1.0)
    for w, b in [(1.0, -2.0), (-1.0, -0.5), (0.0, -1.0)]:  # dead on [0, 1]
        model = make_model([w], [b], [0.7], alpha / 2 + beta)
        value, g = value_and_g(risk, model)
        assert float(value) == pytest.approx(alpha**2 / 12, rel=1e-14)
        g = g.to_flat()
        assert float(jnp.max(jnp.abs(g))) < 1e-15


def test_zigzag_saddle_value_and_zero_gradient():
    """Closed-form critical value: K = 2, α = 1, β = 0: L = 1/972, G = 0."""
    risk = PopulationRisk.uniform_1d(Affine(1.0, 0.0), 0.0, 1.0)
    model = make_model([1.0, -1.0], [-1 / 3, 2 / 3], [2 / 3, -2 / 3], 0.5)
    value, grad = value_and_autograd(risk, model)
    assert float(value) == pytest.approx(1 / 972, rel=1e-13)
    assert float(jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(grad)))) < 1e-15


def test_vmap_over_models_and_exact_error_report():
    risk = PopulationRisk.uniform_1d(Affine(2.0, 1.0), 0.0, 1.0)
    keys = jax.random.split(jax.random.key(0), 5)
    models = eqx.filter_vmap(lambda k: ShallowReLU(1, 4, key=k))(keys)
    vals, grads = eqx.filter_jit(eqx.filter_vmap(lambda m: risk_and_grad(*partition(m), risk)))(
        models
    )
    for i, _k in enumerate(keys):
        m = jax.tree.map(lambda x, i=i: x[i], models)
        value, g = value_and_g(risk, m)
        assert float(vals[i]) == pytest.approx(float(value), rel=1e-14)
        np.testing.assert_allclose(grads.w[i], g.w, rtol=1e-13, atol=1e-15)
    report = risk.quadrature_error(jax.tree.map(lambda x: x[0], models))
    assert isinstance(report, QuadratureError)
    assert float(report.risk_error) == 0.0 and float(report.grad_error) == 0.0


def test_float32():
    risk = PopulationRisk.uniform_1d(PL_TARGET, -0.7, 1.3)
    m64 = random_model(1, 6, 5)
    m32 = jax.tree.map(lambda x: x.astype(jnp.float32), m64)
    v32, g32 = risk_and_grad(*partition(m32), risk)
    assert v32.dtype == jnp.float32 and g32.w.dtype == jnp.float32
    assert float(v32) == pytest.approx(float(value_and_g(risk, m64)[0]), rel=1e-5)
    np.testing.assert_allclose(
        g32.to_flat(), value_and_g(risk, m64)[1].to_flat(), rtol=1e-4, atol=1e-5
    )
    traj = gradient_flow(m32, risk, 1.0, n_save=5)
    assert float(traj.final_risk) < float(traj.initial_risk)
    quad = PopulationRisk(PL_TARGET, Uniform(-0.7, 1.3), nodes=64)
    assert quad(m32).dtype == jnp.float32


def test_energy_identity_along_a_flow():
    """Energy identity L(0) − L(t) = ∫_0^t ‖G(θ_s)‖² ds of a gradient flow on the exact risk."""
    import diffrax

    risk = PopulationRisk.uniform_1d(Affine(2.0, 1.0), 0.0, 1.0)
    model = random_model(1, 4, 2)
    ts = np.linspace(0.0, 2.0, 2001)
    traj = gradient_flow(
        model, risk, 2.0, save_ts=ts, controller=diffrax.PIDController(rtol=1e-10, atol=1e-12)
    )
    risk_ts, g2 = np.asarray(traj.risk), np.asarray(traj.grad_norm) ** 2
    assert np.all(np.isfinite(risk_ts)) and risk_ts[0] - risk_ts[-1] > 1e-2
    dissipated = scipy.integrate.cumulative_simpson(g2, x=ts, initial=0.0)
    np.testing.assert_allclose(risk_ts[0] - risk_ts, dissipated, atol=1e-6 * risk_ts[0])


# ----------------------------------------------------------------------------------
# Quadrature risks
# ----------------------------------------------------------------------------------


def _value_grad(risk, model):
    value, grad = value_and_autograd(risk, model)
    return float(value), np.asarray(grad.to_flat())


def test_quadrature_converges_to_exact_in_1d():
    target = PL_TARGET
    exact = PopulationRisk.uniform_1d(target, -0.7, 1.3)
    model = random_model(1, 5, 9)
    L, G = _value_grad(exact, model)
    errs, gerrs = [], []
    for n in (32, 256, 2048):
        quad = PopulationRisk(target, Uniform(-0.7, 1.3, 1), nodes=n)
        assert quad.num_nodes == n and quad.rule.endswith("gauss-legendre")
        value, grad = _value_grad(quad, model)
        errs.append(abs(value - L))
        gerrs.append(np.linalg.norm(grad - G))
    assert errs[-1] < 2e-6 and errs[-1] < errs[0] / 100  # O(h²)
    assert gerrs[-1] < 5e-3 and gerrs[-1] < gerrs[0] / 8  # O(h)
    # the error report sees the same order of magnitude
    quad = PopulationRisk(target, Uniform(-0.7, 1.3, 1, rule="sobol"), nodes=1024)
    report = quad.quadrature_error(model)
    value, grad = _value_grad(quad, model)
    actual, gactual = abs(value - L), np.linalg.norm(grad - G)
    assert 0.1 < float(report.risk_error) / actual < 10
    assert 0.1 < float(report.grad_error) / gactual < 10


def _mc(model, target, x):
    """Plain Monte Carlo: mean and standard error of r², and of the gradient integrand."""
    y = target(x)
    r2 = np.sum((np.asarray(model(x)) - np.asarray(y)) ** 2, axis=-1)

    def single(m, xi, yi):
        return jnp.sum((m(xi[None])[0] - yi) ** 2)

    g = jax.vmap(lambda xi, yi: jax.grad(single)(model, xi, yi).to_flat())(x, y)
    g = np.asarray(g)
    n = x.shape[0]
    return r2.mean(), r2.std() / math.sqrt(n), g.mean(0), g.std(0) / math.sqrt(n)


def test_quadrature_in_3d_agrees_with_monte_carlo():
    target = Affine(jnp.array([1.0, -2.0, 0.5]), 0.3)
    model = random_model(3, 6, 4)
    measure = Uniform(-1.0, 1.0, 3)
    grid = PopulationRisk(target, measure, nodes=16**3)
    sobol = PopulationRisk(target, Uniform(-1.0, 1.0, 3, rule="sobol"), nodes=4096)
    assert grid.rule == "gauss-legendre" and sobol.rule == "sobol"
    x = measure.sample(jax.random.key(1), 2**16)
    mean, se, gmean, gse = _mc(model, target, x)
    values = []
    for quad in (grid, sobol):
        value, grad = _value_grad(quad, model)
        assert abs(value - mean) < 4 * se
        assert np.all(np.abs(grad - gmean) < 4 * gse + 1e-12)
        values.append(value)
    assert abs(values[0] - values[1]) < 1e-3 * values[0]


def test_gaussian_measure_moments_and_relu_vs_monte_carlo():
    mean, cov = np.array([0.3, -1.0]), np.array([[1.0, 0.4], [0.4, 0.5]])
    slope, beta = np.array([1.2, -0.7]), 0.2
    target = Affine(slope, beta)
    model = random_model(2, 4, 8)
    const = eqx.tree_at(lambda m: m.v, model, jnp.zeros_like(model.v))  # N = c
    c = float(const.c[0])
    truth = (c - slope @ mean - beta) ** 2 + slope @ cov @ slope
    gh = PopulationRisk(target, Gaussian(mean, cov), nodes=100)
    assert gh.rule == "gauss-hermite"
    assert float(gh(const)) == pytest.approx(truth, rel=1e-13)  # exact for polynomials
    t5 = Affine(np.r_[slope, 0, 0, 0], beta)
    qmc = PopulationRisk(t5, Gaussian(np.r_[mean, 0, 0, 0], np.eye(5)), nodes=2**14)
    c5 = eqx.tree_at(lambda m: m.v, random_model(5, 2, 1), jnp.zeros((1, 2)))
    truth5 = (float(c5.c[0]) - slope @ mean - beta) ** 2 + slope @ slope
    assert qmc.rule == "sobol"
    assert float(qmc(c5)) == pytest.approx(truth5, rel=1e-3)
    # a genuine ReLU integrand against Monte Carlo
    x = Gaussian(mean, cov).sample(jax.random.key(2), 2**16)
    mc, se, _, _ = _mc(model, target, x)
    assert abs(float(gh(model)) - mc) < 4 * se


def test_user_defined_measure():
    class Midpoint01(AbstractMeasure):
        @property
        def dim(self):
            return 1

        def nodes_and_weights(self, n, key=None):
            return ((np.arange(n) + 0.5) / n)[:, None], np.full(n, 1.0 / n)

    target = Affine(2.0, 1.0)
    model = random_model(1, 3, 6)
    exact = float(PopulationRisk.uniform_1d(target, 0.0, 1.0)(model))
    quad = PopulationRisk(target, Midpoint01(), nodes=4000)
    assert float(quad(model)) == pytest.approx(exact, rel=1e-6)
    report = quad.quadrature_error(model)  # default reference: 8n nodes
    assert 0 < float(report.risk_error) < 1e-6


# ----------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------


def test_exact_risk_validation():
    target = Affine(2.0, 1.0)
    for a, b in [(1.0, 0.0), (0.0, 0.0), (0.0, math.inf), (math.nan, 1.0)]:
        with pytest.raises(ValueError, match="a < b"):
            PopulationRisk.uniform_1d(target, a, b)
    with pytest.raises(TypeError, match="real number"):
        PopulationRisk.uniform_1d(target, "0", 1.0)
    with pytest.raises(ValueError, match="PopulationRisk"):
        PopulationRisk.uniform_1d(FunctionTarget(lambda x: jnp.sin(x[:, 0])), 0.0, 1.0)
    with pytest.raises(ValueError, match="PopulationRisk"):
        PopulationRisk.uniform_1d(Affine([1.0, 2.0], 0.0), 0.0, 1.0)
    with pytest.raises(ValueError, match="PopulationRisk"):
        PopulationRisk.uniform_1d(Constant([1.0, 2.0]), 0.0, 1.0)
    risk = PopulationRisk.uniform_1d(target, 0.0, 1.0)
    assert isinstance(risk, _ExactUniform1DRisk)
    with pytest.raises(ValueError, match="d_in = 1"):
        risk(random_model(2, 3, 0))
    with pytest.raises(ValueError, match="d_out = 1"):
        risk(random_model(1, 3, 0, d_out=2))
    with pytest.raises(ValueError, match="ShallowReLU"):
        risk(lambda x: x)


def test_quadrature_validation():
    target = Affine(2.0, 1.0)
    for n in (0, -4):
        with pytest.raises(ValueError, match="nodes"):
            PopulationRisk(target, Uniform(), nodes=n)
    with pytest.raises(TypeError, match="int"):
        PopulationRisk(target, Uniform(), nodes=2.5)
    with pytest.raises(ValueError, match="exceed"):
        PopulationRisk(target, Uniform(), nodes=2**30)
    with pytest.raises(TypeError, match="AbstractMeasure"):
        PopulationRisk(target, (0.0, 1.0))
    with pytest.raises(ValueError, match="positive definite"):
        Gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="symmetric"):
        Gaussian([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="shape"):
        Gaussian([0.0, 0.0], np.eye(3))
    with pytest.raises(ValueError, match="low < high"):
        Uniform(1.0, 0.0)
    with pytest.raises(ValueError, match="rule"):
        Uniform(0.0, 1.0, 2, rule="simpson")
    with pytest.raises(ValueError, match="d must be"):
        Uniform(0.0, 1.0, 0)
    with pytest.raises(ValueError, match="Gauss–Hermite"):
        Gaussian(0.0, 1.0, rule="gauss").nodes_and_weights(1000)


def test_exact_risk_of_a_network_without_biases():
    """``ShallowReLU(use_bias=False)`` is the network with ``b = c = 0``: the same risk and
    gradient in ``(w, v)`` as a biased network with zero biases, and no bias gradient."""
    risk = PopulationRisk.uniform_1d(Affine(2.0, 1.0), -0.5, 1.0)
    w, v = np.array([0.7, -1.2, 0.4]), np.array([1.1, 0.6, -0.8])
    bare = ShallowReLU(1, 3, key=jax.random.key(0), use_bias=False)
    bare = eqx.tree_at(lambda m: (m.w, m.v), bare, (jnp.asarray(w)[:, None], jnp.asarray(v)[None]))
    mean = (
        scipy.integrate.quad(
            lambda x: (np.sum(v * np.maximum(w * x, 0)) - 2 * x - 1) ** 2, -0.5, 1.0, points=[0.0]
        )[0]
        / 1.5
    )
    np.testing.assert_allclose(float(risk(bare)), mean, rtol=1e-12)
    grad = jax.grad(risk)(bare)
    assert grad.b is None and grad.c is None
    biased = make_model(w, [0.0] * 3, v, 0.0)
    _, g = value_and_g(risk, biased)
    np.testing.assert_allclose(grad.w, g.w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad.v, g.v, rtol=1e-12, atol=1e-14)
    G = risk.generalised_gradient(bare)
    np.testing.assert_allclose(G.w, grad.w, rtol=1e-12, atol=1e-14)
