"""Ensembles: what became of each trajectory of many, and what fraction has risk → 0.

:class:`Ensemble` holds the stacked results of :func:`gflow_jax.run_ensemble` (leading
axis ``trajectory``), the fractions with their intervals, a Markdown summary, an
``xarray`` view and netCDF storage that records the model's architecture.
"""

from __future__ import annotations

import json
import os
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from ._storage import write_atomic
from .limits import DecayLaw, Limit, LimitReason
from .models.base import partition
from .outcomes import Outcome, SolverVerdict
from .statistics import Fraction, fraction_bounds, wilson_interval

#: Per-trajectory fields, in storage order.
PER_TRAJECTORY = (
    "outcome",
    "verdict",
    "limit",
    "limit_reason",
    "limit_risk",
    "limit_grad_norm",
    "limit_min_eig",
    "limit_max_eig",
    "limit_num_negative",
    "limit_num_zero",
    "refine_distance",
    "initial_risk",
    "final_risk",
    "final_grad_norm",
    "t_stop",
    "t_tail",
    "num_steps",
    "num_rejected",
    "num_tail_steps",
    "initial_param_norm",
    "max_param_norm",
    "decay_law",
    "exp_rate",
    "exp_r2",
    "power_exponent",
    "power_r2",
    "num_crossings",
    "num_slides",
    "sliding_time",
    "num_sliding",
)
#: The per-trajectory fields at the kinks (``PiecewiseGradientFlow``); files written
#: before they existed load with "not tracked" values (−1, NaN).
KINK_FIELDS = ("num_crossings", "num_slides", "sliding_time", "num_sliding")
#: Per-time fields (on the shared save grid).
PER_TIME = ("risk", "grad_norm", "param_norm")

_CODES = {"outcome": Outcome, "verdict": SolverVerdict, "limit": Limit,
          "limit_reason": LimitReason, "decay_law": DecayLaw}  # fmt: skip


def architecture(model: Any) -> dict:
    """A JSON-able description of a model's architecture.

    ``class`` (module and name), ``dtype`` (of the trainable arrays), ``params`` (the
    trainable arrays: path, shape, dtype, in storage order), ``frozen`` (the frozen
    arrays, likewise), ``frozen_fields`` (the model's `frozen` names) and ``static``
    (the tree structure with every static setting: sizes, activations, options).

    **Arguments:**

    - `model`: a model (an ``equinox.Module`` split by :func:`gflow_jax.models.partition`).

    **Returns:**

    A ``dict`` with the keys above: ``class``, ``dtype`` and ``static`` are strings
    (``dtype`` joins several dtypes with commas), ``params`` and ``frozen`` are lists of
    ``[path, shape, dtype]``, ``frozen_fields`` is a list of names.
    """
    params, static = partition(model)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    frozen = jax.tree_util.tree_leaves_with_path(eqx.filter(static, eqx.is_array))
    describe = lambda items: [
        [jax.tree_util.keystr(k), list(x.shape), str(x.dtype)] for k, x in items
    ]
    dtypes = sorted({str(x.dtype) for _, x in leaves})
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "dtype": dtypes[0] if len(dtypes) == 1 else ",".join(dtypes),
        "params": describe(leaves),
        "frozen": describe(frozen),
        "frozen_fields": [str(n) for n in getattr(model, "frozen", ())],
        "static": repr(jax.tree_util.tree_structure(static)),
    }


def architecture_differences(stored: dict, actual: dict) -> list[str]:
    """What differs between two :func:`architecture` descriptions, one line per difference.

    Keys missing from either (files written by older versions) are not compared. The
    order of the arrays is reported only if nothing else differs, and the ``static``
    settings only if neither the class, dtype, frozen fields nor arrays differ.

    **Arguments:**

    - `stored`: the description read from a file.
    - `actual`: the description of the template model.

    **Returns:**

    A ``list[str]``, one human-readable line per difference; empty if they match.
    """

    def arrays(entries):
        return {path: (tuple(shape), dtype) for path, shape, dtype in entries}

    out = []
    for key, label in (("class", "model class"), ("dtype", "dtype"),
                       ("frozen_fields", "frozen fields")):  # fmt: skip
        if key in stored and key in actual and stored[key] != actual[key]:
            out.append(f"{label}: stored {stored[key]!r}, template {actual[key]!r}")
    for key, label in (("params", "trainable"), ("frozen", "frozen")):
        if key not in stored or key not in actual:
            continue
        a, b = arrays(stored[key]), arrays(actual[key])
        for path in [*a, *(p for p in b if p not in a)]:
            if path not in b:
                out.append(f"{label} array {path}: stored {a[path][0]} {a[path][1]}, "
                           "absent from the template")  # fmt: skip
            elif path not in a:
                out.append(f"{label} array {path}: absent from the file, template "
                           f"{b[path][0]} {b[path][1]}")  # fmt: skip
            elif a[path] != b[path]:
                out.append(f"{label} array {path}: stored shape {a[path][0]} {a[path][1]}, "
                           f"template {b[path][0]} {b[path][1]}")  # fmt: skip
        order_a, order_b = [e[0] for e in stored[key]], [e[0] for e in actual[key]]
        if not out and order_a != order_b:
            out.append(f"{label} arrays in another order: stored {order_a}, template {order_b}")
    if not out and stored.get("static", "") != actual.get("static", ""):
        out.append(
            "static settings (sizes, activations, options): stored "
            f"{stored.get('static')}, template {actual.get('static')}"
        )
    return out


class Ensemble(eqx.Module):
    """Stacked results of :func:`gflow_jax.run_ensemble` (leading axis = trajectory).

    **What the flow did**: `outcome` (:class:`gflow_jax.Outcome`), `verdict`
    (:class:`gflow_jax.SolverVerdict`), `t_stop`, `t_tail` (switch to the tail solver,
    ``inf`` if never), `num_steps`, `num_rejected`, `num_tail_steps`, `initial_risk`,
    `final_risk`, `final_grad_norm`, `initial_param_norm`, `max_param_norm`.

    **What it converges to** (:mod:`gflow_jax.limits`): `limit` (:class:`gflow_jax.Limit`:
    ``ZERO_RISK``, ``LOCAL_MIN``, ``SADDLE`` or ``UNRESOLVED``), `limit_reason`
    (:class:`gflow_jax.LimitReason`), `limit_risk`, `limit_grad_norm`, `limit_min_eig`,
    `limit_max_eig`, `limit_num_negative`, `limit_num_zero`, `refine_distance`.

    **How it decays**: `decay_law` (:class:`gflow_jax.DecayLaw`), `exp_rate`, `exp_r2`,
    `power_exponent`, `power_r2` (fits over the last decade of the saved risk curve).

    **At the kinks** (:class:`gflow_jax.PiecewiseGradientFlow` only; ``-1`` and NaN for
    other dynamics, which do not track them): `num_crossings` (switching surfaces crossed,
    releases from sliding included), `num_slides` (sliding modes entered),
    `sliding_time` (flow time spent sliding), `num_sliding` (surfaces slid on at
    `t_stop`).

    **Curves**: `risk`, `grad_norm`, `param_norm` on the shared grid `ts` (NaN after
    `t_stop`), `final_params` (flattened, ``(B, P)``), `models` (final models, stacked;
    ``None`` after :meth:`load` without a template), `stats` (the scheduler's work).
    """

    ts: Float[Array, " time"]
    outcome: Int[Array, " trajectory"]
    verdict: Int[Array, " trajectory"]
    limit: Int[Array, " trajectory"]
    limit_reason: Int[Array, " trajectory"]
    limit_risk: Float[Array, " trajectory"]
    limit_grad_norm: Float[Array, " trajectory"]
    limit_min_eig: Float[Array, " trajectory"]
    limit_max_eig: Float[Array, " trajectory"]
    limit_num_negative: Int[Array, " trajectory"]
    limit_num_zero: Int[Array, " trajectory"]
    refine_distance: Float[Array, " trajectory"]
    initial_risk: Float[Array, " trajectory"]
    final_risk: Float[Array, " trajectory"]
    final_grad_norm: Float[Array, " trajectory"]
    t_stop: Float[Array, " trajectory"]
    t_tail: Float[Array, " trajectory"]
    num_steps: Int[Array, " trajectory"]
    num_rejected: Int[Array, " trajectory"]
    num_tail_steps: Int[Array, " trajectory"]
    initial_param_norm: Float[Array, " trajectory"]
    max_param_norm: Float[Array, " trajectory"]
    decay_law: Int[Array, " trajectory"]
    exp_rate: Float[Array, " trajectory"]
    exp_r2: Float[Array, " trajectory"]
    power_exponent: Float[Array, " trajectory"]
    power_r2: Float[Array, " trajectory"]
    num_crossings: Int[Array, " trajectory"]
    num_slides: Int[Array, " trajectory"]
    sliding_time: Float[Array, " trajectory"]
    num_sliding: Int[Array, " trajectory"]
    risk: Float[Array, "trajectory time"]
    grad_norm: Float[Array, "trajectory time"]
    param_norm: Float[Array, "trajectory time"]
    final_params: Float[Array, "trajectory param"]
    models: Any = None
    dynamics: str = eqx.field(static=True, default="GradientFlow")
    architecture: str = eqx.field(static=True, default="")
    stats: dict = eqx.field(static=True, default_factory=dict)

    def __len__(self) -> int:
        return int(self.outcome.shape[0])

    def count(self, code: Outcome | Limit) -> int:
        """Number of trajectories with this :class:`Outcome` or :class:`Limit` class.

        **Arguments:**

        - `code`: a :class:`Limit` (compared with `limit`) or an :class:`Outcome`
          (compared with `outcome`).

        **Returns:**

        The count, a Python ``int`` in ``[0, len(self)]``.
        """
        field = self.limit if isinstance(code, Limit) else self.outcome
        return int(np.sum(np.asarray(field) == int(code)))

    def fraction(self, code: Outcome | Limit = Limit.ZERO_RISK, confidence=0.95) -> Fraction:
        """Proportion with an :class:`Outcome` or :class:`Limit` class, with its Wilson interval.

        The default is the study's headline: the fraction whose risk → 0. Its
        :class:`gflow_jax.Fraction` also carries the bounds obtained by counting the
        ``UNRESOLVED`` members as failures (`low_all_unresolved_fail`) or as successes
        (`high_all_unresolved_succeed`).

        **Arguments:**

        - `code`: the class counted, a :class:`Limit` or an :class:`Outcome` (default
          ``Limit.ZERO_RISK``).
        - `confidence`: two-sided confidence level in ``(0, 1)`` (default ``0.95``).

        **Returns:**

        A :class:`gflow_jax.Fraction` over ``len(self)`` members: for a :class:`Limit`
        other than ``UNRESOLVED`` it is :func:`gflow_jax.statistics.fraction_bounds`
        with the ``UNRESOLVED`` count; otherwise the plain
        :func:`gflow_jax.statistics.wilson_interval` (whose two bounds are its own).
        """
        if isinstance(code, Limit) and code != Limit.UNRESOLVED:
            return fraction_bounds(
                self.count(code), self.count(Limit.UNRESOLVED), len(self), confidence
            )
        return wilson_interval(self.count(code), len(self), confidence)

    def summary(self) -> str:
        """A Markdown table by limit class and by outcome: counts, fractions, medians."""
        limit, outcome = np.asarray(self.limit), np.asarray(self.outcome)
        head = (
            "| {} | count | fraction [95% CI] | median limit risk | median final risk "
            "| median steps | median t_stop |"
        )
        rule = "|---|---:|---|---:|---:|---:|---:|"

        def rows(codes, field):
            out = []
            for c in codes:
                sel = field == int(c)
                if not sel.any():
                    continue
                f = wilson_interval(int(sel.sum()), len(self))
                out.append(
                    f"| {c.name} | {f.count} | {f.estimate:.3f} [{f.low:.3f}, {f.high:.3f}] | "
                    f"{np.nanmedian(np.asarray(self.limit_risk)[sel]):.3e} | "
                    f"{np.median(np.asarray(self.final_risk)[sel]):.3e} | "
                    f"{np.median(np.asarray(self.num_steps)[sel]):.0f} | "
                    f"{np.median(np.asarray(self.t_stop)[sel]):.4g} |"
                )
            return out

        reasons = np.asarray(self.limit_reason)[limit == int(Limit.UNRESOLVED)]
        lines = [head.format("limit"), rule, *rows(Limit, limit), "",
                 head.format("outcome"), rule, *rows(Outcome, outcome)]  # fmt: skip
        if reasons.size:
            counts = ", ".join(
                f"{LimitReason(r).name} {int((reasons == r).sum())}" for r in np.unique(reasons)
            )
            lines += ["", f"Unresolved limits by reason: {counts}."]
        negative = int(
            np.sum((outcome == int(Outcome.DIVERGED)) & (np.asarray(self.final_risk) < 0))
        )
        if negative:
            note = "a risk must be non-negative: the risk function is wrong or unbounded below"
            lines += ["", f"{negative} DIVERGED member(s) ended with a negative risk ({note})."]
        return "\n".join(lines)

    def to_xarray(self):
        """An ``xarray.Dataset`` with dims ``trajectory``, ``time`` and ``param``."""
        import xarray as xr

        data = {name: ("trajectory", np.asarray(getattr(self, name))) for name in PER_TRAJECTORY}
        data.update(
            {name: (("trajectory", "time"), np.asarray(getattr(self, name))) for name in PER_TIME}
        )
        data["final_params"] = (("trajectory", "param"), np.asarray(self.final_params))
        frozen = self._frozen_params()
        if frozen is not None:
            data["frozen_params"] = (("trajectory", "frozen_param"), frozen)
        ds = xr.Dataset(
            data,
            coords={"time": np.asarray(self.ts), "trajectory": np.arange(len(self))},
            attrs={
                "gflow_jax_ensemble": 1,
                "dynamics": self.dynamics,
                "architecture": self.architecture,
                "stats": json.dumps(self.stats),
            },
        )
        for name, enum_cls in _CODES.items():
            ds[name].attrs["codes"] = ", ".join(f"{c.value}={c.name}" for c in enum_cls)
        return ds

    def _frozen_params(self) -> np.ndarray | None:
        """The members' frozen arrays, flattened ``(B, F)`` (``None`` if there are none)."""
        if self.models is None:
            return None
        frozen = eqx.filter(partition(self.models)[1], eqx.is_array)
        if not jax.tree_util.tree_leaves(frozen):
            return None
        return np.asarray(jax.vmap(lambda f: ravel_pytree(f)[0])(frozen))

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_xarray` to a netCDF file, atomically (no pickle).

        The file appears whole or not at all: a process killed during the write leaves
        the previous file (or none) and a temporary that the next save to `path` removes.
        It records the model's architecture (:func:`architecture`) and, when the
        members have frozen arrays, those arrays per member.

        **Arguments:**

        - `path`: the target netCDF file (``str`` or ``os.PathLike``); its directory is
          created if needed.
        """
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.fsdecode(path)
        else:
            raise TypeError(f"path must be a file name (str or os.PathLike), got {path!r}.")
        write_atomic(self.to_xarray(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, template: Any = None) -> Ensemble:
        """Read an ensemble written by :meth:`save`.

        **Arguments:**

        - `path`: the netCDF file.
        - `template`: a model of the same architecture (e.g. ``init(key)``); if given,
          `models` is rebuilt from `final_params` (and the stored frozen arrays) after
          checking that the stored architecture — class, dtype, every trainable and
          frozen array's path and shape, frozen fields, static settings — matches it; a
          mismatch is a ``ValueError`` listing what differs.

        **Returns:**

        The :class:`Ensemble`.
        """
        import xarray as xr

        if not isinstance(path, (str, bytes, os.PathLike)):
            raise TypeError(f"path must be a file name (str or os.PathLike), got {path!r}.")
        path = os.fsdecode(path)
        if os.path.isdir(path):
            raise IsADirectoryError(
                f"{path!r} is a directory; pass the .nc file written by Ensemble.save."
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no ensemble file at {path!r}.")
        if template is not None:
            from ._checks import check_model

            check_model("template", template)
        try:
            with xr.open_dataset(path, engine="h5netcdf") as ds:
                ds = ds.load()
        except Exception as e:  # h5py/xarray raise many types for a bad file
            size = os.path.getsize(path)
            raise ValueError(
                f"{path!r} ({size} bytes) is not a readable netCDF file "
                f"({type(e).__name__}: {e}); it is empty, truncated or of another format. "
                "Was it written completely by Ensemble.save?"
            ) from e
        names = PER_TRAJECTORY + PER_TIME + ("final_params",)
        missing = [n for n in names if n not in ds.variables and n not in KINK_FIELDS]
        if "gflow_jax_ensemble" not in ds.attrs or missing:
            raise ValueError(
                f"{path!r} is a netCDF file but not a gflow_jax ensemble written by "
                f"Ensemble.save (missing {missing[:5] or 'its marker attribute'})."
            )
        size = int(ds["outcome"].shape[0]) if "outcome" in ds.variables else 0
        untracked = {"sliding_time": np.full(size, np.nan)}
        fields = {
            name: jnp.asarray(
                ds[name].values
                if name in ds.variables
                else untracked.get(name, np.full(size, -1, np.int32))
            )
            for name in names
        }
        lengths = {name: int(v.shape[0]) if v.ndim else -1 for name, v in fields.items()}
        if len(set(lengths.values())) != 1 or int(ds["time"].size) != fields["risk"].shape[-1]:
            raise ValueError(f"{path!r} is inconsistent: its arrays have different lengths.")
        stored = str(ds.attrs.get("architecture", ""))
        models = None
        if template is not None:
            expected = architecture(template)
            try:
                stored_arch = json.loads(stored)
            except json.JSONDecodeError:
                raise ValueError(
                    f"{path!r} does not record its model's architecture, so a template "
                    "cannot be checked against it; load it without a template."
                ) from None
            differences = architecture_differences(stored_arch, expected)
            params, static = partition(template)
            flat, unravel = ravel_pytree(params)
            if not differences and flat.size != fields["final_params"].shape[1]:
                differences = [
                    f"parameter count: stored {fields['final_params'].shape[1]}, template "
                    f"{flat.size}"
                ]
            if differences:
                raise ValueError(
                    f"the template does not have the architecture stored in {path!r}:\n  "
                    + "\n  ".join(differences)
                    + "\nPass a model built like the ensemble's members (e.g. init(key))."
                )
            models = eqx.combine(jax.vmap(unravel)(fields["final_params"]), static)
            if "frozen_params" in ds.variables:
                frozen, rest = eqx.partition(static, eqx.is_array)
                _, unravel_frozen = ravel_pytree(frozen)
                members = jax.vmap(unravel_frozen)(jnp.asarray(ds["frozen_params"].values))
                models = eqx.combine(partition(models)[0], eqx.combine(members, rest))
        return cls(
            ts=jnp.asarray(ds["time"].values),
            models=models,
            dynamics=str(ds.attrs.get("dynamics", "")),
            architecture=stored,
            stats=json.loads(str(ds.attrs.get("stats", "{}"))),
            **fields,
        )
