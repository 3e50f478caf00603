# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Shallow ReLU networks on an affine target: how often does the risk reach zero?
#
# Jentzen & Riekert (arXiv:2107.04479) study one-hidden-layer ReLU networks trained by
# gradient flow on an affine target f(x) = αx + β with inputs uniform on [0, 1]: every
# *bounded* gradient-flow trajectory whose initial risk is small enough has risk → 0.
# For larger initial risk the flow may instead stop at a critical point: all neurons dead
# (risk α²/12) or a zig-zag saddle (α²/(12(K+1)⁴), e.g. α²/972). This notebook measures,
# per width H, the fraction of random initialisations whose risk → 0, using the *exact*
# population risk (the integral over [0, 1] computed in closed form between the kinks,
# `gf.PopulationRisk.uniform_1d`). Two answers per width: the flows that reached the
# stop rule `risk ≤ 1e-10` within the horizon (outcome `CONVERGED`), and the flows whose
# *limit* is a zero of the risk (limit class `ZERO_RISK`, from a Newton refinement of the
# end point and the Hessian spectrum there; members whose limit could not be resolved
# are counted both ways in the bounds).
#
# Open it with Jupyter via jupytext (`jupytext --to notebook shallow_relu.py`) or run it as
# a script. `GFLOW_SMALL=1` runs a tiny version (what the tests do).

# %%
import math
import os

import jax

jax.config.update("jax_enable_x64", True)
import equinox as eqx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import gflow_jax as gf

SMALL = os.environ.get("GFLOW_SMALL") == "1"
WIDTHS = [1, 2] if SMALL else [1, 2, 4, 8, 16]
N_INITS = 8 if SMALL else 256
T1 = 50.0 if SMALL else 1e4
OUT = os.environ.get("GFLOW_OUT", "results/notebooks/shallow_relu")
ALPHA, BETA = 2.0, 1.0
risk = gf.PopulationRisk.uniform_1d(gf.Affine(ALPHA, BETA), a=0.0, b=1.0)

# %% [markdown]
# One ensemble per width, stored cell by cell (a rerun resumes from `OUT/store`).

# %%


def cell(width):
    def init(key):
        model = gf.ShallowReLU(1, width, key=key)
        return eqx.tree_at(lambda m: m.v, model, model.v / math.sqrt(width))

    keys = jax.random.split(jax.random.key(width), N_INITS)
    ens = gf.run_ensemble(init, risk, keys, T1, chunk_size=64, n_save=32, progress=False)
    return ens.to_xarray().drop_vars(["final_params"])


ds = gf.run_sweep({"width": WIDTHS}, cell, store=os.path.join(OUT, "store"))
ds

# %% [markdown]
# Fraction converged (risk ≤ 1e-10 within the horizon) and fraction whose limit has zero
# risk, with Wilson 95 % intervals (for the limit: the range obtained by counting the
# unresolved members as failures or as successes), and where the others stopped.

# %%


def limit_fraction(H):
    limit = ds["limit"].sel(width=H).values
    return gf.statistics.fraction_bounds(
        int(np.sum(limit == gf.Limit.ZERO_RISK)),
        int(np.sum(limit == gf.Limit.UNRESOLVED)),
        limit.size,
    )


rows = [
    "| H | converged [95% CI] | limit risk 0 [95% CI; unresolved range] | local min | saddle "
    "| unresolved | critical | unfinished | final risks of non-converged (/ α²) |",
    "|---:|---|---|---:|---:|---:|---:|---:|---|",
]
for H in WIDTHS:
    o = ds["outcome"].sel(width=H).values
    limit = ds["limit"].sel(width=H).values
    f = gf.statistics.wilson_interval(int(np.sum(o == gf.Outcome.CONVERGED)), o.size)
    z = limit_fraction(H)
    stuck = ds["final_risk"].sel(width=H).values[o != gf.Outcome.CONVERGED] / ALPHA**2
    rows.append(
        f"| {H} | {f.estimate:.2f} [{f.low:.2f}, {f.high:.2f}] | "
        f"{z.estimate:.2f} [{z.low:.2f}, {z.high:.2f}; "
        f"{z.low_all_unresolved_fail:.2f}, {z.high_all_unresolved_succeed:.2f}] | "
        f"{np.sum(limit == gf.Limit.LOCAL_MIN)} | {np.sum(limit == gf.Limit.SADDLE)} | "
        f"{np.sum(limit == gf.Limit.UNRESOLVED)} | "
        f"{np.sum(o == gf.Outcome.CRITICAL_POINT)} | {np.sum(o == gf.Outcome.UNFINISHED)} | "
        f"{np.array2string(np.unique(np.round(stuck, 5))[:6], precision=5)} |"
    )
table = "\n".join(rows)
print(table)
print(f"reference critical values / α²: 1/12 = {1 / 12:.5f}, 1/972 = {1 / 972:.5f}")

# %%
fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
fractions = [limit_fraction(H) for H in WIDTHS]
est = [z.estimate for z in fractions]
lo = [z.estimate - z.low_all_unresolved_fail for z in fractions]
hi = [z.high_all_unresolved_succeed - z.estimate for z in fractions]
ax.errorbar(WIDTHS, est, yerr=[lo, hi], marker="o", capsize=3, label="limit has zero risk")
conv = [np.mean(ds["outcome"].sel(width=H).values == gf.Outcome.CONVERGED) for H in WIDTHS]
ax.plot(WIDTHS, conv, "s--", ms=4, label="risk ≤ 1e-10 by t1")
ax.legend(fontsize=8)
ax.set_xscale("log", base=2)
ax.set_ylim(0, 1.05)
ax.set_xlabel("width H")
ax.set_ylabel("fraction with risk → 0")
ax.set_title("gradient flow, f(x) = 2x + 1, exact risk")
os.makedirs(OUT, exist_ok=True)
fig.savefig(os.path.join(OUT, "fraction_converged.png"), dpi=120)
with open(os.path.join(OUT, "summary.md"), "w") as fh:
    fh.write(table + "\n")
