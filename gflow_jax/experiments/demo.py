"""Study ``demo``, the main job (``make demo`` = ``gflow run demo --out results/demo``):
what fraction of gradient flows reaches zero risk?

The setting is the affine-target theorem of Jentzen & Riekert (arXiv 2107.04479): a
one-hidden-layer ReLU network of width ``width`` (8) learns ``f(x) = 2x + 1`` from
inputs uniform on ``[0, 1]`` under the *exact* population risk. ``n`` (64)
standard-normal initialisations (output weights scaled by ``1/sqrt(width)``) flow *to
their limits* (``t1 = inf``) in float64: Tsit5 in the transient, the exponential tail
solver once the flow is stiff, then every limit classified (zero risk, local minimum,
saddle, or unresolved with a reason). The headline is the fraction whose risk → 0,
with its Wilson 95 % interval.

The dataset is the ensemble's :meth:`gflow_jax.Ensemble.to_xarray` (every trajectory;
``gflow_jax.Ensemble.load`` reads the stored ``demo.nc``); the report is ``demo.md``
(the headline, the tables by limit class and outcome, the wall time and step counts)
and ``demo.png``/``demo.pdf`` (risk curves by limit class, histogram of final risks).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time

from ._config import config_dict, resolve_devices
from ._io import save_figure, write_text

__all__ = ["PRESETS", "DemoConfig", "report", "run", "table"]

NAME = "demo"
DESCRIPTION = "the main job (make demo): 64 gradient flows of a width-8 ReLU net to their limits"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo.

    - ``n``: initialisations (64); ``width``: hidden width ``H`` (8);
    - ``t1``: the horizon in flow time (``inf``: to the limit); ``seed``: the base key (0);
    - ``slope``, ``intercept``: the affine target ``f(x) = slope·x + intercept`` (2, 1).
    """

    n: int = 64
    width: int = 8
    t1: float = math.inf
    seed: int = 0
    slope: float = 2.0
    intercept: float = 1.0

    def __post_init__(self):
        for name in ("n", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        if not (self.t1 > 0):
            raise ValueError(f"t1 must be > 0 (inf: to the limit), got {self.t1!r}.")
        for name in ("slope", "intercept"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}.")


PRESETS = {
    "tiny": DemoConfig(n=4, width=3, t1=20.0),
    "laptop": DemoConfig(),
    "paper": DemoConfig(n=1024),
}
"""``laptop`` (about half a minute on 2 CPU cores) and ``paper`` flow to the limit;
``tiny`` stops at ``t1 = 20``."""


def _ensemble_dataset(config: DemoConfig, devices: str | None):
    """The demo's ensemble as a dataset, with its wall time in the attributes."""
    import equinox as eqx
    import jax

    from ..dynamics import GradientFlow
    from ..engine import run_ensemble
    from ..models.shallow import ShallowReLU
    from ..risks.population import PopulationRisk
    from ..risks.targets import Affine

    risk = PopulationRisk.uniform_1d(Affine(config.slope, config.intercept), a=0.0, b=1.0)

    def init(key):
        model = ShallowReLU(1, config.width, key=key)
        return eqx.tree_at(lambda m: m.v, model, model.v / math.sqrt(config.width))

    keys = jax.random.split(jax.random.key(config.seed), config.n)
    start = time.perf_counter()
    ens = run_ensemble(
        init,
        risk,
        keys,
        config.t1,
        GradientFlow(),
        chunk_size=64,
        devices=resolve_devices(devices),
        progress=None,
    )
    ds = ens.to_xarray()
    ds.attrs["wall_time_s"] = time.perf_counter() - start
    return ds


def run(
    config: DemoConfig | None = None,
    store=None,
    *,
    progress=False,
    overwrite=False,
    executor="local",
    devices: str | None = None,
):
    """Run the demo ensemble; returns its dataset.

    **Arguments:**

    - `config`: a :class:`DemoConfig` (default: the defaults).
    - `store`: a directory for :func:`gflow_jax.run_sweep` (the finished ensemble is
      stored there and reused by a rerun with the same config), or ``None``.
    - `progress`, `overwrite`, `executor`: as for :func:`gflow_jax.run_sweep`.
    - `devices`: a ``--devices`` spec (``"all"``, a count, ``"gpu"``, ``"gpu:0,1"``…)
      over which :func:`gflow_jax.run_ensemble` splits its pool; ``None``: one device.

    **Returns:**

    :meth:`gflow_jax.Ensemble.to_xarray` of the ensemble (dims ``trajectory``, ``time``,
    ``param``), with attributes ``study``, ``width``, ``n`` and ``wall_time_s``
    (seconds, compilation included).
    """
    import jax

    from ..sweep import run_sweep

    config = DemoConfig() if config is None else config
    if not isinstance(config, DemoConfig):
        raise TypeError(f"config must be a DemoConfig, got {type(config).__name__}.")
    ds = run_sweep(
        {"width": [config.width]},
        lambda width: _ensemble_dataset(config, devices),
        store,
        config={"study": NAME, **config_dict(config), "x64": bool(jax.config.jax_enable_x64)},
        progress=progress,
        overwrite=overwrite,
        executor=executor,
    )
    ds = ds.isel(width=0, drop=True)
    ds.attrs.update(study=NAME, width=config.width, n=config.n, t1=config.t1)
    return ds


def _ensemble(dataset):
    from .._storage import write_atomic
    from ..ensemble import Ensemble

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ensemble.nc")
        write_atomic(dataset, path)
        return Ensemble.load(path)


def table(dataset) -> str:
    """The demo's Markdown report: the fraction whose risk → 0, the tables by limit class
    and outcome, and the cost (wall time, solver steps, pool waste)."""
    ens = _ensemble(dataset)
    attrs = dataset.attrs
    stats = ens.stats
    return "\n".join(
        [
            f"# gflow_jax demo: {len(ens)} gradient flows, ShallowReLU width "
            f"{attrs.get('width', '?')}, target 2x+1, exact population risk on U[0,1], "
            f"t1 = {float(attrs.get('t1', math.nan)):g}",
            "",
            f"**Fraction whose risk → 0: {ens.fraction()}**",
            "",
            ens.summary(),
            "",
            f"Wall time: {float(attrs.get('wall_time_s', math.nan)):.1f} s (including "
            f"compilation); solver steps: {stats.get('useful_member_steps', '?')} "
            f"({int(ens.num_tail_steps.sum())} in the tail solver), "
            f"waste {float(stats.get('waste', math.nan)):.2f}x.",
        ]
    )


def report(dataset, outdir) -> list[str]:
    """``demo.png``/``demo.pdf`` (risk curves by limit class, final risks) and ``demo.md``."""
    from matplotlib.figure import Figure

    from .. import plots

    ens = _ensemble(dataset)
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    plots.risk_curves(ens, ax1)
    ax1.set_title(f"gradient flow, width {dataset.attrs.get('width', '?')}, f(x) = 2x + 1")
    plots.final_risk_histogram(ens, ax2)
    paths = save_figure(fig, outdir, NAME)
    paths.append(write_text(table(dataset), outdir, f"{NAME}.md"))
    return paths
