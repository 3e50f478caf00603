"""Exact population risk of a ``ShallowReLU`` student under Gaussian inputs.

For ``x ~ N(μ, Σ)`` on ``R^d``, a student ``N_θ(x) = c + Σ_j v_j relu(w_j · x + b_j)``
and a teacher ``f(x) = c_f + A x + Σ_k v'_k relu(w'_k · x + b'_k)`` (a ``ShallowReLU``, an
affine map, or a sum of them), the risk ``L(θ) = E‖N_θ(x) − f(x)‖²`` is a finite sum of
Gaussian expectations of at most two pre-activations at a time. Every pre-activation
``u = w · x + b`` is Gaussian with mean ``m = w · μ + b`` and variance ``C = wᵀ Σ w``; two
of them have covariance ``C₁₂ = w₁ᵀ Σ w₂``. With ``s = √C``, ``h = m/s``, ``ρ =
C₁₂/(s₁ s₂)``, ``r = √(1 − ρ²)``, the standard normal density/CDF ``φ``/``Φ`` and the
bivariate normal CDF ``Φ₂(h, k; ρ) = P(X < h, Y < k)`` (``X, Y`` standard, correlation
``ρ``), the three closed forms are

    E[relu(u)]             = m Φ(h) + s φ(h),
    E[relu(u) g·(x − μ)]   = (gᵀ Σ w) Φ(h)                      (Stein's lemma),
    E[relu(u₁) relu(u₂)]   = s₁ s₂ [ (h k + ρ) Φ₂(h, k; ρ) + k φ(h) Φ((k − ρh)/r)
                                      + h φ(k) Φ((h − ρk)/r) + r φ(k) φ((h − ρk)/r) ],

(``k = m₂/s₂``; for ``μ = 0`` and no biases the last one is the degree-1 arc-cosine kernel
``s₁ s₂ (sin ϑ + (π − ϑ) cos ϑ)/(2π)``, ``cos ϑ = ρ``, of Cho & Saul 2009). Expanding
``E‖N − f‖²`` gives the risk as ``O((n + k)²)`` such terms; ``Φ₂`` is Genz's (2004)
refinement of the Drezner–Wesolowsky method with a 20-point Gauss–Legendre rule, accurate
to about ``1e-15`` absolute in float64 for every ``ρ ∈ [−1, 1]``. The derivation is in
``docs/gaussian_risk.md``.

**Derivatives.** ``E[relu(u₁) relu(u₂)]`` is differentiated as a function ``F(m₁, m₂,
C₁₁, C₁₂, C₂₂)`` through a ``jax.custom_jvp`` with the exact partial derivatives (the heat
equation of the Gaussian density, Price's theorem):

    ∂F/∂m₁ = E[1{u₁ > 0} relu(u₂)],    ∂F/∂C₁₂ = P(u₁ > 0, u₂ > 0) = Φ₂(h, k; ρ),
    ∂F/∂C₁₁ = ½ E[δ(u₁) relu(u₂)] = ½ (s₂/s₁) φ(h) [(k − ρh) Φ((k − ρh)/r) + r φ((k − ρh)/r)],

and the same with ``1 ↔ 2``. The chain rule through ``m = w · μ + b``, ``C = wᵀ Σ w`` then
gives ``∇L = 2 E[(N_θ − f) ∂_θ N_θ]`` with ``relu'(0) = 0``: the generalised gradient of
the theory. Autodiff of the closed form itself would divide by ``r`` and ``s`` and fail
(``NaN``) exactly where it matters: two parallel neurons (``ρ = ±1``: every neuron with
itself, and a student neuron equal to a teacher neuron) and a zero weight vector. The
conventions at those points:

- ``ρ = ±1`` (``1 − |ρ| ≤ 32 eps``, i.e. angles below ``~10⁻⁷`` in float64, are
  snapped): ``r = 0``, ``Φ(t/0)`` is ``1{t > 0}`` (``½`` at ``t = 0``) and ``r φ(t/0) =
  0`` — the limits of the formulas, continuous in θ.
- ``s = 0`` (``w = 0``), or ``s ≤ eps·|m|``: ``u ≡ m`` is a constant, every expectation
  factorises (``E[relu(u₁) relu(u₂)] = relu(m₁) E[relu(u₂)]``), ``P(u > 0) = 1{m > 0}``
  and ``E[δ(u)·] = 0``. At ``w_j = 0, b_j = 0`` this makes ``∂L/∂w_j = ∂L/∂b_j = 0`` and
  ``∂L/∂v_j = 0``: the generalised gradient (``1{u_j > 0} ≡ 0``).

Second derivatives differentiate these partial derivatives (``Φ₂`` has its own custom
JVP ``∂Φ₂/∂h = φ(h) Φ((k − ρh)/r)``, ``∂Φ₂/∂ρ = φ₂(h, k; ρ)``), so ``jax.hessian`` is
exact where no two neurons are parallel and no ``w_j`` vanishes, and finite everywhere.

**Smoothness.** Integrating over a Gaussian smooths the ReLU kinks: ``L`` is ``C²`` in θ
everywhere except where a neuron is degenerate, ``(w_j, b_j) = 0`` (there ``E[relu(w·x +
b)]`` behaves like a norm of ``(w, b)``). Parallel neurons cost only the third
derivative. The kink margin of this risk is therefore the distance ``min_j ‖(w_j, b_j)‖``.
"""

from __future__ import annotations

import math
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.scipy.special import ndtr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import check_float_dtype, check_key, positive_int, real_array
from ..models.activations import relu
from ..models.base import partition
from ..models.shallow import ShallowReLU
from .base import AbstractPiecewiseSmoothRisk
from .measures import Gaussian, QuadratureError
from .targets import AbstractTarget, Affine, Constant

# ----------------------------------------------------------------------------------
# The bivariate normal CDF (Genz 2004, after Drezner & Wesolowsky 1990)
# ----------------------------------------------------------------------------------

# 20-point Gauss–Legendre rule on [-1, 1], positive half (Genz's BVND constants).
_GL_X = np.array(
    [
        0.9931285991850949,
        0.9639719272779138,
        0.9122344282513259,
        0.8391169718222188,
        0.7463319064601508,
        0.6360536807265150,
        0.5108670019508271,
        0.3737060887154196,
        0.2277858511416451,
        0.07652652113349733,
    ]
)
_GL_W = np.array(
    [
        0.01761400713915212,
        0.04060142980038694,
        0.06267204833410906,
        0.08327674157670475,
        0.1019301198172404,
        0.1181945319615184,
        0.1316886384491766,
        0.1420961093183821,
        0.1491729864726037,
        0.1527533871307259,
    ]
)
# The rule on [0, 2] (nodes 1 ∓ x), as Genz uses it.
_NODES = np.concatenate([1.0 - _GL_X, 1.0 + _GL_X])
_WEIGHTS = np.concatenate([_GL_W, _GL_W])
_TWO_PI = 2.0 * math.pi
_CLAMP = 40.0  # |h|, |k| beyond this: Φ(−40) < 1e-300, the CDF is exact in float64
_SNAP = 32  # 1 − |ρ| ≤ _SNAP · eps counts as ρ = ±1 (parallel neurons)


def _phi(x):
    return jnp.exp(-0.5 * x * x) / math.sqrt(_TWO_PI)


def _ndtr_many(*xs):
    """``Φ`` of several same-shaped arrays in one call (one copy of ``ndtr``'s large
    polynomial graph instead of one per call: XLA compiles much faster)."""
    return tuple(ndtr(jnp.stack(xs)))


def _step(x):
    """``1{x > 0}`` with ``½`` at ``0`` (the limit of ``Φ(x/r)`` as ``r → 0``)."""
    one, zero = jnp.ones_like(x), jnp.zeros_like(x)
    return jnp.where(x > 0, one, jnp.where(x < 0, zero, 0.5 * one))


def _upper(dh, dk, r):
    """``P(X > dh, Y > dk)`` for standard ``X, Y`` with correlation ``r`` (Genz's BVNU).

    Elementwise on broadcast arrays; finite ``dh, dk``; ``|r| ≤ 1``. Both of Genz's
    branches are evaluated on safe inputs and the right one is selected (fixed shapes:
    jittable and vmappable).
    """
    dtype = dh.dtype
    x = jnp.asarray(_NODES, dtype)
    wts = jnp.asarray(_WEIGHTS, dtype)
    h, k = dh, dk
    hk = h * k
    abs_r = jnp.abs(r)
    # |r| < 0.925: Φ₂ = Φ(−h)Φ(−k) + (1/2π) ∫_0^{asin r} exp(−(h² + k² − 2hk sin t)/(2cos² t)) dt
    r_a = jnp.where(abs_r < 0.925, r, jnp.zeros_like(r))
    hs = 0.5 * (h * h + k * k)
    asr = 0.5 * jnp.arcsin(r_a)
    sn = jnp.sin(asr[..., None] * x)
    integrand = jnp.exp((sn * hk[..., None] - hs[..., None]) / (1.0 - sn * sn))
    quad_small = jnp.sum(integrand * wts, axis=-1) * asr / _TWO_PI
    # |r| ≥ 0.925: Genz's expansion around |r| = 1 plus a Gauss–Legendre correction
    k_b = jnp.where(r < 0, -k, k)
    hk_b = jnp.where(r < 0, -hk, hk)
    inner = abs_r < 1.0
    r_b = jnp.where(inner, abs_r, jnp.full_like(r, 0.95))
    a_s = (1.0 - r_b) * (1.0 + r_b)
    a = jnp.sqrt(a_s)
    b_s = (h - k_b) ** 2
    c = (4.0 - hk_b) / 8.0
    d = (12.0 - hk_b) / 80.0
    asr_b = -0.5 * (b_s / a_s + hk_b)
    bvn = jnp.where(
        asr_b > -100.0,
        a * jnp.exp(asr_b) * (1.0 - c * (b_s - a_s) * (1.0 - d * b_s) / 3.0 + c * d * a_s * a_s),
        jnp.zeros_like(a),
    )
    b = jnp.sqrt(b_s)
    cdf_mh, cdf_mk, cdf_ba, cdf_max, cdf_kb, cdf_h, cdf_mkb = _ndtr_many(
        -h, -k, -b / a, -jnp.maximum(h, k_b), k_b, h, -k_b
    )
    small = quad_small + cdf_mh * cdf_mk
    sp = math.sqrt(_TWO_PI) * cdf_ba
    hk_safe = jnp.maximum(hk_b, -100.0)
    bvn = bvn - jnp.where(
        hk_b > -100.0,
        jnp.exp(-0.5 * hk_safe) * sp * b * (1.0 - c * b_s * (1.0 - d * b_s) / 3.0),
        jnp.zeros_like(a),
    )
    half_a = 0.5 * a
    xs = (half_a[..., None] * x) ** 2
    asr_x = -0.5 * (b_s[..., None] / xs + hk_b[..., None])
    sp_x = 1.0 + c[..., None] * xs * (1.0 + 5.0 * d[..., None] * xs)
    rs = jnp.sqrt(1.0 - xs)
    ep = jnp.exp(-0.5 * hk_b[..., None] * xs / (1.0 + rs) ** 2) / rs
    terms = jnp.where(asr_x > -100.0, jnp.exp(asr_x) * (sp_x - ep), jnp.zeros_like(xs))
    core = jnp.where(inner, (half_a * jnp.sum(terms * wts, axis=-1) - bvn) / _TWO_PI, 0.0)
    pos = core + cdf_max
    width = jnp.where(h < 0, cdf_kb - cdf_h, cdf_mh - cdf_mkb)
    neg = jnp.where(h >= k_b, -core, width - core)
    large = jnp.where(r > 0, pos, neg)
    return jnp.clip(jnp.where(abs_r < 0.925, small, large), 0.0, 1.0)


def _bvn_value(h, k, rho):
    h = jnp.clip(h, -_CLAMP, _CLAMP)
    k = jnp.clip(k, -_CLAMP, _CLAMP)
    return _upper(-h, -k, rho)


@jax.custom_jvp
def bivariate_normal_cdf(
    h: Float[ArrayLike, "*shape"], k: Float[ArrayLike, "*shape"], rho: Float[ArrayLike, "*shape"]
) -> Float[Array, "*shape"]:
    """``Φ₂(h, k; ρ) = P(X < h, Y < k)`` for standard normals ``X, Y`` with correlation ``ρ``.

    Genz's (2004) algorithm (Drezner & Wesolowsky's integral over ``asin ρ`` for ``|ρ| <
    0.925``, an expansion about ``|ρ| = 1`` with a Gauss–Legendre correction otherwise;
    20 nodes throughout). Absolute error ``≲ 1e-15`` in float64 (float32: ``~1e-7``),
    including ``ρ = ±1`` exactly (``Φ(min(h, k))`` and ``max(0, Φ(h) + Φ(k) − 1)``) and
    infinite ``h, k``. Elementwise over broadcast arrays; jittable, vmappable.
    Derivatives (custom JVP): ``∂/∂h = φ(h) Φ((k − ρh)/r)``, ``∂/∂k = φ(k) Φ((h − ρk)/r)``,
    ``∂/∂ρ = φ₂(h, k; ρ)``, ``r = √(1 − ρ²)``, with the ``r → 0`` limits ``Φ(t/0) =
    1{t > 0}`` (``½`` at ``t = 0``) and ``φ₂ = 0`` at ``|ρ| = 1``.

    **Arguments:**

    - `h`, `k`: upper limits (any real, ``±inf`` allowed).
    - `rho`: correlation in ``[−1, 1]`` (clipped).

    **Returns:**

    The probabilities, in the floating dtype of the inputs.
    """
    h, k, rho = _promote(h, k, rho)
    return _bvn_value(h, k, jnp.clip(rho, -1.0, 1.0))


def _promote(*xs):
    dtype = jnp.result_type(*xs, float)
    arrays = jnp.broadcast_arrays(*(jnp.asarray(x, dtype) for x in xs))
    return tuple(arrays)


@bivariate_normal_cdf.defjvp
def _bvn_jvp(primals, tangents):
    h, k, rho = _promote(*primals)
    rho = jnp.clip(rho, -1.0, 1.0)
    dh, dk, drho = (jnp.broadcast_to(jnp.asarray(t, h.dtype), h.shape) for t in tangents)
    value = _bvn_value(h, k, rho)
    omr = (1.0 - rho) * (1.0 + rho)
    pos = omr > 0
    r = jnp.sqrt(jnp.where(pos, omr, jnp.ones_like(omr)))
    hc = jnp.clip(h, -_CLAMP, _CLAMP)
    kc = jnp.clip(k, -_CLAMP, _CLAMP)
    t1, t2 = kc - rho * hc, hc - rho * kc
    a1 = jnp.where(pos, ndtr(t1 / r), _step(t1))
    a2 = jnp.where(pos, ndtr(t2 / r), _step(t2))
    dens = jnp.where(pos, _phi(kc) * _phi(t2 / r) / r, jnp.zeros_like(r))
    dot = _phi(hc) * a1 * dh + _phi(kc) * a2 * dk + dens * drho
    return value, dot


# ----------------------------------------------------------------------------------
# Gaussian expectations of one and two ReLU units (with exact partial derivatives)
# ----------------------------------------------------------------------------------


def _degenerate(m, c):
    """``(s, s_safe, deg)``: the standard deviation, a safe divisor, and ``u ≡ m``."""
    eps = jnp.finfo(m.dtype).eps
    positive = c > 0
    s = jnp.where(positive, jnp.sqrt(jnp.where(positive, c, jnp.ones_like(c))), 0.0)
    deg = s <= eps * jnp.abs(m)
    return s, jnp.where(deg, jnp.ones_like(s), s), deg


def _single_parts(m, c):
    """``(E[relu(u)], P(u > 0), p_u(0))`` for ``u ~ N(m, c)`` (``u ≡ m`` if degenerate)."""
    _, s_safe, deg = _degenerate(m, c)
    h = jnp.where(deg, jnp.zeros_like(m), m / s_safe)
    pdf = _phi(h)
    mean = jnp.where(deg, relu(m), m * ndtr(h) + s_safe * pdf)
    prob = jnp.where(deg, (m > 0).astype(m.dtype), ndtr(h))
    dens = jnp.where(deg, jnp.zeros_like(m), pdf / s_safe)
    return mean, prob, dens


@jax.custom_jvp
def _relu_mean(m, c):
    """``E[relu(u)]``, ``u ~ N(m, c)``; ``∂/∂m = P(u > 0)``, ``∂/∂c = p_u(0)/2``."""
    return _single_parts(m, c)[0]


@_relu_mean.defjvp
def _relu_mean_jvp(primals, tangents):
    mean, prob, dens = _single_parts(*primals)
    dm, dc = tangents
    return mean, prob * dm + 0.5 * dens * dc


def _positive_prob(m, c):
    """``P(u > 0)``, ``u ~ N(m, c)`` (``1{m > 0}`` if degenerate; autodiff is exact)."""
    return _single_parts(m, c)[1]


def _pair_parts(m1, m2, c11, c12, c22):
    """``F = E[relu(u₁) relu(u₂)]`` and its partials in ``(m₁, m₂, C₁₁, C₁₂, C₂₂)``.

    Elementwise over broadcast arrays. See the module docstring for the formulas and
    the conventions at ``ρ = ±1`` and degenerate units.
    """
    m1, m2, c11, c12, c22 = jnp.broadcast_arrays(m1, m2, c11, c12, c22)
    eps = jnp.finfo(m1.dtype).eps
    zero, one = jnp.zeros_like(m1), jnp.ones_like(m1)
    s1, s1_safe, deg1 = _degenerate(m1, c11)
    s2, s2_safe, deg2 = _degenerate(m2, c22)
    h1 = jnp.where(deg1, zero, m1 / s1_safe)  # the units' own standardised means
    h2 = jnp.where(deg2, zero, m2 / s2_safe)
    deg = deg1 | deg2
    h = jnp.where(deg, zero, m1 / s1_safe)
    k = jnp.where(deg, zero, m2 / s2_safe)
    rho = jnp.where(deg, zero, jnp.clip(c12 / (s1_safe * s2_safe), -1.0, 1.0))
    rho = jnp.where(1.0 - jnp.abs(rho) <= _SNAP * eps, jnp.sign(rho), rho)
    omr = (1.0 - rho) * (1.0 + rho)
    pos = omr > 0
    r = jnp.where(pos, jnp.sqrt(jnp.where(pos, omr, one)), zero)
    r_safe = jnp.where(pos, r, one)
    t1, t2 = k - rho * h, h - rho * k
    cdf_h1, cdf_h2, cdf_t1, cdf_t2 = _ndtr_many(h1, h2, t1 / r_safe, t2 / r_safe)
    a1 = jnp.where(pos, cdf_t1, _step(t1))  # P(u₂ > 0 | u₁ = 0)
    a2 = jnp.where(pos, cdf_t2, _step(t2))  # P(u₁ > 0 | u₂ = 0)
    # one-unit quantities E[relu(u)], P(u > 0), p_u(0)
    pdf1, pdf2 = _phi(h1), _phi(h2)
    e1 = jnp.where(deg1, relu(m1), m1 * cdf_h1 + s1_safe * pdf1)
    e2 = jnp.where(deg2, relu(m2), m2 * cdf_h2 + s2_safe * pdf2)
    p1 = jnp.where(deg1, (m1 > 0).astype(m1.dtype), cdf_h1)
    p2 = jnp.where(deg2, (m2 > 0).astype(m2.dtype), cdf_h2)
    q1 = jnp.where(deg1, zero, pdf1 / s1_safe)
    q2 = jnp.where(deg2, zero, pdf2 / s2_safe)
    g1 = jnp.where(pos, r * _phi(t1 / r_safe), zero)  # r φ((k − ρh)/r)
    g2 = jnp.where(pos, r * _phi(t2 / r_safe), zero)
    big = bivariate_normal_cdf(h, k, rho)
    ph, pk = _phi(h), _phi(k)
    moment = (h * k + rho) * big + k * ph * a1 + h * pk * a2 + pk * g2
    f = jnp.where(deg, e1 * e2, s1 * s2 * moment)
    f_m1 = jnp.where(deg, p1 * e2, s2 * (k * big + pk * a2 + rho * ph * a1))
    f_m2 = jnp.where(deg, e1 * p2, s1 * (h * big + ph * a1 + rho * pk * a2))
    f_c12 = jnp.where(deg, p1 * p2, big)
    # ½ E[δ(u₁) relu(u₂)] = ½ p₁(0) E[relu(u₂) | u₁ = 0]
    f_c11 = 0.5 * jnp.where(deg, q1 * e2, q1 * s2 * (t1 * a1 + g1))
    f_c22 = 0.5 * jnp.where(deg, e1 * q2, q2 * s1 * (t2 * a2 + g2))
    return f, f_m1, f_m2, f_c11, f_c12, f_c22


@jax.custom_jvp
def _relu_moment(m1, m2, c11, c12, c22):
    """``E[relu(u₁) relu(u₂)]`` for jointly Gaussian ``u`` (means ``m``, covariance ``C``)."""
    return _pair_parts(m1, m2, c11, c12, c22)[0]


@_relu_moment.defjvp
def _relu_moment_jvp(primals, tangents):
    f, f_m1, f_m2, f_c11, f_c12, f_c22 = _pair_parts(*primals)
    dm1, dm2, dc11, dc12, dc22 = tangents
    dot = f_m1 * dm1 + f_m2 * dm2 + f_c11 * dc11 + f_c12 * dc12 + f_c22 * dc22
    return f, dot


def relu_moments(
    mean1: Float[ArrayLike, "*shape"],
    mean2: Float[ArrayLike, "*shape"],
    var1: Float[ArrayLike, "*shape"],
    cov12: Float[ArrayLike, "*shape"],
    var2: Float[ArrayLike, "*shape"],
) -> tuple[Float[Array, "*shape"], Float[Array, "*shape"], Float[Array, "*shape"]]:
    """``(E[relu(u₁) relu(u₂)], E[relu(u₁)], E[relu(u₂)])`` for jointly Gaussian ``u₁, u₂``.

    The building block of the risk, exposed for tests and studies.

    **Arguments:**

    - `mean1`, `mean2`: the means ``m₁, m₂``.
    - `var1`, `cov12`, `var2`: the covariance matrix ``[[C₁₁, C₁₂], [C₁₂, C₂₂]]``
      (positive semi-definite; zero variances are constants ``u ≡ m``).

    **Returns:**

    Three arrays (broadcast shape); differentiable with the generalised-gradient
    conventions of the module docstring.
    """
    m1, m2, c11, c12, c22 = _promote(mean1, mean2, var1, cov12, var2)
    return _relu_moment(m1, m2, c11, c12, c22), _relu_mean(m1, c11), _relu_mean(m2, c22)


# ----------------------------------------------------------------------------------
# Teachers
# ----------------------------------------------------------------------------------

_TEACHER_HINT = (
    "teacher must be a ShallowReLU, an Affine or Constant target, or a tuple/list of them "
    "(their sum)"
)


def _teacher_parts(teacher) -> tuple[list, list, list, int | None, int | None]:
    """Split a teacher (or a tuple of teachers) into ReLU units and affine parts.

    Returns ``(relu, slopes, offsets, d, d_out)``: lists of ``(w, b, v)`` NumPy triples,
    of ``(d_out, d)`` slopes (``None`` entries for a scalar slope on every coordinate),
    of ``(d_out,)`` offsets; ``d``/``d_out`` where some part fixes them.
    """
    parts = list(teacher) if isinstance(teacher, (tuple, list)) else [teacher]
    if not parts:
        raise ValueError(f"{_TEACHER_HINT}; got an empty {type(teacher).__name__}.")
    relu_units, slopes, offsets = [], [], []
    dims, outs = set(), set()
    for i, part in enumerate(parts):
        where = (
            "teacher"
            if len(parts) == 1 and not isinstance(teacher, (tuple, list))
            else (f"teacher[{i}]")
        )
        if isinstance(part, ShallowReLU):
            arrays = [
                np.asarray(a, float) if a is not None else None
                for a in (part.w, part.b, part.v, part.c)
            ]
            w, b, v, c = arrays
            if not all(np.all(np.isfinite(a)) for a in arrays if a is not None):
                raise ValueError(f"{where} (a ShallowReLU) has non-finite parameters.")
            b = np.zeros(w.shape[0]) if b is None else b
            relu_units.append((w, b, v))
            if c is not None:
                offsets.append(c)
            dims.add(w.shape[1])
            outs.add(v.shape[0])
        elif isinstance(part, Affine):
            slope = np.asarray(part.slope, float)
            offsets.append(np.asarray(part.intercept, float).reshape(1))
            if slope.ndim == 1:
                dims.add(slope.shape[0])
                slopes.append(slope[None, :])
            else:
                slopes.append(float(slope))  # a scalar slope multiplies every coordinate
            outs.add(1)
        elif isinstance(part, Constant):
            value = np.atleast_1d(np.asarray(part.value, float))
            offsets.append(value)
            outs.add(value.shape[0])
        elif isinstance(part, (tuple, list)):
            raise TypeError(f"{where}: nested tuples of teachers are not supported; flatten.")
        else:
            raise TypeError(f"{_TEACHER_HINT}; {where} is a {type(part).__name__}.")
    if len(dims) > 1:
        raise ValueError(f"the teachers' input dimensions differ: {sorted(dims)}.")
    if len(outs) > 1:
        raise ValueError(
            f"the teachers' output dimensions differ: {sorted(outs)} (an Affine target has "
            "one output; sum it only with scalar-output teachers)."
        )
    return relu_units, slopes, offsets, dims.pop() if dims else None, outs.pop()


def _input_law(mean, cov, d: int | None) -> Gaussian:
    """``Gaussian(mean, cov)`` with ``mean = 0`` / ``cov = I`` defaults and clear errors."""
    if mean is not None:
        mu = real_array("mean", mean, max_ndim=1, hint="mean must be a scalar or a (d,) vector.")
        mu = np.atleast_1d(mu)
        if d is not None and mu.shape != (d,):
            raise ValueError(
                f"mean must have shape ({d},) to match the teacher's input dimension, got "
                f"{np.shape(mean)}."
            )
        d = mu.shape[0]
    if cov is not None:
        sigma = real_array("cov", cov, max_ndim=2, hint="cov must be a (d, d) matrix.")
        if sigma.ndim == 0:
            sigma = sigma.reshape(1, 1)
        if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
            raise ValueError(f"cov must be a square (d, d) matrix, got shape {sigma.shape}.")
        if d is not None and sigma.shape != (d, d):
            raise ValueError(
                f"cov must have shape ({d}, {d}) to match the teacher and mean, got {sigma.shape}."
            )
        d = sigma.shape[0]
    if d is None:
        raise ValueError(
            "cannot infer the input dimension d: the teacher has no ShallowReLU and no "
            "vector slope; pass mean (a (d,) vector) or cov (a (d, d) matrix)."
        )
    mu = np.zeros(d) if mean is None else mu
    sigma = np.eye(d) if cov is None else sigma
    if not np.allclose(sigma, sigma.T, rtol=1e-12, atol=1e-14 * max(np.abs(sigma).max(), 1e-300)):
        raise ValueError("cov must be symmetric.")
    if np.any(np.linalg.eigvalsh(sigma) <= 0):
        raise ValueError(
            "cov must be symmetric positive definite (some eigenvalue is <= 0); for a "
            "degenerate Gaussian x = μ + B z, fold B into the teacher and the student."
        )
    return Gaussian(mu, sigma)


def orthonormal_teacher(
    d: int,
    k: int,
    *,
    key: PRNGKeyArray | None = None,
    d_out: int = 1,
    dtype=None,
) -> ShallowReLU:
    """The teacher of the teacher–student literature: ``f(x) = Σ_{i ≤ k} relu(w_i · x)``.

    ``k ≤ d`` orthonormal weight vectors ``w_i``, output weights one, no biases (e.g.
    Safran & Shamir 2018, with ``x ~ N(0, I_d)``). Use with
    ``PopulationRisk.gaussian(teacher)`` and a student ``ShallowReLU(d, n,
    use_bias=False)`` (with ``frozen=("v",)`` and ``v = 1`` for their fixed output layer).

    **Arguments:**

    - `d`, `k`: input dimension and number of teacher neurons, ``1 ≤ k ≤ d``.
    - `key`: ``None`` for the coordinate vectors ``w_i = e_i``, or a JAX PRNG key for a
      uniformly random orthonormal frame (QR of a Gaussian matrix, signs fixed).
    - `d_out`: output dimension (every output is the same sum).
    - `dtype`: a floating dtype (default JAX's default float).

    **Returns:**

    A :class:`gflow_jax.ShallowReLU` with ``use_bias=False``.
    """
    d = positive_int("d", d)
    k = positive_int("k", k)
    d_out = positive_int("d_out", d_out)
    if k > d:
        raise ValueError(f"k orthonormal vectors need k <= d, got k={k}, d={d}.")
    dtype = check_float_dtype("dtype", dtype)
    if key is None:
        w = jnp.eye(k, d, dtype=dtype)
    else:
        g = jax.random.normal(check_key("key", key), (d, k), dtype)
        q, r = jnp.linalg.qr(g)
        w = (q * jnp.sign(jnp.diagonal(r))[None, :]).T
    template = ShallowReLU(d, k, d_out, key=jax.random.key(0), use_bias=False, dtype=dtype)
    return eqx.tree_at(lambda m: (m.w, m.v), template, (w, jnp.ones((d_out, k), dtype)))


# ----------------------------------------------------------------------------------
# The risk
# ----------------------------------------------------------------------------------


def _student(model, d: int, d_out: int):
    if not isinstance(model, ShallowReLU):
        raise ValueError(
            f"the exact Gaussian risk is defined for ShallowReLU students, got "
            f"{type(model).__name__}. For other models use PopulationRisk(target, "
            f"Gaussian(mean, cov), nodes=...)."
        )
    if model.w.ndim != 2 or model.w.shape[1] != d:
        raise ValueError(
            f"the student's input dimension d_in = {model.w.shape[-1]} does not match the "
            f"Gaussian's d = {d} (the teacher's)."
        )
    if model.v.ndim != 2 or model.v.shape[0] != d_out:
        raise ValueError(
            f"the student's output dimension d_out = {model.v.shape[0]} does not match the "
            f"teacher's {d_out}."
        )
    leaves = [a for a in (model.w, model.b, model.v, model.c) if a is not None]
    dtype = jnp.result_type(*leaves)
    b = jnp.zeros(model.w.shape[0], dtype) if model.b is None else model.b
    c = jnp.zeros(d_out, dtype) if model.c is None else model.c
    return model.w.astype(dtype), b.astype(dtype), model.v.astype(dtype), c.astype(dtype)


@jax.jit
def _student_terms(w, b, v, c, mean, cov, tw, tb, tv, slope, offset):
    """``E‖N‖² − 2 E[N·f]`` for the student ``(w, b, v, c)`` and the teacher arrays."""
    n = w.shape[0]
    sw = w @ cov  # (n, d): Σ w_j
    m = w @ mean + b
    var = jnp.sum(sw * w, axis=-1)
    tm = tw @ mean + tb
    tvar = jnp.sum((tw @ cov) * tw, axis=-1)
    # one block of pair moments: the student against (student, teacher)
    m_all = jnp.concatenate([m, tm])
    var_all = jnp.concatenate([var, tvar])
    pairs = _relu_moment(
        m[:, None], m_all[None, :], var[:, None], sw @ jnp.concatenate([w, tw]).T, var_all[None, :]
    )
    f_ss, f_st = pairs[:, :n], pairs[:, n:]
    means = _relu_mean(m_all, var_all)
    e, te = means[:n], means[n:]
    norm2 = jnp.sum((v.T @ v) * f_ss) + 2.0 * c @ (v @ e) + c @ c
    # teacher: affine mean g = offset + A μ, E f = g + V' E[relu(u')]
    g = offset + slope @ mean
    prob = _positive_prob(m, var)
    cross = (
        jnp.sum((v.T @ tv) * f_st)
        + (v @ e) @ g
        + jnp.sum(v * (slope @ sw.T) * prob[None, :])  # Σ_j P_j v_j · (A Σ w_j)
        + c @ (g + tv @ te)
    )
    return norm2 - 2.0 * cross


@jax.jit
def _teacher_energy(mean, cov, tw, tb, tv, slope, offset):
    """``E‖f‖²`` (a constant of the risk)."""
    g = offset + slope @ mean
    tm = tw @ mean + tb
    scov = tw @ cov
    tvar = jnp.sum(scov * tw, axis=-1)
    f_tt = _relu_moment(tm[:, None], tm[None, :], tvar[:, None], scov @ tw.T, tvar[None, :])
    te = _relu_mean(tm, tvar)
    prob = _positive_prob(tm, tvar)
    return (
        jnp.sum((tv.T @ tv) * f_tt)
        + 2.0 * g @ (tv @ te)
        + 2.0 * jnp.sum(tv * (slope @ scov.T) * prob[None, :])
        + g @ g
        + jnp.trace(slope @ cov @ slope.T)
    )


@final
class _TeacherTarget(AbstractTarget):
    """``f(x) = V' relu(W' x + b') + A x + a`` (the teachers' sum; private)."""

    teacher_w: Float[Array, "k d"]
    teacher_b: Float[Array, " k"]
    teacher_v: Float[Array, "d_out k"]
    slope: Float[Array, "d_out d"]
    offset: Float[Array, " d_out"]

    def __call__(self, x: Float[ArrayLike, "n d"]) -> Float[Array, "n d_out"]:
        x = jnp.asarray(x)
        d = self.slope.shape[1]
        if x.ndim != 2 or x.shape[-1] != d:
            raise ValueError(f"x must have shape (n, {d}), got {x.shape}.")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(self.slope.dtype)
        tw, tb, tv, slope, offset = (
            a.astype(x.dtype)
            for a in (self.teacher_w, self.teacher_b, self.teacher_v, self.slope, self.offset)
        )
        return relu(x @ tw.T + tb) @ tv.T + x @ slope.T + offset


@final
class _GaussianTeacherStudentRisk(AbstractPiecewiseSmoothRisk):
    """``L(θ) = E‖N_θ(x) − f(x)‖²``, ``x ~ N(μ, Σ)``, in closed form.

    Private: build it with :meth:`gflow_jax.PopulationRisk.gaussian`, the one public entry
    point, which documents it.
    """

    mean: Float[Array, " d"]
    cov: Float[Array, "d d"]
    teacher_w: Float[Array, "k d"]
    teacher_b: Float[Array, " k"]
    teacher_v: Float[Array, "d_out k"]
    slope: Float[Array, "d_out d"]
    offset: Float[Array, " d_out"]
    teacher_energy: Float[Array, ""]

    def __init__(self, teacher, mean=None, cov=None):
        relu_units, slopes, offsets, d, d_out = _teacher_parts(teacher)
        law = _input_law(mean, cov, d)
        d = law.dim
        if relu_units:
            tw = np.concatenate([u[0] for u in relu_units], axis=0)
            tb = np.concatenate([u[1] for u in relu_units])
            tv = np.concatenate([u[2] for u in relu_units], axis=1)
        else:
            tw, tb, tv = np.zeros((0, d)), np.zeros(0), np.zeros((d_out, 0))
        slope = np.zeros((d_out, d))
        for s in slopes:
            slope = slope + (np.full((1, d), s) if isinstance(s, float) else s)
        offset = np.zeros(d_out)
        for o in offsets:
            offset = offset + o
        for name, arr in (("slope", slope), ("intercept/value", offset)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"the teacher's {name} is not finite.")
        with jax.ensure_compile_time_eval():
            self.mean = jnp.asarray(np.asarray(law.mean))
            self.cov = jnp.asarray(np.asarray(law.cov))
            self.teacher_w, self.teacher_b = jnp.asarray(tw), jnp.asarray(tb)
            self.teacher_v = jnp.asarray(tv)
            self.slope, self.offset = jnp.asarray(slope), jnp.asarray(offset)
            self.teacher_energy = _teacher_energy(
                self.mean, self.cov, self.teacher_w, self.teacher_b, self.teacher_v,
                self.slope, self.offset,
            )  # fmt: skip

    @property
    def measure(self) -> Gaussian:
        """The input law as a :class:`gflow_jax.Gaussian` (e.g. for a quadrature risk).

        Built on demand: the risk itself holds only arrays, so jitted functions taking it
        as an argument do not recompile for another mean or covariance.
        """
        return Gaussian(np.asarray(self.mean), np.asarray(self.cov))

    @property
    def dim(self) -> int:
        """Input dimension ``d``."""
        return int(self.mean.shape[0])

    @property
    def d_out(self) -> int:
        """Output dimension of the teacher (and the student)."""
        return int(self.offset.shape[0])

    def _arrays(self, dtype):
        names = ("mean", "cov", "teacher_w", "teacher_b", "teacher_v", "slope", "offset")
        return [jax.lax.stop_gradient(getattr(self, n).astype(dtype)) for n in names]

    def __call__(self, model: ShallowReLU) -> Float[Array, ""]:
        """``L(θ)`` at θ = `model` (squared output units); ``jax.grad`` is ``G``."""
        w, b, v, c = _student(model, self.dim, self.d_out)
        risk = _student_terms(w, b, v, c, *self._arrays(w.dtype))
        risk = risk + jax.lax.stop_gradient(self.teacher_energy.astype(w.dtype))
        # round-off can leave −1e-16 at a zero of L; clip the value, keep the derivatives
        return risk + jax.lax.stop_gradient(jnp.maximum(risk, 0.0) - risk)

    def kink_margin(self, model: ShallowReLU) -> Float[Array, ""]:
        """``min_j ‖(w_j, b_j)‖`` (``min_j ‖w_j‖`` without biases).

        The Euclidean distance of θ to the only set where this risk is not twice
        continuously differentiable: a degenerate neuron ``w_j = 0, b_j = 0`` (there the
        risk behaves like ``‖(w_j, b_j)‖``; the Gaussian integrates every other kink
        out, see the module docstring). Parameter units; not invariant to rescaling a
        neuron, since the curvature near a degenerate neuron is not either.

        **Arguments:**

        - `model`: a :class:`gflow_jax.ShallowReLU` student.

        **Returns:**

        A non-negative scalar in the model's dtype.
        """
        _student(model, self.dim, self.d_out)
        return jnp.min(model.switching_scales())

    @property
    def target(self) -> _TeacherTarget:
        """The teacher ``f`` (the sum of the teachers) as a target: ``risk.target(x)``.

        An :class:`~gflow_jax.risks.targets.AbstractTarget` mapping ``(n, d)`` inputs to
        ``(n, d_out)`` outputs, e.g. for a quadrature risk ``PopulationRisk(risk.target,
        risk.measure, nodes=...)`` or Monte Carlo.
        """
        return _TeacherTarget(
            self.teacher_w, self.teacher_b, self.teacher_v, self.slope, self.offset
        )

    def quadrature_error(self, model: ShallowReLU) -> QuadratureError:
        """Same report as :meth:`gflow_jax.PopulationRisk.quadrature_error`; errors 0.

        Only round-off remains (relative ``~1e-15`` in float64, ``~1e-6`` in float32).

        **Arguments:**

        - `model`: the :class:`gflow_jax.ShallowReLU` at θ.

        **Returns:**

        A :class:`~gflow_jax.risks.measures.QuadratureError` of scalars: `risk` ``L(θ)``
        (closed form, squared output units), `grad_norm` ``‖∇L(θ)‖`` (Euclidean over the
        trainable arrays), and `risk_error` = `grad_error` = 0.
        """
        params, static = partition(model)
        risk, grad = jax.value_and_grad(lambda p: self(eqx.combine(p, static)))(params)
        zero = jnp.zeros_like(risk)
        norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jtu.tree_leaves(grad)))
        return QuadratureError(risk=risk, risk_error=zero, grad_norm=norm, grad_error=zero)
