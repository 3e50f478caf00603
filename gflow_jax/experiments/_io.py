"""Shared output of the studies: netCDF + figure + Markdown table in one folder."""

from __future__ import annotations

import os
from collections.abc import Callable


def write_study(dataset, out: str | os.PathLike, name: str, plot: Callable, table: Callable) -> str:
    """Write ``{name}.nc`` (atomically), ``{name}.png`` and ``{name}.md`` into ``out``.

    Returns the Markdown table.
    """
    from ..sweep import write_atomic

    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    write_atomic(dataset, os.path.join(out, f"{name}.nc"))
    plot(dataset, os.path.join(out, f"{name}.png"))
    md = table(dataset)
    with open(os.path.join(out, f"{name}.md"), "w") as fh:
        fh.write(md + "\n")
    return md
