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
    """Validate a floating JAX array (NaN/inf rejected unless traced or not `finite`).

    Strings, ``None`` and objects that are not arrays give a ``TypeError`` naming `name`.
    """
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a floating array, got {value!r}.")
    try:
        arr = jnp.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a floating array, got {value!r} ({type(value).__name__})."
        ) from err
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


def check_bool(name: str, value) -> bool:
    """Validate a flag: ``True``/``False`` (NumPy bools too); returns a Python ``bool``.

    A string such as ``"no"`` is truthy in Python, so it is refused rather than guessed.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def one_of_types(name: str, value, types, what: str):
    """Validate ``isinstance(value, types)``; `what` says what is expected (for the message)."""
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {what}, got {value!r} ({type(value).__name__}).")
    return value


def check_risk_callable(risk):
    """Validate a risk: a callable ``risk(model) -> scalar`` (a class is refused)."""
    if isinstance(risk, type):
        raise TypeError(
            f"risk must be a risk object, got the class {risk.__name__}; instantiate it, e.g. "
            f"{risk.__name__}(...)."
        )
    if not callable(risk):
        raise TypeError(
            f"risk must be callable as risk(model) -> scalar, got {risk!r} "
            f"({type(risk).__name__}); e.g. gflow_jax.EmpiricalRisk(x, y)."
        )
    return risk


def check_model(name: str, model):
    """Validate that `model` is a model: a pytree holding arrays (e.g. an ``eqx.Module``)."""
    if model is None or isinstance(model, (str, bytes, bool, int, float, complex, type)):
        raise TypeError(
            f"{name} must be a model (an equinox Module such as gflow_jax.ShallowReLU(...)), "
            f"got {model!r}."
        )
    return model


def check_trainable_dtypes(name: str, leaves: Sequence) -> jnp.dtype:
    """Validate the trainable arrays of a model: at least one, all of one floating dtype.

    **Returns:**

    Their dtype.
    """
    if not leaves:
        raise ValueError(
            f"{name} has no trainable floating-point arrays to integrate (all its arrays are "
            "frozen, integer or absent); give it float parameters or unfreeze some."
        )
    dtypes = {jnp.dtype(x.dtype) for x in leaves}
    if len(dtypes) != 1:
        raise TypeError(
            f"all trainable arrays of {name} must share one dtype, got "
            f"{sorted(map(str, dtypes))}; build every field with the same dtype."
        )
    return dtypes.pop()


def evaluate_abstractly(name: str, fn, *args):
    """``jax.eval_shape(fn, *args)``, with an error that names `name` when it fails.

    A value of a non-JAX type (a string, ``None``, an object) is reported as such;
    any other exception raised by `fn` itself propagates with a note saying where.
    """
    try:
        return jax.eval_shape(fn, *args)
    except TypeError as err:
        if "not a valid JAX type" in str(err):
            raise TypeError(
                f"{name} must return a real floating-point JAX scalar, but it returned a "
                "value that is not an array (e.g. a string or an object); return e.g. "
                "jnp.sum(residual**2)."
            ) from None
        err.add_note(f"(raised while evaluating {name} abstractly, at the API boundary)")
        raise
    except Exception as err:
        err.add_note(f"(raised while evaluating {name} abstractly, at the API boundary)")
        raise


def check_scalar_output(name: str, out) -> None:
    """Validate the abstract output of a risk-like function: a real floating scalar."""
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(
            f"{name} must return a real floating-point scalar, got {out!r}; return e.g. "
            "jnp.sum(residual**2)."
        )
    if shape != ():
        raise ValueError(
            f"{name} must return a scalar, got shape {shape}; reduce it, e.g. with jnp.sum "
            "or jnp.mean."
        )
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"{name} must return a real floating-point scalar, got dtype {dtype}; a risk is "
            "real and non-negative: use e.g. jnp.abs(z)**2 of a complex residual."
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name} must return a real floating-point scalar, got dtype {dtype}; e.g. "
            "return jnp.sum(residual**2) computed from the model's float parameters."
        )


def _describe(x) -> str:
    return f"{tuple(x.shape)} {jnp.dtype(x.dtype)}"


def first_difference(label_a: str, tree_a, label_b: str, tree_b) -> str | None:
    """Where two pytrees of arrays differ in structure, shape or dtype (``None``: they agree).

    Used to say *which* leaf differs between models that must share one architecture.
    """
    leaves_a, def_a = jax.tree_util.tree_flatten_with_path(tree_a)
    leaves_b, def_b = jax.tree_util.tree_flatten_with_path(tree_b)
    paths_a = [jax.tree_util.keystr(k) for k, _ in leaves_a]
    paths_b = [jax.tree_util.keystr(k) for k, _ in leaves_b]
    if paths_a != paths_b:
        only_a = [p for p in paths_a if p not in paths_b]
        only_b = [p for p in paths_b if p not in paths_a]
        return (
            f"their fields differ: {label_a} has {only_a or paths_a} where {label_b} has "
            f"{only_b or paths_b}"
        )
    for path, (_, a), (_, b) in zip(paths_a, leaves_a, leaves_b, strict=True):
        shaped_a, shaped_b = hasattr(a, "shape"), hasattr(b, "shape")
        if shaped_a and shaped_b:
            if tuple(a.shape) != tuple(b.shape) or jnp.dtype(a.dtype) != jnp.dtype(b.dtype):
                return f"leaf {path} is {_describe(a)} in {label_a} but {_describe(b)} in {label_b}"
        elif shaped_a != shaped_b or (not shaped_a and a != b):
            return f"leaf {path} is {a!r} in {label_a} but {b!r} in {label_b}"
    if def_a != def_b:
        return f"their static settings differ: {def_a} vs {def_b}"
    return None


def check_devices(name: str, devices) -> list:
    """Validate a non-empty sequence of ``jax.Device`` (``None``: the first device)."""
    if devices is None:
        return list(jax.devices()[:1])
    if isinstance(devices, jax.Device):
        return [devices]
    if isinstance(devices, (str, bytes)) or not isinstance(devices, Iterable):
        raise TypeError(
            f"{name} must be a list of JAX devices, e.g. jax.devices(), got {devices!r}."
        )
    devices = list(devices)
    if not devices:
        raise ValueError(f"{name} must name at least one device, e.g. {name}=jax.devices().")
    bad = [d for d in devices if not isinstance(d, jax.Device)]
    if bad:
        raise TypeError(
            f"{name} must be a list of JAX devices, e.g. jax.devices(), got {bad[0]!r} "
            f"({type(bad[0]).__name__}) in it."
        )
    return devices


# -- step-size controllers -----------------------------------------------------------------


def _controller_number(name, value, *, low=None, high=None, low_open=True, high_open=False,
                       allow_inf=False, what="") -> None:  # fmt: skip
    if not is_concrete(value):
        return
    if isinstance(value, bool) or not _is_real_scalar(value):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    v = float(np.asarray(value))
    bad = math.isnan(v) or (math.isinf(v) and not allow_inf)
    if low is not None:
        bad = bad or (v <= low if low_open else v < low)
    if high is not None:
        bad = bad or (v >= high if high_open else v > high)
    if bad:
        raise ValueError(f"{name} must be {what}, got {v}.")


def check_controller(controller, *, dt0=None) -> None:
    """Validate a Diffrax step-size controller's settings at the boundary.

    ``PIDController``: ``rtol``, ``atol`` finite and ``≥ 0``, not both 0; ``dtmin``,
    ``dtmax`` positive with ``dtmin ≤ dtmax``; ``0 < factormin < 1 ≤ factormax``
    (finite); ``0 < safety ≤ 1``; finite ``pcoeff``, ``icoeff``, ``dcoeff`` with a
    positive sum (else a larger error would give a larger step); positive
    ``error_order``; a callable ``norm``. ``ClipStepSizeController``: its controller,
    finite increasing ``step_ts``, and no ``jump_ts`` (a gradient flow is autonomous, so
    jumps mean nothing, and they would couple ensemble members). ``ConstantStepSize``
    needs `dt0`. Other controllers are accepted as they are.
    """
    import diffrax

    if isinstance(controller, diffrax.ClipStepSizeController):
        if controller.jump_ts is not None:
            raise ValueError(
                "ClipStepSizeController(jump_ts=...) is not supported: a gradient flow "
                "dθ/dt = -∇L(θ) is autonomous, so it has no jumps in time (and a jump in "
                "one ensemble member would re-evaluate its batch-mates' stages). Drop "
                "jump_ts; step_ts is fine."
            )
        if controller.step_ts is not None:
            ts = real_array("ClipStepSizeController.step_ts", controller.step_ts, max_ndim=1)
            if np.any(np.diff(ts) <= 0):
                raise ValueError("ClipStepSizeController.step_ts must be strictly increasing.")
        check_controller(controller.controller, dt0=dt0)
        return
    if isinstance(controller, diffrax.ConstantStepSize):
        if dt0 is None:
            raise ValueError(
                "diffrax.ConstantStepSize() takes fixed steps of the size dt0, and none was "
                "given: pass dt0=... to GradientFlow (e.g. GradientFlow(controller="
                "diffrax.ConstantStepSize(), dt0=1e-3)), or use diffrax.PIDController(rtol="
                "..., atol=...) for adaptive steps."
            )
        return
    if not isinstance(controller, diffrax.PIDController):
        return
    c = controller
    hint = "(tolerances of the step-size controller are finite numbers >= 0)"
    for name in ("rtol", "atol"):
        _controller_number(
            f"PIDController.{name}", getattr(c, name), low=0.0, low_open=False,
            what=f"a finite number >= 0 {hint}",
        )  # fmt: skip
    if is_concrete(c.rtol) and is_concrete(c.atol) and float(c.rtol) == 0 == float(c.atol):
        raise ValueError(
            "PIDController rtol and atol are both 0: no step could ever be accepted; "
            "use e.g. rtol=1e-7, atol=1e-10."
        )
    if c.dtmin is not None:
        _controller_number("PIDController.dtmin", c.dtmin, low=0.0, what="a finite number > 0")
    if c.dtmax is not None:
        _controller_number(
            "PIDController.dtmax", c.dtmax, low=0.0, allow_inf=True, what="a number > 0"
        )
    if (
        c.dtmin is not None
        and c.dtmax is not None
        and is_concrete(c.dtmin)
        and is_concrete(c.dtmax)
        and float(c.dtmin) > float(c.dtmax)
    ):
        raise ValueError(
            f"PIDController.dtmin ({float(c.dtmin)}) must not exceed dtmax ({float(c.dtmax)})."
        )
    _controller_number(
        "PIDController.factormin", c.factormin, low=0.0, high=1.0, high_open=True,
        what="in (0, 1) (the largest shrink of a rejected step)",
    )  # fmt: skip
    _controller_number(
        "PIDController.factormax", c.factormax, low=1.0, low_open=False,
        what="a finite number >= 1 (the largest growth of an accepted step)",
    )  # fmt: skip
    _controller_number("PIDController.safety", c.safety, low=0.0, high=1.0, what="in (0, 1]")
    for name in ("pcoeff", "icoeff", "dcoeff"):
        _controller_number(f"PIDController.{name}", getattr(c, name), what="a finite number")
    coeffs = (c.pcoeff, c.icoeff, c.dcoeff)
    if all(is_concrete(x) for x in coeffs) and float(sum(float(x) for x in coeffs)) <= 0:
        raise ValueError(
            "PIDController pcoeff + icoeff + dcoeff must be > 0 (else a larger error would "
            f"give a larger step), got {tuple(float(x) for x in coeffs)}; the default is "
            "(0, 1, 0)."
        )
    if c.error_order is not None:
        _controller_number(
            "PIDController.error_order", c.error_order, low=0.0, what="a finite number > 0"
        )
    if not callable(c.norm):
        raise TypeError(f"PIDController.norm must be callable, got {c.norm!r}.")
    if not isinstance(c.force_dtmin, (bool, np.bool_)):
        raise TypeError(f"PIDController.force_dtmin must be True or False, got {c.force_dtmin!r}.")
