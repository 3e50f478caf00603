"""Study: teacher–student ReLU networks under Gaussian inputs (Safran & Shamir 2018).

A student ``N_θ(x) = Σ_{j ≤ n} relu(w_j · x)`` (no biases, output weights **fixed to
one**: ``ShallowReLU(d, n, use_bias=False, frozen=("v",))`` with ``v = 1``) learns the
teacher ``f(x) = Σ_{i ≤ k} relu(e_i · x)`` of :func:`gflow_jax.risks.gaussian.orthonormal_teacher`
(orthonormal weight vectors, here the coordinate vectors; the Gaussian and the
initialisation are rotation invariant, so a random orthonormal frame gives the same
statistics) under ``x ~ N(0, I_d)`` with ``d = k``, by gradient flow on the exact
population risk ``L(θ) = E(N_θ(x) − f(x))²`` (:meth:`gflow_jax.PopulationRisk.gaussian`:
closed form, no quadrature). Safran & Shamir (ICML 2018) found spurious local minima of
this risk for ``k = n ≥ 6`` and saw them become rarer under mild over-parameterisation.

Per teacher width ``k`` and student width ``n`` (rules ``"k"``, ``"k+1"``, ``"2k"``, …:
``k = n`` and mildly over-parameterised ``n > k``), ``inits`` random initialisations
``w_j ~ N(0, init_scale² I_d / d)`` (LeCun/Xavier; member ``m`` uses the same key in every
cell) are flowed to their limit (``t1 = inf``, default :class:`gflow_jax.GradientFlow`,
:func:`gflow_jax.run_ensemble`), and every limit is classified by
:mod:`gflow_jax.limits`. Reported per cell: the fraction whose risk → 0
(``Ensemble.fraction()``: Wilson 95 % interval and the bounds left by unresolved
members), and for the others their limit risk and class — ``LOCAL_MIN`` (a spurious
local minimum), ``SADDLE``, or ``UNRESOLVED`` with its :class:`gflow_jax.LimitReason`.

Observed (``laptop`` run, 16 initialisations per cell): every ``k = n`` flow at ``k ∈
{3, 6}`` reached zero risk; for ``n > k`` some members are ``UNRESOLVED`` with reason
``TOO_FAR`` (flow stopped ``CONVERGED`` at ``L ≤ 1e-10``, refined risk ``≈ 2e-13``: the
zeros form a non-isolated set when the student is wider than the teacher, and the zero
the refinement found lies outside the flow's ball) — read those as "risk → 0, limit not
certified", not as spurious minima.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import numpy as np

from ._config import config_dict, resolve_devices
from ._io import per_member_dataset, save_figure, write_text

__all__ = [
    "PRESETS",
    "TeacherStudentConfig",
    "figure",
    "others",
    "report",
    "run",
    "student_width",
    "table",
]

NAME = "teacher_student"
DESCRIPTION = "Safran-Shamir: ReLU student of width n vs orthonormal teacher of width k, N(0, I)"

_RULE = re.compile(r"^\s*(\d*)\s*k\s*(?:\+\s*(\d+))?\s*$")


def student_width(rule: str, k: int) -> int:
    """The student width ``n`` a rule gives for the teacher width `k`.

    **Arguments:**

    - `rule`: ``"k"``, ``"k+m"`` or ``"ak"`` / ``"ak+m"`` (``a``, ``m`` non-negative
      integers, ``a ≥ 1``), e.g. ``"k+1"``, ``"2k"``.
    - `k`: the teacher width.

    **Returns:**

    ``a·k + m``.
    """
    match = _RULE.match(str(rule))
    if match is None or match.group(1) == "0":
        raise ValueError(f"student rule {rule!r}: expected 'k', 'k+m', 'ak' or 'ak+m'.")
    a = int(match.group(1) or 1)
    m = int(match.group(2) or 0)
    return a * k + m


@dataclasses.dataclass(frozen=True)
class TeacherStudentConfig:
    """Settings of the teacher–student study (every field has a default).

    - ``teacher_widths``: teacher widths ``k`` (input dimension ``d = k``);
    - ``students``: student-width rules in ``k`` (``"k"``, ``"k+1"``, ``"2k"``, …; see
      :func:`student_width`);
    - ``inits``: random initialisations per cell; ``seed``: their base key;
      ``init_scale``: the student's ``w_j ~ N(0, init_scale² I / d)``;
    - ``t1``: the flow's horizon (``inf``: to the limit, the default);
    - ``zero_risk``: a refined limit with risk ``≤ zero_risk`` is a zero of the risk
      (:class:`gflow_jax.LimitAnalysis`; in float32 at least its default ``1e-10``). The
      exact Gaussian risk is a sum of ``O((n + k)²)`` terms of size ``~E f² ≈ k/2``, so
      its round-off floor is ``~eps · k`` (``≈ 2e-16`` at ``k = 2``): a student equal to
      the teacher evaluates to ``0`` or ``2.2e-16``. ``LimitAnalysis``'s float64 default
      ``1e-20`` lies below that floor and labelled such exact zeros ``LOCAL_MIN``; the
      default ``1e-12`` is far above the floor and far below the spurious minima's risks;
    - ``n_save``: saved points per trajectory;
    - ``chunk_size``: members per stored chunk and per ensemble pool.
    """

    teacher_widths: tuple[int, ...] = (2, 4, 6, 8)
    students: tuple[str, ...] = ("k", "k+1", "2k")
    inits: int = 128
    seed: int = 0
    init_scale: float = 1.0
    t1: float = math.inf
    zero_risk: float = 1e-12
    n_save: int = 20
    chunk_size: int = 32

    def __post_init__(self):
        for name in ("inits", "n_save", "chunk_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        if self.n_save < 2:
            raise ValueError(f"n_save must be >= 2, got {self.n_save!r}.")
        ks = tuple(self.teacher_widths)
        if not ks or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in ks):
            raise ValueError(f"teacher_widths must be a non-empty tuple of positive ints: {ks!r}.")
        if len(set(ks)) != len(ks):
            raise ValueError(f"teacher_widths has duplicates: {ks!r}.")
        rules = tuple(self.students)
        if not rules or len(set(rules)) != len(rules):
            raise ValueError(f"students must be a non-empty tuple of distinct rules: {rules!r}.")
        for rule in rules:
            student_width(rule, 1)  # raises on a bad rule
        if not (math.isfinite(self.init_scale) and self.init_scale > 0):
            raise ValueError(f"init_scale must be finite and > 0, got {self.init_scale!r}.")
        if not (math.isfinite(self.zero_risk) and self.zero_risk > 0):
            raise ValueError(f"zero_risk must be finite and > 0, got {self.zero_risk!r}.")
        if not (self.t1 > 0):
            raise ValueError(f"t1 must be > 0 (inf: to the limit), got {self.t1!r}.")


PRESETS = {
    "tiny": TeacherStudentConfig(teacher_widths=(2,), students=("k", "k+1"), inits=4, chunk_size=4),
    "laptop": TeacherStudentConfig(
        teacher_widths=(3, 6), students=("k", "k+1"), inits=16, chunk_size=16
    ),
    "paper": TeacherStudentConfig(),
}
"""``tiny``: ``k = 2``, ``n ∈ {2, 3}``, 4 initialisations (compilation dominates: about a
minute per cell on 2 busy CPU cores; the tests); ``laptop``: ``k ∈ {3, 6}``, ``n ∈ {k,
k+1}``, 16 initialisations (about 90 s wall per cell, 6 minutes in all, on 2 CPU cores
shared with other jobs; ``n = 2k`` took 103 s at ``k = 3`` but more than 7 minutes at
``k = 6``, so it is left to ``--set 'students=["k", "k+1", "2k"]'`` and ``paper``);
``paper``: the defaults (``k ∈ {2, 4, 6, 8}``, ``n ∈ {k, k+1, 2k}``, 128 initialisations
per cell)."""

#: The per-member fields kept from the ensemble.
_FIELDS = (
    "outcome",
    "limit",
    "limit_reason",
    "limit_risk",
    "limit_num_negative",
    "initial_risk",
    "final_risk",
    "t_stop",
    "num_steps",
)


def _cell(
    config: TeacherStudentConfig, k: int, student: str, members: range, devices: str | None = None
):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from ..dynamics import GradientFlow
    from ..engine import run_ensemble
    from ..limits import LimitAnalysis
    from ..models.shallow import ShallowReLU
    from ..risks.gaussian import orthonormal_teacher
    from ..risks.population import PopulationRisk

    n = student_width(student, k)
    risk = PopulationRisk.gaussian(orthonormal_teacher(k, k))

    def init(key):
        model = ShallowReLU(k, n, key=key, use_bias=False, frozen=("v",), init="lecun",
                            scale=config.init_scale)  # fmt: skip
        return eqx.tree_at(lambda m: m.v, model, jnp.ones_like(model.v))

    keys = jax.random.split(jax.random.key(config.seed), config.inits)
    keys = keys[members.start : members.stop]
    floor = 1e-10 if jnp.zeros(()).dtype == jnp.float32 else 0.0  # float32's default
    limits = LimitAnalysis(zero_risk=max(config.zero_risk, floor))
    ens = run_ensemble(init, risk, keys, config.t1, GradientFlow(), n_save=config.n_save,
                       chunk_size=config.chunk_size, limits=limits, progress=None,
                       devices=resolve_devices(devices))  # fmt: skip
    return per_member_dataset(ens, _FIELDS)


def run(
    config: TeacherStudentConfig | None = None,
    store=None,
    *,
    progress=False,
    overwrite=False,
    executor="local",
    devices: str | None = None,
):
    """Run the study; returns an ``xarray.Dataset``.

    **Arguments:**

    - `config`: a :class:`TeacherStudentConfig` (default: the defaults).
    - `store`: a directory for :func:`gflow_jax.run_sweep` (chunks of members stored as
      they finish; a rerun resumes), or ``None``.
    - `progress`: tqdm bars; `overwrite`: replace a store made with another config;
      `executor`: ``"local"`` or a ``dask.distributed.Client`` (:func:`gflow_jax.run_sweep`).
    - `devices`: a ``--devices`` spec (``"all"``, a count, ``"gpu"``, ``"gpu:0,1"``;
      resolved where a piece runs) over which :func:`gflow_jax.run_ensemble` splits its
      pools; ``None``: one device.

    **Returns:**

    Dims ``k`` (teacher width), ``student`` (the width rule) and ``member``; coordinate
    ``n (k, student)`` (the student width) and ``ratio = n / k``. Per member: ``outcome``,
    ``limit``, ``limit_reason`` (codes of :class:`gflow_jax.Outcome`,
    :class:`gflow_jax.Limit`, :class:`gflow_jax.LimitReason`), ``limit_risk``,
    ``limit_num_negative``, ``initial_risk``, ``final_risk``, ``t_stop``, ``num_steps``.
    Per cell: ``zero`` (fraction whose limit has zero risk), ``zero_low``/``zero_high``
    (Wilson 95 %), ``zero_low_all``/``zero_high_all`` (unresolved members counted as
    failing/succeeding), and the counts ``n_zero``, ``n_local_min``, ``n_saddle``,
    ``n_unresolved``.
    """
    import jax

    from ..limits import Limit, LimitReason
    from ..outcomes import Outcome
    from ..statistics import fraction_bounds
    from ..sweep import run_sweep

    config = TeacherStudentConfig() if config is None else config
    if not isinstance(config, TeacherStudentConfig):
        raise TypeError(f"config must be a TeacherStudentConfig, got {type(config).__name__}.")
    ds = run_sweep(
        {"k": list(config.teacher_widths), "student": list(config.students)},
        lambda k, student, members: _cell(config, int(k), str(student), members, devices),
        store,
        config={"study": NAME, **config_dict(config), "x64": bool(jax.config.jax_enable_x64)},
        members=config.inits,
        chunk_size=config.chunk_size,
        progress=progress,
        overwrite=overwrite,
        executor=executor,
    )
    limit = ds["limit"].values
    K, S, M = limit.shape
    zero = np.zeros((K, S, 5))
    for i in range(K):
        for j in range(S):
            f = fraction_bounds(
                int(np.sum(limit[i, j] == int(Limit.ZERO_RISK))),
                int(np.sum(limit[i, j] == int(Limit.UNRESOLVED))),
                M,
            )
            zero[i, j] = (f.estimate, f.low, f.high, f.low_all_unresolved_fail,
                          f.high_all_unresolved_succeed)  # fmt: skip
    cell = ("k", "student")
    count = lambda code: (cell, np.sum(limit == int(code), axis=-1))
    ks = [int(k) for k in ds["k"].values]
    widths = np.array([[student_width(str(s), k) for s in ds["student"].values] for k in ks])
    ds = ds.assign(
        zero=(cell, zero[..., 0]),
        zero_low=(cell, zero[..., 1]),
        zero_high=(cell, zero[..., 2]),
        zero_low_all=(cell, zero[..., 3]),
        zero_high_all=(cell, zero[..., 4]),
        n_zero=count(Limit.ZERO_RISK),
        n_local_min=count(Limit.LOCAL_MIN),
        n_saddle=count(Limit.SADDLE),
        n_unresolved=count(Limit.UNRESOLVED),
    )
    ds = ds.assign_coords(n=(cell, widths), ratio=(cell, widths / np.array(ks)[:, None]))
    ds.attrs.update(
        study=NAME,
        description="Gradient flow (to the limit) of a ReLU student (no biases, output "
        "weights fixed to 1) on the exact Gaussian-input risk of an orthonormal teacher "
        "f(x) = sum_i relu(e_i . x), x ~ N(0, I_k) (Safran & Shamir 2018).",
        outcome_codes=", ".join(f"{o.value}={o.name}" for o in Outcome),
        limit_codes=", ".join(f"{c.value}={c.name}" for c in Limit),
        limit_reason_codes=", ".join(f"{c.value}={c.name}" for c in LimitReason),
    )
    return ds


def _limit_value(c) -> np.ndarray:
    """A member's limit risk: ``limit_risk`` where the limit was characterised, else
    ``final_risk``."""
    lr, fr = c["limit_risk"].values, c["final_risk"].values
    return np.where(np.isfinite(lr), lr, fr)


def others(dataset) -> list[dict]:
    """The members whose limit is not ``ZERO_RISK``, one dict each: ``k``, ``n``,
    ``student``, ``member``, ``limit`` (class name), ``reason`` (the
    :class:`gflow_jax.LimitReason` name, ``NONE`` when resolved), ``limit_risk`` (see
    :func:`_limit_value`), ``final_risk``, ``num_negative`` (Hessian eigenvalues below
    zero at the limit), sorted by cell then member."""
    from ..limits import Limit, LimitReason

    rows = []
    for k in dataset["k"].values:
        for s in dataset["student"].values:
            c = dataset.sel(k=k, student=s)
            value = _limit_value(c)
            for m, code in enumerate(c["limit"].values):
                if int(code) == int(Limit.ZERO_RISK):
                    continue
                rows.append({
                    "k": int(k), "n": int(c["n"]), "student": str(s), "member": m,
                    "limit": Limit(int(code)).name,
                    "reason": LimitReason(int(c["limit_reason"].values[m])).name,
                    "limit_risk": float(value[m]),
                    "final_risk": float(c["final_risk"].values[m]),
                    "num_negative": int(c["limit_num_negative"].values[m]),
                })  # fmt: skip
    return rows


def table(dataset) -> str:
    """Markdown tables: the fraction with risk → 0 and the limit classes per cell, and
    every member whose limit is not zero risk with its limit risk and class."""
    ds = dataset
    rows = [
        "| k | student | n | n/k | members | risk → 0 [95% CI] | bounds (unresolved) | "
        "zero risk | local min | saddle | unresolved |",
        "|---:|---|---:|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for k in ds["k"].values:
        for s in ds["student"].values:
            c = ds.sel(k=k, student=s)
            rows.append(
                f"| {int(k)} | {s} | {int(c['n'])} | {float(c['ratio']):.3g} | "
                f"{c.sizes['member']} | {float(c['zero']):.2f} "
                f"[{float(c['zero_low']):.2f}, {float(c['zero_high']):.2f}] | "
                f"[{float(c['zero_low_all']):.2f}, {float(c['zero_high_all']):.2f}] | "
                f"{int(c['n_zero'])} | {int(c['n_local_min'])} | {int(c['n_saddle'])} | "
                f"{int(c['n_unresolved'])} |"
            )
    rest = others(ds)
    rows += ["", "Members whose limit is not zero risk (LOCAL_MIN: a spurious local minimum):", ""]
    if not rest:
        rows.append("(none: every limit has zero risk)")
        return "\n".join(rows)
    rows += [
        "| k | n | member | limit | reason | limit risk | final risk | negative eigenvalues |",
        "|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in rest:
        rows.append(
            f"| {r['k']} | {r['n']} | {r['member']} | {r['limit']} | {r['reason']} | "
            f"{r['limit_risk']:.6g} | {r['final_risk']:.6g} | {r['num_negative']} |"
        )
    return "\n".join(rows)


#: Markers and colours of the limit classes in the figure.
_CLASS_STYLE = {"LOCAL_MIN": ("o", "C3"), "SADDLE": ("^", "C1"), "UNRESOLVED": ("x", "0.4")}


def figure(dataset):
    """Two panels: the fraction with risk → 0 vs ``n/k`` (one line per ``k``, error bars
    the 95 % bounds including unresolved members); the limit risks of the other members by
    cell, marked by limit class. Returns a matplotlib ``Figure`` (no pyplot state)."""
    from matplotlib.figure import Figure

    ds = dataset
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ks = [int(k) for k in ds["k"].values]
    for i, k in enumerate(ks):
        c = ds.sel(k=k)
        x, y = c["ratio"].values, c["zero"].values
        order = np.argsort(x, kind="stable")
        err = np.stack([y - c["zero_low_all"].values, c["zero_high_all"].values - y])
        ax1.errorbar(x[order] * (1 + 0.01 * i), y[order], yerr=np.maximum(err, 0)[:, order],
                     marker="o", capsize=3, color=f"C{i}", label=f"k = {k}")  # fmt: skip
    ax1.set_ylim(-0.03, 1.03)
    ax1.set_xlabel("student / teacher width n/k")
    ax1.set_ylabel("fraction with risk → 0")
    ax1.set_title("limit has zero risk (95% CI incl. unresolved)", fontsize=9)
    ax1.legend(fontsize=8)

    cells = [(int(k), str(s)) for k in ds["k"].values for s in ds["student"].values]
    labels = [f"k={k}\nn={int(ds.sel(k=k, student=s)['n'])}" for k, s in cells]
    rest = others(ds)
    index = {cell: i for i, cell in enumerate(cells)}
    floor = 1e-18
    seen = set()
    rng = np.random.default_rng(0)
    for r in rest:
        marker, color = _CLASS_STYLE.get(r["limit"], ("s", "k"))
        x = index[(r["k"], r["student"])] + rng.uniform(-0.15, 0.15)
        label = None if r["limit"] in seen else r["limit"]
        seen.add(r["limit"])
        ax2.plot(x, max(r["limit_risk"], floor), marker, color=color, ms=6, alpha=0.7,
                 label=label)  # fmt: skip
    if not rest:
        ax2.text(0.5, 0.5, "every limit has zero risk", ha="center", transform=ax2.transAxes)
    else:
        ax2.set_yscale("log")
        ax2.legend(fontsize=8)
    ax2.set_xticks(range(len(cells)), labels, fontsize=7)
    ax2.set_xlim(-0.5, len(cells) - 0.5)
    ax2.set_ylabel(f"limit risk (floored at {floor:g})")
    ax2.set_title("members whose limit is not zero risk, by class", fontsize=9)
    fig.suptitle("ReLU student (output weights 1) vs orthonormal teacher, x ~ N(0, I_k), "
                 "gradient flow to the limit", fontsize=10)  # fmt: skip
    return fig


def report(dataset, outdir: str | os.PathLike) -> list[str]:
    """Write ``teacher_student.png``, ``teacher_student.pdf`` and ``teacher_student.md``
    into `outdir`.

    **Arguments:**

    - `dataset`: what :func:`run` returned.
    - `outdir`: the folder (created if needed).

    **Returns:**

    The paths written.
    """
    paths = save_figure(figure(dataset), outdir, NAME)
    paths.append(write_text(table(dataset), outdir, f"{NAME}.md"))
    return paths
