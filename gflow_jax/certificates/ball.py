"""Chatterjee's local PL ("ball") criterion, estimated on a concrete model (MATH.md §3.2).

For a non-negative C² loss ``f`` on the trainable parameters ``θ ∈ R^p`` and the closed ball
``B = B(θ_0, r)``,

- ``α(θ_0, r) = inf { ‖∇f(θ)‖² / f(θ) : θ ∈ B, f(θ) > 0 }`` (local PL constant, 1/time),
- ``β(θ_0, r) = sup { ‖∇²f(θ)‖_op : θ ∈ B }`` (local smoothness, 1/time).

**Gradient flow.** If ``4 f(θ_0) < r² α`` the flow ``θ' = −∇f(θ)`` never leaves ``B``,
``f(θ_t) ≤ e^{−α t} f(θ_0)``, its path length is at most ``2 √(f(θ_0)/α) < r`` and it
converges to a zero of ``f`` in ``B``.

**Gradient descent** with step ``η < 2/β``: with ``κ = 1 − ηβ/2``, if
``4 f(θ_0) < κ² r² α`` every iterate stays in ``B`` and ``f_k ≤ (1 − η α κ)^k f(θ_0)``.

**Everything here is an ESTIMATE.** ``α`` is an infimum and ``β`` a supremum over the
ball; any finite search sees only some points, so ``α̂ ≥ α`` and ``β̂ ≤ β``: both are
*optimistic*. A ``holds`` verdict means "no counter-example to the hypothesis was found",
not a proof. To make the search less optimistic, ``α̂`` combines

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

and ``β̂`` maximises a Lanczos (or power-iteration) estimate of ``‖∇²f‖_op``, built from
Hessian-vector products ``jax.jvp(jax.grad(f))`` (never a dense Hessian), over the centre,
the ``α̂`` minimiser, the end points of the probe and adversarial searches, some random
points and some trajectory points.

Points with ``f ≤ f_floor`` are excluded from ``α̂`` (``f > 0`` in the definition). The
default floor ``(10³ ε)² f(θ_0)`` (``ε`` = machine epsilon: ``5·10⁻²⁶ f(θ_0)`` in float64,
``1.4·10⁻⁸ f(θ_0)`` in float32) keeps points where a squared loss's residuals ``e = N − y``
are still resolved to ~0.1 % (their rounding error is ``~ε‖y‖``); it must be
small because along a converging flow ``‖∇f‖²/f`` keeps decreasing towards its limit.

All functions work on the *trainable* parameters (:func:`gflow_jax.models.base.partition`),
flattened with ``jax.flatten_util.ravel_pytree``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, PyTree

from .._checks import positive_float, positive_int
from ..models.base import partition

__all__ = [
    "ContingencyTable",
    "CriterionReport",
    "PredictionCheck",
    "RadiusScan",
    "Search",
    "ball_criterion",
    "batched_ball_criterion",
    "certification_table",
    "check_prediction",
    "hessian_norm",
    "pl_ratio",
    "radius_scan",
]


class Search(enum.IntEnum):
    """Which search found the smallest ratio ``‖∇f‖²/f`` (``CriterionReport.alpha_source``)."""

    CENTER = 0
    RANDOM = 1
    TRAJECTORY = 2
    ADVERSARIAL = 3
    PROBE = 4


# ----------------------------------------------------------------------------------
# Building blocks on a flat parameter vector
# ----------------------------------------------------------------------------------


def _flat_loss(model, risk):
    """``(θ_0 flat, f: R^p -> R, unravel, static)`` for the trainable parameters of model."""
    params, static = partition(model)
    flat, unravel = ravel_pytree(params)
    if flat.size == 0:
        raise ValueError("the model has no trainable floating-point arrays.")

    def f(theta):
        return risk(eqx.combine(unravel(theta), static))

    return flat, f, unravel, static


def _hvp(f, theta, vec):
    """Hessian-vector product ``∇²f(θ) v`` by forward-over-reverse differentiation."""
    return jax.jvp(jax.grad(f), (theta,), (vec,))[1]


def _lanczos_norm(matvec, v0, iters: int):
    """Largest ``|λ|`` of the symmetric operator ``matvec`` by ``iters``-step Lanczos.

    Full reorthogonalisation (twice), so the Ritz values are those of an orthonormal
    projection: ``max |Ritz| ≤ ‖H‖_op``, exact once ``iters ≥ p`` (or the Krylov space is
    exhausted). A breakdown (``β_j ≈ 0``) continues with zero vectors, which only adds
    zero Ritz values.
    """
    p = v0.shape[0]
    k = min(iters, p)
    dtype = v0.dtype
    tiny = 100 * jnp.finfo(dtype).eps
    q0 = v0 / jnp.linalg.norm(v0)

    def body(j, carry):
        V, alphas, betas, q, q_prev, beta_prev = carry
        V = V.at[j].set(q)
        w = matvec(q)
        a = jnp.vdot(q, w)
        w = w - a * q - beta_prev * q_prev
        w = w - V.T @ (V @ w)
        w = w - V.T @ (V @ w)
        b = jnp.linalg.norm(w)
        ok = b > tiny * (jnp.abs(a) + beta_prev + jnp.finfo(dtype).tiny)
        b = jnp.where(ok, b, 0.0)
        q_next = jnp.where(ok, w / jnp.where(ok, b, 1.0), 0.0)
        return V, alphas.at[j].set(a), betas.at[j].set(b), q_next, q, b

    zeros = jnp.zeros((k,), dtype)
    carry = (jnp.zeros((k, p), dtype), zeros, zeros, q0, jnp.zeros_like(q0), jnp.zeros((), dtype))
    _, alphas, betas, *_ = jax.lax.fori_loop(0, k, body, carry)
    T = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    return jnp.max(jnp.abs(jnp.linalg.eigvalsh(T)))


def _power_norm(matvec, v0, iters: int):
    """Largest ``|λ|`` by power iteration: ``‖H q_k‖`` with ``q_{k+1} = H q_k/‖H q_k‖``."""
    q0 = v0 / jnp.linalg.norm(v0)

    def body(_, carry):
        q, _ = carry
        w = matvec(q)
        nw = jnp.linalg.norm(w)
        return jnp.where(nw > 0, w / jnp.where(nw > 0, nw, 1.0), q), nw

    _, est = jax.lax.fori_loop(0, iters, body, (q0, jnp.zeros((), v0.dtype)))
    return est


def _operator_norm(f, theta, v0, iters: int, method: str):
    """``‖∇²f(θ)‖_op`` estimate by Lanczos/power iteration started at ``v0``."""
    matvec = lambda v: _hvp(f, theta, v)
    if method == "lanczos":
        return _lanczos_norm(matvec, v0, iters)
    return _power_norm(matvec, v0, iters)


def _check_method(method: str) -> str:
    if method not in ("lanczos", "power"):
        raise ValueError(f"method must be 'lanczos' or 'power', got {method!r}.")
    return method


@eqx.filter_jit
def _hessian_norm_jit(model, risk, key, iters, method):
    flat, f, _, _ = _flat_loss(model, risk)
    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    return _operator_norm(f, flat, v0, iters, method)


def hessian_norm(
    risk, model, *, key: PRNGKeyArray, iters: int = 32, method: str = "lanczos"
) -> Float[Array, ""]:
    """Estimate ``‖∇²f(θ)‖_op`` (largest ``|eigenvalue|``) of ``f = risk(model)`` at θ.

    ``θ`` = the trainable parameters. ``method="lanczos"`` (default): ``iters``-step Lanczos
    with full reorthogonalisation on Hessian-vector products (exact up to rounding when
    ``iters ≥ p``); ``"power"``: power iteration (converges like ``|λ_2/λ_1|^iters``). Both
    start from a random vector drawn with ``key`` and never form the Hessian; both return
    a lower bound on the true norm (up to rounding). Jittable. Warns (``UserWarning``) for
    ReLU models, whose Hessian is not defined at the kinks.
    """
    if not callable(risk):
        raise TypeError("risk must be callable as risk(model) -> scalar.")
    iters = positive_int("iters", iters)
    method = _check_method(method)
    _warn_if_not_smooth(model, "hessian_norm")
    return _hessian_norm_jit(model, risk, key, iters, method)


def pl_ratio(risk, model) -> Float[Array, ""]:
    """The local PL ratio ``‖∇f(θ)‖² / f(θ)`` at the model's trainable parameters θ.

    Units 1/time: along the gradient flow ``d/dt log f = −‖∇f‖²/f``. Returns NaN where
    ``f(θ) = 0`` (the ratio is undefined at zeros of ``f``). Jittable.
    """
    if not callable(risk):
        raise TypeError("risk must be callable as risk(model) -> scalar.")
    params, static = partition(model)
    value, grad = jax.value_and_grad(lambda p: risk(eqx.combine(p, static)))(params)
    g2 = sum(jnp.sum(jnp.square(g)) for g in jtu.tree_leaves(grad))
    return jnp.where(value > 0, g2 / jnp.where(value > 0, value, 1.0), jnp.nan)


# ----------------------------------------------------------------------------------
# The criterion
# ----------------------------------------------------------------------------------


class CriterionReport(eqx.Module):
    """ESTIMATED ball criterion at ``(θ_0, r)`` (see the module docstring).

    ``α̂ ≥ α`` and ``β̂ ≤ β`` (sampling and local search are optimistic), so every verdict
    here is an estimate, not a proof.

    - ``radius`` ``r``; ``initial_risk`` ``f(θ_0)``;
    - ``alpha``: ``α̂``, smallest ``‖∇f‖²/f`` found in ``B`` (1/time);
      ``alpha_center``: the ratio at ``θ_0``; ``alpha_by_search``: the smallest ratio
      found by each :class:`Search` (``inf`` if that search saw no admissible point);
    - ``alpha_point``: trainable parameters (same pytree as the model's) where ``α̂`` was
      found; ``alpha_distance``: ``‖alpha_point − θ_0‖``; ``alpha_source``: a
      :class:`Search` code;
    - ``beta``: ``β̂``, largest ``‖∇²f‖_op`` estimate over the examined points;
      ``beta_center``: the estimate at ``θ_0``;
    - ``holds``: the estimated GF criterion ``4 f(θ_0) < r² α̂``; ``margin``:
      ``r² α̂ / (4 f(θ_0))`` (``> 1`` iff ``holds``);
    - ``rate``: predicted GF rate ``α̂`` in ``f(θ_t) ≤ e^{−α̂ t} f(θ_0)``;
    - ``travel_bound``: ``2 √(f(θ_0)/α̂)``, the bound on the flow's path length;
    - ``max_step``: ``2/β̂``, the largest GD step allowed by ``κ > 0``;
    - ``gd_max_step``: ``(2/β̂)(1 − travel_bound/r)`` (0 if negative), the largest ``η``
      with ``4 f(θ_0) < κ² r² α̂``, ``κ = 1 − ηβ̂/2`` (the GD criterion of §3.2);
    - ``center``: the trainable parameters at ``θ_0``;
    - ``num_points``: number of points at which ``‖∇f‖²/f`` was evaluated.
    """

    radius: Float[Array, ""]
    initial_risk: Float[Array, ""]
    alpha: Float[Array, ""]
    alpha_center: Float[Array, ""]
    alpha_by_search: Float[Array, " 5"]
    alpha_point: PyTree
    alpha_distance: Float[Array, ""]
    alpha_source: Int[Array, ""]
    beta: Float[Array, ""]
    beta_center: Float[Array, ""]
    holds: Bool[Array, ""]
    margin: Float[Array, ""]
    rate: Float[Array, ""]
    travel_bound: Float[Array, ""]
    max_step: Float[Array, ""]
    gd_max_step: Float[Array, ""]
    center: PyTree
    num_points: Int[Array, ""]

    @property
    def alpha_source_name(self) -> str:
        """Name of the search that found ``α̂``, e.g. ``'ADVERSARIAL'``."""
        return Search(int(self.alpha_source)).name

    def gd_condition(self, learning_rate: float) -> tuple[Array, Array, Array]:
        """The estimated GD criterion of MATH.md §3.2 for step ``η``.

        Returns ``(κ, holds, rate)`` with ``κ = 1 − ηβ̂/2``, ``holds`` =
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


def _is_smooth_model(model) -> bool | None:
    flag = getattr(model, "is_smooth", None)
    if isinstance(flag, bool):
        return flag
    if getattr(model, "activation", None) == "relu":
        return False
    if "relu" in type(model).__name__.lower():
        return False
    return None


def _warn_if_not_smooth(model, what: str, stacklevel: int = 3) -> None:
    if _is_smooth_model(model) is False:
        warnings.warn(
            f"{what}: {type(model).__name__} uses a non-smooth (ReLU) activation, but the ball "
            "criterion assumes f is C² (MATH.md §3.2); the Hessian is not defined at the kinks "
            "and the verdict has no theorem behind it. Use a smooth activation such as "
            "'tanh', 'softplus' or 'smooth_relu'.",
            UserWarning,
            stacklevel=stacklevel,
        )


def _path_points(trajectory, params_template) -> Array:
    """``(T, p)`` flattened points of ``trajectory.path`` (NaN rows after ``t_stop``)."""
    path = getattr(trajectory, "path", None)
    if path is None:
        raise ValueError(
            "trajectory.path is None; run gradient_flow(..., save_path=True) to use the "
            "flow's points in the α search."
        )
    if jtu.tree_structure(path) != jtu.tree_structure(params_template):
        raise ValueError(
            "trajectory.path does not have the structure of the model's trainable parameters; "
            "pass a trajectory of this model."
        )
    lead = {x.shape[0] for x in jtu.tree_leaves(path)}
    if len(lead) != 1:
        raise ValueError("trajectory.path leaves must share a leading (time) axis.")
    for a, b in zip(jtu.tree_leaves(path), jtu.tree_leaves(params_template), strict=True):
        if a.shape[1:] != b.shape:
            raise ValueError(
                f"trajectory.path leaf of shape {a.shape} does not match parameter shape "
                f"{b.shape}; a batched trajectory? pass one trajectory at a time."
            )
    return jax.vmap(lambda p: ravel_pytree(p)[0])(path)


def _ball_points(z, center, radius):
    """Points uniform in ``B(center, radius)`` from standard normals ``z`` of shape ``(m, p+1)``.

    Direction ``z[:, :p]/‖z[:, :p]‖``, radius ``r · U^{1/p}`` with ``U = Φ(z[:, p])``
    uniform on ``(0, 1)`` (``Φ`` the normal CDF). One normal draw serves every search
    (each ``jax.random`` call is costly to compile).
    """
    p = center.shape[0]
    u = z[:, :p] / jnp.linalg.norm(z[:, :p], axis=1, keepdims=True)
    rho = radius * jax.scipy.special.ndtr(z[:, p:]) ** (1.0 / p)
    return center + rho * u


def _project(theta, center, radius):
    delta = theta - center
    norm = jnp.linalg.norm(delta)
    return center + delta * jnp.minimum(1.0, radius / jnp.where(norm > 0, norm, 1.0))


@eqx.filter_jit
def _criterion_core(
    model,
    risk,
    radius,
    key,
    path_flat,
    f_floor_rel,
    *,
    n_random,
    n_adversarial,
    ascent_steps,
    ascent_lr,
    probe_steps,
    probe_lr,
    n_beta,
    hessian_iters,
    hessian_method,
):
    flat0, f, unravel, _ = _flat_loss(model, risk)
    dtype = flat0.dtype
    radius = jnp.asarray(radius, dtype)
    inf = jnp.asarray(jnp.inf, dtype)
    p = flat0.shape[0]

    def value_and_sq(theta):
        value, grad = jax.value_and_grad(f)(theta)
        return value, jnp.vdot(grad, grad)

    def as_ratio(value, g2, floor):
        ok = (value > floor) & jnp.isfinite(value)
        r = g2 / jnp.where(ok, value, 1.0)
        return jnp.where(ok & jnp.isfinite(r), r, inf)

    def op_norms(points, z):
        return jax.vmap(lambda th, v: _operator_norm(f, th, v, hessian_iters, hessian_method))(
            points, z[:, :p]
        )

    # One normal draw for every random quantity (each jax.random call is costly to compile).
    n_start = max(n_adversarial - 1 - (1 if probe_steps else 0), 0)
    beta_rand = min(n_beta, n_random)
    beta_path = np.zeros(0, int)
    if path_flat is not None and n_beta:
        T = path_flat.shape[0]
        beta_path = np.unique(np.linspace(0, T - 1, min(n_beta, T)).round().astype(int))
    n_beta_a = 1 + beta_rand + beta_path.size
    n_beta_b = 1 + n_adversarial + (1 if probe_steps else 0)
    sizes = np.cumsum([n_random, n_start, n_beta_a, n_beta_b])
    z = jax.random.normal(key, (int(sizes[-1]), p + 1), dtype)
    z_rand, z_start, z_beta_a, z_beta_b = jnp.split(z, sizes[:-1])

    # 0.–2. the centre, random points uniform in the ball and the flow's points in the ball
    # (one vmapped evaluation for all of them: one compiled copy of the gradient)
    rand = _ball_points(z_rand, flat0, radius)
    cands = [flat0[None], rand]
    srcs = [jnp.array([Search.CENTER]), jnp.full((n_random,), Search.RANDOM)]
    inside = jnp.ones((1 + n_random,), bool)
    if path_flat is not None:
        dist = jnp.linalg.norm(path_flat - flat0, axis=1)
        ok = jnp.all(jnp.isfinite(path_flat), axis=1) & (dist <= radius)
        cands.append(jnp.where(ok[:, None], path_flat, flat0))  # θ_0 stands in outside B
        srcs.append(jnp.full((path_flat.shape[0],), Search.TRAJECTORY))
        inside = jnp.concatenate([inside, ok])
    cands, srcs = jnp.concatenate(cands), jnp.concatenate(srcs)
    values, g2s = jax.vmap(value_and_sq)(cands)
    f0 = values[0]
    floor = f_floor_rel * f0
    vals = jnp.where(inside, as_ratio(values, g2s, floor), inf)

    # β̂, first part: the centre, some random points, some trajectory points
    beta_pts = [flat0[None]]
    if beta_rand:
        beta_pts.append(rand[:beta_rand])
    if beta_path.size:
        beta_pts.append(cands[1 + n_random + beta_path])  # θ_0 where outside B
    norms_a = op_norms(jnp.concatenate(beta_pts), z_beta_a)
    beta_center = norms_a[0]

    ends = []  # end points of the local searches, for β̂

    # 3. flow probe: projected gradient descent on f from θ_0 with step probe_lr/β̂(θ_0)
    if probe_steps:
        g0 = jnp.sqrt(g2s[0])
        eta = jnp.where(
            beta_center > 0,
            probe_lr / jnp.where(beta_center > 0, beta_center, 1.0),
            radius / (probe_steps * jnp.where(g0 > 0, g0, 1.0)),
        )

        def probe_step(carry, _):
            theta, best_val, best_theta = carry
            value, grad = jax.value_and_grad(f)(theta)
            val = as_ratio(value, jnp.vdot(grad, grad), floor)
            better = val < best_val
            best_theta = jnp.where(better, theta, best_theta)
            new = _project(theta - eta * grad, flat0, radius)
            new = jnp.where(jnp.all(jnp.isfinite(new)), new, theta)
            return (new, jnp.minimum(val, best_val), best_theta), None

        (probe_last, probe_val, probe_best), _ = jax.lax.scan(
            probe_step, (flat0, inf, flat0), None, length=probe_steps
        )
        cands = jnp.concatenate([cands, probe_best[None]])
        vals = jnp.concatenate([vals, probe_val[None]])
        srcs = jnp.concatenate([srcs, jnp.array([Search.PROBE])])
        ends.append(probe_last[None])

    # 4. adversarial: projected normalised descent on log(‖∇f‖²/f) from θ_0, the probe's
    #    best point and random points of the ball
    if n_adversarial:
        starts = [flat0[None]]
        if probe_steps and n_adversarial > 1:
            starts.append(probe_best[None])
        starts = jnp.concatenate(starts + [_ball_points(z_start, flat0, radius)])

        def objective(theta):
            value, g2 = value_and_sq(theta)
            return jnp.log(g2) - jnp.log(value), (value, g2)

        decay = 1e-3 ** (1.0 / max(ascent_steps - 1, 1))

        def descend(theta0):
            def step(carry, k):
                theta, best_val, best_theta = carry
                (_, (value, g2)), g = jax.value_and_grad(objective, has_aux=True)(theta)
                val = as_ratio(value, g2, floor)
                better = val < best_val
                best_theta = jnp.where(better, theta, best_theta)
                gn = jnp.linalg.norm(g)
                ok = jnp.isfinite(gn) & (gn > 0)
                size = ascent_lr * radius * decay**k
                new = _project(theta - size * g / jnp.where(ok, gn, 1.0), flat0, radius)
                new = jnp.where(ok, new, theta)
                return (new, jnp.minimum(val, best_val), best_theta), None

            init = (theta0, inf, theta0)
            (last, best_val, best_theta), _ = jax.lax.scan(
                step, init, jnp.arange(ascent_steps, dtype=dtype)
            )
            return best_val, best_theta, last

        adv_vals, adv_best, adv_last = jax.vmap(descend)(starts)
        cands = jnp.concatenate([cands, adv_best])
        vals = jnp.concatenate([vals, adv_vals])
        srcs = jnp.concatenate([srcs, jnp.full((n_adversarial,), Search.ADVERSARIAL)])
        ends.append(adv_last)

    i = jnp.argmin(vals)
    alpha, alpha_theta, source = vals[i], cands[i], srcs[i]
    by_search = jnp.stack([jnp.min(jnp.where(srcs == s, vals, inf), initial=inf) for s in Search])

    # β̂, second part: the α point and the end points of the local searches
    norms_b = op_norms(jnp.concatenate([alpha_theta[None]] + ends), z_beta_b)
    beta = jnp.maximum(jnp.max(norms_a), jnp.max(norms_b))

    margin = radius**2 * alpha / (4 * f0)
    travel = 2 * jnp.sqrt(f0 / alpha)
    max_step = 2 / beta
    num_points = vals.shape[0] - (1 if probe_steps else 0) - n_adversarial
    num_points += probe_steps + ascent_steps * n_adversarial
    return CriterionReport(
        radius=radius,
        initial_risk=f0,
        alpha=alpha,
        alpha_center=vals[0],
        alpha_by_search=by_search,
        alpha_point=unravel(alpha_theta),
        alpha_distance=jnp.linalg.norm(alpha_theta - flat0),
        alpha_source=source.astype(jnp.int32),
        beta=beta,
        beta_center=beta_center,
        holds=4 * f0 < radius**2 * alpha,
        margin=margin,
        rate=alpha,
        travel_bound=travel,
        max_step=max_step,
        gd_max_step=jnp.maximum(max_step * (1 - travel / radius), 0.0),
        center=unravel(flat0),
        num_points=jnp.asarray(num_points, jnp.int32),
    )


@dataclasses.dataclass(frozen=True)
class _Options:
    n_random: int
    n_adversarial: int
    ascent_steps: int
    ascent_lr: float
    probe_steps: int
    probe_lr: float
    n_beta: int
    hessian_iters: int
    hessian_method: str


def _default_floor(dtype) -> float:
    """Default relative floor ``(10³ ε)²`` on ``f/f(θ_0)`` (module docstring)."""
    return float((1e3 * np.finfo(np.dtype(dtype)).eps) ** 2)


def _nonneg_int(name, value) -> int:
    return positive_int(name, value, minimum=0)


def _prepare(risk, model, key, trajectory, f_floor, what, **opts):
    if not callable(risk):
        raise TypeError("risk must be callable as risk(model) -> scalar.")
    if key is None:
        raise TypeError("pass key=jax.random.key(...) (the searches are random).")
    o = _Options(
        n_random=_nonneg_int("n_random", opts["n_random"]),
        n_adversarial=_nonneg_int("n_adversarial", opts["n_adversarial"]),
        ascent_steps=positive_int("ascent_steps", opts["ascent_steps"]),
        ascent_lr=positive_float("ascent_lr", opts["ascent_lr"]),
        probe_steps=_nonneg_int("probe_steps", opts["probe_steps"]),
        probe_lr=positive_float("probe_lr", opts["probe_lr"]),
        n_beta=_nonneg_int("n_beta", opts["n_beta"]),
        hessian_iters=positive_int("hessian_iters", opts["hessian_iters"]),
        hessian_method=_check_method(opts["hessian_method"]),
    )
    _warn_if_not_smooth(model, what, stacklevel=4)
    flat0, f, _, _ = _flat_loss(model, risk)
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
        path_flat = _path_points(trajectory, partition(model)[0]).astype(flat0.dtype)
    return o, path_flat, jnp.asarray(f_floor_rel, flat0.dtype)


def ball_criterion(
    risk,
    model,
    radius: float,
    *,
    key: PRNGKeyArray,
    n_random: int = 64,
    n_adversarial: int = 4,
    ascent_steps: int = 100,
    ascent_lr: float = 0.2,
    probe_steps: int = 500,
    probe_lr: float = 1.0,
    trajectory=None,
    n_beta: int = 4,
    hessian_iters: int = 32,
    hessian_method: str = "lanczos",
    f_floor: float | None = None,
) -> CriterionReport:
    """ESTIMATE Chatterjee's criterion ``4 f(θ_0) < r² α(θ_0, r)`` on a concrete model.

    ``f = risk(model)`` as a function of the trainable parameters θ; ``θ_0`` = the model's
    current parameters; ``r = radius`` (Euclidean norm over all trainable arrays).

    **The verdict is an estimate**: ``α̂`` is the smallest ``‖∇f‖²/f`` *found* in the
    ball (so ``α̂ ≥ α``) and ``β̂`` the largest ``‖∇²f‖_op`` *found* (so ``β̂ ≤ β``).

    **Searches** (module docstring): the centre; ``n_random`` points uniform in the ball;
    the points of ``trajectory.path`` inside the ball (a :class:`gflow_jax.flow.Trajectory`
    from ``gradient_flow(..., save_path=True)``, optional); a flow probe of ``probe_steps``
    projected gradient-descent steps ``η = probe_lr/β̂(θ_0)`` from ``θ_0`` (``0`` disables
    it); ``n_adversarial`` runs (from ``θ_0``, the probe's best point, then random points
    of the ball) of ``ascent_steps`` steps of projected normalised gradient descent on
    ``log(‖∇f‖²/f)``, step lengths decaying geometrically from ``ascent_lr · r`` to
    ``10^{−3} ascent_lr · r``. Points with
    ``f ≤ f_floor`` (default ``(10³ε)² f(θ_0)``, see the module docstring) are excluded
    (``f > 0`` in the definition of ``α``).

    ``β̂``: ``hessian_iters`` steps of Lanczos (``hessian_method="lanczos"``) or power
    iteration (``"power"``) on Hessian-vector products at the centre, the ``α̂`` point,
    the probe's and adversarial end points and up to ``n_beta`` random and ``n_beta``
    trajectory points.

    **Errors and warnings**: ``radius`` not finite and positive, or ``f(θ_0) = 0`` →
    ``ValueError``; a model with a ReLU activation (``DeepMLP(..., "relu")``,
    :class:`gflow_jax.ShallowReLU`) → ``UserWarning`` (the criterion assumes ``f ∈ C²``).

    Returns a :class:`CriterionReport`. Compiled once per model structure and options
    (``radius`` and ``key`` are traced).
    """
    radius = positive_float("radius", radius, hint="The ball radius must be finite and > 0.")
    o, path_flat, floor = _prepare(
        risk,
        model,
        key,
        trajectory,
        f_floor,
        "ball_criterion",
        n_random=n_random,
        n_adversarial=n_adversarial,
        ascent_steps=ascent_steps,
        ascent_lr=ascent_lr,
        probe_steps=probe_steps,
        probe_lr=probe_lr,
        n_beta=n_beta,
        hessian_iters=hessian_iters,
        hessian_method=hessian_method,
    )
    dtype = floor.dtype
    return _criterion_core(
        model, risk, jnp.asarray(radius, dtype), key, path_flat, floor, **dataclasses.asdict(o)
    )


@eqx.filter_jit
def _criterion_batch(models, risk, radii, keys, points, floor, **opts):
    def one(model, radius, key, pts):
        return _criterion_core(model, risk, radius, key, pts, floor, **opts)

    return eqx.filter_vmap(one)(models, radii, keys, points)


def batched_ball_criterion(
    risk,
    models,
    radii: ArrayLike,
    *,
    keys: PRNGKeyArray,
    points: ArrayLike | None = None,
    n_random: int = 64,
    n_adversarial: int = 4,
    ascent_steps: int = 100,
    ascent_lr: float = 0.2,
    probe_steps: int = 500,
    probe_lr: float = 1.0,
    n_beta: int = 4,
    hessian_iters: int = 32,
    hessian_method: str = "lanczos",
    f_floor: float | None = None,
) -> CriterionReport:
    """:func:`ball_criterion` for a batch of models in one compiled, vmapped call.

    ``models``: a stacked model (every array with a leading batch axis ``B``, e.g.
    ``eqx.filter_vmap(init)(keys)``); ``radii``: ``(B,)`` radii (one per model) or a
    scalar; ``keys``: ``(B,)`` PRNG keys. ``points``: optional ``(B, T, p)`` flattened
    parameter points of the members' flows (``ravel_pytree`` order of the trainable
    parameters, e.g. ``Ensemble.final_params[:, None]``); they play the role of
    ``trajectory.path`` (search ``TRAJECTORY``; NaN rows and points outside the ball are
    ignored). ``f_floor`` is relative here: the floor is ``f_floor · f(θ_0)`` per member
    (default ``(10³ε)²``). Returns a :class:`CriterionReport` whose fields have a leading
    axis ``B``. ESTIMATES, exactly as in :func:`ball_criterion`.
    """
    if not callable(risk):
        raise TypeError("risk must be callable as risk(model) -> scalar.")
    o = _Options(
        n_random=_nonneg_int("n_random", n_random),
        n_adversarial=_nonneg_int("n_adversarial", n_adversarial),
        ascent_steps=positive_int("ascent_steps", ascent_steps),
        ascent_lr=positive_float("ascent_lr", ascent_lr),
        probe_steps=_nonneg_int("probe_steps", probe_steps),
        probe_lr=positive_float("probe_lr", probe_lr),
        n_beta=_nonneg_int("n_beta", n_beta),
        hessian_iters=positive_int("hessian_iters", hessian_iters),
        hessian_method=_check_method(hessian_method),
    )
    leaves = jtu.tree_leaves(partition(models)[0])
    if not leaves:
        raise ValueError("the models have no trainable floating-point arrays.")
    batch = {x.shape[0] if x.ndim else None for x in leaves}
    if len(batch) != 1 or None in batch:
        raise ValueError("models must be stacked along a leading batch axis (all arrays).")
    B = batch.pop()
    dtype = leaves[0].dtype
    _warn_if_not_smooth(models, "batched_ball_criterion")
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
    if f_floor is None:
        rel = _default_floor(dtype)
    else:
        rel = positive_float("f_floor", f_floor)
    if points is not None:
        points = jnp.asarray(points, dtype)
        p = sum(x[0].size for x in leaves)
        if points.ndim != 3 or points.shape[0] != B or points.shape[2] != p:
            raise ValueError(
                f"points must have shape (B, T, p) = ({B}, T, {p}), got {points.shape}."
            )
    return _criterion_batch(
        models,
        risk,
        jnp.asarray(radii, dtype),
        keys,
        points,
        jnp.asarray(rel, dtype),
        **dataclasses.asdict(o),
    )


# ----------------------------------------------------------------------------------
# Radius scan
# ----------------------------------------------------------------------------------


class RadiusScan(eqx.Module):
    """The estimated criterion as a function of the radius (radii sorted ascending).

    ``alpha`` and ``beta`` are made monotone in ``r`` (a point found in a smaller ball
    lies in every larger one, so ``α̂(r_k) = min_{j ≤ k} α̂_raw(r_j)`` and
    ``β̂(r_k) = max_{j ≤ k} β̂_raw(r_j)``); ``alpha_raw``/``beta_raw`` are the per-radius
    searches. ``holds = 4 f(θ_0) < r² α̂``; ``margin = r² α̂/(4 f(θ_0))``;
    ``travel_bound = 2√(f(θ_0)/α̂)``; ``max_step = 2/β̂``; ``gd_max_step`` as in
    :class:`CriterionReport`. ``smallest_certified_radius``: the smallest scanned radius
    where the estimate holds (NaN if none) — an ESTIMATE like everything else.
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


def radius_scan(
    risk,
    model,
    radii: ArrayLike,
    *,
    key: PRNGKeyArray,
    trajectory=None,
    f_floor: float | None = None,
    **options: Any,
) -> RadiusScan:
    """:func:`ball_criterion` on each of ``radii`` (same ``key``; options as there).

    Returns a :class:`RadiusScan` with arrays over the radii sorted ascending.
    """
    radii = np.sort(np.asarray(radii, dtype=float).ravel())
    if radii.size == 0:
        raise ValueError("radii must contain at least one radius.")
    if not np.all(np.isfinite(radii)) or np.any(radii <= 0):
        raise ValueError(f"every radius must be finite and > 0, got {radii}.")
    defaults = dict(
        n_random=64,
        n_adversarial=4,
        ascent_steps=100,
        ascent_lr=0.2,
        probe_steps=500,
        probe_lr=1.0,
        n_beta=4,
        hessian_iters=32,
        hessian_method="lanczos",
    )
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}; allowed: {sorted(defaults)}.")
    defaults.update(options)
    o, path_flat, floor = _prepare(risk, model, key, trajectory, f_floor, "radius_scan", **defaults)
    reports = [
        _criterion_core(
            model,
            risk,
            jnp.asarray(r, floor.dtype),
            key,
            path_flat,
            floor,
            **dataclasses.asdict(o),
        )
        for r in radii
    ]
    f0 = reports[0].initial_risk
    dtype = f0.dtype
    alpha_raw = jnp.stack([rep.alpha for rep in reports])
    beta_raw = jnp.stack([rep.beta for rep in reports])
    alpha = jax.lax.cummin(alpha_raw)
    beta = jax.lax.cummax(beta_raw)
    r = jnp.asarray(radii, dtype)
    holds = 4 * f0 < r**2 * alpha
    travel = 2 * jnp.sqrt(f0 / alpha)
    max_step = 2 / beta
    certified = np.asarray(holds)
    smallest = radii[np.argmax(certified)] if certified.any() else np.nan
    return RadiusScan(
        radii=r,
        initial_risk=f0,
        alpha=alpha,
        alpha_raw=alpha_raw,
        beta=beta,
        beta_raw=beta_raw,
        holds=holds,
        margin=r**2 * alpha / (4 * f0),
        travel_bound=travel,
        max_step=max_step,
        gd_max_step=jnp.maximum(max_step * (1 - travel / r), 0.0),
        smallest_certified_radius=jnp.asarray(smallest, dtype),
    )


# ----------------------------------------------------------------------------------
# Checking a prediction against an actual flow
# ----------------------------------------------------------------------------------


class PredictionCheck(eqx.Module):
    """An actual flow against a :class:`CriterionReport` (arrays on the save grid ``ts``).

    - ``distance``: ``‖θ_t − θ_0‖``; ``radius``; ``travel_bound`` ``2√(f(θ_0)/α̂)``;
    - ``risk``: ``f(θ_t)``; ``risk_bound``: ``e^{−α̂ t} f(θ_0)``;
    - ``pl_ratio``: ``‖∇f(θ_t)‖²/f(θ_t)`` (the instantaneous rate ``−d/dt log f``);
    - ``max_distance``; ``stayed_in_ball`` (``max_distance ≤ r``);
      ``within_travel_bound`` (``max_distance ≤ travel_bound``);
    - ``max_excess``: ``max_t log(f(θ_t)/(e^{−α̂ t} f(θ_0)))`` (``≤ 0`` when the predicted
      rate holds); ``obeyed_rate``: ``max_excess ≤ log(1 + rtol)``;
    - ``min_pl_ratio``: the smallest ratio along the flow (``≥ α`` in ``B``; if it is
      below ``α̂`` the search missed it).

    Save times after the trajectory stopped (NaN) are ignored.
    """

    ts: Float[Array, " T"]
    distance: Float[Array, " T"]
    risk: Float[Array, " T"]
    risk_bound: Float[Array, " T"]
    pl_ratio: Float[Array, " T"]
    radius: Float[Array, ""]
    travel_bound: Float[Array, ""]
    max_distance: Float[Array, ""]
    stayed_in_ball: Bool[Array, ""]
    within_travel_bound: Bool[Array, ""]
    max_excess: Float[Array, ""]
    obeyed_rate: Bool[Array, ""]
    min_pl_ratio: Float[Array, ""]


def check_prediction(report: CriterionReport, trajectory, *, rtol: float = 1e-6) -> PredictionCheck:
    """Track a flow (``gradient_flow(..., save_path=True)``) against the report's predictions.

    Compares ``‖θ_t − θ_0‖`` with ``r`` and the travel bound, ``f(θ_t)`` with
    ``e^{−α̂ t} f(θ_0)`` (relative tolerance ``rtol`` for the ODE solver's error), and reports
    the running PL ratio ``‖∇f‖²/f`` from ``trajectory.risk`` and ``trajectory.grad_norm``.
    ``θ_0`` is ``report.center``. Returns a :class:`PredictionCheck`.
    """
    if not isinstance(report, CriterionReport):
        raise TypeError("report must be a CriterionReport from ball_criterion.")
    if jnp.ndim(report.alpha) != 0:
        raise ValueError("pass a single (unbatched) CriterionReport.")
    rtol = positive_float("rtol", rtol)
    center = ravel_pytree(report.center)[0]
    path = _path_points(trajectory, report.center)
    if jnp.ndim(trajectory.ts) != 1:
        raise ValueError("pass a single (unbatched) trajectory.")
    ts = jnp.asarray(trajectory.ts, center.dtype)
    distance = jnp.linalg.norm(path - center, axis=1)
    risk = jnp.asarray(trajectory.risk)
    f0 = report.initial_risk
    bound = jnp.exp(-report.alpha * ts) * f0
    pl = trajectory.grad_norm**2 / risk
    valid = jnp.isfinite(distance) & jnp.isfinite(risk)
    max_distance = jnp.max(jnp.where(valid, distance, -jnp.inf))
    excess = jnp.where(valid & (risk > 0), jnp.log(risk) - jnp.log(bound), -jnp.inf)
    max_excess = jnp.max(excess)
    return PredictionCheck(
        ts=ts,
        distance=distance,
        risk=risk,
        risk_bound=bound,
        pl_ratio=pl,
        radius=report.radius,
        travel_bound=report.travel_bound,
        max_distance=max_distance,
        stayed_in_ball=max_distance <= report.radius,
        within_travel_bound=max_distance <= report.travel_bound,
        max_excess=max_excess,
        obeyed_rate=max_excess <= math.log1p(rtol),
        min_pl_ratio=jnp.min(jnp.where(valid & jnp.isfinite(pl), pl, jnp.inf)),
    )


# ----------------------------------------------------------------------------------
# Ensemble level: certified × converged
# ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ContingencyTable:
    """2×2 table of an ensemble: rows certified yes/no, columns converged yes/no.

    ``counts[i, j]`` with ``i = 0`` certified, ``1`` not; ``j = 0`` converged, ``1`` not.
    ``false_certificates`` = certified but not converged: a counter-example to the
    theorem *or* (far more likely) to the optimism of the estimate, or a flow stopped
    too early — inspect those runs.
    """

    counts: np.ndarray

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def false_certificates(self) -> int:
        return int(self.counts[0, 1])

    @property
    def certified_fraction(self) -> float:
        return float(self.counts[0].sum() / max(self.total, 1))

    @property
    def converged_fraction(self) -> float:
        return float(self.counts[:, 0].sum() / max(self.total, 1))

    def to_markdown(self) -> str:
        c = self.counts
        return "\n".join(
            [
                "| | converged | not converged | total |",
                "|---|---:|---:|---:|",
                f"| certified | {c[0, 0]} | {c[0, 1]} | {c[0].sum()} |",
                f"| not certified | {c[1, 0]} | {c[1, 1]} | {c[1].sum()} |",
                f"| total | {c[:, 0].sum()} | {c[:, 1].sum()} | {c.sum()} |",
            ]
        )

    def __str__(self) -> str:
        return self.to_markdown()


def certification_table(certified: ArrayLike, converged: ArrayLike) -> ContingencyTable:
    """Cross-tabulate boolean arrays ``certified`` and ``converged`` (same shape)."""
    a = np.asarray(certified)
    b = np.asarray(converged)
    if a.shape != b.shape:
        raise ValueError(f"certified and converged must have one shape, got {a.shape}, {b.shape}.")
    if a.dtype != bool or b.dtype != bool:
        raise TypeError("certified and converged must be boolean arrays.")
    a, b = a.ravel(), b.ravel()
    counts = np.array(
        [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]], dtype=np.int64
    )
    return ContingencyTable(counts)
