"""Study: how often does gradient flow of a shallow ReLU network reach zero risk?

Jentzen & Riekert (arXiv 2107.04479) study one-hidden-layer ReLU networks
``N(x) = c + Σ_j v_j relu(w_j x + b_j)`` trained by gradient flow on the population risk
``L(θ) = ∫_0^1 (N_θ(x) − f(x))² dx`` of an affine target ``f(x) = αx + β`` (inputs
uniform on ``[0, 1]``), with the generalised gradient ``relu'(0) = 0``. Their theorem: a
gradient-flow trajectory that stays *bounded* and starts with small enough risk has
``L(θ_t) → 0``. From larger risks the flow may stop at a critical point of positive
risk instead. This study measures, per width ``H``:

- the fraction of random initialisations whose risk → 0 (``Ensemble.fraction()``: the
  flow is run to its limit, ``t1 = inf``, and every limit is classified by
  :mod:`gflow_jax.limits`), with its Wilson 95 % interval and the bounds left by
  unresolved members;
- the same fraction per bin of initial risk ``L(θ_0)`` (the theorem's hypothesis);
- the limit risks of the members that do not reach zero risk, which cluster at critical
  values: ``α²/12`` (every neuron inactive on ``[0, 1]``, so the network is the constant
  ``c = α/2 + β`` and ``L = Var(αX) = α²/12``) and ``α²/972`` (the zig-zag saddle of
  two neurons, see ``tests/test_population.py``); other clusters are reported with their
  value and marked unidentified;
- ``max_t ‖θ_t‖`` along every flow (boundedness is a hypothesis of the theorem);
- gradient descent at several learning rates ``η`` (time ``t = kη``, horizon ``gd_t1``)
  from the same initialisations, on the same axes.

Initialisation: ``ShallowReLU(1, H)`` with standard-normal weights and biases, output
weights scaled by ``1/√H`` (as in ``make demo``); member ``k`` uses the same key at
every width and for every dynamics (common random numbers). Each (dynamics, width) cell
is one :func:`gflow_jax.run_ensemble`, split into stored chunks of ``chunk_size``
members by :func:`gflow_jax.run_sweep`. See ``docs/theory.md`` for the definitions.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from ._config import config_dict, resolve_devices
from ._io import per_member_dataset, save_figure, write_text

__all__ = ["PRESETS", "ShallowReLUConfig", "figure", "limit_clusters", "report", "run", "table"]

NAME = "shallow_relu"
DESCRIPTION = "Jentzen-Riekert: fraction of shallow ReLU flows with risk -> 0 vs width"


@dataclasses.dataclass(frozen=True)
class ShallowReLUConfig:
    """Settings of the shallow-ReLU study (every field has a default).

    - ``widths``: hidden widths ``H``; ``inits``: initialisations per width; ``seed``:
      their base key;
    - ``slope``, ``intercept``: the target ``f(x) = slope · x + intercept`` on ``[0, 1]``;
    - ``t1``: the flow's horizon (``inf``: to the limit, the default);
    - ``learning_rates``: gradient-descent learning rates (empty: no GD); ``gd_t1``:
      their horizon in flow time (``gd_t1 / η`` steps at most);
    - ``risk_bins``: number of log-spaced bins of the initial risk;
    - ``n_save``: saved points per trajectory (``max ‖θ_t‖`` is taken over them and the
      end point);
    - ``chunk_size``: members per stored chunk and per ensemble pool.
    """

    widths: tuple[int, ...] = (1, 2, 3, 5, 8, 16)
    inits: int = 256
    seed: int = 0
    slope: float = 2.0
    intercept: float = 1.0
    t1: float = math.inf
    learning_rates: tuple[float, ...] = (0.02, 0.1)
    gd_t1: float = 1000.0
    risk_bins: int = 5
    n_save: int = 100
    chunk_size: int = 64

    def __post_init__(self):
        for name in ("inits", "risk_bins", "n_save", "chunk_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        if self.n_save < 2:
            raise ValueError(f"n_save must be >= 2, got {self.n_save!r}.")
        w = tuple(self.widths)
        if not w or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in w):
            raise ValueError(f"widths must be a non-empty tuple of positive ints, got {w!r}.")
        if len(set(w)) != len(w):
            raise ValueError(f"widths has duplicates: {w!r}.")
        lrs = tuple(self.learning_rates)
        if len(set(lrs)) != len(lrs) or any(
            not (isinstance(x, (int, float)) and math.isfinite(x) and x > 0) for x in lrs
        ):
            raise ValueError(f"learning_rates must be distinct finite positive numbers: {lrs!r}.")
        for name in ("slope", "intercept"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite.")
        if self.slope == 0:
            raise ValueError("slope must be non-zero (the critical values are multiples of it).")
        if not (self.t1 > 0):
            raise ValueError(f"t1 must be > 0 (inf: to the limit), got {self.t1!r}.")
        if not (math.isfinite(self.gd_t1) and self.gd_t1 > 0):
            raise ValueError(f"gd_t1 must be finite and > 0, got {self.gd_t1!r}.")

    def dynamics_names(self) -> list[str]:
        """The grid's ``dynamics`` values: ``"flow"`` and ``"gd:<η>"`` per learning rate."""
        return ["flow"] + [f"gd:{lr:g}" for lr in self.learning_rates]


PRESETS = {
    "tiny": ShallowReLUConfig(
        widths=(1, 2), inits=4, learning_rates=(0.1,), gd_t1=50.0, risk_bins=2, chunk_size=2
    ),
    "laptop": ShallowReLUConfig(
        widths=(1, 2, 3, 5, 8, 16), inits=32, learning_rates=(0.1,), gd_t1=300.0, chunk_size=16
    ),
    "paper": ShallowReLUConfig(),
}
"""``tiny``: seconds of work (compilation dominates; the tests); ``laptop``: a few minutes
on 2 CPU cores; ``paper``: the defaults (256 initialisations per width, two learning
rates)."""

#: Known critical values of the risk, as multiples of α², with what they are.
CRITICAL_VALUES = {
    1 / 12: "α²/12: every neuron inactive on [0, 1] (constant fit)",
    1 / 972: "α²/972: two-neuron zig-zag saddle",
}


#: Limit risks below this multiple of α² are reported as ≈ 0 (one cluster): members whose
#: risk vanished but whose limit could not be certified as a zero (e.g. unresolved).
NEGLIGIBLE = 1e-12


def _cell(
    config: ShallowReLUConfig, dynamics: str, width: int, members: range, devices: str | None = None
):
    import equinox as eqx
    import jax

    from ..dynamics import GradientDescent, GradientFlow
    from ..engine import run_ensemble
    from ..models.shallow import ShallowReLU
    from ..risks.population import PopulationRisk
    from ..risks.targets import Affine

    risk = PopulationRisk.uniform_1d(Affine(config.slope, config.intercept), a=0.0, b=1.0)

    def init(key):
        model = ShallowReLU(1, width, key=key)
        return eqx.tree_at(lambda m: m.v, model, model.v / math.sqrt(width))

    keys = jax.random.split(jax.random.key(config.seed), config.inits)
    keys = keys[members.start : members.stop]
    if dynamics == "flow":
        dyn, t1 = GradientFlow(), config.t1
    else:
        lr = float(dynamics.removeprefix("gd:"))
        steps = math.ceil(config.gd_t1 / lr)
        dyn, t1 = GradientDescent(lr, max_steps=steps + 1), steps * lr
    ens = run_ensemble(
        init,
        risk,
        keys,
        t1,
        dyn,
        n_save=config.n_save,
        chunk_size=config.chunk_size,
        progress=None,
        devices=resolve_devices(devices),
    )
    return per_member_dataset(
        ens,
        (
            "outcome",
            "limit",
            "limit_reason",
            "limit_risk",
            "limit_num_negative",
            "initial_risk",
            "final_risk",
            "initial_param_norm",
            "max_param_norm",
            "t_stop",
            "num_steps",
        ),
    )


def run(
    config: ShallowReLUConfig | None = None,
    store=None,
    *,
    progress=False,
    overwrite=False,
    executor="local",
    devices: str | None = None,
):
    """Run the study; returns an ``xarray.Dataset``.

    **Arguments:**

    - `config`: a :class:`ShallowReLUConfig` (default: the defaults).
    - `store`: a directory for :func:`gflow_jax.run_sweep` (chunks of members stored as
      they finish; a rerun resumes), or ``None``.
    - `progress`: tqdm bars; `overwrite`: replace a store made with another config;
      `executor`: ``"local"`` or a ``dask.distributed.Client`` (:func:`gflow_jax.run_sweep`).
    - `devices`: a ``--devices`` spec (``"all"``, a count, ``"gpu"``, ``"gpu:0,1"``;
      resolved where a piece runs) over which :func:`gflow_jax.run_ensemble` splits its
      pools; ``None``: one device.

    **Returns:**

    Dims ``dynamics`` (``"flow"``, ``"gd:<η>"``), ``width``, ``member``, ``risk_bin``.
    Per member: ``outcome``, ``limit``, ``limit_reason`` (codes of
    :class:`gflow_jax.Outcome`, :class:`gflow_jax.Limit`,
    :class:`gflow_jax.LimitReason`), ``limit_risk``, ``limit_num_negative``,
    ``initial_risk``, ``final_risk``, ``initial_param_norm``, ``max_param_norm``,
    ``t_stop``, ``num_steps``. Per cell: ``zero`` (fraction whose limit has zero risk),
    ``zero_low``/``zero_high`` (Wilson 95 %), ``zero_low_all``/``zero_high_all`` (the
    bounds counting unresolved members as failing/succeeding), ``converged`` (outcome
    ``CONVERGED``), ``local_min``, ``saddle``, ``unresolved``; per initial-risk bin:
    ``zero_by_risk`` and ``count_by_risk`` (bin edges ``risk_bin_edges``).
    """
    import jax

    from ..limits import Limit
    from ..outcomes import Outcome
    from ..statistics import fraction_bounds
    from ..sweep import run_sweep

    config = ShallowReLUConfig() if config is None else config
    if not isinstance(config, ShallowReLUConfig):
        raise TypeError(f"config must be a ShallowReLUConfig, got {type(config).__name__}.")
    ds = run_sweep(
        {"dynamics": config.dynamics_names(), "width": list(config.widths)},
        lambda dynamics, width, members: _cell(config, dynamics, width, members, devices),
        store,
        config={"study": NAME, **config_dict(config), "x64": bool(jax.config.jax_enable_x64)},
        members=config.inits,
        chunk_size=config.chunk_size,
        progress=progress,
        overwrite=overwrite,
        executor=executor,
    )
    limit, outcome = ds["limit"].values, ds["outcome"].values
    D, W = limit.shape[:2]
    zero = np.zeros((D, W, 5))
    for i in range(D):
        for j in range(W):
            f = fraction_bounds(
                int(np.sum(limit[i, j] == int(Limit.ZERO_RISK))),
                int(np.sum(limit[i, j] == int(Limit.UNRESOLVED))),
                limit.shape[-1],
            )
            zero[i, j] = (
                f.estimate,
                f.low,
                f.high,
                f.low_all_unresolved_fail,
                f.high_all_unresolved_succeed,
            )
    cell = ("dynamics", "width")
    share = lambda field, code: (cell, np.mean(field == int(code), axis=-1))
    # initial-risk bins: log-spaced over every member's initial risk
    r0 = ds["initial_risk"].values
    lo, hi = float(np.nanmin(r0)), float(np.nanmax(r0))
    edges = np.geomspace(lo, hi * (1 + 1e-12), config.risk_bins + 1) if hi > lo else [lo, hi]
    edges = np.asarray(edges, float)
    which = np.clip(np.searchsorted(edges, r0, side="right") - 1, 0, len(edges) - 2)
    nb = len(edges) - 1
    count = np.stack([np.sum(which == b, axis=-1) for b in range(nb)], -1)
    hits = np.stack(
        [np.sum((which == b) & (limit == int(Limit.ZERO_RISK)), axis=-1) for b in range(nb)], -1
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        by_risk = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
    ds = ds.assign(
        zero=(cell, zero[..., 0]),
        zero_low=(cell, zero[..., 1]),
        zero_high=(cell, zero[..., 2]),
        zero_low_all=(cell, zero[..., 3]),
        zero_high_all=(cell, zero[..., 4]),
        converged=share(outcome, Outcome.CONVERGED),
        local_min=share(limit, Limit.LOCAL_MIN),
        saddle=share(limit, Limit.SADDLE),
        unresolved=share(limit, Limit.UNRESOLVED),
        zero_by_risk=(cell + ("risk_bin",), by_risk),
        count_by_risk=(cell + ("risk_bin",), count),
    )
    ds = ds.assign_coords(
        risk_bin=np.arange(nb),
        risk_bin_edges=(("risk_bin_edge",), edges),
    )
    ds.attrs.update(
        study=NAME,
        description="Gradient flow (to the limit) and GD of ShallowReLU on the exact "
        "population risk of an affine target on U[0, 1] (Jentzen & Riekert, arXiv 2107.04479).",
        slope=config.slope,
        intercept=config.intercept,
        outcome_codes=", ".join(f"{o.value}={o.name}" for o in Outcome),
        limit_codes=", ".join(f"{c.value}={c.name}" for c in Limit),
    )
    return ds


def limit_clusters(dataset, rtol: float = 1e-4) -> list[dict]:
    """Clusters of the limit risks of the members whose limit is not zero risk.

    A member's value is its ``limit_risk`` (the refined critical point's risk), or its
    ``final_risk`` when the limit was not characterised. Values within `rtol` of each
    other form a cluster; a cluster within `rtol` of a known critical value
    (:data:`CRITICAL_VALUES`, multiples of ``α²``) gets its label.

    **Returns:**

    A list of ``{"dynamics", "value", "over_alpha2", "label", "counts": {width: n}}``,
    sorted by dynamics then value. Values below ``NEGLIGIBLE · α²`` form one cluster
    labelled ``≈ 0`` (the risk vanished, but the limit was not classified ``ZERO_RISK``).
    """
    from ..limits import Limit

    alpha2 = float(dataset.attrs["slope"]) ** 2
    out = []
    for dyn in dataset["dynamics"].values:
        values, widths = [], []
        for width in dataset["width"].values:
            c = dataset.sel(dynamics=dyn, width=width)
            lim = c["limit"].values
            v = np.where(np.isfinite(c["limit_risk"].values), c["limit_risk"].values,
                         c["final_risk"].values)  # fmt: skip
            keep = (lim != int(Limit.ZERO_RISK)) & np.isfinite(v) & (v > 0)
            values += list(v[keep])
            widths += [int(width)] * int(keep.sum())
        order = np.argsort(values)
        clusters: list[dict] = []
        for idx in order:
            v, w = float(values[idx]), widths[idx]
            tiny = v < NEGLIGIBLE * alpha2
            if clusters and (v <= clusters[-1]["_last"] * (1 + rtol) or tiny):
                cl = clusters[-1]
                cl["_members"].append(v)
                cl["_last"] = v
            else:
                cl = {"_members": [v], "_last": v, "counts": {}}
                clusters.append(cl)
            cl["counts"][w] = cl["counts"].get(w, 0) + 1
        for cl in clusters:
            value = float(np.median(cl.pop("_members")))
            cl.pop("_last")
            ratio = value / alpha2
            label = next(
                (text for ref, text in CRITICAL_VALUES.items() if abs(ratio / ref - 1) < rtol),
                f"α²/{1 / ratio:.4g} (unidentified)",
            )
            if ratio < NEGLIGIBLE:
                label = "≈ 0: risk at the stop (limit not classified as zero risk)"
            out.append(
                {"dynamics": str(dyn), "value": value, "over_alpha2": ratio, "label": label, **cl}
            )
    return out


def table(dataset) -> str:
    """Markdown tables: fractions per (dynamics, width), and the limit-risk clusters."""
    ds = dataset
    rows = [
        "| dynamics | H | members | risk → 0 [95% CI] | bounds (unresolved) | converged | "
        "local min | saddle | unresolved | median max‖θ_t‖ | max max‖θ_t‖ |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for dyn in ds["dynamics"].values:
        for width in ds["width"].values:
            c = ds.sel(dynamics=dyn, width=width)
            norm = c["max_param_norm"].values
            rows.append(
                f"| {dyn} | {int(width)} | {c.sizes['member']} | {float(c['zero']):.2f} "
                f"[{float(c['zero_low']):.2f}, {float(c['zero_high']):.2f}] | "
                f"[{float(c['zero_low_all']):.2f}, {float(c['zero_high_all']):.2f}] | "
                f"{float(c['converged']):.2f} | {float(c['local_min']):.2f} | "
                f"{float(c['saddle']):.2f} | {float(c['unresolved']):.2f} | "
                f"{np.nanmedian(norm):.3g} | {np.nanmax(norm):.3g} |"
            )
    rows += [
        "",
        "Limit risks of the members whose limit is not zero risk, clustered:",
        "",
        "| dynamics | limit risk | / α² | identified as | members by width |",
        "|---|---:|---:|---|---|",
    ]
    for cl in limit_clusters(ds):
        counts = ", ".join(f"H={w}: {n}" for w, n in sorted(cl["counts"].items()))
        rows.append(
            f"| {cl['dynamics']} | {cl['value']:.6g} | {cl['over_alpha2']:.6g} | "
            f"{cl['label']} | {counts} |"
        )
    return "\n".join(rows)


def figure(dataset):
    """Four panels: fraction with risk → 0 vs width (flow and GD on the same axes); vs
    binned initial risk (flow); limit risks of the rest with labelled clusters;
    ``max_t ‖θ_t‖`` per member. Returns a matplotlib ``Figure`` (no pyplot state)."""
    import matplotlib
    from matplotlib.figure import Figure

    ds = dataset
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    widths = ds["width"].values.astype(int)
    dyns = [str(d) for d in ds["dynamics"].values]
    fig = Figure(figsize=(11, 8), layout="constrained")
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    for i, dyn in enumerate(dyns):
        c = ds.sel(dynamics=dyn)
        y = c["zero"].values
        err = np.stack([y - c["zero_low_all"].values, c["zero_high_all"].values - y])
        shift = 1 + 0.03 * (i - (len(dyns) - 1) / 2)
        ax1.errorbar(widths * shift, y, yerr=np.maximum(err, 0), marker="o" if i == 0 else "s",
                     capsize=3, color=colors[i % len(colors)],
                     label="gradient flow" if dyn == "flow" else f"GD η = {dyn[3:]}")  # fmt: skip
    ax1.set_xscale("log", base=2)
    ax1.set_xticks(widths, [str(w) for w in widths])
    ax1.set_ylim(-0.03, 1.03)
    ax1.set_xlabel("width H")
    ax1.set_ylabel("fraction with risk → 0")
    ax1.set_title("limit has zero risk (95% CI incl. unresolved)", fontsize=9)
    ax1.legend(fontsize=8)

    edges = ds["risk_bin_edges"].values
    mid = np.sqrt(edges[:-1] * edges[1:]) if np.all(edges > 0) else 0.5 * (edges[:-1] + edges[1:])
    flow = ds.sel(dynamics="flow")
    for j, width in enumerate(widths):
        y = flow["zero_by_risk"].sel(width=width).values
        ok = np.isfinite(y)
        ax2.plot(mid[ok], y[ok], "o-", ms=4, color=colors[j % len(colors)], label=f"H = {width}")
    ax2.set_xscale("log")
    ax2.set_ylim(-0.03, 1.03)
    ax2.set_xlabel("initial risk L(θ₀) (bin centre)")
    ax2.set_ylabel("fraction with risk → 0 (flow)")
    ax2.set_title("by initial risk", fontsize=9)
    ax2.legend(fontsize=7, ncol=2)

    alpha2 = float(ds.attrs["slope"]) ** 2
    from ..limits import Limit

    for i, dyn in enumerate(dyns):
        for width in widths:
            c = ds.sel(dynamics=dyn, width=width)
            v = np.where(np.isfinite(c["limit_risk"].values), c["limit_risk"].values,
                         c["final_risk"].values)  # fmt: skip
            keep = (c["limit"].values != int(Limit.ZERO_RISK)) & np.isfinite(v) & (v > 0)
            x = np.full(keep.sum(), width * (1 + 0.05 * (i - (len(dyns) - 1) / 2)))
            ax3.plot(x, v[keep] / alpha2, "o" if i == 0 else "s", ms=4, alpha=0.6,
                     color=colors[i % len(colors)])  # fmt: skip
    clusters = limit_clusters(ds)
    labelled = set()
    for cl in clusters:
        key = round(cl["over_alpha2"], 6)
        if key in labelled:
            continue
        labelled.add(key)
        ax3.axhline(cl["over_alpha2"], color="0.6", lw=0.8, ls=":")
        ax3.text(0.02, cl["over_alpha2"], cl["label"], transform=ax3.get_yaxis_transform(),
                 fontsize=7, va="bottom", clip_on=True)  # fmt: skip
    if clusters:
        ratios = [cl["over_alpha2"] for cl in clusters]
        ax3.set_yscale("log")
        ax3.set_ylim(min(ratios) / 4, max(ratios) * 4)
    else:
        ax3.text(0.5, 0.5, "every limit has zero risk", ha="center", transform=ax3.transAxes)
    ax3.set_xscale("log", base=2)
    ax3.set_xticks(widths, [str(w) for w in widths])
    ax3.set_xlabel("width H")
    ax3.set_ylabel("limit risk / α²")
    ax3.set_title("members whose limit is not zero risk", fontsize=9)

    for i, dyn in enumerate(dyns):
        for width in widths:
            m = ds["max_param_norm"].sel(dynamics=dyn, width=width).values
            x = np.full(m.shape, width * (1 + 0.05 * (i - (len(dyns) - 1) / 2)))
            ax4.plot(x, m, "o" if i == 0 else "s", ms=3, alpha=0.5, color=colors[i % len(colors)],
                     label=None if width != widths[0] else dyn)  # fmt: skip
    ax4.set_xscale("log", base=2)
    norms = ds["max_param_norm"].values
    if np.nanmax(norms) > 20 * np.nanmin(norms):
        ax4.set_yscale("log")
    ax4.set_xticks(widths, [str(w) for w in widths])
    ax4.set_xlabel("width H")
    ax4.set_ylabel("max_t ‖θ_t‖")
    ax4.set_title("boundedness along each trajectory", fontsize=9)
    ax4.legend(fontsize=7)
    fig.suptitle(
        f"ShallowReLU on f(x) = {ds.attrs['slope']:g}x + {ds.attrs['intercept']:g}, "
        "exact population risk on U[0, 1]",
        fontsize=10,
    )
    return fig


def report(dataset, outdir: str | os.PathLike) -> list[str]:
    """Write ``shallow_relu.png``, ``shallow_relu.pdf`` and ``shallow_relu.md`` into
    `outdir`; returns their paths."""
    paths = save_figure(figure(dataset), outdir, NAME)
    paths.append(write_text(table(dataset), outdir, f"{NAME}.md"))
    return paths
