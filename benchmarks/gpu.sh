#!/usr/bin/env bash
# The short GPU subset of the benchmarks, one command (run from the repository root on a
# machine where JAX sees a GPU; needs jax[cuda], diffrax, equinox, optax, optimistix,
# lineax, xarray and this repository on PYTHONPATH). Writes JSON + Markdown into
# ${OUT:-benchmarks/out/gpu}: the limit-labelling benchmark at 1024 inits and the ensemble
# throughput (loop / vmap / engine) on the exact and the empirical risk at B = 1024, 4096.
set -uo pipefail
out="${OUT:-benchmarks/out/gpu}"
mkdir -p "$out"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)" PYTHONUNBUFFERED=1
python3 -c "import jax; print('devices:', jax.devices())"
timeout "${LIMIT_S:-300}" python3 -m benchmarks.limit_labelling --n 1024 --out "$out" \
    2>&1 | tee "$out/limit_labelling.log"
timeout "${THROUGHPUT_S:-200}" python3 -m benchmarks.ensemble_throughput --sizes 1024 4096 \
    --t1 100 --out "$out" 2>&1 | tee "$out/ensemble_throughput.log"
