# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Implicit ReLU networks: linear convergence when the width is linear in N
#
# Gao & Gao (arXiv:2205.07463): the implicit network z* = relu(γAz* + Wx), N(x) = u z*,
# trained by gradient flow on ½Σ(N(xᵢ) − yᵢ)², converges to zero loss at a linear rate
# when m = Ω(N) and γ keeps the equilibrium well posed (γ‖A‖₂ < 1). The study sweeps
# m/N, N and γ and reports, per cell, the fraction converged, the fraction ill-posed,
# the median tail rate and σ_min(Z₀)²/m. `GFLOW_SMALL=1` runs a tiny version (what the
# tests do).

# %%
import os

import jax

jax.config.update("jax_enable_x64", True)
import matplotlib

matplotlib.use("Agg")
from gflow_jax.experiments import implicit_width

SMALL = os.environ.get("GFLOW_SMALL") == "1"
OUT = os.environ.get("GFLOW_OUT", "results/notebooks/implicit_width")
config = implicit_width.SMALL if SMALL else implicit_width.QUICK
config

# %%
ds = implicit_width.run(config)
table = implicit_width.table(ds)
print(table)

# %% [markdown]
# Fraction converged and median linear rate vs m/N (one curve per N), and vs γ.

# %%
os.makedirs(OUT, exist_ok=True)
implicit_width.plot(ds, os.path.join(OUT, "implicit_width.png"))
with open(os.path.join(OUT, "summary.md"), "w") as fh:
    fh.write(table + "\n")
