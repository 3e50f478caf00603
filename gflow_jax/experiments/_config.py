"""Study configurations: typed dataclasses, loaded from TOML and ``key=value`` overrides.

Every study has a frozen dataclass of settings (each with a documented default) and
presets per scale. :func:`build_config` applies a mapping of overrides to a preset,
converting TOML values to the field's declared type and naming the key in every error.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import typing
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ConfigError",
    "build_config",
    "config_dict",
    "load_toml",
    "parse_assignments",
    "resolve_devices",
]


class ConfigError(ValueError):
    """A bad configuration key or value (the message names the key)."""


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return {int: "int", float: "float", str: "string", bool: "bool"}.get(tp, str(tp))


def _coerce(key: str, tp, value):
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config key {key!r}: expected {_type_name(tp)}, got {value!r}.")
    if origin is tuple:
        (elem, *_rest) = typing.get_args(tp)
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        try:
            return tuple(_coerce(key, elem, v) for v in items)
        except ConfigError:
            raise bad from None
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "infinity"):
            return math.inf
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    return value


def build_config(cls, base=None, updates: Mapping[str, Any] | None = None):
    """A `cls` instance: `base` (default ``cls()``) with `updates` applied.

    **Arguments:**

    - `cls`: the study's config dataclass.
    - `base`: the preset to start from.
    - `updates`: ``{field: value}`` (TOML values: lists become tuples, ints floats
      where the field is a float).

    **Returns:**

    The validated config. Raises :class:`ConfigError` naming an unknown key (with the
    valid ones) or a bad value.
    """
    base = cls() if base is None else base
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    changes = {}
    for key, value in (updates or {}).items():
        if key not in fields:
            raise ConfigError(
                f"unknown config key {key!r} for {cls.__name__}; valid keys: {', '.join(fields)}."
            )
        changes[key] = _coerce(key, hints[key], value)
    try:
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad config value ({', '.join(changes) or 'preset'}): {e}") from None


def config_dict(config) -> dict:
    """The config as a JSON-able dict (tuples become lists)."""
    return {
        f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v
        for f in dataclasses.fields(config)
    }


def load_toml(path: str | os.PathLike) -> dict:
    """The settings in a TOML file: top-level keys, or the table ``[config]`` if present."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {os.fspath(path)!r} does not exist.") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {os.fspath(path)!r} is not valid TOML: {e}") from None
    return dict(data.get("config", data))


def parse_assignments(items: Iterable[str]) -> dict:
    """``["t1=100", "widths=[1, 2]", "name=abc"]`` → a dict (values parsed as TOML; a value
    that is not TOML is a string)."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}.")
        try:
            out[key] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = text.strip()
    return out


def resolve_devices(spec: str | None) -> list | None:
    """The JAX devices named by a ``--devices`` spec (resolved in the process that runs).

    **Arguments:**

    - `spec`: ``None`` or ``""`` (the default device), ``"all"`` (every device JAX
      sees), ``"N"`` (the first ``N`` devices), a platform (``"cpu"``, ``"gpu"``,
      ``"tpu"``: all of its devices) or a platform with indices (``"gpu:0,2"``).

    **Returns:**

    A list of ``jax.Device`` for :func:`gflow_jax.run_ensemble` (``devices=``), or
    ``None`` for its default. Raises :class:`ConfigError` for a spec that names no
    device of this machine.
    """
    if spec is None or not str(spec).strip():
        return None
    import jax

    text = str(spec).strip().lower()
    bad = f"--devices {spec!r}: use all, a count N, a platform (cpu, gpu, tpu) or gpu:0,1"
    if text == "all":
        return list(jax.devices())
    if text.isdigit():
        n, available = int(text), jax.devices()
        if not 1 <= n <= len(available):
            raise ConfigError(f"{bad}; this process sees {len(available)} device(s).")
        return list(available[:n])
    platform, _, indices = text.partition(":")
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        raise ConfigError(f"{bad}; JAX has no {platform!r} backend here.") from None
    if not indices:
        return list(devices)
    try:
        picked = [devices[int(i)] for i in indices.split(",")]
    except (ValueError, IndexError):
        raise ConfigError(f"{bad}; {platform} has {len(devices)} device(s).") from None
    if len(set(picked)) != len(picked):
        raise ConfigError(f"{bad}; a device is named twice.")
    return picked
