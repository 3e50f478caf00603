"""Private helpers shared by the certificates: the loss on a flat parameter vector,
argument checks, the smoothness warning and a trajectory's points.

Every certificate works on the *trainable* parameters of a model
(:func:`gflow_jax.models.base.partition`), flattened with ``jax.flatten_util.ravel_pytree``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.tree_util as jtu
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from ..models.base import AbstractModel, is_smooth, partition
from ..risks.base import AbstractRisk

# How a user obtains a trajectory with its parameter path (one place to rename the flow API).
FLOW_WITH_PATH = "gflow_jax.integrate(model, risk, t1, save_path=True)"


def check_model_risk(model: PyTree, risk, what: str) -> None:
    """Raise a clear ``TypeError`` for a non-callable risk or the old ``(risk, model)`` order."""
    if isinstance(model, AbstractRisk) or isinstance(risk, AbstractModel):
        raise TypeError(
            f"{what} takes (model, risk, ...), like the rest of gflow_jax; got a "
            f"{type(model).__name__} first and a {type(risk).__name__} second. Swap them."
        )
    if not callable(risk):
        raise TypeError(f"{what}: risk must be callable as risk(model) -> scalar.")


def flat_loss(
    model: PyTree, risk
) -> tuple[Float[Array, " p"], Callable[[Array], Array], Callable[[Array], PyTree]]:
    """``(θ_0, f, unravel)``: the flat trainable parameters, ``f: R^p → R`` and the inverse
    of the flattening (flat vector → the pytree of trainable arrays)."""
    params, static = partition(model)
    flat, unravel = ravel_pytree(params)
    if flat.size == 0:
        raise ValueError("the model has no trainable floating-point arrays.")

    def f(theta):
        return risk(eqx.combine(unravel(theta), static))

    return flat, f, unravel


def warn_if_not_smooth(model: PyTree, what: str, stacklevel: int = 3) -> None:
    """``UserWarning`` when the model declares ``is_smooth = False`` (the theorem needs C²)."""
    if not is_smooth(model):
        warnings.warn(
            f"{what}: {type(model).__name__} declares is_smooth = False (e.g. a ReLU "
            "activation), but the ball criterion assumes f is C² (Chatterjee, arXiv:2203.16462); "
            "the Hessian is not defined at the kinks and the verdict has no theorem "
            "behind it. Use a smooth activation such as 'tanh', 'softplus' or 'smooth_relu'.",
            UserWarning,
            stacklevel=stacklevel,
        )


def path_points(trajectory, params_template: PyTree) -> Float[Array, "T p"]:
    """``(T, p)`` flattened points of ``trajectory.path`` (NaN rows after ``t_stop``)."""
    path = getattr(trajectory, "path", None)
    if path is None:
        raise ValueError(
            f"trajectory.path is None; run {FLOW_WITH_PATH} to use the flow's points "
            "(its path is saved only on request)."
        )
    if jtu.tree_structure(path) != jtu.tree_structure(params_template):
        raise ValueError(
            "trajectory.path does not have the structure of the model's trainable parameters; "
            "pass a trajectory of this model."
        )
    lead = {x.shape[0] for x in jtu.tree_leaves(path)}
    if len(lead) != 1:
        raise ValueError("trajectory.path leaves must share a leading (time) axis.")
    for a, b in zip(jtu.tree_leaves(path), jtu.tree_leaves(params_template), strict=True):
        if a.shape[1:] != b.shape:
            raise ValueError(
                f"trajectory.path leaf of shape {a.shape} does not match parameter shape "
                f"{b.shape}; a batched trajectory? pass one trajectory at a time."
            )
    return jax.vmap(lambda p: ravel_pytree(p)[0])(path)
