"""Test configuration: float64 for the mathematics (float32 is tested explicitly).

No persistent XLA compilation cache: with jaxlib 0.10.2 on a CPU, serialising some of
the compiled solver programs (Diffrax loops with the exponential tail, the engine's
pools) for that cache aborted or crashed the process (``put_executable_and_time`` ->
``executable.serialize()``), seen in two CI runs once ``EQX_ON_ERROR=nan`` had removed
the host callbacks that otherwise keep these programs out of the cache. Every test
process compiles what it runs."""

import jax

jax.config.update("jax_enable_x64", True)
