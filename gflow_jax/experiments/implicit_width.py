"""Study: does an implicit ReLU network of width ``m = Ω(N)`` train linearly?

Gao & Gao (arXiv:2205.07463) prove that gradient flow on the implicit network
``z* = relu(γAz* + Wx)``, ``N(x) = u z*`` (:class:`gflow_jax.ImplicitReLU`) reaches zero
training loss at a linear rate when the width is linear in the sample size and ``γ``
keeps the equilibrium well posed. This study sweeps

- ``ratios``: ``m / N`` (width ``m = max(1, round(ratio · N))``),
- ``sizes``: the sample size ``N``,
- ``gammas``: the scale ``γ``. With the default ``init="spectral"``, ``‖A(0)‖₂ = 1``
  exactly, so ``γ`` *is* the initial contraction factor ``γ‖A(0)‖₂`` and values near 1
  are near the well-posedness boundary ``1/‖A(0)‖₂``. (With ``init="normal"``,
  ``‖A(0)‖₂ ≈ 2`` and the boundary is ``γ ≈ 1/2``.)

**Task.** ``N`` inputs uniform on the unit sphere ``S^{d−1}`` (``‖x_i‖ = 1``) and a
smooth teacher ``y_i = sin(2π ⟨a, x_i⟩)`` with a random unit ``a`` — one data set per
``N`` (``data_seed``), shared by all widths, scales and initialisations. Loss
``L = ½ Σ_i (N(x_i) − y_i)²`` (:class:`gflow_jax.EmpiricalRisk` with weights ½, the
normalisation of Gao & Gao); all of ``A, W, u`` are trained.

**Flow.** :func:`gflow_jax.run_ensemble` from ``seeds`` initialisations per cell
(member ``k`` uses the same key in every cell: common random numbers). ReLU vector
fields jump where a pre-activation of the equilibrium crosses 0, so ``method="flow"``
runs :class:`gflow_jax.PiecewiseGradientFlow` (Tsit5 with error control ``rtol``,
``atol``, the activation pattern frozen within a step, crossings located as events,
Filippov sliding on up to ``max_sliding`` surfaces at once; the explicit solver only,
``tail="explicit"``: a dense Hessian per step would cost more than the explicit steps
here). ``method="gd"`` runs :class:`gflow_jax.GradientDescent` with learning rate
``lr_scale / s`` instead, ``s`` = median over members of ``‖Z₀‖_F² ≥ λ_max(Z₀ᵀZ₀)`` (the
curvature of ``L`` in ``u``; its time axis is ``t = kη``).

**Per member**: outcome, tail rate (:func:`gflow_jax.certificates.tail_rate`: the slope
of ``log L`` over the last three decades of decay), ``σ_min(Z₀)²/m = λ_min(Z₀Z₀ᵀ)/m``
(``Z₀ ∈ R^{N×m}``: equilibrium features at initialisation; the Gram quantity of Gao &
Gao, which tends to their ``λ₀`` as ``m → ∞``, and is ``0`` if ``m < N``), initial and
final contraction ``γ‖A‖₂``.

**Per cell**: fraction converged (``L ≤ risk_tol`` within ``t1``) with its Wilson 95 %
interval, fractions ill-posed / diverged / unfinished / critical / solver-failed, median
tail rate (over members with a finite rate), median ``σ_min(Z₀)²/m``, and the median of
``rate / (2σ_min(Z₀)²)``: along the flow ``‖∇L‖² ≥ ‖∇_u L‖² = ‖Z_tᵀe‖² ≥ 2σ_min(Z_t)² L``,
so ``2σ_min(Z₀)²`` is the PL rate at initialisation (the ratio is ≳ 1 while ``Z_t``
stays near ``Z₀``).
"""

from __future__ import annotations

import dataclasses
import math
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._numerics import finite_eigh
from ..certificates.rates import tail_rate
from ..dynamics import GradientDescent, PiecewiseGradientFlow
from ..engine import run_ensemble
from ..models.implicit import ImplicitReLU
from ..outcomes import Outcome, SolverVerdict, Stop
from ..risks.empirical import EmpiricalRisk
from ..statistics import wilson_interval
from ..sweep import run_sweep
from ._config import config_dict, resolve_devices
from ._io import write_text

__all__ = ["PRESETS", "ImplicitWidthConfig", "make_data", "plot", "report", "run", "table"]

NAME = "implicit_width"
DESCRIPTION = "Gao-Gao: implicit ReLU nets, fraction converged and linear rate vs width m/N"


@dataclasses.dataclass(frozen=True)
class ImplicitWidthConfig:
    """Settings of the linear-width study (every field has a default).

    - ``ratios``: widths relative to the sample size, ``m/N``; ``sizes``: ``N``;
    - ``gammas``: scales ``γ`` (with ``init="spectral"``: ``γ = γ‖A(0)‖₂``);
    - ``seeds``: initialisations per cell; ``seed``: their base key;
      ``data_seed``: the data sets;
    - ``d_in``: input dimension; ``input_map``: ``"linear"`` (``φ = Wx``) or ``"relu"``;
    - ``init``: ``"spectral"`` or ``"normal"`` (:class:`ImplicitReLU`); ``margin``:
      well-posedness margin (``ILL_POSED`` once ``γ‖A‖₂ ≥ 1 − margin``);
    - ``t1``: flow horizon; ``risk_tol``: convergence threshold; ``grad_tol``: critical
      point threshold ``‖∇L‖² ≤ grad_tol · L`` (tiny by default: a linearly converging
      flow has ``‖∇L‖² ≈ 2σ_min² L``, and ``σ_min`` may be small for ``m ≈ N``);
      ``max_steps``: solver
      (or GD) step budget; ``n_save``: saved points per trajectory (log-spaced over six
      decades of ``t``; dense, so the tail-rate fit has points in the last decades of
      decay wherever the flow converges);
    - ``method``: ``"flow"`` or ``"gd"``; ``rtol``, ``atol``: the flow's step control,
      ``max_sliding``: how many switching surfaces it slides on at once (module
      docstring; a member needing more fails with verdict ``MAX_SLIDING``);
      ``lr_scale``: GD learning rate in units of
      ``1/‖Z₀‖_F²``; ``chunk_size``, ``compact``: ensemble pool size and scheduling
      (:func:`gflow_jax.run_ensemble`; ``compact=False`` compiles one pool
      shape only, best for tiny runs).
    """

    ratios: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    sizes: tuple[int, ...] = (8, 16, 32)
    gammas: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
    seeds: int = 16
    seed: int = 0
    data_seed: int = 0
    d_in: int = 8
    input_map: str = "linear"
    init: str = "spectral"
    margin: float = 0.02
    t1: float = 1e3
    risk_tol: float = 1e-8
    grad_tol: float = 1e-20
    max_steps: int = 200_000
    n_save: int = 400
    method: str = "flow"
    rtol: float = 1e-6
    atol: float = 1e-9
    max_sliding: int = 16
    lr_scale: float = 0.25
    chunk_size: int = 64
    compact: bool = True

    def __post_init__(self):
        for name in ("seeds", "d_in", "max_steps", "chunk_size", "max_sliding"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        if self.n_save < 2 or not isinstance(self.n_save, int):
            raise ValueError(f"n_save must be an int >= 2, got {self.n_save!r}.")
        for name in ("seed", "data_seed"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise ValueError(f"{name} must be an int.")
        sizes = tuple(self.sizes)
        if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
            raise ValueError(f"sizes must be a non-empty tuple of positive ints, got {sizes!r}.")
        for name in ("ratios", "gammas", "sizes"):
            v = tuple(getattr(self, name))
            if not v or len(set(v)) != len(v):
                raise ValueError(f"{name} must be a non-empty tuple without duplicates.")
            if any(not (isinstance(x, (int, float)) and math.isfinite(x) and x > 0) for x in v):
                raise ValueError(f"{name} must contain finite positive numbers, got {v!r}.")
        for name in ("t1", "risk_tol", "grad_tol", "rtol", "atol", "lr_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (
                isinstance(v, (int, float)) and math.isfinite(v) and v > 0
            ):
                raise ValueError(f"{name} must be a finite positive number, got {v!r}.")
        if not (isinstance(self.margin, (int, float)) and 0 <= self.margin < 1):
            raise ValueError(f"margin must be in [0, 1), got {self.margin!r}.")
        if self.input_map not in ("linear", "relu"):
            raise ValueError(f"input_map must be 'linear' or 'relu', got {self.input_map!r}.")
        if self.init not in ("spectral", "normal"):
            raise ValueError(f"init must be 'spectral' or 'normal', got {self.init!r}.")
        if self.method not in ("flow", "gd"):
            raise ValueError(f"method must be 'flow' or 'gd', got {self.method!r}.")

    def width(self, n: int, ratio: float) -> int:
        """The width ``m = max(1, round(ratio · N))`` of a cell."""
        return max(1, int(round(ratio * n)))


def make_data(n: int, d_in: int, key, dtype=None):
    """``N`` unit-norm inputs (uniform on ``S^{d−1}``) and teacher labels
    ``y = sin(2π⟨a, x⟩)`` with a random unit ``a``: returns ``(x (N, d), y (N,))``."""
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    kx, ka = jax.random.split(key)
    x = jax.random.normal(kx, (n, d_in), dtype)
    x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    a = jax.random.normal(ka, (d_in,), dtype)
    a = a / jnp.linalg.norm(a)
    return x, jnp.sin(2 * jnp.pi * x @ a)


def _features(model: ImplicitReLU, x):
    """``λ_min(Z₀Z₀ᵀ)/m``, ``‖Z₀‖_F²``, solve success and ``γ‖A‖₂`` of one model.

    ``Z₀Z₀ᵀ`` (``N × N``) has rank ``≤ m``, so ``λ_min = 0`` exactly when ``m < N``."""
    eq = model.equilibrium(x)
    z = eq.z
    gram = z @ z.T / model.width
    eigenvalues, _, finite = finite_eigh(gram)
    lam = jnp.where(finite, jnp.maximum(eigenvalues[0], 0.0), jnp.nan)
    if model.width < x.shape[0]:
        lam = jnp.zeros_like(lam)
    return lam, jnp.sum(z * z), eq.success, model.contraction()


def _cell(
    config: ImplicitWidthConfig,
    x,
    y,
    m: int,
    gamma: float,
    members: range,
    devices: str | None = None,
) -> dict:
    """One (N, m, γ) cell, members ``members`` of ``0 … seeds − 1`` (the step scale ``s``
    is the median over *all* members, so chunks of a cell share it)."""
    n = x.shape[0]
    dtype = x.dtype
    risk = EmpiricalRisk(x, y, weights=jnp.full((n,), 0.5, dtype))

    def init(key):
        return ImplicitReLU(
            config.d_in,
            m,
            gamma=gamma,
            key=key,
            init=config.init,
            input_map=config.input_map,
            margin=config.margin,
            dtype=dtype,
        )

    keys = jax.random.split(jax.random.key(config.seed), config.seeds)
    models0 = eqx.filter_vmap(init)(keys)
    lam, fro2, ok0, c0 = map(
        np.asarray, eqx.filter_jit(eqx.filter_vmap(_features, in_axes=(0, None)))(models0, x)
    )
    scale = float(np.median(fro2[np.isfinite(fro2) & ok0])) if np.any(ok0) else 1.0
    part = slice(members.start, members.stop)
    keys, lam, c0 = keys[part], lam[part], c0[part]
    stop = Stop(risk_tol=config.risk_tol, grad_tol=config.grad_tol)
    if config.method == "flow":
        dynamics = PiecewiseGradientFlow(
            rtol=config.rtol,
            atol=config.atol,
            stop=stop,
            max_steps=config.max_steps,
            max_sliding=config.max_sliding,
            tail="explicit",
        )
        t_end = config.t1
    else:
        lr = config.lr_scale / scale
        steps = int(min(config.max_steps, math.ceil(config.t1 / lr)))
        dynamics = GradientDescent(lr, stop=stop, max_steps=config.max_steps)
        t_end = steps * lr  # GD runs while k·lr < t_end: exactly `steps` iterations
    ens = run_ensemble(
        init,
        risk,
        keys,
        t_end,
        dynamics,
        n_save=config.n_save,
        limits=None,  # the study reads outcomes and tail rates, not limit classes
        chunk_size=config.chunk_size,
        compact=config.compact,
        progress=None,
        devices=resolve_devices(devices),
    )
    c1 = np.asarray(eqx.filter_jit(eqx.filter_vmap(lambda mm: mm.contraction()))(ens.models))
    ts = jnp.broadcast_to(ens.ts, ens.risk.shape)
    rate, r2 = map(np.asarray, jax.vmap(tail_rate)(ts, ens.risk))
    return dict(
        outcome=np.asarray(ens.outcome),
        verdict=np.asarray(ens.verdict),
        final_risk=np.asarray(ens.final_risk),
        t_stop=np.asarray(ens.t_stop),
        tail_rate=rate,
        tail_rate_r2=r2,
        sigma_min_sq_over_m=lam,
        contraction_initial=c0,
        contraction_final=c1,
        num_steps=np.asarray(ens.num_steps),
        _t_end=t_end,
        _step=math.nan if config.method == "flow" else config.lr_scale / scale,
    )


def run(
    config: ImplicitWidthConfig | None = None,
    store=None,
    *,
    progress: bool = False,
    overwrite: bool = False,
    executor="local",
    devices: str | None = None,
):
    """Run the study; returns an ``xarray.Dataset``.

    The cells run through :func:`gflow_jax.run_sweep`: with a `store` directory, every
    chunk of ``chunk_size`` members is stored as it finishes and a rerun resumes
    (`overwrite` replaces a store made with another configuration; `executor`: ``"local"``
    or a ``dask.distributed.Client``, see :func:`gflow_jax.run_sweep`; `devices`: a
    ``--devices`` spec such as ``"all"`` or ``"gpu:0,1"``, resolved where a piece runs,
    over which :func:`gflow_jax.run_ensemble` splits its pools).

    Dims ``N`` (sample size), ``ratio`` (``m/N``), ``gamma`` and ``member``. Per member:
    ``outcome`` (:class:`gflow_jax.Outcome` codes), ``verdict``
    (:class:`gflow_jax.SolverVerdict` codes), ``final_risk``, ``t_stop``, ``tail_rate``,
    ``tail_rate_r2``, ``sigma_min_sq_over_m``, ``contraction_initial``,
    ``contraction_final``, ``num_steps``. Per cell: ``converged`` (+ ``converged_low``,
    ``converged_high``, Wilson 95 %), ``ill_posed``, ``diverged``, ``unfinished``,
    ``critical``, ``solver_failed``, ``rate_median``, ``rate_r2_median``,
    ``sigma_min_sq_over_m_median``, ``pl_ratio_median`` (``tail_rate / (2 σ_min(Z₀)²)``),
    ``contraction_final_median``,
    ``t_end`` (the horizon actually run: ``t1``, or ``steps · lr`` for GD) and
    ``step`` (the GD learning rate; NaN for the flow). Coordinate ``width (N, ratio)``.
    Float64 if ``jax_enable_x64`` is on (recommended), else float32.
    """
    import xarray as xr

    config = ImplicitWidthConfig() if config is None else config
    if not isinstance(config, ImplicitWidthConfig):
        raise TypeError("config must be an ImplicitWidthConfig.")
    sizes, ratios, gammas = tuple(config.sizes), tuple(config.ratios), tuple(config.gammas)
    S, R, G, B = len(sizes), len(ratios), len(gammas), config.seeds
    cells = [(i, j, k) for i in range(S) for j in range(R) for k in range(G)]
    data = {
        n: make_data(n, config.d_in, jax.random.fold_in(jax.random.key(config.data_seed), n))
        for n in sizes
    }

    def cell(N, ratio, gamma, members):
        out = _cell(config, *data[N], config.width(N, ratio), float(gamma), members, devices)
        scalars = {"t_end": ((), out.pop("_t_end")), "step": ((), out.pop("_step"))}
        return xr.Dataset({k: ("member", v) for k, v in out.items()} | scalars)

    swept = run_sweep(
        {
            "N": list(sizes),
            "ratio": [float(r) for r in ratios],
            "gamma": [float(g) for g in gammas],
        },
        cell,
        store,
        config={
            "study": "implicit_width",
            **config_dict(config),
            "x64": bool(jax.config.jax_enable_x64),
        },
        members=B,
        chunk_size=config.chunk_size,
        progress=progress,
        overwrite=overwrite,
        executor=executor,
    )
    per_member = {
        name: swept[name].values for name in swept.data_vars if "member" in swept[name].dims
    }
    t_end, step = swept["t_end"].values, swept["step"].values

    outcome = per_member["outcome"]
    cell_dims = ("N", "ratio", "gamma")
    member_dims = cell_dims + ("member",)
    frac = lambda o: np.mean(outcome == int(o), axis=-1)
    conv = np.zeros((S, R, G, 3))
    for i, j, k in cells:
        w = wilson_interval(int(np.sum(outcome[i, j, k] == int(Outcome.CONVERGED))), B)
        conv[i, j, k] = (w.estimate, w.low, w.high)
    rate = per_member["tail_rate"]
    sig = per_member["sigma_min_sq_over_m"]
    widths = np.array([[config.width(n, r) for r in ratios] for n in sizes])
    with np.errstate(divide="ignore", invalid="ignore"):
        pl = rate / (2 * sig * widths[:, :, None, None])
    data_vars = {name: (member_dims, value) for name, value in per_member.items()}
    data_vars.update(
        converged=(cell_dims, conv[..., 0]),
        converged_low=(cell_dims, conv[..., 1]),
        converged_high=(cell_dims, conv[..., 2]),
        ill_posed=(cell_dims, frac(Outcome.ILL_POSED)),
        diverged=(cell_dims, frac(Outcome.DIVERGED)),
        unfinished=(cell_dims, frac(Outcome.UNFINISHED)),
        critical=(cell_dims, frac(Outcome.CRITICAL_POINT)),
        solver_failed=(cell_dims, frac(Outcome.SOLVER_FAILED)),
        rate_median=(cell_dims, _nanmedian(rate)),
        rate_r2_median=(cell_dims, _nanmedian(per_member["tail_rate_r2"])),
        sigma_min_sq_over_m_median=(cell_dims, _nanmedian(sig)),
        pl_ratio_median=(cell_dims, _nanmedian(np.where(sig > 0, pl, np.nan))),
        contraction_final_median=(cell_dims, _nanmedian(per_member["contraction_final"])),
        t_end=(cell_dims, t_end),
        step=(cell_dims, step),
    )
    ds = xr.Dataset(
        data_vars,
        coords={
            "N": list(sizes),
            "ratio": [float(r) for r in ratios],
            "gamma": [float(g) for g in gammas],
            "member": np.arange(B),
            "width": (("N", "ratio"), widths),
        },
        attrs={
            "study": "implicit_width",
            "description": "Gradient flow of ImplicitReLU (z = relu(gamma A z + W x), "
            "N(x) = u z) vs width m/N and gamma (Gao & Gao, arXiv:2205.07463).",
            "loss": "1/2 sum_i (N(x_i) - y_i)^2",
            "outcome_codes": ", ".join(f"{o.value}={o.name}" for o in Outcome),
            "verdict_codes": ", ".join(f"{v.value}={v.name}" for v in SolverVerdict),
            **{
                f"config_{f.name}": _attr(getattr(config, f.name))
                for f in dataclasses.fields(config)
            },
        },
    )
    return ds


def _nanmedian(a) -> np.ndarray:
    a = np.asarray(a, float)
    finite = np.isfinite(a)
    out = np.full(a.shape[:-1], np.nan)
    for idx in np.ndindex(*a.shape[:-1]):
        vals = a[idx][finite[idx]]
        if vals.size:
            out[idx] = np.median(vals)
    return out


def _attr(value):
    if isinstance(value, bool):  # netCDF has no boolean attributes
        return int(value)
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    return value


def _fmt(x) -> str:
    x = float(x)
    return "–" if not math.isfinite(x) else f"{x:.3g}"


def table(dataset) -> str:
    """Markdown table of a :func:`run` dataset: one row per (N, m/N, γ) cell."""
    ds = dataset
    rows = [
        "| N | m/N | m | γ | converged [95% CI] | ill-posed | median rate | median r² | "
        "median σ_min(Z₀)²/m | median rate/(2σ_min²) | median final γ‖A‖₂ |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n in ds["N"].values:
        for r in ds["ratio"].values:
            for g in ds["gamma"].values:
                c = ds.sel(N=n, ratio=r, gamma=g)
                rows.append(
                    f"| {int(n)} | {float(r):g} | {int(c['width'])} | {float(g):g} | "
                    f"{float(c['converged']):.2f} [{float(c['converged_low']):.2f}, "
                    f"{float(c['converged_high']):.2f}] | {float(c['ill_posed']):.2f} | "
                    f"{_fmt(c['rate_median'])} | {_fmt(c['rate_r2_median'])} | "
                    f"{_fmt(c['sigma_min_sq_over_m_median'])} | {_fmt(c['pl_ratio_median'])} | "
                    f"{_fmt(c['contraction_final_median'])} |"
                )
    return "\n".join(rows)


def _panels(fig, ncols_rows):
    return fig.subplots(*ncols_rows, squeeze=False)


def plot(dataset, path: str | os.PathLike):
    """Two figures; returns their paths.

    1. ``path``: fraction converged (Wilson 95 % error bars) and median tail rate vs
       ``m/N``, one curve per ``N``, one row of panels per ``γ``;
    2. ``<stem>_gamma<suffix>``: the same two quantities vs ``γ``, one curve per ``m/N``,
       at the largest ``N``.
    """
    import matplotlib
    from matplotlib.figure import Figure

    ds = dataset
    path = os.fspath(path)
    stem, suffix = os.path.splitext(path)
    suffix = suffix or ".png"
    path1, path2 = stem + suffix, f"{stem}_gamma{suffix}"
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    ratios, gammas, sizes = ds["ratio"].values, ds["gamma"].values, ds["N"].values

    def draw(ax_conv, ax_rate, x, sel_list, labels, xlabel, logx):
        for idx, (c, label) in enumerate(zip(sel_list, labels, strict=True)):
            col = colors[idx % len(colors)]
            y = c["converged"].values
            err = np.stack([y - c["converged_low"].values, c["converged_high"].values - y])
            ax_conv.errorbar(x, y, yerr=err, marker="o", ms=3, capsize=2, color=col, label=label)
            rate = c["rate_median"].values
            ok = np.isfinite(rate) & (rate > 0)
            ax_rate.plot(x[ok], rate[ok], marker="o", ms=3, color=col, label=label)
        for ax in (ax_conv, ax_rate):
            ax.set_xlabel(xlabel)
            if logx:
                ax.set_xscale("log", base=2)
        ax_conv.set_ylim(-0.05, 1.05)
        ax_conv.set_ylabel("fraction converged")
        ax_rate.set_ylabel("median tail rate")
        ax_rate.set_yscale("log")

    fig = Figure(figsize=(9, 3.2 * len(gammas)))
    axes = _panels(fig, (len(gammas), 2))
    for row, g in enumerate(gammas):
        sel = [ds.sel(gamma=g, N=n) for n in sizes]
        draw(axes[row, 0], axes[row, 1], ratios, sel, [f"N = {int(n)}" for n in sizes], "m / N",
             True)  # fmt: skip
        axes[row, 0].axvline(1.0, color="0.6", lw=0.8, ls=":")
        axes[row, 0].set_title(f"γ = {float(g):g}", fontsize=9)
        axes[row, 1].set_title(f"γ = {float(g):g}", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle("Implicit ReLU network: gradient flow vs width (Gao & Gao)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path1, dpi=120)

    fig2 = Figure(figsize=(9, 3.4))
    axes2 = _panels(fig2, (1, 2))
    n_big = sizes[-1]
    sel = [ds.sel(N=n_big, ratio=r) for r in ratios]
    draw(axes2[0, 0], axes2[0, 1], gammas, sel, [f"m/N = {float(r):g}" for r in ratios], "γ",
         False)  # fmt: skip
    axes2[0, 0].legend(fontsize=7, loc="best")
    fig2.suptitle(f"Implicit ReLU network vs γ (N = {int(n_big)})", fontsize=10)
    fig2.tight_layout()
    fig2.savefig(path2, dpi=120)
    return path1, path2


def report(dataset, outdir) -> list[str]:
    """Write ``implicit_width.{png,pdf}``, ``implicit_width_gamma.{png,pdf}`` (:func:`plot`)
    and ``implicit_width.md`` (:func:`table`) into `outdir`; returns their paths."""
    os.makedirs(outdir, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        paths += plot(dataset, os.path.join(outdir, f"{NAME}.{ext}"))
    paths.append(write_text(table(dataset), outdir, f"{NAME}.md"))
    return paths


PRESETS = {
    # seconds to a minute (mostly compilation): the tests and the notebook (N = 6;
    # m = 3 < N and m = 12 = 2N); compact=False: one pool shape per cell to compile
    "tiny": ImplicitWidthConfig(
        sizes=(6,),
        ratios=(0.5, 2.0),
        gammas=(0.5,),
        seeds=4,
        t1=300.0,
        method="gd",
        n_save=200,
        chunk_size=4,
        compact=False,
    ),
    # a few minutes on 2 CPU cores
    "laptop": ImplicitWidthConfig(
        sizes=(8,), ratios=(0.5, 1.0, 2.0, 4.0), gammas=(0.5, 0.9), seeds=8, t1=100.0, chunk_size=8
    ),
    "paper": ImplicitWidthConfig(),
}
"""The presets per scale of ``gflow run implicit_width --scale ...``."""
