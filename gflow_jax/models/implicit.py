"""Implicit (equilibrium) ReLU network (Gao & Gao, arXiv:2205.07463).

The hidden state of input ``x`` is the equilibrium

    z* = relu(γ A z* + φ(x)),      φ(x) = W x  or  relu(W x),

and the output is ``N(x) = u z* (+ c)``. If ``γ‖A‖₂ < 1`` the map
``z ↦ relu(γAz + φ)`` is a contraction (``relu`` is 1-Lipschitz), so ``z*`` exists, is
unique, and Picard iteration from ``z = 0`` converges at the linear rate ``γ‖A‖₂``.

**Gradients** go through ``z*`` by the implicit function theorem, never by unrolling.
With ``D = diag(1{γAz* + φ > 0})`` (so ``relu'(0) = 0``) the tangent
of the equilibrium solves ``(I − γDA) ż = D(γȦ z* + φ̇)``; reverse mode solves the
transposed system ``(I − γAᵀD) λ = g``, ``μ = Dλ``, ``∂L/∂A = γ μ z*ᵀ``,
``∂L/∂φ = μ``. Both systems are solved by a Neumann (Picard) iteration, which
contracts at the same rate ``≤ γ‖A‖₂`` as the forward solve. Forward mode and
higher derivatives (Hessian-vector products) work too.

**Failures are reported, never raised** (a flow or an ensemble must not abort): a
fixed-point solve that does not converge within ``max_steps`` (or produces non-finite
values) makes the network output NaN, so the risk is non-finite and the flow stops
``DIVERGED``; its gradient is NaN, never silently wrong. The contraction condition
itself is checked by :meth:`ImplicitReLU.well_posed` (``γ‖A‖₂ < 1 − margin``), which
the flow evaluates at every accepted step and reports as ``ILL_POSED``.
"""

from __future__ import annotations

import functools as ft
import math
import warnings
from collections.abc import Mapping
from typing import ClassVar, Literal, NamedTuple, final

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from .._checks import (
    check_float_dtype,
    check_key,
    field_names,
    is_concrete,
    nonneg_float,
    one_of,
    positive_float,
    positive_int,
    real_float,
    unit_interval_float,
)
from .._defaults import defaults
from .._numerics import spectral_norm
from .activations import relu
from .base import AbstractModel

__all__ = ["Equilibrium", "ImplicitReLU", "solve_equilibrium"]

InputMap = Literal["linear", "relu"]
Solver = Literal["picard", "newton"]
_INPUT_MAPS = ("linear", "relu")
_SOLVERS = ("picard", "newton")
_PARAMETERS = ("A", "W", "u", "c")


# ----------------------------------------------------------------------------------
# The equilibrium solve and its implicit derivative (pure functions)
# ----------------------------------------------------------------------------------


class _SolveConfig(NamedTuple):
    """Hashable solver settings (a non-differentiable argument of the custom JVP)."""

    solver: str
    rtol: float
    atol: float
    max_steps: int


def _picard_map(z, args):
    """``z ↦ relu(γ A z + φ)`` on a batch ``z: (n, m)`` (rows) or a single ``z: (m,)``."""
    gA, phi = args
    return relu(z @ gA.T + phi)


def _max_norm(tree):
    """``optx.max_norm`` in the default float dtype: ``FixedPointIteration`` initialises
    its error state as ``jnp.array(inf)``, so float32 models under ``jax_enable_x64``
    would otherwise change the loop-carry dtype."""
    return optx.max_norm(tree).astype(jnp.asarray(jnp.inf).dtype)


def _solve(config: _SolveConfig, gA, phi):
    """Solve ``z = relu(gA z + φ)`` from ``z = 0``: ``(z, num_steps, success)``."""
    if config.solver == "picard":
        # One fixed-point problem for the whole batch: the stopping rule is the worst row.
        sol = optx.fixed_point(
            _picard_map,
            optx.FixedPointIteration(rtol=config.rtol, atol=config.atol, norm=_max_norm),
            jnp.zeros_like(phi),
            (gA, phi),
            max_steps=config.max_steps,
            throw=False,
        )
        z, steps = sol.value, sol.stats["num_steps"]
        ok = sol.result == optx.RESULTS.successful
    else:
        # Semismooth Newton on the root problem z − relu(gA z + φ) = 0, one input at a
        # time (the Jacobian I − D gA is m×m per input).
        def one(phi_i):
            sol = optx.fixed_point(
                _picard_map,
                optx.Newton(rtol=config.rtol, atol=config.atol),
                jnp.zeros_like(phi_i),
                (gA, phi_i),
                max_steps=config.max_steps,
                throw=False,
            )
            return sol.value, sol.stats["num_steps"], sol.result == optx.RESULTS.successful

        z, steps, ok = jax.vmap(one)(phi)
        steps, ok = jnp.max(steps), jnp.all(ok)
    ok = ok & jnp.all(jnp.isfinite(z))
    return z, jnp.asarray(steps, jnp.int32), ok


class _NeumannSolver(lx.AbstractLinearSolver):
    """Solve ``(I − K) x = b`` by the Neumann iteration ``x ← b + K x`` (``K = I − O``).

    Converges whenever ``K`` is a contraction; here ``K = γDA`` (or its transpose
    ``γAᵀD`` in reverse mode) with ``‖K‖₂ ≤ γ‖A‖₂ < 1``. Stops when
    ``‖x_{k+1} − x_k‖_∞ ≤ rtol ‖x_{k+1}‖_∞`` (relative: the system is homogeneous in
    ``b``) or after ``max_steps``. It always reports success and returns finite values
    (zeros if it did not converge, which needs ``ρ(K) ≥ 1``, i.e. a model that is not
    well posed): Lineax raises on failed solves inside transposes, and a raise would
    abort a whole flow or ensemble. Failures are surfaced by the forward solve instead.
    """

    rtol: float
    max_steps: int

    def init(self, operator, options):
        del options
        return operator

    def compute(self, state, vector, options):
        del options
        operator = state
        tiny = jnp.finfo(vector.dtype).tiny

        def cond(carry):
            k, _, done, _ = carry
            return (k < self.max_steps) & ~done

        def body(carry):
            k, x, _, _ = carry
            x_new = vector + x - operator.mv(x)
            delta = jnp.max(jnp.abs(x_new - x))
            converged = delta <= self.rtol * jnp.max(jnp.abs(x_new)) + tiny
            return k + 1, x_new, converged | ~jnp.isfinite(delta), converged

        k, x, _, converged = jax.lax.while_loop(
            cond, body, (jnp.zeros((), jnp.int32), vector, jnp.asarray(False), jnp.asarray(False))
        )
        good = converged & jnp.all(jnp.isfinite(x))
        x = jnp.where(good, x, jnp.zeros_like(x))
        return x, lx.RESULTS.successful, {"num_steps": k, "converged": good}

    def transpose(self, state, options):
        return state.transpose(), options

    def conj(self, state, options):
        return state, options

    def assume_full_rank(self):
        return True


def _float0(x):
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)


@ft.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _equilibrium(config: _SolveConfig, gA, phi):
    return _solve(config, gA, phi)


@_equilibrium.defjvp
def _equilibrium_jvp(config, primals, tangents):
    gA, phi = primals
    dgA, dphi = tangents
    z, steps, ok = _solve(config, gA, phi)
    z_safe = jnp.where(ok, z, jnp.zeros_like(z))
    active = (z_safe @ gA.T + phi) > 0  # D = 1{γAz* + φ > 0}: relu'(0) = 0
    rhs = jnp.where(active, z_safe @ dgA.T + dphi, jnp.zeros_like(z))
    operator = lx.FunctionLinearOperator(
        lambda t: t - jnp.where(active, t @ gA.T, jnp.zeros_like(t)),
        jax.eval_shape(lambda: z),
    )
    solve = lx.linear_solve(
        operator, rhs, _NeumannSolver(rtol=config.rtol, max_steps=config.max_steps), throw=False
    )
    # A failed forward solve poisons the tangent (and, transposed, the gradient) with NaN
    # *outside* the linear solve, so the solve itself only ever sees finite vectors.
    poison = jnp.where(ok, jnp.zeros((), z.dtype), jnp.asarray(jnp.nan, z.dtype))
    dz = jnp.where(ok, solve.value, poison * rhs)
    return (z, steps, ok), (dz, _float0(steps), _float0(ok))


def solve_equilibrium(
    gamma_A: Float[ArrayLike, "m m"],
    phi: Float[ArrayLike, "n m"],
    *,
    solver: Solver = "picard",
    rtol: float = 1e-10,
    atol: float = 1e-10,
    max_steps: int = 2000,
) -> tuple[Float[Array, "n m"], Int[Array, ""], Bool[Array, ""]]:
    """Solve ``z_i = relu(γA z_i + φ_i)`` for every row ``φ_i`` of `phi`, from ``z = 0``.

    **Arguments:**

    - `gamma_A`: the product ``γA``, ``(m, m)``.
    - `phi`: the injections ``φ(x_i)``, ``(n, m)``.
    - `solver`: ``"picard"`` (one fixed-point iteration for the whole batch) or
      ``"newton"`` (semismooth Newton per input).
    - `rtol`, `atol`: stop when successive iterates differ by less than
      ``atol + rtol |z|`` entrywise (numbers in ``(0, 1)``).
    - `max_steps`: iteration limit.

    **Returns:**

    ``(z, num_steps, success)``. ``z`` is differentiable in `gamma_A` and `phi` by the
    implicit function theorem (forward and reverse mode). ``success`` is False if the
    solver did not meet the tolerances within `max_steps` or produced non-finite values;
    then the tangents of ``z`` are NaN. Jittable and vmappable; never raises at run time.
    """
    solver = one_of("solver", solver, _SOLVERS)
    gA, phi = jnp.asarray(gamma_A), jnp.asarray(phi)
    if gA.ndim != 2 or gA.shape[0] != gA.shape[1] or phi.ndim != 2 or phi.shape[1] != gA.shape[0]:
        raise ValueError(f"gamma_A must be (m, m) and phi (n, m); got {gA.shape} and {phi.shape}.")
    config = _SolveConfig(
        solver,
        unit_interval_float("rtol", rtol),
        unit_interval_float("atol", atol),
        positive_int("max_steps", max_steps),
    )
    return _equilibrium(config, gA, phi)


# ----------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------


class Equilibrium(eqx.Module):
    """Equilibrium features of a batch and the solver's diagnostics.

    - ``z``: ``(n, m)`` equilibria ``z*_i`` (the last iterate if the solve failed);
    - ``residual``: ``(n,)`` fixed-point residuals ``‖z_i − relu(γAz_i + φ(x_i))‖₂``;
    - ``num_steps``: solver iterations (Picard: for the whole batch; Newton: the max
      over inputs);
    - ``success``: the solver met its tolerance within ``max_steps`` with finite values.
    """

    z: Float[Array, "n width"]
    residual: Float[Array, " n"]
    num_steps: Int[Array, ""]
    success: Bool[Array, ""]


@ft.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _init_arrays(key, d_in, width, d_out, dtype, std, spectral):
    """Gaussian ``(A, W, u, c)`` with standard deviations ``std`` (one compiled program
    per shape, also under ``vmap`` over keys)."""
    ka, kw, ku, kc = jax.random.split(key, 4)
    s_a, s_w, s_u, s_c = std
    A = s_a * jax.random.normal(ka, (width, width), dtype)
    if spectral:
        A = A / jnp.linalg.norm(A, 2)
    W = s_w * jax.random.normal(kw, (width, d_in), dtype)
    u = s_u * jax.random.normal(ku, (d_out, width), dtype)
    c = s_c * jax.random.normal(kc, (d_out,), dtype)
    return A, W, u, c


@final
class ImplicitReLU(AbstractModel):
    """Implicit (infinite-depth, weight-tied) ReLU network of Gao & Gao (final class).

    ``N(x) = u z*(x) (+ c)`` with ``z* = relu(γ A z* + φ(x))``, ``φ(x) = W x``
    (``input_map="linear"``) or ``relu(W x)`` (``"relu"``), after Gao & Gao
    (arXiv:2205.07463). Fields (``m`` = width):

    - `A`: ``(m, m)`` implicit-layer weights, scaled by the fixed ``γ`` (`gamma`);
    - `W`: ``(m, d_in)`` input injection;
    - `u`: ``(d_out, m)`` output weights;
    - `c`: ``(d_out,)`` output bias if ``use_bias`` else ``None``;
    - static: `gamma`, `input_map`, the solver settings, `margin`, `power_iters` and
      `frozen` (the fields a flow keeps fixed).

    **Solver**: ``solver="picard"`` (``optx.FixedPointIteration`` on the whole batch,
    the default) or ``"newton"`` (``optx.Newton`` per input on the root problem
    ``z − relu(γAz + φ) = 0``), from ``z = 0``, until successive iterates differ by less
    than ``atol + rtol |z|`` entrywise, at most ``max_steps`` iterations. Unset
    (``None``) settings are resolved from the dtype of ``A`` when the model is called
    (:meth:`solver_settings`), so casting a model to float32 keeps it usable.

    **Well-posedness**: :meth:`well_posed` is ``γ σ̂ < 1 − margin`` with ``σ̂`` the
    power-iteration estimate of ``‖A‖₂`` (`power_iters` iterations). ``σ̂`` is a lower
    bound of ``‖A‖₂``; its relative underestimate is ≲ 1 % at the default 100
    iterations for Gaussian ``A`` with ``m ≤ 512``, so keep `margin` (default ``0.02``)
    above that. For a rigorous certificate see
    :func:`gflow_jax.certificates.wellposed.well_posedness`. Construction warns
    (``UserWarning``) if ``γ‖A(0)‖₂ ≥ 1 − margin`` (exact SVD norm).

    A failed equilibrium solve makes the output NaN (see the module docstring).
    """

    A: Float[Array, "width width"]
    W: Float[Array, "width d_in"]
    u: Float[Array, "d_out width"]
    c: Float[Array, " d_out"] | None
    gamma: float = eqx.field(static=True)
    input_map: str = eqx.field(static=True)
    solver: str = eqx.field(static=True)
    rtol: float | None = eqx.field(static=True)
    atol: float | None = eqx.field(static=True)
    max_steps: int | None = eqx.field(static=True)
    margin: float = eqx.field(static=True)
    power_iters: int = eqx.field(static=True)
    frozen: tuple[str, ...] = eqx.field(static=True)
    is_smooth: ClassVar[bool] = False

    def __init__(
        self,
        d_in: int,
        width: int,
        d_out: int = 1,
        *,
        gamma: float,
        key: PRNGKeyArray,
        input_map: InputMap = "linear",
        init: str | Mapping[str, float] = "normal",
        use_bias: bool = False,
        frozen: tuple[str, ...] = (),
        solver: Solver = "picard",
        rtol: float | None = None,
        atol: float | None = None,
        max_steps: int | None = None,
        margin: float = 0.02,
        power_iters: int = 100,
        dtype=None,
    ):
        """**Arguments:**

        - `d_in`, `width`, `d_out`: sizes ``d_in``, ``m``, ``d_out`` (positive ints).
        - `gamma`: the fixed scale ``γ > 0`` of the implicit layer (a concrete number).
        - `key`: a JAX PRNG key, e.g. ``jax.random.key(0)``.
        - `input_map`: ``"linear"`` (``φ = Wx``) or ``"relu"`` (``φ = relu(Wx)``).
        - `init`: entries i.i.d. Gaussian:
            - ``"normal"`` (default, as in the paper): ``A ~ N(0, 1/m)`` (so
              ``‖A(0)‖₂ ≈ 2`` and the map is a contraction for ``γ ≲ 1/2``),
              ``W ~ N(0, 1/d_in)``, ``u ~ N(0, 1/m)``, ``c = 0``;
            - ``"spectral"``: as ``"normal"`` but ``A`` rescaled to ``‖A(0)‖₂ = 1``
              exactly, so ``γ`` *is* the initial contraction factor ``γ‖A(0)‖₂``;
            - a mapping of standard deviations, e.g. ``{"A": 0.5/sqrt(m), "u": 1.0}``;
              fields not named use the ``"normal"`` scale.
        - `use_bias`: include the output bias ``c``.
        - `frozen`: names among ``("A", "W", "u")`` (and ``"c"`` with a bias) of fields a
          flow keeps fixed, e.g. ``frozen=("A", "W")`` trains the output layer only.
        - `solver`: ``"picard"`` or ``"newton"``.
        - `rtol`, `atol`: solver tolerances in ``(0, 1)``; default (``None``) from the
          dtype (``defaults(dtype).fixed_point_tol`` / ``fixed_point_atol``:
          ``1e-10`` / ``1e-10`` in float64, ``1e-5`` / ``1e-6`` in float32).
        - `max_steps`: iteration limit; default: enough for Picard at the worst admissible
          contraction ``1 − margin``, ``⌈log(rtol/10)/log(1 − margin)⌉``, at least 200.
        - `margin`: in ``[0, 1)``; :meth:`well_posed` needs ``γ‖A‖₂ < 1 − margin``.
        - `power_iters`: power iterations of the ``‖A‖₂`` estimate.
        - `dtype`: a floating dtype (default JAX's default float: float64 under x64).
        """
        d_in = positive_int("d_in", d_in)
        width = positive_int("width", width)
        d_out = positive_int("d_out", d_out)
        gamma = positive_float(
            "gamma",
            real_float("gamma", gamma, finite=False),
            hint="The implicit layer is relu(gamma A z + phi); well-posedness needs "
            "gamma ||A||_2 < 1.",
        )
        key = check_key("key", key)
        input_map = one_of("input_map", input_map, _INPUT_MAPS)
        solver = one_of("solver", solver, _SOLVERS)
        margin = unit_interval_float("margin", margin, include_zero=True)
        power_iters = positive_int("power_iters", power_iters)
        dtype = check_float_dtype("dtype", dtype)
        rtol = None if rtol is None else unit_interval_float("rtol", rtol)
        atol = None if atol is None else unit_interval_float("atol", atol)
        if max_steps is not None:
            max_steps = positive_int("max_steps", max_steps)
        present = _PARAMETERS if use_bias else _PARAMETERS[:3]
        frozen = field_names(
            "frozen",
            frozen,
            present,
            hint="" if use_bias else "(pass use_bias=True for an output bias 'c')",
        )

        std = {"A": 1 / math.sqrt(width), "W": 1 / math.sqrt(d_in), "u": 1 / math.sqrt(width)}
        std["c"] = 0.0
        spectral = False
        if isinstance(init, Mapping):
            field_names("init mapping", tuple(init), _PARAMETERS)
            for k, v in init.items():
                std[k] = nonneg_float(f"init[{k!r}] (a standard deviation)", v)
        else:
            spectral = one_of("init", init, ("normal", "spectral")) == "spectral"
        A, self.W, self.u, c = _init_arrays(
            key, d_in, width, d_out, dtype.name, tuple(std[k] for k in _PARAMETERS), spectral
        )
        self.A = A
        self.c = c if use_bias else None
        self.gamma = gamma
        self.input_map = input_map
        self.solver = solver
        self.rtol, self.atol, self.max_steps = rtol, atol, max_steps
        self.margin = margin
        self.power_iters = power_iters
        self.frozen = frozen

        if is_concrete(A):
            norm = float(np.linalg.norm(np.asarray(A, np.float64), 2))
            if gamma * norm >= 1 - margin:
                what = (
                    "the equilibrium may have no or several solutions and Picard may diverge"
                    if gamma * norm >= 1
                    else f"this is within the margin {margin:g}, so well_posed() is False"
                )
                warnings.warn(
                    f"ImplicitReLU: gamma * ||A(0)||_2 = {gamma:g} * {norm:.4g} = "
                    f"{gamma * norm:.4g} >= 1 - margin = {1 - margin:g}: {what}; a gradient "
                    "flow will stop ILL_POSED. Use a smaller gamma (e.g. < "
                    f"{(1 - margin) / norm:.3g}) or init='spectral' with gamma < 1.",
                    UserWarning,
                    stacklevel=2,
                )

    # -- sizes -----------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        """Input dimension."""
        return self.W.shape[-1]

    @property
    def width(self) -> int:
        """Width ``m`` of the implicit layer."""
        return self.A.shape[-1]

    @property
    def d_out(self) -> int:
        """Output dimension."""
        return self.u.shape[-2]

    @property
    def num_params(self) -> int:
        """Number of parameters (trainable or frozen)."""
        m = self.width
        return m * m + m * self.d_in + self.d_out * m + (self.d_out if self.c is not None else 0)

    # -- the equilibrium -------------------------------------------------------------
    def solver_settings(self) -> tuple[float, float, int]:
        """The solver settings in use.

        **Returns:**

        ``(rtol, atol, max_steps)``: unset values are resolved from the dtype of ``A``
        at call time (:func:`gflow_jax._defaults.defaults`), so a model cast to another
        dtype gets matching tolerances.
        """
        table = defaults(self.A.dtype)
        rtol = table.fixed_point_tol if self.rtol is None else self.rtol
        atol = table.fixed_point_atol if self.atol is None else self.atol
        max_steps = self.max_steps
        if max_steps is None:
            if self.margin > 0:
                max_steps = max(200, math.ceil(math.log(rtol / 10) / math.log1p(-self.margin)))
            else:
                max_steps = 10_000
        return rtol, atol, max_steps

    def _config(self) -> _SolveConfig:
        return _SolveConfig(self.solver, *self.solver_settings())

    def _check_x(self, x) -> Array:
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[-1] != self.d_in:
            raise ValueError(
                f"ImplicitReLU expects inputs of shape (n, {self.d_in}), got {x.shape}. "
                "Reshape a 1-d batch with x[:, None]."
            )
        return x

    def injection(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n width"]:
        """``φ(x_i) = W x_i`` or ``relu(W x_i)``, row by row, for ``x: (n, d_in)``.

        **Arguments:**

        - `x`: inputs of shape ``(n, d_in)`` (another shape is a ``ValueError``).

        **Returns:**

        The injections ``φ(x)`` of shape ``(n, width)``: ``x Wᵀ`` for
        ``input_map="linear"``, ``relu(x Wᵀ)`` for ``"relu"``.
        """
        pre = self._check_x(x) @ self.W.T
        return relu(pre) if self.input_map == "relu" else pre

    def _solve(self, x):
        phi = self.injection(x)
        z, steps, ok = _equilibrium(self._config(), self.gamma * self.A, phi)
        return z, phi, steps, ok

    def equilibrium(self, x: Float[ArrayLike, "n d_in"]) -> Equilibrium:
        """Solve the equilibrium for a batch.

        **Arguments:**

        - `x`: inputs ``(n, d_in)``.

        **Returns:**

        An :class:`Equilibrium`; its ``z`` is differentiable (implicit function theorem).
        """
        z, phi, steps, ok = self._solve(x)
        residual = jnp.linalg.norm(z - _picard_map(z, (self.gamma * self.A, phi)), axis=-1)
        return Equilibrium(z=z, residual=residual, num_steps=steps, success=ok)

    def __call__(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n d_out"]:
        """``N(x) = u z*(x) (+ c)``.

        **Arguments:**

        - `x`: a batch ``(n, d_in)``.

        **Returns:**

        The outputs ``(n, d_out)``; NaN if the equilibrium solve failed.
        """
        z, _, _, ok = self._solve(x)
        z = jnp.where(ok, z, jnp.full_like(z, jnp.nan))
        out = z @ self.u.T
        return out if self.c is None else out + self.c

    def switching_functions(self, x: Float[ArrayLike, "n d_in"]) -> Float[Array, "n s"]:
        """Pre-activations of the equilibrium, ``γ A z*(x_i) + φ(x_i)``.

        With ``input_map="relu"`` the input pre-activations ``W x_i`` are kinks too and
        are appended.

        **Arguments:**

        - `x`: inputs ``(n, d_in)``.

        **Returns:**

        ``(n, m)`` (``"linear"``) or ``(n, 2m)`` (``"relu"``: ``[γAz* + φ, Wx]``); NaN if
        the equilibrium solve failed. ``z*`` and ``N`` are smooth in θ where no entry is
        zero (and ``γ‖A‖₂ < 1``).
        """
        z, phi, _, ok = self._solve(x)
        z = jnp.where(ok, z, jnp.full_like(z, jnp.nan))
        pre = z @ (self.gamma * self.A).T + phi
        if self.input_map == "relu":
            pre = jnp.concatenate([pre, self._check_x(x) @ self.W.T], axis=-1)
        return pre

    # -- well-posedness --------------------------------------------------------------
    def contraction(self) -> Float[Array, ""]:
        """``γ σ̂``: the power-iteration estimate (a lower bound) of ``γ‖A‖₂``."""
        return self.gamma * spectral_norm(self.A, iters=self.power_iters)[0]

    def well_posed(self) -> Bool[Array, ""]:
        """``γ‖A‖₂ < 1 − margin`` (power-iteration estimate).

        The equilibrium map is then a contraction with room to spare; the flow checks
        it at every accepted step.
        """
        return self.contraction() < 1 - self.margin
