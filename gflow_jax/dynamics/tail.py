"""A stiff-tail solver for gradient flows: the exponential Rosenbrock method exprb43.

Near a minimum the gradient flow ``dθ/dt = F(θ) = −∇L(θ)`` is almost linear, with the
symmetric Jacobian ``J = −∇²L(θ)``: stiff (Hessian eigenvalues up to ``10²…10⁴``) and
degenerate (many eigenvalues ``≈ 0``). Explicit solvers are then limited by stability,
not accuracy, and implicit ones pay a dense Jacobian and LU per Newton iteration.
:class:`ExponentialTail` integrates the linear part exactly through one symmetric
eigendecomposition per step, so its step is limited only by the *nonlinearity* of the
field; :func:`stiffness_index` is the cheap test used to decide when to switch to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Bool, Float, PyTree

from .._numerics import finite_eigh, power_iteration

# Taylor coefficients of φ3(z) = Σ_j z^j/(j+3)! and φ4(z) = Σ_j z^j/(j+4)!, highest power
# first (for Horner): enough terms for |z| < 2 to round-off in float64.
_PHI3_TAYLOR = tuple(1.0 / math.factorial(j + 3) for j in reversed(range(24)))
_PHI4_TAYLOR = tuple(1.0 / math.factorial(j + 4) for j in reversed(range(24)))


def _horner(coeffs: tuple[float, ...], z: Array) -> Array:
    out = jnp.full_like(z, coeffs[0])
    for c in coeffs[1:]:
        out = out * z + c
    return out


def phi_functions(
    z: Float[ArrayLike, "*shape"],
) -> tuple[Float[Array, "*shape"], Float[Array, "*shape"], Float[Array, "*shape"]]:
    """The exponential-integrator functions ``φ1``, ``φ3`` and ``φ4``, elementwise.

    ``φ1(z) = (eᶻ − 1)/z``, ``φ3(z) = (eᶻ − 1 − z − z²/2)/z³`` and
    ``φ4(z) = (eᶻ − 1 − z − z²/2 − z³/6)/z⁴``, with ``φ_k(0) = 1/k!``.

    ``φ1 = expm1(z)/z`` is accurate as it stands (``expm1`` has no cancellation). For
    ``φ3`` and ``φ4``, whose closed forms cancel catastrophically near ``0``, ``|z| < 2``
    sums the Taylor series ``Σ_j z^j/(j+k)!`` and otherwise the recurrence
    ``φ_{k+1} = (φ_k − 1/k!)/z`` is used from ``φ1``, which never forms a power of ``z``
    and so neither overflows nor loses accuracy for very negative ``z``
    (``φ_k(z) ≈ −1/((k−1)! z)`` as ``z → −∞``). All three are accurate to a few tens of
    ulps for all real ``z`` up to the overflow of ``eᶻ`` (``z ≳ 88`` in float32, ``≳ 709``
    in float64, where they return ``inf``).

    **Arguments:**

    - `z`: real array (dimensionless: step size × eigenvalue).

    **Returns:**

    ``(φ1(z), φ3(z), φ4(z))``, arrays of the shape and dtype of `z`.
    """
    z = jnp.asarray(z)
    zero = z == 0
    zn = jnp.where(zero, 1, z)  # never 0
    phi1 = jnp.where(zero, 1, jnp.expm1(zn) / zn)
    small = jnp.abs(z) < 2
    zl = jnp.where(small, 2, z)  # recurrence branch argument, |zl| ≥ 2
    phi3_l = ((jnp.expm1(zl) / zl - 1) / zl - 0.5) / zl
    phi4_l = (phi3_l - 1 / 6) / zl
    zs = jnp.where(small, z, 0)
    phi3 = jnp.where(small, _horner(_PHI3_TAYLOR, zs), phi3_l)
    phi4 = jnp.where(small, _horner(_PHI4_TAYLOR, zs), phi4_l)
    return phi1, phi3, phi4


class ExponentialTailInterpolation(diffrax.AbstractLocalInterpolation):
    """Dense output of one :class:`ExponentialTail` step, exact for linear fields.

    With ``s = θh`` (``θ = (t − t₀)/(t₁ − t₀) ∈ [0, 1]``) and the step's eigenbasis
    ``J = Q diag(μ) Qᵀ``,

    ``u(t₀ + s) = u₀ + Q [s φ1(sμ) ĝ + θ³ h φ3(sμ) â₃ + θ⁴ h φ4(sμ) â₄]``,

    ``ĝ = QᵀF(u₀)``, ``â₃ = 2Qᵀ(8D₂ − D₃)``, ``â₄ = 6Qᵀ(2D₃ − 8D₂)``: the continuous
    extension of exprb43. The first term is the exact flow of the linearised field; the
    others integrate the nonlinear remainder exactly (variation of constants) once it is
    replaced by the polynomial ``c₂τ² + c₃τ³`` through its values ``D₂`` at ``τ = h/2``
    and ``D₃`` at ``τ = h`` (it has no constant or linear part, the Jacobian being exact
    at ``u₀``): ``∫₀ˢ e^{(s−τ)J} τᵏ dτ = k! s^{k+1} φ_{k+1}(sJ)``. It reproduces the step's
    end point at ``θ = 1`` (that quadrature *is* exprb43), and is exact for quadratic
    risks at any step size — unlike a cubic Hermite interpolant, which cannot follow
    ``e^{−λt}`` across the geometrically growing steps of the tail.

    Constructed by `diffrax.diffeqsolve` from the step's dense information; each
    instance holds one ``p × p`` eigenbasis (so `SaveAt(dense=True)` stores one per step).
    """

    t0: Float[ArrayLike, ""]
    t1: Float[ArrayLike, ""]
    y0: PyTree[Float[Array, "..."]]
    h: Float[Array, ""]
    q: Float[Array, "p p"]
    mu: Float[Array, " p"]
    g_hat: Float[Array, " p"]
    a3_hat: Float[Array, " p"]
    a4_hat: Float[Array, " p"]

    def evaluate(
        self,
        t0: Float[ArrayLike, ""],
        t1: Float[ArrayLike, ""] | None = None,
        left: bool = True,
    ) -> PyTree[Float[Array, "..."]]:
        """The dense output at a time in the step, or an increment between two.

        **Arguments:**

        - `t0`: a time in ``[t₀, t₁]`` of the step (time units).
        - `t1`: optional second time; then the increment is returned.
        - `left`: ignored (the interpolant is continuous).

        **Returns:**

        ``u(t0)``, or ``u(t1) − u(t0)`` when `t1` is given (a pytree of the state's
        structure).
        """
        del left
        if t1 is not None:
            return jtu.tree_map(jnp.subtract, self.evaluate(t1), self.evaluate(t0))
        u0, unravel = ravel_pytree(self.y0)
        width = self.t1 - self.t0
        theta = jnp.where(width == 0, 0, (t0 - self.t0) / jnp.where(width == 0, 1, width))
        theta = jnp.asarray(theta, u0.dtype)
        s = theta * self.h
        phi1, phi3, phi4 = phi_functions(s * self.mu)
        coords = s * phi1 * self.g_hat + theta**3 * self.h * (
            phi3 * self.a3_hat + theta * phi4 * self.a4_hat
        )
        return unravel(u0 + self.q @ coords)


def _flat_field(terms: diffrax.AbstractTerm, args, unravel, dtype) -> Callable:
    def field(t, u):
        out, _ = ravel_pytree(terms.vf(t, unravel(u), args))
        if out.shape != u.shape:
            raise ValueError(
                "ExponentialTail needs a vector field with the structure of the state y "
                f"(an ODE dy = f(t, y) dt); got {out.shape[0]} outputs for {u.shape[0]} states."
            )
        return out.astype(dtype)

    return field


class ExponentialTail(diffrax.AbstractAdaptiveSolver):
    r"""Exponential Rosenbrock solver exprb43 for stiff, nearly linear gradient flows.

    For ``dy/dt = F(y)`` with the exact Jacobian ``J = ∂F/∂y(u_n)`` at the step start
    and the nonlinear remainder ``D(U) = F(U) − F(u_n) − J(U − u_n)``, one step of size
    ``h`` is

    - ``U₂ = u_n + (h/2) φ1(hJ/2) F(u_n)``, ``D₂ = D(U₂)``,
    - ``U₃ = u_n + h φ1(hJ) (F(u_n) + D₂)``, ``D₃ = D(U₃)``,
    - ``u_{n+1} = u_n + h φ1(hJ) F(u_n) + h φ3(hJ)(16D₂ − 2D₃) + h φ4(hJ)(12D₃ − 48D₂)``
      (order 4),

    with ``φ1(z) = (eᶻ − 1)/z``, ``φ3``, ``φ4`` as in :func:`phi_functions`. The last
    two terms integrate the remainder by variation of constants after replacing it by
    the cubic ``c₂τ² + c₃τ³`` through ``D₂`` and ``D₃`` (it has no constant or linear
    part because ``J`` is exact at ``u_n``). The local error estimate is the
    ``φ4`` term, ``h φ4(hJ)(12D₃ − 48D₂)``: the contribution of the cubic part of the
    remainder, i.e. the difference to the embedded order-3 method
    (``h φ3(hJ)(16D₂ − 2D₃)`` alone), of size ``O(h⁴)``; so `order` and `error_order`
    are both 4. This is the fourth-order exponential Rosenbrock method exprb43 of
    Hochbruck, Ostermann and Schweitzer (*Exponential Rosenbrock-type methods*, SIAM J.
    Numer. Anal. 47(1), 2009), stable with error bounds independent of the stiffness
    of ``J``. Against the order-3 exprb32 (``U = u_n + hφ1(hJ)F(u_n)``, ``u_{n+1} = U +
    2hφ3(hJ)D(U)``) it costs one more field evaluation per step, which is small next to
    the Jacobian, and on slowly (power-law) converging tails, where the step is limited
    by accuracy (``h ≈ rtol^{1/q} t`` for order ``q``), it takes about 3× fewer steps at
    ``rtol = 1e-6``.

    The matrix functions are applied through one symmetric eigendecomposition per
    step, ``½(J + Jᵀ) = Q diag(μ) Qᵀ`` (`jnp.linalg.eigh`), as
    ``φ(hJ) v = Q (φ(hμ) ⊙ Qᵀv)``. ``J`` itself is a dense ``jax.jacfwd`` of the
    flattened field (forward-over-reverse for ``F = −∇L``), whose primal output is
    ``F(u_n)``. A step therefore costs one dense Jacobian (``p`` Jacobian-vector
    products), one ``O(p³)`` eigendecomposition and two further field evaluations
    ``F(U₂)``, ``F(U₃)``; nothing is carried between steps (the solver state is `None`, so resuming
    from a saved state and `made_jump` are trivially exact), and the step's dense
    output is :class:`ExponentialTailInterpolation`.

    For a quadratic risk ``D = 0`` up to round-off: the step is the exact flow for any
    ``h``, the error estimate is round-off, and an adaptive controller grows the step
    geometrically (by its `factormax`, 10 for `diffrax.PIDController`) through the
    tail. In general the step is limited by the *change* of the Hessian along the
    trajectory, not by its largest eigenvalue.

    !!! warning "Assumes a gradient field"

        The method uses the symmetric part ``S = ½(J + Jᵀ)`` of the Jacobian. For a
        gradient field ``F = −∇L`` the Jacobian ``−∇²L`` is symmetric and
        symmetrising only removes round-off. For a field with a non-symmetric Jacobian
        (not a gradient: e.g. a game, or a gradient with a non-symmetric
        preconditioner) the scheme is an exponential integrator with an *inexact*
        Jacobian: still consistent and convergent, but the Rosenbrock order conditions
        fail and it drops to order 1; the skew part ``½(J − Jᵀ)`` is treated
        explicitly, so stiff rotation is not stabilised; and the error estimate, which
        assumes order 4, is no longer asymptotically correct (the controller still
        bounds it, at many more steps). Use an implicit solver for such fields.

    !!! warning "Size, smoothness, differentiation"

        The dense ``p × p`` Hessian and its ``O(p³)`` eigendecomposition restrict this
        solver to up to a few thousand parameters (per ensemble member, under
        `jax.vmap`). It needs a twice-differentiable risk: at a ReLU kink the Hessian
        means nothing. Differentiating *through* the solve is not supported: the
        derivative of `eigh` is singular at repeated eigenvalues, which degenerate
        Hessians have.

    !!! warning "Round-off and float32"

        The Jacobian and the field carry round-off of about ``ε ‖∇²L‖`` (``ε`` the
        dtype's epsilon), so Hessian eigenvalues below ``≈ ε λ_max`` are not resolved
        (by any solver: the gradient itself has that error), and ``D`` has a round-off
        floor that makes the error estimate grow like ``h ε ‖∇²L‖ ‖U − u_n‖`` in the
        flat directions. This caps the geometric growth of the tail steps once
        ``λ_max/λ_min`` approaches ``1/ε``: harmless in float64 for condition numbers up
        to ``~10¹⁰``, but in float32 (``1/ε ≈ 10⁷``) a Hessian spanning 8 decades stalls
        the controller at small steps. Use float64 for the tails of ill-conditioned
        risks.

    The field may be time-dependent (``F(U₂)`` is then evaluated at ``t_n + h/2``,
    ``F(U₃)`` at ``t_{n+1}``, ``J`` at ``t_n``), but the order-4 claim is for autonomous
    fields, as gradient flows are.
    The state may be any pytree of floating arrays of one dtype (float32 or float64);
    the term must be an ODE term (``dy = F(t, y) dt``, a scalar control), e.g.
    `diffrax.ODETerm`. Works under `jax.vmap` of `diffrax.diffeqsolve`, with
    `diffrax.PIDController`, `diffrax.Event`, `SaveAt(ts=...)` and resumed solves.
    """

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., ExponentialTailInterpolation]] = (
        ExponentialTailInterpolation
    )

    def order(self, terms: PyTree[diffrax.AbstractTerm]) -> int:
        """The method's order.

        **Arguments:**

        - `terms`: the ODE term (unused).

        **Returns:**

        ``4`` (global error ``O(h⁴)``) for autonomous fields.
        """
        return 4

    def error_order(self, terms: PyTree[diffrax.AbstractTerm]) -> int:
        """The order of the error estimate, as the step-size controller needs it.

        **Arguments:**

        - `terms`: the ODE term (unused).

        **Returns:**

        ``4``: the local error estimate ``h φ4(hJ)(12D₃ − 48D₂)`` is ``O(h⁴)``.
        """
        return 4

    def init(
        self,
        terms: diffrax.AbstractTerm,
        t0: Float[ArrayLike, ""],
        t1: Float[ArrayLike, ""],
        y0: PyTree[Float[Array, "..."]],
        args: PyTree,
    ) -> None:
        """The solver state: none, every step starts from ``(t_n, u_n)`` alone.

        **Arguments:** as `diffrax.AbstractSolver.init` (all unused).

        **Returns:**

        ``None``.
        """
        return None

    def step(
        self,
        terms: diffrax.AbstractTerm,
        t0: Float[ArrayLike, ""],
        t1: Float[ArrayLike, ""],
        y0: PyTree[Float[Array, "..."]],
        args: PyTree,
        solver_state: None,
        made_jump: Bool[ArrayLike, ""],
    ) -> tuple[
        PyTree[Float[Array, "..."]],
        PyTree[Float[Array, "..."]],
        dict[str, PyTree[Array]],
        None,
        diffrax.RESULTS,
    ]:
        """One exprb43 step from `t0` to `t1`.

        **Arguments:**

        - `terms`: an ODE term ``dy = F(t, y) dt`` (scalar control).
        - `t0`, `t1`: the step's start and end times (``h = t1 − t0``).
        - `y0`: the state at `t0` (a pytree of floating arrays of one dtype).
        - `args`: passed to the vector field.
        - `solver_state`: ``None`` (nothing is carried between steps).
        - `made_jump`: irrelevant (nothing is reused across steps).

        **Returns:**

        ``(u_{n+1}, h φ4(hJ)(12D₃ − 48D₂), dense_info, None, RESULTS.successful)``, where a
        non-finite step (overflow of ``e^{hμ}`` for a positive eigenvalue ``μ`` of
        ``J``, i.e. at a saddle with a too long step, or a non-finite field) reports an
        infinite error so that an adaptive controller rejects it and shrinks ``h``.
        """
        del solver_state, made_jump
        u0, unravel = ravel_pytree(y0)
        dtype = u0.dtype
        h = jnp.asarray(terms.contr(t0, t1), dtype)
        if h.shape != ():
            raise ValueError("ExponentialTail needs a scalar control (an ODE term dy = f dt).")
        field = _flat_field(terms, args, unravel, dtype)

        jac, f0 = jax.jacfwd(lambda u: (lambda f: (f, f))(field(t0, u)), has_aux=True)(u0)
        mu, q, jac_finite = finite_eigh(0.5 * (jac + jac.T))
        g_hat = q.T @ f0

        def remainder(t, du_hat):
            # Qᵀ D(U) at U = u_n + Q du_hat, with J(U − u_n) = Q(μ ⊙ du_hat)
            return q.T @ (field(t, u0 + q @ du_hat) - f0) - mu * du_hat

        half_phi1 = phi_functions(0.5 * h * mu)[0]
        d2_hat = remainder(t0 + 0.5 * h, 0.5 * h * half_phi1 * g_hat)
        phi1, phi3, phi4 = phi_functions(h * mu)
        d3_hat = remainder(t1, h * phi1 * (g_hat + d2_hat))
        a3_hat = 2 * (8 * d2_hat - d3_hat)
        a4_hat = 6 * (2 * d3_hat - 8 * d2_hat)
        error = q @ (h * phi4 * a4_hat)
        u1 = u0 + q @ (h * (phi1 * g_hat + phi3 * a3_hat + phi4 * a4_hat))

        finite = jac_finite & jnp.all(jnp.isfinite(u1)) & jnp.all(jnp.isfinite(error))
        error = jnp.where(finite, error, jnp.inf)
        dense_info = dict(y0=y0, h=h, q=q, mu=mu, g_hat=g_hat, a3_hat=a3_hat, a4_hat=a4_hat)
        return unravel(u1), unravel(error), dense_info, None, diffrax.RESULTS.successful

    def func(
        self,
        terms: diffrax.AbstractTerm,
        t0: Float[ArrayLike, ""],
        y0: PyTree[Float[Array, "..."]],
        args: PyTree,
    ) -> PyTree[Float[Array, "..."]]:
        """The vector field, which diffrax uses to pick an initial step.

        **Arguments:**

        - `terms`: the ODE term.
        - `t0`: the time.
        - `y0`: the state.
        - `args`: passed to the vector field.

        **Returns:**

        ``F(t0, y0)``, of the state's structure.
        """
        return terms.vf(t0, y0, args)


ExponentialTail.__init__.__doc__ = """**Arguments:** None"""


def stiffness_index(
    field: Callable[[PyTree], PyTree],
    y: PyTree,
    dt: Float[ArrayLike, ""],
    v: Float[ArrayLike, " p"],
    iters: int = 4,
) -> tuple[Float[Array, ""], Float[Array, " p"]]:
    """``dt · λ_max``: how far an explicit step of size `dt` is into its stability limit.

    ``λ_max`` is the largest eigenvalue magnitude of ``−J = −∂F/∂y(y)``, for a gradient
    flow ``F = −∇L`` the largest Hessian eigenvalue when the Hessian is positive
    semi-definite (near a minimum; at a saddle it may be a negative curvature of larger
    magnitude). It is estimated by warm-started power iteration
    (:func:`gflow_jax._numerics.power_iteration`) on Jacobian-vector products
    (`jax.linearize` of the flattened field: one linearisation, then ``iters + 1``
    products, no dense Jacobian). Power iteration gives a lower bound whose relative
    error decays like ``(λ₂/λ₁)^{2·iters}``; warm-starting with the previous `v` along a
    trajectory, where the Hessian changes slowly, makes a few iterations enough.

    Switching rule: when ``dt · λ_max ≥ 2`` an explicit Runge–Kutta step is limited by
    stability rather than accuracy (Tsit5's stability interval on the negative real axis
    is about ``[−3.5, 0]``), and :class:`ExponentialTail` should take over.

    **Arguments:**

    - `field`: ``y ↦ F(y)`` (time-independent; close over `t` and `args`), returning a
      pytree of the structure of `y`.
    - `y`: the state (any pytree of floating arrays, ``p`` entries in all).
    - `dt`: the explicit solver's current step size (time units, positive).
    - `v`: start vector of length ``p`` (the `v_new` of the previous call, or e.g.
      :func:`gflow_jax._numerics.fixed_unit_vector`).
    - `iters`: number of power iterations (static).

    **Returns:**

    ``(dt · λ_max, v_new)``: the dimensionless stiffness index and the unit vector to
    warm-start the next call with.
    """
    y_flat, unravel = ravel_pytree(y)
    _, jvp = jax.linearize(lambda u: ravel_pytree(field(unravel(u)))[0], y_flat)
    lam, v_new = power_iteration(jvp, jnp.asarray(v, y_flat.dtype), iters)
    return jnp.asarray(dt, lam.dtype) * lam, v_new


def checked_segment_length(steps: int, check_steps: int | None) -> int:
    """A segment length that keeps a pool's members in step between stiffness checks.

    Members start at step 0 and are checked at their own multiples of `check_steps`, so
    segments of such multiples keep them in step (no member idles while others finish a
    check interval). Results never depend on it.

    **Arguments:**

    - `steps`: the requested number of steps per segment (a positive ``int``).
    - `check_steps`: the stiffness-check interval in steps, or ``None`` (no tail phase).

    **Returns:**

    `steps` for ``check_steps=None``, else the smallest multiple of `check_steps` that is
    ``≥ steps``.
    """
    if check_steps is None:
        return steps
    return -(-steps // check_steps) * check_steps
