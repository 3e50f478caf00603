"""Chatterjee's local PL ("ball") criterion, estimated on a concrete model.

Reference: S. Chatterjee, *Convergence of gradient descent for deep neural networks*,
arXiv:2203.16462 — the general local Polyak–Łojasiewicz criterion that opens the paper,
before its application to deep networks. In this module's notation:

For a non-negative ``C²`` loss ``f`` of the trainable parameters ``θ ∈ R^p`` and the
closed ball ``B = B(θ_0, r)`` (Euclidean norm over all trainable arrays),

- ``α(θ_0, r) = inf { ‖∇f(θ)‖² / f(θ) : θ ∈ B, f(θ) > 0 }``, the local PL constant
  (units 1/time: along the gradient flow ``d/dt log f = −‖∇f‖²/f``);
- ``β(θ_0, r) = sup { ‖∇²f(θ)‖_op : θ ∈ B }``, the local smoothness constant (1/time).

**Gradient flow.** If ``4 f(θ_0) < r² α`` the flow ``θ' = −∇f(θ)`` never leaves ``B``,
``f(θ_t) ≤ e^{−α t} f(θ_0)``, its path length is at most ``2 √(f(θ_0)/α) < r``, and it
converges to a zero of ``f`` in ``B``.

**Gradient descent** with a step ``η < 2/β``: with ``κ = 1 − ηβ/2``, if
``4 f(θ_0) < κ² r² α`` every iterate stays in ``B`` and ``f_k ≤ (1 − η α κ)^k f(θ_0)``.

**Everything here is an ESTIMATE.** ``α`` is an infimum and ``β`` a supremum over the
ball; a finite search sees only some points, so ``α̂ ≥ α`` and ``β̂ ≤ β``: both are
*optimistic*. A ``holds`` verdict means "no counter-example to the hypothesis was found",
not a proof. To make the search less optimistic, ``α̂`` combines
(:class:`~gflow_jax.certificates.search.SearchOptions` sets the sizes):

1. the centre ``θ_0``;
2. random points uniform in ``B``;
3. the points of an actual flow (``Trajectory.path``) that lie in ``B``;
4. a *flow probe*: projected gradient descent ``θ ← P_B(θ − η∇f(θ))`` from ``θ_0`` with
   ``η = probe_lr/β̂(θ_0)`` (a discretised gradient flow). This is the search that
   matters most: if the true flow leaves ``B``, its path length inside ``B`` is at least
   ``r`` while ``d/dt √f ≤ −(√ρ/2)‖θ'‖`` with ``ρ`` the smallest ratio on that path, so
   ``ρ ≤ 4 f(θ_0)/r²`` somewhere on the path inside ``B`` — a faithful probe that gets
   that far refutes the criterion. Random and adversarial points alone typically miss
   such regions (e.g. a plateau near a saddle that the flow reaches quickly);
5. an adversarial search: projected normalised gradient descent on
   ``log(‖∇f‖²/f)`` (i.e. ascent on ``f/‖∇f‖²``) inside ``B`` from ``θ_0``, the probe's
   best point and random points, keeping the best point met;

and ``β̂`` maximises a Lanczos (or power-iteration) estimate of ``‖∇²f‖_op``
(:mod:`gflow_jax.certificates.hessian`) over the centre, the ``α̂`` minimiser, the end
points of the probe and adversarial searches, some random points and some trajectory
points.

Points with ``f ≤ f_floor`` are excluded from ``α̂`` (``f > 0`` in the definition). The
default floor ``(10³ ε)² f(θ_0)`` (``ε`` = machine epsilon: ``5·10⁻²⁶ f(θ_0)`` in float64,
``1.4·10⁻⁸ f(θ_0)`` in float32) keeps points where a squared loss's residuals ``e = N − y``
are still resolved to ~0.1 % (their rounding error is ``~ε‖y‖``); it must be small
because along a converging flow ``‖∇f‖²/f`` keeps decreasing towards its limit.

**Vectorisation.** The criterion at one radius is one compiled function of
``(θ_0, r, key)``; :func:`ball_criterion` can be ``jax.vmap``-ped over ``radius`` (and
``key``), :func:`radius_scan` is exactly that, and :func:`batched_ball_criterion` maps
it over stacked models.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, PyTree

from .._checks import positive_float
from .._numerics import pl_ratio as _pl_ratio
from .._numerics import tree_sq_norm
from ..models.base import partition
from ._common import check_model_risk, flat_loss, path_points, warn_if_not_smooth
from .hessian import operator_norm
from .search import Search, SearchOptions

__all__ = [
    "CriterionReport",
    "RadiusScan",
    "ball_criterion",
    "batched_ball_criterion",
    "pl_ratio",
    "radius_scan",
]


def pl_ratio(model: PyTree, risk) -> Float[Array, ""]:
    """The local PL ratio ``‖∇f(θ)‖² / f(θ)`` at the model's trainable parameters ``θ``.

    **Arguments:**

    - `model`: the model at ``θ``.
    - `risk`: ``risk(model) -> scalar``, the loss ``f``.

    **Returns:**

    The ratio (units 1/time: along the gradient flow ``d/dt log f = −‖∇f‖²/f``), NaN
    where ``f(θ) ≤ 0`` (the ratio is undefined at zeros of ``f``). Jittable.
    """
    check_model_risk(model, risk, "pl_ratio")
    params, static = partition(model)
    value, grad = jax.value_and_grad(lambda p: risk(eqx.combine(p, static)))(params)
    return _pl_ratio(value, tree_sq_norm(grad))


# ----------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------


class _Verdict(NamedTuple):
    """What ``(r, f(θ_0), α̂, β̂)`` imply: the decision and the derived bounds."""

    holds: Array
    margin: Array
    travel_bound: Array
    max_step: Array
    gd_max_step: Array


def _decide(radius, f0, alpha, beta) -> _Verdict:
    """The estimated criterion ``4 f(θ_0) < r² α̂`` and the bounds it implies.

    ``margin = r² α̂/(4 f(θ_0))``; ``travel_bound = 2√(f(θ_0)/α̂)``; ``max_step = 2/β̂``;
    ``gd_max_step = (2/β̂)(1 − travel_bound/r)`` clipped at 0: the largest GD step ``η``
    with ``4 f(θ_0) < κ² r² α̂``, ``κ = 1 − ηβ̂/2``. Broadcasts over arrays.
    """
    travel = 2 * jnp.sqrt(f0 / alpha)
    max_step = 2 / beta
    return _Verdict(
        holds=4 * f0 < radius**2 * alpha,
        margin=radius**2 * alpha / (4 * f0),
        travel_bound=travel,
        max_step=max_step,
        gd_max_step=jnp.maximum(max_step * (1 - travel / radius), 0.0),
    )


class CriterionReport(eqx.Module):
    """ESTIMATED ball criterion at ``(θ_0, r)`` (see :mod:`gflow_jax.certificates.ball`).

    ``α̂ ≥ α`` and ``β̂ ≤ β`` (sampling and local search are optimistic), so every verdict
    here is an estimate, not a proof. Reports from ``jax.vmap`` or
    :func:`batched_ball_criterion` have the same fields with leading axes.

    - `radius`: ``r`` (parameter units); `initial_risk`: ``f(θ_0)``;
    - `alpha`: ``α̂``, the smallest ``‖∇f‖²/f`` found in ``B`` (1/time);
      `alpha_center`: the ratio at ``θ_0``; `alpha_by_search`: the smallest ratio
      found by each :class:`~gflow_jax.certificates.search.Search` (``inf`` if that
      search saw no admissible point);
    - `alpha_point`: trainable parameters (same pytree as the model's) where ``α̂`` was
      found; `alpha_distance`: ``‖alpha_point − θ_0‖``; `alpha_source`: a
      :class:`~gflow_jax.certificates.search.Search` code;
    - `beta`: ``β̂``, the largest ``‖∇²f‖_op`` estimate over the examined points
      (1/time); `beta_center`: the estimate at ``θ_0``;
    - `holds`: the estimated gradient-flow criterion ``4 f(θ_0) < r² α̂``; `margin`:
      ``r² α̂ / (4 f(θ_0))`` (``> 1`` iff `holds`);
    - `rate`: the predicted gradient-flow rate ``α̂`` in ``f(θ_t) ≤ e^{−α̂ t} f(θ_0)``;
    - `travel_bound`: ``2 √(f(θ_0)/α̂)``, the bound on the flow's path length;
    - `max_step`: ``2/β̂``, the largest GD step allowed by ``κ > 0``;
    - `gd_max_step`: ``(2/β̂)(1 − travel_bound/r)`` (0 if negative), the largest ``η``
      with ``4 f(θ_0) < κ² r² α̂``, ``κ = 1 − ηβ̂/2`` (the gradient-descent criterion);
    - `center`: the trainable parameters at ``θ_0``;
    - `num_points`: number of points at which ``‖∇f‖²/f`` was evaluated.
    """

    radius: Float[Array, "*batch"]
    initial_risk: Float[Array, "*batch"]
    alpha: Float[Array, "*batch"]
    alpha_center: Float[Array, "*batch"]
    alpha_by_search: Float[Array, "*batch 5"]
    alpha_point: PyTree
    alpha_distance: Float[Array, "*batch"]
    alpha_source: Int[Array, "*batch"]
    beta: Float[Array, "*batch"]
    beta_center: Float[Array, "*batch"]
    holds: Bool[Array, "*batch"]
    margin: Float[Array, "*batch"]
    rate: Float[Array, "*batch"]
    travel_bound: Float[Array, "*batch"]
    max_step: Float[Array, "*batch"]
    gd_max_step: Float[Array, "*batch"]
    center: PyTree
    num_points: Int[Array, "*batch"]

    @property
    def alpha_source_name(self) -> str:
        """Name of the search that found ``α̂``, e.g. ``'ADVERSARIAL'`` (single report)."""
        return Search(int(self.alpha_source)).name

    def gd_condition(
        self, learning_rate: float
    ) -> tuple[Float[Array, "*batch"], Bool[Array, "*batch"], Float[Array, "*batch"]]:
        """The estimated gradient-descent criterion for the step ``η = learning_rate``.

        **Arguments:**

        - `learning_rate`: the GD step ``η`` (time units of the flow, ``> 0``).

        **Returns:**

        ``(κ, holds, rate)`` with ``κ = 1 − ηβ̂/2``, ``holds`` =
        ``κ > 0 and 4 f(θ_0) < κ² r² α̂``, and the per-step contraction
        ``rate = 1 − η α̂ κ`` in ``f_k ≤ rate^k f(θ_0)``.
        """
        eta = positive_float("learning_rate", learning_rate)
        kappa = 1.0 - eta * self.beta / 2.0
        holds = (kappa > 0) & (4 * self.initial_risk < kappa**2 * self.radius**2 * self.alpha)
        return kappa, holds, 1.0 - eta * self.alpha * kappa

    def summary(self) -> str:
        """A short human-readable account (single report only)."""
        verdict = "holds" if bool(self.holds) else "fails"
        return (
            f"ESTIMATED ball criterion 4 f(θ0) < r² α̂ {verdict} at r = {float(self.radius):.4g}: "
            f"f(θ0) = {float(self.initial_risk):.4g}, α̂ = {float(self.alpha):.4g} "
            f"(found by {self.alpha_source_name.lower()} search at distance "
            f"{float(self.alpha_distance):.3g}; ratio at θ0 {float(self.alpha_center):.4g}), "
            f"margin r²α̂/(4f) = {float(self.margin):.3g}; travel bound "
            f"{float(self.travel_bound):.4g}; β̂ = {float(self.beta):.4g}, GD step < "
            f"{float(self.max_step):.3g} (criterion: η < {float(self.gd_max_step):.3g}). "
            "α̂ ≥ α and β̂ ≤ β: estimates, not proofs."
        )


# ----------------------------------------------------------------------------------
# Pieces of the search, on a flat parameter vector
# ----------------------------------------------------------------------------------


def _ratio(value, g2, floor):
    """``‖∇f‖²/f``, with ``inf`` where ``f ≤ floor`` or anything is not finite."""
    ok = (value > floor) & jnp.isfinite(value)
    r = g2 / jnp.where(ok, value, 1.0)
    return jnp.where(ok & jnp.isfinite(r), r, jnp.inf)


def _value_and_sq(f, theta):
    value, grad = jax.value_and_grad(f)(theta)
    return value, jnp.vdot(grad, grad)


def _ball_points(z, center, radius):
    """Points uniform in ``B(center, radius)`` from standard normals ``z`` of shape ``(m, p+1)``.

    Direction ``z[:, :p]/‖z[:, :p]‖``, radius ``r · U^{1/p}`` with ``U = Φ(z[:, p])``
    uniform on ``(0, 1)`` (``Φ`` the normal CDF).
    """
    p = center.shape[0]
    u = z[:, :p] / jnp.linalg.norm(z[:, :p], axis=1, keepdims=True)
    rho = radius * jax.scipy.special.ndtr(z[:, p:]) ** (1.0 / p)
    return center + rho * u


def _project(theta, center, radius):
    """The Euclidean projection ``P_B(θ)`` onto ``B(center, radius)``."""
    delta = theta - center
    norm = jnp.linalg.norm(delta)
    return center + delta * jnp.minimum(1.0, radius / jnp.where(norm > 0, norm, 1.0))


class _Draws(NamedTuple):
    """Every random quantity of one criterion, cut from ONE normal draw (each
    ``jax.random`` call is costly to compile)."""

    random: Array  # (n_random, p+1): points uniform in the ball
    starts: Array  # (n_starts, p+1): random starts of the adversarial search
    beta_first: Array  # (n_beta_first, p+1): start vectors, first β̂ batch
    beta_second: Array  # (n_beta_second, p+1): start vectors, second β̂ batch
    path_index: np.ndarray  # trajectory points where β̂ is estimated (static)


def _draw(key, search: SearchOptions, n_path: int | None, p: int, dtype) -> _Draws:
    path_index = np.zeros(0, int)
    if n_path is not None and search.n_beta:
        path_index = np.unique(np.linspace(0, n_path - 1, min(search.n_beta, n_path)).round())
        path_index = path_index.astype(int)
    n_first = 1 + min(search.n_beta, search.n_random) + path_index.size
    n_second = 1 + search.n_adversarial + (1 if search.probe_steps else 0)
    sizes = np.cumsum([search.n_random, search.n_starts, n_first, n_second])
    z = jax.random.normal(key, (int(sizes[-1]), p + 1), dtype)
    return _Draws(*jnp.split(z, sizes[:-1]), path_index=path_index)


class _Candidates(NamedTuple):
    """Points of the α search, their ratios (``inf`` if inadmissible) and sources."""

    points: Array
    ratios: Array
    sources: Array

    def extend(self, points, ratios, source: Search) -> _Candidates:
        sources = jnp.full((points.shape[0],), source, self.sources.dtype)
        return _Candidates(
            jnp.concatenate([self.points, points]),
            jnp.concatenate([self.ratios, ratios]),
            jnp.concatenate([self.sources, sources]),
        )


def _sample_search(f, center, radius, random_points, path_flat, f_floor_rel):
    """Searches 1–3: the centre, random points and the flow's points in the ball.

    One vmapped evaluation for all of them (one compiled copy of the gradient); a path
    point outside ``B`` (or NaN) is replaced by ``θ_0`` and marked inadmissible.

    Returns ``(candidates, f(θ_0), floor, ‖∇f(θ_0)‖²)`` with ``floor = f_floor_rel · f(θ_0)``;
    the candidates are ordered centre, random points, path points.
    """
    points = [center[None], random_points]
    sources = [jnp.array([Search.CENTER]), jnp.full((random_points.shape[0],), Search.RANDOM)]
    inside = [jnp.ones((1 + random_points.shape[0],), bool)]
    if path_flat is not None:
        dist = jnp.linalg.norm(path_flat - center, axis=1)
        ok = jnp.all(jnp.isfinite(path_flat), axis=1) & (dist <= radius)
        points.append(jnp.where(ok[:, None], path_flat, center))
        sources.append(jnp.full((path_flat.shape[0],), Search.TRAJECTORY))
        inside.append(ok)
    points, sources, inside = map(jnp.concatenate, (points, sources, inside))
    values, g2s = jax.vmap(lambda th: _value_and_sq(f, th))(points)
    f0 = values[0]
    floor = f_floor_rel * f0
    ratios = jnp.where(inside, _ratio(values, g2s, floor), jnp.inf)
    return _Candidates(points, ratios, sources), f0, floor, g2s[0]


def _probe_step(beta_center, grad_norm_center, radius, search: SearchOptions):
    """The probe's step ``η = probe_lr/β̂(θ_0)``; if ``β̂(θ_0) = 0``, the step that would
    cross the radius in ``probe_steps`` steps at the initial speed."""
    g0 = grad_norm_center
    return jnp.where(
        beta_center > 0,
        search.probe_lr / jnp.where(beta_center > 0, beta_center, 1.0),
        radius / (search.probe_steps * jnp.where(g0 > 0, g0, 1.0)),
    )


def _probe_search(f, center, radius, floor, eta, steps: int):
    """Search 4, the flow probe: ``θ ← P_B(θ − η∇f(θ))`` from ``θ_0`` for `steps` steps.

    Returns ``(best ratio, its point, last point)``.
    """

    def step(carry, _):
        theta, best_val, best_theta = carry
        value, grad = jax.value_and_grad(f)(theta)
        val = _ratio(value, jnp.vdot(grad, grad), floor)
        best_theta = jnp.where(val < best_val, theta, best_theta)
        new = _project(theta - eta * grad, center, radius)
        new = jnp.where(jnp.all(jnp.isfinite(new)), new, theta)
        return (new, jnp.minimum(val, best_val), best_theta), None

    inf = jnp.asarray(jnp.inf, center.dtype)
    (last, best_val, best_theta), _ = jax.lax.scan(step, (center, inf, center), None, steps)
    return best_val, best_theta, last


def _adversarial_search(f, center, radius, floor, starts, steps: int, lr: float):
    """Search 5: projected normalised descent on ``log(‖∇f‖²/f)`` from each of `starts`.

    Step lengths decay geometrically from ``lr · r`` to ``10⁻³ lr · r``. Returns, per
    start, ``(best ratio, its point, last point)``.
    """

    def objective(theta):
        value, g2 = _value_and_sq(f, theta)
        return jnp.log(g2) - jnp.log(value), (value, g2)

    decay = 1e-3 ** (1.0 / max(steps - 1, 1))

    def descend(theta0):
        def step(carry, k):
            theta, best_val, best_theta = carry
            (_, (value, g2)), g = jax.value_and_grad(objective, has_aux=True)(theta)
            val = _ratio(value, g2, floor)
            best_theta = jnp.where(val < best_val, theta, best_theta)
            gn = jnp.linalg.norm(g)
            ok = jnp.isfinite(gn) & (gn > 0)
            size = lr * radius * decay**k
            new = _project(theta - size * g / jnp.where(ok, gn, 1.0), center, radius)
            new = jnp.where(ok, new, theta)
            return (new, jnp.minimum(val, best_val), best_theta), None

        init = (theta0, jnp.asarray(jnp.inf, center.dtype), theta0)
        (last, best_val, best_theta), _ = jax.lax.scan(
            step, init, jnp.arange(steps, dtype=center.dtype)
        )
        return best_val, best_theta, last

    return jax.vmap(descend)(starts)


def _beta_estimate(f, points, z, search: SearchOptions):
    """``‖∇²f‖_op`` estimates at each of `points` (start vectors ``z[:, :p]``)."""
    p = points.shape[1]
    return jax.vmap(
        lambda th, v: operator_norm(f, th, v, search.hessian_iters, search.hessian_method)
    )(points, z[:, :p])


def _local_searches(f, center, radius, floor, cands, draws, beta_center, g_center, search):
    """Searches 4 (flow probe) and 5 (adversarial), appended to `cands`.

    Returns ``(candidates, ends)`` with `ends` the search end points, for ``β̂``.
    """
    ends = []
    if search.probe_steps:
        eta = _probe_step(beta_center, g_center, radius, search)
        probe_val, probe_best, probe_last = _probe_search(
            f, center, radius, floor, eta, search.probe_steps
        )
        cands = cands.extend(probe_best[None], probe_val[None], Search.PROBE)
        ends.append(probe_last[None])
    if search.n_adversarial:
        starts = [center[None]]
        if search.probe_steps and search.n_adversarial > 1:
            starts.append(probe_best[None])
        starts.append(_ball_points(draws.starts, center, radius))
        adv_vals, adv_best, adv_last = _adversarial_search(
            f, center, radius, floor, jnp.concatenate(starts), search.ascent_steps, search.ascent_lr
        )
        cands = cands.extend(adv_best, adv_vals, Search.ADVERSARIAL)
        ends.append(adv_last)
    return cands, ends


def _best(cands: _Candidates):
    """``(α̂, its point, its Search code, the smallest ratio of each Search)``."""
    i = jnp.argmin(cands.ratios)
    inf = jnp.asarray(jnp.inf, cands.ratios.dtype)
    by_search = jnp.stack(
        [jnp.min(jnp.where(cands.sources == s, cands.ratios, inf), initial=inf) for s in Search]
    )
    return cands.ratios[i], cands.points[i], cands.sources[i], by_search


@eqx.filter_jit
def _criterion_core(
    model: PyTree,
    risk,
    radius: Float[Array, ""],
    key: PRNGKeyArray,
    path_flat: Float[Array, "T p"] | None,
    f_floor_rel: Float[Array, ""],
    search: SearchOptions,
) -> CriterionReport:
    """The criterion at one ``(θ_0, r)``: pure, jitted, and vmappable over every array
    argument (``radius``, ``key``, the model's arrays, ``path_flat``)."""
    center, f, unravel = flat_loss(model, risk)
    dtype = center.dtype
    radius = jnp.asarray(radius, dtype)
    n_path = None if path_flat is None else path_flat.shape[0]
    draws = _draw(key, search, n_path, center.shape[0], dtype)

    # 1.–3. centre, random points, trajectory points
    random_points = _ball_points(draws.random, center, radius)
    cands, f0, floor, g2_center = _sample_search(
        f, center, radius, random_points, path_flat, f_floor_rel
    )

    # β̂, first part: the centre, some random points, some trajectory points
    n_beta_random = min(search.n_beta, search.n_random)
    first = [center[None], random_points[:n_beta_random]]
    if draws.path_index.size:
        first.append(cands.points[1 + search.n_random + draws.path_index])  # θ_0 outside B
    norms_first = _beta_estimate(f, jnp.concatenate(first), draws.beta_first, search)
    beta_center = norms_first[0]

    # 4.–5. the local searches from θ_0: the flow probe and the adversarial search
    cands, ends = _local_searches(
        f, center, radius, floor, cands, draws, beta_center, jnp.sqrt(g2_center), search
    )
    alpha, alpha_theta, source, by_search = _best(cands)

    # β̂, second part: the α point and the end points of the local searches
    second = jnp.concatenate([alpha_theta[None]] + ends)
    norms_second = _beta_estimate(f, second, draws.beta_second, search)
    beta = jnp.maximum(jnp.max(norms_first), jnp.max(norms_second))

    verdict = _decide(radius, f0, alpha, beta)
    num_points = 1 + search.n_random + (n_path or 0) + search.probe_steps
    num_points += search.ascent_steps * search.n_adversarial
    return CriterionReport(
        radius=radius,
        initial_risk=f0,
        alpha=alpha,
        alpha_center=cands.ratios[0],
        alpha_by_search=by_search,
        alpha_point=unravel(alpha_theta),
        alpha_distance=jnp.linalg.norm(alpha_theta - center),
        alpha_source=source.astype(jnp.int32),
        beta=beta,
        beta_center=beta_center,
        holds=verdict.holds,
        margin=verdict.margin,
        rate=alpha,
        travel_bound=verdict.travel_bound,
        max_step=verdict.max_step,
        gd_max_step=verdict.gd_max_step,
        center=unravel(center),
        num_points=jnp.asarray(num_points, jnp.int32),
    )


# ----------------------------------------------------------------------------------
# Public entry points: validation on the host, then the core
# ----------------------------------------------------------------------------------


def _default_floor(dtype) -> float:
    """Default relative floor ``(10³ ε)²`` on ``f/f(θ_0)`` (module docstring)."""
    return float((1e3 * np.finfo(np.dtype(dtype)).eps) ** 2)


def _check_search(search) -> SearchOptions:
    if not isinstance(search, SearchOptions):
        raise TypeError(
            f"search must be a SearchOptions (e.g. SearchOptions(n_random=32)), got "
            f"{type(search).__name__}."
        )
    return search


class _Prepared(NamedTuple):
    path_flat: Array | None
    f_floor_rel: Array


def _prepare(model, risk, key, trajectory, f_floor, search, what) -> _Prepared:
    """Host-side checks of one model: arguments, ``f(θ_0)`` finite and ``> 0``, the floor
    (absolute `f_floor` → relative) and the trajectory's flattened points."""
    check_model_risk(model, risk, what)
    _check_search(search)
    if key is None:
        raise TypeError("pass key=jax.random.key(...) (the searches are random).")
    warn_if_not_smooth(model, what, stacklevel=4)
    flat0, f, _ = flat_loss(model, risk)
    out = jax.eval_shape(f, flat0)
    if out.shape != ():
        raise ValueError(f"risk(model) must return a scalar, got shape {out.shape}.")
    f0 = float(f(flat0))
    if not math.isfinite(f0) or f0 < 0:
        raise ValueError(f"f(θ_0) = {f0}: the criterion needs a finite non-negative loss.")
    if f0 == 0:
        raise ValueError(
            "f(θ_0) = 0: θ_0 is already a global minimiser, the ratio ‖∇f‖²/f is undefined "
            "there and there is nothing to certify."
        )
    if f_floor is None:
        f_floor_rel = _default_floor(flat0.dtype)
    else:
        f_floor_rel = positive_float("f_floor", f_floor) / f0
    path_flat = None
    if trajectory is not None:
        path_flat = path_points(trajectory, partition(model)[0]).astype(flat0.dtype)
    return _Prepared(path_flat, jnp.asarray(f_floor_rel, flat0.dtype))


def ball_criterion(
    model: PyTree,
    risk,
    radius: float | Float[Array, ""],
    *,
    key: PRNGKeyArray,
    search: SearchOptions = SearchOptions(),  # noqa: B008 (immutable, validated once)
    trajectory=None,
    f_floor: float | None = None,
) -> CriterionReport:
    """ESTIMATE Chatterjee's criterion ``4 f(θ_0) < r² α(θ_0, r)`` on a concrete model.

    ``f = risk(model)`` as a function of the trainable parameters ``θ``; ``θ_0`` = the
    model's current parameters. **The verdict is an estimate**: ``α̂`` is the smallest
    ``‖∇f‖²/f`` *found* in the ball (so ``α̂ ≥ α``) and ``β̂`` the largest ``‖∇²f‖_op``
    *found* (so ``β̂ ≤ β``); the searches are described in
    :mod:`gflow_jax.certificates.ball` and sized by `search`.

    Compiled once per model structure, `search` and trajectory length (`radius` and
    `key` are traced); ``jax.vmap`` over `radius` (or `key`) gives the same reports as a
    Python loop.

    **Arguments:**

    - `model`: the model at ``θ_0``.
    - `risk`: ``risk(model) -> scalar``, the non-negative loss ``f``.
    - `radius`: ``r > 0``, in parameter units (Euclidean norm over all trainable arrays).
    - `key`: PRNG key of the random searches.
    - `search`: a :class:`~gflow_jax.certificates.search.SearchOptions`.
    - `trajectory`: optional :class:`gflow_jax.Trajectory` of this model saved with
      its parameter path (``save_path=True``); its points inside the ball join the
      ``α`` search (``Search.TRAJECTORY``) and up to ``search.n_beta`` of them the ``β``
      search.
    - `f_floor`: points with ``f ≤ f_floor`` are excluded from ``α̂`` (risk units;
      default ``(10³ε)² f(θ_0)``, see the module docstring).

    **Returns:**

    A :class:`CriterionReport`.

    **Raises:**

    ``ValueError`` if `radius` is not finite and positive (when concrete), or if
    ``f(θ_0)`` is not finite and positive; ``TypeError`` for arguments in the old
    ``(risk, model)`` order. Warns (``UserWarning``) when the model declares
    ``is_smooth = False`` (:func:`gflow_jax.models.base.is_smooth`): the theorem needs
    ``f ∈ C²``.
    """
    radius = positive_float("radius", radius, hint="The ball radius must be finite and > 0.")
    prep = _prepare(model, risk, key, trajectory, f_floor, search, "ball_criterion")
    radius = jnp.asarray(radius, prep.f_floor_rel.dtype)
    return _criterion_core(model, risk, radius, key, prep.path_flat, prep.f_floor_rel, search)


@eqx.filter_jit
def _criterion_batch(models, risk, radii, keys, points, f_floor_rel, search):
    def one(model, radius, key, pts):
        return _criterion_core(model, risk, radius, key, pts, f_floor_rel, search)

    return eqx.filter_vmap(one)(models, radii, keys, points)


def batched_ball_criterion(
    models: PyTree,
    risk,
    radii: Float[ArrayLike, " B"] | float,
    *,
    keys: PRNGKeyArray,
    search: SearchOptions = SearchOptions(),  # noqa: B008 (immutable, validated once)
    points: Float[ArrayLike, "B T p"] | None = None,
    f_floor: float | None = None,
) -> CriterionReport:
    """:func:`ball_criterion` for a batch of models in one compiled, vmapped call.

    ESTIMATES, exactly as in :func:`ball_criterion`.

    **Arguments:**

    - `models`: a stacked model (every trainable array with a leading batch axis ``B``,
      e.g. ``eqx.filter_vmap(init)(keys)``).
    - `risk`: ``risk(model) -> scalar`` (shared by all members).
    - `radii`: ``(B,)`` radii (one per model) or one radius for all.
    - `keys`: ``(B,)`` PRNG keys.
    - `search`: a :class:`~gflow_jax.certificates.search.SearchOptions`.
    - `points`: optional ``(B, T, p)`` flattened parameter points of the members' flows
      (``ravel_pytree`` order of the trainable parameters, e.g.
      ``Ensemble.final_params[:, None]``); they play the role of ``trajectory.path``
      (``Search.TRAJECTORY``; NaN rows and points outside the ball are ignored).
    - `f_floor`: *relative* here: the floor is ``f_floor · f(θ_0)`` per member (default
      ``(10³ε)²``).

    **Returns:**

    A :class:`CriterionReport` whose fields have a leading axis ``B``.
    """
    check_model_risk(models, risk, "batched_ball_criterion")
    _check_search(search)
    leaves = jtu.tree_leaves(partition(models)[0])
    if not leaves:
        raise ValueError("the models have no trainable floating-point arrays.")
    batch = {x.shape[0] if x.ndim else None for x in leaves}
    if len(batch) != 1 or None in batch:
        raise ValueError("models must be stacked along a leading batch axis (all arrays).")
    B = batch.pop()
    dtype = leaves[0].dtype
    warn_if_not_smooth(models, "batched_ball_criterion")
    radii = np.broadcast_to(np.asarray(radii, dtype=float), (B,))
    if not np.all(np.isfinite(radii)) or np.any(radii <= 0):
        raise ValueError("every radius must be finite and > 0.")
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    if keys.shape[0] != B:
        raise ValueError(f"need one key per model: {B} models, keys of shape {keys.shape}.")
    f0 = np.asarray(eqx.filter_vmap(lambda m: risk(m))(models))
    if f0.shape != (B,):
        raise ValueError(f"risk(model) must return a scalar, got shape {f0.shape[1:]}.")
    if not np.all(np.isfinite(f0)) or np.any(f0 <= 0):
        bad = np.flatnonzero(~np.isfinite(f0) | (f0 <= 0))
        raise ValueError(
            f"f(θ_0) must be finite and > 0 for every member; members {bad.tolist()} have "
            f"{f0[bad].tolist()}."
        )
    rel = _default_floor(dtype) if f_floor is None else positive_float("f_floor", f_floor)
    if points is not None:
        points = jnp.asarray(points, dtype)
        p = sum(x[0].size for x in leaves)
        if points.ndim != 3 or points.shape[0] != B or points.shape[2] != p:
            raise ValueError(
                f"points must have shape (B, T, p) = ({B}, T, {p}), got {points.shape}."
            )
    return _criterion_batch(
        models, risk, jnp.asarray(radii, dtype), keys, points, jnp.asarray(rel, dtype), search
    )


# ----------------------------------------------------------------------------------
# Radius scan: the core vmapped over r
# ----------------------------------------------------------------------------------


class RadiusScan(eqx.Module):
    """The estimated criterion as a function of the radius (radii sorted ascending).

    `alpha` and `beta` are made monotone in ``r``: a point found in a smaller ball lies
    in every larger one, so ``α̂(r_k) = min_{j ≤ k} α̂_raw(r_j)`` and
    ``β̂(r_k) = max_{j ≤ k} β̂_raw(r_j)``; `alpha_raw`/`beta_raw` are the per-radius
    searches. The verdict fields use the monotone estimates: ``holds = 4 f(θ_0) < r² α̂``;
    ``margin = r² α̂/(4 f(θ_0))``; ``travel_bound = 2√(f(θ_0)/α̂)``; ``max_step = 2/β̂``;
    `gd_max_step` as in :class:`CriterionReport`. `smallest_certified_radius`: the
    smallest scanned radius where the estimate holds (NaN if none) — an ESTIMATE like
    everything else. `reports`: the per-radius :class:`CriterionReport` (leading axis
    ``R``), exactly what :func:`ball_criterion` returns at each radius.
    """

    radii: Float[Array, " R"]
    initial_risk: Float[Array, ""]
    alpha: Float[Array, " R"]
    alpha_raw: Float[Array, " R"]
    beta: Float[Array, " R"]
    beta_raw: Float[Array, " R"]
    holds: Bool[Array, " R"]
    margin: Float[Array, " R"]
    travel_bound: Float[Array, " R"]
    max_step: Float[Array, " R"]
    gd_max_step: Float[Array, " R"]
    smallest_certified_radius: Float[Array, ""]
    reports: CriterionReport


def radius_scan(
    model: PyTree,
    risk,
    radii: Float[ArrayLike, " R"],
    *,
    key: PRNGKeyArray,
    search: SearchOptions = SearchOptions(),  # noqa: B008 (immutable, validated once)
    trajectory=None,
    f_floor: float | None = None,
) -> RadiusScan:
    """:func:`ball_criterion` at each of `radii` with the same `key`, in one vmapped call.

    **Arguments:**

    - `model`, `risk`, `key`, `search`, `trajectory`, `f_floor`: as in
      :func:`ball_criterion`.
    - `radii`: the radii (any order; at least one; each finite and ``> 0``).

    **Returns:**

    A :class:`RadiusScan` with arrays over the radii sorted ascending.
    """
    radii = np.sort(np.asarray(radii, dtype=float).ravel())
    if radii.size == 0:
        raise ValueError("radii must contain at least one radius.")
    if not np.all(np.isfinite(radii)) or np.any(radii <= 0):
        raise ValueError(f"every radius must be finite and > 0, got {radii}.")
    prep = _prepare(model, risk, key, trajectory, f_floor, search, "radius_scan")
    dtype = prep.f_floor_rel.dtype
    r = jnp.asarray(radii, dtype)
    reports = jax.vmap(
        lambda rad: _criterion_core(model, risk, rad, key, prep.path_flat, prep.f_floor_rel, search)
    )(r)
    f0 = reports.initial_risk[0]
    alpha = jax.lax.cummin(reports.alpha)
    beta = jax.lax.cummax(reports.beta)
    verdict = _decide(r, f0, alpha, beta)
    certified = np.asarray(verdict.holds)
    smallest = radii[np.argmax(certified)] if certified.any() else np.nan
    return RadiusScan(
        radii=r,
        initial_risk=f0,
        alpha=alpha,
        alpha_raw=reports.alpha,
        beta=beta,
        beta_raw=reports.beta,
        holds=verdict.holds,
        margin=verdict.margin,
        travel_bound=verdict.travel_bound,
        max_step=verdict.max_step,
        gd_max_step=verdict.gd_max_step,
        smallest_certified_radius=jnp.asarray(smallest, dtype),
        reports=reports,
    )
