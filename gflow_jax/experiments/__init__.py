"""Named, reproducible studies: the registry behind the ``gflow`` command.

Each study is a module of this package with

- ``NAME`` and ``DESCRIPTION`` (one line);
- a frozen config dataclass (every field documented, with a default) and ``PRESETS``
  per scale (``"tiny"``: seconds, for tests; ``"laptop"``: a few minutes on 2 CPU cores;
  ``"paper"``: the full study);
- ``run(config, store=None, *, progress=False, overwrite=False) -> xarray.Dataset``
  (resumable through :func:`gflow_jax.run_sweep` when `store` is a directory);
- ``report(dataset, outdir) -> list[str]`` (PNG and PDF figures, a Markdown table).

:data:`STUDIES` maps the names to their modules; :func:`load` imports one.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: The registered studies: name -> module (imported on demand by :func:`load`).
STUDIES = {
    "demo": "gflow_jax.experiments.demo",
    "shallow_relu": "gflow_jax.experiments.shallow_relu",
    "implicit_width": "gflow_jax.experiments.implicit_width",
    "deep_certificate": "gflow_jax.experiments.deep_certificate",
    "teacher_student": "gflow_jax.experiments.teacher_student",
}

#: The scales every study has a preset for.
SCALES = ("tiny", "laptop", "paper")


def load(name: str) -> ModuleType:
    """The module of the study `name` (a key of :data:`STUDIES`)."""
    if name not in STUDIES:
        raise KeyError(f"unknown study {name!r}; the studies are: {', '.join(STUDIES)}.")
    return importlib.import_module(STUDIES[name])
