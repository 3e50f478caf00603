"""Matplotlib figures of ensembles: risk curves, final-risk histograms, fractions.

Every function takes an optional ``ax`` and returns it, so figures compose; nothing
is shown or saved implicitly (use ``ax.figure.savefig(path)``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .ensemble import Ensemble
from .outcomes import Outcome

OUTCOME_COLOURS = {
    Outcome.CONVERGED: "tab:green",
    Outcome.CRITICAL_POINT: "tab:orange",
    Outcome.DIVERGED: "tab:red",
    Outcome.UNFINISHED: "tab:blue",
    Outcome.ILL_POSED: "tab:purple",
}


def _axes(ax):
    if ax is None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    return ax


def risk_curves(ens: Ensemble, ax=None, *, max_curves: int = 512, alpha: float = 0.35):
    """Risk ``L(θ_t)`` vs ``t`` on log–log axes, one line per trajectory, by outcome.

    ``t = 0`` cannot be shown on a log axis and is dropped; at most ``max_curves``
    trajectories are drawn (the first ones).
    """
    ax = _axes(ax)
    ts = np.asarray(ens.ts)
    risk = np.asarray(ens.risk)
    outcome = np.asarray(ens.outcome)
    keep = ts > 0
    for o in Outcome:
        rows = np.flatnonzero(outcome == int(o))[:max_curves]
        if rows.size == 0:
            continue
        curves = np.where(risk[rows][:, keep] > 0, risk[rows][:, keep], np.nan)
        lines = ax.plot(ts[keep], curves.T, color=OUTCOME_COLOURS[o], alpha=alpha, lw=0.8)
        lines[0].set_label(f"{o.name} ({ens.count(o)})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gradient-flow time t")
    ax.set_ylabel("risk L(θ_t)")
    ax.legend(loc="lower left", fontsize="small")
    return ax


def final_risk_histogram(ens: Ensemble, ax=None, *, bins: int = 40):
    """Histogram of ``log10`` final risks, stacked by outcome."""
    ax = _axes(ax)
    final = np.asarray(ens.final_risk, float)
    outcome = np.asarray(ens.outcome)
    ok = np.isfinite(final) & (final > 0)
    if not ok.any():
        ax.text(0.5, 0.5, "no finite positive final risk", ha="center", transform=ax.transAxes)
        return ax
    logs = np.log10(final[ok])
    edges = np.linspace(logs.min() - 0.5, logs.max() + 0.5, bins + 1)
    data, colours, labels = [], [], []
    for o in Outcome:
        sel = ok & (outcome == int(o))
        if sel.any():
            data.append(np.log10(final[sel]))
            colours.append(OUTCOME_COLOURS[o])
            labels.append(o.name)
    ax.hist(data, bins=edges, stacked=True, color=colours, label=labels)
    ax.set_xlabel("log10 final risk")
    ax.set_ylabel("trajectories")
    ax.legend(fontsize="small")
    return ax


def fraction_bars(
    ensembles: Ensemble | Mapping[str, Ensemble],
    ax=None,
    *,
    outcome: Outcome = Outcome.CONVERGED,
):
    """Fraction of trajectories with ``outcome`` (default converged) with Wilson 95 % bars.

    Pass one ensemble or a mapping ``label -> ensemble`` to compare settings.
    """
    ax = _axes(ax)
    if isinstance(ensembles, Ensemble):
        ensembles = {"ensemble": ensembles}
    labels = list(ensembles)
    fracs = [ensembles[k].fraction(outcome) for k in labels]
    est = np.array([f.estimate for f in fracs])
    err = np.array([[f.estimate - f.low for f in fracs], [f.high - f.estimate for f in fracs]])
    ax.bar(labels, est, yerr=err, capsize=4, color=OUTCOME_COLOURS[outcome], alpha=0.8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"fraction {outcome.name.lower()} (95% Wilson CI)")
    return ax
