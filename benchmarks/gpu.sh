#!/usr/bin/env bash
# The short GPU subset of the benchmarks, one command (run from the repository root on a
# machine where JAX sees a GPU; needs jax[cuda], diffrax, equinox, optax, optimistix,
# lineax, xarray and this repository on PYTHONPATH). The scripts are the CPU ones,
# unchanged; each records the device it ran on. Writes JSON + Markdown into
# ${OUT:-benchmarks/out/gpu}:
#   1. ensemble throughput (loop / vmap / engine) on the exact and the empirical risk at
#      B = 1024 and 4096;
#   2. cost growth and roofline (B up to 16 384, width up to 256, N up to 1024);
#   3. (LIMIT_S > 0) the limit-labelling benchmark at 1024 initialisations.
set -uo pipefail
out="${OUT:-benchmarks/out/gpu}"
mkdir -p "$out"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)" PYTHONUNBUFFERED=1
python3 -c "import jax; print('devices:', jax.devices())"
timeout "${THROUGHPUT_S:-240}" python3 -m benchmarks.ensemble_throughput --sizes 1024 4096 \
    --t1 100 --out "$out" 2>&1 | tee "$out/ensemble_throughput.log"
timeout "${GROWTH_S:-240}" python3 -m benchmarks.cost_growth --out "$out" \
    --base 4096,16,64,1 --batches 1024,4096,16384 --widths 16,256 --points 64,1024 \
    --depths 1 2>&1 | tee "$out/cost_growth.log"
if [ "${LIMIT_S:-0}" -gt 0 ]; then
    timeout "$LIMIT_S" python3 -m benchmarks.limit_labelling --n 1024 --out "$out" \
        2>&1 | tee "$out/limit_labelling.log"
fi
