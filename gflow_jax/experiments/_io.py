"""Shared output of the studies: netCDF, figures (PNG + PDF) and Markdown in one folder."""

from __future__ import annotations

import os


def save_figure(fig, outdir: str | os.PathLike, name: str) -> list[str]:
    """Save a matplotlib figure as ``{name}.png`` and ``{name}.pdf`` in `outdir`."""
    outdir = os.fspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    paths = [os.path.join(outdir, f"{name}.{ext}") for ext in ("png", "pdf")]
    for path in paths:
        fig.savefig(path, dpi=120)
    return paths


def write_text(text: str, outdir: str | os.PathLike, filename: str) -> str:
    """Write `text` (plus a final newline) to ``outdir/filename``; returns the path."""
    outdir = os.fspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, filename)
    with open(path, "w") as fh:
        fh.write(text + "\n")
    return path


#: Outcome and limit codes, stored as ``int8`` in the study datasets.
_CODES = ("outcome", "limit", "limit_reason")


def per_member_dataset(ensemble, fields: tuple[str, ...]):
    """The per-member fields of an ensemble as an ``xarray.Dataset`` along ``member``.

    **Arguments:**

    - `ensemble`: a :class:`gflow_jax.Ensemble`.
    - `fields`: names of its per-trajectory fields (e.g. ``"limit"``, ``"final_risk"``).

    **Returns:**

    A dataset with one ``member`` variable per field; the codes ``outcome``, ``limit``
    and ``limit_reason`` as ``int8``.
    """
    import numpy as np
    import xarray as xr

    values = {name: np.asarray(getattr(ensemble, name)) for name in fields}
    for name in _CODES:
        if name in values:
            values[name] = values[name].astype(np.int8)
    return xr.Dataset({name: ("member", v) for name, v in values.items()})
