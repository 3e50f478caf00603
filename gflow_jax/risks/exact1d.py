"""Exact population risk of a 1-d ``ShallowReLU`` under ``U[a, b]``.

For ``N_θ(x) = c + Σ_i v_i relu(w_i x + b_i)`` and a continuous piecewise-linear target
``f`` with knots ``a = s_0 < … < s_M = b``, the risk

    L(θ) = (1/(b − a)) ∫_a^b (N_θ(x) − f(x))² dx

(the setting of Jentzen & Riekert, arXiv:2107.04479, with the input law ``U[a, b]``) is a
piecewise polynomial in θ. Between consecutive breakpoints (the kinks ``−b_i/w_i`` inside
``(a, b)`` and the target knots) both ``N_θ`` and ``f`` are affine, so every integral is a
closed form. The generalised gradient ``G`` (backpropagation with ``relu'(0) = 0``) is a
closed form too, and is what ``jax.grad`` of this risk returns (through a
``jax.custom_jvp``), so the gradient flow integrates exactly the vector field of the
theory, with no quadrature error.

Implementation with fixed shapes (jittable, vmappable): the ``H`` kinks are clipped to
``[a, b]`` (a neuron with ``w_i = 0`` gets the dummy kink ``a``), sorted together with the
``M + 1`` knots, and all ``H + M`` cells between consecutive sorted points are integrated,
empty ones included (they contribute exactly 0). On each cell ``[p, q]`` with midpoint
``m = (p + q)/2`` and half-width ``h = (q − p)/2`` neuron ``i`` is active iff
``w_i m + b_i > 0`` (strict: this is the ``1{· > 0}`` of ``G``); the residual is
``r(m + u) = R + P u`` and, with ``ℓ = 2h`` and ``κ = 2h³/3``,

    ∫ r² = R² ℓ + P² κ,   ∫ r = R ℓ,   ∫ x r = m R ℓ + P κ,
    ∫ (w_i x + b_i) r = (w_i m + b_i) R ℓ + w_i P κ.

Centring on the midpoint keeps every term non-negative or well conditioned (no
``q³ − p³`` cancellation), so float32 works too.

**Where the risk is not C².** Integrating over ``x`` smooths the kinks of the network:
``L`` is C¹ wherever no neuron is degenerate, and its Hessian is continuous while a kink
moves inside ``(a, b)`` (across target knots and other kinks too). It jumps when a kink
``−b_j/w_j`` enters or leaves the interval, i.e. on ``w_j a + b_j = 0`` or
``w_j b + b_j = 0``: differentiating ``∫_a^b relu(w_j x + b_j) g(x) dx`` twice in ``b_j``
gives a boundary term ``g(−b_j/w_j)/|w_j|`` that is present only while the kink is inside.
A neuron with ``w_j = 0`` and ``b_j ≠ 0`` is *not* a singular point: for small ``|w_j|``
its kink lies far outside ``[a, b]``, the neuron is affine (or zero) on the whole
interval, and ``L`` is a polynomial nearby. Hence the kink margin of this risk is
``min_j min(|w_j a + b_j|, |w_j b + b_j|) / sqrt(w_j² + b_j²)`` (``0`` for a degenerate
neuron ``w_j = b_j = 0``).
"""

from __future__ import annotations

import math
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import real_float
from ..models.shallow import ShallowReLU
from .base import AbstractPiecewiseSmoothRisk
from .measures import QuadratureError
from .targets import AbstractPiecewiseLinearTarget, AbstractTarget

# ----------------------------------------------------------------------------------
# The closed form
# ----------------------------------------------------------------------------------


@jax.jit
def _risk_and_g(w, b, v, c, knots_x, knots_y):
    """``(L, (G_w, G_b, G_v, G_c))`` for flat ``w, b, v: (H,)`` and scalar ``c``.

    Jitted so that eager calls compile once per shape (inside an outer ``jit`` it is
    inlined).
    """
    lo, hi = knots_x[0], knots_x[-1]
    # Kinks -b/w clipped to [a, b]; w = 0 has no kink: use the dummy point a (never
    # divide by zero -- the where() also keeps higher derivatives NaN-free).
    safe_w = jnp.where(w == 0, jnp.ones_like(w), w)
    kinks = jnp.clip(jnp.where(w == 0, lo, -b / safe_w), lo, hi)
    pts = jnp.sort(jnp.concatenate([knots_x, kinks]))
    p, q = pts[:-1], pts[1:]  # (C,) cells, C = H + M
    m = 0.5 * (p + q)
    h = 0.5 * (q - p)
    ell = 2.0 * h  # ∫ 1 du over the cell
    kappa = (2.0 / 3.0) * h**3  # ∫ u² du over the cell
    pre = m[:, None] * w[None, :] + b[None, :]  # w_i m + b_i, (C, H)
    active = pre > 0
    av = jnp.where(active, v[None, :], jnp.zeros_like(pre))  # v_i 1{active}
    # Network on the cell: N(m + u) = N(m) + A u.
    n_mid = c + jnp.sum(av * pre, axis=1)
    slope_n = av @ w
    # Target on the cell: the piece containing the midpoint.
    n_pieces = knots_x.shape[0] - 1
    j = jnp.clip(jnp.searchsorted(knots_x, m, side="right") - 1, 0, n_pieces - 1)
    slope_f = (knots_y[j + 1] - knots_y[j]) / (knots_x[j + 1] - knots_x[j])
    f_mid = knots_y[j] + slope_f * (m - knots_x[j])
    big_r = n_mid - f_mid  # r(m)
    big_p = slope_n - slope_f  # r'
    scale = 1.0 / (hi - lo)
    risk = scale * jnp.sum(big_r**2 * ell + big_p**2 * kappa)
    m0 = big_r * ell  # ∫ r over the cell
    m1 = m * m0 + big_p * kappa  # ∫ x r over the cell
    act = active.astype(pre.dtype)
    g_c = 2.0 * scale * jnp.sum(m0)
    relu_r = pre * m0[:, None] + w[None, :] * (big_p * kappa)[:, None]  # ∫ (w_i x + b_i) r
    g_v = 2.0 * scale * jnp.sum(act * relu_r, axis=0)
    g_b = 2.0 * scale * v * (m0 @ act)
    g_w = 2.0 * scale * v * (m1 @ act)
    return risk, (g_w, g_b, g_v, g_c)


@jax.custom_jvp
def _exact_uniform_1d_risk(
    w: Float[Array, " H"],
    b: Float[Array, " H"],
    v: Float[Array, " H"],
    c: Float[Array, ""],
    knots_x: Float[Array, " K"],
    knots_y: Float[Array, " K"],
) -> Float[Array, ""]:
    """``L(θ) = (1/(b−a)) ∫_a^b (c + Σ_i v_i relu(w_i x + b_i) − f(x))² dx``, exactly.

    ``f`` is the continuous piecewise-linear function through ``(knots_x, knots_y)``,
    ``knots_x`` strictly increasing from ``a`` to ``b``. Differentiating with respect to
    ``(w, b, v, c)`` gives the generalised gradient ``G`` (custom JVP; ``relu'(0) = 0``).
    The knots are treated as constants (zero derivative).
    """
    return _risk_and_g(w, b, v, c, knots_x, knots_y)[0]


@_exact_uniform_1d_risk.defjvp
def _exact_jvp(primals, tangents):
    w, b, v, c, knots_x, knots_y = primals
    dw, db, dv, dc, _, _ = tangents  # knot tangents are ignored (documented)
    risk, (g_w, g_b, g_v, g_c) = _risk_and_g(w, b, v, c, knots_x, knots_y)
    dot = jnp.sum(g_w * dw) + jnp.sum(g_b * db) + jnp.sum(g_v * dv) + g_c * dc
    return risk, dot.astype(risk.dtype)


# ----------------------------------------------------------------------------------
# The risk object
# ----------------------------------------------------------------------------------


def _target_knots(target, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(target, AbstractPiecewiseLinearTarget):
        name = type(target).__name__
        raise ValueError(
            f"the exact 1-d population risk needs a piecewise-linear target (Affine, "
            f"Constant, PiecewiseLinear or another AbstractPiecewiseLinearTarget), got {name}. "
            f"For any other target use a quadrature risk, e.g. PopulationRisk(target, "
            f"Uniform({a}, {b}, 1), nodes=4096), and check it with "
            f"risk.quadrature_error(model)."
        )
    try:
        s, fs = target.knots(a, b)
    except ValueError as err:
        raise ValueError(
            f"the exact 1-d population risk needs a scalar 1-d piecewise-linear target: "
            f"{err} For vector-valued or multi-dimensional targets use PopulationRisk("
            f"target, measure, nodes=...)."
        ) from err
    s, fs = np.asarray(s, float), np.asarray(fs, float)
    if s.ndim != 1 or s.shape != fs.shape or s.size < 2 or not np.all(np.diff(s) > 0):
        raise ValueError(f"{type(target).__name__}.knots(a, b) returned invalid knots {s}.")
    if s[0] != a or s[-1] != b:
        raise ValueError("target knots must start at a and end at b.")
    if not np.all(np.isfinite(fs)):
        raise ValueError("the target is not finite at its knots.")
    return s, fs


def _unpack(model) -> tuple[Array, Array, Array, Array]:
    """Flat ``(w, b, v, c)`` of a 1-d, scalar-output :class:`ShallowReLU`."""
    if not isinstance(model, ShallowReLU):
        raise ValueError(
            f"the exact 1-d population risk is defined for ShallowReLU models, got "
            f"{type(model).__name__}. Use PopulationRisk(target, Uniform(a, b, d_in), "
            f"nodes=...) for other models."
        )
    w, v = model.w, model.v
    # a network without biases (ShallowReLU(use_bias=False)) is the one with b = c = 0
    b = jnp.zeros(w.shape[:1], w.dtype) if model.b is None else model.b
    c = jnp.zeros(v.shape[:1], v.dtype) if model.c is None else model.c
    if w.ndim != 2 or w.shape[-1] != 1:
        raise ValueError(
            f"the exact 1-d population risk needs d_in = 1, got w of shape {w.shape}. "
            f"For d_in > 1 use PopulationRisk(target, Uniform(a, b, d_in), nodes=...)."
        )
    if v.ndim != 2 or v.shape[0] != 1 or c.shape != (1,):
        raise ValueError(
            f"the exact 1-d population risk needs d_out = 1, got v of shape {v.shape}. "
            f"For vector outputs use PopulationRisk(target, Uniform(a, b, 1), nodes=...)."
        )
    dtype = jnp.result_type(w, b, v, c)
    return w[:, 0].astype(dtype), b.astype(dtype), v[0].astype(dtype), c[0].astype(dtype)


@final
class _ExactUniform1DRisk(AbstractPiecewiseSmoothRisk):
    """``L(θ) = (1/(b−a)) ∫_a^b (N_θ(x) − f(x))² dx`` in closed form.

    Private: build it with :meth:`gflow_jax.PopulationRisk.uniform_1d`, the one public
    entry point, which documents it.
    """

    knots_x: Float[Array, " K"]
    knots_y: Float[Array, " K"]
    a: float = eqx.field(static=True)
    b: float = eqx.field(static=True)

    def __init__(self, target: AbstractTarget, a: float, b: float):
        a, b = real_float("a", a, finite=False), real_float("b", b, finite=False)
        if not (math.isfinite(a) and math.isfinite(b) and a < b):
            raise ValueError(f"need a finite interval a < b, got a={a}, b={b}.")
        s, fs = _target_knots(target, a, b)
        self.knots_x = jnp.asarray(s)
        self.knots_y = jnp.asarray(fs)
        self.a, self.b = a, b

    def _args(self, model):
        w, b, v, c = _unpack(model)
        kx = jax.lax.stop_gradient(self.knots_x.astype(w.dtype))
        ky = jax.lax.stop_gradient(self.knots_y.astype(w.dtype))
        return w, b, v, c, kx, ky

    def __call__(self, model: ShallowReLU) -> Float[Array, ""]:
        return _exact_uniform_1d_risk(*self._args(model))

    def kink_margin(self, model: ShallowReLU) -> Float[Array, ""]:
        """``min_j min(|w_j a + b_j|, |w_j b + b_j|) / sqrt(w_j² + b_j²)``.

        Zero exactly where the Hessian of the risk may jump: a kink ``−b_j/w_j`` on an
        end point of ``[a, b]``, or a degenerate neuron ``w_j = b_j = 0`` (see the
        module docstring; ``w_j = 0`` alone is a smooth point). Invariant to
        ``(w_j, b_j, v_j) ↦ (α w_j, α b_j, v_j/α)``, ``α > 0``. Geometrically it is the
        Euclidean distance of the point ``(a, 1)`` or ``(b, 1)`` of ``R²`` to the line
        ``{(x, t): w_j x + b_j t = 0}``, so at most ``sqrt(max(a², b²) + 1)``.

        **Arguments:**

        - `model`: a 1-d :class:`gflow_jax.ShallowReLU`.

        **Returns:**

        A non-negative scalar in the model's dtype.
        """
        w, b, _, _, _, _ = self._args(model)
        norm = jnp.sqrt(w**2 + b**2)
        ends = jnp.minimum(jnp.abs(w * self.a + b), jnp.abs(w * self.b + b))
        ratio = jnp.where(norm > 0, ends / jnp.where(norm > 0, norm, 1.0), 0.0)
        return jnp.min(ratio)

    def generalised_gradient(self, model: ShallowReLU) -> ShallowReLU:
        """``G(θ)`` as a ``ShallowReLU``-shaped pytree.

        **Arguments:**

        - `model`: a 1-d :class:`gflow_jax.ShallowReLU`.

        **Returns:**

        A pytree like `model` whose fields ``w (H, 1)``, ``b (H,)``, ``v (1, H)``,
        ``c (1,)`` hold ``G_w, G_b, G_v, G_c`` (only ``G_w, G_v`` for a network without
        biases, whose ``b`` and ``c`` are ``None``); equal to ``jax.grad`` of the risk with
        respect to the model.
        """
        _, (g_w, g_b, g_v, g_c) = _risk_and_g(*self._args(model))
        if model.b is None:  # no biases: only G_w and G_v
            return eqx.tree_at(lambda m: (m.w, m.v), model, (g_w[:, None], g_v[None, :]))
        return eqx.tree_at(
            lambda m: (m.w, m.b, m.v, m.c),
            model,
            (g_w[:, None], g_b, g_v[None, :], g_c[None]),
        )

    def quadrature_error(self, model: ShallowReLU) -> QuadratureError:
        """Same report as :meth:`PopulationRisk.quadrature_error`; the errors are 0.

        Only floating-point round-off remains (relative ``~ 1e-15`` in float64).

        **Arguments:**

        - `model`: a 1-d :class:`gflow_jax.ShallowReLU`.

        **Returns:**

        A :class:`~gflow_jax.risks.measures.QuadratureError` of scalars in the model's
        dtype: `risk` ``L(θ)`` (squared output units), `grad_norm` the Euclidean norm of
        ``G`` over all of ``w, b, v, c`` (frozen fields included), and `risk_error` =
        `grad_error` = ``0``.
        """
        risk, g = _risk_and_g(*self._args(model))
        zero = jnp.zeros_like(risk)
        grad_norm = jnp.sqrt(sum(jnp.sum(x**2) for x in g))
        return QuadratureError(risk=risk, risk_error=zero, grad_norm=grad_norm, grad_error=zero)

    @property
    def breakpoints(self) -> np.ndarray:
        """The target's knots on ``[a, b]`` (end points included)."""
        return np.asarray(self.knots_x)
