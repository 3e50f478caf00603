"""Study: how often does Chatterjee's ball criterion certify a deep network, and is it right?

Chatterjee (arXiv:2203.16462) proves that the gradient flow of a loss ``f`` converges
exponentially fast to a zero of ``f`` inside the ball ``B(θ_0, r)`` whenever
``4 f(θ_0) < r² α(θ_0, r)``, ``α`` being the smallest ``‖∇f‖²/f`` over the ball, and
that for deep feedforward networks with smooth increasing activations this holds at his
*positive* initialisation when the ``n ≤ d`` inputs are linearly independent. For ``n``
linearly independent unit inputs in ``R^d``
(:func:`gflow_jax.models.deep.linearly_independent_data`; ``n > d`` cells break the
hypothesis on purpose) and a :class:`gflow_jax.DeepMLP` of depth ``L``, each seed draws
an initialisation under a *scheme* (``"positive:M"``: Chatterjee's positive
initialisation with output scale ``M``; ``"lecun"``, ``"he"``, ``"ntk"``: Gaussian), then

1. **certificate** — :func:`gflow_jax.certificates.batched_ball_criterion` at radii
   ``r = c · r_0`` for ``c`` in ``radius_factors``, where ``r_0 = 2√(f(θ_0)/ρ(θ_0))`` and
   ``ρ = ‖∇f‖²/f`` at the centre (no radius below ``r_0`` can pass, since ``α ≤ ρ(θ_0)``).
   *Certified* = the ESTIMATED criterion ``4 f(θ_0) < r² α̂`` holds at some scanned ``r``.
   Besides the centre, random points and the adversarial search, ``α̂`` also sees the
   flow's end point when it lies in the ball (a point of an actual flow, as
   ``trajectory=`` in :func:`~gflow_jax.certificates.ball_criterion`; it can only
   lower ``α̂``, i.e. make the certificate more conservative);
2. **flow** — :func:`gflow_jax.run_ensemble` integrates the gradient flow
   (:class:`gflow_jax.GradientFlow`, Tsit5 with the default controller and stiff-tail
   phase; :class:`gflow_jax.PiecewiseGradientFlow` for ``activation="relu"``, whose
   risk has kinks at the data) of every seed to ``t1`` (run first, so its end points
   can enter step 1);
   *converged* = outcome ``CONVERGED`` (``f ≤ risk_tol``).

**Loss normalisation.** :class:`gflow_jax.EmpiricalRisk` with default weights is the mean
squared error ``f(θ) = (1/n) Σ_i (N_θ(x_i) − y_i)²``, Chatterjee's form. Other
normalisations rescale ``f`` by a constant ``c`` and time by ``1/c``: ``α`` and ``β``
scale by ``c`` and the criterion ``4f < r²α`` is unchanged.

The per-cell result is an ``xarray.Dataset`` (dims ``scheme``, ``depth``, ``n``, ``seed``,
``radius_factor``) with the fractions certified and converged (Wilson 95 % intervals), the
2×2 certified × converged counts, median observed rates and ``α̂``. :func:`plot` draws both
fractions against ``n/d``; :func:`table` renders a Markdown table.
"""

from __future__ import annotations

import dataclasses
import math
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..certificates.ball import batched_ball_criterion
from ..certificates.rates import tail_rate
from ..certificates.search import SearchOptions
from ..dynamics import GradientFlow, PiecewiseGradientFlow
from ..engine import run_ensemble
from ..models.activations import ACTIVATIONS
from ..models.base import partition
from ..models.deep import DeepMLP, linearly_independent_data
from ..outcomes import Outcome, Stop
from ..risks.empirical import EmpiricalRisk
from ..statistics import certification_table, wilson_interval
from ..sweep import run_sweep
from ._config import config_dict, resolve_devices
from ._io import write_text

__all__ = [
    "PRESETS",
    "DeepCertificateConfig",
    "parse_scheme",
    "plot",
    "report",
    "run",
    "table",
]

NAME = "deep_certificate"
DESCRIPTION = "Chatterjee: how often the ball criterion certifies a deep net, and is it right"

_GAUSSIAN = ("lecun", "he", "ntk")


def parse_scheme(scheme: str) -> tuple[str, float]:
    """``"positive:100"`` → ``("positive", 100.0)``; ``"lecun"`` → ``("lecun", 1.0)``.

    The optional ``:M`` is the output scale ``M`` of :class:`DeepMLP` (any init).
    """
    if not isinstance(scheme, str):
        raise TypeError(f"a scheme must be a string like 'positive:100', got {scheme!r}.")
    name, _, scale = scheme.partition(":")
    if name not in ("positive",) + _GAUSSIAN:
        raise ValueError(
            f"unknown init scheme {scheme!r}; use 'positive:M' or one of {_GAUSSIAN} "
            "(optionally ':M')."
        )
    try:
        M = float(scale) if scale else 1.0
    except ValueError:
        raise ValueError(f"bad output scale in scheme {scheme!r}; e.g. 'positive:100'.") from None
    if not (math.isfinite(M) and M > 0):
        raise ValueError(f"the output scale in {scheme!r} must be finite and > 0.")
    return name, M


@dataclasses.dataclass(frozen=True)
class DeepCertificateConfig:
    """Settings of the deep-network certificate study (every field has a default).

    - ``d``: input dimension; ``ns``: numbers of data points (``n > d`` breaks the
      theorem's hypothesis on purpose);
    - ``depths``: numbers ``L`` of hidden layers; ``width``: their width;
    - ``activation``: a name in ``ACTIVATIONS``; ``sharpness`` for ``"smooth_relu"``;
    - ``schemes``: initialisations, ``"positive:M"`` or ``"lecun"``/``"he"``/``"ntk"``;
    - ``seeds``: initialisations per cell; ``data_seed``: the data set of size ``n`` is
      ``linearly_independent_data(n, d, key(data_seed), allow_dependent=True)`` — fixed
      across seeds, depths and schemes (the ensemble is over initialisations);
    - ``radius_factors``: increasing radii ``c · r_0`` scanned by the certificate (module
      docstring); ``α̂`` (``β̂``) is made non-increasing (non-decreasing) in ``r``;
    - ``n_random``, ``n_adversarial``, ``ascent_steps``, ``probe_steps``,
      ``hessian_iters``: criterion search effort
      (:class:`gflow_jax.certificates.SearchOptions`);
    - ``t1``, ``risk_tol``, ``max_steps``: gradient flow horizon, convergence threshold
      (``f ≤ risk_tol``) and solver budget; ``chunk_size``: ensemble pool size.
    """

    d: int = 16
    ns: tuple[int, ...] = (4, 8, 16, 24)
    depths: tuple[int, ...] = (2, 3, 4)
    width: int = 16
    activation: str = "tanh"
    sharpness: float = 10.0
    schemes: tuple[str, ...] = ("positive:10", "positive:100", "positive:1000", "lecun")
    seeds: int = 16
    data_seed: int = 0
    radius_factors: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0)
    n_random: int = 64
    n_adversarial: int = 4
    ascent_steps: int = 100
    probe_steps: int = 1000
    hessian_iters: int = 32
    t1: float = 1e4
    risk_tol: float = 1e-8
    max_steps: int = 200_000
    chunk_size: int = 64

    def __post_init__(self):
        for name in (
            "d",
            "width",
            "seeds",
            "chunk_size",
            "max_steps",
            "ascent_steps",
            "hessian_iters",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}.")
        for name in ("n_random", "n_adversarial", "probe_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}.")
        for name in ("ns", "depths"):
            v = tuple(getattr(self, name))
            if not v or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v):
                raise ValueError(f"{name} must be a non-empty tuple of positive ints, got {v!r}.")
            if len(set(v)) != len(v):
                raise ValueError(f"{name} has duplicates: {v!r}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; use one of {sorted(ACTIVATIONS)}."
            )
        if not self.schemes or len(set(self.schemes)) != len(self.schemes):
            raise ValueError("schemes must be a non-empty tuple of distinct scheme strings.")
        for s in self.schemes:
            parse_scheme(s)
        rf = tuple(self.radius_factors)
        if not rf or any(not (math.isfinite(c) and c > 0) for c in rf):
            raise ValueError(f"radius_factors must be finite positive numbers, got {rf!r}.")
        if any(b <= a for a, b in zip(rf, rf[1:], strict=False)):
            raise ValueError(f"radius_factors must be strictly increasing, got {rf!r}.")
        for name in ("t1", "risk_tol", "sharpness"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite positive number, got {v!r}.")


def _cell(
    config: DeepCertificateConfig,
    scheme: str,
    depth: int,
    data,
    members: range,
    devices: str | None = None,
) -> dict:
    """Certificate and flow for the seeds ``members`` of one (scheme, depth, n) cell."""
    init, M = parse_scheme(scheme)
    widths = (config.d,) + (config.width,) * depth + (1,)
    risk = EmpiricalRisk(data.x, data.y)
    seed_base = jax.random.fold_in(jax.random.key(config.data_seed + 1), depth)

    def make(key):
        return DeepMLP(
            widths,
            config.activation,
            key=key,
            init=init,
            output_scale=M,
            sharpness=config.sharpness,
        )

    # the same keys for every scheme (paired comparison of initialisations)
    all_keys = jax.random.split(seed_base, config.seeds)
    part = slice(members.start, members.stop)
    keys = all_keys[part]
    models = eqx.filter_vmap(make)(keys)
    params0 = partition(models)[0]
    flat0 = jax.vmap(lambda p: ravel_pytree(p)[0])(params0)

    # -- the flows ------------------------------------------------------------------
    # a ReLU network (for comparison) has kinks at the data: the kink-aware flow
    flow = PiecewiseGradientFlow if config.activation == "relu" else GradientFlow
    dynamics = flow(stop=Stop(risk_tol=config.risk_tol), max_steps=config.max_steps)
    ens = run_ensemble(
        make,
        risk,
        keys,
        config.t1,
        dynamics,
        n_save=64,
        limits=None,  # the study compares certificates with outcomes, not limit classes
        chunk_size=config.chunk_size,
        progress=None,
        devices=resolve_devices(devices),
    )

    # -- certificate over the scanned radii ------------------------------------------
    def center_ratio(m):
        value, grad = jax.value_and_grad(lambda p: risk(eqx.combine(p, partition(m)[1])))(
            partition(m)[0]
        )
        g2 = sum(jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grad))
        return value, g2 / value

    f0, rho0 = map(np.asarray, eqx.filter_jit(eqx.filter_vmap(center_ratio))(models))
    r0 = 2 * np.sqrt(f0 / np.maximum(rho0, np.finfo(float).tiny))
    ckeys = jax.random.split(jax.random.fold_in(all_keys[0], 7), config.seeds)[part]
    search = SearchOptions(
        n_random=config.n_random,
        n_adversarial=config.n_adversarial,
        ascent_steps=config.ascent_steps,
        probe_steps=config.probe_steps,
        hessian_iters=config.hessian_iters,
    )
    # the flow's end point is one of the points searched (it is ignored if outside the ball)
    points = np.asarray(ens.final_params)[:, None, :]
    alpha, beta, margin, travel, source = [], [], [], [], []
    for c in config.radius_factors:
        r = np.where(np.isfinite(r0), c * r0, 1.0)
        rep = batched_ball_criterion(models, risk, r, keys=ckeys, search=search, points=points)
        alpha.append(np.asarray(rep.alpha))
        source.append(np.asarray(rep.alpha_source))
        beta.append(np.asarray(rep.beta))
        margin.append(np.where(np.isfinite(r0), np.asarray(rep.margin), 0.0))
        travel.append(np.asarray(rep.travel_bound))
    alpha, beta, margin, travel, source = (
        np.stack(a, -1) for a in (alpha, beta, margin, travel, source)
    )
    # a point found in a smaller ball lies in every larger one: make α̂ (β̂) monotone in r
    alpha = np.minimum.accumulate(alpha, axis=-1)
    beta = np.maximum.accumulate(beta, axis=-1)
    radii = np.asarray(config.radius_factors)[None, :] * r0[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.where(np.isfinite(r0)[:, None], radii**2 * alpha / (4 * f0[:, None]), 0.0)
        travel = 2 * np.sqrt(f0[:, None] / alpha)
    holds = margin > 1
    certified = holds.any(-1)
    first = np.argmax(holds, -1)
    pick = lambda a: np.where(certified, np.take_along_axis(a, first[:, None], -1)[:, 0], np.nan)
    alpha_cert, travel_cert = pick(alpha), pick(travel)
    radius_cert = np.where(certified, np.asarray(config.radius_factors)[first] * r0, np.nan)

    outcome = np.asarray(ens.outcome)
    converged = outcome == int(Outcome.CONVERGED)
    fin, ini, t_stop = (np.asarray(a) for a in (ens.final_risk, ens.initial_risk, ens.t_stop))
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = np.where(t_stop > 0, -np.log(fin / ini) / t_stop, np.nan)
    rate, _ = jax.vmap(tail_rate)(jnp.broadcast_to(ens.ts, ens.risk.shape), ens.risk)
    rate = np.asarray(rate)
    distance = np.linalg.norm(np.asarray(ens.final_params) - np.asarray(flat0), axis=-1)
    return dict(
        certified=certified,
        converged=converged,
        outcome=outcome,
        initial_risk=f0,
        center_ratio=rho0,
        base_radius=r0,
        alpha_hat=alpha,
        alpha_source=source,
        beta_hat=beta,
        margin=margin,
        travel_bound=travel,
        alpha_certified=alpha_cert,
        travel_certified=travel_cert,
        radius_certified=radius_cert,
        final_risk=fin,
        t_stop=t_stop,
        observed_rate=observed,
        tail_rate=rate,
        final_distance=distance,
    )


def run(
    config: DeepCertificateConfig | None = None,
    store=None,
    *,
    progress: bool = False,
    overwrite: bool = False,
    executor="local",
    devices: str | None = None,
):
    """Run the study; returns an ``xarray.Dataset`` (see the module docstring).

    The cells run through :func:`gflow_jax.run_sweep`: with a `store` directory, every
    chunk of ``chunk_size`` seeds is stored as it finishes and a rerun resumes
    (`overwrite` replaces a store made with another configuration; `executor`: ``"local"``
    or a ``dask.distributed.Client``, see :func:`gflow_jax.run_sweep`; `devices`: a
    ``--devices`` spec such as ``"all"`` or ``"gpu:0,1"``, resolved where a piece runs,
    over which :func:`gflow_jax.run_ensemble` splits its pools).

    Per seed (dims ``scheme, depth, n, seed``): ``certified``, ``converged``, ``outcome``,
    ``initial_risk``, ``center_ratio`` ``ρ(θ_0)``, ``base_radius`` ``r_0``, ``alpha_hat``
    / ``alpha_source`` (a :class:`gflow_jax.certificates.Search` code) /
    ``beta_hat`` / ``margin`` / ``travel_bound`` (also over ``radius_factor``),
    ``alpha_certified`` / ``radius_certified`` / ``travel_certified`` (at the smallest
    certified radius, NaN if none), ``final_risk``, ``t_stop``, ``observed_rate``
    ``−log(f(t_stop)/f(0))/t_stop`` (≥ α whenever the criterion truly holds),
    ``tail_rate`` (:func:`gflow_jax.certificates.tail_rate`), ``final_distance`` ``‖θ_stop − θ_0‖``.

    Per cell (dims ``scheme, depth, n``): ``frac_certified``, ``frac_converged`` with
    ``*_low``/``*_high`` (Wilson 95 %), ``table`` (2×2 counts, dims ``certified_row``,
    ``converged_col``: yes/no), ``false_certificates`` (certified, not converged),
    ``median_observed_rate``, ``median_alpha_certified``, ``median_rate_ratio``
    (observed / α̂ over certified seeds), ``within_travel`` (fraction of certified seeds
    with ``final_distance ≤ travel_certified``), ``left_ball`` (number of certified seeds
    whose flow *ended* outside the certified ball, ``final_distance > radius_certified``:
    a refuted certificate even if the flow converged). Per ``n``: ``gram_lambda_min`` and the
    coordinate ``n_over_d``.
    """
    import xarray as xr

    config = DeepCertificateConfig() if config is None else config
    if not isinstance(config, DeepCertificateConfig):
        raise TypeError("config must be a DeepCertificateConfig.")
    S, D, N, B = len(config.schemes), len(config.depths), len(config.ns), config.seeds
    per_seed: dict[str, np.ndarray] = {}
    lam = np.zeros(N)
    cells = [(i, j, k) for i in range(S) for j in range(D) for k in range(N)]
    datasets = {}
    for k, n in enumerate(config.ns):
        datasets[n] = linearly_independent_data(
            n, config.d, jax.random.key(config.data_seed), allow_dependent=True
        )
        lam[k] = datasets[n].gram_lambda_min

    def cell(scheme, depth, n, members):
        out = _cell(config, scheme, depth, datasets[n], members, devices)
        return xr.Dataset({k: (("seed", "radius_factor")[: np.ndim(v)], v) for k, v in out.items()})

    swept = run_sweep(
        {"scheme": list(config.schemes), "depth": list(config.depths), "n": list(config.ns)},
        cell,
        store,
        config={
            "study": NAME,
            **config_dict(config),
            "x64": bool(jax.config.jax_enable_x64),
        },
        members=B,
        chunk_size=config.chunk_size,
        member_dim="seed",
        progress=progress,
        overwrite=overwrite,
        executor=executor,
    )
    per_seed = {name: swept[name].values.astype(float) for name in swept.data_vars}

    dims = ("scheme", "depth", "n", "seed")
    data_vars = {}
    for name, value in per_seed.items():
        d = dims + (("radius_factor",) if value.ndim == 5 else ())
        if name in ("certified", "converged"):
            value = value.astype(bool)
        elif name in ("outcome", "alpha_source"):
            value = value.astype(np.int8)
        data_vars[name] = (d, value)
    cert, conv = per_seed["certified"].astype(bool), per_seed["converged"].astype(bool)
    frac = {key: np.zeros((S, D, N, 3)) for key in ("certified", "converged")}
    counts = np.zeros((S, D, N, 2, 2), np.int64)
    med = {
        key: np.full((S, D, N), np.nan)
        for key in ("observed_rate", "alpha_certified", "rate_ratio", "within_travel")
    }
    left = np.zeros((S, D, N), np.int64)
    for i, j, k in cells:
        for key, arr in (("certified", cert), ("converged", conv)):
            w = wilson_interval(int(arr[i, j, k].sum()), B)
            frac[key][i, j, k] = (w.estimate, w.low, w.high)
        counts[i, j, k] = certification_table(cert[i, j, k], conv[i, j, k]).counts
        c = cert[i, j, k]
        obs = per_seed["observed_rate"][i, j, k]
        med["observed_rate"][i, j, k] = _median(obs)
        if c.any():
            a = per_seed["alpha_certified"][i, j, k][c]
            med["alpha_certified"][i, j, k] = _median(a)
            med["rate_ratio"][i, j, k] = _median(obs[c] / a)
            dist, tb = (
                per_seed["final_distance"][i, j, k][c],
                per_seed["travel_certified"][i, j, k][c],
            )
            med["within_travel"][i, j, k] = float(np.mean(dist <= tb))
            left[i, j, k] = int(np.sum(dist > per_seed["radius_certified"][i, j, k][c]))
    cell_dims = ("scheme", "depth", "n")
    for key in ("certified", "converged"):
        data_vars[f"frac_{key}"] = (cell_dims, frac[key][..., 0])
        data_vars[f"frac_{key}_low"] = (cell_dims, frac[key][..., 1])
        data_vars[f"frac_{key}_high"] = (cell_dims, frac[key][..., 2])
    data_vars["table"] = (cell_dims + ("certified_row", "converged_col"), counts)
    data_vars["false_certificates"] = (cell_dims, counts[..., 0, 1])
    data_vars["left_ball"] = (cell_dims, left)
    data_vars["median_observed_rate"] = (cell_dims, med["observed_rate"])
    data_vars["median_alpha_certified"] = (cell_dims, med["alpha_certified"])
    data_vars["median_rate_ratio"] = (cell_dims, med["rate_ratio"])
    data_vars["within_travel"] = (cell_dims, med["within_travel"])
    data_vars["gram_lambda_min"] = (("n",), lam)
    ds = xr.Dataset(
        data_vars,
        coords={
            "scheme": list(config.schemes),
            "depth": list(config.depths),
            "n": list(config.ns),
            "seed": np.arange(B),
            "radius_factor": list(config.radius_factors),
            "n_over_d": ("n", np.asarray(config.ns, float) / config.d),
            "certified_row": ["yes", "no"],
            "converged_col": ["yes", "no"],
        },
        attrs={
            "study": "deep_certificate",
            "description": "Chatterjee ball criterion (ESTIMATED: alpha_hat >= alpha) vs the "
            "gradient flow of DeepMLP on n linearly independent inputs (Chatterjee, "
            "arXiv:2203.16462).",
            "loss": "mean squared error (1/n) sum_i (N(x_i) - y_i)^2",
            **{
                f"config_{f.name}": _attr(getattr(config, f.name))
                for f in dataclasses.fields(config)
            },
        },
    )
    return ds


def _median(a) -> float:
    a = np.asarray(a, float)
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else float("nan")


def _attr(value):
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    return value


def table(dataset) -> str:
    """Markdown table of a :func:`run` dataset: one row per (scheme, depth, n)."""
    ds = dataset
    rows = [
        "| scheme | depth | n | n/d | λ_min(XXᵀ) | certified [95% CI] | converged [95% CI] | "
        "false cert. | left ball | median α̂ | median obs. rate | median obs./α̂ |",
        "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in ds["scheme"].values:
        for dep in ds["depth"].values:
            for n in ds["n"].values:
                c = ds.sel(scheme=s, depth=dep, n=n)
                frac = lambda key, c=c: (
                    f"{float(c[f'frac_{key}']):.2f} [{float(c[f'frac_{key}_low']):.2f}, "
                    f"{float(c[f'frac_{key}_high']):.2f}]"
                )
                rows.append(
                    f"| {s} | {int(dep)} | {int(n)} | {float(c['n_over_d']):.2f} | "
                    f"{float(c['gram_lambda_min']):.2e} | {frac('certified')} | "
                    f"{frac('converged')} | {int(c['false_certificates'])} | "
                    f"{int(c['left_ball'])} | "
                    f"{_fmt(c['median_alpha_certified'])} | {_fmt(c['median_observed_rate'])} | "
                    f"{_fmt(c['median_rate_ratio'])} |"
                )
    return "\n".join(rows)


def _fmt(x) -> str:
    x = float(x)
    return "–" if not math.isfinite(x) else f"{x:.3g}"


def plot(dataset, path: str | os.PathLike):
    """Fractions certified (top row) and converged (bottom row) vs ``n/d``, one column per
    depth, one colour per initialisation scheme.

    Error bars are the Wilson 95 % intervals; schemes are shifted slightly along ``x`` so
    their bars do not overlap; the dotted line marks ``n = d`` (the theorem needs
    ``n ≤ d``). Writes the figure to ``path`` (format from the suffix) and returns the
    matplotlib ``Figure`` (no global pyplot state is touched).
    """
    import matplotlib
    from matplotlib.figure import Figure

    ds = dataset
    depths = ds["depth"].values
    schemes = ds["scheme"].values
    x = ds["n_over_d"].values
    span = (x.max() - x.min()) if x.size > 1 else 1.0
    shift = 0.012 * span * (np.arange(len(schemes)) - (len(schemes) - 1) / 2)
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 3.6 * len(depths) + 1.4
    fig = Figure(figsize=(width, 5.2))
    axes = fig.subplots(2, len(depths), sharex=True, sharey=True, squeeze=False)
    for row, key in enumerate(("certified", "converged")):
        for col, dep in enumerate(depths):
            ax = axes[row, col]
            for idx, s in enumerate(schemes):
                c = ds.sel(scheme=s, depth=dep)
                y = c[f"frac_{key}"].values
                err = np.stack([y - c[f"frac_{key}_low"].values, c[f"frac_{key}_high"].values - y])
                ax.errorbar(
                    x + shift[idx],
                    y,
                    yerr=err,
                    marker="o",
                    ms=3,
                    capsize=2,
                    lw=1,
                    color=colors[idx % len(colors)],
                    label=str(s),
                )
            ax.axvline(1.0, color="0.6", lw=0.8, ls=":")
            ax.set_ylim(-0.05, 1.05)
            if row == 0:
                ax.set_title(f"depth L = {int(dep)}", fontsize=9)
            else:
                ax.set_xlabel("n / d")
        axes[row, 0].set_ylabel(f"fraction {key}")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, title="init", title_fontsize=7)
    fig.suptitle(
        "ESTIMATED ball criterion vs gradient flow "
        f"({ds.attrs.get('config_activation', '')}, d = {ds.attrs.get('config_d', '?')})",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1 - 1.3 / width, 1))
    fig.savefig(os.fspath(path), dpi=120)
    return fig


def report(dataset, outdir) -> list[str]:
    """Write ``deep_certificate.{png,pdf}`` (:func:`plot`) and ``deep_certificate.md``
    (:func:`table`) into `outdir`; returns their paths."""
    os.makedirs(outdir, exist_ok=True)
    paths = [os.path.join(outdir, f"{NAME}.{ext}") for ext in ("png", "pdf")]
    for path in paths:
        plot(dataset, path)
    paths.append(write_text(table(dataset), outdir, f"{NAME}.md"))
    return paths


PRESETS = {
    # seconds: the tests and the notebook
    "tiny": DeepCertificateConfig(
        d=6,
        ns=(3,),
        depths=(1,),
        width=5,
        schemes=("positive:100", "lecun"),
        seeds=4,
        radius_factors=(2.0, 4.0),
        n_random=8,
        n_adversarial=3,
        ascent_steps=100,
        probe_steps=200,
        hessian_iters=8,
        t1=1e3,
        chunk_size=4,
    ),
    # minutes on 2 CPU cores: n ≤ d/2 only, a bounded step budget (with n = 12 the
    # same grid took over 15 CPU-minutes)
    "laptop": DeepCertificateConfig(
        ns=(4, 8),
        depths=(2,),
        schemes=("positive:100", "lecun"),
        seeds=8,
        n_random=32,
        t1=1e3,
        max_steps=20_000,
    ),
    "paper": DeepCertificateConfig(),
}
"""The presets per scale of ``gflow run deep_certificate --scale ...``."""
