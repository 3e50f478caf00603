"""Study ``demo``: the main job of ``make demo`` on the registry (``gflow run demo``).

It runs :mod:`gflow_jax.demo` itself (one ensemble of gradient flows of a width-``width``
ReLU network on ``f(x) = 2x + 1``, exact population risk on ``U[0, 1]``, to the limit)
into the store directory, so ``python -m gflow_jax.demo`` and ``gflow run demo`` do the
same computation. The dataset is the ensemble's ``to_xarray()``; the report is the
demo's table (the fraction whose risk → 0 and the tables by limit class and outcome)
and figure (risk curves and final risks).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile

from ._io import save_figure, write_text

__all__ = ["PRESETS", "DemoConfig", "report", "run"]

NAME = "demo"
DESCRIPTION = "the main job (make demo): 64 gradient flows of a width-8 ReLU net to their limits"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo (those of ``python -m gflow_jax.demo``).

    - ``n``: initialisations (64); ``width``: hidden width ``H`` (8);
    - ``t1``: the horizon (``inf``: to the limit); ``seed``: the base key.
    """

    n: int = 64
    width: int = 8
    t1: float = math.inf
    seed: int = 0

    def __post_init__(self):
        for name in ("n", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        if not (self.t1 > 0):
            raise ValueError(f"t1 must be > 0 (inf: to the limit), got {self.t1!r}.")


PRESETS = {
    "tiny": DemoConfig(n=4, width=3, t1=20.0),
    "laptop": DemoConfig(),
    "paper": DemoConfig(n=1024),
}
"""``laptop`` and ``paper`` flow to the limit; ``tiny`` stops at ``t1 = 20``."""


def run(
    config: DemoConfig | None = None, store=None, *, progress=False, overwrite=False, executor=None
):
    """Run :func:`gflow_jax.demo.main` into `store` (a temporary folder if ``None``) and
    return the ensemble as an ``xarray.Dataset``. A stored ensemble made with the same
    config is reused (`overwrite` recomputes)."""
    del progress, executor  # one ensemble, run in this process
    import json

    from .. import demo
    from ..ensemble import Ensemble

    config = DemoConfig() if config is None else config
    if not isinstance(config, DemoConfig):
        raise TypeError(f"config must be a DemoConfig, got {type(config).__name__}.")
    with tempfile.TemporaryDirectory() as tmp:
        folder = tmp if store is None else os.fspath(store)
        path = os.path.join(folder, "ensemble.nc")
        stamp = os.path.join(folder, "config.json")
        key = json.dumps(dataclasses.asdict(config))
        fresh = not (os.path.exists(stamp) and open(stamp).read() == key and os.path.exists(path))
        if fresh or overwrite:
            args = ["--out", folder, "--n", str(config.n), "--width", str(config.width)]
            demo.main(args + ["--t1", repr(config.t1), "--seed", str(config.seed)])
            with open(stamp, "w") as fh:
                fh.write(key)
        ds = Ensemble.load(path).to_xarray()
    ds.attrs.update(study=NAME, width=config.width)
    return ds


def _ensemble(dataset):
    from .._storage import write_atomic
    from ..ensemble import Ensemble

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ensemble.nc")
        write_atomic(dataset, path)
        return Ensemble.load(path)


def table(dataset) -> str:
    """The demo's Markdown report: the fraction whose risk → 0 and the summary tables."""
    ens = _ensemble(dataset)
    return f"**Fraction whose risk → 0: {ens.fraction()}**\n\n{ens.summary()}"


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
