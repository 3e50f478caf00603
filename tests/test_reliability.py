"""Reliability: members are independent of their batch-mates, every failure has its outcome.

One small smooth problem with closed-form fates per member (frozen coefficients): good
members, and batch-mates that are NaN, overflow, have a risk unbounded below, or make
the ODE solver fail. For every solver the library documents (Tsit5, Kvaerno5, and the
default Tsit5 → ExponentialTail), the good members' results must be *bitwise* those of
the same ensemble without the bad mates (same pool shape), and equal to a lone
``integrate`` of the member to round-off with the same step counts.
"""

import math
import os
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import gflow_jax as gf


class Member(gf.AbstractModel):
    """θ ∈ R² with frozen (k, c, q) of L = k + c((θ₁ − 1)² + 50(θ₂ − 1)²) + q Σ(θ − 1)⁴.

    The factor 50 makes the tail stiff (the default flow switches to its tail solver).
    """

    theta: jax.Array
    coef: jax.Array
    frozen: ClassVar[tuple[str, ...]] = ("coef",)
    is_smooth: ClassVar[bool] = True

    def __call__(self, x):
        return jnp.broadcast_to(jnp.sum(self.theta), (jnp.shape(x)[0], 1))

    def well_posed(self):
        return jnp.asarray(True)

    def switching_functions(self, x):
        return jnp.zeros((jnp.shape(x)[0], 0))


class Risk(eqx.Module):
    def __call__(self, m):
        k, c, q = m.coef[0], m.coef[1], m.coef[2]
        d = m.theta - 1.0
        return k + c * (d[0] ** 2 + 50 * d[1] ** 2) + q * jnp.sum(d**4)


def _member(theta, k, c, q):
    return Member(jnp.asarray(theta, float), jnp.asarray([k, c, q], float))


GOOD = [_member([0.2 * i - 0.5, 1.5 - 0.1 * i], 0.0, 0.5 + 0.1 * i, 0.01) for i in range(12)]
T1 = 10.0
BAD = {
    "nan": _member([math.nan, 0.0], 0.0, 1.0, 0.01),  # DIVERGED at t = 0
    "overflow": _member([1e200, 1.0], 0.0, 1.0, 0.01),  # L = inf: DIVERGED at t = 0
    "unbounded below": _member([2.0, 2.0], 3.0, 0.0, -1.0),  # L < 0 soon: DIVERGED
    "solver fails": _member([2.0, 1.0], 1e8, 0.0, -1.0),  # blows up at t = 1/8: DT_MIN
}
EXPECTED = dict.fromkeys(["nan", "overflow", "unbounded below"], gf.Outcome.DIVERGED)
EXPECTED["solver fails"] = gf.Outcome.SOLVER_FAILED
CONTROLLER = diffrax.PIDController(rtol=1e-8, atol=1e-10, dtmin=1e-5, force_dtmin=False)
SOLVERS = {
    "tsit5": gf.GradientFlow(controller=CONTROLLER, tail="explicit"),
    "kvaerno5": gf.GradientFlow(solver=diffrax.Kvaerno5(), controller=CONTROLLER, tail="explicit"),
    "tsit5+exponential tail": gf.GradientFlow(controller=CONTROLLER),
}


def _ensemble(members, dynamics):
    table = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
    keys = jax.random.split(jax.random.key(0), len(members))
    data = jax.random.key_data(keys)

    def init(key):
        i = jnp.argmax(jnp.all(data == jax.random.key_data(key), axis=-1))
        return jax.tree.map(lambda x: x[i], table)

    return gf.run_ensemble(init, Risk(), keys, T1, dynamics, n_save=8, limits=None,
                           chunk_size=16, segment_steps=128, progress=False)  # fmt: skip


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_members_are_independent_of_failing_batch_mates(solver):
    dynamics = SOLVERS[solver]
    # the bad mates interleaved with the good members: 16 members, one pool of 16
    members = GOOD[:3] + list(BAD.values()) + GOOD[3:]
    good = np.r_[0:3, 7:16]
    mixed = _ensemble(members, dynamics)
    clean = _ensemble(GOOD + GOOD[:4], dynamics)  # the same pool shape, no bad mates
    for i, name in enumerate(BAD):
        assert int(mixed.outcome[3 + i]) == EXPECTED[name], name
    assert int(mixed.verdict[6]) == gf.SolverVerdict.DT_MIN
    assert 0 < float(mixed.t_stop[6]) < 0.125  # failed before the blow-up, not at t = 0
    if solver == "tsit5+exponential tail":
        assert np.isfinite(np.asarray(clean.t_tail)).sum() >= 12  # the tail solver was used
    for name in ("outcome", "verdict", "num_steps", "num_rejected", "num_tail_steps",
                 "t_stop", "final_params", "final_risk", "risk", "grad_norm"):  # fmt: skip
        np.testing.assert_array_equal(
            np.asarray(getattr(mixed, name))[good],
            np.asarray(getattr(clean, name))[:12],
            err_msg=f"{solver}: {name} of a good member changed with its batch-mates",
        )
    # a member alone (unbatched, one solve): the same solve up to XLA's vectorisation
    # round-off (a batched op may round differently): equal step counts, 1e-11 (Newton)
    alone = gf.integrate(GOOD[11], Risk(), T1, dynamics, n_save=8, limits=None, throw=False)
    assert int(alone.outcome) == int(clean.outcome[11])
    assert int(alone.num_steps) == int(clean.num_steps[11])
    np.testing.assert_allclose(alone.model.theta, clean.final_params[11], rtol=1e-11)
    # the failing member alone: SOLVER_FAILED with its verdict (or, with throw, an error)
    bad = gf.integrate(BAD["solver fails"], Risk(), T1, dynamics, n_save=8, limits=None,
                       throw=False)  # fmt: skip
    assert int(bad.outcome) == gf.Outcome.SOLVER_FAILED
    assert int(bad.verdict) == gf.SolverVerdict.DT_MIN and 0 < float(bad.t_stop) < 0.125
    if solver == "tsit5":
        with pytest.raises(Exception, match="the ODE solver failed \\(DT_MIN\\)"):
            gf.integrate(BAD["solver fails"], Risk(), T1, dynamics, n_save=8, limits=None)


# -- a negative risk is an error outcome, never convergence ----------------------------------


class Unbounded(eqx.Module):
    """L = K − θ⁴: positive near 0, negative for |θ| > K^{1/4} (a broken risk)."""

    K: float = 1e3

    def __call__(self, m):
        return self.K - jnp.sum(m.theta**4)


class Shifted(eqx.Module):
    """(θ − 1)² − shift: negative near the minimum by `shift`."""

    shift: float

    def __call__(self, m):
        return jnp.sum((m.theta - 1.0) ** 2) - self.shift


@pytest.mark.parametrize(
    "risk, dynamics",
    [
        (Unbounded(), gf.GradientFlow(tail="explicit")),
        (Unbounded(), gf.GradientDescent(1e-3, max_steps=5000)),
        (Shifted(1e-3), gf.GradientFlow(tail="explicit")),  # negative at t = 0
    ],
)
def test_negative_risk_is_diverged_never_converged(risk, dynamics):
    model = _member([1.0, 0.5], 0.0, 0.0, 0.0)
    traj = gf.integrate(model, risk, 1e3, dynamics, n_save=8, limits=None, throw=False)
    assert int(traj.outcome) == gf.Outcome.DIVERGED and float(traj.final_risk) < 0


def test_negative_risk_raises_in_integrate():
    model, risk = _member([1.0, 0.5], 0.0, 0.0, 0.0), Unbounded()
    with pytest.raises(Exception, match="risk\\(model\\) became negative"):
        gf.integrate(model, risk, 1e3, gf.GradientFlow(tail="explicit"), n_save=8, limits=None)


def test_round_off_below_zero_still_converges():
    # a risk that dips below zero by round-off (|L| <= risk_tol) is not broken
    model, flow = _member([1.0, 0.5], 0.0, 0.0, 0.0), gf.GradientFlow(tail="explicit")
    traj = gf.integrate(model, Shifted(1e-14), 1e3, flow, n_save=8, limits=None, throw=False)
    assert int(traj.outcome) == gf.Outcome.CONVERGED


# -- stores: Ensemble.save is kill-safe; load refuses every bad file with a clear message ----

INT_FIELDS = {"outcome", "verdict", "limit", "limit_reason", "limit_num_negative", "decay_law",
              "num_crossings", "num_slides", "num_sliding",
              "limit_num_zero", "num_steps", "num_rejected", "num_tail_steps"}  # fmt: skip


def _ensemble_without_running(width=2, batch=3, frozen=()):
    """An Ensemble of `batch` ShallowReLU(1, width) members, built without integrating."""
    from gflow_jax.ensemble import PER_TIME, PER_TRAJECTORY, architecture

    keys = jax.random.split(jax.random.key(1), batch)
    models = jax.vmap(lambda k: gf.ShallowReLU(1, width, key=k, frozen=frozen))(keys)
    params = gf.models.base.partition(models)[0]
    flat = jax.vmap(lambda p: jax.flatten_util.ravel_pytree(p)[0])(params)
    fields = {n: jnp.zeros(batch, jnp.int32 if n in INT_FIELDS else float) for n in PER_TRAJECTORY}
    fields.update({n: jnp.ones((batch, 4)) for n in PER_TIME})
    first = jax.tree.map(lambda x: x[0], models)
    return gf.Ensemble(ts=jnp.linspace(0.0, 1.0, 4), final_params=flat, models=models,
                       architecture=__import__("json").dumps(architecture(first), sort_keys=True),
                       **fields)  # fmt: skip


def test_save_load_roundtrip_keeps_frozen_arrays(tmp_path):
    ens = _ensemble_without_running(frozen=("w", "b"))
    ens.save(tmp_path / "e.nc")
    template = gf.ShallowReLU(1, 2, key=jax.random.key(9), frozen=("w", "b"))
    back = gf.Ensemble.load(tmp_path / "e.nc", template=template)
    for name in ("w", "b", "v", "c"):  # each member's own frozen arrays, not the template's
        np.testing.assert_array_equal(getattr(back.models, name), getattr(ens.models, name))


def test_files_without_kink_columns_load_as_untracked(tmp_path):
    """Files written before the kink columns existed load with -1 / NaN there, and the
    columns of a file that has them round-trip."""
    from gflow_jax.ensemble import KINK_FIELDS

    ens = _ensemble_without_running()
    ens = eqx.tree_at(lambda e: e.num_crossings, ens, jnp.arange(3, dtype=jnp.int32))
    ens.save(tmp_path / "new.nc")
    back = gf.Ensemble.load(tmp_path / "new.nc")
    np.testing.assert_array_equal(back.num_crossings, [0, 1, 2])
    old = ens.to_xarray().drop_vars(list(KINK_FIELDS))
    old.to_netcdf(tmp_path / "old.nc", engine="h5netcdf")
    back = gf.Ensemble.load(tmp_path / "old.nc")
    for name in ("num_crossings", "num_slides", "num_sliding"):
        np.testing.assert_array_equal(getattr(back, name), [-1, -1, -1])
    assert np.all(np.isnan(back.sliding_time))
    np.testing.assert_array_equal(back.final_risk, ens.final_risk)


def _bad_file(kind, tmp_path, good):
    path = tmp_path / f"{kind}.nc"
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "zero-length":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("outcome,final_risk\n1,0.0\n")
    elif kind == "foreign netCDF":
        import xarray as xr

        xr.Dataset({"outcome": ("x", np.arange(3))}).to_netcdf(path, engine="h5netcdf")
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind, error, match",
    [
        ("truncated", ValueError, "not a readable netCDF file.*truncated"),
        ("zero-length", ValueError, r"\(0 bytes\) is not a readable netCDF file"),
        ("text", ValueError, "not a readable netCDF file"),
        ("foreign netCDF", ValueError, "not a gflow_jax ensemble"),
        ("directory", IsADirectoryError, "is a directory"),
    ],
)
def test_load_refuses_bad_files(tmp_path, kind, error, match):
    good = tmp_path / "good.nc"
    _ensemble_without_running().save(good)
    with pytest.raises(error, match=match):
        gf.Ensemble.load(_bad_file(kind, tmp_path, good))


@pytest.mark.parametrize(
    "template, match",
    [
        (
            gf.ShallowReLU(1, 3, key=jax.random.key(0)),
            r"trainable array \.w: stored shape \(2, 1\)",
        ),
        (gf.ShallowReLU(2, 1, d_out=2, key=jax.random.key(0)), r"\.w: stored shape \(2, 1\)"),
        (gf.ShallowReLU(1, 2, key=jax.random.key(0), frozen=("c",)), "frozen fields: stored"),
        (gf.ShallowReLU(1, 2, key=jax.random.key(0), dtype=jnp.float32), "dtype: stored"),
        (gf.DeepMLP((1, 2, 1), "tanh", key=jax.random.key(0)), "model class: stored"),
        ("abc", "template must be a model"),
    ],
)
def test_load_refuses_a_template_of_another_architecture(tmp_path, template, match):
    _ensemble_without_running().save(tmp_path / "e.nc")
    with pytest.raises((ValueError, TypeError), match=match):
        gf.Ensemble.load(tmp_path / "e.nc", template=template)


def test_save_refuses_directories_and_paths_below_files(tmp_path):
    ens = _ensemble_without_running()
    with pytest.raises(IsADirectoryError, match="is a directory; pass a file name"):
        ens.save(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        ens.save(tmp_path / "file" / "e.nc")


_KILLED_WRITE = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("storage", sys.argv[1])
storage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(storage)

def write(tmp):
    with open(tmp, "wb") as f:
        f.write(b"half a file")
        f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of the write

storage.write_file_atomic(write, sys.argv[2])
"""


def test_killed_save_leaves_the_old_file_and_the_next_save_cleans_up(tmp_path):
    import subprocess
    import sys

    import gflow_jax._storage as storage

    ens = _ensemble_without_running()
    target = tmp_path / "e.nc"
    ens.save(target)
    before = target.read_bytes()
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITE, storage.__file__, str(target)])
    assert proc.returncode == -9
    assert target.read_bytes() == before  # the old file, whole
    stale = list(tmp_path.glob("*.tmp"))
    assert len(stale) == 1  # what the killed writer left
    live = tmp_path / f"e.nc.{storage._host()}.{os.getpid()}.x.tmp"  # a running writer's
    live.write_bytes(b"")
    gf.Ensemble.load(target)  # still readable
    ens.save(target)
    assert sorted(tmp_path.glob("*.tmp")) == [live]  # the dead writer's temporary is gone
    np.testing.assert_array_equal(gf.Ensemble.load(target).final_params, ens.final_params)
