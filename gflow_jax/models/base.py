"""The model interface and the one trainable/frozen mechanism of the library.

A *model* is any pytree (usually an ``eqx.Module``) that a risk maps to a number. The
library's own models subclass :class:`AbstractModel`, which declares what the dynamics
and certificates need to know about a model — no attribute probing anywhere:

- ``frozen``: names of fields that are held fixed (never integrated);
- ``is_smooth``: whether ``x ↦ N_θ(x)`` and ``θ ↦ N_θ(x)`` are ``C²`` (False for ReLU);
- ``well_posed()``: whether the forward map is defined at θ (implicit networks);
- ``switching_functions(x)``: the pre-activations whose sign changes make a ReLU
  network's risk non-smooth (an ``(n, 0)`` array for smooth models).

A model of your own that does not subclass :class:`AbstractModel` is treated as smooth,
always well posed, with every floating array trainable.
"""

# No ``from __future__ import annotations`` here: Equinox needs the ``AbstractVar``
# annotations as objects (stringified abstract annotations are silently not abstract).
import abc

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, ArrayLike, Bool, Float, PyTree


class AbstractModel(eqx.Module):
    """Base class of models ``N_θ: R^{d_in} → R^{d_out}`` applied to batches ``(n, d_in)``.

    Concrete subclasses are final. They provide the fields/properties below.

    - `frozen`: a static ``tuple[str, ...]`` of field names excluded from θ.
    - `is_smooth`: ``True`` if ``θ ↦ N_θ(x)`` is twice continuously differentiable.
    """

    frozen: eqx.AbstractVar[tuple[str, ...]]
    is_smooth: eqx.AbstractVar[bool]

    def __check_init__(self):
        names = set(self.__dataclass_fields__)
        for name in self.frozen:
            if name not in names:
                raise ValueError(
                    f"{type(self).__name__}: frozen names {name!r}, which is not a field "
                    f"(fields: {sorted(n for n in names if n != 'frozen')})."
                )

    @abc.abstractmethod
    def __call__(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n d_out"]:
        """The network's outputs on a batch of inputs."""

    @abc.abstractmethod
    def well_posed(self) -> Bool[Array, ""]:
        """Whether the forward map is well defined at these parameters."""

    @abc.abstractmethod
    def switching_functions(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n s"]:
        """Pre-activations ``s_ij(θ)`` of the inputs whose sign changes are kinks of θ ↦ N_θ(x).

        **Arguments:**

        - `x`: inputs ``(n, d_in)``.

        **Returns:**

        An ``(n, s)`` array (``s = 0`` for smooth models); ``N_θ(x_i)`` is smooth in θ
        wherever no ``s_ij(θ)`` is zero.
        """


def trainable_filter(model: PyTree) -> PyTree[bool]:
    """Filter spec marking the trainable arrays of `model` (a pytree of bools like it).

    Every inexact (floating) array is trainable, except the fields an
    :class:`AbstractModel` names in ``frozen``.

    **Arguments:**

    - `model`: any pytree, usually a model.

    **Returns:**

    A pytree of the structure of `model` with a ``bool`` at every leaf: ``True`` for the
    trainable arrays, ``False`` otherwise (a filter spec for ``eqx.partition``).
    """
    spec = jtu.tree_map(eqx.is_inexact_array, model)
    if isinstance(model, AbstractModel) and model.frozen:
        spec = eqx.tree_at(
            lambda m: [getattr(m, name) for name in model.frozen],
            spec,
            replace=[jtu.tree_map(lambda _: False, getattr(spec, name)) for name in model.frozen],
        )
    return spec


def partition(model: PyTree) -> tuple[PyTree, PyTree]:
    """Split `model` into ``(params, static)``: θ (trainable arrays) and everything else.

    ``eqx.combine(params, static)`` rebuilds the model.

    **Arguments:**

    - `model`: any pytree, usually a model.

    **Returns:**

    ``(params, static)``: two pytrees of the structure of `model`, ``params`` holding the
    trainable arrays (:func:`trainable_filter`) and ``None`` elsewhere, ``static`` the rest.
    """
    return eqx.partition(model, trainable_filter(model))


def is_well_posed(model: PyTree) -> Bool[Array, ""]:
    """``model.well_posed()`` for an :class:`AbstractModel`, else ``True``.

    **Arguments:**

    - `model`: any pytree, usually a model.

    **Returns:**

    A scalar boolean array (traceable: it may depend on the parameters).
    """
    if isinstance(model, AbstractModel):
        return jnp.asarray(model.well_posed())
    return jnp.asarray(True)


def is_smooth(model: PyTree) -> bool:
    """``model.is_smooth`` for an :class:`AbstractModel`, else ``True``.

    **Arguments:**

    - `model`: any pytree, usually a model.

    **Returns:**

    A Python ``bool`` (static): whether ``θ ↦ N_θ(x)`` is twice continuously
    differentiable.
    """
    return bool(model.is_smooth) if isinstance(model, AbstractModel) else True
