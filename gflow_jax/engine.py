"""``run_ensemble``: one dynamics from many initialisations, in vmapped, compacted pools.

A plain ``jax.vmap(diffeqsolve)`` runs every member in lockstep until the slowest is
done; on ReLU risks step counts are heavy-tailed, so most of that work is wasted. The
engine instead integrates a *pool* of ``chunk_size`` members for a *segment* of at most
``segment_steps`` steps (:meth:`gflow_jax.AbstractDynamics.advance`, which carries each
member's solver and controller state, so a resumed solve is the same solve), harvests
the finished members, refills their slots from the queue, and once the queue is empty
re-packs survivors into pools of ``chunk_size / 8^k`` members (at least 16; the last
few stragglers of a large ensemble run unbatched, one after the other), so only a few
shapes are ever compiled. Segments, harvest and refill run on the device (every
member's state lives in a device-side store; only finished flags and phases go to the
host between calls). Pools are formed per *phase* of the dynamics (gradient flow:
explicit transient, stiff tail), so a vmapped pool never pays for two solvers. Members
may be split over several devices, one host thread each.
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
from jaxtyping import Array, ArrayLike, Int, Key, PRNGKeyArray, PyTree, UInt32

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
from .dynamics.base import AbstractDynamics, State
from .dynamics.integrate import check_problem, make_problem
from .dynamics.problem import Problem, check_horizon
from .ensemble import Ensemble, architecture
from .limits import LimitAnalysis
from .models.base import partition

#: Pools shrink by this factor (see :func:`_pool_size`).
SHRINK = 8
#: The smallest pool the scheduler shrinks to (see :func:`_schedule`).
MIN_POOL = 16
#: Stragglers run unbatched, one after the other (pools of 1), once at most this many
#: members of a phase are left, and at most a quarter of the pool (per backend; see
#: :func:`_schedule`). On a CPU a batched member-step costs about the same whatever the
#: pool (12–15 µs on the benchmark workload, pools of 64–256) and a pool-of-1 step only
#: ~1.3x that (18 µs), so a pool less than 3/4 full already costs more per useful step
#: than solo runs; measured on the heavy-tailed empirical workload (B = 256): 4 -> 36 s,
#: 32 -> 28 s, 64 -> 24 s, 128 -> 28 s (longer solo queues, more calls). On a GPU a
#: step is launch-bound whatever the pool, so only the last member runs solo.
SOLO_MAX = {"cpu": 64}
#: A pool of 1 runs segments of at least this many times `segment_steps` steps.
SOLO_SEGMENTS = 64
#: Only ensembles whose pool holds at least this many members go solo (a pool of 1 is one
#: more compiled shape).
SOLO_FROM = 64
#: Default pool size per backend, measured (benchmarks/README.md §5, "Engine cost per
#: step"): on a CPU pools of 16–256 cost the same per member-step; on a GPU a step is
#: launch-bound, and a member-step costs ~10× less in a pool of 4 096 than of 256.
POOL_SIZE = {"cpu": 256, "gpu": 4096, "cuda": 4096, "rocm": 4096, "tpu": 4096}


def default_pool_size(platform: str) -> int:
    """The default ``chunk_size`` of :func:`run_ensemble` on a backend.

    **Arguments:**

    - `platform`: a JAX platform name (``jax.devices()[0].platform``: ``"cpu"``,
      ``"gpu"``, ``"tpu"``, …).

    **Returns:**

    The pool size (256 on a CPU, 4 096 on an accelerator; 256 for an unknown platform).
    """
    return POOL_SIZE.get(str(platform).lower(), 256)


# ----------------------------------------------------------------------------------
# Compiled pool kernels (module level, so repeated runs reuse the compilation)
# ----------------------------------------------------------------------------------


def _member_problem(problem: Problem, frozen: PyTree) -> Problem:
    """The problem of one member: its frozen arrays combined into the shared static part."""
    return eqx.tree_at(lambda p: p.static, problem, eqx.combine(frozen, problem.static))


@eqx.filter_jit
def _init_pool(dynamics, problem, params, frozen):
    return jax.vmap(lambda p, f: dynamics.init(_member_problem(problem, f), p))(params, frozen)


def _rows(tree, idx):
    return jtu.tree_map(lambda x: x[idx], tree)


@eqx.filter_jit
def _run_pool(
    dynamics: AbstractDynamics,
    problem: Problem,
    store: State,
    frozen: PyTree,
    slots: Int[Array, " pool"],
    queue: Int[Array, " rows"],
    head: Int[Array, ""],
    queue_len: Int[Array, ""],
    shrink_at: Int[Array, ""],
    steps: int,
    phase: int,
    max_segments: int,
):
    """Advance one pool on the device, segment after segment, refilling it from the queue.

    `store` holds every member's :class:`State` (one row each; its last row is a scratch
    row for empty slots), `slots` the rows in the pool. After each segment of `steps`
    steps the pool's rows are written back to `store`; a member that finished or changed
    phase leaves its slot, which (in phase 0) is refilled from ``queue[head:queue_len]``.
    The loop ends when no member is live, after `max_segments` segments, or once the
    queue is empty and at most `shrink_at` members are live (the host then re-packs them
    into a smaller pool). Nothing goes to the host in between.

    **Returns:**

    ``(store, head, useful, evaluated, segments)``: the updated rows, the next queue
    position, and this call's useful and evaluated member-steps and segment count.
    """
    scratch = jtu.tree_leaves(store)[0].shape[0] - 1
    size = slots.shape[0]

    def advance(s, f):
        return dynamics.advance(_member_problem(problem, f), s, steps, phase)

    def live_of(store, slots):
        return (slots != scratch) & ~store.finished[slots] & (store.phase[slots] == phase)

    def cond(carry):
        store, slots, head, _, _, segments = carry
        live = jnp.sum(live_of(store, slots), dtype=jnp.int32)
        drained = (head >= queue_len) & (live <= shrink_at)
        return (live > 0) & ~drained & (segments < max_segments)

    def body(carry):
        store, slots, head, useful, evaluated, segments = carry
        live = live_of(store, slots)
        pool = _rows(store, slots)
        before = pool.num_steps
        if size == 1:  # unbatched: a vmapped while loop of one member pays for selects
            one = advance(_rows(pool, 0), _rows(frozen, slots[0]))
            pool = jtu.tree_map(lambda x: x[None], one)
        else:
            pool = jax.vmap(advance)(pool, _rows(frozen, slots))
        delta = jnp.where(live, pool.num_steps - before, 0)
        rows = jnp.where(live, slots, scratch)
        store = jtu.tree_map(lambda s, p: s.at[rows].set(p), store, pool)
        stays = live & ~pool.finished & (pool.phase == phase)
        if phase == 0:  # refill free slots, in order, from the queue of new members
            free = ~stays
            rank = jnp.cumsum(free, dtype=jnp.int32) - 1
            available = jnp.maximum(queue_len - head, 0)
            fill = free & (rank < available)
            new = queue[jnp.clip(head + rank, 0, queue.shape[0] - 1)]
            slots = jnp.where(fill, new, jnp.where(stays, slots, scratch))
            head = (head + jnp.minimum(jnp.sum(free, dtype=jnp.int32), available)).astype(jnp.int32)
        else:
            slots = jnp.where(stays, slots, scratch)
        return (
            store,
            slots.astype(jnp.int32),
            head,
            (useful + jnp.sum(delta, dtype=jnp.int32)).astype(jnp.int32),
            (evaluated + size * delta.max()).astype(jnp.int32),
            segments + 1,
        )

    zero = jnp.zeros((), jnp.int32)
    store, _, head, useful, evaluated, segments = jax.lax.while_loop(
        cond, body, (store, slots, head, zero, zero, zero)
    )
    return store, head, useful, evaluated, segments


@eqx.filter_jit
def _finish_pool(dynamics, problem, store, params, frozen, idx, limits):
    def one(s, p, f):
        member = _member_problem(problem, f)
        traj = dynamics.finish(member, s, p)
        return traj, limit_of(member, traj, limits), decay_of(traj)

    return jax.vmap(one)(_rows(store, idx), _rows(params, idx), _rows(frozen, idx))


# ----------------------------------------------------------------------------------
# Host-side helpers
# ----------------------------------------------------------------------------------


def _take(tree, idx):
    return jtu.tree_map(lambda x: x[idx], tree)


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


def _pool_size(members: int, cap: int, min_pool: int) -> int:
    """The pool for `members` live members: ``cap / 8^k`` for the largest ``k`` that fits.

    Shrinking by factors of 8 (not 2) bounds the number of compiled pool shapes, which
    dominates small ensembles on a CPU (each shape is one more compilation per phase),
    while pools still shrink with the survivors of a heavy tail.
    """
    size = cap
    while size // SHRINK >= max(members, min_pool):
        size //= SHRINK
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
    chunk_size: int | None = None,
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
    - `dynamics`: any :class:`gflow_jax.AbstractDynamics` (`GradientFlow`,
      `PiecewiseGradientFlow`, `GradientDescent`); ``None`` picks
      ``PiecewiseGradientFlow()`` for an :class:`gflow_jax.EmpiricalRisk` of a
      `ShallowReLU` or a ReLU `DeepMLP` (kinks as events, sliding modes), and
      ``GradientFlow()`` otherwise.
    - `n_save`, `save_ts`: the save grid, as in :func:`gflow_jax.integrate`. With
      ``t1 = inf`` the stored grid is trimmed to the times some member reached.
    - `limits`: options of the limit classification (``None`` skips it).
    - `chunk_size`: members integrated at once (the pool size; a power of two is best).
      Default (``None``): :func:`default_pool_size` of the first device's backend.
    - `segment_steps`: steps per segment between compactions; a pool shrunk to
      ``chunk_size / k`` members runs segments ``k`` times longer.
    - `compact`: refill and shrink pools between segments (default). ``False`` runs the
      members chunk by chunk in lockstep (for comparison).
    - `devices`: devices to split the members over, evenly, each running its own pools
      of ``chunk_size / len(devices)`` in one host thread (default: the first device).
      On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
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
    devices = check_devices("devices", devices)
    if chunk_size is None:
        chunk_size = default_pool_size(_device_list(devices)[0].platform)
    chunk_size = positive_int("chunk_size", chunk_size)
    segment_steps = positive_int("segment_steps", segment_steps)
    compact = check_bool("compact", compact)
    if progress is not None:
        progress = check_bool("progress", progress)
    if limits is not None:
        one_of_types("limits", limits, LimitAnalysis, "a gflow_jax.LimitAnalysis or None")
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
        pieces, stats = _run_on_devices(
            dynamics,
            problem,
            params,
            frozen,
            limits,
            batch,
            chunk_size,
            segment_steps,
            compact,
            _device_list(devices),
            bar,
        )
    finally:
        if bar is not None:
            bar.close()
    return _assemble(dynamics, problem, pieces, params, first, stats)


#: Segments a pool runs on the device before control returns to the host (progress).
MAX_SEGMENTS = 256
#: The smallest batch of members classified at once by ``finish`` at the end.
FINISH_POOL = 64


def _run_on_devices(dynamics, problem, params, frozen, limits, batch, chunk_size,
                    segment_steps, compact, devices, bar):  # fmt: skip
    """Split the members evenly over `devices` and schedule each part on its device
    (one host thread each: XLA releases the GIL). Returns the finished pieces, in member
    order, and the summed statistics."""
    n_dev = min(len(devices), batch)
    bounds = np.linspace(0, batch, n_dev + 1).round().astype(int)
    # every device gets the same pool cap (the pool of `chunk_size` is split over them)
    per_device = max(1, chunk_size // n_dev)

    def run(i):
        idx = np.arange(bounds[i], bounds[i + 1])
        return _schedule(
            dynamics,
            problem,
            _take(params, idx),
            _take(frozen, idx),
            limits,
            per_device,
            segment_steps,
            compact,
            devices[i],
            bar,
        )

    if n_dev == 1:
        outs = [run(0)]
    else:
        with ThreadPoolExecutor(max_workers=n_dev) as executor:
            outs = list(executor.map(run, range(n_dev)))
    pieces = [piece for out in outs for piece in out[0]]
    stats = {k: sum(out[1][k] for out in outs) for k in ("useful_member_steps",
             "evaluated_member_steps", "segments")}  # fmt: skip
    stats["waste"] = stats["evaluated_member_steps"] / max(stats["useful_member_steps"], 1)
    stats["pool_size"] = outs[0][1]["pool_size"] * n_dev
    stats["segment_steps"] = segment_steps
    return pieces, stats


def _schedule(dynamics, problem, params, frozen, limits, chunk_size, segment_steps, compact,
              device, bar):  # fmt: skip
    """Run the members of one device: pools per phase, segments, refill and shrink.

    Every member's state lives in a device-side store; a pool runs many segments in one
    call (:func:`_run_pool`: refill on the device), and only the finished flags and
    phases come back to the host, which picks the next pool's phase and size. The
    finished members are classified on the device and come back once, at the end.
    """
    batch = int(jtu.tree_leaves(params)[0].shape[0])
    cap = _next_pow2(min(chunk_size, batch))
    # Pools never shrink below MIN_POOL members: on a CPU a vmapped step of 16 members
    # costs little more than one of 1, and every pool size is one more compilation per
    # phase (measured on the demo: 52 s with one pool shape, 70 s with two, 87 s with four).
    min_pool = min(cap, MIN_POOL)
    # Stragglers (at most `solo_max` live members of a phase, queue empty) run unbatched,
    # one after the other (see SOLO_MAX), so heavy-tailed ensembles no longer pay a
    # mostly empty pool for their slowest members. A pool of 1 is one more compiled
    # shape, so only ensembles of >= SOLO_FROM members go solo.
    solo_max = 0
    if compact and cap >= SOLO_FROM:
        solo_max = min(SOLO_MAX.get(device.platform, 1), cap // 4)
    # rows: the members, padded to a power of two (fewer compiled shapes); the last
    # row is the scratch row of empty slots
    rows = max(_next_pow2(batch + 1), cap)
    pad = np.arange(rows).clip(max=batch - 1)
    params_store, frozen_store = jax.device_put((_take(params, pad), _take(frozen, pad)), device)
    store = _init_pool(dynamics, problem, params_store, frozen_store)  # one call, all rows
    scratch = rows - 1
    queue_host = np.full(rows, scratch, np.int32)
    queue_host[:batch] = np.arange(batch)
    queue = jax.device_put(queue_host, device)

    done = np.zeros(batch, bool)
    phase_of = np.zeros(batch, np.int8)
    started = 0  # members [0, started) have entered a pool
    lockstep_end = 0  # lockstep mode: members [.., lockstep_end) form the current chunk
    useful = evaluated = segments = 0

    def candidates(phase: int) -> np.ndarray:
        return np.flatnonzero(~done[:started] & (phase_of[:started] == phase))

    while not done.all():
        if not compact and started == lockstep_end and done[:started].all():
            lockstep_end = min(batch, started + cap)
        limit = lockstep_end if not compact else batch  # the queue's end
        # the phase with the most members waiting (new members start in phase 0)
        waiting = [candidates(p).size for p in range(dynamics.num_phases)]
        waiting[0] += limit - started
        phase = int(np.argmax(waiting))
        members = candidates(phase)[:cap]
        if phase == 0:  # top up from the queue
            extra = min(cap - members.size, limit - started)
            members = np.concatenate([members, np.arange(started, started + extra)])
            started += extra
        if not compact:
            size = cap
        elif waiting[phase] <= solo_max:
            size = 1
        else:
            size = _pool_size(waiting[phase], cap, min_pool)
        slots = np.full(size, scratch, np.int32)
        slots[: members.size] = members[:size]
        # return to the host (to re-pack) once the queue is empty and at most `shrink`
        # members are live: to the next smaller pool, or to solo runs
        shrink = size // SHRINK if compact and size // SHRINK >= min_pool else 0
        shrink = max(shrink, solo_max) if size > 1 else 0
        # smaller pools run longer segments; the budget and the stiffness checks are the
        # members' own (counted in their states), so `seg` only sets the speed. A pool of
        # 1 has nothing to re-pack (a finished member ends its segment at once and is
        # replaced), so it runs long segments: each costs a fixed overhead.
        stretch = max(cap, SOLO_SEGMENTS) if size == 1 else max(1, cap // size)
        seg = dynamics.segment_length(segment_steps * stretch)
        store, head, n_useful, n_evaluated, n_segments = _run_pool(
            dynamics,
            problem,
            store,
            frozen_store,
            jax.device_put(slots, device),
            queue,
            jnp.asarray(started, jnp.int32),
            jnp.asarray(limit if phase == 0 else started, jnp.int32),
            jnp.asarray(shrink, jnp.int32),
            seg,
            phase,
            MAX_SEGMENTS,
        )
        flags, phases, head = jax.device_get((store.finished, store.phase, head))
        started = max(started, int(head)) if phase == 0 else started
        useful += int(n_useful)
        evaluated += int(n_evaluated)
        segments += int(n_segments)
        newly = flags[:batch] & ~done
        done |= flags[:batch]
        phase_of = phases[:batch]
        if bar is not None:
            bar.update(int(newly.sum()))

    # finish in pools of at least FINISH_POOL members: few calls, whatever the pool size
    fin = _next_pow2(min(batch, max(cap, FINISH_POOL)))
    pieces = []
    for s in range(0, batch, fin):
        idx = np.arange(s, s + fin).clip(max=batch - 1)
        out = _finish_pool(dynamics, problem, store, params_store, frozen_store,
                           jax.device_put(idx, device), limits)  # fmt: skip
        pieces.append(jax.device_get(_take(out, slice(0, min(fin, batch - s)))))
    stats = {
        "useful_member_steps": useful,
        "evaluated_member_steps": evaluated,
        "segments": segments,
        "pool_size": cap,
    }
    return pieces, stats


def _assemble(dynamics, problem, pieces, params, first, stats) -> Ensemble:
    """Stack the finished pieces (member order) into an :class:`Ensemble`."""
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
        **_kink_columns(traj),
        risk=traj.risk[:, keep],
        grad_norm=traj.grad_norm[:, keep],
        param_norm=traj.param_norm[:, keep],
        final_params=final_params,
        models=traj.model,
        dynamics=type(dynamics).__name__,
        architecture=_architecture_json(first),
        stats=stats,
    )


def _kink_columns(traj) -> dict:
    """The Ensemble's kink fields from the trajectories' ``KinkStats`` (``-1``/NaN: the
    dynamics does not track kinks)."""
    if traj.kinks is not None:
        k = traj.kinks
        return dict(num_crossings=k.num_crossings, num_slides=k.num_slides,
                    sliding_time=k.sliding_time, num_sliding=k.num_sliding)  # fmt: skip
    untracked = jnp.full(traj.num_steps.shape, -1, jnp.int32)
    return dict(num_crossings=untracked, num_slides=untracked, num_sliding=untracked,
                sliding_time=jnp.full(traj.t_stop.shape, jnp.nan, traj.t_stop.dtype))  # fmt: skip


def _architecture_json(model) -> str:
    import json

    return json.dumps(architecture(model), sort_keys=True)
