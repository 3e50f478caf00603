"""Deep fully connected networks with smooth activations (MATH.md §3.3).

``h_0 = x``, ``h_l = s(a_l W_l h_{l−1} + b_l)`` for ``l = 1..L``, ``N_θ(x) = a_{L+1} V h_L + c``,
where ``a_l`` is ``1`` except for the NTK parametrisation (``a_l = 1/√fan_in``). With
``init="positive"`` this is the network of Chatterjee's theorem (first-layer weights 0,
hidden weights strictly positive, output weights of size ``M``), whose gradient flow the
ball criterion of :mod:`gflow_jax.certificates.ball` certifies when the inputs are linearly
independent (``n ≤ d``, see :func:`linearly_independent_data`).
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .activations import ACTIVATIONS, SMOOTH_ACTIVATIONS, smooth_relu

DeepInit = Literal["lecun", "he", "ntk", "positive"]
_INITS = ("lecun", "he", "ntk", "positive")


def _check_widths(widths) -> tuple[int, ...]:
    try:
        widths = tuple(widths)
    except TypeError:
        raise TypeError(
            f"widths must be a sequence of ints (d_in, h_1, ..., h_L, d_out), got {widths!r}."
        ) from None
    if len(widths) < 2:
        raise ValueError(
            f"widths must have length >= 2 (d_in, ..., d_out), got {widths!r}; "
            "e.g. widths=(16, 32, 32, 1) for two hidden layers of width 32."
        )
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)):
            raise TypeError(f"every entry of widths must be an int, got {widths!r}.")
        if w < 1:
            raise ValueError(f"every entry of widths must be >= 1, got {widths!r}.")
    return tuple(int(w) for w in widths)


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


class DeepMLP(eqx.Module):
    """Feedforward network of any depth: ``widths = (d_in, h_1, ..., h_L, d_out)``.

    ``h_0 = x``, ``h_l = s(a_l W_l h_{l−1} + b_l)`` (``l = 1..L``) and
    ``N_θ(x) = a_{L+1} V h_L + c`` with ``s`` = ``ACTIVATIONS[activation]``. ``L = 0``
    (``widths = (d_in, d_out)``) is the affine model ``V x + c``. Fields:

    - ``weights``: tuple ``(W_1, ..., W_L)``, ``W_l`` of shape ``(h_l, h_{l−1})``;
    - ``biases``: tuple ``(b_1, ..., b_L)`` (``None`` if ``use_bias=False``);
    - ``v``: ``(d_out, h_L)`` output weights; ``c``: ``(d_out,)`` output bias (or ``None``);
    - static: ``activation`` (name), ``sharpness`` (of ``"smooth_relu"``), ``multipliers``
      ``(a_1, ..., a_{L+1})``.

    **Activations**: ``"tanh"``, ``"sigmoid"``, ``"softplus"``, ``"smooth_relu"``
    (``softplus(k u)/k`` with ``k = sharpness``) are C^∞ and strictly increasing, as
    Chatterjee's theorem requires; ``"relu"`` (``relu'(0) = 0``) is allowed for comparison
    but is not C², so :func:`gflow_jax.certificates.ball.ball_criterion` warns on it.

    **Initialisation** (``init=``; ``M`` = ``output_scale`` multiplies ``V`` in every case):

    - ``"lecun"``: ``W_l ~ N(0, 1/fan_in)``, ``V ~ N(0, M²/h_L)``, biases 0;
    - ``"he"``: ``W_l ~ N(0, 2/fan_in)``, ``V ~ N(0, 2M²/h_L)``, biases 0;
    - ``"ntk"``: the NTK *parametrisation*: all weights ``N(0, 1)`` (``V`` times ``M``)
      and multipliers ``a_l = 1/√fan_in`` in the forward pass (so the function at
      initialisation is distributed as under ``"lecun"``, but the gradient flow differs);
    - ``"positive"`` (Chatterjee, MATH.md §3.3): ``W_1 = 0``; hidden weights
      ``W_l[i, j] ~ U(0.5, 1.5)/fan_in`` for ``l ≥ 2`` (strictly positive, rows sum to
      about 1, so a constant hidden vector keeps its size); output weights
      ``V[k, j] ~ M · U(0.5, 1.5)/h_L`` (so ``V h ≈ M · mean(h)``); biases 0. With
      ``W_1 = 0`` every input gives the same hidden state ``h_1 = s(0)``; for ``tanh``
      (``s(0) = 0``) the network output at initialisation is exactly 0, so
      ``L(θ_0) = mean(y²)`` does not grow with ``M`` while the PL constant ``α`` grows like
      ``M²`` (MATH.md §3.3 caveat: with ``s(0) ≠ 0`` the initial output is ``O(M)``).

    ``dtype`` defaults to JAX's default float (float64 when x64 is enabled). All arrays
    are plain arrays, so ``eqx.is_inexact_array`` (and hence the flows) see every
    weight and bias as trainable.
    """

    weights: tuple[Float[Array, "h_out h_in"], ...]
    biases: tuple[Float[Array, " h_out"], ...] | None
    v: Float[Array, "d_out h_L"]
    c: Float[Array, " d_out"] | None
    activation: str = eqx.field(static=True)
    sharpness: float = eqx.field(static=True)
    multipliers: tuple[float, ...] = eqx.field(static=True)

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
        dtype=None,
    ):
        widths = _check_widths(widths)
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}."
            )
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {init!r}.")
        for name, value in (("output_scale", output_scale), ("sharpness", sharpness)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
                raise ValueError(f"{name} must be a finite positive number, got {value!r}.")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite positive number, got {value!r}.")
        dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"dtype must be a floating dtype, got {dtype}.")
        weights, v = _init_weights(
            key, jnp.asarray(float(output_scale), dtype), widths=widths, init=init, dtype=dtype
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
        return self.widths[0]

    @property
    def d_out(self) -> int:
        return self.widths[-1]

    @property
    def num_params(self) -> int:
        w = self.widths
        n = sum(w[i] * w[i + 1] for i in range(len(w) - 1))
        if self.biases is not None:
            n += sum(w[1:])
        return n

    @property
    def is_smooth(self) -> bool:
        """True if the activation is C^∞ (all but ``"relu"``)."""
        return self.activation in SMOOTH_ACTIVATIONS

    # -- realisation -----------------------------------------------------------------
    def sigma(self, u: ArrayLike) -> Array:
        """The activation ``s`` (with this model's ``sharpness`` for ``"smooth_relu"``)."""
        if self.activation == "smooth_relu":
            return smooth_relu(u, self.sharpness)
        return ACTIVATIONS[self.activation](u)

    def hidden(self, x: Float[ArrayLike, "n d_in"]) -> list[Float[Array, "n h"]]:
        """Hidden states ``[h_0, h_1, ..., h_L]`` for a batch of inputs."""
        h = self._check_input(x)
        out = [h]
        for layer, W in enumerate(self.weights):
            z = self.multipliers[layer] * (h @ W.T)
            if self.biases is not None:
                z = z + self.biases[layer]
            h = self.sigma(z)
            out.append(h)
        return out

    def __call__(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n d_out"]:
        """``N_θ(x)`` for a batch ``x`` of shape ``(n, d_in)``; returns ``(n, d_out)``."""
        h = self.hidden(x)[-1]
        out = self.multipliers[-1] * (h @ self.v.T)
        if self.c is not None:
            out = out + self.c
        return out

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
      Gram matrix ``(x_i · x_j)`` (equal to ``λ_min`` of MATH.md's ``XᵀX`` with the
      inputs as columns); ``> 0`` iff the inputs are linearly independent.
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

    ``n > d`` violates the theorem's hypothesis and raises ``ValueError`` unless
    ``allow_dependent=True`` (for studies that cross ``n = d``; then
    ``gram_lambda_min ≈ 0``). Returns :class:`IndependentData`.
    """
    for name, value in (("n", n), ("d", d)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be a positive int, got {value!r}.")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")
    if n > d and not allow_dependent:
        raise ValueError(
            f"n = {n} > d = {d}: n inputs in R^d cannot be linearly independent (the theorem "
            "needs n <= d). Pass allow_dependent=True to build such a data set anyway."
        )
    dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
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
