"""Population risk ``L(θ) = ∫ ‖N_θ(x) − f(x)‖² μ(dx)`` for an input law ``μ``.

Two ways to evaluate it, one constructor each:

- :meth:`PopulationRisk.uniform_1d` — **exact** (closed form) for a 1-d
  :class:`gflow_jax.ShallowReLU` (``d_in = d_out = 1``), ``μ = U[a, b]`` and a
  piecewise-linear target; its ``jax.grad`` is the generalised gradient ``G`` of
  Jentzen & Riekert (arXiv:2107.04479).
- :meth:`PopulationRisk.gaussian` — **exact** (closed form) for a
  :class:`gflow_jax.ShallowReLU` student in any dimension, ``μ = N(mean, cov)`` and a
  ``ShallowReLU`` / affine teacher (or their sum); ``jax.grad`` is the generalised
  gradient.
- ``PopulationRisk(target, measure, nodes=...)`` — **quadrature** for any model, input
  dimension and measure (:class:`~gflow_jax.risks.measures.Uniform`,
  :class:`~gflow_jax.risks.measures.Gaussian` or your own
  :class:`~gflow_jax.risks.measures.AbstractMeasure`): a fixed weighted rule
  ``L_n(θ) = Σ_k ω_k ‖N_θ(x_k) − f(x_k)‖²`` built once at construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._numerics import tree_norm
from ..models.base import partition
from ._kinks import switching_margin
from .base import AbstractPiecewiseSmoothRisk
from .exact1d import _ExactUniform1DRisk
from .gaussian import _GaussianTeacherStudentRisk
from .measures import AbstractMeasure, QuadratureError, _seed, check_num_nodes
from .targets import AbstractPiecewiseLinearTarget, AbstractTarget, as_target


def _model_dtype(model):
    leaves = jtu.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    if not leaves:
        raise ValueError("the model has no floating-point arrays.")
    return jnp.result_type(*leaves)


@eqx.filter_jit
def _weighted_risk(model, x, y, weights) -> Float[Array, ""]:
    dtype = _model_dtype(model)
    out = model(x.astype(dtype))
    if out.shape != y.shape:
        raise ValueError(
            f"model output shape {out.shape} does not match the target's {y.shape} at the "
            "quadrature nodes; check the model's d_out against the target."
        )
    r = out - y.astype(dtype)
    return jnp.sum(weights.astype(dtype) * jnp.sum(r * r, axis=-1))


def _check_rule(x, w, d: int, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.asarray(x, float), np.asarray(w, float)
    if x.ndim == 1 and d == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != d or w.shape != (x.shape[0],):
        raise ValueError(
            f"{what} must return nodes of shape (N, {d}) and weights of shape (N,); got "
            f"{x.shape} and {w.shape}."
        )
    if x.shape[0] < n:
        raise ValueError(f"{what} returned {x.shape[0]} nodes, fewer than the {n} requested.")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(w))):
        raise ValueError(f"{what} returned non-finite nodes or weights.")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"{what} returned negative weights or weights summing to 0.")
    return x, w


@final
class PopulationRisk(AbstractPiecewiseSmoothRisk):
    """``L(θ) = ∫ ‖N_θ(x) − f(x)‖² μ(dx)`` by a fixed quadrature rule.

    ``L_n(θ) = Σ_k ω_k ‖N_θ(x_k) − f(x_k)‖²`` with nodes ``x_k`` and weights ``ω_k`` from
    ``measure.nodes_and_weights(nodes, key)``, computed once here; the target values
    ``f(x_k)`` too. So ``L_n`` is a deterministic, jittable, vmappable function of θ and
    ``jax.grad`` gives the quadrature of the generalised gradient ``G`` (``relu'(0) =
    0``). The risk follows the model's dtype; units: squared output units.

    **Expected error for ReLU networks** (see :mod:`gflow_jax.risks.measures`): the
    integrands have kinks (risk) and jumps (gradient) on the neurons' hyperplanes, so a
    tensor grid of mesh ``h`` gives ``O(h²)`` in ``L`` and only ``O(h)`` in ``∇L``;
    scrambled Sobol' roughly ``O(N^{-1/2-1/(2d)})`` in ``∇L``. In particular a flow on a
    quadrature risk can "converge" to ``L_n ≈ 0`` where the true ``L`` is ``O(h²)`` — check
    with :meth:`quadrature_error`. For 1-d ``ShallowReLU`` on ``U[a, b]`` use the exact
    :meth:`uniform_1d` instead.
    """

    x: Float[Array, "N d"]
    y: Float[Array, "N d_out"]
    weights: Float[Array, " N"]
    target: AbstractTarget
    measure: AbstractMeasure
    nodes: int = eqx.field(static=True)
    seed: tuple[int, ...] = eqx.field(static=True)
    rule: str = eqx.field(static=True)

    def __init__(
        self,
        target: AbstractTarget | Callable,
        measure: AbstractMeasure,
        nodes: int = 4096,
        *,
        key=None,
    ):
        """**Arguments:**

        - `target`: a :class:`gflow_jax.AbstractTarget` or a callable ``f(x: (n, d)) ->
          (n,)`` or ``(n, d_out)``.
        - `measure`: an :class:`AbstractMeasure` on ``R^d`` with ``d = d_in`` of the model,
          e.g. ``Uniform(0., 1., d)`` or ``Gaussian(mean, cov)``.
        - `nodes`: requested number of nodes ``n`` (the rule may round up: a full tensor
          grid ``m^d`` or a power of two for Sobol'; see :attr:`num_nodes`).
        - `key`: ``None`` (seed 0), an int seed or a ``jax.random`` key for randomised
          rules.
        """
        if not isinstance(measure, AbstractMeasure):
            raise TypeError(
                f"measure must be an AbstractMeasure (e.g. Uniform(0., 1., d) or "
                f"Gaussian(mean, cov)), got {type(measure).__name__}."
            )
        self.target = as_target(target)
        self.measure = measure
        self.nodes = check_num_nodes(nodes)
        self.seed = tuple(_seed(key))
        x, w = _check_rule(
            *measure.nodes_and_weights(self.nodes, list(self.seed)),
            measure.dim,
            self.nodes,
            f"{type(measure).__name__}.nodes_and_weights",
        )
        self.x, self.weights = jnp.asarray(x), jnp.asarray(w)
        self.y = self._target_values(self.x)
        self.rule = measure.rule_name(self.nodes)

    def _target_values(self, x: Array) -> Array:
        y = jnp.asarray(self.target(x))
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(f"target returned shape {y.shape} for {x.shape[0]} inputs.")
        if not bool(jnp.all(jnp.isfinite(y))):
            raise ValueError("the target is not finite at some quadrature nodes.")
        return y.astype(x.dtype)

    @classmethod
    def uniform_1d(
        cls, target: AbstractPiecewiseLinearTarget, a: float, b: float
    ) -> _ExactUniform1DRisk:
        """The exact risk ``(1/(b−a)) ∫_a^b (N_θ(x) − f(x))² dx`` under ``μ = U[a, b]``.

        Closed-form piecewise-polynomial integration: no quadrature error, and
        ``jax.grad`` is exactly the generalised gradient ``G`` (``relu'(0) = 0``): the
        true gradient wherever no neuron is degenerate (``w_j = b_j = 0``), and at a
        degenerate neuron zero ``w_j``/``b_j`` entries (the left derivative in ``b_j``).
        Second derivatives (Hessian-vector products) differentiate the closed form of
        ``G``. Jittable and vmappable over models (``H + M`` cells for width ``H`` and
        ``M`` target pieces); the risk follows the model's dtype; the target and the
        interval are constants (not differentiated).

        **Arguments:**

        - `target`: an :class:`~gflow_jax.risks.targets.AbstractPiecewiseLinearTarget`
          of one variable (``Affine`` with a scalar slope, a scalar ``Constant``,
          ``PiecewiseLinear``).
        - `a`, `b`: the interval, finite concrete numbers with ``a < b``.

        **Returns:**

        An :class:`~gflow_jax.risks.base.AbstractPiecewiseSmoothRisk` ``risk`` with
        ``risk(model)`` for a :class:`gflow_jax.ShallowReLU` with ``d_in = d_out = 1``,
        and ``risk.kink_margin(model)`` (zero where the Hessian may jump: a kink on
        ``a`` or ``b``, see :mod:`gflow_jax.risks.exact1d`),
        ``risk.generalised_gradient(model)`` (``G`` as a model-shaped pytree),
        ``risk.quadrature_error(model)`` (zero errors) and ``risk.breakpoints`` (the
        target's knots on ``[a, b]``).
        """
        return _ExactUniform1DRisk(target, a, b)

    @classmethod
    def gaussian(cls, teacher, mean=None, cov=None) -> _GaussianTeacherStudentRisk:
        """The exact teacher–student risk ``E‖N_θ(x) − f(x)‖²`` under ``x ~ N(mean, cov)``.

        Closed form in any dimension ``d`` (no quadrature): with ``u = w · x + b ~ N(m,
        C)``, ``m = w · μ + b``, ``C = wᵀ Σ w``, the risk is a sum over pairs of neurons
        of ``E[relu(u₁) relu(u₂)]`` (``Φ``, ``φ`` and the bivariate normal CDF ``Φ₂``;
        the degree-1 arc-cosine kernel of Cho & Saul when ``μ = 0`` and there are no
        biases), ``E[relu(u)] = m Φ(m/s) + s φ(m/s)`` and, for an affine teacher,
        ``E[relu(u) (x − μ)] = Σ w Φ(m/s)``. ``Φ₂`` is Genz's algorithm (absolute error
        ``≲ 1e-15``). Cost ``O((n + k)² (d + 20))`` for ``n`` student and ``k`` teacher
        neurons. Formulas and derivation: ``docs/gaussian_risk.md`` and
        :mod:`gflow_jax.risks.gaussian`.

        ``jax.grad`` is the generalised gradient ``G`` (``relu'(0) = 0``) through custom
        JVPs with the exact partial derivatives, also at parallel neurons (``ρ = ±1``,
        e.g. student = teacher) and at ``w_j = 0`` (where ``1{u_j > 0} = 1{b_j > 0}``).
        The risk is ``C²`` except at degenerate neurons ``(w_j, b_j) = 0``;
        ``jax.hessian`` differentiates the closed-form partials (exact where no two
        neurons are parallel and no ``w_j`` vanishes, finite everywhere). Jittable and
        vmappable over students; the risk follows the student's dtype (float32 works,
        to float32 accuracy); the teacher and the Gaussian are constants.

        **Arguments:**

        - `teacher`: the target ``f``: a :class:`gflow_jax.ShallowReLU` (with or without
          biases, any ``d_out``), an :class:`gflow_jax.Affine` (scalar output; a scalar
          slope multiplies every coordinate) or :class:`gflow_jax.Constant`, or a tuple
          or list of these, meaning their **sum** (e.g. ``(relu_teacher, gf.Affine(a,
          0.))``); all with the same ``d`` and ``d_out``.
        - `mean`: ``μ``, a ``(d,)`` vector (a scalar for ``d = 1``); default ``0``.
        - `cov`: ``Σ``, a symmetric positive-definite ``(d, d)`` matrix; default ``I``.
          ``d`` comes from the teacher, else from `mean` or `cov`.

        **Returns:**

        An :class:`~gflow_jax.risks.base.AbstractPiecewiseSmoothRisk` ``risk`` with
        ``risk(model)`` for a :class:`gflow_jax.ShallowReLU` student with ``d_in = d``
        and the teacher's ``d_out`` (``use_bias=False`` and ``frozen=`` work as
        usual), ``risk.kink_margin(model)`` (``min_j ‖(w_j, b_j)‖``, the distance to
        the non-``C²`` set), ``risk.target(x)`` (the teacher, for quadrature or Monte
        Carlo comparisons), ``risk.measure`` (the :class:`gflow_jax.Gaussian`) and
        ``risk.quadrature_error(model)`` (zero errors).
        """
        return _GaussianTeacherStudentRisk(teacher, mean, cov)

    @property
    def num_nodes(self) -> int:
        """Number ``N`` of nodes actually used (``≥ nodes``)."""
        return int(self.x.shape[0])

    def __call__(self, model: PyTree) -> Float[Array, ""]:
        """``L_n(θ)`` at θ = `model` (squared output units)."""
        return _weighted_risk(model, self.x, self.y, self.weights)

    def kink_margin(self, model: PyTree) -> Float[Array, ""]:
        """How far θ is from the set where ``L_n`` is not smooth.

        As :meth:`gflow_jax.EmpiricalRisk.kink_margin`, with the quadrature nodes as the
        points: ``min_{k, j} |s_kj(θ)| / scale_j`` (``|w_j · x_k + b_j| /
        sqrt(‖w_j‖² + b_j²)`` for a :class:`~gflow_jax.ShallowReLU`). It concerns the
        discretised ``L_n``; the true ``L`` is smoother (its kinks are integrated out).

        **Arguments:**

        - `model`: the model at θ.

        **Returns:**

        ``0`` when a node sits on a kink, ``+inf`` for a smooth model or one that is not
        an :class:`~gflow_jax.models.base.AbstractModel`.
        """
        return switching_margin(model, self.x.astype(_model_dtype(model)), self.weights)

    def quadrature_error(self, model: PyTree) -> QuadratureError:
        """Estimate the integration error of ``L_n`` and ``∇L_n`` at ``θ = model``.

        Compares this rule with the finer ``measure.reference_rule(nodes, key)``: for
        tensor Gauss rules the grid with twice the nodes per axis, for Sobol' an
        independent scrambling with 8 times the points. The reference error is smaller
        (``O(h)``–``O(h²)``), so ``|L_n − L_ref|`` and ``‖∇L_n − ∇L_ref‖`` estimate the
        errors of this rule. It is an order-of-magnitude estimate: for kinked
        integrands the error of a fixed rule fluctuates with the kinks' positions
        relative to the nodes (factors of a few either way are normal). The reference
        rule is built in NumPy when this is traced; the evaluation is jittable and
        vmappable over models.

        **Arguments:**

        - `model`: the model at θ.

        **Returns:**

        A :class:`~gflow_jax.risks.measures.QuadratureError` of scalars: `risk` ``L_n(θ)``
        (squared output units), `risk_error` ``|L_n − L_ref|``, `grad_norm` ``‖∇L_n‖``
        and `grad_error` ``‖∇L_n − ∇L_ref‖`` (Euclidean norms over the trainable arrays).
        """
        x2, w2 = _check_rule(
            *self.measure.reference_rule(self.nodes, list(self.seed)),
            self.measure.dim,
            1,
            f"{type(self.measure).__name__}.reference_rule",
        )
        x2 = jnp.asarray(x2, self.x.dtype)
        y2, w2 = self._target_values(x2), jnp.asarray(w2, self.x.dtype)
        return _compare_rules(model, (self.x, self.y, self.weights), (x2, y2, w2))


@eqx.filter_jit
def _compare_rules(model, rule, reference) -> QuadratureError:
    """Value and gradient of the weighted risk with two rules (see ``quadrature_error``)."""
    params, static = partition(model)

    def value_and_grad(x, y, w):
        return jax.value_and_grad(lambda p: _weighted_risk(eqx.combine(p, static), x, y, w))(params)

    risk, grad = value_and_grad(*rule)
    risk2, grad2 = value_and_grad(*reference)
    diff = jtu.tree_map(jnp.subtract, grad, grad2)
    return QuadratureError(
        risk=risk,
        risk_error=jnp.abs(risk - risk2),
        grad_norm=tree_norm(grad),
        grad_error=tree_norm(diff),
    )
