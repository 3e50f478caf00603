"""Input validation shared by the public API (clear errors at the boundary)."""

from __future__ import annotations

import math
from numbers import Real

import jax
import numpy as np


def is_concrete(x) -> bool:
    """True unless ``x`` is a JAX tracer (then value checks must be skipped)."""
    return not isinstance(x, jax.core.Tracer)


def positive_float(name: str, value, *, allow_inf: bool = False, hint: str = "") -> float:
    """Validate a positive (finite unless ``allow_inf``) real number."""
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


def positive_int(name: str, value, *, minimum: int = 1) -> int:
    """Validate an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)
