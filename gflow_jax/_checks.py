"""Input validation shared by the public API (clear errors at the boundary).

Every constructor of the library validates its arguments with these helpers, so an error
names the argument, says what was expected and what was given. Checks of *values* are
skipped for JAX tracers (a model built under ``jit``/``vmap``), checks of types, shapes
and dtypes are not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Real

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True unless ``x`` is a JAX tracer (then value checks must be skipped)."""
    return not isinstance(x, jax.core.Tracer)


def _is_real_scalar(value) -> bool:
    if isinstance(value, bool) or isinstance(value, np.bool_):
        return False
    if isinstance(value, Real):
        return True
    if isinstance(value, (np.ndarray, jax.Array)):
        return value.shape == () and (
            np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)
        )
    return False


def positive_float(name: str, value, *, allow_inf: bool = False, hint: str = "") -> float:
    """Validate a positive (finite unless ``allow_inf``) real number.

    **Arguments:**

    - `name`: the argument's name (for the message).
    - `value`: a Python/NumPy real or a 0-d array; a tracer is returned unchecked.
    - `allow_inf`: accept ``+inf``.
    - `hint`: appended to the error message.

    **Returns:**

    ``float(value)`` (or the tracer).
    """
    if isinstance(value, bool) or not isinstance(value, (Real, np.ndarray, jax.Array)):
        raise TypeError(f"{name} must be a positive number, got {value!r}.")
    if not is_concrete(value):
        return value
    v = float(np.asarray(value))
    if math.isnan(v) or v <= 0 or (math.isinf(v) and not allow_inf):
        raise ValueError(
            f"{name} must be a {'' if allow_inf else 'finite '}positive number, "
            f"got {v}.{(' ' + hint) if hint else ''}"
        )
    return v


def positive_int(name: str, value, *, minimum: int = 1, hint: str = "") -> int:
    """Validate an integer ``>= minimum`` (``bool`` is rejected); returns ``int(value)``.

    `hint` is appended to the message of a too small value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.{(' ' + hint) if hint else ''}")
    return int(value)


def real_float(name: str, value, *, finite: bool = True, hint: str = "") -> float:
    """Validate a *concrete* real scalar (a static setting, never traced).

    **Arguments:**

    - `name`: the argument's name.
    - `value`: a Python/NumPy real or a concrete 0-d array.
    - `finite`: reject ``±inf`` and NaN.
    - `hint`: appended to the error message.

    **Returns:**

    ``float(value)``.
    """
    if not _is_real_scalar(value):
        raise TypeError(f"{name} must be a concrete real number, got {value!r}.")
    if not is_concrete(value):
        raise TypeError(
            f"{name} must be a concrete real number (a static setting fixed at "
            "construction), got a traced value."
        )
    v = float(np.asarray(value))
    if finite and not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v}.{(' ' + hint) if hint else ''}")
    return v


def nonneg_float(name: str, value, *, hint: str = "") -> float:
    """Validate a concrete finite real number ``>= 0``; returns it as a ``float``."""
    v = real_float(name, value, finite=False)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(
            f"{name} must be a finite number >= 0, got {v}.{(' ' + hint) if hint else ''}"
        )
    return v


def unit_interval_float(name: str, value, *, include_zero: bool = False) -> float:
    """Validate a concrete real number in ``(0, 1)`` (``[0, 1)`` with `include_zero`)."""
    v = real_float(name, value, finite=False)
    ok = (0 <= v < 1) if include_zero else (0 < v < 1)
    if not ok:
        raise ValueError(f"{name} must be in {'[0, 1)' if include_zero else '(0, 1)'}, got {v}.")
    return v


def one_of(name: str, value, choices: Sequence[str]) -> str:
    """Validate that `value` is one of the strings `choices`; returns it."""
    if not isinstance(value, str) or value not in choices:
        quoted = [repr(c) for c in choices]
        listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
        raise ValueError(f"{name} must be {listed}, got {value!r}.")
    return value


def int_sequence(name: str, value, *, min_len: int = 1, minimum: int = 1) -> tuple[int, ...]:
    """Validate a sequence of ints, each ``>= minimum``, of length ``>= min_len``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}.")
    items = tuple(value)
    if len(items) < min_len:
        raise ValueError(f"{name} must have length >= {min_len}, got {value!r}.")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise TypeError(f"every entry of {name} must be an int, got {value!r}.")
        if item < minimum:
            raise ValueError(f"every entry of {name} must be >= {minimum}, got {value!r}.")
    return tuple(int(i) for i in items)


def field_names(name: str, value, allowed: Sequence[str], *, hint: str = "") -> tuple[str, ...]:
    """Validate a name or a sequence of names drawn from `allowed` (no duplicates).

    A single string is one name (``frozen="A"`` is ``frozen=("A",)``). Returns a tuple in
    the order of `allowed` (a canonical form: equal settings compare equal).
    """
    names = (value,) if isinstance(value, str) else value
    if isinstance(names, Iterable):
        names = tuple(names)
    if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{name} must be a field name or a tuple of field names, got {value!r}.")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(
            f"{name} names unknown fields {unknown}; choose from {tuple(allowed)}"
            f"{(' ' + hint) if hint else ''}."
        )
    return tuple(n for n in allowed if n in names)


def check_key(name: str, key):
    """Validate a JAX PRNG key: a typed key ``jax.random.key(seed)`` or a legacy
    ``jax.random.PRNGKey(seed)`` (``uint32`` array of shape ``(2,)``); tracers are fine.

    ``None`` or an int give a ``TypeError`` saying how to make a key. Returns `key`.
    """
    how = f"pass {name}=jax.random.key(0) (any seed), or split one with jax.random.split"
    if key is None:
        raise TypeError(f"{name} is required (a JAX PRNG key): {how}.")
    if isinstance(key, (bool, int, np.integer, float)):
        raise TypeError(f"{name} must be a JAX PRNG key, not the number {key!r}: {how}.")
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise ValueError(
                    f"{name} must be a single PRNG key, got a batch of shape {key.shape}; "
                    "vmap over keys (eqx.filter_vmap) to build a batch of models."
                )
            return key
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return key
    raise TypeError(f"{name} must be a JAX PRNG key, got {key!r}: {how}.")


def check_float_dtype(name: str, dtype):
    """Validate a floating dtype; ``None`` is JAX's default float (float64 under x64).

    Returns the ``jnp.dtype``.
    """
    if dtype is None:
        return jnp.zeros(()).dtype
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"{name} must be a floating dtype (e.g. jnp.float32), got {dtype!r}."
        ) from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(
            f"{name} must be a floating dtype (e.g. jnp.float32 or jnp.float64), got {dt}."
        )
    return dt


def real_array(
    name: str, value, *, max_ndim: int | None = None, finite: bool = True, hint: str = ""
) -> np.ndarray:
    """Validate a concrete array-like of real numbers; returns it as a float64 NumPy array.

    Strings, ``None``, objects and complex numbers give a ``TypeError`` naming `name`;
    more than `max_ndim` dimensions or (with `finite`) NaN/inf a ``ValueError`` (with
    `hint` appended).
    """
    tail = f" {hint}" if hint else ""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a real number or an array of them, got {value!r}.")
    if not is_concrete(value):
        raise TypeError(f"{name} must be concrete (it is fixed at construction), got a tracer.")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array of real numbers, got {value!r}.") from err
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be real numbers, got {value!r} (dtype {arr.dtype}).")
    if max_ndim is not None and arr.ndim > max_ndim:
        raise ValueError(
            f"{name} must have at most {max_ndim} dimension(s), got shape {arr.shape}.{tail}"
        )
    arr = arr.astype(np.float64)
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}.{tail}")
    return arr


def check_callable(name: str, value):
    """Validate a callable; returns it."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {value!r} ({type(value).__name__}).")
    return value


def floating_array(name: str, value, *, finite: bool = True):
    """Validate a floating JAX array (NaN/inf rejected unless traced or not `finite`)."""
    arr = jnp.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array, got dtype {arr.dtype}.")
    if finite and is_concrete(arr) and not bool(jnp.all(jnp.isfinite(arr))):
        raise ValueError(f"{name} contains NaN or inf; clean the data first.")
    return arr


def weights_array(name: str, value, n: int, dtype):
    """Validate ``(n,)`` weights: finite, non-negative, not all zero (unless traced)."""
    w = jnp.asarray(value, dtype)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {w.shape}.")
    if is_concrete(w):
        wn = np.asarray(w)
        if not np.all(np.isfinite(wn)) or np.any(wn < 0) or wn.sum() <= 0:
            raise ValueError(f"{name} must be finite, non-negative and not all zero.")
    return w
