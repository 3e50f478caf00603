"""Sweeps that lose nothing: a grid of settings, one result per cell, stored as it is made.

:func:`run_sweep` evaluates ``cell(**settings)`` for every point of a grid (the product
of the value lists of a ``dict``) and combines the ``xarray.Dataset`` results into one,
with one leading dimension per grid name. With a ``store`` directory:

- every finished piece of work is written at once to its own netCDF file, atomically
  (:func:`gflow_jax._storage.write_atomic`: a temporary file, then ``os.replace``), and
  a rerun skips what is stored, so a killed sweep resumes where it stopped;
- with ``members=`` and ``chunk_size=``, a cell's members (e.g. the initialisations of
  an ensemble) are split into chunks of consecutive member indices, each chunk its own
  stored piece: a kill loses at most the chunk in flight, not the whole cell;
- the manifest ``sweep.json`` records the grid, the full configuration of the cells
  (``config=``: every setting that is not on the grid), the chunking and the package
  versions; a rerun with another grid or configuration is refused with a message
  naming the differing keys, unless ``overwrite=True`` (which discards the old results);
- every stored file carries the settings, member range and configuration digest of its
  piece; a truncated, zero-length, unreadable or swapped file is detected on reading,
  removed with a warning and recomputed, never read as data;
- temporary files left by a killed write (``*.tmp``) are removed when the sweep starts.

With ``executor=`` a ``dask.distributed.Client``, the missing pieces become tasks that the
workers compute and write into the (shared) store; a task lost with its worker is rerun.
A store is meant for one sweep at a time (no locking between concurrent sweeps).
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import importlib.metadata
import itertools
import json
import math
import os
import platform
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._storage import write_atomic

__all__ = ["SweepInfo", "cell_filename", "run_sweep", "sweep_info"]

#: The manifest's format tag.
FORMAT = "gflow_jax.sweep/2"
#: The manifest's file name in a store.
MANIFEST = "sweep.json"
#: The attribute of every stored piece that identifies it.
TAG = "gflow_sweep_piece"
_PACKAGES = ("jax", "jaxlib", "diffrax", "equinox", "optax", "numpy", "xarray", "h5netcdf")


# ----------------------------------------------------------------------------------
# Settings, file names, manifest
# ----------------------------------------------------------------------------------


def _scalar(name: str, value):
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"grid[{name!r}] values must be finite, got {value!r}.")
    if not isinstance(value, (int, float, str, bool)):
        raise TypeError(
            f"grid[{name!r}] values must be ints, floats, strings or bools, "
            f"got {type(value).__name__}."
        )
    return value


def _canonical(value) -> Any:
    """The JSON round trip of `value` (tuples become lists), or a clear error."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"the sweep configuration must be JSON-serialisable (numbers, strings, bools, "
            f"lists, dicts): {e}"
        ) from None


def _digest(value) -> str:
    return hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


def cell_filename(settings: Mapping[str, Any], members: tuple[int, int] | None = None) -> str:
    """A stable file name for one stored piece: readable settings plus a short hash.

    **Arguments:**

    - `settings`: the cell's grid settings.
    - `members`: ``(start, stop)`` of a chunk of members, or ``None`` for a whole cell.

    **Returns:**

    ``cell_<settings>_<hash>.nc`` or ``cell_<settings>_<hash>.m<start>-<stop>.nc``.
    """
    text = json.dumps({k: settings[k] for k in sorted(settings)}, sort_keys=True)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    readable = "_".join(f"{k}={settings[k]}" for k in settings)
    readable = "".join(c if c.isalnum() or c in "=._-" else "-" for c in readable)[:80]
    chunk = "" if members is None else f".m{members[0]:06d}-{members[1]:06d}"
    return f"cell_{readable}_{digest}{chunk}.nc"


def package_versions() -> dict[str, str]:
    """Versions of Python, gflow_jax and the numerical packages (recorded in manifests)."""
    import gflow_jax

    out = {"python": platform.python_version(), "gflow_jax": gflow_jax.__version__}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


class _JSONText:
    """Adapter so that :func:`write_atomic` (the library's one atomic write) writes JSON."""

    def __init__(self, value):
        self.text = json.dumps(value, indent=2) + "\n"  # key order = grid order

    def to_netcdf(self, path, engine=None):
        del engine
        with open(path, "w") as fh:
            fh.write(self.text)


def write_json(value, path: str | os.PathLike) -> None:
    """Write `value` as JSON to `path`, atomically (through :func:`write_atomic`)."""
    write_atomic(_JSONText(value), path)


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON values, one line per key."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name}: not in the store, now {new[key]!r}")
            elif key not in new:
                out.append(f"{name}: stored {old[key]!r}, now absent")
            else:
                out += differences(old[key], new[key], name)
        return out
    if old != new:
        return [f"{prefix or 'value'}: stored {old!r}, now {new!r}"]
    return []


def _read_manifest(path: str) -> dict | None:
    """The stored manifest, ``None`` if absent or unreadable (with a warning)."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as fh:
            old = json.load(fh)
    except (OSError, ValueError) as e:
        warnings.warn(
            f"{path} is unreadable ({e}); it is rewritten. Stored pieces are still checked "
            "one by one against the configuration they were made with.",
            stacklevel=3,
        )
        return None
    if isinstance(old, dict) and "format" not in old:  # version 1 stored the grid only
        old = {"format": "gflow_jax.sweep/1", "grid": old}
    return old


# ----------------------------------------------------------------------------------
# Pieces of work
# ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Piece:
    """One stored unit of work: a cell, or a chunk ``[start, stop)`` of its members."""

    index: int  # position of the cell in the grid's product order
    settings: dict
    members: tuple[int, int] | None
    filename: str
    tag: str


def _pieces(names, values, members, chunk_size, digest) -> list[_Piece]:
    out = []
    for index, point in enumerate(itertools.product(*(values[k] for k in names))):
        settings = dict(zip(names, point, strict=True))
        spans = [None]
        if members is not None:
            spans = [(a, min(a + chunk_size, members)) for a in range(0, members, chunk_size)]
        for span in spans:
            tag = json.dumps(
                {"settings": settings, "members": span, "config": digest}, sort_keys=True
            )
            out.append(_Piece(index, settings, span, cell_filename(settings, span), tag))
    return out


def _read_piece(path: str, piece: _Piece):
    """A stored piece, or ``None`` (absent; or unreadable/foreign: removed, with a warning)."""
    import xarray as xr

    if not os.path.exists(path):
        return None
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except Exception as e:  # h5py/xarray raise many types for a damaged file
        problem = f"is unreadable ({type(e).__name__}: {str(e)[:120]}), e.g. truncated"
    else:
        stored = ds.attrs.get(TAG)
        if stored == piece.tag:
            del ds.attrs[TAG]
            return ds
        problem = f"holds another piece ({stored!r}, expected {piece.tag!r})"
    warnings.warn(f"{path} {problem}; it is removed and recomputed.", stacklevel=3)
    os.remove(path)
    return None


def _compute_piece(cell, piece: _Piece, member_dim: str, grid_names, path: str | None):
    """Run one piece of work; write it to `path` (atomically) if given; return it."""
    import numpy as np
    import xarray as xr

    kwargs = dict(piece.settings)
    if piece.members is not None:
        kwargs["members"] = range(*piece.members)
    result = cell(**kwargs)
    if not isinstance(result, xr.Dataset):
        raise TypeError(
            f"cell(...) must return an xarray.Dataset, got {type(result).__name__} "
            f"for settings {piece.settings}."
        )
    clash = [k for k in grid_names if k in result.dims or k in result.coords]
    if clash:
        raise ValueError(
            f"cell(...) returned a dataset that already uses the grid name(s) {clash} as "
            "dimension or coordinate; the sweep adds one dimension per grid name, so rename "
            "them in the cell's output or in the grid."
        )
    if piece.members is not None:
        start, stop = piece.members
        if result.sizes.get(member_dim) != stop - start:
            raise ValueError(
                f"cell(..., members=range({start}, {stop})) must return a dataset with "
                f"dimension {member_dim!r} of length {stop - start}, got sizes "
                f"{dict(result.sizes)}."
            )
        result = result.assign_coords({member_dim: np.arange(start, stop)})
    if path is not None:
        write_atomic(result.assign_attrs({TAG: piece.tag}), path)
    return result


def _combine_cell(parts, member_dim):
    import xarray as xr

    if len(parts) == 1:
        return parts[0]
    return xr.concat(
        parts,
        dim=member_dim,
        data_vars="minimal",
        coords="minimal",
        compat="equals",
        join="outer",
        combine_attrs="drop_conflicts",
    )


# ----------------------------------------------------------------------------------
# run_sweep
# ----------------------------------------------------------------------------------


def run_sweep(
    grid: Mapping[str, Sequence[Any]],
    cell: Callable[..., Any],
    store: str | os.PathLike | None = None,
    *,
    config: Mapping[str, Any] | None = None,
    members: int | None = None,
    chunk_size: int | None = None,
    member_dim: str = "member",
    overwrite: bool = False,
    progress: bool = False,
    executor: Any = "local",
):
    """Evaluate ``cell(**settings)`` on every point of ``grid`` and combine the results.

    **Arguments:**

    - `grid`: ``{name: [values...]}`` (ints, floats, strings or bools, no duplicates);
      the cells are the Cartesian product, in order.
    - `cell`: ``cell(**settings) -> xarray.Dataset`` for one point of the grid (without
      the grid's names as dimensions). With `members`, it is called as
      ``cell(**settings, members=range(start, stop))`` and returns the results of those
      members along dimension `member_dim`.
    - `store`: a directory (created if needed); every finished piece is saved there at
      once and reused on a rerun. ``None``: keep everything in memory.
    - `config`: the cells' full configuration (JSON-serialisable: every setting that is
      not on the grid, e.g. ``dataclasses.asdict(study_config)``), recorded in the
      manifest; a rerun with another `config` is refused.
    - `members`, `chunk_size`: split each cell's `members` members into chunks of
      `chunk_size` consecutive indices (default: one chunk), each stored on its own.
    - `member_dim`: the dimension along which chunks are concatenated.
    - `overwrite`: if the store holds a sweep with another grid or configuration,
      delete its results and start afresh instead of refusing.
    - `progress`: a tqdm bar over the pieces of work.
    - `executor`: ``"local"`` (default: the pieces run one after another in this
      process) or a ``dask.distributed.Client``: every missing piece becomes a task that
      a worker computes and writes into `store` (which must be shared by the workers);
      a task lost with its worker is rerun by Dask, and the combined dataset is the same
      as a local run's (``pip install 'gflow_jax[distributed]'``).

    **Returns:**

    An ``xarray.Dataset`` with the grid's names as leading dimensions (in the grid's
    order); with `members`, the chunks of a cell are concatenated along `member_dim`
    (coordinate ``0 … members − 1``). The result is the same whether the sweep ran in
    one go or was killed and resumed any number of times.
    """
    import xarray as xr

    if not isinstance(grid, Mapping) or not grid:
        raise ValueError("grid must be a non-empty dict of name -> list of values.")
    if not callable(cell):
        raise TypeError(
            f"cell must be a callable cell(**settings) -> xarray.Dataset, got {cell!r}."
        )
    names = [str(k) for k in grid]
    values = {}
    for k in names:
        vs = grid[k]
        if isinstance(vs, (str, bytes)) or not isinstance(vs, Sequence | range):
            try:
                vs = list(vs)
            except TypeError:
                raise TypeError(f"grid[{k!r}] must be a list of values, got {vs!r}.") from None
        values[k] = [_scalar(k, v) for v in vs]
        if not values[k] or len(set(values[k])) != len(values[k]):
            raise ValueError(f"grid[{k!r}] must be a non-empty list without duplicates.")
    if members is not None:
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ValueError(f"members must be a positive int, got {members!r}.")
        chunk_size = members if chunk_size is None else chunk_size
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}.")
    elif chunk_size is not None:
        raise ValueError("chunk_size needs members= (the number of members of each cell).")
    if member_dim in names:
        raise ValueError(f"member_dim {member_dim!r} is also a grid name; rename one.")
    settings_json = {
        "grid": values,
        "config": _canonical(dict(config) if config is not None else {}),
        "members": members,
        "chunk_size": chunk_size,
        "member_dim": member_dim,
    }
    digest = _digest({k: v for k, v in settings_json.items() if k != "grid"})
    pieces = _pieces(names, values, members, chunk_size, digest)

    if store is not None:
        store = os.fspath(store)
        if os.path.exists(store) and not os.path.isdir(store):
            raise NotADirectoryError(
                f"store {store!r} is a file; pass a directory (it is created if needed)."
            )
        os.makedirs(store, exist_ok=True)
        _prepare_store(store, settings_json, overwrite)

    results: list[list] = [[] for _ in range(math.prod(len(values[k]) for k in names))]
    if executor is not None and executor != "local":
        if store is None:
            raise ValueError("a Dask executor needs a store directory shared by the workers.")
        _run_on_dask(executor, cell, pieces, member_dim, names, store, progress)
    todo = pieces
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(pieces, desc="sweep", unit="piece")
    for piece in todo:
        path = None if store is None else os.path.join(store, piece.filename)
        result = None if path is None else _read_piece(path, piece)
        if result is None:
            result = _compute_piece(cell, piece, member_dim, names, path)
            if path is not None:  # the stored file is the result: resumed runs read it too
                result = _read_piece(path, piece)
        results[piece.index].append(result)
    cells = [
        _combine_cell(parts, member_dim).expand_dims(
            {k: [v] for k, v in zip(names, point, strict=True)}
        )
        for parts, point in zip(
            results, itertools.product(*(values[k] for k in names)), strict=True
        )
    ]
    shape = [len(values[k]) for k in names]
    nested: Any = cells
    for size in reversed(shape[1:]):
        nested = [nested[i : i + size] for i in range(0, len(nested), size)]
    return xr.combine_nested(nested, concat_dim=names, join="outer", combine_attrs="drop_conflicts")


def _dask_piece(cell, piece: _Piece, member_dim: str, names, path: str, x64) -> str:
    """A Dask task: compute one piece (unless a previous attempt stored it) and write it."""
    if x64 is not None:
        import jax

        jax.config.update("jax_enable_x64", x64)
    if not _has_piece(path, piece):
        _compute_piece(cell, piece, member_dim, names, path)
    return piece.filename


def _has_piece(path: str, piece: _Piece) -> bool:
    """Whether `path` holds `piece` (reads the identifying attribute only)."""
    import h5py

    if not os.path.exists(path):
        return False
    try:
        with h5py.File(path, "r") as fh:
            tag = fh.attrs.get(TAG)
    except Exception:  # a damaged file is not the piece
        return False
    return (tag.decode() if isinstance(tag, bytes) else tag) == piece.tag


def _run_on_dask(client, cell, pieces, member_dim, names, store, progress) -> None:
    """Compute the missing pieces as tasks on a ``dask.distributed.Client``."""
    import sys

    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - the optional extra
        raise ImportError("executor needs Dask: pip install 'gflow_jax[distributed]'.") from None
    if not isinstance(client, Client):
        raise TypeError(f"executor must be 'local' or a dask.distributed.Client, got {client!r}.")
    jax = sys.modules.get("jax")
    x64 = bool(jax.config.jax_enable_x64) if jax is not None else None
    missing = [p for p in pieces if not _has_piece(os.path.join(store, p.filename), p)]
    futures = [
        client.submit(
            _dask_piece,
            cell,
            p,
            member_dim,
            names,
            os.path.join(store, p.filename),
            x64,
            pure=False,
        )  # fmt: skip
        for p in missing
    ]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(futures), desc="sweep (dask)", unit="piece")
    try:
        for future in as_completed(futures):
            future.result()  # re-raises a task's error here
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def _prepare_store(store: str, settings_json: dict, overwrite: bool) -> None:
    """Check or write the manifest; remove stale temporary files."""
    for tmp in glob.glob(os.path.join(glob.escape(store), "*.tmp")):
        os.remove(tmp)
    path = os.path.join(store, MANIFEST)
    old = _read_manifest(path)
    if old is not None:
        stored = {k: old.get(k) for k in settings_json}
        if old.get("format") == "gflow_jax.sweep/1":
            stored = {**settings_json, "grid": old["grid"]}
        diff = differences(stored, settings_json)
        if diff and not overwrite:
            raise ValueError(
                f"{store} holds a sweep with another configuration:\n  "
                + "\n  ".join(diff)
                + "\nUse a new store directory, or overwrite=True (gflow run --overwrite) to "
                "discard the stored results."
            )
        if diff:
            for f in glob.glob(os.path.join(glob.escape(store), "cell_*.nc")):
                os.remove(f)
        elif old.get("format") == FORMAT:
            return
    manifest = {
        "format": FORMAT,
        **settings_json,
        "versions": package_versions(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_json(manifest, path)


# ----------------------------------------------------------------------------------
# What a store holds
# ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepInfo:
    """What a sweep store holds (:func:`sweep_info`).

    - `manifest`: the parsed ``sweep.json`` (grid, config, chunking, versions, created).
    - `done`, `left`: the stored pieces and those still to compute, as
      ``(settings, members)`` pairs (``members`` is ``(start, stop)`` or ``None``).
    - `stale`: temporary files left by a killed write (removed by the next run).
    """

    manifest: dict
    done: list
    left: list
    stale: list

    @property
    def cells_done(self) -> int:
        """Cells whose every piece is stored."""
        left = {json.dumps(s, sort_keys=True) for s, _ in self.left}
        cells = {json.dumps(s, sort_keys=True) for s, _ in self.done + self.left}
        return len(cells - left)

    @property
    def cells_total(self) -> int:
        return len({json.dumps(s, sort_keys=True) for s, _ in self.done + self.left})


def sweep_info(store: str | os.PathLike) -> SweepInfo:
    """Read a store's manifest and list its pieces done and left (reads no data).

    **Arguments:**

    - `store`: a directory written by :func:`run_sweep`.

    **Returns:**

    A :class:`SweepInfo`.
    """
    store = os.fspath(store)
    path = os.path.join(store, MANIFEST)
    manifest = _read_manifest(path)
    if manifest is None or manifest.get("format") != FORMAT:
        raise FileNotFoundError(f"{store!r} has no readable {MANIFEST} of a gflow_jax sweep.")
    grid = manifest["grid"]
    rest = {k: manifest[k] for k in ("config", "members", "chunk_size", "member_dim")}
    pieces = _pieces(list(grid), grid, manifest["members"], manifest["chunk_size"], _digest(rest))
    done, left = [], []
    for piece in pieces:
        ok = _has_piece(os.path.join(store, piece.filename), piece)
        (done if ok else left).append((piece.settings, piece.members))
    stale = sorted(glob.glob(os.path.join(glob.escape(store), "*.tmp")))
    return SweepInfo(manifest=manifest, done=done, left=left, stale=stale)
