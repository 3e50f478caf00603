"""Atomic writes: a file appears whole or not at all (netCDF via h5netcdf, never pickle).

A write goes to a temporary file next to the target, is flushed to disk (``fsync``),
renamed over the target (``os.replace``, atomic on POSIX) and the directory entry is
flushed too. A process killed mid-write leaves the target as it was (old version or
absent) and a temporary ``<target>.<host>.<pid>.<random>.tmp``; the next write to the
same target removes the temporaries of writers that are no longer running
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable

#: Suffix of every temporary file written here.
TMP_SUFFIX = ".tmp"


def _host() -> str:
    return socket.gethostname().replace(".", "_") or "host"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: running
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporaries of killed writes to `path` (same host, writer not running).

    **Arguments:**

    - `path`: the target file whose temporaries ``<name>.<host>.<pid>.<random>.tmp``
      (in its directory) are looked for.

    **Returns:**

    The removed paths. Temporaries of live writers, of other hosts (a shared file
    system) and files of other names are left alone.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f"{os.path.basename(path)}.{_host()}."
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TMP_SUFFIX)):
            continue
        pid = name[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or _pid_running(int(pid)):
            continue
        try:
            os.remove(os.path.join(directory, name))
            removed.append(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    return removed


def _check_target(path: str) -> str:
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory; pass a file name such as run.nc.")
    directory = os.path.dirname(os.path.abspath(path))
    parent = directory
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise NotADirectoryError(
            f"cannot write {path!r}: {parent!r} is a file, not a directory; choose another path."
        )
    os.makedirs(directory, exist_ok=True)
    return directory


def write_file_atomic(write: Callable[[str], None], path: str | os.PathLike) -> None:
    """Write `path` atomically with ``write(tmp_path)`` (any format).

    **Arguments:**

    - `write`: writes the whole content to the temporary path it is given.
    - `path`: the target file; its directory is created if needed. A directory, or a
      path below a file, is an error.
    """
    path = os.fspath(path)
    directory = _check_target(path)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{os.path.basename(path)}.{_host()}.{os.getpid()}.", suffix=TMP_SUFFIX,
        dir=directory,
    )  # fmt: skip
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # the data is on disk before the name points to it
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:
            dir_fd = os.open(directory, os.O_RDONLY)
        except OSError:  # e.g. a platform without directory handles
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write a text file (e.g. a JSON manifest) atomically; see :func:`write_file_atomic`."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_file_atomic(write, path)


def write_atomic(dataset, path: str | os.PathLike) -> None:
    """Write an ``xarray.Dataset`` to `path` atomically (netCDF via h5netcdf).

    **Arguments:**

    - `dataset`: the ``xarray.Dataset``.
    - `path`: the target file; its directory is created if needed. A directory is an
      error.
    """
    write_file_atomic(lambda tmp: dataset.to_netcdf(tmp, engine="h5netcdf"), path)
