"""Test configuration: float64 for the mathematics (float32 is tested explicitly), and
compiled programs freed after every test module.

**Freeing compiled programs.** XLA's CPU backend maps a few anonymous memory regions
(code, constants, data) per compiled kernel, and JAX keeps every compiled program alive
in its caches. A pytest-xdist worker runs half the suite, thousands of solver programs,
and reached Linux's default limit of 65 530 memory maps per process (``vm.max_map_count``);
the next ``mmap`` then failed inside XLA, which showed as a worker dying with
"Segmentation fault" or "Aborted" in compilation or in serialisation for the persistent
cache, in different tests from run to run (measured: 10 000 maps after 75 s of
``test_reliability.py`` and ``test_ensemble.py`` in one process). ``jax.clear_caches()``
after each module releases them; module-scoped compiled fixtures stay within their module.

**No persistent XLA compilation cache**, and no ``EQX_ON_ERROR=nan`` (which would let
that cache take the solver programs): every test process compiles what it runs."""

import gc
import os

import jax
import pytest

jax.config.update("jax_enable_x64", True)


def _memory_maps() -> int:
    try:
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps)
    except OSError:  # not Linux
        return -1


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs(request):
    yield
    jax.clear_caches()
    gc.collect()
    if os.environ.get("GFLOW_TEST_REPORT_MAPS"):
        print(f"\n[maps after {request.module.__name__}: {_memory_maps()}]")
