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
# Jentzen & Riekert (MATH.md §1.5, Theorem B): for a one-hidden-layer ReLU network on the
# affine target f(x) = αx + β with inputs uniform on [0, 1], every *bounded* gradient-flow
# trajectory whose initial risk is small enough has risk → 0. For larger initial risk the
# flow may stop at a critical point: all neurons dead (risk α²/12) or a zig-zag saddle
# (α²/(12(K+1)⁴), e.g. α²/972). This notebook measures, per width H, the fraction of
# random initialisations that converge, using the *exact* population risk (MATH.md §4).
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
# Fraction converged (risk ≤ 1e-10) with Wilson 95 % intervals, and where the others stopped.

# %%
rows = [
    "| H | converged [95% CI] | critical | unfinished | final risks of non-converged (/ α²) |",
    "|---:|---|---:|---:|---|",
]
for H in WIDTHS:
    o = ds["outcome"].sel(width=H).values
    f = gf.wilson_interval(int(np.sum(o == gf.Outcome.CONVERGED)), o.size)
    stuck = ds["final_risk"].sel(width=H).values[o != gf.Outcome.CONVERGED] / ALPHA**2
    rows.append(
        f"| {H} | {f.estimate:.2f} [{f.low:.2f}, {f.high:.2f}] | "
        f"{np.sum(o == gf.Outcome.CRITICAL_POINT)} | {np.sum(o == gf.Outcome.UNFINISHED)} | "
        f"{np.array2string(np.unique(np.round(stuck, 5))[:6], precision=5)} |"
    )
table = "\n".join(rows)
print(table)
print(f"reference critical values / α²: 1/12 = {1 / 12:.5f}, 1/972 = {1 / 972:.5f}")

# %%
fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
est, lo, hi = [], [], []
for H in WIDTHS:
    o = ds["outcome"].sel(width=H).values
    f = gf.wilson_interval(int(np.sum(o == gf.Outcome.CONVERGED)), o.size)
    est.append(f.estimate), lo.append(f.estimate - f.low), hi.append(f.high - f.estimate)
ax.errorbar(WIDTHS, est, yerr=[lo, hi], marker="o", capsize=3)
ax.set_xscale("log", base=2)
ax.set_ylim(0, 1.05)
ax.set_xlabel("width H")
ax.set_ylabel("fraction with risk → 0")
ax.set_title("gradient flow, f(x) = 2x + 1, exact risk")
os.makedirs(OUT, exist_ok=True)
fig.savefig(os.path.join(OUT, "fraction_converged.png"), dpi=120)
with open(os.path.join(OUT, "summary.md"), "w") as fh:
    fh.write(table + "\n")
