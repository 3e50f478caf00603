"""The lean engine: members independent of pool sizes (tail switch included), no recompiles."""

import contextlib
import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import gflow_jax as gf
from gflow_jax import engine
from gflow_jax.dynamics.integrate import _integrate

RISK = gf.PopulationRisk.uniform_1d(gf.Affine(2.0, 1.0), 0.0, 1.0)
# a loose controller and few steps between checks: members switch to the tail early
FLOW = gf.GradientFlow(
    controller=diffrax.PIDController(rtol=1e-6, atol=1e-9),
    max_steps=150,
    stiffness_check_steps=48,
)
SOLVE = dict(n_save=8, limits=None)
OPTS = dict(SOLVE, progress=False)


def _init(key):
    return gf.ShallowReLU(1, 3, key=key)


FIELDS = ("t_tail", "num_steps", "num_tail_steps", "num_rejected", "outcome", "verdict",
          "t_stop", "final_params", "final_risk", "risk", "grad_norm")  # fmt: skip


def test_tail_switch_is_per_member_whatever_the_pool():
    """The stiffness check runs every `stiffness_check_steps` of a member's own steps, so
    a member's switch step and result do not depend on its mates, on when it entered
    its pool, on members running out of budget, or on the pool's size and segments."""
    keys = jax.random.split(jax.random.key(3), 8)
    run = lambda ks, chunk, seg: gf.run_ensemble(
        _init, RISK, ks, math.inf, FLOW, chunk_size=chunk, segment_steps=seg, **OPTS
    )
    base = run(keys[:6], 4, 40)  # segments of 40 -> 48 steps, refills
    switched = np.isfinite(np.asarray(base.t_tail))
    assert 2 <= switched.sum() < 6  # both kinds of member are in the test
    steps = np.asarray(base.num_steps)
    assert np.any(steps == FLOW.max_steps) and np.any(steps < FLOW.max_steps)
    tail_start = steps - np.asarray(base.num_tail_steps)
    assert np.all(tail_start[switched] % FLOW.stiffness_check_steps == 0)
    # other mates, other order, other entry times into the pool: bitwise the same
    order = np.array([5, 7, 2, 0, 6, 4])
    mates = run(keys[order], 4, 40)
    shared = order < 6
    for name in FIELDS:
        np.testing.assert_array_equal(
            np.asarray(getattr(mates, name))[shared],
            np.asarray(getattr(base, name))[order[shared]],
            err_msg=name,
        )
    # another pool size and segment length: the same steps and switch step; values up
    # to the round-off of XLA's vectorised reductions (the controller's error norm
    # rounds differently at another batch size, with or without a tail phase)
    other = run(keys[:6], 2, 96)
    for name in FIELDS:
        exact = name in ("num_steps", "num_tail_steps", "num_rejected", "outcome", "verdict")
        np.testing.assert_allclose(
            np.asarray(getattr(other, name)),
            np.asarray(getattr(base, name)),
            rtol=0 if exact else 1e-8,
            err_msg=name,
        )


@contextlib.contextmanager
def _backend_compilations():
    """Count XLA compilations (of any program) inside the block."""
    events = []

    def listen(name, *args, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            events.append(name)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield events
    finally:
        jax._src.monitoring.unregister_event_duration_listener(listen)


def _traces():
    """How many traces the compiled programs of integrate and run_ensemble hold."""
    programs = (_integrate, engine._init_pool, engine._run_pool, engine._finish_pool)
    return [p._cached._cache_size() for p in programs]


def test_new_values_never_recompile():
    """Keys, initial parameters, the horizon t1 and the controller's tolerances are values:
    changing them traces and compiles nothing, in integrate and in run_ensemble."""

    def flow(rtol, atol):
        pid = diffrax.PIDController(rtol=rtol, atol=atol)
        return gf.GradientFlow(controller=pid, tail="explicit", max_steps=64)

    keys = jax.random.split(jax.random.key(0), 6)
    other_keys = jax.random.split(jax.random.key(1), 6)
    models = [_init(k) for k in (keys[0], other_keys[0])]
    opts = dict(chunk_size=4, segment_steps=16, **OPTS)
    first = (
        gf.integrate(models[0], RISK, 5.0, flow(1e-6, 1e-9), throw=False, **SOLVE),
        gf.run_ensemble(_init, RISK, keys, 5.0, flow(1e-6, 1e-9), **opts),
    )
    traces = _traces()
    with _backend_compilations() as events:
        second = (
            gf.integrate(models[1], RISK, 7.5, flow(1e-5, 1e-8), throw=False, **SOLVE),
            gf.run_ensemble(_init, RISK, other_keys, 7.5, flow(1e-5, 1e-8), **opts),
        )
    assert _traces() == traces  # no new trace of the inner programs
    assert events == []  # and nothing compiled at all
    for a, b in zip(first, second, strict=True):  # the new values were used
        assert float(np.max(a.t_stop)) <= 5.0 < float(np.max(b.t_stop)) <= 7.5


def test_stragglers_run_solo_with_the_same_results(monkeypatch):
    """The last few live members of a heavy-tailed ensemble run unbatched, one after the
    other: the waste (pool slots x steps / useful steps) drops, the results do not change."""
    keys = jax.random.split(jax.random.key(5), 64)[jnp.r_[:15, 42]]  # 42: the straggler
    gd = gf.GradientDescent(learning_rate=0.2, max_steps=4000, stop=gf.Stop(1e-4, 1e-4))
    run = lambda: gf.run_ensemble(_init, RISK, keys, math.inf, gd, segment_steps=64, **OPTS)
    monkeypatch.setattr(engine, "SOLO_FROM", 16)  # a small ensemble stands in for a large one
    solo = run()
    steps = np.asarray(solo.num_steps)
    assert steps.max() > 8 * np.median(steps)  # one straggler: a heavy tail
    monkeypatch.setattr(engine, "SOLO_MAX", {"cpu": 0})  # stragglers stay in the pool of 16
    pooled = run()
    # the pool of 16 runs until its straggler is done: waste ~ 16 * max / sum
    assert pooled.stats["waste"] >= 0.9 * 16 * steps.max() / steps.sum()
    assert solo.stats["waste"] < pooled.stats["waste"] / 3
    np.testing.assert_array_equal(solo.num_steps, pooled.num_steps)
    np.testing.assert_array_equal(solo.outcome, pooled.outcome)
    np.testing.assert_allclose(solo.final_params, pooled.final_params, rtol=1e-12, atol=1e-14)
