"""Gradient flows of empirical ReLU risks as piecewise-smooth (Filippov) systems.

On an empirical risk ``L(θ) = Σ_i ω_i ‖N_θ(x_i) − y_i‖²`` of a ReLU network the field
``−∇L`` jumps where a *switching function* ``s_k(θ)`` (a hidden pre-activation of a data
point, ``k = (i, j)``) changes sign. Between those surfaces the risk is smooth: freezing
the activation pattern ``P`` (``P_k = 1{s_k > 0}``) gives a polynomial risk ``L_P``
whose gradient is the one-sided continuation of the field. :class:`PiecewiseGradientFlow`

- integrates ``−∇L_P`` with an explicit Runge–Kutta method (Tsit5) and its own
  error-controlled step, the pattern frozen: no error-control fight with the jump;
- after each accepted step, compares the signs of the ``s_k`` at its end with ``P``; if
  one changed, locates the *earliest* zero on the step's dense output (Illinois
  regula falsi, on the changed functions only), ends the step there, and decides what
  the flow does on the surface (below);
- where the fields on both sides of a surface point into it (a *sliding mode*), moves on
  the surface with Filippov's convex combination of the one-sided fields that is tangent
  to it, and leaves it when that combination stops being convex;
- once the explicit steps are limited by stability (near a minimum), switches to
  exponential steps (:class:`~gflow_jax.dynamics.tail.ExponentialTail`) with the Hessian
  of ``L_P``, with the same event handling (a second phase, ``tail="auto"``).

**The flow on a surface.** Let ``A`` be the set of surfaces the state lies on,
``J`` the matrix of rows ``∇s_k`` (``k ∈ A``) and ``g₀ = ∇L_P`` with ``P_k = 0`` on ``A``.
Since ``L_P`` is continuous across ``s_k = 0``, the one-sided gradients differ by a
multiple of the normal: switching unit ``k`` on adds ``μ_k ∇s_k``. For shallow and deep
networks ``μ_k = δ_k = ∂L/∂h_k``, the back-propagated signal of hidden unit ``k``
(exactly); for an implicit network ``μ_k = δ_k / (1 − β_k)``, ``β_k = γ(A(I −
γDA)⁻¹)_kk``, the unit's feedback on itself through the equilibrium, and the jumps of
units of one point are not additive (each slot is then tested on its own one-sided
fields, :meth:`_Kinks.info`). Filippov's set on the intersection is ``{g₀ + Σ_k α_k μ_k ∇s_k :
α ∈ [0, 1]^A}`` (for one surface, or additive jumps), and its element tangent to every
surface is

``θ̇ = −(I − Jᵀ(JJᵀ)⁻¹J) g₀``  with  ``α_k μ_k = −((JJᵀ)⁻¹ J g₀)_k``:

the orthogonal projection of the field onto the surfaces' tangent space (the
minimum-norm element of the Clarke subdifferential: the flow is the steepest-descent
curve of ``L``, and ``dL/dt = −‖θ̇‖²`` holds on the surface too). It is a sliding mode
while every ``α_k ∈ [0, 1]`` with ``μ_k > 0`` (both sides attract); when some ``α_k``
leaves ``[0, 1]`` (located like a crossing), unit ``k`` leaves the surface to the side
its field points to (``α_k > 1``: on, ``α_k < 0``: off). Drift off the surfaces is
removed by a Newton projection after every step. At a crossing the same test decides
between *crossing* (the entry of ``P`` flips) and *sliding* (``k`` joins ``A``); with
several surfaces at once the worst violator is released first (an active-set loop).

**Conventions.** :class:`gflow_jax.GradientFlow` integrates ``−G(θ)`` with the
generalised gradient ``G`` of Jentzen & Riekert (``relu'(0) = 0``). Off the surfaces and
through transversal crossings both flows are the same solution (``G`` differs from
``∇L_P`` only on the crossing instants, a null set). On a sliding surface ``G`` is the
one-sided field of the *inactive* side (``α = 0``), one vertex of Filippov's set, which
points off the surface: no classical solution of ``θ̇ = −G(θ)`` stays there, and a
step-size-controlled solver chatters across it (its numerical solution tends to the
Filippov one as the tolerance goes to 0, at a cost of many rejected steps). This
dynamics integrates the Filippov solution directly. See ``docs/kinks.md``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._checks import positive_float, positive_int
from .._defaults import defaults
from .._linalg import solve_without_pivoting
from .._numerics import fixed_unit_vector
from ..models.base import is_well_posed
from ..models.deep import DeepMLP
from ..models.implicit import ImplicitReLU
from ..models.shallow import ShallowReLU
from ..outcomes import Outcome, SolverVerdict, Stop, classify
from ..risks._kinks import (
    has_pattern_forward,
    implicit_pattern_equilibrium,
    masked_outputs,
    pattern_forward,
    pattern_switching_functions,
)
from ..risks.empirical import EmpiricalRisk
from ..risks.population import PopulationRisk
from .base import AbstractDynamics, State, final_outcome, initial_state
from .flow import CHECK_STEPS, EXPLICIT, TAIL
from .problem import Problem
from .tail import ExponentialTail, checked_segment_length, stiffness_index
from .trajectory import Trajectory

_SAFETY, _FACTOR_MIN, _FACTOR_MAX = 0.9, 0.2, 10.0
_BETA1, _BETA2 = 0.7, 0.4  # PI controller exponents (times 1/(order + 1))
# an event is located once the state moves by at most this much across the bracket, in
# the step control's error norm (1 = the tolerance)
_EVENT_TOL = 1e-3


class KinkStats(eqx.Module):
    """What a :class:`PiecewiseGradientFlow` trajectory did at the kinks.

    **Fields:**

    - `num_crossings`: transversal crossings of switching surfaces (entries of the
      activation pattern flipped) plus releases from a sliding surface (each counts
      one, whichever side the flow leaves to).
    - `num_slides`: times a surface was entered in sliding mode.
    - `sliding_time`: time spent with at least one sliding surface.
    - `num_sliding`: surfaces the state slides on when it stops (``0``: none).
    - `pattern`: the activation pattern when it stops, ``(n, s)`` like
      ``model.switching_functions(x)`` (sliding surfaces count as inactive); the limit
      classification takes the Hessian of the risk with this pattern frozen
      (:func:`gflow_jax.limits.pattern_loss`).
    """

    num_crossings: Int[Array, "*batch"]
    num_slides: Int[Array, "*batch"]
    sliding_time: Float[Array, "*batch"]
    num_sliding: Int[Array, "*batch"]
    pattern: Bool[Array, "*batch n s"]


class PiecewiseInner(eqx.Module):
    """The :class:`PiecewiseGradientFlow` part of a :class:`State`.

    `pattern` is the frozen activation pattern (flattened ``(n·s,)``, row ``i`` = data
    point), `slots` the sliding surfaces (flat indices, ``-1`` = empty), `f0` the field
    at ``(t, θ)`` in the current mode (first same as last), `dt` the next step,
    `err_prev` the last accepted error norm (PI control), `save_index` the next save time,
    `stiff_vector` the power iteration's warm start for the stiffness test, `margins` the
    sliding surfaces' event functions at ``(t, θ)`` (``_Kinks.slot_margins``; ``inf`` for
    empty slots), `overflow` the surface crossed at the last event because every slot was
    taken (flat index, ``-1``: none).
    """

    pattern: Bool[Array, " m"]
    slots: Int[Array, " k"]
    f0: Float[Array, " p"]
    dt: Float[Array, ""]
    err_prev: Float[Array, ""]
    save_index: Int[Array, ""]
    num_crossings: Int[Array, ""]
    num_slides: Int[Array, ""]
    sliding_time: Float[Array, ""]
    stiff_vector: Float[Array, " p"]
    margins: Float[Array, " k"]
    overflow: Int[Array, ""]


def applies(model: PyTree, risk) -> bool:
    """Whether :class:`PiecewiseGradientFlow` can integrate `risk` at `model`.

    **Arguments:**

    - `model`: the model (arrays may be abstract).
    - `risk`: the risk callable.

    **Returns:**

    ``True`` for a weighted sum over points ``Σ_i ω_i ‖N_θ(x_i) − y_i‖²`` of a
    :class:`gflow_jax.ShallowReLU` or of a ReLU :class:`gflow_jax.DeepMLP` with a hidden
    layer: an :class:`gflow_jax.EmpiricalRisk`, or a quadrature
    :class:`gflow_jax.PopulationRisk` (its nodes are the points; a Python ``bool``).
    """
    return isinstance(risk, (EmpiricalRisk, PopulationRisk)) and has_pattern_forward(model)


def _weighted_squared_error(out, y, w) -> Float[Array, ""]:
    """``Σ_i ω_i ‖out_i − y_i‖²`` for outputs and targets ``(n, d_out)``, weights ``(n,)``."""
    r = out - y
    return jnp.sum(w * jnp.sum(r * r, axis=-1))


def _slot_mask(slots: Int[Array, " k"], m: int) -> Bool[Array, " m"]:
    """The flat indices held by `slots` (``-1`` = empty) as a mask of length `m`."""
    return jnp.zeros(m, bool).at[jnp.where(slots >= 0, slots, m)].set(True, mode="drop")


class _Kinks:
    """Trace-time helper: the switching functions and pattern-frozen fields of one problem,
    as functions of the flat parameter vector ``u``."""

    def __init__(self, problem: Problem, params: PyTree):
        model = problem.model(params)
        if not applies(model, problem.risk):
            raise TypeError(
                "PiecewiseGradientFlow integrates an EmpiricalRisk (or a quadrature "
                "PopulationRisk) of a ShallowReLU, a ReLU DeepMLP or an ImplicitReLU; got a "
                f"{type(problem.risk).__name__} of a {type(model).__name__}. Use "
                "gflow_jax.GradientFlow() for other problems."
            )
        self.problem = problem
        flat, self.unravel = ravel_pytree(params)
        self.dtype = flat.dtype
        risk = problem.risk
        self.x = risk.x.astype(self.dtype)
        self.y = risk.y.astype(self.dtype)
        self.w = risk.weights.astype(self.dtype)
        n, s = jax.eval_shape(model.switching_functions, self.x).shape
        self.shape, self.m = (n, s), n * s
        self.valid = jnp.broadcast_to((self.w > 0)[:, None], (n, s)).reshape(-1)
        # the jump of ∇L_P across s_k = 0 is δ_k ∇s_k exactly for shallow and deep
        # networks; for an implicit one each slot is tested on its vertices (see `info`)
        self.exact_jumps = isinstance(model, (ShallowReLU, DeepMLP))

    def model(self, u):
        return self.problem.model(self.unravel(u))

    def switch(self, u, mask) -> Float[Array, " m"]:
        """The switching functions at `u`, computed with the pattern `mask` frozen (equal
        to the model's own in the pattern's region; see
        :func:`~gflow_jax.risks._kinks.pattern_switching_functions`)."""
        mask = mask.reshape(self.shape)
        return pattern_switching_functions(self.model(u), self.x, mask).reshape(-1)

    def rounding(self, u, mask) -> Float[Array, " m"]:
        """How far rounding can move each ``s_k``: the change of ``s_k`` when every
        parameter moves by ``64 ε (|u_i| + U)``, ``U = ‖u‖_∞`` (relative rounding, plus
        the mixing of coordinates by a step's linear algebra). Bounded by the switching
        functions of the network with weights ``|u_i| + U`` and inputs ``|x|`` (shallow:
        ``64 ε ((|w_j| + U)·|x_i| + |b_j| + U)``; ReLU is the identity on non-negative
        inputs, so the deep bound is the same, layer by layer); for an implicit network
        ``64 ε (γ(|A| + U)|z| + (|W| + U)|x|)`` with the equilibrium ``z`` of `mask`."""
        eps = jnp.finfo(self.dtype).eps
        a = jnp.abs(u)
        big = jnp.max(a)
        xa = jnp.abs(self.x)
        model = self.model(u)
        if isinstance(model, ImplicitReLU):
            z, _ = implicit_pattern_equilibrium(model, self.x, mask.reshape(self.shape))
            size = self.model(a + big)
            inj = xa @ size.W.T
            bound = jnp.abs(z) @ (model.gamma * size.A).T + inj
            if model.input_map == "relu":
                bound = jnp.concatenate([bound, inj], axis=-1)
            return 64 * eps * bound.reshape(-1)
        return 64 * eps * self.model(a + big).switching_functions(xa).reshape(-1)

    def _masked_risk(self, u, mask, shift):
        out = masked_outputs(
            self.model(u), self.x, mask.reshape(self.shape), shift.reshape(self.shape)
        )
        return _weighted_squared_error(out, self.y, self.w)

    def grad(self, u, mask):
        """``(∇L_mask(u), δ)`` with ``δ = ∂L/∂h`` per hidden unit and point."""
        return jax.grad(self._masked_risk, argnums=(0, 2))(u, mask, jnp.zeros_like(mask))

    def mask(self, pattern, slots):
        idx = jnp.where(slots >= 0, slots, self.m)
        return pattern.astype(self.dtype).at[idx].set(0, mode="drop")

    def in_slots(self, slots):
        idx = jnp.where(slots >= 0, slots, self.m)
        return jnp.zeros(self.m, bool).at[idx].set(True, mode="drop")

    def _point_terms(self, u, row, i):
        """``(ω_i ‖N_P(x_i) − y_i‖², s_i)``: point `i`'s risk term and switching functions
        with its pattern row `row` frozen (one point's forward pass)."""
        out, s = pattern_forward(self.model(u), self.x[i][None], row[None])
        return _weighted_squared_error(out, self.y[i][None], self.w[i][None]), s[0]

    def rows(self, u, mask, slots):
        """The values ``s_k(u)`` (pattern `mask`) and the rows ``∇s_k`` of the slotted
        surfaces (zeros for empty slots). Each row is the gradient of one point's
        switching function, through that point's forward pass only."""
        n_sw = self.shape[1]
        mask = mask.reshape(self.shape)

        def row(slot):
            k = jnp.maximum(slot, 0)
            i, j = k // n_sw, k % n_sw
            value, grad = jax.value_and_grad(lambda u: self._point_terms(u, mask[i], i)[1][j])(u)
            valid = slot >= 0
            return jnp.where(valid, value, 0), jnp.where(valid, grad, 0)

        return jax.vmap(row)(slots)

    @staticmethod
    def gram(J, slots):
        return J @ J.T + jnp.diag((slots < 0).astype(J.dtype))

    def normal(self, J, slots, v):
        """``Jᵀ(JJᵀ)⁻¹J v``: the part of `v` normal to the slotted surfaces (rows `J`)."""
        return J.T @ solve_without_pivoting(self.gram(J, slots), J @ v)

    def info(self, u, pattern, slots):
        """``(num, d, θ̇)`` at `u`: per slot the Filippov weight ``α_k = num_k / d_k`` of its
        surface (consistent, i.e. the surface attracts from both sides, while ``d_k > 0``
        and ``0 ≤ num_k ≤ d_k``; zeros for empty slots), and the field projected onto all
        slotted surfaces (``f₀ = −∇L_P`` with the slotted units off).

        Shallow and deep networks (additive jumps ``μ_k ∇s_k``, ``μ_k = δ_k`` the unit's
        signal): ``num = (JJᵀ)⁻¹J f₀ = α μ`` and ``d = δ``. Implicit networks: unit ``k``
        feeds back on itself and on the other units of its point through the equilibrium
        (the jump is ``δ_k/(1 − β_k) ∇s_k``, and switching it changes the others' jumps
        and normals), so each slot is tested on its own vertices: with the *other* slots
        sliding, ``ṡ_k`` of the projected field with unit ``k`` off (``num``) and on
        (``num − d``), each side with its own normals. ``α = num/d`` is then the weight
        of the convex combination of the two that is tangent to the surface."""
        mask = self.mask(pattern, slots)
        g, delta = self.grad(u, mask)
        f = -g
        _, J = self.rows(u, mask, slots)
        num = solve_without_pivoting(self.gram(J, slots), J @ f)
        field = f - J.T @ num
        if self.exact_jumps:
            return num, jnp.where(slots >= 0, delta[jnp.maximum(slots, 0)], 0), field

        n_sw = self.shape[1]
        rows = mask.reshape(self.shape)

        def vertices(index):
            # switching unit k = (i, j) on changes point i's terms only: its risk term and
            # the rows of the other slots on point i (one forward pass of point i, one
            # backward pass per cotangent)
            slot = slots[index]
            k = jnp.maximum(slot, 0)
            i, j = k // n_sw, k % n_sw
            valid = slot >= 0
            others = slots.at[index].set(-1)
            on_row = rows[i].at[j].set(jnp.where(valid, 1, rows[i, j]))
            g_off = jax.grad(lambda u: self._point_terms(u, rows[i], i)[0])(u)
            (risk_on, s_on), pull = jax.vjp(lambda u: self._point_terms(u, on_row, i), u)
            g_on = pull((jnp.ones_like(risk_on), jnp.zeros_like(s_on)))[0]
            same = (others >= 0) & (others // n_sw == i)
            picks = (jnp.arange(n_sw)[None, :] == (others % n_sw)[:, None]) & same[:, None]
            J_same = jax.vmap(lambda c: pull((jnp.zeros_like(risk_on), c))[0])(
                picks.astype(self.dtype)
            )
            J_on = jnp.where(same[:, None], J_same, J).at[index].set(0)
            J_off = J.at[index].set(0)
            f_on = f + g_off - g_on
            n = J[index]
            rate_off = n @ (f - self.normal(J_off, others, f))
            rate_on = n @ (f_on - self.normal(J_on, others, f_on))
            return jnp.where(valid, rate_off, 0), jnp.where(valid, rate_off - rate_on, 0)

        num, d = jax.vmap(vertices)(jnp.arange(slots.shape[0]))
        return num, d, field

    def field(self, u, pattern, slots):
        """The field of the current mode: ``−∇L_P``, projected onto the sliding surfaces."""
        mask = self.mask(pattern, slots)
        f = -self.grad(u, mask)[0]

        def project(f):
            return f - self.normal(self.rows(u, mask, slots)[1], slots, f)

        return jax.lax.cond(eqxi.unvmap_any(jnp.any(slots >= 0)), project, lambda f: f, f)

    def tail_field(self, u, pattern, slots, anchor):
        """The field of the current mode at ``a + Π(u − a)``, ``a`` = `anchor` (a point on
        the sliding surfaces) and ``Π`` the projection onto their tangent space at ``a``.

        Along a solution on the surfaces this is :meth:`field` (exactly, for the flat
        surfaces of a shallow network); its Jacobian at ``a`` is ``−Π ∇²L_P Π``, symmetric,
        which :class:`~gflow_jax.dynamics.tail.ExponentialTail` needs (the Jacobian of
        :meth:`field` itself, ``−Π ∇²L_P``, is not). Without slots it is :meth:`field`."""

        def tangent(u):
            _, J = self.rows(anchor, self.mask(pattern, slots), slots)
            d = u - anchor
            return anchor + d - self.normal(J, slots, d)

        u = jax.lax.cond(eqxi.unvmap_any(jnp.any(slots >= 0)), tangent, lambda u: u, u)
        return self.field(u, pattern, slots)

    def surface_events(self, u, pattern, slots):
        """``±s_k`` (sign of ``P_k``) for the surfaces not slid on (``inf`` for slotted
        surfaces and weight-0 points): ``≥ 0`` while no surface is crossed."""
        s = self.switch(u, self.mask(pattern, slots))
        free = self.valid & ~self.in_slots(slots)
        return jnp.where(free, jnp.where(pattern, s, -s), jnp.inf)

    def slot_margins(self, u, pattern, slots):
        """``min(num_k, d_k − num_k)`` (:meth:`info`; ``min(α_k, 1 − α_k)·d_k``) per slot,
        ``inf`` for empty slots: ``≥ 0`` while every sliding surface stays consistent."""

        def margins(u):
            num, d, _ = self.info(u, pattern, slots)
            return jnp.where(slots >= 0, jnp.minimum(num, d - num), jnp.inf)

        inf = jnp.full(slots.shape, jnp.inf, self.dtype)
        return jax.lax.cond(eqxi.unvmap_any(jnp.any(slots >= 0)), margins, lambda u: inf, u)

    def events(self, u, pattern, slots):
        """Event functions, ``≥ 0`` while the mode holds: :meth:`surface_events`, then
        :meth:`slot_margins`."""
        return jnp.concatenate(
            [self.surface_events(u, pattern, slots), self.slot_margins(u, pattern, slots)]
        )

    def project(self, u, pattern, slots, iterations: int = 2):
        """Newton projection of `u` onto ``{s_k = 0, k ∈ slots}`` (identity without slots;
        switching functions of `pattern` with the slotted units off)."""

        def newton(u):
            mask = self.mask(pattern, slots)
            for _ in range(iterations):
                r, J = self.rows(u, mask, slots)
                u = u - J.T @ solve_without_pivoting(self.gram(J, slots), r)
            return u

        return jax.lax.cond(eqxi.unvmap_any(jnp.any(slots >= 0)), newton, lambda u: u, u)

    def resolve(self, u, pattern, slots):
        """Active-set decision on the slotted surfaces: keep those whose Filippov weights
        are consistent (``0 ≤ α_k ≤ 1``, ``d_k > 0``: the surface attracts from both
        sides, :meth:`info`), release the worst violator to the side its field points to,
        repeat. Returns ``(pattern, slots, margins)``, the margins being
        :meth:`slot_margins` of the decided mode at `u` (from the last test)."""
        k_max = slots.shape[0]
        inf = jnp.full(slots.shape, jnp.inf, self.dtype)

        def cond(c):
            _, slots, _, done, it = c
            return ~done & jnp.any(slots >= 0) & (it <= k_max)

        def body(c):
            pattern, slots, _, _, it = c
            num, d, _ = self.info(u, pattern, slots)
            margins = jnp.where(slots >= 0, jnp.minimum(num, d - num), jnp.inf)
            worst = jnp.argmin(margins)
            bad = margins[worst] < 0
            k = jnp.maximum(slots[worst], 0)
            side = num[worst] > jnp.maximum(d[worst], 0)
            pattern = jnp.where(bad, pattern.at[k].set(side), pattern)
            slots = jnp.where(bad, slots.at[worst].set(-1), slots)
            return pattern, slots, jnp.where(bad, inf, margins), ~bad, it + 1

        init = (pattern, slots, inf, jnp.asarray(False), jnp.asarray(0))
        pattern, slots, margins, _, _ = jax.lax.while_loop(cond, body, init)
        return pattern, slots, margins


def _merge_slots(slots, new_mask, m: int):
    """Put the flat indices where `new_mask` holds into free slots (in index order).

    Returns ``(slots, overflow)``: the new slots and a mask of the entries of
    `new_mask` that found no free slot.
    """
    k = slots.shape[0]
    new = jnp.nonzero(new_mask, size=k, fill_value=-1)[0]
    both = jnp.concatenate([slots, new])
    order = jnp.argsort(both < 0, stable=True)
    kept = both[order][:k]
    idx = jnp.where(kept >= 0, kept, m)
    placed = jnp.zeros(m, bool).at[idx].set(True, mode="drop")
    return kept, new_mask & ~placed


class PiecewiseGradientFlow(AbstractDynamics):
    """The gradient flow of an empirical ReLU risk, kinks as events, sliding as such.

    Integrates the Filippov solution of ``dθ/dt = −∇L(θ)`` for an
    :class:`gflow_jax.EmpiricalRisk` (or a quadrature :class:`gflow_jax.PopulationRisk`,
    whose nodes are the points) of a :class:`gflow_jax.ShallowReLU` or a ReLU
    :class:`gflow_jax.DeepMLP`: explicit Runge–Kutta steps with the activation pattern
    frozen, switching-surface crossings located on the dense output (the step ends
    there), sliding modes integrated on the surface (projected field) until their
    Filippov weight leaves ``[0, 1]``. Off sliding modes it is the flow of
    :class:`gflow_jax.GradientFlow` (same solution, without the rejected-step storm);
    on them it is the Filippov sliding motion, which the generalised gradient
    (``relu'(0) = 0``) of :class:`gflow_jax.GradientFlow` only approximates by
    chattering. See the module docstring and ``docs/kinks.md``.

    Along the solution ``L(θ_t) = L(θ_0) − ∫_0^t ‖θ̇_s‖² ds`` (through crossings and
    sliding). ``Trajectory.kinks`` (:class:`KinkStats`) reports crossings and sliding.

    **Stiff tails.** Near a minimum ``−∇L_P`` is nearly linear with Jacobian ``−∇²L_P``,
    and the explicit steps are limited by stability (``h λ_max ≲ 3.3`` for Tsit5), not
    accuracy. With ``tail="auto"`` (default) a member checks, after every
    `stiffness_check_steps` of its own steps, the stiffness index ``h·λ_max`` of the
    current mode's field (``h`` the next step, :func:`gflow_jax.dynamics.tail.stiffness_index`)
    and, once it is ``≥ stiffness_threshold``, switches for good to a second phase that
    takes :class:`gflow_jax.ExponentialTail` steps (exprb43: the exact flow of the field
    linearised with the dense Hessian of ``L_P``, plus an order-4 correction) of the
    *same* piecewise system: the pattern stays frozen within a step, the event
    functions are checked at its end and the earliest event is located on the
    exponential step's dense output (the step ends there, the mode is decided as
    above, and the next step uses the Hessian of the new pattern), so no step jumps
    across a kink. Sliding members stay in the tail: its steps integrate the field at
    ``a + Π(u − a)`` (``a`` the step's start on the surfaces, ``Π`` the projection onto
    their tangent space there), whose Jacobian ``−Π ∇²L_P Π`` is symmetric; the Newton
    projection follows every step. ``tail="explicit"`` never switches.

    **Arguments:**

    - `solver`: an explicit adaptive Runge–Kutta solver of Diffrax with a dense output
      (default ``diffrax.Tsit5()``).
    - `rtol`, `atol`: error tolerances of the step (default by dtype: ``1e-7, 1e-10``
      in float64, ``1e-5, 1e-7`` in float32, as :class:`gflow_jax.GradientFlow`).
    - `stop`: :class:`gflow_jax.Stop` rules, checked after every accepted step (with the
      mode's field: on a sliding surface ``‖θ̇‖`` is the Filippov minimum-norm gradient).
    - `dt0`: the first step (default: ``0.01‖θ‖/‖θ̇‖`` in the error norm).
    - `max_steps`: step budget per trajectory (accepted and rejected steps).
    - `max_sliding`: how many surfaces a state may slide on at once (static, default 8;
      the cost of a sliding step grows with it). A surface met with every slot taken is
      crossed; met again at the next event (it attracts from both sides, so the state
      would chatter across it), the member stops as ``SOLVER_FAILED`` with verdict
      ``SolverVerdict.MAX_SLIDING``: raise `max_sliding`. Measured on the implicit-width
      study (``N = 8`` points): ``m = 8`` needs 5 at once, ``m = 32`` needs 11.
    - `event_iterations`: the most regula-falsi iterations locating one event.
    - `tail`: ``"auto"`` (exponential stiff-tail phase) or ``"explicit"`` (none).
    - `stiffness_threshold`: the switching threshold on ``h·λ_max`` (default 2).
    - `stiffness_check_steps`: the stiffness test runs after every
      `stiffness_check_steps` steps *of the member* (so the switch never depends on the
      ensemble's pools or segments).
    """

    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    rtol: float | None = None
    atol: float | None = None
    stop: Stop = Stop()
    dt0: float | None = eqx.field(static=True, default=None)
    max_steps: int = eqx.field(static=True, default=2**20)
    max_sliding: int = eqx.field(static=True, default=8)
    event_iterations: int = eqx.field(static=True, default=60)
    tail: Literal["auto", "explicit"] = eqx.field(static=True, default="auto")
    stiffness_threshold: float = 2.0
    stiffness_check_steps: int = eqx.field(static=True, default=CHECK_STEPS)
    num_phases: ClassVar[int] = 2

    def __check_init__(self):
        if not isinstance(self.solver, diffrax.AbstractERK):
            raise TypeError(
                "solver must be an explicit Runge-Kutta solver of Diffrax with an error "
                f"estimate (e.g. diffrax.Tsit5()), got {type(self.solver).__name__}."
            )
        if not isinstance(self.stop, Stop):
            raise TypeError(f"stop must be a gflow_jax.Stop, got {type(self.stop).__name__}.")
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, jax.Array):
                positive_float(name, value)
        if self.dt0 is not None:
            positive_float("dt0", self.dt0)
        positive_int("max_steps", self.max_steps)
        positive_int("max_sliding", self.max_sliding)
        positive_int("event_iterations", self.event_iterations)
        if self.tail not in ("auto", "explicit"):
            raise ValueError(f"tail must be 'auto' or 'explicit', got {self.tail!r}.")
        if not isinstance(self.stiffness_threshold, jax.Array):
            positive_float("stiffness_threshold", self.stiffness_threshold)
        positive_int("stiffness_check_steps", self.stiffness_check_steps)

    def resolve(self, dtype) -> PiecewiseGradientFlow:
        """A copy with the tolerances and the stiffness threshold as arrays of `dtype`
        (values: new ones reuse the compiled programs) and resolved `stop` rules.

        **Arguments:**

        - `dtype`: the floating dtype of the trainable arrays.

        **Returns:**

        The resolved :class:`PiecewiseGradientFlow`.
        """
        table = defaults(dtype)
        rtol = table.rtol if self.rtol is None else self.rtol
        atol = table.atol if self.atol is None else self.atol
        return eqx.tree_at(
            lambda d: (d.rtol, d.atol, d.stop, d.stiffness_threshold),
            self,
            (
                jnp.asarray(rtol, dtype),
                jnp.asarray(atol, dtype),
                self.stop.resolve(dtype),
                jnp.asarray(self.stiffness_threshold, dtype),
            ),
            is_leaf=lambda x: x is None,
        )

    @property
    def changes_phase(self) -> bool:
        """``True`` unless ``tail="explicit"`` (a member then stays in phase 0)."""
        return self.tail_solver is not None

    @property
    def tail_solver(self) -> ExponentialTail | None:
        """The tail phase's solver, or ``None`` for ``tail="explicit"``."""
        return None if self.tail == "explicit" else ExponentialTail()

    def segment_length(self, steps: int) -> int:
        """`steps` rounded up to a multiple of `stiffness_check_steps` (with a tail phase).

        Members are checked at their own multiples of `stiffness_check_steps`, so such
        segments keep a pool's members in step between checks. Results never depend on it.

        **Arguments:**

        - `steps`: the requested number of steps per segment.

        **Returns:**

        `steps` unchanged for ``tail="explicit"``, else the smallest multiple of
        `stiffness_check_steps` that is ``≥ steps``.
        """
        tail = self.tail_solver is not None
        return checked_segment_length(steps, self.stiffness_check_steps if tail else None)

    def save_times(self, save_ts: np.ndarray) -> np.ndarray:
        """The save times, unchanged (dense output interpolates between steps).

        **Arguments:**

        - `save_ts`: the requested increasing save times.

        **Returns:**

        `save_ts` itself.
        """
        return save_ts

    # -- helpers ---------------------------------------------------------------------
    def _save(self, problem, kinks, state_saved, path, index, upto, value_at):
        """Fill save times ``ts[index:] ≤ upto`` with ``value_at(t)``; returns the new buffers."""
        ts = problem.save_ts
        n = ts.shape[0]

        def cond(c):
            i = c[0]
            return (i < n) & (ts[jnp.minimum(i, n - 1)] <= upto)

        def body(c):
            i, saved, path = c
            u = value_at(ts[i])
            report = problem.diagnose(kinks.unravel(u), self.stop)
            vals = (report.risk, report.grad_norm, report.param_norm)
            saved = tuple(b.at[i].set(v) for b, v in zip(saved, vals, strict=True))
            if path is not None:
                path = jtu.tree_map(lambda b, v: b.at[i].set(v), path, kinks.unravel(u))
            return i + 1, saved, path

        return jax.lax.while_loop(cond, body, (index, state_saved, path))

    def _code(self, kinks, u, f):
        model = kinks.model(u)
        risk = kinks.problem.risk(model)
        return classify(risk, jnp.sum(f * f), jnp.linalg.norm(u), is_well_posed(model), self.stop)

    def init(self, problem: Problem, params: PyTree) -> State:
        """The :class:`State` at ``t = 0``.

        The pattern is ``P_k = 1{s_k(θ₀) > 0}``; points with ``s_k(θ₀) = 0`` exactly are
        resolved like a crossing (slide or take a side). Save times ``≤ 0`` are filled.

        **Arguments:**

        - `problem`: the :class:`Problem` (an empirical ReLU risk, see :func:`applies`).
        - `params`: θ₀.

        **Returns:**

        The initial :class:`State` with a :class:`PiecewiseInner`.
        """
        kinks = _Kinks(problem, params)
        u0, _ = ravel_pytree(params)
        s = kinks.model(u0).switching_functions(kinks.x).reshape(-1)
        pattern = s > 0
        empty = jnp.full((self.max_sliding,), -1, jnp.int32)
        slots, _ = _merge_slots(empty, kinks.valid & (s == 0), kinks.m)
        pattern, slots, margins = kinks.resolve(u0, pattern, slots)
        f0 = kinks.field(u0, pattern, slots)
        state = initial_state(problem, params, None)
        index, saved, path = self._save(
            problem, kinks, state.saved, state.path, jnp.asarray(0), state.t, lambda t: u0
        )
        if self.dt0 is None:
            scale = self.atol + self.rtol * jnp.abs(u0)
            d0 = jnp.sqrt(jnp.mean((u0 / scale) ** 2))
            d1 = jnp.sqrt(jnp.mean((f0 / scale) ** 2))
            dt = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
        else:
            dt = jnp.asarray(self.dt0)
        zero = jnp.zeros((), jnp.int32)
        inner = PiecewiseInner(
            pattern=pattern,
            slots=slots,
            f0=f0,
            dt=dt.astype(kinks.dtype),
            err_prev=jnp.ones((), kinks.dtype),
            save_index=index,
            num_crossings=zero,
            num_slides=jnp.sum(slots >= 0).astype(jnp.int32),
            sliding_time=jnp.zeros((), kinks.dtype),
            stiff_vector=fixed_unit_vector(u0.size, kinks.dtype),
            margins=margins,
            overflow=jnp.asarray(-1, jnp.int32),
        )
        code = self._code(kinks, u0, f0)
        return eqx.tree_at(
            lambda st: (st.saved, st.path, st.inner, st.finished),
            state,
            (saved, path, inner, code != Outcome.UNFINISHED),
            is_leaf=lambda x: x is None,
        )

    def _locate(self, kinks, pattern, slots, interp, t0, t1, u0, u1, e0, e1, thr, active):
        """The earliest event in ``(t0, t1]``: Illinois regula falsi on the event function
        with the earliest linearly-interpolated zero among those violated at the bracket's
        right end, re-targeted whenever another one is violated first, until the state
        moves by at most ``_EVENT_TOL`` (in the error norm of the step control, where 1
        is the tolerance) across the bracket, or the bracket is 4 ulps wide. The sliding
        margins are re-evaluated inside the bracket only if one of them is violated at
        its right end (they cost a Filippov-weight test per slot). Returns
        ``(t_event, violated)``: the right end of the final bracket (every violated
        function has crossed there) and the mask of the violated functions."""
        dtype = kinks.dtype
        eps = jnp.finfo(dtype).eps
        m = kinks.m
        # the sliding margins (a Filippov-weight test per slot, the costly part of the
        # event functions) are evaluated inside the bracket only where one of them is
        # violated at its right end
        margins_violated = active & jnp.any(e1[m:] - thr[m:] < 0)
        inf = jnp.full(slots.shape, jnp.inf, dtype)

        def evaluate(u):
            margins = jax.lax.cond(
                eqxi.unvmap_any(margins_violated),
                lambda u: kinks.slot_margins(u, pattern, slots),
                lambda u: inf,
                u,
            )
            margins = jnp.where(margins_violated, margins, inf)
            return jnp.concatenate([kinks.surface_events(u, pattern, slots), margins])

        def pick(ea, eb):
            fa, fb = ea - thr, eb - thr
            frac = jnp.where(fb < 0, fa / (fa - fb), jnp.inf)
            return jnp.argmin(frac)

        def cond(c):
            a, b, ea, eb, c_idx, last, sa, sb, it, ua, ub = c
            wide = b - a > 4 * eps * jnp.maximum(jnp.abs(b), jnp.finfo(dtype).tiny)
            scale = self.atol + self.rtol * jnp.maximum(jnp.abs(ua), jnp.abs(ub))
            moves = jnp.sqrt(jnp.mean(((ub - ua) / scale) ** 2)) > _EVENT_TOL
            return active & wide & moves & (it < self.event_iterations)

        def body(c):
            a, b, ea, eb, c_idx, last, sa, sb, it, ua, ub = c
            fa = (ea[c_idx] - thr[c_idx]) * sa
            fb = (eb[c_idx] - thr[c_idx]) * sb
            tau = (a * fb - b * fa) / (fb - fa)
            bad = ~((tau > a) & (tau < b)) | ~jnp.isfinite(tau)
            tau = jnp.where(bad, 0.5 * (a + b), tau)
            u = interp.evaluate(tau)
            e = evaluate(u)
            hit = jnp.any(e - thr < 0)
            new_c = jnp.where(hit, pick(ea, e), c_idx)
            same = new_c == c_idx
            # Illinois: halve the retained end's value when the same end is replaced twice
            sa = jnp.where(
                hit, jnp.where(same & (last == 1), 0.5 * sa, jnp.where(same, sa, 1.0)), 1.0
            )
            sb = jnp.where(hit, 1.0, jnp.where(last == -1, 0.5 * sb, sb))
            a, ea = jnp.where(hit, a, tau), jnp.where(hit, ea, e)
            b, eb = jnp.where(hit, tau, b), jnp.where(hit, e, eb)
            ua, ub = jnp.where(hit, ua, u), jnp.where(hit, u, ub)
            return a, b, ea, eb, new_c, jnp.where(hit, 1, -1), sa, sb, it + 1, ua, ub

        one = jnp.ones((), dtype)
        c = (t0, t1, e0, e1, pick(e0, e1), jnp.asarray(0), one, one, jnp.asarray(0), u0, u1)
        _, b, _, eb, _, _, _, _, _, _, _ = jax.lax.while_loop(cond, body, c)
        return b, eb - thr < 0

    def advance(self, problem: Problem, state: State, max_steps: int, phase: int) -> State:
        """Take at most `max_steps` steps (accepted or rejected) from `state` in `phase`.

        Each step: a step of the current mode's field with error control (phase 0: the
        Runge–Kutta `solver`; phase 1: :class:`gflow_jax.ExponentialTail` with the
        Hessian of the frozen pattern's risk); if accepted, the event functions (signs
        of the free switching functions, the Filippov weights of the sliding ones) are
        checked at its end, the earliest event is located on the step's dense output
        and the step ends there, the mode is decided anew (cross, slide, or leave a
        sliding surface), sliding states are projected back onto their surfaces, save
        times inside the step are filled from the dense output, and the stop rules are
        checked. In phase 0 with a tail, after every `stiffness_check_steps` of the
        member's steps the stiffness index ``h·λ_max`` is estimated; once it is
        ``≥ stiffness_threshold`` the member switches to phase 1 (``t_tail`` is set) and
        this call ends for it. Finished members are returned unchanged.

        **Arguments:**

        - `problem`: the :class:`Problem` being solved.
        - `state`: the member's :class:`State`.
        - `max_steps`: the most steps in this call (static ``int``).
        - `phase`: ``0`` (explicit `solver`) or ``1`` (exponential tail; static ``int``).

        **Returns:**

        The advanced :class:`State`. Raises ``ValueError`` for ``phase=1`` with
        ``tail="explicit"``.
        """
        tail = self.tail_solver
        if phase == TAIL and tail is None:
            raise ValueError("this PiecewiseGradientFlow has no tail phase (tail='explicit').")
        kinks = _Kinks(problem, state.y)
        dtype = kinks.dtype
        eps = jnp.finfo(dtype).eps
        t1 = problem.t1
        if phase == TAIL:
            solver = tail
            term = diffrax.ODETerm(lambda t, u, args: kinks.tail_field(u, *args))
        else:
            solver = self.solver
            term = diffrax.ODETerm(lambda t, u, args: kinks.field(u, *args))
        check = phase == EXPLICIT and tail is not None
        order = solver.order(term)
        end = jnp.minimum(state.num_steps + max_steps, self.max_steps)
        u_start, _ = ravel_pytree(state.y)

        def step(c):
            st, u = c
            inner = st.inner
            t, pattern, slots = st.t, inner.pattern, inner.slots
            last = inner.dt >= t1 - t
            t_end = jnp.where(last, t1, t + inner.dt)
            h = t_end - t
            if phase == TAIL:  # linearised on the surfaces' tangent space at u
                u1, err, dense, _, _ = solver.step(
                    term, t, t_end, u, (pattern, slots, u), None, jnp.asarray(False)
                )
                f1 = None  # the field at u1 is not a stage of the exponential step
            else:
                u1, err, dense, (_, f1), _ = solver.step(
                    term,
                    t,
                    t_end,
                    u,
                    (pattern, slots),
                    (jnp.asarray(False), inner.f0),
                    jnp.asarray(False),
                )
            scale = self.atol + self.rtol * jnp.maximum(jnp.abs(u), jnp.abs(u1))
            errn = jnp.sqrt(jnp.mean((err / scale) ** 2))
            accept = jnp.isfinite(errn) & (errn <= 1)
            # PI step-size control (I on rejection)
            safe = jnp.maximum(errn, 1e-10)
            k = 1.0 / (order + 1)
            fac_acc = _SAFETY * safe ** (-_BETA1 * k) * inner.err_prev ** (_BETA2 * k)
            fac_rej = jnp.where(jnp.isfinite(errn), _SAFETY * safe ** (-k), _FACTOR_MIN)
            factor = jnp.clip(jnp.where(accept, fac_acc, fac_rej), _FACTOR_MIN, _FACTOR_MAX)
            interp = solver.interpolation_cls(t0=t, t1=t_end, **dense)

            # events
            # the sliding surfaces' margins at the step's start were computed when its mode
            # was decided (or at the end of the previous step): only the s_k are new
            e0 = jnp.concatenate([kinks.surface_events(u, pattern, slots), inner.margins])
            e1 = kinks.events(u1, pattern, slots)
            # an event is a sign change beyond rounding: a state on a surface it does not
            # slide on (a dead unit, ``s_k = 0`` with a tangent field) must not "cross" it
            # by the rounding of a step (the exponential step mixes coordinates at ~ε)
            tol = jnp.concatenate(
                [kinks.rounding(u, kinks.mask(pattern, slots)), jnp.zeros(slots.shape, dtype)]
            )
            thr = jnp.minimum(e0, 0) - tol
            event = accept & jnp.any(e1 - thr < 0)
            t_ev, hit = self._locate(
                kinks,
                pattern,
                slots,
                interp,
                t,
                t_end,
                u,
                u1,
                e0,
                jnp.where(event, e1, e0),
                thr,
                event,
            )
            t_new = jnp.where(event, t_ev, t_end)
            u_new = jnp.where(event, interp.evaluate(t_ev), u1)

            # decide the new mode at an event
            crossing = hit[: kinks.m] & event
            new_slots, overflow = _merge_slots(slots, crossing, kinks.m)
            flipped = jnp.where(overflow, ~pattern, pattern)
            # a surface met with every slot taken is crossed; met again at the next event
            # (for want of a slot again), the flow chatters across it: a failure
            # (MAX_SLIDING), not a spent budget
            chatter = event & (inner.overflow >= 0) & overflow[jnp.maximum(inner.overflow, 0)]
            overflow_index = jnp.where(jnp.any(overflow), jnp.argmax(overflow), -1).astype(
                jnp.int32
            )

            def decide(u):  # without an event the mode holds (every margin is >= thr)
                return kinks.resolve(u, flipped, new_slots)

            def hold(u):
                return pattern, slots, e1[kinks.m :]

            decided = jax.lax.cond(eqxi.unvmap_any(event), decide, hold, u_new)
            new_pattern, new_slots, margins = jtu.tree_map(
                lambda a, b: jnp.where(event, a, b), decided, hold(u_new)
            )
            # A surface that was crossed but that the (first-order) decision sends back to
            # its old side is grazed: the flow did cross it, so cross (no zero-length
            # event loop; a true return is then the next step's crossing).
            stuck = crossing & ~kinks.in_slots(new_slots) & (new_pattern == pattern)
            new_pattern = jnp.where(stuck, ~pattern, new_pattern)
            sliding = jnp.any(new_slots >= 0)
            u_new = kinks.project(u_new, new_pattern, jnp.where(event | sliding, new_slots, -1))

            def refresh(u):
                return kinks.field(u, new_pattern, new_slots)

            if f1 is None:
                f_new = refresh(u_new)
            else:
                f_new = jax.lax.cond(eqxi.unvmap_any(event | sliding), refresh, lambda u: f1, u_new)
                f_new = jnp.where(event | sliding, f_new, f1)
            old_in, new_in = kinks.in_slots(slots), kinks.in_slots(new_slots)
            # transversal crossings and releases from a sliding surface
            flips = jnp.sum((new_pattern != pattern) & ~new_in & ~old_in & kinks.valid)
            flips = flips + jnp.sum(old_in & ~new_in)
            entered = jnp.sum(new_in & ~old_in)
            slid = jnp.any(slots >= 0)

            # save times inside the step, then the stop rules
            index, saved, path = self._save(
                problem,
                kinks,
                st.saved,
                st.path,
                inner.save_index,
                jnp.where(accept, t_new, -jnp.inf),
                lambda ti: interp.evaluate(jnp.clip(ti, t, t_end)),
            )
            code = self._code(kinks, u_new, f_new)
            stopped = accept & (code != Outcome.UNFINISHED)
            reached = accept & (t_new >= t1)
            too_small = ~accept & (h <= 16 * eps * jnp.maximum(jnp.abs(t), 1.0))
            num_steps = st.num_steps + 1
            spent = num_steps >= self.max_steps
            finished = stopped | reached | too_small | spent | chatter
            verdict = jnp.select(
                [too_small, chatter & ~stopped, spent & ~stopped & ~reached],
                [
                    jnp.int8(SolverVerdict.DT_MIN),
                    jnp.int8(SolverVerdict.MAX_SLIDING),
                    jnp.int8(SolverVerdict.MAX_STEPS),
                ],
                st.verdict,
            )
            new_inner = PiecewiseInner(
                pattern=jnp.where(accept, new_pattern, pattern),
                slots=jnp.where(accept, new_slots, slots),
                f0=jnp.where(accept, f_new, inner.f0),
                dt=h * factor,
                err_prev=jnp.where(accept, jnp.maximum(errn, 1e-4), inner.err_prev),
                save_index=index,
                num_crossings=inner.num_crossings + jnp.where(accept, flips, 0).astype(jnp.int32),
                num_slides=inner.num_slides + jnp.where(accept, entered, 0).astype(jnp.int32),
                sliding_time=inner.sliding_time + jnp.where(accept & slid, t_new - t, 0),
                stiff_vector=inner.stiff_vector,
                margins=jnp.where(accept, margins, inner.margins),
                overflow=jnp.where(accept & event, overflow_index, inner.overflow),
            )
            new = State(
                t=jnp.where(accept, t_new, t),
                y=st.y,
                num_steps=num_steps,
                num_rejected=st.num_rejected + (~accept).astype(jnp.int32),
                num_tail_steps=st.num_tail_steps + int(phase == TAIL),
                saved=saved,
                path=path,
                phase=st.phase,
                finished=finished,
                verdict=verdict,
                t_tail=st.t_tail,
                inner=new_inner,
            )
            u_new = jnp.where(accept, u_new, u)
            if check:
                new = self._maybe_switch(kinks, new, u_new)
            return new, u_new

        def cond(c):
            st, _ = c
            return ~st.finished & (st.num_steps < end) & (st.phase == phase)

        st, u = jax.lax.while_loop(cond, step, (state, u_start))
        st = eqx.tree_at(lambda s: s.y, st, kinks.unravel(u))
        return jtu.tree_map(lambda a, b: jnp.where(state.finished, a, b), state, st)

    def _maybe_switch(self, kinks: _Kinks, state: State, u: Float[Array, " p"]) -> State:
        """At the member's own check points (every `stiffness_check_steps` steps), switch a
        live member to the tail phase once ``h·λ_max ≥ stiffness_threshold``: ``h`` the
        next step, ``λ_max`` of the Jacobian of the current mode's field at `u`."""
        inner = state.inner
        due = ~state.finished & (state.num_steps % self.stiffness_check_steps == 0)

        def estimate(u):
            def field(v):
                return kinks.field(v, inner.pattern, inner.slots)

            return stiffness_index(field, u, inner.dt, inner.stiff_vector)

        def skip(u):
            return jnp.zeros((), kinks.dtype), inner.stiff_vector

        index, vector = jax.lax.cond(eqxi.unvmap_any(due), estimate, skip, u)
        switch = due & (index >= self.stiffness_threshold)
        new_inner = eqx.tree_at(
            lambda i: (i.err_prev, i.stiff_vector),
            inner,
            (
                jnp.where(switch, jnp.ones_like(inner.err_prev), inner.err_prev),
                jnp.where(due, vector, inner.stiff_vector),
            ),
        )
        return eqx.tree_at(
            lambda s: (s.phase, s.t_tail, s.inner),
            state,
            (
                jnp.where(switch, jnp.int8(TAIL), state.phase),
                jnp.where(switch, state.t, state.t_tail),
                new_inner,
            ),
        )

    def finish(self, problem: Problem, state: State, params0: PyTree) -> Trajectory:
        """:meth:`AbstractDynamics.finish`, with ``Trajectory.kinks`` (:class:`KinkStats`).

        The outcome is classified with the final mode's field, as the stop rules were: on
        a sliding surface ``‖θ̇‖`` is the Filippov velocity, so a member that stops
        sliding at a point where it vanishes is ``CRITICAL_POINT`` (the saved
        ``grad_norm`` and ``final_grad_norm`` stay ``‖G(θ)‖``, the generalised gradient).

        **Arguments:**

        - `problem`: the :class:`Problem` that was solved.
        - `state`: the finished :class:`State`.
        - `params0`: θ₀.

        **Returns:**

        The :class:`Trajectory`.
        """
        traj = super().finish(problem, state, params0)
        inner = state.inner
        # the outcome from the field of the final mode, as the stop rules saw it: on a
        # sliding surface the Filippov velocity, not the generalised gradient (one
        # one-sided field), decides CRITICAL_POINT
        kinks = _Kinks(problem, state.y)
        code = self._code(kinks, ravel_pytree(state.y)[0], inner.f0)
        traj = eqx.tree_at(lambda t: t.outcome, traj, final_outcome(state.verdict, code))
        stats = KinkStats(
            num_crossings=inner.num_crossings,
            num_slides=inner.num_slides,
            sliding_time=inner.sliding_time,
            num_sliding=jnp.sum(inner.slots >= 0).astype(jnp.int32),
            pattern=(inner.pattern & ~_slot_mask(inner.slots, inner.pattern.size)).reshape(
                problem.risk.x.shape[0], -1
            ),
        )
        return eqx.tree_at(lambda t: t.kinks, traj, stats, is_leaf=lambda x: x is None)
