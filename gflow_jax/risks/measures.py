"""Input measures ``μ`` that supply quadrature rules for population risks.

A measure turns ``∫ g dμ`` into a weighted sum ``Σ_k ω_k g(x_k)`` through
``nodes_and_weights(n, key) -> (x: (N, d), ω: (N,))`` with ``N ≥ n`` nodes. The rules are
built once, in NumPy, when a :class:`gflow_jax.PopulationRisk` is constructed, so the risk
is a deterministic function of θ.

Rules (``rule=``):

- ``"gauss"``: tensor-product Gauss rule, ``m = ⌈n^{1/d}⌉`` nodes per axis (``N = m^d``):
  Gauss–Legendre for :class:`Uniform` (a single ``m``-point rule for ``m ≤ 128``, else
  composite 16-point panels), Gauss–Hermite mapped by the Cholesky factor for
  :class:`Gaussian` (``m ≤ 128``);
- ``"sobol"``: scrambled Sobol' points (``scipy.stats.qmc.Sobol``, ``N = 2^⌈log2 n⌉``,
  seed from ``key``), mapped affinely (uniform) or by ``Φ^{-1}`` and the Cholesky factor
  (Gaussian), equal weights ``1/N``;
- ``"auto"`` (default): ``"gauss"`` for ``d ≤ 3`` (and ``m ≤ 128`` for Gaussians),
  ``"sobol"`` otherwise.

**Accuracy on ReLU integrands.** Gauss rules are spectrally accurate only for smooth
integrands. For a ReLU network the risk integrand ``(N_θ − f)²`` has kinks (jumps of the
derivative) on the hyperplanes ``w_j·x + b_j = 0`` and the integrands of the generalised
gradient have *jumps* there (the indicators ``1{w_j·x + b_j > 0}``). With mesh width
``h ~ m^{-1}`` the error of a tensor rule is then ``O(h²)`` in ``L`` and ``O(h)`` in the
gradient (not better than the midpoint rule); scrambled Sobol' errors behave like
``O(N^{-1/2 - 1/(2d)})`` for the discontinuous gradient integrands (between Monte Carlo
``N^{-1/2}`` and QMC ``N^{-1}``). Use :meth:`PopulationRisk.quadrature_error` to measure
it at a given θ, and the exact 1-d risk (:meth:`PopulationRisk.uniform_1d`) when it
applies.

A user-defined measure subclasses :class:`AbstractMeasure` and implements ``dim`` and
``nodes_and_weights``; optionally ``reference_rule`` (used for error estimates) and
``sample`` (Monte Carlo).
"""

from __future__ import annotations

import abc
import math
from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
import scipy.stats
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import one_of, positive_int

Rule = Literal["auto", "gauss", "sobol"]
_RULES = ("auto", "gauss", "sobol")

MAX_NODES = 2**24
"""Upper bound on the number of quadrature nodes of one rule (memory guard)."""

_GAUSS_SINGLE_MAX = 128  # largest single Gauss–Legendre rule; beyond: composite panels
_GAUSS_PANEL = 16  # order of the composite Gauss–Legendre panels
_HERMITE_MAX = 128  # largest Gauss–Hermite rule per axis (weights underflow beyond ~350)


class QuadratureError(NamedTuple):
    """Estimated integration error of a population risk at one parameter point θ.

    - ``risk``: ``L(θ)`` with the risk's own rule;
    - ``risk_error``: estimate of ``|L(θ) − L_exact(θ)|`` (risk units);
    - ``grad_norm``: ``‖∇L(θ)‖`` with the risk's own rule;
    - ``grad_error``: estimate of ``‖∇L(θ) − G_exact(θ)‖`` (Euclidean norm over all
      trainable arrays).

    A "converged" risk ``L ≤ risk_tol`` is only meaningful if ``risk_error ≪ risk_tol``;
    a "critical point" ``‖∇L‖ ≈ 0`` only if ``grad_error`` is small compared with the
    gradient norms the flow still cares about.
    """

    risk: Float[Array, "..."]
    risk_error: Float[Array, "..."]
    grad_norm: Float[Array, "..."]
    grad_error: Float[Array, "..."]


# ----------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------


def check_num_nodes(n) -> int:
    """Validate a requested node count ``1 ≤ n ≤ MAX_NODES``.

    **Arguments:**

    - `n`: the requested number of nodes (an int; a ``TypeError``/``ValueError`` if it
      is not a positive int or exceeds :data:`MAX_NODES`).

    **Returns:**

    `n` as a Python ``int``.
    """
    n = positive_int("the number of quadrature nodes", n)
    if n > MAX_NODES:
        raise ValueError(
            f"{n} quadrature nodes exceed the limit {MAX_NODES}; use fewer nodes "
            "(rule='sobol' needs far fewer than a tensor grid in high dimension)."
        )
    return int(n)


def _seed(key) -> list[int]:
    """Entropy for ``numpy.random.SeedSequence`` from ``None``, an int or a JAX key."""
    if key is None:
        return [0]
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if key < 0:
            raise ValueError(f"an integer seed must be >= 0, got {key}.")
        return [int(key)]
    if isinstance(key, (list, tuple)) and all(isinstance(k, (int, np.integer)) for k in key):
        return [int(k) for k in key]
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        return [int(x) for x in np.asarray(key, np.uint64).ravel()]
    raise TypeError(f"key must be None, a non-negative int or a jax.random key, got {key!r}.")


def _per_axis(n: int, d: int) -> int:
    """Smallest ``m`` with ``m^d ≥ n``."""
    m = max(1, round(n ** (1.0 / d)))
    while m**d < n:
        m += 1
    while m > 1 and (m - 1) ** d >= n:
        m -= 1
    return m


def _tensor(nodes_1d: list[np.ndarray], weights_1d: list[np.ndarray]):
    grids = np.meshgrid(*nodes_1d, indexing="ij")
    x = np.stack([g.ravel() for g in grids], axis=-1)
    wgrids = np.meshgrid(*weights_1d, indexing="ij")
    w = np.prod(np.stack([g.ravel() for g in wgrids], axis=-1), axis=-1)
    return x, w


def gauss_legendre_01(m: int) -> tuple[np.ndarray, np.ndarray]:
    """``m``-node Gauss–Legendre rule on ``[0, 1]`` (weights sum to 1).

    A single rule for ``m ≤ 128``; beyond, composite 16-point panels (``⌈m/16⌉``
    panels), which avoids the ``O(m²)`` cost of huge single rules and has the same
    ``O(h)``/``O(h²)`` behaviour on kinked integrands.

    **Arguments:**

    - `m`: the requested number of nodes (``≥ 1``).

    **Returns:**

    ``(x, w)``: NumPy float64 nodes in ``(0, 1)`` and positive weights summing to 1,
    both of shape ``(m,)`` for ``m ≤ 128``, else ``(16⌈m/16⌉,)``.
    """
    if m <= _GAUSS_SINGLE_MAX:
        t, w = np.polynomial.legendre.leggauss(m)
        return (t + 1.0) / 2.0, w / 2.0
    panels = math.ceil(m / _GAUSS_PANEL)
    t, w = np.polynomial.legendre.leggauss(_GAUSS_PANEL)
    left = np.arange(panels) / panels
    x = (left[:, None] + (t[None, :] + 1.0) / (2.0 * panels)).ravel()
    return x, np.tile(w / (2.0 * panels), panels)


def _sobol_unit(d: int, n: int, key) -> np.ndarray:
    k = max(0, math.ceil(math.log2(n)))
    rng = np.random.default_rng(np.random.SeedSequence(_seed(key)))
    return scipy.stats.qmc.Sobol(d, scramble=True, rng=rng).random_base2(k)


def sobol_reference_size(n: int) -> int:
    """Size of the reference rule used to estimate the error of an ``n``-point Sobol' rule.

    ``8 n`` (capped at :data:`MAX_NODES`), independently scrambled. Comparing two
    scramblings of the *same* size is not reliable for ReLU integrands: in 1-d a
    scrambled Sobol' rule is a stratified sample, and its gradient error is dominated by
    the one stratum holding each kink, which takes one of two values depending on which
    side of the kink the point falls -- two scramblings then agree exactly with high
    probability. A larger independent rule has a smaller error, so ``|L_n − L_ref|``
    estimates the error of ``L_n`` itself.

    **Arguments:**

    - `n`: the number of points of the rule whose error is estimated.

    **Returns:**

    ``min(8 n, MAX_NODES)``, an ``int``.
    """
    return min(8 * n, MAX_NODES)


def _other_key(key) -> list[int]:
    """A second, independent seed derived from ``key`` (for error estimates)."""
    return _seed(key) + [0x5EED]


# ----------------------------------------------------------------------------------
# Measures
# ----------------------------------------------------------------------------------


class AbstractMeasure(eqx.Module):
    """A finite (usually probability) measure ``μ`` on ``R^d`` that supplies quadrature.

    Subclasses implement :attr:`dim` and :meth:`nodes_and_weights`. Weights must be
    finite and non-negative; their sum is the total mass (1 for a probability measure).
    """

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Input dimension ``d``."""

    @abc.abstractmethod
    def nodes_and_weights(self, n: int, key=None) -> tuple[np.ndarray, np.ndarray]:
        """Nodes ``x: (N, d)`` and weights ``ω: (N,)``, ``N ≥ n``, as NumPy float64.

        **Arguments:**

        - `n`: the requested number of nodes (``1 ≤ n ≤ MAX_NODES``).
        - `key`: seeds randomised rules: ``None``, an int seed or a ``jax.random`` key;
          deterministic rules ignore it.

        **Returns:**

        ``(x, ω)``: nodes of shape ``(N, d)`` (input units) and finite, non-negative
        weights of shape ``(N,)`` summing to the total mass of ``μ``, NumPy float64.
        """

    def reference_rule(self, n: int, key=None) -> tuple[np.ndarray, np.ndarray]:
        """A second, more accurate rule; ``|L_n − L_ref|`` estimates the error of ``L_n``.

        Default: ``8n`` nodes (capped at :data:`MAX_NODES`) with an independent seed.

        **Arguments:**

        - `n`: the number of nodes of the rule whose error is estimated.
        - `key`: the seed of that rule (``None``, an int seed or a ``jax.random`` key);
          the reference rule uses a seed derived from it.

        **Returns:**

        ``(x, ω)`` as from :meth:`nodes_and_weights`.
        """
        return self.nodes_and_weights(sobol_reference_size(n), _other_key(key))

    def rule_name(self, n: int) -> str:
        """Name of the rule :meth:`nodes_and_weights` uses for ``n`` nodes.

        **Arguments:**

        - `n`: the requested number of nodes.

        **Returns:**

        A ``str``; by default the class name.
        """
        return type(self).__name__

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        """``n`` i.i.d. samples from ``μ`` (Monte Carlo), if the measure supports it.

        **Arguments:**

        - `key`: a ``jax.random`` key.
        - `n`: the number of samples.

        **Returns:**

        An ``(n, d)`` array. The default raises ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement sample().")


def _check_rule(rule) -> str:
    return one_of("rule", rule, _RULES)


class Uniform(AbstractMeasure):
    """Uniform probability measure on the box ``[low, high]^d``.

    ``low`` and ``high`` are scalars (a cube) or length-``d`` sequences (a box), with
    ``low < high`` componentwise. See the module docstring for the rules.
    """

    low: tuple[float, ...] = eqx.field(static=True)
    high: tuple[float, ...] = eqx.field(static=True)
    rule: str = eqx.field(static=True)

    def __init__(
        self, low: ArrayLike = 0.0, high: ArrayLike = 1.0, d: int = 1, *, rule: Rule = "auto"
    ):
        """**Arguments:**

        - `low`, `high`: the box's lower and upper corners (input units), finite scalars
          or length-`d` sequences with ``low < high`` componentwise (default ``0``, ``1``).
        - `d`: the dimension, a positive int (default ``1``).
        - `rule`: ``"auto"`` (default), ``"gauss"`` or ``"sobol"`` (see the module
          docstring).
        """
        d = positive_int("d", d)
        lo = np.broadcast_to(np.asarray(low, float), (int(d),))
        hi = np.broadcast_to(np.asarray(high, float), (int(d),))
        if np.ndim(low) > 1 or np.ndim(high) > 1:
            raise ValueError("low and high must be scalars or length-d sequences.")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo < hi)):
            raise ValueError(f"need finite low < high, got low={low}, high={high}.")
        self.low, self.high = tuple(map(float, lo)), tuple(map(float, hi))
        self.rule = _check_rule(rule)

    @property
    def dim(self) -> int:
        return len(self.low)

    def _resolved(self) -> str:
        return ("gauss" if self.dim <= 3 else "sobol") if self.rule == "auto" else self.rule

    def rule_name(self, n: int) -> str:
        """Name of the rule :meth:`nodes_and_weights` uses for ``n`` nodes.

        **Arguments:**

        - `n`: the requested number of nodes.

        **Returns:**

        ``"sobol"``, or for the Gauss rule with ``m`` nodes per axis (``m^d ≥ n``, ``m``
        smallest) ``"gauss-legendre"`` (``m ≤ 128``) or ``"composite-gauss-legendre"``.
        """
        if self._resolved() == "sobol":
            return "sobol"
        m = _per_axis(n, self.dim)
        return "gauss-legendre" if m <= _GAUSS_SINGLE_MAX else "composite-gauss-legendre"

    def _map(self, u: np.ndarray) -> np.ndarray:
        lo, hi = np.asarray(self.low), np.asarray(self.high)
        return lo + (hi - lo) * u

    def _grid(self, m: int):
        t, w = gauss_legendre_01(m)
        m_eff = t.size
        if m_eff**self.dim > MAX_NODES:
            raise ValueError(
                f"a tensor grid of {m_eff}^{self.dim} nodes exceeds {MAX_NODES}; use fewer "
                "nodes or rule='sobol'."
            )
        u, w = _tensor([t] * self.dim, [w] * self.dim)
        return self._map(u), w

    def nodes_and_weights(self, n: int, key=None):
        """A quadrature rule for the uniform measure on the box (see the module docstring).

        Gauss: the tensor product of :func:`gauss_legendre_01` with ``m`` nodes per axis
        (``m`` smallest with ``m^d ≥ n``), mapped affinely onto ``[low, high]``; a grid of
        more than :data:`MAX_NODES` nodes is a ``ValueError``. Sobol': ``2^⌈log2 n⌉``
        scrambled points mapped affinely, equal weights.

        **Arguments:**

        - `n`: the requested number of nodes (``1 ≤ n ≤ MAX_NODES``).
        - `key`: seeds the Sobol' scrambling: ``None`` (seed ``0``), a non-negative int
          or a ``jax.random`` key; the Gauss rule ignores it.

        **Returns:**

        ``(x, ω)``: NumPy float64 nodes ``(N, d)`` in the box and weights ``(N,)``
        summing to 1, ``N ≥ n``.
        """
        n = check_num_nodes(n)
        if self._resolved() == "gauss":
            return self._grid(_per_axis(n, self.dim))
        u = _sobol_unit(self.dim, n, key)
        return self._map(u), np.full(u.shape[0], 1.0 / u.shape[0])

    def reference_rule(self, n: int, key=None):
        """Gauss: the grid with twice as many nodes per axis; Sobol': an independent
        scrambling with 8 times as many points (see :func:`sobol_reference_size`).

        **Arguments:**

        - `n`: the number of nodes of the rule whose error is estimated.
        - `key`: the Sobol' seed of that rule (the reference uses a seed derived from
          it); the Gauss rule ignores it.

        **Returns:**

        ``(x, ω)`` as from :meth:`nodes_and_weights`.
        """
        n = check_num_nodes(n)
        if self._resolved() == "gauss":
            return self._grid(2 * _per_axis(n, self.dim))
        return self.nodes_and_weights(sobol_reference_size(n), _other_key(key))

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        """``n`` i.i.d. uniform samples from the box ``[low, high]``.

        **Arguments:**

        - `key`: a ``jax.random`` key.
        - `n`: the number of samples.

        **Returns:**

        An ``(n, d)`` array of JAX's default float dtype.
        """
        lo, hi = jnp.asarray(self.low), jnp.asarray(self.high)
        return jax.random.uniform(key, (n, self.dim), lo.dtype, lo, hi)


class Gaussian(AbstractMeasure):
    """Gaussian probability measure ``N(mean, cov)`` on ``R^d``.

    ``mean`` is a scalar (``d = 1``) or a length-``d`` vector; ``cov`` a ``(d, d)``
    symmetric positive-definite matrix (a scalar variance is accepted for ``d = 1``).
    Nodes are ``mean + L z`` with ``cov = L Lᵀ`` (Cholesky) and ``z`` from a
    Gauss–Hermite tensor rule (probabilists', ``≤ 128`` nodes per axis) or scrambled
    Sobol' points pushed through ``Φ^{-1}``.
    """

    mean: tuple[float, ...] = eqx.field(static=True)
    cov: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    rule: str = eqx.field(static=True)

    def __init__(self, mean: ArrayLike = 0.0, cov: ArrayLike = 1.0, *, rule: Rule = "auto"):
        """**Arguments:**

        - `mean`: a finite scalar (``d = 1``) or a length-``d`` vector; it sets ``d``
          (default ``0``).
        - `cov`: a finite, symmetric positive-definite ``(d, d)`` matrix, or a scalar
          variance for ``d = 1`` (default ``1``).
        - `rule`: ``"auto"`` (default), ``"gauss"`` or ``"sobol"`` (see the module
          docstring).
        """
        mu = np.atleast_1d(np.asarray(mean, float))
        if mu.ndim != 1 or not np.all(np.isfinite(mu)):
            raise ValueError(f"mean must be a finite scalar or 1-d vector, got {mean!r}.")
        d = mu.size
        sigma = np.asarray(cov, float)
        if sigma.ndim == 0 and d == 1:
            sigma = sigma.reshape(1, 1)
        if sigma.shape != (d, d):
            raise ValueError(f"cov must have shape ({d}, {d}) to match mean, got {sigma.shape}.")
        if not np.all(np.isfinite(sigma)):
            raise ValueError("cov must be finite.")
        if not np.allclose(sigma, sigma.T, rtol=1e-12, atol=1e-14 * np.abs(sigma).max()):
            raise ValueError("cov must be symmetric.")
        try:
            np.linalg.cholesky(sigma)
        except np.linalg.LinAlgError:
            raise ValueError(
                "cov must be symmetric positive definite (its Cholesky factorisation "
                "failed); for a degenerate Gaussian, map a lower-dimensional one yourself."
            ) from None
        self.mean = tuple(map(float, mu))
        self.cov = tuple(tuple(map(float, row)) for row in sigma)
        self.rule = _check_rule(rule)

    @property
    def dim(self) -> int:
        return len(self.mean)

    @property
    def cholesky(self) -> np.ndarray:
        """Lower-triangular ``L`` with ``L Lᵀ = cov``."""
        return np.linalg.cholesky(np.asarray(self.cov))

    def _resolved(self, n: int) -> str:
        if self.rule != "auto":
            return self.rule
        if self.dim <= 3 and _per_axis(n, self.dim) <= _HERMITE_MAX:
            return "gauss"
        return "sobol"

    def rule_name(self, n: int) -> str:
        """Name of the rule :meth:`nodes_and_weights` uses for ``n`` nodes.

        **Arguments:**

        - `n`: the requested number of nodes.

        **Returns:**

        ``"gauss-hermite"`` or ``"sobol"``.
        """
        return "gauss-hermite" if self._resolved(n) == "gauss" else "sobol"

    def _map(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(self.mean) + z @ self.cholesky.T

    def _grid(self, m: int, limit: int):
        if m > limit:
            raise ValueError(
                f"Gauss–Hermite needs {m} nodes per axis, more than the supported {limit}; "
                "use fewer nodes or rule='sobol'."
            )
        t, w = np.polynomial.hermite_e.hermegauss(m)
        w = w / w.sum()
        z, w = _tensor([t] * self.dim, [w] * self.dim)
        return self._map(z), w

    def _sobol(self, n: int, key):
        u = _sobol_unit(self.dim, n, key)
        z = scipy.special.ndtri(u)
        return self._map(z), np.full(u.shape[0], 1.0 / u.shape[0])

    def nodes_and_weights(self, n: int, key=None):
        """A quadrature rule for ``N(mean, cov)`` (see the module docstring).

        Nodes ``mean + L z``: Gauss: ``z`` on the tensor grid of the probabilists'
        Gauss–Hermite rule with ``m`` nodes per axis (``m`` smallest with ``m^d ≥ n``;
        ``m > 128`` is a ``ValueError``), weights normalised to sum to 1. Sobol':
        ``z = Φ^{-1}(u)`` for ``2^⌈log2 n⌉`` scrambled points ``u``, equal weights.

        **Arguments:**

        - `n`: the requested number of nodes (``1 ≤ n ≤ MAX_NODES``).
        - `key`: seeds the Sobol' scrambling: ``None`` (seed ``0``), a non-negative int
          or a ``jax.random`` key; the Gauss rule ignores it.

        **Returns:**

        ``(x, ω)``: NumPy float64 nodes ``(N, d)`` and weights ``(N,)`` summing to 1,
        ``N ≥ n``.
        """
        n = check_num_nodes(n)
        if self._resolved(n) == "gauss":
            return self._grid(_per_axis(n, self.dim), _HERMITE_MAX)
        return self._sobol(n, key)

    def reference_rule(self, n: int, key=None):
        """Gauss–Hermite: twice as many nodes per axis; Sobol': an independent scrambling
        with 8 times as many points (see :func:`sobol_reference_size`).

        **Arguments:**

        - `n`: the number of nodes of the rule whose error is estimated.
        - `key`: the Sobol' seed of that rule (the reference uses a seed derived from
          it); the Gauss rule ignores it.

        **Returns:**

        ``(x, ω)`` as from :meth:`nodes_and_weights` (the Gauss reference allows up to
        ``256`` nodes per axis).
        """
        n = check_num_nodes(n)
        if self._resolved(n) == "gauss":
            return self._grid(2 * _per_axis(n, self.dim), 2 * _HERMITE_MAX)
        return self._sobol(sobol_reference_size(n), _other_key(key))

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        """``n`` i.i.d. samples ``mean + L z`` with ``z ~ N(0, I)`` and ``cov = L Lᵀ``.

        **Arguments:**

        - `key`: a ``jax.random`` key.
        - `n`: the number of samples.

        **Returns:**

        An ``(n, d)`` array of JAX's default float dtype.
        """
        z = jax.random.normal(key, (n, self.dim))
        return jnp.asarray(self.mean) + z @ jnp.asarray(self.cholesky).T
