"""Test configuration: float64 for the mathematics (float32 is tested explicitly)."""

import jax

jax.config.update("jax_enable_x64", True)
