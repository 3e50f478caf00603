"""Matplotlib figures of ensembles: risk curves, final-risk histograms, fractions.

Every function takes an optional ``ax`` and returns it, so figures compose; nothing
is shown or saved implicitly (use ``ax.figure.savefig(path)``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .ensemble import Ensemble
from .limits import Limit
from .outcomes import Outcome

OUTCOME_COLOURS = {
    Outcome.CONVERGED: "tab:green",
    Outcome.CRITICAL_POINT: "tab:orange",
    Outcome.DIVERGED: "tab:red",
    Outcome.UNFINISHED: "tab:blue",
    Outcome.ILL_POSED: "tab:purple",
    Outcome.SOLVER_FAILED: "tab:brown",
}
LIMIT_COLOURS = {
    Limit.ZERO_RISK: "tab:green",
    Limit.LOCAL_MIN: "tab:orange",
    Limit.SADDLE: "tab:red",
    Limit.UNRESOLVED: "tab:gray",
}


def _classes(ens: Ensemble, by: str):
    if by == "limit":
        return Limit, np.asarray(ens.limit), LIMIT_COLOURS
    if by == "outcome":
        return Outcome, np.asarray(ens.outcome), OUTCOME_COLOURS
    raise ValueError(f"by must be 'limit' or 'outcome', got {by!r}.")


def _axes(ax):
    if ax is None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    return ax


def risk_curves(
    ens: Ensemble, ax=None, *, by: str = "limit", max_curves: int = 512, alpha: float = 0.35
):
    """Risk ``L(θ_t)`` vs ``t`` on log–log axes, one line per trajectory.

    **Arguments:**

    - `ens`: the ensemble.
    - `ax`: matplotlib axes (default: a new figure).
    - `by`: colour by ``"limit"`` class (default) or by ``"outcome"``.
    - `max_curves`: at most this many trajectories per class are drawn (the first ones).
    - `alpha`: line transparency.

    ``t = 0`` cannot be shown on a log axis and is dropped.

    **Returns:**

    The axes.
    """
    ax = _axes(ax)
    ts = np.asarray(ens.ts)
    risk = np.asarray(ens.risk)
    codes, field, colours = _classes(ens, by)
    keep = ts > 0
    for o in codes:
        rows = np.flatnonzero(field == int(o))[:max_curves]
        if rows.size == 0:
            continue
        curves = np.where(risk[rows][:, keep] > 0, risk[rows][:, keep], np.nan)
        lines = ax.plot(ts[keep], curves.T, color=colours[o], alpha=alpha, lw=0.8)
        lines[0].set_label(f"{o.name} ({int((field == int(o)).sum())})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gradient-flow time t")
    ax.set_ylabel("risk L(θ_t)")
    ax.legend(loc="lower left", fontsize="small")
    return ax


def final_risk_histogram(ens: Ensemble, ax=None, *, by: str = "limit", bins: int = 40):
    """Histogram of ``log10`` final risks, stacked by limit class (or ``by="outcome"``).

    Only members with a finite, positive final risk ``L(θ_T)`` are counted; the bins span
    ``[min log10 L − 0.5, max log10 L + 0.5]``. If there is no such member the axes only
    carry a note saying so.

    **Arguments:**

    - `ens`: the ensemble.
    - `ax`: matplotlib axes (default: a new figure).
    - `by`: stack by ``"limit"`` class (default) or by ``"outcome"``.
    - `bins`: number of equal-width bins in ``log10 L`` (default ``40``).

    **Returns:**

    The axes.
    """
    ax = _axes(ax)
    final = np.asarray(ens.final_risk, float)
    codes, outcome, colours = _classes(ens, by)
    ok = np.isfinite(final) & (final > 0)
    if not ok.any():
        ax.text(0.5, 0.5, "no finite positive final risk", ha="center", transform=ax.transAxes)
        return ax
    logs = np.log10(final[ok])
    edges = np.linspace(logs.min() - 0.5, logs.max() + 0.5, bins + 1)
    data, labels = [], []
    colour_list = []
    for o in codes:
        sel = ok & (outcome == int(o))
        if sel.any():
            data.append(np.log10(final[sel]))
            colour_list.append(colours[o])
            labels.append(o.name)
    ax.hist(data, bins=edges, stacked=True, color=colour_list, label=labels)
    ax.set_xlabel("log10 final risk")
    ax.set_ylabel("trajectories")
    ax.legend(fontsize="small")
    return ax


def fraction_bars(
    ensembles: Ensemble | Mapping[str, Ensemble],
    ax=None,
    *,
    outcome: Outcome | Limit = Limit.ZERO_RISK,
):
    """Fraction of trajectories with a limit class or outcome, with Wilson 95 % bars.

    The default is the fraction whose risk → 0; thin grey bars show the range left by
    the ``UNRESOLVED`` members. Pass one ensemble or a mapping ``label -> ensemble``.
    Each bar is :meth:`Ensemble.fraction` of its ensemble: the estimate ``k/n`` with its
    Wilson interval as error bar, and beside it the range
    ``[low_all_unresolved_fail, high_all_unresolved_succeed]`` (dimensionless, in
    ``[0, 1]``).

    **Arguments:**

    - `ensembles`: one :class:`Ensemble` (labelled ``"ensemble"``) or a mapping
      ``label -> Ensemble``, one bar per entry in the mapping's order.
    - `ax`: matplotlib axes (default: a new figure).
    - `outcome`: the class counted, a :class:`Limit` or an :class:`Outcome` (default
      ``Limit.ZERO_RISK``).

    **Returns:**

    The axes.
    """
    ax = _axes(ax)
    if isinstance(ensembles, Ensemble):
        ensembles = {"ensemble": ensembles}
    labels = list(ensembles)
    fracs = [ensembles[k].fraction(outcome) for k in labels]
    est = np.array([f.estimate for f in fracs])
    err = np.array([[f.estimate - f.low for f in fracs], [f.high - f.estimate for f in fracs]])
    colours = LIMIT_COLOURS if isinstance(outcome, Limit) else OUTCOME_COLOURS
    ax.bar(labels, est, yerr=err, capsize=4, color=colours[outcome], alpha=0.8)
    lo = np.array([f.low_all_unresolved_fail for f in fracs])
    hi = np.array([f.high_all_unresolved_succeed for f in fracs])
    ax.vlines(np.arange(len(labels)) + 0.3, lo, hi, color="tab:gray", lw=2)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"fraction {outcome.name.lower()} (95% Wilson CI)")
    return ax
