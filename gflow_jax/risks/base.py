"""The risk protocol: a risk is an ``eqx.Module`` with ``risk(model) -> scalar``."""

from __future__ import annotations

import abc

import equinox as eqx
from jaxtyping import Array, Float, PyTree


class AbstractRisk(eqx.Module):
    """Base class of risks: ``__call__(model) -> L(θ)``, a non-negative scalar.

    Any ``eqx.Module`` (or jittable callable) with this signature can be passed to
    :func:`gflow_jax.gradient_flow`; subclassing is optional and only documents intent.
    The gradient flow differentiates it with ``jax.grad`` with respect to the model's
    trainable arrays, so the ReLU convention ``relu'(0) = 0`` of the models carries over.
    """

    @abc.abstractmethod
    def __call__(self, model: PyTree) -> Float[Array, ""]: ...
