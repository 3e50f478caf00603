"""One-hidden-layer ReLU network ``N_θ(x) = c + V relu(W x + b)`` (MATH.md §1.1)."""

from __future__ import annotations

import math
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .activations import relu

Init = Literal["normal", "he", "lecun"]


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}. Use a positive size.")
    return int(value)


class ShallowReLU(eqx.Module):
    """One-hidden-layer ReLU network of MATH.md §1.1.

    ``N_θ(x) = c + Σ_j v_j relu(w_j · x + b_j)`` with ``relu'(0) = 0`` (the generalised
    gradient of Jentzen–Riekert). Fields (``H`` = width, ``d`` = ``d_in``,
    ``δ`` = ``d_out``):

    - ``w``: ``(H, d)`` input weights, one row per neuron;
    - ``b``: ``(H,)`` hidden biases;
    - ``v``: ``(δ, H)`` output weights;
    - ``c``: ``(δ,)`` output bias.

    Parameter count ``dim = dH + H + δH + δ``.

    **Initialisation** (``init=``):

    - ``"normal"`` (default, the papers'): every entry i.i.d. ``N(0, scale²)``;
    - ``"he"``: ``w ~ N(0, 2/d)``, ``v ~ N(0, 2/H)``, ``b = c = 0`` scaled by ``scale``;
    - ``"lecun"``: ``w ~ N(0, 1/d)``, ``v ~ N(0, 1/H)``, ``b = c = 0``, scaled by ``scale``.

    ``dtype`` defaults to JAX's default float (float64 when x64 is enabled).
    """

    w: Float[Array, "width d_in"]
    b: Float[Array, " width"]
    v: Float[Array, "d_out width"]
    c: Float[Array, " d_out"]

    def __init__(
        self,
        d_in: int,
        width: int,
        d_out: int = 1,
        *,
        key: PRNGKeyArray,
        init: Init = "normal",
        scale: float = 1.0,
        dtype=None,
    ):
        d_in = _check_size("d_in", d_in)
        width = _check_size("width", width)
        d_out = _check_size("d_out", d_out)
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite positive number, got {scale!r}.")
        dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
        kw, kb, kv, kc = jax.random.split(key, 4)
        normal = lambda k, shape: jax.random.normal(k, shape, dtype)
        if init == "normal":
            self.w = scale * normal(kw, (width, d_in))
            self.b = scale * normal(kb, (width,))
            self.v = scale * normal(kv, (d_out, width))
            self.c = scale * normal(kc, (d_out,))
        elif init in ("he", "lecun"):
            gain = 2.0 if init == "he" else 1.0
            self.w = scale * math.sqrt(gain / d_in) * normal(kw, (width, d_in))
            self.b = jnp.zeros((width,), dtype)
            self.v = scale * math.sqrt(gain / width) * normal(kv, (d_out, width))
            self.c = jnp.zeros((d_out,), dtype)
        else:
            raise ValueError(f"init must be 'normal', 'he' or 'lecun', got {init!r}.")

    # -- sizes -----------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.w.shape[-1]

    @property
    def width(self) -> int:
        return self.w.shape[-2]

    @property
    def d_out(self) -> int:
        return self.v.shape[-2]

    @property
    def num_params(self) -> int:
        return self.d_in * self.width + self.width + self.d_out * self.width + self.d_out

    # -- realisation -----------------------------------------------------------------
    def hidden(self, x: Float[Array, "n d_in"]) -> Float[Array, "n width"]:
        """Pre-activations ``w_j · x_i + b_j`` for a batch of inputs."""
        return x @ self.w.T + self.b

    def __call__(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n d_out"]:
        """``N_θ(x)`` for a batch ``x`` of shape ``(n, d_in)``; returns ``(n, d_out)``."""
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[-1] != self.d_in:
            raise ValueError(
                f"ShallowReLU expects inputs of shape (n, {self.d_in}), got {x.shape}. "
                "Reshape a 1-d batch with x[:, None]."
            )
        return relu(self.hidden(x)) @ self.v.T + self.c

    # -- flat parameter vector (MATH.md §1.1 ordering) -------------------------------
    def to_flat(self) -> Float[Array, " dim"]:
        """θ in the papers' ordering: ``w`` neuron by neuron, then ``b``, ``v``, ``c``.

        For ``d_out > 1`` the output weights are flattened row-major (output unit by
        output unit), as in MATH.md §1.1 for ``δ > 1``.
        """
        return jnp.concatenate([self.w.reshape(-1), self.b, self.v.reshape(-1), self.c])

    @classmethod
    def from_flat(
        cls, theta: Float[ArrayLike, " dim"], d_in: int, width: int, d_out: int = 1
    ) -> ShallowReLU:
        """Inverse of :meth:`to_flat`."""
        d_in, width, d_out = (
            _check_size("d_in", d_in),
            _check_size("width", width),
            _check_size("d_out", d_out),
        )
        theta = jnp.asarray(theta)
        dim = d_in * width + width + d_out * width + d_out
        if theta.shape != (dim,):
            raise ValueError(
                f"theta must have shape ({dim},) = (d_in*width + width + d_out*width + d_out,)"
                f" for d_in={d_in}, width={width}, d_out={d_out}; got {theta.shape}."
            )
        if not jnp.issubdtype(theta.dtype, jnp.floating):
            theta = theta.astype(jnp.zeros(()).dtype)
        i = 0
        parts = []
        for size, shape in (
            (d_in * width, (width, d_in)),
            (width, (width,)),
            (d_out * width, (d_out, width)),
            (d_out, (d_out,)),
        ):
            parts.append(theta[i : i + size].reshape(shape))
            i += size
        template = eqx.filter_eval_shape(
            cls, d_in, width, d_out, key=jax.random.key(0), dtype=theta.dtype
        )
        return eqx.tree_at(lambda m: (m.w, m.b, m.v, m.c), template, tuple(parts))
