"""Deep fully connected networks, smooth or ReLU.

``h_0 = x``, ``h_l = s(a_l W_l h_{l−1} + b_l)`` for ``l = 1..L``, ``N_θ(x) = a_{L+1} V h_L + c``,
where ``a_l`` is ``1`` except for the NTK parametrisation (``a_l = 1/√fan_in``). With
``init="positive"`` this is the network of Chatterjee's convergence theorem (arXiv:2203.16462:
first-layer weights 0, hidden weights strictly positive, output weights of size ``M``), whose
gradient flow the ball criterion of :mod:`gflow_jax.certificates.ball` certifies when the
inputs are linearly independent (``n ≤ d``, see :func:`linearly_independent_data`).
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from .._checks import (
    check_float_dtype,
    check_key,
    field_names,
    int_sequence,
    one_of,
    positive_float,
    positive_int,
)
from .activations import ACTIVATIONS, SMOOTH_ACTIVATIONS, smooth_relu
from .base import AbstractModel

DeepInit = Literal["lecun", "he", "ntk", "positive"]
_INITS = ("lecun", "he", "ntk", "positive")


def _check_widths(widths) -> tuple[int, ...]:
    try:
        return int_sequence("widths", widths, min_len=2)
    except ValueError as err:
        raise ValueError(
            f"{err} widths = (d_in, h_1, ..., h_L, d_out): e.g. widths=(16, 32, 32, 1) for "
            "two hidden layers of width 32."
        ) from None


@functools.partial(jax.jit, static_argnames=("widths", "init", "dtype"))
def _init_weights(key, M, *, widths, init, dtype):
    """``(W_1, ..., W_L), V`` from one random draw (one compiled kernel per architecture)."""
    shapes = [(widths[i + 1], widths[i]) for i in range(len(widths) - 1)]
    total = sum(a * b for a, b in shapes)
    if init == "positive":
        z = jax.random.uniform(key, (total,), dtype, minval=0.5, maxval=1.5)
    else:
        z = jax.random.normal(key, (total,), dtype)
    arrays, start = [], 0
    for layer, (fan_out, fan_in) in enumerate(shapes):
        a = z[start : start + fan_out * fan_in].reshape(fan_out, fan_in)
        start += fan_out * fan_in
        if init == "lecun":
            a = a / math.sqrt(fan_in)
        elif init == "he":
            a = a * math.sqrt(2.0 / fan_in)
        elif init == "positive":
            a = jnp.zeros_like(a) if layer == 0 and len(shapes) > 1 else a / fan_in
        arrays.append(a)
    return tuple(arrays[:-1]), M * arrays[-1]


@final
class DeepMLP(AbstractModel):
    """Feedforward network of any depth, ``widths = (d_in, h_1, ..., h_L, d_out)`` (final).

    ``h_0 = x``, ``h_l = s(a_l W_l h_{l−1} + b_l)`` (``l = 1..L``) and
    ``N_θ(x) = a_{L+1} V h_L + c`` with ``s`` = ``ACTIVATIONS[activation]``. ``L = 0``
    (``widths = (d_in, d_out)``) is the affine model ``V x + c``. Fields:

    - `weights`: tuple ``(W_1, ..., W_L)``, ``W_l`` of shape ``(h_l, h_{l−1})``;
    - `biases`: tuple ``(b_1, ..., b_L)`` (``None`` if ``use_bias=False``);
    - `v`: ``(d_out, h_L)`` output weights; `c`: ``(d_out,)`` output bias (or ``None``);
    - static: `activation` (name), `sharpness` (of ``"smooth_relu"``), `multipliers`
      ``(a_1, ..., a_{L+1})``, `frozen` (fields a flow keeps fixed, default ``()``).

    **Activations**: ``"tanh"``, ``"sigmoid"``, ``"softplus"``, ``"smooth_relu"``
    (``softplus(k u)/k`` with ``k = sharpness``) are C^∞ and strictly increasing, as
    Chatterjee's theorem (arXiv:2203.16462) requires; ``"relu"`` (``relu'(0) = 0``) is
    allowed for comparison but is not C²: then :attr:`is_smooth` is False (unless
    ``L = 0``) and the hidden pre-activations are the :meth:`switching_functions`.
    """

    weights: tuple[Float[Array, "h_out h_in"], ...]
    biases: tuple[Float[Array, " h_out"], ...] | None
    v: Float[Array, "d_out h_L"]
    c: Float[Array, " d_out"] | None
    activation: str = eqx.field(static=True)
    sharpness: float = eqx.field(static=True)
    multipliers: tuple[float, ...] = eqx.field(static=True)
    frozen: tuple[str, ...] = eqx.field(static=True)

    def __init__(
        self,
        widths,
        activation: str = "tanh",
        *,
        key: PRNGKeyArray,
        init: DeepInit = "lecun",
        use_bias: bool = True,
        output_scale: float = 1.0,
        sharpness: float = 10.0,
        frozen: tuple[str, ...] = (),
        dtype=None,
    ):
        """**Arguments:**

        - `widths`: ``(d_in, h_1, ..., h_L, d_out)``, positive ints, length ``≥ 2``.
        - `activation`: a name in ``ACTIVATIONS`` (default ``"tanh"``).
        - `key`: a JAX PRNG key, e.g. ``jax.random.key(0)``.
        - `init` (``M`` = `output_scale` multiplies ``V`` in every case):
            - ``"lecun"``: ``W_l ~ N(0, 1/fan_in)``, ``V ~ N(0, M²/h_L)``, biases 0;
            - ``"he"``: ``W_l ~ N(0, 2/fan_in)``, ``V ~ N(0, 2M²/h_L)``, biases 0;
            - ``"ntk"``: the NTK *parametrisation*: all weights ``N(0, 1)`` (``V`` times
              ``M``) and multipliers ``a_l = 1/√fan_in`` in the forward pass (the function
              at initialisation is distributed as under ``"lecun"``, the flow differs);
            - ``"positive"`` (Chatterjee's initialisation): ``W_1 = 0``; hidden weights
              ``W_l[i, j] ~ U(0.5, 1.5)/fan_in`` for ``l ≥ 2`` (strictly positive, rows sum
              to about 1, so a constant hidden vector keeps its size); output weights
              ``V[k, j] ~ M · U(0.5, 1.5)/h_L`` (so ``V h ≈ M · mean(h)``); biases 0. With
              ``W_1 = 0`` every input gives the same hidden state ``h_1 = s(0)``; for
              ``tanh`` (``s(0) = 0``) the output at initialisation is exactly 0, so
              ``L(θ_0) = mean(y²)`` does not grow with ``M`` while the Polyak–Łojasiewicz
              constant grows like ``M²`` (with ``s(0) ≠ 0`` the initial output is
              ``O(M)``).
        - `use_bias`: include the biases ``b_l`` and ``c``.
        - `output_scale`: ``M > 0``.
        - `sharpness`: ``k > 0`` of ``"smooth_relu"``.
        - `frozen`: names among ``("weights", "biases", "v", "c")`` a flow keeps fixed, e.g.
          ``frozen=("v", "c")`` for a fixed output layer; a tuple field freezes every layer.
        - `dtype`: a floating dtype (default JAX's default float: float64 under x64).
        """
        widths = _check_widths(widths)
        activation = one_of("activation", activation, tuple(sorted(ACTIVATIONS)))
        init = one_of("init", init, _INITS)
        key = check_key("key", key)
        output_scale = positive_float("output_scale", output_scale)
        sharpness = positive_float("sharpness", sharpness)
        dtype = check_float_dtype("dtype", dtype)
        present = ("weights", "biases", "v", "c") if use_bias else ("weights", "v")
        self.frozen = field_names(
            "frozen", frozen, present, hint="" if use_bias else "(use_bias=False: no biases)"
        )
        weights, v = _init_weights(
            key, jnp.asarray(output_scale, dtype), widths=widths, init=init, dtype=dtype
        )
        self.weights = weights
        self.biases = tuple(jnp.zeros((w,), dtype) for w in widths[1:-1]) if use_bias else None
        self.v = v
        self.c = jnp.zeros((widths[-1],), dtype) if use_bias else None
        self.activation = activation
        self.sharpness = float(sharpness)
        if init == "ntk":
            self.multipliers = tuple(1.0 / math.sqrt(w) for w in widths[:-1])
        else:
            self.multipliers = (1.0,) * (len(widths) - 1)

    # -- sizes -----------------------------------------------------------------------
    @property
    def widths(self) -> tuple[int, ...]:
        """``(d_in, h_1, ..., h_L, d_out)``."""
        return tuple(int(W.shape[-1]) for W in self.weights) + tuple(
            int(s) for s in self.v.shape[-1:-3:-1]
        )

    @property
    def depth(self) -> int:
        """Number ``L`` of hidden layers."""
        return len(self.weights)

    @property
    def d_in(self) -> int:
        """Input dimension."""
        return self.widths[0]

    @property
    def d_out(self) -> int:
        """Output dimension."""
        return self.widths[-1]

    @property
    def num_params(self) -> int:
        """Number of weights and biases (trainable or frozen)."""
        w = self.widths
        n = sum(w[i] * w[i + 1] for i in range(len(w) - 1))
        if self.biases is not None:
            n += sum(w[1:])
        return n

    @property
    def is_smooth(self) -> bool:
        """True if ``θ ↦ N_θ(x)`` is C^∞: a smooth activation, or no hidden layer."""
        return self.activation in SMOOTH_ACTIVATIONS or self.depth == 0

    # -- realisation -----------------------------------------------------------------
    def sigma(self, u: ArrayLike) -> Array:
        """The activation ``s`` (with this model's `sharpness` for ``"smooth_relu"``).

        **Arguments:**

        - `u`: pre-activations, any shape.

        **Returns:**

        ``s(u)`` elementwise, same shape as `u`.
        """
        if self.activation == "smooth_relu":
            return smooth_relu(u, self.sharpness)
        return ACTIVATIONS[self.activation](u)

    def _forward(self, x) -> tuple[list[Array], list[Array]]:
        """``([h_0, ..., h_L], [z_1, ..., z_L])`` with ``z_l = a_l W_l h_{l−1} + b_l``."""
        h = self._check_input(x)
        states, pre = [h], []
        for layer, W in enumerate(self.weights):
            z = self.multipliers[layer] * (h @ W.T)
            if self.biases is not None:
                z = z + self.biases[layer]
            h = self.sigma(z)
            pre.append(z)
            states.append(h)
        return states, pre

    def hidden(self, x: Float[ArrayLike, "n d_in"]) -> list[Float[Array, "n h"]]:
        """Hidden states ``[h_0, h_1, ..., h_L]`` (``h_0 = x``) for a batch ``(n, d_in)``.

        ``h_l = s(z_l)`` with ``z_l = a_l W_l h_{l−1} + b_l`` (``a_l`` the `multipliers`).

        **Arguments:**

        - `x`: inputs ``(n, d_in)``.

        **Returns:**

        A list of ``L + 1`` arrays, ``h_l`` of shape ``(n, h_l)`` (``h_0 = x`` of shape
        ``(n, d_in)``); the output layer is not included.
        """
        return self._forward(x)[0]

    def switching_functions(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n s"]:
        """The hidden pre-activations ``z_l = a_l W_l h_{l−1} + b_l`` of a ReLU network.

        **Arguments:**

        - `x`: inputs ``(n, d_in)``.

        **Returns:**

        For ``activation="relu"`` the ``(n, h_1 + ... + h_L)`` array ``[z_1, ..., z_L]``
        (layer by layer); for a smooth model an ``(n, 0)`` array.
        """
        if self.is_smooth:
            x = self._check_input(x)
            return jnp.zeros((x.shape[0], 0), self.v.dtype)
        return jnp.concatenate(self._forward(x)[1], axis=-1)

    def switching_scales(self) -> Float[Array, " s"]:
        """``sqrt(a_l² ‖W_l[j]‖² + b_l[j]²)`` per hidden neuron, layer by layer.

        The norm of the coefficients of ``z_l[j]`` as an affine function of ``h_{l−1}``:
        ``z_l[j] / scale`` is invariant to rescaling a neuron, ``(W_l[j], b_l[j]) ↦ α(W_l[j],
        b_l[j])`` with the ``j``-th column of the next layer divided by ``α > 0``.

        **Returns:**

        An array matching the columns of :meth:`switching_functions` (empty if smooth).
        """
        if self.is_smooth:
            return jnp.zeros((0,), self.v.dtype)
        scales = []
        for layer, W in enumerate(self.weights):
            sq = self.multipliers[layer] ** 2 * jnp.sum(W**2, axis=-1)
            if self.biases is not None:
                sq = sq + self.biases[layer] ** 2
            scales.append(jnp.sqrt(sq))
        return jnp.concatenate(scales)

    def __call__(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n d_out"]:
        """``N_θ(x)``.

        **Arguments:**

        - `x`: a batch ``(n, d_in)``.

        **Returns:**

        The outputs ``(n, d_out)``.
        """
        h = self.hidden(x)[-1]
        out = self.multipliers[-1] * (h @ self.v.T)
        if self.c is not None:
            out = out + self.c
        return out

    def well_posed(self) -> Bool[Array, ""]:
        """Always ``True``: an explicit network is defined for every θ."""
        return jnp.asarray(True)

    def _check_input(self, x) -> Array:
        x = jnp.asarray(x)
        d_in = self.d_in
        if x.ndim != 2 or x.shape[-1] != d_in:
            raise ValueError(
                f"DeepMLP expects inputs of shape (n, {d_in}), got {x.shape}. "
                "Reshape a 1-d batch with x[:, None]."
            )
        return x


class IndependentData(NamedTuple):
    """Output of :func:`linearly_independent_data`.

    - ``x``: ``(n, d)`` inputs with unit-norm rows;
    - ``y``: ``(n, 1)`` targets, normalised to ``mean(y²) = 1``;
    - ``gram_lambda_min``: ``λ_min(X Xᵀ)``, the smallest eigenvalue of the ``n × n``
      Gram matrix ``(x_i · x_j)`` (equal to ``λ_min(XᵀX)`` for the ``d × n`` matrix ``X``
      with the inputs as columns, as in Chatterjee's theorem); ``> 0`` iff the inputs are
      linearly independent.
    """

    x: Float[Array, "n d"]
    y: Float[Array, "n 1"]
    gram_lambda_min: float


def linearly_independent_data(
    n: int, d: int, key: PRNGKeyArray, *, allow_dependent: bool = False, dtype=None
) -> IndependentData:
    """A data set for Chatterjee's theorem: ``n ≤ d`` linearly independent unit inputs.

    Inputs ``x_i = g_i/‖g_i‖`` with ``g_i ~ N(0, I_d)`` (linearly independent with
    probability 1 when ``n ≤ d``), targets ``y_i ~ N(0, 1)`` rescaled so that
    ``(1/n) Σ y_i² = 1`` (then a network whose output is 0 has mean-squared risk 1).

    **Arguments:**

    - `n`, `d`: number of inputs and their dimension (positive ints).
    - `key`: a JAX PRNG key.
    - `allow_dependent`: ``n > d`` violates the theorem's hypothesis and raises
      ``ValueError`` unless this is True (for studies that cross ``n = d``; then
      ``gram_lambda_min ≈ 0``).
    - `dtype`: a floating dtype (default JAX's default float).

    **Returns:**

    An :class:`IndependentData`.
    """
    n, d = positive_int("n", n), positive_int("d", d)
    key = check_key("key", key)
    dtype = check_float_dtype("dtype", dtype)
    if n > d and not allow_dependent:
        raise ValueError(
            f"n = {n} > d = {d}: n inputs in R^d cannot be linearly independent (the theorem "
            "needs n <= d). Pass allow_dependent=True to build such a data set anyway."
        )
    kx, ky = jax.random.split(key)
    g = jax.random.normal(kx, (n, d), dtype)
    x = g / jnp.linalg.norm(g, axis=1, keepdims=True)
    y = jax.random.normal(ky, (n, 1), dtype)
    y = y / jnp.sqrt(jnp.mean(y**2))
    xn = np.asarray(x, np.float64)
    lam = float(max(np.linalg.eigvalsh(xn @ xn.T)[0], 0.0))
    if n <= d and lam <= 1e-12:
        raise ValueError(  # probability 0 in exact arithmetic; a float32 draw could hit it
            f"drew nearly dependent inputs (λ_min = {lam:.2e}); use another key."
        )
    return IndependentData(x=x, y=y, gram_lambda_min=lam)
