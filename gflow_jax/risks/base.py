"""The risk interface: ``risk(model) -> L(θ) ≥ 0``.

A risk is any callable ``risk(model) -> scalar`` (an ``eqx.Module`` of your own works);
the library's risks subclass :class:`AbstractRisk`. Risks of ReLU networks are only
piecewise smooth in θ; they subclass :class:`AbstractPiecewiseSmoothRisk` and say how
far θ is from the non-smooth set, which the limit classification needs (a Hessian at a
kink means nothing).
"""

from __future__ import annotations

import abc

import equinox as eqx
from jaxtyping import Array, Float, PyTree


class AbstractRisk(eqx.Module):
    """Base class of risks: ``__call__(model)`` returns ``L(θ)``, a non-negative scalar.

    The dynamics differentiate it with ``jax.grad`` with respect to the model's
    trainable arrays, so the ReLU convention ``relu'(0) = 0`` of the models carries
    over: the gradient is the theory's generalised gradient.
    """

    @abc.abstractmethod
    def __call__(self, model: PyTree) -> Float[Array, ""]:
        """``L(θ)`` in the risk's units (squared output units for squared losses)."""


class AbstractPiecewiseSmoothRisk(AbstractRisk):
    """A risk that is smooth in θ except on switching surfaces ``{s(θ) = 0}``."""

    @abc.abstractmethod
    def kink_margin(self, model: PyTree) -> Float[Array, ""]:
        """Distance-like margin of θ from the non-smooth set (``0`` on it, ``inf`` if none).

        **Arguments:**

        - `model`: the model at θ.

        **Returns:**

        ``min_ij |s_ij(θ)| / scale_j`` over the risk's switching functions, with the
        scale making it invariant to rescaling a neuron (documented by each risk).
        """
