"""Atomic writes: a file appears whole or not at all (netCDF via h5netcdf, never pickle)."""

from __future__ import annotations

import os
import tempfile


def write_atomic(dataset, path: str | os.PathLike) -> None:
    """Write an ``xarray.Dataset`` to `path` atomically (temporary file, then ``os.replace``).

    **Arguments:**

    - `dataset`: the ``xarray.Dataset``.
    - `path`: the target file; its directory is created if needed. A directory is an
      error.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory; pass a file name such as run.nc.")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".nc.tmp", dir=directory)
    os.close(fd)
    try:
        dataset.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
