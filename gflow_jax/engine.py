"""``run_ensemble``: one dynamics from many initialisations, in vmapped, compacted pools.

A plain ``jax.vmap(diffeqsolve)`` runs every member in lockstep until the slowest is
done; on ReLU risks step counts are heavy-tailed, so most of that work is wasted. The
engine instead integrates a *pool* of ``chunk_size`` members for a *segment* of at most
``segment_steps`` steps (:meth:`gflow_jax.AbstractDynamics.advance`, which carries each
member's solver and controller state, so a resumed solve is the same solve), harvests
the finished members, refills their slots from the queue, and once the queue is empty
re-packs survivors into pools of ``chunk_size / 8^k`` members (at least 16), so only a
few shapes are ever compiled. Pools are formed per *phase* of the dynamics (gradient flow: explicit
transient, stiff tail), so a vmapped pool never pays for two solvers. Pools may be split
over several devices, one host thread each.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Key, PRNGKeyArray, PyTree, UInt32

from ._checks import (
    check_bool,
    check_devices,
    check_model,
    check_risk_callable,
    first_difference,
    one_of_types,
    positive_int,
)
from .dynamics.analysis import decay_of, limit_of
from .dynamics.base import AbstractDynamics
from .dynamics.integrate import check_problem, make_problem
from .dynamics.problem import Problem, check_horizon
from .ensemble import Ensemble, architecture
from .limits import LimitAnalysis
from .models.base import partition

#: The smallest pool the scheduler shrinks to (see :func:`_schedule`).
MIN_POOL = 16

# ----------------------------------------------------------------------------------
# Compiled pool kernels (module level, so repeated runs reuse the compilation)
# ----------------------------------------------------------------------------------


def _member_problem(problem: Problem, frozen: PyTree) -> Problem:
    """The problem of one member: its frozen arrays combined into the shared static part."""
    return eqx.tree_at(lambda p: p.static, problem, eqx.combine(frozen, problem.static))


@eqx.filter_jit
def _init_pool(dynamics, problem, params, frozen):
    return jax.vmap(lambda p, f: dynamics.init(_member_problem(problem, f), p))(params, frozen)


@eqx.filter_jit
def _advance_pool(dynamics, problem, state, frozen, steps: int, phase: int):
    return jax.vmap(lambda s, f: dynamics.advance(_member_problem(problem, f), s, steps, phase))(
        state, frozen
    )


@eqx.filter_jit
def _finish_pool(dynamics, problem, state, params, frozen, limits):
    def one(s, p, f):
        member = _member_problem(problem, f)
        traj = dynamics.finish(member, s, p)
        return traj, limit_of(member, traj, limits), decay_of(traj)

    return jax.vmap(one)(state, params, frozen)


# ----------------------------------------------------------------------------------
# Host-side helpers (numpy views of batched pytrees)
# ----------------------------------------------------------------------------------


def _take(tree, idx):
    return jtu.tree_map(lambda x: x[idx], tree)


def _put(store, idx, values):
    def put(s, v):
        s[idx] = v
        return s

    return jtu.tree_map(put, store, values)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _device_list(devices: Sequence[jax.Device] | None) -> list:
    devices = list(jax.devices()[:1] if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device, e.g. devices=jax.devices().")
    return devices


def _progress(total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="traj", desc="gflow ensemble", leave=False)


def _advance_on_devices(dynamics, problem, pool, frozen, devices, steps, phase):
    """Advance a host-side pool, split evenly over `devices` (one host thread each).

    Each device gets its own slice and its own solve, so devices never synchronise
    inside the solver loop.
    """
    n = len(devices)
    size = len(jtu.tree_leaves(pool)[0]) // n

    def run(i):
        part = slice(i * size, (i + 1) * size)
        state_i, frozen_i = jax.device_put((_take(pool, part), _take(frozen, part)), devices[i])
        return jax.device_get(_advance_pool(dynamics, problem, state_i, frozen_i, steps, phase))

    if n == 1:
        return run(0)
    with ThreadPoolExecutor(max_workers=n) as executor:  # XLA releases the GIL
        outs = list(executor.map(run, range(n)))
    return jtu.tree_map(lambda *xs: np.concatenate(xs), *outs)


def _pool_size(members: int, cap: int, min_pool: int) -> int:
    """The pool for `members` live members: ``cap / 8^k`` for the largest ``k`` that fits.

    Shrinking by factors of 8 (not 2) bounds the number of compiled pool shapes, which
    dominates small ensembles on a CPU (each shape is one more compilation per phase),
    while pools still shrink with the survivors of a heavy tail.
    """
    size = cap
    while size // 8 >= max(members, min_pool):
        size //= 8
    return size


def _check_keys(keys) -> Array:
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        if keys.ndim != 1:
            raise ValueError(f"keys must be a 1-d batch of keys, got shape {keys.shape}.")
    elif keys.ndim != 2 or keys.shape[-1] != 2 or keys.dtype != jnp.uint32:
        raise ValueError(
            "keys must be a batch of PRNG keys, e.g. jax.random.split(jax.random.key(0), 64)."
        )
    if keys.shape[0] < 1:
        raise ValueError("keys must contain at least one key.")
    return keys


def _build_members(init, keys):
    """``eqx.filter_vmap(init)(keys)``; on failure, say which leaf differs between members."""
    try:
        return eqx.filter_vmap(init)(keys)
    except Exception as err:
        difference = _architecture_difference(init, keys)
        if difference is not None:
            raise ValueError(
                "run_ensemble: all members must share one architecture (init(key) may not "
                f"choose array shapes, dtypes or fields by the key); here {difference}."
            ) from err
        err.add_note(
            "(raised by run_ensemble while building the members: init(key) is vmapped "
            "over the keys with eqx.filter_vmap, so it must be traceable, e.g. no Python "
            "int()/float()/if on values computed from the key)"
        )
        raise


def _architecture_difference(init, keys) -> str | None:
    """Build a few members one by one (eagerly) and report the first architectural difference."""
    try:
        first = init(keys[0])
    except Exception:
        return None
    for i in range(1, min(int(keys.shape[0]), 8)):
        try:
            other = init(keys[i])
        except Exception:
            return None
        where = first_difference("init(keys[0])", first, f"init(keys[{i}])", other)
        if where is not None:
            return where
    return None


# ----------------------------------------------------------------------------------
# run_ensemble
# ----------------------------------------------------------------------------------


def run_ensemble(
    init: Callable[[PRNGKeyArray], Any],
    risk,
    keys: Key[Array, " batch"] | UInt32[Array, "batch 2"],
    t1: float,
    dynamics: AbstractDynamics | None = None,
    *,
    n_save: int = 100,
    save_ts: ArrayLike | None = None,
    limits: LimitAnalysis | None = LimitAnalysis(),
    chunk_size: int = 256,
    segment_steps: int = 128,
    compact: bool = True,
    devices: Sequence[jax.Device] | None = None,
    progress: bool | None = None,
) -> Ensemble:
    """Run a dynamics from every initialisation ``init(key)`` and classify every limit.

    **Arguments:**

    - `init`: ``key -> model``; vmapped over `keys` with ``eqx.filter_vmap`` (every member
      must have the same architecture).
    - `risk`: ``risk(model) -> L``, shared by all members.
    - `keys`: a batch of PRNG keys, e.g. ``jax.random.split(key, 4096)``. Same keys, same
      results.
    - `t1`: the time horizon (``math.inf``: to the limit, i.e. until a stop rule fires or
      the step budget is spent).
    - `dynamics`: :class:`gflow_jax.GradientFlow` (default) or
      :class:`gflow_jax.GradientDescent`.
    - `n_save`, `save_ts`: the save grid, as in :func:`gflow_jax.integrate`. With
      ``t1 = inf`` the stored grid is trimmed to the times some member reached.
    - `limits`: options of the limit classification (``None`` skips it).
    - `chunk_size`: members integrated at once (the pool size; a power of two is best).
    - `segment_steps`: steps per segment between compactions; a pool shrunk to
      ``chunk_size / k`` members runs segments ``k`` times longer.
    - `compact`: refill and shrink pools between segments (default). ``False`` runs the
      members chunk by chunk in lockstep (for comparison).
    - `devices`: devices to split each pool over, one host thread each (default: the
      first device). On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
      (set before JAX starts) makes each core a device.
    - `progress`: a tqdm bar of finished members (default: only on a terminal).

    A member that diverges, becomes ill-posed or whose solver fails is reported as such
    (its outcome and verdict) and never affects the others. `stats` of the result
    records ``useful_member_steps`` (the members' steps), ``evaluated_member_steps``
    (pool size × lockstep steps, summed over segments), their ratio ``waste``, and the
    number of ``segments``.

    **Returns:**

    An :class:`gflow_jax.Ensemble`.
    """
    if not callable(init):
        raise TypeError(
            f"init must be a callable key -> model (e.g. lambda key: gf.ShallowReLU(1, 8, "
            f"key=key)), got {init!r}."
        )
    check_risk_callable(risk)
    keys = _check_keys(keys)
    batch = int(keys.shape[0])
    chunk_size = positive_int("chunk_size", chunk_size)
    segment_steps = positive_int("segment_steps", segment_steps)
    compact = check_bool("compact", compact)
    if progress is not None:
        progress = check_bool("progress", progress)
    if limits is not None:
        one_of_types("limits", limits, LimitAnalysis, "a gflow_jax.LimitAnalysis or None")
    devices = check_devices("devices", devices)
    check_horizon(t1)
    models = _build_members(init, keys)
    check_model("init(key)", models)
    params, static = partition(models)
    frozen, rest = eqx.partition(static, eqx.is_array)
    first = eqx.combine(_take(params, 0), eqx.combine(_take(frozen, 0), rest))
    _, _, dtype = check_problem(first, risk, what="init(key)")
    dynamics, problem = make_problem(dynamics, dtype, risk, rest, t1, n_save, save_ts, False)
    bar = _progress(batch, progress)
    try:
        store, stats = _schedule(
            dynamics,
            problem,
            params,
            frozen,
            batch,
            chunk_size,
            segment_steps,
            compact,
            devices,
            bar,
        )
    finally:
        if bar is not None:
            bar.close()
    return _assemble(dynamics, problem, store, params, frozen, limits, batch, chunk_size,
                     first, stats)  # fmt: skip


def _schedule(dynamics, problem, params, frozen, batch, chunk_size, segment_steps, compact,
              devices, bar):  # fmt: skip
    """The host loop: pools per phase, segments, harvest, refill, shrink."""
    n_dev = len(devices)
    cap = max(n_dev, _next_pow2(min(chunk_size, batch)))
    cap = -(-cap // n_dev) * n_dev
    # Pools never shrink below MIN_POOL members: on a CPU a vmapped step of 16 members
    # costs little more than one of 1, and every pool size is one more compilation per
    # phase (measured on the demo: 52 s with one pool shape, 70 s with two, 87 s with four).
    min_pool = min(cap, max(n_dev, MIN_POOL))

    # Initial states of every member, pool by pool, kept on the host. Row `batch` is a
    # scratch row for padding slots.
    store = None
    for start in range(0, batch, cap):
        idx = np.arange(start, start + cap).clip(max=batch - 1)
        out = jax.device_get(_init_pool(dynamics, problem, _take(params, idx), _take(frozen, idx)))
        if store is None:
            store = jtu.tree_map(lambda x: np.empty((batch + 1,) + x.shape[1:], x.dtype), out)
        n = min(cap, batch - start)
        store = _put(store, np.arange(start, start + n), _take(out, slice(0, n)))
    store = _put(store, np.array([batch]), _take(store, np.array([0])))
    frozen_store = jtu.tree_map(
        lambda x: np.concatenate([np.asarray(x), np.asarray(x[:1])]), frozen
    )

    queue = list(range(batch))[::-1]  # pop() gives members in order
    done = np.zeros(batch + 1, bool)
    done[batch] = True  # the scratch row never counts
    started = np.zeros(batch + 1, bool)
    chunk = np.zeros(0, np.int64)  # lockstep mode: the members of the current chunk
    useful = evaluated = segments = 0

    def candidates(phase: int) -> list[int]:
        pool = chunk if not compact else np.flatnonzero(started[:batch])
        return [int(i) for i in pool if not done[i] and store.phase[i] == phase]

    while not done[:batch].all():
        if not compact and (chunk.size == 0 or done[chunk].all()):
            chunk = np.array([queue.pop() for _ in range(min(cap, len(queue)))], np.int64)
            started[chunk] = True
        # the phase with the most members waiting (new members start in phase 0)
        waiting = [len(candidates(p)) for p in range(dynamics.num_phases)]
        if compact:
            waiting[0] += len(queue)
        phase = int(np.argmax(waiting))
        members = candidates(phase)
        while compact and phase == 0 and len(members) < cap and queue:
            i = queue.pop()
            started[i] = True
            members.append(i)
        members = members[:cap]
        size = cap if not compact else _pool_size(len(members), cap, min_pool)
        size = -(-size // n_dev) * n_dev
        slots = np.array(members + [batch] * (size - len(members)), np.int64)
        live = ~done[slots]
        steps_before = store.num_steps[slots].copy()
        # smaller pools run longer segments; the budget and the stiffness checks are the
        # members' own (counted in their states), so `seg` only sets the speed
        seg = dynamics.segment_length(segment_steps * max(1, cap // size))
        pool = _advance_on_devices(
            dynamics,
            problem,
            _take(store, slots),
            _take(frozen_store, slots),
            devices,
            seg,
            phase,
        )
        segments += 1
        delta = np.where(live, pool.num_steps - steps_before, 0)
        useful += int(delta.sum())
        evaluated += len(slots) * int(delta.max())
        store = _put(store, slots[live], _take(pool, live))
        finished = live & np.asarray(pool.finished)
        done[slots[finished]] = True
        if bar is not None:
            bar.update(int(finished.sum()))
    stats = {
        "useful_member_steps": useful,
        "evaluated_member_steps": evaluated,
        "waste": evaluated / max(useful, 1),
        "segments": segments,
        "pool_size": cap,
        "segment_steps": segment_steps,
    }
    return store, stats


def _assemble(dynamics, problem, store, params, frozen, limits, batch, chunk_size, first,
              stats) -> Ensemble:  # fmt: skip
    """Finish, classify limits and fit decay laws pool by pool; stack into an Ensemble."""
    cap = _next_pow2(min(chunk_size, batch))
    pieces = []
    for start in range(0, batch, cap):
        idx = np.arange(start, start + cap).clip(max=batch - 1)
        out = _finish_pool(
            dynamics,
            problem,
            jax.device_put(_take(store, idx)),
            _take(params, idx),
            _take(frozen, idx),
            limits,
        )
        pieces.append(jax.device_get(_take(out, slice(0, min(cap, batch - start)))))
    traj, limit, decay = jtu.tree_map(lambda *xs: jnp.asarray(np.concatenate(xs)), *pieces)
    ts = np.asarray(problem.save_ts)
    keep = np.ones(ts.shape, bool)
    if np.isinf(float(problem.t1)):  # trim the grid to the times some member reached
        reached = ts <= np.max(np.asarray(traj.t_stop))
        last = int(np.flatnonzero(reached).max()) + 1
        keep[last + 1 :] = False
    final_params = jax.vmap(lambda p: ravel_pytree(p)[0])(partition(traj.model)[0])
    init_norm = jax.vmap(lambda p: ravel_pytree(p)[0])(params)
    return Ensemble(
        ts=jnp.asarray(ts[keep]),
        outcome=traj.outcome,
        verdict=traj.verdict,
        limit=limit.limit,
        limit_reason=limit.reason,
        limit_risk=limit.limit_risk,
        limit_grad_norm=limit.limit_grad_norm,
        limit_min_eig=limit.limit_min_eig,
        limit_max_eig=limit.limit_max_eig,
        limit_num_negative=limit.limit_num_negative,
        limit_num_zero=limit.limit_num_zero,
        refine_distance=limit.refine_distance,
        initial_risk=traj.initial_risk,
        final_risk=traj.final_risk,
        final_grad_norm=traj.final_grad_norm,
        t_stop=traj.t_stop,
        t_tail=traj.t_tail,
        num_steps=traj.num_steps,
        num_rejected=traj.num_rejected,
        num_tail_steps=traj.num_tail_steps,
        initial_param_norm=jnp.linalg.norm(init_norm, axis=-1),
        max_param_norm=jnp.maximum(
            jnp.nanmax(traj.param_norm, axis=-1), jnp.linalg.norm(final_params, axis=-1)
        ),
        decay_law=decay.law,
        exp_rate=decay.exp_rate,
        exp_r2=decay.exp_r2,
        power_exponent=decay.power_exponent,
        power_r2=decay.power_r2,
        risk=traj.risk[:, keep],
        grad_norm=traj.grad_norm[:, keep],
        param_norm=traj.param_norm[:, keep],
        final_params=final_params,
        models=traj.model,
        dynamics=type(dynamics).__name__,
        architecture=_architecture_json(first),
        stats=stats,
    )


def _architecture_json(model) -> str:
    import json

    return json.dumps(architecture(model), sort_keys=True)
