# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Deep networks with smooth activations: the ball criterion vs what the flow does
#
# Chatterjee (arXiv:2203.16462): if 4 f(θ₀) < r² α(θ₀, r), with α the infimum of
# ‖∇f‖²/f on the ball B(θ₀, r), the gradient flow stays in the ball and
# f(θ_t) ≤ e^{−αt} f(θ₀). For
# feedforward networks with smooth increasing activations, the *positive* initialisation
# (first layer 0, positive hidden weights, large output weights M) and n ≤ d linearly
# independent inputs make the criterion hold. This notebook estimates the criterion
# (α̂ ≥ α: a "certified" verdict means no counter-example was found) and compares the
# fraction certified with the fraction that actually converges, against n/d, for
# positive vs Gaussian (LeCun) initialisation. `GFLOW_SMALL=1` runs a tiny version.

# %%
import os

import jax

jax.config.update("jax_enable_x64", True)
import matplotlib

matplotlib.use("Agg")
from gflow_jax.experiments import deep_certificate

SMALL = os.environ.get("GFLOW_SMALL") == "1"
OUT = os.environ.get("GFLOW_OUT", "results/notebooks/deep_certificate")
config = deep_certificate.SMALL if SMALL else deep_certificate.QUICK
config

# %%
ds = deep_certificate.run(config)
table = deep_certificate.table(ds)
print(table)

# %% [markdown]
# Fractions certified and converged vs n/d, per initialisation scheme.

# %%
os.makedirs(OUT, exist_ok=True)
deep_certificate.plot(ds, os.path.join(OUT, "deep_certificate.png"))
with open(os.path.join(OUT, "summary.md"), "w") as fh:
    fh.write(table + "\n")
