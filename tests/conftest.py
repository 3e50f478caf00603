"""Test configuration: float64 for the mathematics (float32 is tested explicitly), and one
persistent XLA compilation cache shared by the test processes (pytest-xdist workers and
the subprocesses that the CLI, notebook and strict tests start inherit it through the
environment), so a program compiled by one process is not compiled again by another.

JAX never writes a program with host callbacks to that cache, and Equinox's runtime
checks (``eqx.error_if``, used inside Diffrax) are host callbacks unless
``EQX_ON_ERROR=nan``; so the tests set it (before Equinox is imported). The library does
not rely on those checks at run time: its solves use ``throw=False`` and report failures
as outcomes, and ``integrate(throw=True)`` raises from the host on concrete results."""

import os
import tempfile

os.environ.setdefault("EQX_ON_ERROR", "nan")

import jax  # noqa: E402

os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "gflow_jax_test_xla_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)
jax.config.update("jax_enable_x64", True)
