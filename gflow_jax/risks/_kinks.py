"""The kink margin of a risk that is a weighted sum over points (data or quadrature nodes).

``L(θ) = Σ_i ω_i ‖N_θ(x_i) − y_i‖²`` is smooth in θ wherever no switching function
``s_ij(θ)`` (:meth:`gflow_jax.models.base.AbstractModel.switching_functions`) of a point
with ``ω_i > 0`` vanishes. The margin measures how far θ is from that set.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._linalg import solve_without_pivoting
from ..models.base import AbstractModel
from ..models.deep import DeepMLP
from ..models.implicit import ImplicitReLU
from ..models.shallow import ShallowReLU


def switching_margin(
    model: PyTree, x: Float[Array, "n d"], weights: Float[Array, " n"]
) -> Float[Array, ""]:
    """``min_{i: ω_i > 0, j} |s_ij(θ)| / scale_j``, or ``+inf`` for a smooth model.

    The scale is the norm of the coefficients of the switching function as an affine map
    of the previous layer, ``sqrt(‖w_j‖² + b_j²)`` for :class:`~gflow_jax.ShallowReLU`
    and per hidden neuron for a ReLU :class:`~gflow_jax.DeepMLP` (``switching_scales``),
    which makes the margin invariant to rescaling a neuron ``(w_j, b_j, v_j) ↦ (α w_j,
    α b_j, v_j/α)``, ``α > 0``; a degenerate neuron (scale 0) has margin 0. Any other
    non-smooth :class:`~gflow_jax.models.base.AbstractModel` (e.g.
    :class:`~gflow_jax.ImplicitReLU`) has no natural scale: the raw ``min |s_ij|``.

    **Arguments:**

    - `model`: the model at θ.
    - `x`: the points ``(n, d)`` (cast to the model's dtype by the caller).
    - `weights`: their weights ``ω_i ≥ 0``; points of weight 0 do not count.

    **Returns:**

    A non-negative scalar (``inf`` if the model is smooth, is not an
    :class:`~gflow_jax.models.base.AbstractModel`, or has no switching functions).
    """
    inf = jnp.asarray(jnp.inf, x.dtype)
    if not isinstance(model, AbstractModel) or model.is_smooth:
        return inf
    s = model.switching_functions(x)
    if s.shape[-1] == 0 or s.shape[0] == 0:
        return inf
    ratio = jnp.abs(s)
    if isinstance(model, (ShallowReLU, DeepMLP)):
        scale = model.switching_scales()
        positive = (scale > 0)[None, :]
        ratio = jnp.where(positive, ratio / jnp.where(positive, scale[None, :], 1.0), 0.0)
    ratio = jnp.where((weights > 0)[:, None], ratio, jnp.asarray(jnp.inf, ratio.dtype))
    return jnp.min(ratio)


def has_pattern_forward(model: PyTree) -> bool:
    """Whether :func:`masked_outputs` knows `model`: a :class:`~gflow_jax.ShallowReLU`, a
    ``"relu"`` :class:`~gflow_jax.DeepMLP` with at least one hidden layer, or an
    :class:`~gflow_jax.ImplicitReLU`.

    **Arguments:**

    - `model`: a model (its arrays may be abstract).

    **Returns:**

    A Python ``bool`` (static).
    """
    if isinstance(model, (ShallowReLU, ImplicitReLU)):
        return True
    return isinstance(model, DeepMLP) and model.activation == "relu" and model.depth > 0


def implicit_pattern_equilibrium(
    model: ImplicitReLU,
    x: Float[Array, "n d"],
    mask: Float[Array, "n s"],
    shift: Float[Array, "n s"] | None = None,
) -> tuple[Float[Array, "n m"], Float[Array, "n s"]]:
    """The equilibrium of an :class:`~gflow_jax.ImplicitReLU` with its pattern frozen.

    With ``D_i = diag(m_i)`` (the first ``m`` columns of `mask`) the equilibrium
    ``z = D_i(γAz + φ_i) + c_i`` is linear: ``z_i = (I − γ D_i A)⁻¹ (D_i φ_i + c_i)``, a
    dense solve per point (invertible while ``γ‖A‖₂ < 1``, since ``‖D_i‖ ≤ 1``). With the
    true pattern (``m_ij = 1{p_ij > 0}``, ``c = 0``) it is ``z*(x_i)``, to rounding rather
    than to the fixed-point solver's tolerance, and its derivatives are those of the
    region's smooth continuation (the implicit-function theorem with that ``D``). For
    ``input_map="relu"`` the injection is frozen too: ``φ = m' ⊙ Wx + c'`` with the last
    ``m`` columns ``m'`` of `mask` (and of `shift`).

    **Arguments:**

    - `model`: the :class:`~gflow_jax.ImplicitReLU`.
    - `x`: inputs ``(n, d_in)``.
    - `mask`: ``(n, s)``, columns as in ``model.switching_functions``.
    - `shift`: ``(n, s)`` or ``None`` (zero): added to ``z`` (and to ``φ``).

    **Returns:**

    ``(z, p)``: the equilibria ``(n, m)`` and the switching functions ``(n, s)``
    (``p = γAz + φ``, then ``Wx`` for ``input_map="relu"``).
    """
    width = model.width
    pre_in = x @ model.W.T
    c = jnp.zeros_like(mask) if shift is None else shift
    d = mask[:, :width]
    phi = pre_in
    if model.input_map == "relu":
        phi = mask[:, width:] * pre_in + c[:, width:]
    gA = model.gamma * model.A
    system = jnp.eye(width, dtype=gA.dtype)[None] - d[:, :, None] * gA[None]
    z = solve_without_pivoting(system, d * phi + c[:, :width])
    p = z @ gA.T + phi
    if model.input_map == "relu":
        p = jnp.concatenate([p, pre_in], axis=-1)
    return z, p


def pattern_switching_functions(
    model: PyTree, x: Float[Array, "n d"], mask: Float[Array, "n s"]
) -> Float[Array, "n s"]:
    """The switching functions of the network with its pattern frozen (see
    :func:`masked_outputs`): equal to ``model.switching_functions(x)`` on the pattern's
    region, and differentiable as its smooth continuation. For a shallow or deep network
    these are the model's own (its autodiff already follows the region); for an
    :class:`~gflow_jax.ImplicitReLU` they come from the frozen-pattern solve
    (:func:`implicit_pattern_equilibrium`), exact to rounding.

    **Arguments:**

    - `model`: see :func:`has_pattern_forward`.
    - `x`: inputs ``(n, d_in)``.
    - `mask`: ``(n, s)`` 0/1 pattern.

    **Returns:**

    ``(n, s)``.
    """
    if isinstance(model, ImplicitReLU):
        return implicit_pattern_equilibrium(model, x, mask)[1]
    return model.switching_functions(x)


def scaled_switching_functions(
    model: PyTree, x: Float[Array, "n d"], mask: Float[Array, "n s"]
) -> Float[Array, "n s"]:
    """:func:`pattern_switching_functions` divided by each switching function's scale
    (``switching_scales``, as in :func:`switching_margin`; a scale of 0 counts as 1): the
    signed, rescaling-invariant distance of each point to its kink. An
    :class:`~gflow_jax.ImplicitReLU` has no natural scale and keeps the raw values.

    **Arguments:**

    - `model`: see :func:`has_pattern_forward`.
    - `x`: inputs ``(n, d_in)``.
    - `mask`: ``(n, s)`` 0/1 pattern.

    **Returns:**

    ``(n, s)``.
    """
    s = pattern_switching_functions(model, x, mask)
    if isinstance(model, ImplicitReLU):
        return s
    scale = model.switching_scales()[None, :]
    return s / jnp.where(scale > 0, scale, 1)


def masked_outputs(
    model: PyTree,
    x: Float[Array, "n d"],
    mask: Float[Array, "n s"],
    shift: Float[Array, "n s"] | None = None,
) -> Float[Array, "n d_out"]:
    """The network with its activation pattern frozen: ``relu(z)`` replaced by ``m ⊙ z + c``.

    With ``m_ij = 1{s_ij(θ) > 0}`` (and ``c = 0``) this is ``N_θ(x_i)`` exactly, and for a
    fixed 0/1 mask it is smooth in θ (a polynomial for shallow and deep networks, a
    rational function for an implicit one): the smooth continuation of the network from
    the region of that activation pattern. For shallow and deep networks a fractional
    ``m_ij`` is a convex combination of the two one-sided networks of the switching
    surface ``s_ij = 0``. The shift ``c`` is added to the post-activations, so
    ``∂L/∂c_ij`` is the back-propagated signal ``δ_ij = ∂L/∂h_ij`` of hidden unit ``j``
    at point ``i`` (for an implicit network: of the equilibrium coordinate ``z_j``,
    through the frozen equilibrium).

    **Arguments:**

    - `model`: a :class:`~gflow_jax.ShallowReLU`, a ReLU :class:`~gflow_jax.DeepMLP` or
      an :class:`~gflow_jax.ImplicitReLU` (see :func:`has_pattern_forward`).
    - `x`: inputs ``(n, d_in)``.
    - `mask`: ``(n, s)``, columns as in ``model.switching_functions`` (layer by layer).
    - `shift`: ``(n, s)`` or ``None`` (zero).

    **Returns:**

    The outputs ``(n, d_out)``.
    """
    if isinstance(model, ShallowReLU):
        h = mask * model.switching_functions(x)
        if shift is not None:
            h = h + shift
        out = h @ model.v.T
        return out if model.c is None else out + model.c[None, :]
    if isinstance(model, ImplicitReLU):
        return _implicit_readout(model, implicit_pattern_equilibrium(model, x, mask, shift)[0])
    if not has_pattern_forward(model):
        raise TypeError(
            "masked_outputs needs a ShallowReLU, a ReLU DeepMLP or an ImplicitReLU, got "
            f"{type(model).__name__}."
        )
    h, start = x, 0
    for layer, W in enumerate(model.weights):
        z = model.multipliers[layer] * (h @ W.T)
        if model.biases is not None:
            z = z + model.biases[layer]
        width = W.shape[0]
        h = mask[:, start : start + width] * z
        if shift is not None:
            h = h + shift[:, start : start + width]
        start += width
    out = model.multipliers[-1] * (h @ model.v.T)
    return out if model.c is None else out + model.c


def _implicit_readout(model: ImplicitReLU, z: Float[Array, "n m"]) -> Float[Array, "n d_out"]:
    """The outputs ``u z + c`` of an implicit network at its equilibria `z`."""
    out = z @ model.u.T
    return out if model.c is None else out + model.c[None, :]


def pattern_forward(
    model: PyTree, x: Float[Array, "n d"], mask: Float[Array, "n s"]
) -> tuple[Float[Array, "n d_out"], Float[Array, "n s"]]:
    """``(masked_outputs(model, x, mask), pattern_switching_functions(model, x, mask))``
    from one forward pass (one frozen-pattern equilibrium solve per point for an
    :class:`~gflow_jax.ImplicitReLU`).

    **Arguments:**

    - `model`: see :func:`has_pattern_forward`.
    - `x`: inputs ``(n, d_in)``.
    - `mask`: ``(n, s)`` 0/1 pattern.

    **Returns:**

    The outputs ``(n, d_out)`` and the switching functions ``(n, s)``.
    """
    if isinstance(model, ImplicitReLU):
        z, p = implicit_pattern_equilibrium(model, x, mask)
        return _implicit_readout(model, z), p
    return masked_outputs(model, x, mask), model.switching_functions(x)
