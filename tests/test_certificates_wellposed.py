"""certificates.wellposed: spectral norms through gflow_jax._numerics, and the declared
ImplicitReLU interface (no duck typing)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax import _numerics
from gflow_jax.certificates import wellposed
from gflow_jax.certificates.wellposed import (
    inf_norm,
    spectral_norm,
    spectral_norm_upper_bound,
    well_posedness,
)
from gflow_jax.models.implicit import ImplicitReLU


def test_spectral_norm_is_the_numerics_one():
    assert spectral_norm is _numerics.spectral_norm
    assert wellposed.power_iteration is _numerics.spectral_norm  # transitional alias
    assert not hasattr(wellposed, "_start_vector")
    rng = np.random.default_rng(0)
    A = rng.normal(size=(7, 5))
    sigma, v = spectral_norm(jnp.asarray(A), iters=500)
    true = np.linalg.norm(A, 2)
    assert float(sigma) == pytest.approx(true, rel=1e-10) and float(sigma) <= true * (1 + 1e-12)
    assert float(jnp.linalg.norm(v)) == pytest.approx(1.0)
    assert float(inf_norm(A)) == pytest.approx(np.linalg.norm(A, np.inf))
    assert float(spectral_norm_upper_bound(A)) >= true


class _LooksImplicit(eqx.Module):
    """Has the fields the old duck-typed check probed for, but is no ImplicitReLU."""

    A: jax.Array
    gamma: float = 0.5
    margin: float = 0.02


def test_well_posedness_needs_an_implicit_relu():
    with pytest.raises(TypeError, match="ImplicitReLU"):
        well_posedness(_LooksImplicit(jnp.eye(3)))


def test_well_posedness_reads_declared_fields():
    model = ImplicitReLU(3, 6, gamma=0.5, key=jax.random.key(0), init="spectral", power_iters=7)
    rep = well_posedness(model)
    sigma, _ = _numerics.spectral_norm(model.A, iters=7)
    assert float(rep.contraction) == pytest.approx(0.5 * float(sigma), rel=1e-14)
    assert float(rep.margin) == pytest.approx(model.margin)
    tol = model.solver_settings()[0]
    expected = np.ceil(np.log(tol) / np.log(float(rep.contraction)))
    assert float(rep.predicted_steps) == expected
    assert float(well_posedness(model, tol=1e-2).predicted_steps) < expected
    with pytest.raises(ValueError, match="iters"):
        well_posedness(model, iters=-1)
    with pytest.raises(ValueError, match="tol"):
        well_posedness(model, tol=2.0)
