"""The limit of a stopped gradient flow, and the law by which its risk decays.

A flow ``dθ/dt = −∇L(θ)`` is stopped at ``θ_stop`` (a stop rule fired, or its step budget ran
out). :func:`analyse_limit` characterises *its* limit:

1. **Refine.** First look for a zero of the risk near ``θ_stop`` (a damped saddle-free
   Newton minimisation of ``L`` over the ball of step 2); if there is none, solve
   ``∇L(θ) = 0`` from ``θ_stop`` by a trust-region Newton method on the eigendecomposition
   of the Hessian (both described in :func:`analyse_limit`).
2. **Attribute.** Accept the refined point ``θ_ref`` as this flow's limit only if
   ``‖θ_ref − θ_stop‖ ≤ distance_factor · d_ref``, where ``d_ref`` is the flow's distance
   scale: its path length ``∫‖∇L‖ dt`` over the last decade of time before the stop, or
   the remaining path length its fitted decay law predicts, whichever is longer.
3. **Classify.** From ``L(θ_ref)`` and the spectrum of ``∇²L(θ_ref)``: a zero of the risk
   (:attr:`Limit.ZERO_RISK`), a local minimum at a positive risk (:attr:`Limit.LOCAL_MIN`),
   a saddle (:attr:`Limit.SADDLE`), or :attr:`Limit.UNRESOLVED` with a :class:`LimitReason`.

:func:`fit_decay` fits both an exponential and a power law to the tail of a saved risk
curve and names the better one (:class:`DecayLaw`).

Everything here is a pure function of arrays with fixed shapes: jittable and vmappable over
the members of an ensemble, e.g. ``jax.vmap(lambda th, d: analyse_limit(loss, th, d, opts))``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from numbers import Real

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ._defaults import defaults
from ._numerics import finite_eigh

__all__ = [
    "DecayFit",
    "DecayLaw",
    "Limit",
    "LimitAnalysis",
    "LimitReason",
    "LimitReport",
    "analyse_limit",
    "pattern_loss",
    "decay_law_names",
    "fit_decay",
    "limit_names",
    "mark_unresolved",
    "reason_names",
    "unresolved",
]


# --------------------------------------------------------------------------------------
# Codes
# --------------------------------------------------------------------------------------


class Limit(enum.IntEnum):
    """What the limit of a flow is (stored as ``int8``).

    - `UNRESOLVED`: not characterised; the :class:`LimitReason` says why.
    - `ZERO_RISK`: the refined risk has ``|L| ≤ zero_risk`` (a global minimum of a risk ``L ≥ 0``;
      the Hessian may vanish there, e.g. ``L = Σθ⁴``).
    - `LOCAL_MIN`: a critical point at a positive risk with no negative curvature
      (eigenvalues that count as zero are reported in ``limit_num_zero``: a degenerate
      minimum is still a ``LOCAL_MIN`` to second order).
    - `SADDLE`: a critical point at a positive risk with an eigenvalue
      ``λ < −curvature_rtol · max(1, max|λ|)``.
    """

    UNRESOLVED = 0
    ZERO_RISK = 1
    LOCAL_MIN = 2
    SADDLE = 3


class LimitReason(enum.IntEnum):
    """Why a limit is :attr:`Limit.UNRESOLVED` (stored as ``int8``; ``NONE`` when resolved).

    The reasons :func:`analyse_limit` gives are checked in this order (the first that
    applies is reported):

    - `NONE`: resolved.
    - `NOT_ANALYSED`: not attempted: more parameters than ``max_params`` (a dense Hessian),
      or set from outside with :func:`unresolved` / :func:`mark_unresolved` (a flow that
      diverged, was ill-posed, or whose ODE solve failed).
    - `REFINEMENT_FAILED`: the refinement met a non-finite risk, gradient or Hessian (at
      ``θ_stop`` or at an accepted point); also (after `TOO_FAR` and `KINK`) when it ran out
      of ``max_steps`` before the refined point was critical.
    - `TOO_FAR`: the refined point is farther from ``θ_stop`` than ``distance_factor``
      times the reference distance: it is not this flow's limit.
    - `KINK`: the refined risk is positive and the kink margin there is ``≤ kink_tol`` (a
      ReLU pre-activation at zero): the risk is not twice differentiable there and neither
      the gradient test nor the Hessian means anything (refinement stops at such a point
      as soon as a step fails to reduce ``‖∇L‖²`` fourfold).
      A zero of the risk needs no curvature: ``ZERO_RISK`` on a kink stays resolved.
    - `NOT_CRITICAL`: the refinement stopped (no trust-region step reduces ``‖∇L‖``) at a
      point whose gradient is not small: ``‖∇L‖ > curvature_rtol · max(1, max|λ|) ·
      max(1, ‖θ_ref‖)`` (e.g. a gradient in the Hessian's null space).
    """

    NONE = 0
    REFINEMENT_FAILED = 1
    TOO_FAR = 2
    KINK = 3
    NOT_ANALYSED = 4
    NOT_CRITICAL = 5


class DecayLaw(enum.IntEnum):
    """Which law fits the tail of a risk curve better (stored as ``int8``).

    - `UNKNOWN`: fewer than 3 usable tail points, a tail that does not decay (constant up
      to round-off), or both fits with ``r² < 0.9``.
    - `EXPONENTIAL`: ``L ≈ C e^{−r t}`` fits at least as well as the power law.
    - `POWER`: ``L ≈ C t^p`` fits better.
    """

    UNKNOWN = 0
    EXPONENTIAL = 1
    POWER = 2


def _names(enum_cls, codes) -> list[str]:
    return [enum_cls(int(c)).name for c in np.ravel(np.asarray(codes))]


def limit_names(codes: ArrayLike) -> list[str]:
    """Names of :class:`Limit` codes, e.g. ``['ZERO_RISK', 'SADDLE']`` (host-side).

    **Arguments:**

    - `codes`: :class:`Limit` codes, an int or an array of any shape (concrete).

    **Returns:**

    A ``list[str]`` of the names, in the order of the flattened `codes`.
    """
    return _names(Limit, codes)


def reason_names(codes: ArrayLike) -> list[str]:
    """Names of :class:`LimitReason` codes (host-side).

    **Arguments:**

    - `codes`: :class:`LimitReason` codes, an int or an array of any shape (concrete).

    **Returns:**

    A ``list[str]`` of the names, in the order of the flattened `codes`.
    """
    return _names(LimitReason, codes)


def decay_law_names(codes: ArrayLike) -> list[str]:
    """Names of :class:`DecayLaw` codes (host-side).

    **Arguments:**

    - `codes`: :class:`DecayLaw` codes, an int or an array of any shape (concrete).

    **Returns:**

    A ``list[str]`` of the names, in the order of the flattened `codes`.
    """
    return _names(DecayLaw, codes)


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------


def _check_number(name: str, value, *, positive: bool, allow_inf: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    v = float(value)
    bad = math.isnan(v) or (math.isinf(v) and not allow_inf) or (v <= 0 if positive else v < 0)
    if bad:
        kind = "positive" if positive else "non-negative"
        finite = "" if allow_inf else "finite "
        raise ValueError(f"{name} must be a {finite}{kind} number, got {value!r}.")


def _check_int(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}.")


class LimitAnalysis(eqx.Module):
    """Options of :func:`analyse_limit` (all static). ``None`` means: the default for the
    dtype, filled in by :meth:`resolve`.

    - `zero_risk`: a refined risk ``|L| ≤ zero_risk`` is a zero of the risk (risk units).
      Default ``defaults(dtype).zero_risk``: ``1e-20`` in float64, ``1e-10`` in float32.
    - `curvature_rtol`: an eigenvalue with ``|λ| ≤ curvature_rtol · max(1, max|λ|)`` counts
      as zero (the ``1`` is an absolute floor in risk/parameter² units); the same relative
      tolerance decides whether the refined gradient is zero (see
      :attr:`LimitReason.NOT_CRITICAL`). Default ``defaults(dtype).curvature_rtol``:
      ``1e-8`` in float64, ``1e-4`` in float32.
    - `distance_factor`: the refined point is this flow's limit only if
      ``‖θ_ref − θ_stop‖ ≤ distance_factor · d_ref`` (``inf`` disables the test).
      Default ``2``. The dynamics pass ``d_ref = max(recent, remaining)``: the path
      length of the last decade of time, and the remaining path length that the fitted
      decay law predicts (``2‖∇L‖/r`` for ``L ∝ e^{−rt}``, ``2‖∇L‖t/(q − 1)`` for
      ``L ∝ t^{−q}``, ``q > 1``; :func:`gflow_jax.dynamics.analysis.remaining_path_length`),
      which *is* ``‖θ_stop − θ*‖`` while the law holds. The first covers tails with
      ``‖θ_t − θ*‖ ∝ t^{−q}``, ``q ≥ 1/2`` (``L = Σθ⁴``: ``q = 1/2``), the second slow
      linear tails (``r t_stop ≲ 1``) that moved little over their last decade; the
      factor 2 leaves room for the law's and the refinement's errors while refusing
      zeros that a flow in its transient has not reached.
    - `max_steps`: most trust-region Newton trials of the critical-point refinement (each
      one Hessian and one ``eigh``). Default ``200``.
    - `zero_search_steps`: most trials of the zero search that runs first (``0`` skips
      it). Default ``64``.
    - `max_params`: flows with more trainable parameters are not analysed (the dense
      ``p × p`` Hessian and its ``O(p³)`` ``eigh``): :attr:`LimitReason.NOT_ANALYSED`.
      Default ``4096``.
    - `kink_tol`: a kink margin ``≤ kink_tol`` at the refined point gives
      :attr:`LimitReason.KINK` (units of the margin, e.g. of a pre-activation). Default
      ``sqrt(eps)`` of the dtype (``1.5e-8`` in float64, ``3.5e-4`` in float32): about the
      resolution of the flow's end point with the default controller.
    """

    zero_risk: float | None = eqx.field(static=True, default=None)
    curvature_rtol: float | None = eqx.field(static=True, default=None)
    distance_factor: float = eqx.field(static=True, default=2.0)
    max_steps: int = eqx.field(static=True, default=200)
    zero_search_steps: int = eqx.field(static=True, default=64)
    max_params: int = eqx.field(static=True, default=4096)
    kink_tol: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.zero_risk is not None:
            _check_number("LimitAnalysis.zero_risk", self.zero_risk, positive=True)
        if self.curvature_rtol is not None:
            _check_number("LimitAnalysis.curvature_rtol", self.curvature_rtol, positive=True)
            if self.curvature_rtol >= 1:
                raise ValueError(
                    f"LimitAnalysis.curvature_rtol must be < 1, got {self.curvature_rtol!r}."
                )
        _check_number(
            "LimitAnalysis.distance_factor", self.distance_factor, positive=True, allow_inf=True
        )
        _check_int("LimitAnalysis.max_steps", self.max_steps, minimum=1)
        _check_int("LimitAnalysis.zero_search_steps", self.zero_search_steps, minimum=0)
        _check_int("LimitAnalysis.max_params", self.max_params, minimum=1)
        if self.kink_tol is not None:
            _check_number("LimitAnalysis.kink_tol", self.kink_tol, positive=False)

    @property
    def is_resolved(self) -> bool:
        """Whether every tolerance is set (as :func:`analyse_limit` requires)."""
        return None not in (self.zero_risk, self.curvature_rtol, self.kink_tol)

    def resolve(self, dtype) -> LimitAnalysis:
        """Fill unset tolerances with the defaults for ``dtype`` (see the class docstring).

        **Arguments:**

        - `dtype`: the floating dtype of the parameters (float16/bfloat16 use float32's
          `zero_risk` and `curvature_rtol`; `kink_tol` defaults to ``sqrt(eps)`` of
          float64 for float64 and of float32 otherwise).

        **Returns:**

        A new :class:`LimitAnalysis` with `zero_risk`, `curvature_rtol` and `kink_tol`
        set (those already set are kept; ``is_resolved`` is ``True``) and the other
        options unchanged.
        """
        table = defaults(dtype)
        name = jnp.dtype(dtype).name
        eps = float(np.finfo(np.float64 if name == "float64" else np.float32).eps)
        return LimitAnalysis(
            zero_risk=table.zero_risk if self.zero_risk is None else self.zero_risk,
            curvature_rtol=(
                table.curvature_rtol if self.curvature_rtol is None else self.curvature_rtol
            ),
            distance_factor=self.distance_factor,
            max_steps=self.max_steps,
            zero_search_steps=self.zero_search_steps,
            max_params=self.max_params,
            kink_tol=math.sqrt(eps) if self.kink_tol is None else self.kink_tol,
        )


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


class LimitReport(eqx.Module):
    """The limit of one flow (fields get a leading axis when batched by ``jax.vmap``).

    - `limit`: a :class:`Limit` code (``int8``).
    - `reason`: a :class:`LimitReason` code (``int8``; ``NONE`` iff resolved).
    - `limit_risk`: ``L(θ_ref)`` (risk units).
    - `limit_grad_norm`: ``‖∇L(θ_ref)‖`` (risk / parameter units).
    - `limit_min_eig`, `limit_max_eig`: the extreme eigenvalues of ``∇²L(θ_ref)``
      (risk / parameter², i.e. 1/time along the flow).
    - `limit_num_negative`: eigenvalues ``λ < −curvature_rtol · max(1, max|λ|)`` (``int32``).
    - `limit_num_zero`: eigenvalues ``|λ| ≤ curvature_rtol · max(1, max|λ|)`` (``int32``).
    - `refine_distance`: ``‖θ_ref − θ_stop‖`` (parameter units).
    - `refine_steps`: trust-region trials taken (``int32``; each one Hessian and ``eigh``).
    - `limit_kink_margin`: ``kink_margin(θ_ref)`` (NaN without a `kink_margin`). A
      ``ZERO_RISK`` limit may lie on a kink (its spectrum is then one-sided).
    - `limit_params`: the refined point ``θ_ref`` (flat, as ``theta_stop``).

    Values that were not computed are NaN (floats) and ``−1`` (counts). For an unresolved
    limit the numbers of the last refined point are kept, for diagnosis.
    """

    limit: Int[Array, ""]
    reason: Int[Array, ""]
    limit_risk: Float[Array, ""]
    limit_grad_norm: Float[Array, ""]
    limit_min_eig: Float[Array, ""]
    limit_max_eig: Float[Array, ""]
    limit_num_negative: Int[Array, ""]
    limit_num_zero: Int[Array, ""]
    refine_distance: Float[Array, ""]
    refine_steps: Int[Array, ""]
    limit_kink_margin: Float[Array, ""]
    limit_params: Float[Array, " p"]


def unresolved(reason: LimitReason | int, dtype, num_params: int) -> LimitReport:
    """A report of a limit that was not characterised.

    For members the caller does not analyse (diverged, ill-posed, failed solves): give them
    this report with ``reason = LimitReason.NOT_ANALYSED``, e.g. by ``jnp.where`` leaf by leaf
    against the analysed ones, or use :func:`mark_unresolved`.

    **Arguments:**

    - `reason`: a :class:`LimitReason` other than ``NONE``.
    - `dtype`: the floating dtype of the float fields.
    - `num_params`: the length ``p`` of ``limit_params`` (static).

    **Returns:**

    A :class:`LimitReport` with ``limit = UNRESOLVED``, the given reason, NaN floats (and a
    NaN ``limit_params`` of shape ``(p,)``) and counts ``−1``.
    """
    reason = LimitReason(int(reason))
    if reason == LimitReason.NONE:
        raise ValueError("unresolved needs a reason other than LimitReason.NONE.")
    _check_int("num_params", num_params, minimum=0)
    nan = jnp.full((), jnp.nan, dtype)
    minus_one = jnp.full((), -1, jnp.int32)
    return LimitReport(
        limit=jnp.asarray(Limit.UNRESOLVED, jnp.int8),
        reason=jnp.asarray(reason, jnp.int8),
        limit_risk=nan,
        limit_grad_norm=nan,
        limit_min_eig=nan,
        limit_max_eig=nan,
        limit_num_negative=minus_one,
        limit_num_zero=minus_one,
        refine_distance=nan,
        refine_steps=minus_one,
        limit_kink_margin=nan,
        limit_params=jnp.full((int(num_params),), jnp.nan, dtype),
    )


def mark_unresolved(
    report: LimitReport, reason: LimitReason | int, where: Bool[ArrayLike, "*batch"]
) -> LimitReport:
    """Set ``limit = UNRESOLVED`` and the given reason where ``where`` holds.

    The numbers (risk, spectrum, refined point) are kept as they are; only the codes change.

    **Arguments:**

    - `report`: a (batched) :class:`LimitReport`.
    - `reason`: a :class:`LimitReason` other than ``NONE``, e.g. ``NOT_ANALYSED`` for flows
      that diverged or were ill-posed.
    - `where`: booleans of the report's batch shape.

    **Returns:**

    The updated report.
    """
    reason = LimitReason(int(reason))
    if reason == LimitReason.NONE:
        raise ValueError("mark_unresolved needs a reason other than LimitReason.NONE.")
    where = jnp.asarray(where)
    if where.shape != report.limit.shape:
        raise ValueError(
            f"where must have the report's batch shape {report.limit.shape}, got {where.shape}."
        )
    limit = jnp.where(where, jnp.int8(Limit.UNRESOLVED), report.limit).astype(jnp.int8)
    code = jnp.where(where, jnp.int8(reason), report.reason).astype(jnp.int8)
    return eqx.tree_at(lambda r: (r.limit, r.reason), report, (limit, code))


# --------------------------------------------------------------------------------------
# Refinement
# --------------------------------------------------------------------------------------

_SECULAR_ITERS = 32  # Moré–Hebden iterations for the Levenberg–Marquardt parameter
_ACCEPT = 1e-4  # accept a trial if it achieves this fraction of the predicted decrease
_SHRINK, _GROW = 0.25, 2.0  # trust-radius factors (shrink below ρ = 1/4, grow above 3/4)
_BISECTIONS = 64  # bisections for the trust-region parameter of the zero search
# the zero search gives up where the local model cannot reach a zero: Newton decrement
# < L/16 (near a regular zero set the decrement is ≈ L; for L ~ |θ|^{2k} it is ≥ L/2)
_REACH = 1 / 16


def _norm(x):
    return jnp.linalg.norm(x)


def _local(loss, theta):
    """``(L, ∇L, ∇²L)`` at ``θ`` in one forward-over-reverse pass."""

    def grad_aux(th):
        value, grad = jax.value_and_grad(loss)(th)
        return grad, (value, grad)

    hess, (value, grad) = jax.jacfwd(grad_aux, has_aux=True)(theta)
    dtype = theta.dtype
    value, grad, hess = value.astype(dtype), grad.astype(dtype), hess.astype(dtype)
    hess = 0.5 * (hess + hess.T)
    lam, vecs, hess_finite = finite_eigh(hess)  # a non-finite state is flagged as failed
    finite = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad)) & hess_finite
    return value, grad, lam, vecs, finite


def _kept(lam):
    """The eigen-directions a pseudo-inverse keeps: ``|λ| > p·eps·max|λ|`` (numerical rank)."""
    eps = jnp.finfo(lam.dtype).eps
    scale = jnp.max(jnp.abs(lam))
    return (jnp.abs(lam) > lam.shape[0] * eps * scale) & (scale > 0)


def _newton(c, lam, keep):
    """Components of the pseudo-inverse Newton step ``−H⁺g`` and the Newton decrement
    ``½ Σ c²/|λ|`` (risk units) in the eigenbasis (``c = Vᵀg``)."""
    inv = jnp.where(keep, 1 / jnp.where(keep, lam, 1), 0)
    return -inv * c, 0.5 * jnp.sum(c**2 * jnp.abs(inv))


def _trust_step(c, lam, keep, radius):
    """The Levenberg–Marquardt step for the residual ``∇L`` with Jacobian ``H``, of length
    ``≤ radius``: ``d(μ) = −λc/(λ² + μ)`` (eigenbasis), ``μ ≥ 0`` the root of
    ``‖d(μ)‖ = radius`` by Moré–Hebden iterations (``μ = 0``, Newton, if it fits)."""
    a = jnp.where(keep, lam * c, 0)
    sigma = jnp.where(keep, lam**2, 1)
    tiny = jnp.finfo(lam.dtype).tiny
    safe_radius = jnp.where(radius > 0, radius, 1)

    def step(mu):
        return jnp.where(keep, -a / (sigma + mu), 0)

    def body(_, mu):
        d = step(mu)
        nd = jnp.linalg.norm(d)
        q = jnp.sum(jnp.where(keep, a**2 / (sigma + mu) ** 3, 0))
        mu_new = mu + nd**2 * (nd / safe_radius - 1) / jnp.maximum(q, tiny)
        return jnp.where(nd > radius, mu_new, mu)

    d = step(lax.fori_loop(0, _SECULAR_ITERS, body, jnp.zeros((), lam.dtype)))
    nd = jnp.linalg.norm(d)
    # guarantee the bound whatever the iterations left (and d = 0 for radius = 0)
    d = d * jnp.where(nd > radius, radius / jnp.where(nd > 0, nd, 1), 1)
    return jnp.where(radius > 0, d, 0)


def _descent_step(c, lam, keep, radius, damping):
    """The damped saddle-free Newton step of the zero search, of length ``≤ radius``:
    ``d(μ) = −c/(|λ| + ν + μ)`` in the eigenbasis on the directions of numerical rank
    (`keep`; zero elsewhere), with the damping ``ν = ‖∇L‖`` and ``μ = 0`` if that step
    fits, else the ``μ > 0`` with ``‖d(μ)‖ = radius`` (bisection).

    With ``|λ|`` a negative eigenvalue is a direction of descent to follow, not a step
    towards a saddle. Near a zero set the Hessian is ``JᵀJ`` plus a residual term whose
    eigenvalues are ``O(L^{1/2})`` of either sign and carry no information; the damping
    ``ν = ‖∇L‖`` (Levenberg–Marquardt with ``μ_k = ‖F(θ_k)‖``, Yamashita & Fukushima 2001,
    quadratically convergent to non-isolated solutions under a local error bound) keeps
    the step out of those directions, and the step is the Gauss–Newton step normal to the
    zero set."""
    tiny = jnp.finfo(lam.dtype).tiny
    a = jnp.where(keep, jnp.abs(lam), 1)
    c = jnp.where(keep, c, 0)
    safe_radius = jnp.maximum(radius, tiny)

    a = a + damping

    def step(mu):
        return -c / (a + mu)

    # ‖d(μ)‖ ≤ ‖c‖/μ: at μ = ‖c‖/radius the step is inside the region
    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        inside = jnp.linalg.norm(step(mid)) <= radius
        return jnp.where(inside, lo, mid), jnp.where(inside, mid, hi)

    hi0 = jnp.linalg.norm(c) / safe_radius + tiny
    _, hi = lax.fori_loop(0, _BISECTIONS, body, (jnp.zeros_like(hi0), hi0))
    newton = step(jnp.zeros((), lam.dtype))
    d = jnp.where(jnp.linalg.norm(newton) <= radius, newton, step(hi))
    nd = jnp.linalg.norm(d)
    d = d * jnp.where(nd > radius, radius / jnp.where(nd > 0, nd, 1), 1)
    return jnp.where(radius > 0, d, 0)


class _ZeroSearch(eqx.Module):
    theta: Array
    value: Array
    grad: Array
    grad_c: Array
    lam: Array
    vecs: Array
    radius: Array
    steps: Array
    stalled: Array


def _search_zero(loss, theta_stop, local0, ball, zero_risk, max_steps: int) -> _ZeroSearch:
    """Minimise ``L`` over the ball ``‖θ − θ_stop‖ ≤ ball`` by trust-region Newton steps
    (:func:`_descent_step`, trials projected onto the ball), until ``|L| ≤ zero_risk``, the
    Newton decrement falls below ``L/16`` (the local model cannot reach a zero: a positive
    minimum, or a saddle), the radius collapses, or ``max_steps`` trials. A trial is
    accepted if ``L`` decreases by ``≥ 10⁻⁴`` of the model's prediction."""
    value0, grad0, lam0, vecs0, finite0 = local0
    dtype = theta_stop.dtype
    eps = jnp.finfo(dtype).eps
    bounded = jnp.isfinite(ball)
    newton_length = jnp.linalg.norm(_newton(vecs0.T @ grad0, lam0, _kept(lam0))[0])
    radius0 = jnp.where(bounded, ball, jnp.maximum(newton_length, eps))

    def project(theta):
        offset = theta - theta_stop
        norm = jnp.linalg.norm(offset)
        shrink = jnp.where(bounded & (norm > ball), ball / jnp.where(norm > 0, norm, 1), 1)
        return theta_stop + offset * shrink

    def done(s: _ZeroSearch):
        _, decrement = _newton(s.grad_c, s.lam, _kept(s.lam))
        return (
            (jnp.abs(s.value) <= zero_risk)
            | (decrement < _REACH * jnp.abs(s.value))
            | s.stalled
            | (s.steps >= max_steps)
        )

    def body(s: _ZeroSearch) -> _ZeroSearch:
        keep = _kept(s.lam)
        d = _descent_step(s.grad_c, s.lam, keep, s.radius, jnp.linalg.norm(s.grad))
        theta_t = project(s.theta + s.vecs @ d)
        d = s.vecs.T @ (theta_t - s.theta)  # the step actually taken (after projection)
        norm_d = jnp.linalg.norm(d)
        value_t, grad_t, lam_t, vecs_t, finite_t = _local(loss, theta_t)
        curvature = jnp.where(keep, jnp.abs(s.lam), 0)
        predicted = -(jnp.dot(s.grad_c, d) + 0.5 * jnp.sum(curvature * d**2))
        rho = (s.value - value_t) / jnp.where(predicted > 0, predicted, 1)
        good = (predicted > 0) & (rho >= _ACCEPT)
        accept = finite_t & (good | (jnp.abs(value_t) <= zero_risk))
        radius = jnp.where(
            ~accept | (rho < 0.25),
            _SHRINK * jnp.minimum(s.radius, norm_d),
            jnp.where((rho > 0.75) & (norm_d >= 0.99 * s.radius), _GROW * s.radius, s.radius),
        )
        radius = jnp.where(bounded, jnp.minimum(radius, 2 * ball), radius)

        def pick(new, old):
            return jnp.where(accept, new, old)

        theta = pick(theta_t, s.theta)
        return _ZeroSearch(
            theta=theta,
            value=pick(value_t, s.value),
            grad=pick(grad_t, s.grad),
            grad_c=pick(vecs_t.T @ grad_t, s.grad_c),
            lam=pick(lam_t, s.lam),
            vecs=pick(vecs_t, s.vecs),
            radius=radius,
            steps=s.steps + 1,
            stalled=radius <= eps * jnp.maximum(1, jnp.linalg.norm(theta)),
        )

    init = _ZeroSearch(
        theta=theta_stop,
        value=value0,
        grad=grad0,
        grad_c=vecs0.T @ grad0,
        lam=lam0,
        vecs=vecs0,
        radius=jnp.where(finite0, radius0, 0).astype(dtype),
        steps=jnp.zeros((), jnp.int32),
        stalled=~finite0,
    )
    return lax.while_loop(lambda s: ~done(s), body, init)


class _State(eqx.Module):
    theta: Array
    value: Array
    grad: Array
    lam: Array
    vecs: Array
    finite: Array
    radius: Array
    steps: Array
    stalled: Array
    progress: Array
    margin: Array


def analyse_limit(
    loss: Callable[[Float[Array, " p"]], Float[Array, ""]],
    theta_stop: Float[ArrayLike, " p"],
    reference_distance: Float[ArrayLike, ""],
    options: LimitAnalysis,
    kink_margin: Callable[[Float[Array, " p"]], Float[Array, ""]] | None = None,
) -> LimitReport:
    """Refine the end point of a stopped flow to a critical point and classify it.

    **Zero search (first).** Within the ball ``‖θ − θ_stop‖ ≤ R`` (``R = distance_factor ·
    d_ref``, see below), minimise ``L`` by trust-region steps ``δ = −V [c / (|λ| + ν + μ)]``
    (``c = Vᵀg``, numerical-rank directions only) with the damping ``ν = ‖∇L‖``
    (Levenberg–Marquardt's choice for non-isolated solutions, Yamashita & Fukushima 2001:
    near a zero set the Hessian is ``JᵀJ`` plus residual terms whose eigenvalues are
    ``O(√L)`` of either sign; undamped, the step follows those into the zero set's
    tangent directions and out of the ball) and ``μ ≥ 0`` keeping ``‖δ‖ ≤ Δ``; trials
    are projected onto the ball and accepted when ``L`` decreases by ``≥ 10⁻⁴`` of the
    model's prediction ``−(cᵀd + ½ Σ|λ|d²)``. It stops at ``|L| ≤ zero_risk`` (the limit is
    ``ZERO_RISK``, the Hessian is taken there), when the Newton decrement is below ``L/16``
    (the local model cannot reach a zero: near a regular zero set the decrement is ``≈ L``,
    for ``L ~ |θ|^{2k}`` it is ``≥ L/2``; at a positive minimum or a saddle it is
    ``≪ L``), when the radius collapses, or after ``zero_search_steps`` trials. If it finds
    no zero, the refinement below starts from ``θ_stop``.

    **Refinement: trust-region Newton for ``∇L = 0``.** Each step takes ``(L, g, H)`` at
    ``θ`` with ``H = V diag(λ) Vᵀ`` (``jnp.linalg.eigh``), ``c = Vᵀg``, and moves by the
    Levenberg–Marquardt step of the residual ``g`` with Jacobian ``H``,
    ``δ = −V [λc / (λ² + μ)]``, restricted to the directions of numerical rank
    ``|λ| > p·eps·max|λ|`` (a pseudo-inverse), with ``μ ≥ 0`` such that ``‖δ‖ ≤ Δ``
    (``μ = 0``: the Newton step ``−H⁺g``). The trial is accepted if ``‖∇L‖²`` decreases by
    at least ``10⁻⁴`` of the decrease the linear model ``g + Hδ`` predicts (or if its risk
    has ``|L| ≤ zero_risk``); the radius ``Δ`` (initially ``distance_factor · d_ref``) is
    quartered on a poor trial (``ρ < 1/4``) and doubled on a good one at the boundary
    (``ρ > 3/4``). It stops when

    - ``|L| ≤ zero_risk`` (a zero of the risk);
    - the Newton decrement ``½ Σ c²/|λ| ≤ 16·eps·max(|L|, zero_risk)`` (the risk is
      converged to round-off) *and* either the last trial failed to reduce ``‖∇L‖²``
      fourfold (no more quadratic or degenerate-linear progress: round-off reached) or
      ``‖∇L‖ ≤ 64·eps·max(1, max|λ|)·max(1, ‖θ‖)``. Continuing past the decrement test
      locates degenerate minima (``L = 1 + Σθ⁴``) well enough that their vanishing
      eigenvalues count as zero;
    - at a kink with a positive risk, once a trial fails to reduce ``‖∇L‖²`` fourfold;
    - ``Δ ≤ eps·max(1, ‖θ‖)`` (stalled), or after ``max_steps`` trials.

    Under ``jax.vmap`` the loop runs until every member has stopped (finished members are
    frozen), so a batch costs its slowest member's number of trials.

    Why this method:

    - *Root-finding, not minimisation.* A flow stopped near a saddle (its stop rule saw
      ``‖∇L‖² ≤ grad_tol·L``) sits at that saddle: Newton for ``∇L = 0`` with signed
      eigenvalues converges to it, whereas a minimiser of ``L`` (trust-region Newton, which
      follows negative curvature) would slide off to some other, distant minimum that the
      flow has not reached. Near a zero set the Newton step is the Gauss–Newton step and
      reaches ``L ≤ zero_risk`` in one or two steps; the distance test then checks that
      the root is this flow's.
    - *Degenerate limits.* At a zero-risk limit most Hessian eigenvalues vanish (a
      manifold of zeros) and for ``L = Σθ⁴`` all do: an LU-based Newton step is singular.
      The pseudo-inverse moves only across the degenerate directions, and where ``λ ∝ θ²``
      (``L ~ θ⁴``) the Newton step ``θ/3`` still contracts linearly (risk × ``(2/3)⁴`` per
      step), so ``L ≤ zero_risk`` is reached in ``~15`` steps from ``L = 1e-10``.
    - *The eigendecomposition is needed anyway* for the spectrum; on it the trust-region
      subproblem is a scalar equation, so each trial costs one Hessian and one ``eigh``.
      ``optimistix.LevenbergMarquardt`` on ``∇L`` would solve the same model but its
      Cauchy termination (small changes of ``θ`` and ``∇L``) does not distinguish the slow
      linear convergence of a degenerate limit from convergence, and it would need a
      separate ``eigh`` at the end.

    **Classification** at ``θ_ref`` with eigenvalues ``λ`` of ``∇²L(θ_ref)``, ``s =
    max(1, max|λ|)`` and ``τ = curvature_rtol · s``: ``num_zero = #{|λ| ≤ τ}``,
    ``num_negative = #{λ < −τ}``; ``ZERO_RISK`` if ``|L| ≤ zero_risk``; else the point must be
    critical, ``‖∇L‖ ≤ τ · max(1, ‖θ_ref‖)``, and is ``SADDLE`` if ``num_negative > 0``, else
    ``LOCAL_MIN``. Reasons for ``UNRESOLVED`` are in :class:`LimitReason` (any non-finite
    value gives ``REFINEMENT_FAILED``, never a NaN class).

    **Reference distance.** ``d_ref`` is `reference_distance` when it is finite and
    positive. Otherwise (a flow stopped at ``t = 0`` has no path) it falls back to the
    length ``‖H⁺g‖`` of the Newton step at ``θ_stop``, the distance to the critical point
    of the local quadratic model. A floor ``4·eps·max(1, ‖θ_stop‖)`` lets a point that is
    already critical (``θ_ref = θ_stop``) pass.

    **Arguments:**

    - `loss`: ``θ ↦ L(θ)``, the risk (``≥ 0``) as a function of the flat trainable
      parameter vector; twice differentiable except on kinks (jittable).
    - `theta_stop`: ``(p,)`` the flow's end point.
    - `reference_distance`: ``d_ref``, the flow's distance scale (parameter units): its
      recent path length ``∫‖∇L‖ dt`` or the remaining one its decay law predicts,
      whichever is longer (see `LimitAnalysis.distance_factor`); ``0`` or non-finite
      selects the fallback above.
    - `options`: a resolved :class:`LimitAnalysis` (``options.resolve(dtype)``).
    - `kink_margin`: optional ``θ ↦ m(θ) ≥ 0``, the distance to the nearest kink of ``L``
      (e.g. the smallest ``|pre-activation|`` of a ReLU network over the data); ``KINK``
      where ``m(θ_ref) ≤ kink_tol`` (or is NaN) and the risk is positive.

    **Returns:**

    A :class:`LimitReport` (``refine_steps`` counts the trials of both stages). With
    ``p > max_params`` nothing is computed:
    ``unresolved(NOT_ANALYSED, dtype, p)``.
    """
    if not isinstance(options, LimitAnalysis):
        raise TypeError(f"options must be a LimitAnalysis, got {type(options).__name__}.")
    if not options.is_resolved:
        raise ValueError("analyse_limit needs resolved options; call options.resolve(dtype) first.")
    theta_stop = jnp.asarray(theta_stop)
    if not jnp.issubdtype(theta_stop.dtype, jnp.floating):
        theta_stop = theta_stop.astype(jnp.result_type(float))
    if theta_stop.ndim != 1:
        raise ValueError(
            f"theta_stop must be a flat (p,) vector (vmap over a batch); got shape "
            f"{theta_stop.shape}."
        )
    dtype = theta_stop.dtype
    p = theta_stop.shape[0]
    if p == 0 or p > options.max_params:
        return unresolved(LimitReason.NOT_ANALYSED, dtype, p)
    reference_distance = jnp.asarray(reference_distance, dtype)
    if reference_distance.shape != ():
        raise ValueError(
            f"reference_distance must be a scalar, got shape {reference_distance.shape}."
        )

    eps = jnp.finfo(dtype).eps
    zero_risk = jnp.asarray(options.zero_risk, dtype)
    rtol = options.curvature_rtol

    value0, grad0, lam0, vecs0, finite0 = _local(loss, theta_stop)
    keep0 = _kept(lam0)
    newton0, _ = _newton(vecs0.T @ grad0, lam0, keep0)
    fallback = jnp.linalg.norm(newton0)
    d_ref = jnp.where(
        jnp.isfinite(reference_distance) & (reference_distance > 0), reference_distance, fallback
    )
    if math.isinf(options.distance_factor):  # no distance test (and no inf · 0 = NaN)
        radius0 = allowed = jnp.asarray(jnp.inf, dtype)
    else:
        radius0 = options.distance_factor * d_ref
        allowed = radius0 + 4 * eps * jnp.maximum(1, jnp.linalg.norm(theta_stop))
    allowed = jnp.where(finite0, allowed, 0)

    def is_zero(value):
        return jnp.abs(value) <= zero_risk

    def margin_at(theta):
        if kink_margin is None:
            return jnp.asarray(jnp.inf, dtype)
        m = jnp.asarray(kink_margin(theta))
        if m.shape != ():
            raise ValueError(f"kink_margin must return a scalar, got shape {m.shape}.")
        return m.astype(dtype)

    def on_kink(s: _State):
        # where L > 0 a kink makes the curvature meaningless (refinement stops there once a
        # step fails to quarter ‖∇L‖²; on the way to a zero of L it goes on)
        return ~(s.margin > options.kink_tol) & ~is_zero(s.value)

    def done(s: _State):
        _, decrement = _newton(s.vecs.T @ s.grad, s.lam, _kept(s.lam))
        risk_converged = decrement <= 16 * eps * jnp.maximum(jnp.abs(s.value), zero_risk)
        grad_floor = (
            64 * eps * jnp.maximum(1, jnp.max(jnp.abs(s.lam))) * jnp.maximum(1, _norm(s.theta))
        )
        polished = risk_converged & (~s.progress | (_norm(s.grad) <= grad_floor))
        return (
            ~s.finite
            | is_zero(s.value)
            | polished
            | (on_kink(s) & ~s.progress)
            | s.stalled
            | (s.steps >= options.max_steps)
        )

    def body(s: _State) -> _State:
        c = s.vecs.T @ s.grad
        keep = _kept(s.lam)
        d = _trust_step(c, s.lam, keep, s.radius)
        delta = s.vecs @ d
        norm_delta = jnp.linalg.norm(d)
        theta_t = s.theta + delta
        value_t, grad_t, lam_t, vecs_t, finite_t = _local(loss, theta_t)
        merit, merit_t = jnp.sum(s.grad**2), jnp.sum(grad_t**2)
        predicted = merit - jnp.sum((c + s.lam * d) ** 2)
        actual = merit - merit_t
        rho = actual / jnp.where(predicted > 0, predicted, 1)
        good = (predicted > 0) & (rho >= _ACCEPT)
        accept = finite_t & (good | is_zero(value_t))
        at_boundary = norm_delta >= 0.99 * s.radius
        radius = jnp.where(
            ~accept | (rho < 0.25),
            _SHRINK * jnp.minimum(s.radius, norm_delta),
            jnp.where((rho > 0.75) & at_boundary, _GROW * s.radius, s.radius),
        )

        def pick(new, old):
            return jnp.where(accept, new, old)

        theta = pick(theta_t, s.theta)
        stalled = radius <= eps * jnp.maximum(1, jnp.linalg.norm(theta))
        return _State(
            theta=theta,
            value=pick(value_t, s.value),
            grad=pick(grad_t, s.grad),
            lam=pick(lam_t, s.lam),
            vecs=pick(vecs_t, s.vecs),
            finite=s.finite,
            radius=radius,
            steps=s.steps + 1,
            stalled=stalled,
            progress=accept & (merit_t <= 0.25 * merit),
            margin=pick(margin_at(theta_t), s.margin),
        )

    # 1. a zero of the risk in the ball B(θ_stop, allowed) makes the limit ZERO_RISK
    found = _search_zero(
        loss,
        theta_stop,
        (value0, grad0, lam0, vecs0, finite0),
        allowed,
        zero_risk,
        options.zero_search_steps,
    )
    zero_found = finite0 & is_zero(found.value) & jnp.all(jnp.isfinite(found.theta))

    def start(a, b):
        return jnp.where(zero_found, a, b)

    # 2. otherwise, the critical point of ∇L = 0 nearest θ_stop (a zero found in step 1
    # starts there and stops at once)
    init = _State(
        theta=start(found.theta, theta_stop),
        value=start(found.value, value0),
        grad=start(found.grad, grad0),
        lam=start(found.lam, lam0),
        vecs=start(found.vecs, vecs0),
        finite=finite0,
        radius=jnp.where(finite0, radius0, 0).astype(dtype),
        steps=jnp.zeros((), jnp.int32),
        stalled=jnp.zeros((), bool),
        progress=jnp.ones((), bool),
        margin=margin_at(start(found.theta, theta_stop)),
    )
    final = lax.while_loop(lambda s: ~done(s), body, init)

    theta, value, lam = final.theta, final.value, final.lam
    finite = final.finite & jnp.all(jnp.isfinite(theta))
    grad_norm = jnp.linalg.norm(final.grad)
    scale = jnp.maximum(1, jnp.max(jnp.abs(lam)))
    tau = rtol * scale
    num_negative = jnp.sum(lam < -tau, dtype=jnp.int32)
    num_zero = jnp.sum(jnp.abs(lam) <= tau, dtype=jnp.int32)
    distance = jnp.linalg.norm(theta - theta_stop)

    zero = is_zero(value)
    critical = zero | (grad_norm <= tau * jnp.maximum(1, jnp.linalg.norm(theta)))
    out_of_steps = final.steps >= options.max_steps
    reason = jnp.select(
        [
            ~finite,
            ~(distance <= allowed),
            on_kink(final),
            ~critical & out_of_steps,
            ~critical,
        ],
        [
            LimitReason.REFINEMENT_FAILED,
            LimitReason.TOO_FAR,
            LimitReason.KINK,
            LimitReason.REFINEMENT_FAILED,
            LimitReason.NOT_CRITICAL,
        ],
        LimitReason.NONE,
    ).astype(jnp.int8)
    limit = jnp.where(
        reason != LimitReason.NONE,
        Limit.UNRESOLVED,
        jnp.where(
            zero, Limit.ZERO_RISK, jnp.where(num_negative > 0, Limit.SADDLE, Limit.LOCAL_MIN)
        ),
    ).astype(jnp.int8)
    nan = jnp.asarray(jnp.nan, dtype)

    def when_finite(x):
        return jnp.where(final.finite, x, nan)

    return LimitReport(
        limit=limit,
        reason=reason,
        limit_risk=value,
        limit_grad_norm=grad_norm,
        limit_min_eig=when_finite(lam[0]),
        limit_max_eig=when_finite(lam[-1]),
        limit_num_negative=jnp.where(final.finite, num_negative, -1).astype(jnp.int32),
        limit_num_zero=jnp.where(final.finite, num_zero, -1).astype(jnp.int32),
        refine_distance=distance,
        refine_steps=found.steps + final.steps,
        limit_kink_margin=final.margin if kink_margin is not None else nan,
        limit_params=theta,
    )


def pattern_loss(
    risk,
    model_of: Callable[[Float[Array, " p"]], eqx.Module],
    pattern: Bool[Array, "n s"],
    num_sliding: Int[Array, ""],
    kink_tol: float,
) -> tuple[Callable, Callable]:
    """``(loss, kink_margin)`` for :func:`analyse_limit` inside a final activation pattern.

    For a trajectory of :class:`gflow_jax.PiecewiseGradientFlow` on an empirical ReLU
    risk that stops off every switching surface (``num_sliding = 0``) the limit is taken
    in the region of its final pattern ``P``: ``loss`` is the risk ``L_P`` of the network
    with ``P`` frozen (:func:`gflow_jax.risks._kinks.masked_outputs`), a polynomial that
    equals ``L`` on the closure of the region, so its Hessian at a limit on the region's
    boundary (a kink of ``L``) is the one-sided Hessian and ``LOCAL_MIN``/``SADDLE`` mean
    "within the final pattern". ``kink_margin`` is ``inf`` while the refined point stays
    in that closure (each ``s_ij`` of a point of positive weight on its side of ``P``, up
    to ``kink_tol`` relative to the neuron's scale) and ``0`` otherwise, so a refinement
    that leaves the region is ``KINK``. A trajectory that stops *on* a sliding surface
    keeps the plain risk and its kink margin (a positive-risk limit there is ``KINK``:
    the flow is constrained to the surface, where ``∇L_P ≠ 0`` in general).

    **Arguments:**

    - `risk`: the :class:`gflow_jax.EmpiricalRisk`.
    - `model_of`: ``θ ↦ model`` from the flat trainable parameters.
    - `pattern`: ``(n, s)`` booleans, the final pattern (:class:`KinkStats` ``.pattern``).
    - `num_sliding`: surfaces slid on at the stop (traced; ``> 0`` selects the plain risk).
    - `kink_tol`: the resolved :attr:`LimitAnalysis.kink_tol`.

    **Returns:**

    ``(loss, kink_margin)``, both ``θ ↦`` scalar, jittable.
    """
    from .risks._kinks import masked_outputs, scaled_switching_functions

    x = risk.x
    sliding = num_sliding > 0

    def loss(theta):
        model = model_of(theta)
        mask = pattern.astype(theta.dtype)
        r = masked_outputs(model, x.astype(theta.dtype), mask) - risk.y.astype(theta.dtype)
        masked = jnp.sum(risk.weights.astype(theta.dtype) * jnp.sum(r * r, axis=-1))
        return jnp.where(sliding, risk(model), masked)

    def kink_margin(theta):
        model = model_of(theta)
        s = scaled_switching_functions(model, x.astype(theta.dtype), pattern.astype(theta.dtype))
        side = jnp.where(pattern, s, -s)
        side = jnp.where((risk.weights > 0)[:, None], side, jnp.inf)
        inside = jnp.min(side) >= -kink_tol
        margin = jnp.where(inside, jnp.inf, 0).astype(theta.dtype)
        return jnp.where(sliding, risk.kink_margin(model), margin)

    return loss, kink_margin


# --------------------------------------------------------------------------------------
# Decay laws
# --------------------------------------------------------------------------------------


class DecayFit(eqx.Module):
    """Exponential and power-law fits to the tail of a risk curve (batched by ``vmap``).

    - `exp_rate`: ``r`` of the least-squares fit ``log L = a − r t`` (units 1/time).
    - `exp_r2`: its coefficient of determination ``r² = 1 − SS_res/SS_tot``.
    - `power_exponent`: ``p`` of the fit ``log L = a + p log t`` (e.g. ``−2`` for the risk
      ``Σθ⁴`` along its flow, ``L ~ 1/(64 t²)``; dimensionless).
    - `power_r2`: its ``r²``.
    - `law`: a :class:`DecayLaw` code (``int8``): the fit with the larger ``r²`` (ties go
      to ``EXPONENTIAL``), ``UNKNOWN`` if fewer than 3 usable points, a tail constant up to
      round-off, or both ``r² < 0.9``.
    - `num_points`: the number of tail points fitted (``int32``).

    Both fits use the same points; with fewer than 3 of them every float is NaN. A constant
    tail has slopes ``≈ 0`` and ``r² = 1``.
    """

    exp_rate: Float[Array, ""]
    exp_r2: Float[Array, ""]
    power_exponent: Float[Array, ""]
    power_r2: Float[Array, ""]
    law: Int[Array, ""]
    num_points: Int[Array, ""]


_MIN_POINTS = 3
_MIN_R2 = 0.9


def _masked_fit(x, y, w, n, flat):
    """Least squares ``y ≈ a + b x`` with 0/1 weights: ``(b, r²)`` (two-pass, centred)."""
    safe_n = jnp.maximum(n, 1).astype(x.dtype)
    dx = jnp.where(w, x - jnp.sum(jnp.where(w, x, 0)) / safe_n, 0)
    dy = jnp.where(w, y - jnp.sum(jnp.where(w, y, 0)) / safe_n, 0)
    s_xx, s_xy, s_yy = jnp.sum(dx * dx), jnp.sum(dx * dy), jnp.sum(dy * dy)
    ok = s_xx > 0
    slope = jnp.where(ok, s_xy / jnp.where(ok, s_xx, 1), jnp.nan)
    ss_res = jnp.maximum(s_yy - slope * s_xy, 0)
    r2 = jnp.where(flat, 1.0, 1 - ss_res / jnp.where(flat, 1, s_yy))
    return slope, jnp.where(ok, r2, jnp.nan)


def fit_decay(
    ts: Float[ArrayLike, " n"],
    risk: Float[ArrayLike, " n"],
    tail_fraction_decades: float = 1.0,
) -> DecayFit:
    """Fit ``L ≈ C e^{−r t}`` and ``L ≈ C t^p`` to the tail of a saved risk curve.

    **Which points.** ``t_last`` is the largest time whose ``t`` and ``L`` are both finite
    (NaN entries, e.g. save times after the flow stopped, are ignored). The tail is every
    point with ``t_last · 10^{−tail_fraction_decades} ≤ t ≤ t_last``, ``t > 0``, ``L > 0``
    and both finite: the last ``tail_fraction_decades`` decades of *time*, so that a power
    law (a straight line in ``log t``) is sampled evenly enough to be told from an
    exponential (a straight line in ``t``).

    **Fits.** Ordinary least squares on the tail of ``log L`` (natural log) against ``t``
    (``exp_rate = −slope``, units 1/time) and against ``log t`` (``power_exponent =
    slope``), each with ``r² = 1 − SS_res/SS_tot``. Fixed shapes (0/1 weights), no Python
    control flow on values: jittable and vmappable, ``jax.vmap(fit_decay)(ts, risk)``.

    **Arguments:**

    - `ts`: ``(n,)`` save times (any order; NaN entries ignored).
    - `risk`: ``(n,)`` risk at ``ts`` (NaN entries ignored).
    - `tail_fraction_decades`: the length of the tail in decades of time (static, ``> 0``).

    **Returns:**

    A :class:`DecayFit`.
    """
    _check_number("tail_fraction_decades", tail_fraction_decades, positive=True)
    ts, risk = jnp.asarray(ts), jnp.asarray(risk)
    if ts.ndim != 1 or risk.shape != ts.shape:
        raise ValueError(
            f"ts and risk must be 1-d arrays of the same length (vmap over a batch); got "
            f"shapes {ts.shape} and {risk.shape}."
        )
    dtype = np.promote_types(np.promote_types(ts.dtype, risk.dtype), np.float32)
    ts, risk = ts.astype(dtype), risk.astype(dtype)
    finite = jnp.isfinite(ts) & jnp.isfinite(risk)
    t_last = jnp.max(jnp.where(finite, ts, -jnp.inf))
    t_first = t_last * 10.0 ** (-float(tail_fraction_decades))
    w = finite & (ts > 0) & (risk > 0) & (ts >= t_first) & (ts <= t_last)
    n = jnp.sum(w, dtype=jnp.int32)
    y = jnp.log(jnp.where(w, risk, 1))
    t = jnp.where(w, ts, 1)
    safe_n = jnp.maximum(n, 1).astype(dtype)
    y_bar = jnp.sum(jnp.where(w, y, 0)) / safe_n
    s_yy = jnp.sum(jnp.where(w, (y - y_bar) ** 2, 0))
    flat = s_yy <= safe_n * (16 * jnp.finfo(dtype).eps * (jnp.abs(y_bar) + 1)) ** 2
    exp_slope, exp_r2 = _masked_fit(t, y, w, n, flat)
    pow_slope, pow_r2 = _masked_fit(jnp.log(t), y, w, n, flat)

    enough = n >= _MIN_POINTS
    nan = jnp.asarray(jnp.nan, dtype)
    exp_r2, pow_r2 = jnp.where(enough, exp_r2, nan), jnp.where(enough, pow_r2, nan)
    e_score = jnp.where(jnp.isnan(exp_r2), -jnp.inf, exp_r2)
    p_score = jnp.where(jnp.isnan(pow_r2), -jnp.inf, pow_r2)
    best = jnp.maximum(e_score, p_score)
    law = jnp.where(
        ~enough | flat | (best < _MIN_R2),
        DecayLaw.UNKNOWN,
        jnp.where(e_score >= p_score, DecayLaw.EXPONENTIAL, DecayLaw.POWER),
    ).astype(jnp.int8)
    return DecayFit(
        exp_rate=jnp.where(enough, -exp_slope, nan),
        exp_r2=exp_r2,
        power_exponent=jnp.where(enough, pow_slope, nan),
        power_r2=pow_r2,
        law=law,
        num_points=n,
    )
