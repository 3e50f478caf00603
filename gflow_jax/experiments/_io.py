"""Shared output of the studies: netCDF, figures (PNG + PDF) and Markdown in one folder."""

from __future__ import annotations

import os
from collections.abc import Callable

from .._storage import write_atomic


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


def write_study(dataset, out: str | os.PathLike, name: str, plot: Callable, table: Callable) -> str:
    """Write ``{name}.nc`` (atomically), ``{name}.png`` and ``{name}.md`` into ``out``.

    Returns the Markdown table.
    """
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    write_atomic(dataset, os.path.join(out, f"{name}.nc"))
    plot(dataset, os.path.join(out, f"{name}.png"))
    md = table(dataset)
    write_text(md, out, f"{name}.md")
    return md
