"""Trainable vs. frozen parameters: the one mechanism used by the whole library.

The state of a gradient flow is the pytree of *trainable* arrays of a model. By default
every inexact (floating) array is trainable. A model freezes some of its fields by
declaring a static field ``frozen: tuple[str, ...]`` naming them (see
:class:`gflow_jax.ImplicitReLU`, whose ``trainable=`` argument fills it). Frozen arrays
stay in the static part of :func:`partition` and are never integrated.
"""

from __future__ import annotations

import equinox as eqx
import jax.tree_util as jtu
from jaxtyping import PyTree


def trainable_filter(model: PyTree) -> PyTree[bool]:
    """Filter spec (a pytree of bools like ``model``) marking the trainable arrays."""
    spec = jtu.tree_map(eqx.is_inexact_array, model)
    frozen = tuple(getattr(model, "frozen", ()) or ())
    if frozen:
        for name in frozen:
            if not hasattr(model, name):
                raise ValueError(
                    f"{type(model).__name__}.frozen names {name!r}, which is not a field."
                )
        spec = eqx.tree_at(
            lambda m: [getattr(m, n) for n in frozen],
            spec,
            replace=[jtu.tree_map(lambda _: False, getattr(spec, n)) for n in frozen],
        )
    return spec


def partition(model: PyTree) -> tuple[PyTree, PyTree]:
    """Split ``model`` into ``(params, static)``: trainable arrays and everything else.

    ``eqx.combine(params, static)`` rebuilds the model.
    """
    return eqx.partition(model, trainable_filter(model))
