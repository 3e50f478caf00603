"""Ensembles: the same flow from many initialisations, and what became of each.

:func:`run_ensemble` is the documented way to ask *what fraction of gradient-flow
trajectories has risk → 0*. It integrates all members with one compiled, vmapped
solver step loop, but avoids the waste of a plain ``jax.vmap(diffeqsolve)`` (where
the batched while-loop runs until the slowest member is done and evaluates the vector
field for finished members too):

**Segment-and-compact scheduling.** A *pool* of ``chunk_size`` members is integrated
for a segment of at most ``segment_steps`` solver steps (:func:`gflow_jax.flow.advance_flow`,
which carries each member's solver state, controller state and next step size, so a
resumed solve is the same solve up to round-off). After each segment the members that
stopped are harvested, their slots are refilled from the queue of members not yet
started, and once the queue is empty the survivors are re-packed into a smaller
power-of-two pool. Only ``log2(chunk_size)`` pool shapes are ever compiled. The pool
can be split over several devices (``devices=``), each integrating its share of the
members in its own host thread.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._checks import positive_int
from .flow import (
    FlowConfig,
    Trajectory,
    _gradient_descent,
    _validate,
    advance_flow,
    finish_flow,
    flow_config,
    init_flow_state,
    step_grid,
)
from .models.base import partition
from .outcomes import Outcome, Stop

# ----------------------------------------------------------------------------------
# Proportions with confidence intervals
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fraction:
    """A proportion ``count / total`` with its Wilson score interval ``[low, high]``."""

    count: int
    total: int
    estimate: float
    low: float
    high: float
    confidence: float = 0.95

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.count}/{self.total})"


def wilson_interval(count: int, total: int, confidence: float = 0.95) -> Fraction:
    """Wilson score interval for a binomial proportion.

    With ``p̂ = k/n`` and ``z`` the two-sided normal quantile,
    ``centre = (p̂ + z²/2n) / (1 + z²/n)``,
    ``half = z/(1 + z²/n) · sqrt(p̂(1 − p̂)/n + z²/4n²)``. Unlike the normal
    approximation it stays inside ``[0, 1]`` and is honest for ``k = 0`` or ``k = n``.
    """
    from scipy.stats import norm

    count, total = int(count), int(total)
    if total < 0 or not 0 <= count <= total:
        raise ValueError(f"need 0 <= count <= total, got count={count}, total={total}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    if total == 0:
        return Fraction(0, 0, math.nan, 0.0, 1.0, confidence)
    z = float(norm.ppf(0.5 + confidence / 2))
    p = count / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return Fraction(count, total, p, max(0.0, centre - half), min(1.0, centre + half), confidence)


# ----------------------------------------------------------------------------------
# Ensemble
# ----------------------------------------------------------------------------------


_PER_TRAJECTORY = (
    "outcome",
    "initial_risk",
    "final_risk",
    "final_grad_norm",
    "t_stop",
    "num_steps",
    "num_rejected",
    "initial_param_norm",
    "max_param_norm",
    "tail_rate",
    "tail_rate_r2",
)
_PER_TIME = ("risk", "grad_norm", "param_norm")


class Ensemble(eqx.Module):
    """Stacked results of :func:`run_ensemble` (leading axis = trajectory).

    Per trajectory: ``outcome`` (:class:`gflow_jax.Outcome` codes), ``initial_risk``,
    ``final_risk``, ``final_grad_norm``, ``t_stop``, ``num_steps``, ``num_rejected``,
    ``initial_param_norm`` ``‖θ_0‖``, ``max_param_norm`` (max of ``‖θ_t‖`` over the save
    grid and the final point — boundedness matters for MATH.md §1.5), ``tail_rate`` and
    ``tail_rate_r2`` (slope of ``log L`` vs ``t`` over the tail and its fit quality, see
    :func:`gflow_jax.tail_rate`), ``risk``, ``grad_norm``, ``param_norm`` on the shared
    time grid ``ts`` (NaN after ``t_stop``), ``final_params`` (flattened, ``(B, P)``) and
    ``models`` (the final models, stacked; ``None`` after :meth:`load` without a
    template). ``stats`` records the scheduler's work (see :func:`run_ensemble`).
    """

    ts: Float[Array, " time"]
    outcome: Int[Array, " trajectory"]
    initial_risk: Float[Array, " trajectory"]
    final_risk: Float[Array, " trajectory"]
    final_grad_norm: Float[Array, " trajectory"]
    t_stop: Float[Array, " trajectory"]
    num_steps: Int[Array, " trajectory"]
    num_rejected: Int[Array, " trajectory"]
    initial_param_norm: Float[Array, " trajectory"]
    max_param_norm: Float[Array, " trajectory"]
    tail_rate: Float[Array, " trajectory"]
    tail_rate_r2: Float[Array, " trajectory"]
    risk: Float[Array, "trajectory time"]
    grad_norm: Float[Array, "trajectory time"]
    param_norm: Float[Array, "trajectory time"]
    final_params: Float[Array, "trajectory param"]
    models: Any = None
    method: str = eqx.field(static=True, default="flow")
    stats: dict = eqx.field(static=True, default_factory=dict)

    def __len__(self) -> int:
        return int(self.outcome.shape[0])

    def count(self, outcome: Outcome | int) -> int:
        """Number of trajectories with this outcome."""
        return int(np.sum(np.asarray(self.outcome) == int(outcome)))

    def fraction(self, outcome: Outcome | int = Outcome.CONVERGED, confidence=0.95) -> Fraction:
        """Proportion of trajectories with ``outcome``, with its Wilson interval."""
        return wilson_interval(self.count(outcome), len(self), confidence)

    def summary(self) -> str:
        """A Markdown table: per outcome, count, fraction [95 % CI], medians."""
        rows = [
            "| outcome | count | fraction [95% CI] | median final risk | median steps "
            "| median t_stop |",
            "|---|---:|---|---:|---:|---:|",
        ]
        outcome = np.asarray(self.outcome)
        for o in Outcome:
            sel = outcome == int(o)
            if not sel.any():
                continue
            f = self.fraction(o)
            rows.append(
                f"| {o.name} | {f.count} | {f.estimate:.3f} [{f.low:.3f}, {f.high:.3f}] | "
                f"{np.median(np.asarray(self.final_risk)[sel]):.3e} | "
                f"{np.median(np.asarray(self.num_steps)[sel]):.0f} | "
                f"{np.median(np.asarray(self.t_stop)[sel]):.4g} |"
            )
        rows.append(
            f"| **all** | {len(self)} | | | {np.median(np.asarray(self.num_steps)):.0f} | |"
        )
        return "\n".join(rows)

    def to_xarray(self):
        """An ``xarray.Dataset`` with dims ``trajectory``, ``time`` and ``param``."""
        import xarray as xr

        per_traj = {
            name: ("trajectory", np.asarray(getattr(self, name))) for name in _PER_TRAJECTORY
        }
        per_time = {
            name: (("trajectory", "time"), np.asarray(getattr(self, name))) for name in _PER_TIME
        }
        ds = xr.Dataset(
            {
                **per_traj,
                **per_time,
                "final_params": (("trajectory", "param"), np.asarray(self.final_params)),
            },
            coords={"time": np.asarray(self.ts), "trajectory": np.arange(len(self))},
            attrs={
                "method": self.method,
                "outcome_codes": ", ".join(f"{o.value}={o.name}" for o in Outcome),
                **{f"stats_{k}": v for k, v in self.stats.items()},
            },
        )
        ds["outcome"].attrs["description"] = "gflow_jax.Outcome code"
        return ds

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_xarray` to a netCDF file, atomically (no pickle)."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".nc.tmp", dir=directory)
        os.close(fd)
        try:
            self.to_xarray().to_netcdf(tmp, engine="h5netcdf")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike, template: Any = None) -> Ensemble:
        """Read an ensemble written by :meth:`save`.

        ``template``: a model of the same architecture (e.g. ``init(key)``); if given,
        ``models`` is rebuilt from ``final_params``, else it is ``None``.
        """
        import xarray as xr

        with xr.open_dataset(os.fspath(path), engine="h5netcdf") as ds:
            ds = ds.load()
        fields = {
            name: jnp.asarray(ds[name].values)
            for name in _PER_TRAJECTORY + _PER_TIME + ("final_params",)
        }
        models = None
        if template is not None:
            params, static = partition(template)
            _, unravel = ravel_pytree(params)
            models = eqx.combine(jax.vmap(unravel)(fields["final_params"]), static)
        stats = {
            k[len("stats_") :]: (v.item() if hasattr(v, "item") else v)
            for k, v in ds.attrs.items()
            if k.startswith("stats_")
        }
        return cls(
            ts=jnp.asarray(ds["time"].values),
            models=models,
            method=str(ds.attrs.get("method", "flow")),
            stats=stats,
            **fields,
        )


def _ensemble_from_trajectories(traj: Trajectory, params: Any, method: str, stats: dict):
    from .certificates.rates import tail_rate

    final_params = jax.vmap(lambda p: ravel_pytree(p)[0])(partition(traj.model)[0])
    rate, r2 = jax.vmap(tail_rate)(jnp.broadcast_to(traj.ts, traj.risk.shape), traj.risk)
    init_norm = jax.vmap(lambda p: jnp.sqrt(sum(jnp.sum(x**2) for x in jtu.tree_leaves(p))))(params)
    final_norm = jnp.linalg.norm(final_params, axis=-1)
    max_norm = jnp.maximum(jnp.nanmax(traj.param_norm, axis=-1), final_norm)
    ts = traj.ts if traj.ts.ndim == 1 else traj.ts[0]
    return Ensemble(
        ts=ts,
        outcome=traj.outcome,
        initial_risk=traj.initial_risk,
        final_risk=traj.final_risk,
        final_grad_norm=traj.final_grad_norm,
        t_stop=traj.t_stop,
        num_steps=traj.num_steps,
        num_rejected=traj.num_rejected,
        initial_param_norm=init_norm,
        max_param_norm=max_norm,
        tail_rate=rate,
        tail_rate_r2=r2,
        risk=traj.risk,
        grad_norm=traj.grad_norm,
        param_norm=traj.param_norm,
        final_params=final_params,
        models=traj.model,
        method=method,
        stats=stats,
    )


# ----------------------------------------------------------------------------------
# Compiled batch kernels (module level, so repeated runs reuse the compilation)
# ----------------------------------------------------------------------------------


def _split(tree):
    return eqx.partition(tree, eqx.is_array)


@eqx.filter_jit
def _init_pool(params, frozen, rest, risk, t1, save_ts, config: FlowConfig):
    return jax.vmap(
        lambda p, f: init_flow_state(p, eqx.combine(f, rest), risk, t1, save_ts, config)
    )(params, frozen)


@eqx.filter_jit
def _advance_pool(state, frozen, rest, risk, t1, save_ts, config: FlowConfig, steps):
    return jax.vmap(
        lambda s, f: advance_flow(s, eqx.combine(f, rest), risk, t1, save_ts, config, steps)
    )(state, frozen)


def _advance_on_devices(pool, frozen, devices, *args):
    """Advance a host-side pool, split evenly over ``devices``.

    Each device gets its own slice and its own solve (one host thread each), so the
    devices never synchronise inside the solver loop. (A sharded single program —
    ``shard_map`` or sharding constraints — broke or deadlocked Diffrax's implicit
    solvers with jax 0.10 on CPU.)
    """
    n = len(devices)
    size = len(jtu.tree_leaves(pool)[0]) // n

    def run(i):
        part = slice(i * size, (i + 1) * size)
        state_i, frozen_i = jax.device_put((_take(pool, part), _take(frozen, part)), devices[i])
        return jax.device_get(_advance_pool(state_i, frozen_i, *args))

    if n == 1:
        return run(0)
    # one host thread per device (XLA releases the GIL while a computation runs)
    with ThreadPoolExecutor(max_workers=n) as executor:
        outs = list(executor.map(run, range(n)))
    return jtu.tree_map(lambda *xs: np.concatenate(xs), *outs)


@eqx.filter_jit
def _finish_pool(state, params, frozen, rest, risk, save_ts, stop: Stop):
    return jax.vmap(
        lambda s, p, f: finish_flow(s, p, eqx.combine(f, rest), risk, save_ts, stop, throw=False)
    )(state, params, frozen)


@eqx.filter_jit
def _descend_pool(params, frozen, rest, risk, lr, grid, *, optimizer, steps, stop, save_path):
    return jax.vmap(
        lambda p, f: _gradient_descent(
            p,
            eqx.combine(f, rest),
            risk,
            lr,
            grid,
            optimizer=optimizer,
            steps=steps,
            stop=stop,
            save_path=save_path,
        )
    )(params, frozen)


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
        raise ValueError("devices must name at least one device.")
    return devices


def _progress(total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="traj", desc="gflow ensemble", leave=False)


# ----------------------------------------------------------------------------------
# run_ensemble
# ----------------------------------------------------------------------------------


def run_ensemble(
    init: Callable[[PRNGKeyArray], Any],
    risk,
    keys: PRNGKeyArray,
    t1: float | None = None,
    *,
    method: str = "flow",
    chunk_size: int = 256,
    segment_steps: int = 128,
    compact: bool = True,
    devices: Sequence[jax.Device] | None = None,
    progress: bool | None = None,
    **options,
) -> Ensemble:
    """Run a gradient flow (or descent) from every initialisation ``init(key)``.

    **Arguments**

    - ``init``: ``key -> model``; vmapped over ``keys`` with ``eqx.filter_vmap`` (all
      members must share one architecture).
    - ``risk``: ``risk(model) -> scalar``, shared by all members.
    - ``keys``: a batch of PRNG keys, e.g. ``jax.random.split(key, 4096)``. Same keys,
      same results.
    - ``t1``: final time (``method="flow"``).
    - ``method``: ``"flow"`` (:func:`gflow_jax.gradient_flow`) or ``"gd"``
      (:func:`gflow_jax.gradient_descent`; pass ``learning_rate=`` and ``steps=``;
      runs chunk by chunk in lockstep, without compaction).
    - ``chunk_size``: members integrated at once (the pool size; a power of two is
      best). On CPU the per-member cost is lowest for pools of a few hundred.
    - ``segment_steps``: solver steps per segment between compactions (flow only);
      a pool shrunk to ``chunk_size / k`` members runs segments ``k`` times longer.
    - ``compact``: refill and shrink the pool between segments (default). With
      ``False`` the members are run chunk by chunk in lockstep (for comparison).
    - ``devices``: devices to split the pool over, one host thread each (default: the
      first device only). On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
      (set before JAX starts) and ``devices=jax.devices()`` gave ~2x on 2 cores with
      Tsit5 (measured). **Known issue:** with Diffrax's implicit solvers (Kvaerno5) on
      several CPU devices the computation deadlocked (jax 0.10), so multi-device runs are
      opt-in.
    - ``progress``: tqdm bar of finished members (default: only on a terminal).
    - ``options``: every option of :func:`gradient_flow` (``solver``, ``controller``,
      ``stop``, ``n_save``, ``save_ts``, ``dt0``, ``max_steps``, ``adjoint``;
      ``throw`` is always False here) or of :func:`gradient_descent`.

    A member whose parameters are NaN or explode is ``DIVERGED``, an ill-posed one
    ``ILL_POSED``; neither affects the others. ``stats`` of the result records
    ``useful_member_steps`` (sum of members' solver steps), ``evaluated_member_steps``
    (pool size × lockstep steps, summed over segments), their ratio ``waste``, and
    the number of segments.
    """
    if method not in ("flow", "gd"):
        raise ValueError(f"method must be 'flow' or 'gd', got {method!r}.")
    if not callable(init):
        raise TypeError("init must be a callable key -> model.")
    keys = jnp.asarray(keys) if not isinstance(keys, jax.Array) else keys
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        if keys.ndim != 1:
            raise ValueError(f"keys must be a 1-d batch of keys, got shape {keys.shape}.")
    elif keys.ndim != 2 or keys.shape[-1] != 2 or keys.dtype != jnp.uint32:
        raise ValueError(
            "keys must be a batch of PRNG keys, e.g. jax.random.split(jax.random.key(0), 64)."
        )
    batch = int(keys.shape[0])
    if batch < 1:
        raise ValueError("keys must contain at least one key.")
    chunk_size = positive_int("chunk_size", chunk_size)
    segment_steps = positive_int("segment_steps", segment_steps)
    options.pop("throw", None)

    models = eqx.filter_vmap(init)(keys)
    params, static = partition(models)
    frozen, rest = _split(static)
    first = eqx.combine(_take(params, 0), eqx.combine(_take(frozen, 0), rest))
    _, _, dtype = _validate(first, risk)
    devices = _device_list(devices)
    bar = _progress(batch, progress)
    try:
        if method == "gd":
            traj, stats = _run_gd(params, frozen, rest, risk, dtype, chunk_size, bar, options)
        else:
            if t1 is None:
                raise ValueError("method='flow' needs t1, the final time of the flow.")
            traj, stats = _run_flow(
                params,
                frozen,
                rest,
                risk,
                t1,
                dtype,
                chunk_size,
                segment_steps,
                compact,
                devices,
                bar,
                options,
            )
    finally:
        if bar is not None:
            bar.close()
    return _ensemble_from_trajectories(traj, params, method, stats)


def _run_gd(params, frozen, rest, risk, dtype, chunk_size, bar, options):
    try:
        learning_rate, steps = options.pop("learning_rate"), options.pop("steps")
    except KeyError as e:
        raise ValueError("method='gd' needs learning_rate= and steps=.") from e
    from ._checks import positive_float

    learning_rate = positive_float("learning_rate", learning_rate)
    steps = positive_int("steps", steps)
    n_save = positive_int("n_save", options.pop("n_save", 100), minimum=2)
    stop = options.pop("stop", None)
    stop = (Stop() if stop is None else stop).resolve(dtype)
    optimizer = options.pop("optimizer", None)
    save_path = bool(options.pop("save_path", False))
    if options:
        raise TypeError(f"unknown options for method='gd': {sorted(options)}.")
    import optax

    optimizer = optax.sgd(learning_rate) if optimizer is None else optimizer
    grid = jnp.asarray(step_grid(steps, n_save))
    batch = jtu.tree_leaves(params)[0].shape[0]
    pieces = []
    for start in range(0, batch, chunk_size):
        idx = np.arange(start, start + chunk_size).clip(max=batch - 1)
        out = _descend_pool(
            _take(params, idx),
            _take(frozen, idx),
            rest,
            risk,
            jnp.asarray(learning_rate, dtype),
            grid,
            optimizer=optimizer,
            steps=steps,
            stop=stop,
            save_path=save_path,
        )
        n = min(chunk_size, batch - start)
        pieces.append(_take(out, slice(0, n)))
        if bar is not None:
            bar.update(n)
    traj = jtu.tree_map(lambda *xs: jnp.concatenate(xs), *pieces)
    useful = int(jnp.sum(traj.num_steps))
    stats = {"useful_member_steps": useful, "segments": len(pieces)}
    return traj, stats


def _run_flow(
    params,
    frozen,
    rest,
    risk,
    t1,
    dtype,
    chunk_size,
    segment_steps,
    compact,
    devices,
    bar,
    options,
):
    n_dev = len(devices)
    config, save_ts = flow_config(dtype, t1, **options)
    t1 = jnp.asarray(t1, dtype)
    batch = jtu.tree_leaves(params)[0].shape[0]
    # pool sizes are multiples of the device count
    cap = max(n_dev, _next_pow2(min(chunk_size, batch)))
    cap = -(-cap // n_dev) * n_dev
    min_pool = n_dev

    # Initial states of every member, computed pool by pool, kept on the host. Row
    # `batch` is a scratch row for padding slots.
    store = None
    for start in range(0, batch, cap):
        idx = np.arange(start, start + cap).clip(max=batch - 1)
        out = jax.device_get(
            _init_pool(_take(params, idx), _take(frozen, idx), rest, risk, t1, save_ts, config)
        )
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
    useful = evaluated = segments = 0
    budget = config.max_steps

    def refill(slots: np.ndarray, size: int) -> np.ndarray:
        """Survivors first, then members from the queue, padded with the scratch row."""
        alive = [int(i) for i in slots if not done[i]]
        while len(alive) < size and queue:
            alive.append(queue.pop())
        return np.array(alive + [batch] * (size - len(alive)), dtype=np.int64)

    slots = refill(np.zeros(0, np.int64), cap)
    while not np.all(done[slots]):
        live = ~done[slots]
        steps_before = store.num_steps[slots].copy()
        # Smaller pools run longer segments, so each segment does similar work.
        seg = segment_steps * max(1, cap // len(slots))
        seg = min(seg, budget - int(steps_before[live].max()))  # nobody passes max_steps
        pool = _advance_on_devices(
            _take(store, slots),
            _take(frozen_store, slots),
            devices,
            rest,
            risk,
            t1,
            save_ts,
            config,
            seg,
        )
        segments += 1
        delta = np.where(live, pool.num_steps - steps_before, 0)
        useful += int(delta.sum())
        evaluated += len(slots) * int(delta.max())
        store = _put(store, slots[live], _take(pool, live))
        finished = live & (np.asarray(pool.finished) | (pool.num_steps >= budget))
        done[slots[finished]] = True
        if bar is not None:
            bar.update(int(finished.sum()))
        if compact:
            # refill from the queue; once it is empty shrink to a power of two
            n_alive = int((~done[slots]).sum())
            size = cap if queue else max(min_pool, _next_pow2(max(n_alive, 1)))
            slots = refill(slots, min(-(-size // n_dev) * n_dev, cap))
        elif np.all(done[slots]):
            slots = refill(slots, cap)  # lockstep: next chunk only when all are done
    # Classify and assemble, pool by pool (one compiled shape).
    pieces = []
    for start in range(0, batch, cap):
        idx = np.arange(start, start + cap).clip(max=batch - 1)
        out = _finish_pool(
            jax.device_put(_take(store, idx)),
            _take(params, idx),
            _take(frozen, idx),
            rest,
            risk,
            save_ts,
            config.stop,
        )
        pieces.append(_take(out, slice(0, min(cap, batch - start))))
    traj = jtu.tree_map(lambda *xs: jnp.concatenate(xs), *pieces)
    stats = {
        "useful_member_steps": useful,
        "evaluated_member_steps": evaluated,
        "waste": evaluated / max(useful, 1),
        "segments": segments,
        "pool_size": cap,
        "segment_steps": segment_steps,
    }
    return traj, stats
