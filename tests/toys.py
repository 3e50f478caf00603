"""One-parameter toy problems with closed-form flows, shared by the tests."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp


class Scalar(eqx.Module):
    """A one-parameter model; ``well_posed`` ⇔ θ < limit (an opt-in ILL_POSED rule)."""

    theta: jax.Array
    limit: float = eqx.field(static=True, default=math.inf)

    def well_posed(self):
        return self.theta[0] < self.limit


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
