"""One-parameter toy problems with closed-form flows, shared by the tests."""

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import gflow_jax as gf


class Scalar(gf.AbstractModel):
    """A one-parameter model; ``well_posed`` ⇔ θ < limit (the declared ILL_POSED rule)."""

    theta: jax.Array
    limit: float = eqx.field(static=True, default=math.inf)
    frozen: ClassVar[tuple[str, ...]] = ()
    is_smooth: ClassVar[bool] = True

    def __call__(self, x):
        return jnp.broadcast_to(self.theta, (jnp.shape(x)[0], 1))

    def well_posed(self):
        return self.theta[0] < self.limit

    def switching_functions(self, x):
        return jnp.zeros((jnp.shape(x)[0], 0))


# -- shorthands of the public API used throughout the tests ----------------------------------
# Tests default to the explicit solver and no limit analysis (fewer compilations); the tail
# strategy and the limits have their own tests.


def flow(
    model,
    risk,
    t1,
    *,
    solver=None,
    controller=None,
    stop=None,
    max_steps=2**20,
    adjoint=None,
    dt0=None,
    tail="explicit",
    n_save=100,
    save_ts=None,
    save_path=False,
    limits=None,
    throw=True,
):
    """``gf.integrate(model, risk, t1, gf.GradientFlow(...), ...)`` with test defaults."""
    options = dict(controller=controller, tail=tail, dt0=dt0, max_steps=max_steps)
    if solver is not None:
        options["solver"] = solver
    if stop is not None:
        options["stop"] = stop
    if adjoint is not None:
        options["adjoint"] = adjoint
    return gf.integrate(
        model,
        risk,
        t1,
        gf.GradientFlow(**options),
        n_save=n_save,
        save_ts=save_ts,
        save_path=save_path,
        limits=limits,
        throw=throw,
    )


def step_grid(steps: int, n_save: int = 100) -> np.ndarray:
    """Save steps: ``0`` and up to ``n_save − 1`` log-spaced distinct ``k ≤ steps``."""
    grid = np.round(np.logspace(0, math.log10(steps), n_save - 1))
    grid[-1] = steps
    return np.unique(np.concatenate([[0], grid])).astype(np.int64)


def descend(
    model,
    risk,
    learning_rate,
    steps,
    *,
    optimizer=None,
    stop=None,
    n_save=100,
    save_path=False,
    limits=None,
):
    """``steps`` iterations of ``gf.GradientDescent``, saved at :func:`step_grid` iterates."""
    dynamics = gf.GradientDescent(
        learning_rate,
        optimizer=optimizer,
        stop=gf.Stop() if stop is None else stop,
        max_steps=steps,
    )
    return gf.integrate(
        model,
        risk,
        steps * learning_rate,
        dynamics,
        save_ts=step_grid(steps, n_save) * learning_rate,
        save_path=save_path,
        limits=limits,
    )


class Quadratic(eqx.Module):
    """L(θ) = (θ − 1)²: GF θ(t) = 1 − e^{−2t}(1 − θ0); GD θ_k − 1 = (1 − 2η)^k (θ0 − 1)."""

    def __call__(self, model):
        return jnp.sum((model.theta - 1.0) ** 2)


class BlowUp(eqx.Module):
    """L(θ) = K − θ⁴ (positive for |θ| < K^{1/4}): GF θ' = 4θ³ blows up at
    t* = 1/(8θ0²), θ(t) = (θ0⁻² − 8t)^{−1/2}; GD θ_{k+1} = θ_k + 4η θ_k³."""

    K: float = 1e5

    def __call__(self, model):
        return self.K - jnp.sum(model.theta**4)
