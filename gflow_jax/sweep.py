"""Sweeps: a grid of settings, one result per cell, stored as soon as it exists.

:func:`run_sweep` evaluates ``cell(**settings)`` for every point of a grid (the product
of the value lists of a ``dict``), writes each cell's ``xarray.Dataset`` to its own
netCDF file in ``store`` *atomically* (write to a temporary file, then ``os.replace``),
and skips cells already on disk. A sweep killed half-way therefore loses at most the
cell in progress, and rerunning the same call resumes it. The combined result has one
dimension per setting (named after the grid's keys). Cells run one after another in
this process; each cell is typically a whole :func:`gflow_jax.run_ensemble`, which
already uses every local device.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._storage import write_atomic


def _scalar(value):
    if hasattr(value, "item"):
        value = value.item()
    if not isinstance(value, (int, float, str, bool)):
        raise TypeError(
            f"grid values must be ints, floats, strings or bools, got {type(value).__name__}."
        )
    return value


def cell_filename(settings: Mapping[str, Any]) -> str:
    """A stable file name for one cell: readable settings plus a short hash."""
    text = json.dumps({k: settings[k] for k in sorted(settings)}, sort_keys=True)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    readable = "_".join(f"{k}={settings[k]}" for k in settings)
    readable = "".join(c if c.isalnum() or c in "=._-" else "-" for c in readable)[:80]
    return f"cell_{readable}_{digest}.nc"


def run_sweep(
    grid: Mapping[str, Sequence[Any]],
    cell: Callable[..., Any],
    store: str | os.PathLike | None = None,
    *,
    progress: bool = False,
):
    """Evaluate ``cell(**settings)`` on every point of ``grid`` and combine the results.

    - ``grid``: ``{name: [values...]}``; the cells are the Cartesian product, in order.
    - ``cell``: returns an ``xarray.Dataset`` (without the grid's dims) for one setting.
    - ``store``: a directory; each finished cell is saved there at once and reused on
      a rerun (``None``: keep everything in memory only).

    Returns an ``xarray.Dataset`` with the grid's names as leading dimensions. The
    store also gets ``sweep.json`` (the grid), so a mismatched rerun is refused.
    """
    import xarray as xr

    if not isinstance(grid, Mapping) or not grid:
        raise ValueError("grid must be a non-empty dict of name -> list of values.")
    names = list(grid)
    values = {k: [_scalar(v) for v in grid[k]] for k in names}
    for k, vs in values.items():
        if not vs or len(set(vs)) != len(vs):
            raise ValueError(f"grid[{k!r}] must be a non-empty list without duplicates.")
    if store is not None:
        store = os.fspath(store)
        os.makedirs(store, exist_ok=True)
        manifest = os.path.join(store, "sweep.json")
        if os.path.exists(manifest):
            with open(manifest) as fh:
                old = json.load(fh)
            if old != values:
                raise ValueError(
                    f"{store} holds a sweep over another grid ({old}); use a new store "
                    "directory or delete the old one."
                )
        else:
            with open(manifest, "w") as fh:
                json.dump(values, fh)
    points = list(itertools.product(*(values[k] for k in names)))
    iterator = points
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(points, desc="sweep")
    pieces = []
    for point in iterator:
        settings = dict(zip(names, point, strict=True))
        path = None if store is None else os.path.join(store, cell_filename(settings))
        if path is not None and os.path.exists(path):
            with xr.open_dataset(path, engine="h5netcdf") as ds:
                result = ds.load()
        else:
            result = cell(**settings)
            if not isinstance(result, xr.Dataset):
                raise TypeError("cell(...) must return an xarray.Dataset.")
            if path is not None:
                write_atomic(result, path)
        pieces.append(result.expand_dims({k: [v] for k, v in settings.items()}))
    return xr.combine_by_coords(pieces, combine_attrs="drop_conflicts")
