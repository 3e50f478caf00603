"""Exact population risk for Gaussian inputs (``PopulationRisk.gaussian``).

References are independent of the closed forms: ``scipy.stats.multivariate_normal.cdf``
and 1-d ``scipy.integrate.quad`` for the bivariate normal CDF; 1-d/2-d adaptive
quadrature (conditioning on one Gaussian coordinate) for the ReLU moments and the risk;
Monte Carlo with its error bar in d = 3..5; the arc-cosine kernel of Cho & Saul (2009);
central finite differences; the generalised gradient (``relu'(0) = 0``) of Jentzen &
Riekert (arXiv:2107.04479) on samples.
"""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats

import gflow_jax as gf
from gflow_jax.models.base import partition
from gflow_jax.risks.gaussian import bivariate_normal_cdf, orthonormal_teacher, relu_moments

RNG = np.random.default_rng(20240611)


def _spd(d, rng):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.5 * np.eye(d)


def _random_student(d, n, d_out=1, *, seed, use_bias=True, scale=1.0):
    return gf.ShallowReLU(d, n, d_out, key=jax.random.key(seed), use_bias=use_bias, scale=scale)


def _unflatten(th, shape):
    d, n, d_out, bias = shape
    return gf.ShallowReLU.from_flat(th, d, n, d_out, use_bias=bias)


# module-level jitted functions of (θ, risk, shape): tests with the same sizes share one
# compilation (compilation dominates the run time of this file)
@eqx.filter_jit
def _value_and_grad(th, risk, shape):
    return jax.value_and_grad(lambda t: risk(_unflatten(t, shape)))(th)


@eqx.filter_jit
def _hess(th, risk, shape):
    return jax.jacfwd(jax.grad(lambda t: risk(_unflatten(t, shape))))(th)


def _flat_loss(risk, model):
    """``(L, ∇L, ∇²L)`` as functions of the full flat vector of `model`."""
    shape = (model.d_in, model.width, model.d_out, model.use_bias)
    return (
        lambda th: _value_and_grad(th, risk, shape)[0],
        lambda th: _value_and_grad(th, risk, shape)[1],
        lambda th: _hess(th, risk, shape),
    )


def _central_fd(f, th, eps):
    th = np.asarray(th)
    out = []
    for i in range(th.size):
        e = np.zeros_like(th)
        e[i] = eps
        out.append((f(jnp.asarray(th + e)) - f(jnp.asarray(th - e))) / (2 * eps))
    return np.stack([np.asarray(o) for o in out])


# -- the bivariate normal CDF ------------------------------------------------------------


def _transition_points(centre, width, lo, hi):
    """Break points for quadrature around a steep transition at `centre` of `width`."""
    if centre is None or not np.isfinite(centre):
        return None
    pts = [centre + j * width for j in (-30, -10, -3, -1, 0, 1, 3, 10, 30)]
    pts = sorted(p for p in pts if lo < p < hi)
    return pts or None


def _phi2_quad(h, k, rho):
    """``∫_{-∞}^h φ(x) Φ((k − ρx)/r) dx`` by adaptive quadrature (independent of Genz)."""
    r = np.sqrt((1 - rho) * (1 + rho))
    centre = k / rho if rho != 0 else None
    width = r / abs(rho) if rho != 0 else 1.0
    with warnings.catch_warnings():  # round-off notices at 1e-16; the comparison decides
        warnings.simplefilter("ignore", scipy.integrate.IntegrationWarning)
        return _quad_cdf(h, k, rho, r, centre, width)


def _quad_cdf(h, k, rho, r, centre, width):
    val, _ = scipy.integrate.quad(
        lambda x: scipy.stats.norm.pdf(x) * scipy.special.ndtr((k - rho * x) / r),
        -40.0,
        h,
        points=_transition_points(centre, width, -40.0, h),
        epsabs=1e-16,
        epsrel=1e-14,
        limit=400,
    )
    return val


HS = [-4.0, -1.3, 0.0, 0.4, 2.2, 6.0]
RHOS = [-1.0, -0.999999, -0.97, -0.925, -0.9, -0.6, -0.1, 0.0, 0.25, 0.75, 0.924, 0.95, 0.9999, 1.0]


def test_bivariate_cdf_vs_scipy_and_quadrature():
    h, k, rho = (a.ravel() for a in np.meshgrid(HS, HS, RHOS, indexing="ij"))
    ours = np.asarray(jax.jit(bivariate_normal_cdf)(h, k, rho))
    ndtr = scipy.special.ndtr
    for i in range(h.size):
        if rho[i] == 1.0:
            ref = ndtr(min(h[i], k[i]))
        elif rho[i] == -1.0:
            ref = max(0.0, ndtr(h[i]) + ndtr(k[i]) - 1.0)
        elif abs(rho[i]) > 0.999:
            # scipy's own bivariate CDF is less reliable this close to |ρ| = 1
            ref = _phi2_quad(h[i], k[i], rho[i])
        else:
            ref = scipy.stats.multivariate_normal.cdf(
                [h[i], k[i]], cov=[[1.0, rho[i]], [rho[i], 1.0]]
            )
        assert abs(ours[i] - ref) < 1e-12, (h[i], k[i], rho[i], ours[i], ref)
    # a second, fully independent reference on a subset (quadrature, all |ρ| < 1)
    for hh, kk, rr in [(-1.3, 0.4, 0.95), (2.2, -1.3, -0.97), (0.0, 0.0, 0.9999), (0.4, 0.4, -0.6)]:
        assert abs(float(bivariate_normal_cdf(hh, kk, rr)) - _phi2_quad(hh, kk, rr)) < 1e-13
    # infinite limits and float32
    assert float(bivariate_normal_cdf(np.inf, 0.3, 0.5)) == pytest.approx(ndtr(0.3), abs=1e-15)
    assert float(bivariate_normal_cdf(-np.inf, 0.3, 0.5)) == 0.0
    f32 = bivariate_normal_cdf(*(jnp.asarray(a, jnp.float32) for a in (h, k, rho)))
    assert f32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(f32), ours, atol=2e-6)


def test_bivariate_cdf_derivatives():
    # ∂/∂h = φ(h) Φ((k − ρh)/r), ∂/∂ρ = φ₂(h, k; ρ) (custom JVP) vs central differences
    for h, k, rho in [(0.3, -0.7, 0.4), (-1.1, 0.5, -0.93), (0.8, 1.2, 0.97)]:
        g = jax.grad(bivariate_normal_cdf, argnums=(0, 1, 2))(h, k, rho)
        eps = 1e-6
        fd = [
            (bivariate_normal_cdf(h + eps, k, rho) - bivariate_normal_cdf(h - eps, k, rho))
            / 2
            / eps,
            (bivariate_normal_cdf(h, k + eps, rho) - bivariate_normal_cdf(h, k - eps, rho))
            / 2
            / eps,
            (bivariate_normal_cdf(h, k, rho + eps) - bivariate_normal_cdf(h, k, rho - eps))
            / 2
            / eps,
        ]
        np.testing.assert_allclose(np.asarray(g), np.asarray(fd), rtol=1e-7, atol=1e-9)


# -- moments of two ReLU units ---------------------------------------------------------


def _relu_mean_np(mu, sd):
    if sd == 0:
        return max(mu, 0.0)
    return mu * scipy.special.ndtr(mu / sd) + sd * scipy.stats.norm.pdf(mu / sd)


def _pair_quad(m1, m2, c11, c12, c22):
    """``E[relu(u₁) relu(u₂)]`` conditioning on ``u₁`` (1-d quadrature)."""
    s1, s2 = np.sqrt(c11), np.sqrt(c22)
    if s1 == 0:
        return max(m1, 0.0) * _relu_mean_np(m2, s2)
    if s2 == 0:
        return max(m2, 0.0) * _relu_mean_np(m1, s1)
    rho = np.clip(c12 / (s1 * s2), -1, 1)
    r = np.sqrt((1 - rho) * (1 + rho))

    def integrand(x):
        return (m1 + s1 * x) * _relu_mean_np(m2 + s2 * rho * x, s2 * r) * scipy.stats.norm.pdf(x)

    lo = -m1 / s1
    # E[relu(u₂) | x] changes steeply (width ~ r) where m₂ + s₂ ρ x = 0
    centre = -m2 / (s2 * rho) if rho != 0 else None
    pts = _transition_points(centre, r / max(abs(rho), 1e-300), lo, lo + 40)
    val, _ = scipy.integrate.quad(
        integrand, lo, lo + 40, points=pts, epsabs=1e-15, epsrel=1e-13, limit=400
    )
    return val


MOMENT_CASES = [
    # (m1, m2, C11, C12, C22)
    (0.3, -0.5, 1.2, 0.4, 0.8),
    (-1.0, 0.7, 0.5, -0.3, 2.0),
    (1.5, 1.5, 1.0, 0.999999, 1.0),  # nearly parallel
    (0.2, -0.4, 2.0, 2.0 * 0.99, 0.5 / 0.99),  # |ρ| > 0.925 branch
    (0.4, -0.2, 1.0, 2.0, 4.0),  # ρ = 1 exactly (parallel)
    (0.4, 0.3, 1.0, -2.0, 4.0),  # ρ = −1 exactly
    (0.0, 0.0, 1.0, 1.0, 1.0),  # the same unit twice
    (0.7, -0.3, 0.0, 0.0, 1.5),  # u₁ ≡ 0.7 (w₁ = 0)
    (-0.7, 0.3, 0.0, 0.0, 1.5),  # u₁ ≡ −0.7
    (0.7, 0.2, 0.0, 0.0, 0.0),  # both constant
]


@pytest.mark.parametrize("case", MOMENT_CASES)
def test_relu_moments_vs_quadrature(case):
    f, e1, e2 = relu_moments(*case)
    m1, m2, c11, _, c22 = case
    assert float(f) == pytest.approx(_pair_quad(*case), abs=2e-14, rel=1e-12)
    assert float(e1) == pytest.approx(_relu_mean_np(m1, np.sqrt(c11)), abs=1e-15, rel=1e-14)
    assert float(e2) == pytest.approx(_relu_mean_np(m2, np.sqrt(c22)), abs=1e-15, rel=1e-14)


def test_arc_cosine_kernel():
    # μ = 0, no biases: E[relu(u₁)relu(u₂)] = s₁ s₂ (sin ϑ + (π − ϑ) cos ϑ)/(2π)
    s1, s2 = 1.3, 0.6
    for theta in np.linspace(0.0, np.pi, 13):
        c12 = s1 * s2 * np.cos(theta)
        ref = s1 * s2 * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
        f = float(relu_moments(0.0, 0.0, s1**2, c12, s2**2)[0])
        assert f == pytest.approx(ref, abs=1e-15, rel=1e-14)


def test_risk_is_arc_cosine_kernel_sum_without_biases():
    d, n, k = 3, 4, 3
    teacher = _random_student(d, k, seed=1, use_bias=False)
    student = _random_student(d, n, seed=2, use_bias=False)
    # independent NumPy evaluation: L = Σ a_i a_l ‖w_i‖‖w_l‖ κ(ϑ_il), x ~ N(0, I)
    w = np.concatenate([np.asarray(student.w), np.asarray(teacher.w)])
    a = np.concatenate([np.asarray(student.v[0]), -np.asarray(teacher.v[0])])
    norms = np.linalg.norm(w, axis=1)
    cos = np.clip(w @ w.T / np.outer(norms, norms), -1, 1)
    theta = np.arccos(cos)
    kern = np.outer(norms, norms) * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi)
    ref = a @ kern @ a
    risk = gf.PopulationRisk.gaussian(teacher)
    loss = _flat_loss(risk, student)[0]
    assert float(loss(student.to_flat())) == pytest.approx(ref, rel=1e-13)


# -- the risk against integration --------------------------------------------------------


def _np_net(model):
    """``x ↦ N(x)`` in NumPy (scalar output, 1-d input) and its kinks ``−b_j/w_j``."""
    w, b = np.asarray(model.w[:, 0]), np.asarray(model.b)
    v, c = np.asarray(model.v[0]), float(model.c[0])
    kinks = [-bj / wj for wj, bj in zip(w, b, strict=True) if wj != 0]
    return (lambda x: c + v @ np.maximum(w * x + b, 0.0)), kinks


def test_risk_1d_vs_adaptive_quadrature():
    relu_teacher = gf.ShallowReLU(1, 2, key=jax.random.key(5))
    teacher = (relu_teacher, gf.Affine(0.7, -0.2))
    student = _random_student(1, 3, seed=6)
    mean, var = 0.4, 1.7
    risk = gf.PopulationRisk.gaussian(teacher, mean=mean, cov=var)
    # E(N − f)², x = mean + sd z, breakpoints at every kink of student and teacher
    net, k_s = _np_net(student)
    tnet, k_t = _np_net(relu_teacher)
    sd = np.sqrt(var)

    def integrand(z):
        x = mean + sd * z
        return (net(x) - tnet(x) - 0.7 * x + 0.2) ** 2 * scipy.stats.norm.pdf(z)

    zs = sorted((k - mean) / sd for k in k_s + k_t if abs((k - mean) / sd) < 12)
    ref = scipy.integrate.quad(integrand, -12, 12, points=zs, epsabs=1e-14, epsrel=1e-12)[0]
    assert float(risk(student)) == pytest.approx(ref, rel=1e-11)


def test_risk_2d_vs_nested_quadrature():
    teacher = gf.ShallowReLU(2, 2, key=jax.random.key(7))
    student = _random_student(2, 2, seed=8)
    mean, cov = np.array([0.3, -0.5]), np.array([[1.0, 0.4], [0.4, 0.7]])
    risk = gf.PopulationRisk.gaussian(teacher, mean, cov)
    # x = μ + L z; integrate z₂ (inner, kinks located exactly) then z₁
    chol = np.linalg.cholesky(cov)
    units = [
        (np.asarray(m.w), np.asarray(m.b), np.asarray(m.v[0]), float(m.c[0]), sign)
        for m, sign in ((student, 1.0), (teacher, -1.0))
    ]

    def residual(z1, z2):
        x = mean[:, None] + chol @ np.stack([z1, z2])
        out = 0.0
        for w, b, v, c, sign in units:
            out = out + sign * (c + v @ np.maximum(w @ x + b[:, None], 0))
        return out

    def inner(z1):
        pts = []
        for w, b, *_ in units:
            a = w @ chol  # u = (w μ + b) + a₁ z₁ + a₂ z₂
            for j in range(a.shape[0]):
                if a[j, 1] != 0:
                    z = -(w[j] @ mean + b[j] + a[j, 0] * z1) / a[j, 1]
                    if -12 < z < 12:
                        pts.append(z)
        f = lambda z2: residual(np.array([z1]), np.array([z2]))[0] ** 2 * scipy.stats.norm.pdf(z2)
        return scipy.integrate.quad(f, -12, 12, points=sorted(pts) or None, epsabs=1e-12)[0]

    ref = scipy.integrate.quad(
        lambda z1: inner(z1) * scipy.stats.norm.pdf(z1), -12, 12, epsabs=1e-11, limit=200
    )[0]
    assert float(risk(student)) == pytest.approx(ref, rel=1e-9)


@eqx.filter_jit
def _mc_batches(x, y, model, batches):
    """Monte Carlo value and generalised gradient (``relu'(0) = 0``) on `batches` slices."""
    size = x.shape[0] // batches

    def batch(i):
        xb = jax.lax.dynamic_slice_in_dim(x, i * size, size)
        yb = jax.lax.dynamic_slice_in_dim(y, i * size, size)
        value, grad = eqx.filter_value_and_grad(gf.EmpiricalRisk(xb, yb))(model)
        return value, grad.to_flat()

    return jax.lax.map(batch, jnp.arange(batches))


def _mc_check(risk, student, n_samples, key, z=5.0):
    """Risk and gradient within ``z`` Monte Carlo standard errors (20 batches)."""
    x = risk.measure.sample(key, n_samples)
    batches = 20
    vals, g_mc = _mc_batches(x, risk.target(x), student, batches)
    g_mc = np.asarray(g_mc)  # (batches, p), θ's layout
    loss, grad, _ = _flat_loss(risk, student)
    exact, g_exact = float(loss(student.to_flat())), np.asarray(grad(student.to_flat()))
    se = float(jnp.std(vals)) / np.sqrt(batches)
    assert abs(exact - float(jnp.mean(vals))) < z * se, (exact, float(vals.mean()), se)
    err = np.std(g_mc, axis=0) / np.sqrt(batches)
    np.testing.assert_array_less(np.abs(np.mean(g_mc, axis=0) - g_exact), z * err + 1e-12)
    return se


@pytest.mark.parametrize(
    "d, use_bias, teacher_kind, d_out", [(3, True, "sum", 1), (5, False, "relu", 2)]
)
def test_risk_and_gradient_vs_monte_carlo(d, use_bias, teacher_kind, d_out):
    rng = np.random.default_rng(d + 10 * use_bias)
    mean, cov = rng.normal(size=d) * 0.5, _spd(d, rng)
    relu_teacher = gf.ShallowReLU(d, 3, d_out, key=jax.random.key(d), use_bias=use_bias)
    affine = gf.Affine(rng.normal(size=d), 0.4)
    teacher = {"relu": relu_teacher, "sum": [relu_teacher, affine]}[teacher_kind]
    student = _random_student(d, 4, d_out, seed=d + 1, use_bias=use_bias)
    risk = gf.PopulationRisk.gaussian(teacher, mean, cov)
    _mc_check(risk, student, 1_000_000, jax.random.key(d + 2))


def test_affine_teacher_equals_its_relu_representation():
    # a·x + c = relu(a·x) − relu(−a·x) + c: the affine formulas (Stein's lemma) against
    # the ReLU pair moments at ρ = −1
    d = 3
    rng = np.random.default_rng(9)
    mean, cov, a = rng.normal(size=d), _spd(d, rng), rng.normal(size=d)
    as_relu = gf.ShallowReLU.from_flat(
        jnp.concatenate(
            [jnp.asarray(a), -jnp.asarray(a), jnp.zeros(2), jnp.array([1.0, -1.0, 0.3])]
        ),
        d,
        2,
    )
    student = _random_student(d, 4, seed=10)
    exact = gf.PopulationRisk.gaussian(gf.Affine(a, 0.3), mean, cov)(student)
    assert float(exact) == pytest.approx(
        float(gf.PopulationRisk.gaussian(as_relu, mean, cov)(student)), rel=1e-13
    )


# -- symmetries, zeros and the generalised gradient ---------------------------------------


def test_permutation_zero_at_teacher_and_split_neurons():
    d = 3
    rng = np.random.default_rng(3)
    mean, cov = rng.normal(size=d), _spd(d, rng)
    teacher = gf.ShallowReLU(d, 3, key=jax.random.key(11))
    risk = gf.PopulationRisk.gaussian(teacher, mean, cov)
    x = risk.measure.sample(jax.random.key(1), 10_000)
    scale = float(jnp.mean(risk.target(x) ** 2))  # ≈ E‖f‖², the size of the risk
    loss4, grad4, _ = _flat_loss(risk, _random_student(d, 4, seed=12))
    student = _random_student(d, 4, seed=12)
    perm = np.array([3, 0, 2, 1])
    permuted = eqx.tree_at(
        lambda m: (m.w, m.b, m.v), student, (student.w[perm], student.b[perm], student.v[:, perm])
    )
    assert float(loss4(permuted.to_flat())) == pytest.approx(
        float(loss4(student.to_flat())), rel=1e-14
    )
    # student = teacher: zero risk and zero gradient (pairs with ρ = 1 exactly)
    loss3, grad3, _ = _flat_loss(risk, teacher)
    assert 0.0 <= float(loss3(teacher.to_flat())) <= 1e-15 * scale
    assert float(jnp.max(jnp.abs(grad3(teacher.to_flat())))) <= 1e-14 * scale
    # a teacher neuron split into two identical student neurons (ρ = 1 inside the student)
    split = _split(teacher)
    assert float(loss4(split.to_flat())) <= 1e-14 * scale
    assert float(jnp.max(jnp.abs(grad4(split.to_flat())))) <= 1e-13 * scale


def test_rescaling_invariance_without_biases():
    teacher = orthonormal_teacher(3, 3, key=jax.random.key(0))
    risk = gf.PopulationRisk.gaussian(teacher)
    student = _random_student(3, 4, seed=3, use_bias=False)
    alpha = jnp.array([0.5, 3.0, 1.7, 0.2])
    scaled = eqx.tree_at(
        lambda m: (m.w, m.v), student, (student.w * alpha[:, None], student.v / alpha[None, :])
    )
    loss = _flat_loss(risk, student)[0]
    assert float(loss(scaled.to_flat())) == pytest.approx(float(loss(student.to_flat())), rel=1e-13)


def test_gradient_and_hessian_vs_finite_differences():
    d = 3
    rng = np.random.default_rng(4)
    teacher = (gf.ShallowReLU(d, 3, key=jax.random.key(21)), gf.Affine(rng.normal(size=d), 0.1))
    risk = gf.PopulationRisk.gaussian(teacher, rng.normal(size=d) * 0.3, _spd(d, rng))
    student = _random_student(d, 4, seed=22)
    loss, grad, hess_fn = _flat_loss(risk, student)
    th = student.to_flat()
    np.testing.assert_allclose(grad(th), _central_fd(loss, th, 1e-5), rtol=1e-8, atol=1e-9)
    hess = hess_fn(th)
    np.testing.assert_allclose(hess, hess.T, atol=1e-13)
    np.testing.assert_allclose(hess, _central_fd(grad, th, 1e-5), rtol=1e-7, atol=1e-8)


def _split(teacher):
    """The teacher with its first neuron split in two identical ones (output 0.3 + 0.7)."""
    return eqx.tree_at(
        lambda m: (m.w, m.b, m.v),
        teacher,
        (
            jnp.concatenate([teacher.w, teacher.w[:1]]),
            jnp.concatenate([teacher.b, teacher.b[:1]]),
            jnp.concatenate([teacher.v.at[:, 0].multiply(0.3), 0.7 * teacher.v[:, :1]], axis=1),
        ),
    )


def test_hessian_at_a_zero_with_parallel_neurons_is_the_limit():
    # a zero of L with parallel pairs (ρ = 1: student neurons on teacher neurons, and two
    # identical student neurons); L is C² there (not C³), so central differences of ∇L
    # converge to the Hessian at first order in the step
    d = 3
    teacher = gf.ShallowReLU(d, 3, key=jax.random.key(31))
    risk = gf.PopulationRisk.gaussian(teacher, mean=[0.2, -0.1, 0.3])
    student = _split(teacher)
    _, grad, hess_fn = _flat_loss(risk, student)
    th = student.to_flat()
    hess = np.asarray(hess_fn(th))
    assert np.all(np.isfinite(hess))
    errs = [np.max(np.abs(_central_fd(grad, th, eps) - hess)) for eps in (1e-4, 1e-6)]
    assert errs[1] < 1e-4 * np.max(np.abs(hess))
    assert errs[1] < 0.05 * errs[0]  # first-order convergence (factor 100 in the step)
    # and it is the Gauss–Newton matrix 2 E[∂N ∂Nᵀ] (zero residual), here by Monte Carlo
    x = risk.measure.sample(jax.random.key(0), 100_000)
    jac = jax.vmap(jax.grad(lambda t, xi: gf.ShallowReLU.from_flat(t, d, 4)(xi[None])[0, 0]),
                   (None, 0))(th, x)  # fmt: skip
    gn = 2 * np.asarray(jac.T @ jac) / x.shape[0]
    np.testing.assert_allclose(hess, gn, atol=0.02 * np.max(np.abs(hess)))


def test_degenerate_neuron_generalised_gradient():
    """At ``w_j = 0``: ``u_j ≡ b_j`` and ``1{u_j > 0} = 1{b_j > 0}``.

    ``G_{w_j} = 2 E[1{u_j > 0} v_j (N − f) x]``, ``G_{b_j} = 2 E[1{u_j > 0} v_j (N − f)]``,
    ``G_{v_j} = 2 E[relu(u_j) (N − f)]``: all zero for ``b_j ≤ 0`` (at ``b_j = 0`` the
    risk is not differentiable; ``G`` is the ``relu'(0) = 0`` convention); for ``b_j > 0``
    the risk is smooth there and ``G`` is the gradient (finite differences).
    """
    d = 3
    rng = np.random.default_rng(5)
    mean, cov = rng.normal(size=d) * 0.3, _spd(d, rng)
    risk = gf.PopulationRisk.gaussian(gf.ShallowReLU(d, 3, key=jax.random.key(41)), mean, cov)
    base = _random_student(d, 4, seed=42)
    for bj in (0.0, -0.4, 0.6):
        student = eqx.tree_at(
            lambda m: (m.w, m.b), base, (base.w.at[1].set(0.0), base.b.at[1].set(bj))
        )
        g = _unflatten(_flat_loss(risk, student)[1](student.to_flat()), (d, 4, 1, True))
        if bj <= 0:
            assert np.all(np.asarray(g.w[1]) == 0) and float(g.b[1]) == 0 and float(g.v[0, 1]) == 0
        else:
            loss, grad, _ = _flat_loss(risk, student)
            th = student.to_flat()
            np.testing.assert_allclose(grad(th), _central_fd(loss, th, 1e-6), rtol=1e-7, atol=1e-8)
        if bj == 0:
            # the same convention as the empirical generalised gradient on samples
            # (w_j = 0: 1{u_j > 0} = 1{b_j > 0} exactly), up to Monte Carlo error
            _mc_check(risk, student, 1_000_000, jax.random.key(43))
            assert np.all(np.isfinite(_flat_loss(risk, student)[2](student.to_flat())))
    # no biases: w_j = 0 is a kink (L ~ ‖w_j‖); G_{w_j} = 0 and the kink margin is 0
    teacher = orthonormal_teacher(d, 3)
    student = eqx.tree_at(lambda m: m.w, base, base.w.at[1].set(0.0))
    student = gf.ShallowReLU.from_flat(
        jnp.concatenate([student.w.ravel(), student.v.ravel()]), d, 4, use_bias=False
    )
    nb = gf.PopulationRisk.gaussian(teacher)
    g = _unflatten(_flat_loss(nb, student)[1](student.to_flat()), (d, 4, 1, False))
    assert np.all(np.asarray(g.w[1]) == 0) and float(g.v[0, 1]) == 0
    assert float(nb.kink_margin(student)) == 0.0
    assert float(nb.kink_margin(base_nb := _random_student(d, 4, seed=2, use_bias=False))) == (
        pytest.approx(float(jnp.min(jnp.linalg.norm(base_nb.w, axis=1))))
    )


# -- dtypes, transformations, models --------------------------------------------------------


def test_float32_and_jit_vmap_over_students():
    d = 3
    rng = np.random.default_rng(6)
    teacher = (gf.ShallowReLU(d, 3, key=jax.random.key(51)), gf.Affine(rng.normal(size=d), 0.2))
    risk = gf.PopulationRisk.gaussian(teacher, rng.normal(size=d) * 0.3, _spd(d, rng))
    keys = jax.random.split(jax.random.key(52), 3)
    # a float32 batch of students, jit + vmap of value and gradient
    students = eqx.filter_vmap(lambda k: gf.ShallowReLU(d, 4, key=k))(keys)
    students32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), students)
    vals, grads = eqx.filter_jit(eqx.filter_vmap(eqx.filter_value_and_grad(risk)))(students32)
    assert vals.dtype == jnp.float32 and grads.w.dtype == jnp.float32
    loss, grad, _ = _flat_loss(risk, gf.ShallowReLU(d, 4, key=keys[0]))
    for i, key in enumerate(keys):
        # each member against its own float64 evaluation, to float32 accuracy
        th = gf.ShallowReLU(d, 4, key=key).to_flat()
        v64, g64 = float(loss(th)), np.asarray(grad(th))
        assert float(vals[i]) == pytest.approx(v64, rel=2e-5, abs=1e-6)
        g32 = jax.tree_util.tree_map(lambda a, i=i: a[i], grads).to_flat()
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4 * np.max(np.abs(g64)))
    # zero risk at the teacher in float32 too
    t32 = gf.ShallowReLU(d, 3, key=jax.random.key(51), dtype=jnp.float32)
    assert float(gf.PopulationRisk.gaussian(t32)(t32)) <= 1e-6


def test_safran_shamir_setting_frozen_output_layer():
    d = k = 3
    teacher = orthonormal_teacher(d, k, key=jax.random.key(2))
    w = np.asarray(teacher.w)
    np.testing.assert_allclose(w @ w.T, np.eye(k), atol=1e-14)
    risk = gf.PopulationRisk.gaussian(teacher)
    student = gf.ShallowReLU(d, 4, key=jax.random.key(3), use_bias=False, frozen=("v",))
    student = eqx.tree_at(lambda m: m.v, student, jnp.ones((1, 4)))
    params, static = partition(student)
    assert params.v is None and params.b is None and params.c is None
    g = jax.grad(lambda p: risk(eqx.combine(p, static)))(params)
    full = _unflatten(_flat_loss(risk, student)[1](student.to_flat()), (d, 4, 1, False))
    np.testing.assert_allclose(g.w, full.w, rtol=1e-14, atol=1e-15)  # v frozen, w trained
    # the flat layout without biases round-trips and the risk is unchanged
    assert student.num_params == d * 4 + 4 == student.to_flat().shape[0]
    again = gf.ShallowReLU.from_flat(student.to_flat(), d, 4, use_bias=False, frozen=("v",))
    assert float(risk(again)) == float(risk(student))
    # the teacher itself (v = 1, orthonormal w) has zero risk; E‖f‖² = k/2 + k(k−1)/(2π)
    zero = eqx.tree_at(lambda m: m.w, teacher, 0 * teacher.w)
    assert float(risk(teacher)) <= 1e-15
    assert float(risk(zero)) == pytest.approx(k / 2 + k * (k - 1) / (2 * np.pi), rel=1e-14)


def test_validation_errors():
    teacher = gf.ShallowReLU(3, 2, key=jax.random.key(0))
    with pytest.raises(TypeError, match="teacher"):
        gf.PopulationRisk.gaussian(lambda x: x)
    with pytest.raises(ValueError, match="teacher"):
        gf.PopulationRisk.gaussian(())
    with pytest.raises(ValueError, match="input dimensions differ"):
        gf.PopulationRisk.gaussian((teacher, gf.Affine(np.ones(4))))
    with pytest.raises(ValueError, match="output dimensions differ"):
        gf.PopulationRisk.gaussian((gf.ShallowReLU(3, 2, 2, key=jax.random.key(0)), gf.Affine(1.0)))
    with pytest.raises(ValueError, match="mean must have shape"):
        gf.PopulationRisk.gaussian(teacher, mean=np.zeros(2))
    with pytest.raises(ValueError, match="cov must have shape"):
        gf.PopulationRisk.gaussian(teacher, cov=np.eye(2))
    with pytest.raises(ValueError, match="positive definite"):
        gf.PopulationRisk.gaussian(teacher, cov=np.diag([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="symmetric"):
        gf.PopulationRisk.gaussian(teacher, cov=np.eye(3) + np.triu(np.ones((3, 3)), 1))
    with pytest.raises(ValueError, match="cov must be finite|must be finite"):
        gf.PopulationRisk.gaussian(teacher, cov=np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="infer the input dimension"):
        gf.PopulationRisk.gaussian(gf.Affine(2.0))
    risk = gf.PopulationRisk.gaussian(teacher)
    with pytest.raises(ValueError, match="input dimension"):
        risk(gf.ShallowReLU(2, 2, key=jax.random.key(1)))
    with pytest.raises(ValueError, match="output dimension"):
        risk(gf.ShallowReLU(3, 2, 2, key=jax.random.key(1)))
    with pytest.raises(ValueError, match="ShallowReLU students"):
        risk(gf.DeepMLP((3, 2, 1), key=jax.random.key(1)))
    with pytest.raises(TypeError, match="use_bias"):
        gf.ShallowReLU(3, 2, key=jax.random.key(1), use_bias="no")
    # a scalar-slope Affine needs d from mean/cov, then works
    r = gf.PopulationRisk.gaussian(gf.Affine(2.0, 1.0), mean=np.zeros(2))
    assert r.dim == 2
