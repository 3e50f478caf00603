"""One-hidden-layer ReLU network ``N_θ(x) = c + V relu(W x + b)``.

The architecture of Jentzen & Riekert (arXiv:2107.04479), whose gradient flows with the
generalised gradient (``relu'(0) = 0``) this library integrates.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from .._checks import (
    check_float_dtype,
    check_key,
    field_names,
    one_of,
    positive_float,
    positive_int,
)
from .activations import relu
from .base import AbstractModel

Init = Literal["normal", "he", "lecun"]
_INITS = ("normal", "he", "lecun")
_PARAMETERS = ("w", "b", "v", "c")
_WEIGHTS = ("w", "v")
_SIZE_HINT = "Use a positive size."


@final
class ShallowReLU(AbstractModel):
    """One-hidden-layer ReLU network (final class).

    ``N_θ(x) = c + Σ_j v_j relu(w_j · x + b_j)`` with ``relu'(0) = 0``, so ``jax.grad``
    of a risk is the generalised gradient of Jentzen & Riekert (arXiv:2107.04479).
    Fields (``H`` = width, ``d`` = `d_in`, ``δ`` = `d_out`):

    - `w`: ``(H, d)`` input weights, one row per neuron;
    - `b`: ``(H,)`` hidden biases (``None`` if ``use_bias=False``);
    - `v`: ``(δ, H)`` output weights;
    - `c`: ``(δ,)`` output bias (``None`` if ``use_bias=False``);
    - `frozen` (static): the fields held fixed by a flow (default ``()``).

    The parameter count is ``dim = dH + H + δH + δ`` (``dH + δH`` without biases);
    :meth:`to_flat` orders θ as in the paper (``w`` neuron by neuron, then ``b``, ``v``,
    ``c``; the absent biases are skipped). Without biases, ``N_θ(x) = Σ_j v_j relu(w_j ·
    x)`` is the network of the teacher–student literature (e.g. Safran & Shamir, with
    ``v`` set to ones and ``frozen=("v",)``).

    The risk is smooth in θ except where a switching function ``w_j · x_i + b_j``
    (:meth:`switching_functions`) vanishes at a data point.
    """

    w: Float[Array, "width d_in"]
    b: Float[Array, " width"] | None
    v: Float[Array, "d_out width"]
    c: Float[Array, " d_out"] | None
    frozen: tuple[str, ...] = eqx.field(static=True)
    is_smooth: ClassVar[bool] = False

    def __init__(
        self,
        d_in: int,
        width: int,
        d_out: int = 1,
        *,
        key: PRNGKeyArray,
        init: Init = "normal",
        scale: float = 1.0,
        use_bias: bool = True,
        frozen: tuple[str, ...] = (),
        dtype=None,
    ):
        """**Arguments:**

        - `d_in`, `width`, `d_out`: input dimension ``d``, number of neurons ``H`` and
          output dimension ``δ`` (positive ints).
        - `key`: a JAX PRNG key, e.g. ``jax.random.key(0)``.
        - `init`: the initialisation, all entries independent:
            - ``"normal"`` (default, the papers'): every entry ``N(0, scale²)``;
            - ``"he"``: ``w ~ N(0, 2 scale²/d)``, ``v ~ N(0, 2 scale²/H)``, ``b = c = 0``;
            - ``"lecun"``: ``w ~ N(0, scale²/d)``, ``v ~ N(0, scale²/H)``, ``b = c = 0``.
        - `scale`: a finite positive multiplier of the standard deviations.
        - `use_bias`: include the hidden biases ``b`` and the output bias ``c``
          (default ``True``); with ``False`` both fields are ``None`` and
          ``N_θ(x) = Σ_j v_j relu(w_j · x)``.
        - `frozen`: names among ``("w", "b", "v", "c")`` (``("w", "v")`` without
          biases) of fields a flow keeps fixed, e.g. ``frozen=("v", "c")`` trains the
          hidden layer only (the random-features regime is ``frozen=("w", "b")``). They
          stay out of ``partition(model)[0]``.
        - `dtype`: a floating dtype (default JAX's default float: float64 under x64).
        """
        d_in = positive_int("d_in", d_in, hint=_SIZE_HINT)
        width = positive_int("width", width, hint=_SIZE_HINT)
        d_out = positive_int("d_out", d_out, hint=_SIZE_HINT)
        key = check_key("key", key)
        init = one_of("init", init, _INITS)
        scale = positive_float("scale", scale)
        dtype = check_float_dtype("dtype", dtype)
        use_bias = _check_use_bias(use_bias)
        self.frozen = field_names(
            "frozen",
            frozen,
            _PARAMETERS if use_bias else _WEIGHTS,
            hint="" if use_bias else "(use_bias=False: no biases 'b', 'c')",
        )
        kw, kb, kv, kc = jax.random.split(key, 4)
        normal = lambda k, shape: jax.random.normal(k, shape, dtype)
        if init == "normal":
            self.w = scale * normal(kw, (width, d_in))
            self.b = scale * normal(kb, (width,))
            self.v = scale * normal(kv, (d_out, width))
            self.c = scale * normal(kc, (d_out,))
        else:
            gain = 2.0 if init == "he" else 1.0
            self.w = scale * math.sqrt(gain / d_in) * normal(kw, (width, d_in))
            self.b = jnp.zeros((width,), dtype)
            self.v = scale * math.sqrt(gain / width) * normal(kv, (d_out, width))
            self.c = jnp.zeros((d_out,), dtype)
        if not use_bias:
            self.b = None
            self.c = None

    # -- sizes -----------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        """Input dimension ``d``."""
        return self.w.shape[-1]

    @property
    def width(self) -> int:
        """Number of hidden neurons ``H``."""
        return self.w.shape[-2]

    @property
    def d_out(self) -> int:
        """Output dimension ``δ``."""
        return self.v.shape[-2]

    @property
    def use_bias(self) -> bool:
        """Whether the network has the biases ``b`` and ``c``."""
        return self.b is not None

    @property
    def num_params(self) -> int:
        """``dH + H + δH + δ`` (trainable or frozen); ``dH + δH`` without biases."""
        return _num_params(self.d_in, self.width, self.d_out, self.use_bias)

    # -- realisation -----------------------------------------------------------------
    def _check_x(self, x) -> Array:
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[-1] != self.d_in:
            raise ValueError(
                f"ShallowReLU expects inputs of shape (n, {self.d_in}), got {x.shape}. "
                "Reshape a 1-d batch with x[:, None]."
            )
        return x

    def switching_functions(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n width"]:
        """The pre-activations ``s_ij = w_j · x_i + b_j``.

        **Arguments:**

        - `x`: inputs ``(n, d_in)``.

        **Returns:**

        An ``(n, width)`` array in output-of-a-neuron units. ``N_θ(x_i)`` is smooth in θ
        where no ``s_ij`` is zero; neuron ``j`` is active at ``x_i`` iff ``s_ij > 0``.
        """
        s = self._check_x(x) @ self.w.T
        return s if self.b is None else s + self.b[None, :]

    def switching_scales(self) -> Float[Array, " width"]:
        """``‖(w_j, b_j)‖ = sqrt(‖w_j‖² + b_j²)``, the norm of each neuron's coefficients
        (``‖w_j‖`` without biases).

        ``s_ij / ‖(w_j, b_j)‖`` is invariant to the symmetry ``(w_j, b_j, v_j) ↦ (a w_j,
        a b_j, v_j / a)``, ``a > 0``, of the network (``relu`` is positively homogeneous).

        **Returns:**

        A ``(width,)`` array (``0`` for a degenerate neuron ``w_j = 0, b_j = 0``).
        """
        sq = jnp.sum(self.w**2, axis=-1)
        return jnp.sqrt(sq if self.b is None else sq + self.b**2)

    def __call__(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n d_out"]:
        """``N_θ(x)``.

        **Arguments:**

        - `x`: a batch ``(n, d_in)``.

        **Returns:**

        The outputs ``(n, d_out)``.
        """
        out = relu(self.switching_functions(x)) @ self.v.T
        return out if self.c is None else out + self.c[None, :]

    def well_posed(self) -> Bool[Array, ""]:
        """Always ``True``: an explicit network is defined for every θ."""
        return jnp.asarray(True)

    # -- flat parameter vector ---------------------------------------------------------
    def to_flat(self) -> Float[Array, " dim"]:
        """θ in the papers' ordering: ``w`` neuron by neuron, then ``b``, ``v``, ``c``.

        For ``d_out > 1`` the output weights are flattened row-major (output unit by
        output unit). Frozen fields are included (this is the full parameter vector);
        without biases ``b`` and ``c`` are absent from it.

        **Returns:**

        A ``(dim,)`` vector, ``dim = num_params``.
        """
        parts = (self.w.reshape(-1), self.b, self.v.reshape(-1), self.c)
        return jnp.concatenate([p for p in parts if p is not None])

    @classmethod
    def from_flat(
        cls,
        theta: Float[ArrayLike, " dim"],
        d_in: int,
        width: int,
        d_out: int = 1,
        *,
        use_bias: bool = True,
        frozen: tuple[str, ...] = (),
    ) -> ShallowReLU:
        """Inverse of :meth:`to_flat`.

        **Arguments:**

        - `theta`: a ``(d_in·width + width + d_out·width + d_out,)`` vector
          (``(d_in·width + d_out·width,)`` with ``use_bias=False``; an integer vector is
          cast to the default float); traceable.
        - `d_in`, `width`, `d_out`: the sizes.
        - `use_bias`, `frozen`: as in the constructor.

        **Returns:**

        A :class:`ShallowReLU` in the dtype of `theta`.
        """
        d_in = positive_int("d_in", d_in, hint=_SIZE_HINT)
        width = positive_int("width", width, hint=_SIZE_HINT)
        d_out = positive_int("d_out", d_out, hint=_SIZE_HINT)
        use_bias = _check_use_bias(use_bias)
        theta = jnp.asarray(theta)
        dim = _num_params(d_in, width, d_out, use_bias)
        if theta.shape != (dim,):
            formula = (
                "d_in*width + width + d_out*width + d_out"
                if use_bias
                else "d_in*width + d_out*width"
            )
            raise ValueError(
                f"theta must have shape ({dim},) = ({formula},) for d_in={d_in}, "
                f"width={width}, d_out={d_out}, use_bias={use_bias}; got {theta.shape}."
            )
        if not jnp.issubdtype(theta.dtype, jnp.floating):
            theta = theta.astype(jnp.zeros(()).dtype)
        i = 0
        parts = []
        layout = (
            (d_in * width, (width, d_in)),
            (width, (width,)),
            (d_out * width, (d_out, width)),
            (d_out, (d_out,)),
        )
        for size, shape in layout if use_bias else layout[::2]:
            parts.append(theta[i : i + size].reshape(shape))
            i += size
        template = eqx.filter_eval_shape(
            cls,
            d_in,
            width,
            d_out,
            key=jax.random.key(0),
            dtype=theta.dtype,
            use_bias=use_bias,
            frozen=frozen,
        )
        if use_bias:
            return eqx.tree_at(lambda m: (m.w, m.b, m.v, m.c), template, tuple(parts))
        return eqx.tree_at(lambda m: (m.w, m.v), template, tuple(parts))


def _check_use_bias(use_bias) -> bool:
    if not isinstance(use_bias, (bool, np.bool_)):
        raise TypeError(f"use_bias must be True or False, got {use_bias!r}.")
    return bool(use_bias)


def _num_params(d_in: int, width: int, d_out: int, use_bias: bool) -> int:
    weights = d_in * width + d_out * width
    return weights + width + d_out if use_bias else weights
