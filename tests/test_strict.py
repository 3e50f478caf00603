"""The library under strict checks: jaxtyping's import hook with beartype (every annotated
signature is type-checked at run time), ``jax_numpy_rank_promotion="raise"`` and
``jax_numpy_dtype_promotion="strict"`` (no implicit int/float or float32/float64 mixing).

Runs in a fresh interpreter (the hook must be installed before ``gflow_jax`` is imported)
over the main paths: gradient flow to the limit with the tail solver and the limit
classification, gradient descent, an ensemble with compaction, storage, the exact and the
empirical risk.
"""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import math, sys, tempfile, os
    import jax
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_rank_promotion", "raise")
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    from jaxtyping import install_import_hook
    with install_import_hook("gflow_jax", "beartype.beartype"):
        import gflow_jax as gf
    exact = gf.PopulationRisk.uniform_1d(gf.Affine(2.0, 1.0), 0.0, 1.0)
    model = gf.ShallowReLU(1, 3, key=jax.random.key(0))
    traj = gf.integrate(model, exact, math.inf, n_save=16)
    assert traj.outcome_name in ("CONVERGED", "CRITICAL_POINT"), traj.outcome_name
    x, y = gf.sample_data(gf.Affine(2.0, 1.0), 8)
    emp = gf.EmpiricalRisk(x, y)
    gd = gf.integrate(model, emp, 2.0, gf.GradientDescent(0.1), n_save=8)
    assert int(gd.num_steps) == 20
    keys = jax.random.split(jax.random.key(1), 3)
    ens = gf.run_ensemble(lambda k: gf.ShallowReLU(1, 3, key=k), emp, keys, 3.0,
                          gf.GradientFlow(tail="explicit"), n_save=8, chunk_size=2,
                          progress=False)
    path = os.path.join(tempfile.mkdtemp(), "e.nc")
    ens.save(path)
    back = gf.Ensemble.load(path, template=model)
    assert len(back) == 3
    print("STRICT OK", traj.limit_name, ens.fraction())
    """
)


@pytest.mark.slow
def test_main_paths_pass_runtime_type_checks_and_strict_promotion():
    pytest.importorskip("beartype")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert "STRICT OK" in out.stdout
