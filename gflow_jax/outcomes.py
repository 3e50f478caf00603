"""What a trajectory did: outcome codes, solver verdicts and the stop rules, in one place.

Every stopping decision of the dynamics (:class:`gflow_jax.GradientFlow`,
:class:`gflow_jax.GradientDescent`) is made by :func:`classify` on the current
parameters θ, with ``L = L(θ)``, ``g = ‖∇L(θ)‖²`` and ``n = ‖θ‖`` (Euclidean norm over
all trainable arrays):

1. the model reports that its forward map is not well posed → ``ILL_POSED``
   (:meth:`gflow_jax.AbstractModel.well_posed`, e.g. ``γ‖A‖₂ < 1 − margin``);
2. ``L``, ``g`` or ``n`` is non-finite, ``n ≥ bound``, or ``L < −risk_tol`` → ``DIVERGED``.
   A risk is non-negative by contract (a sum of squares, an integral of one); a value
   below ``−risk_tol`` (more than round-off around zero) means the risk function is
   wrong or unbounded below, and it is *never* convergence. :func:`gflow_jax.integrate`
   (with ``throw=True``) raises on it; in an ensemble the member is ``DIVERGED`` with a
   negative `final_risk`, and :meth:`gflow_jax.Ensemble.summary` counts them;
3. ``L ≤ risk_tol`` → ``CONVERGED``;
4. ``g ≤ grad_tol · L`` → ``CRITICAL_POINT`` (the decay rate of the risk has collapsed);
5. otherwise the trajectory goes on. If its time horizon ``t1`` or its step budget
   ``max_steps`` runs out first → ``UNFINISHED``; if the ODE solver fails (step size
   underflow, an implicit solve that does not converge, …) → ``SOLVER_FAILED``, with the
   reason in the trajectory's ``verdict`` (a :class:`SolverVerdict`).

The critical-point rule compares ``g`` with the risk: ``g / L = −(d/dt) log L`` is the
instantaneous decay rate of the risk along the flow (its Polyak–Łojasiewicz ratio). A
trajectory converging to zero at any non-vanishing rate keeps it away from 0, while at a
critical point with ``L > 0`` it collapses.

An :class:`Outcome` says *what the flow did*. What it converges to — zero risk, a local
minimum, a saddle — is the *limit class* of :mod:`gflow_jax.limits`.
"""

from __future__ import annotations

import enum

import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ._checks import positive_float
from ._defaults import defaults


class Outcome(enum.IntEnum):
    """What a trajectory did (stored as ``int8``; see the module docstring)."""

    UNFINISHED = 0
    CONVERGED = 1
    CRITICAL_POINT = 2
    DIVERGED = 3
    ILL_POSED = 4
    SOLVER_FAILED = 5


class SolverVerdict(enum.IntEnum):
    """The ODE solver's own verdict on a trajectory (stored as ``int8``).

    ``OK``: the solver did what was asked (a stop rule fired, ``t1`` was reached, or it
    is still running); ``MAX_STEPS``: the step budget ran out (an ``UNFINISHED``
    trajectory, not a failure); the others are failures and make the outcome
    ``SOLVER_FAILED`` (unless the state had already diverged). ``MAX_SLIDING``
    (:class:`gflow_jax.PiecewiseGradientFlow` only): more switching surfaces attract the
    state at once than its ``max_sliding`` slots hold, so it would chatter across the
    one left over (met at two consecutive events for want of a slot).
    """

    OK = 0
    MAX_STEPS = 1
    DT_MIN = 2
    NONLINEAR_SOLVE_FAILED = 3
    LINEAR_SOLVE_FAILED = 4
    NONFINITE = 5
    OTHER = 6
    MAX_SLIDING = 7

    @property
    def failed(self) -> bool:
        return self not in (SolverVerdict.OK, SolverVerdict.MAX_STEPS)


_R = diffrax.RESULTS


def _verdict_groups():
    names = [n for n in _R._name_to_item]  # every diffrax/optimistix/lineax result
    groups = {
        SolverVerdict.OK: ("successful", "event_occurred"),
        SolverVerdict.MAX_STEPS: ("max_steps_reached",),
        SolverVerdict.DT_MIN: ("dt_min_reached", "max_steps_rejected"),
        SolverVerdict.NONLINEAR_SOLVE_FAILED: (
            "nonlinear_max_steps_reached",
            "nonlinear_divergence",
            "implicit_divergence",
            "implicit_nonconvergence",
        ),
        SolverVerdict.LINEAR_SOLVE_FAILED: ("singular", "breakdown", "stagnation", "max_steps"),
        SolverVerdict.NONFINITE: ("nonfinite", "nonfinite_input"),
    }
    return {v: tuple(n for n in ns if n in names) for v, ns in groups.items()}


_GROUPS = _verdict_groups()


def solver_verdict(result: diffrax.RESULTS) -> Int[Array, ""]:
    """Map a ``diffrax.RESULTS`` value to a :class:`SolverVerdict` code (``int8``).

    A result that none of the verdicts' groups of ``diffrax.RESULTS`` names matches is
    ``SolverVerdict.OTHER``.

    **Arguments:**

    - `result`: a ``diffrax.RESULTS`` value, e.g. ``solution.result`` (traceable).

    **Returns:**

    The :class:`SolverVerdict` code as a scalar ``int8`` array.
    """
    code = jnp.asarray(SolverVerdict.OTHER, jnp.int8)
    for verdict, names in reversed(list(_GROUPS.items())):
        for name in names:
            code = jnp.where(result == getattr(_R, name), jnp.int8(verdict), code)
    return code


class Stop(eqx.Module):
    """The stop rules (see the module docstring).

    **Arguments:**

    - `risk_tol`: ``L ≤ risk_tol`` is *converged* (risk units). Default by dtype:
      ``1e-10`` in float64, ``1e-7`` in float32.
    - `grad_tol`: ``‖∇L‖² ≤ grad_tol·L`` is a *critical point* (units 1/time). Default
      ``1e-10`` in float64, ``1e-6`` in float32. The flow resolves the gradient only to
      about ``rtol·‖θ‖`` times the local Lipschitz constant of ``∇L``; a tighter
      ``grad_tol`` needs a tighter controller too.
    - `bound`: ``‖θ‖ ≥ bound`` is *diverged* (default ``1e6``; ``inf`` disables it, as
      needed to watch unbounded trajectories).

    A risk below ``−risk_tol`` is *diverged* too (a risk is non-negative by contract).
    """

    risk_tol: float | None = eqx.field(static=True, default=None)
    grad_tol: float | None = eqx.field(static=True, default=None)
    bound: float = eqx.field(static=True, default=1e6)

    def __check_init__(self):
        if self.risk_tol is not None:
            positive_float("Stop.risk_tol", self.risk_tol)
        if self.grad_tol is not None:
            positive_float("Stop.grad_tol", self.grad_tol)
        positive_float("Stop.bound", self.bound, allow_inf=True)

    def resolve(self, dtype) -> Stop:
        """Fill unset tolerances with the defaults for `dtype`.

        **Arguments:**

        - `dtype`: the floating dtype of the flow (float16/bfloat16 use float32's
          defaults).

        **Returns:**

        A new :class:`Stop` with `risk_tol` and `grad_tol` set (those already set are
        kept) and the same `bound`.
        """
        table = defaults(dtype)
        return Stop(
            risk_tol=table.risk_tol if self.risk_tol is None else self.risk_tol,
            grad_tol=table.grad_tol if self.grad_tol is None else self.grad_tol,
            bound=self.bound,
        )


def classify(
    risk: Float[ArrayLike, ""],
    grad_sq: Float[ArrayLike, ""],
    param_norm: Float[ArrayLike, ""],
    well_posed: Bool[ArrayLike, ""],
    stop: Stop,
) -> Int[Array, ""]:
    """The outcome code of a state (``UNFINISHED`` means: keep going).

    **Arguments:**

    - `risk`, `grad_sq`, `param_norm`: ``L``, ``‖∇L‖²`` and ``‖θ‖`` at θ.
    - `well_posed`: the model's well-posedness flag at θ.
    - `stop`: resolved :class:`Stop` rules.

    **Returns:**

    An ``int8`` :class:`Outcome` code (never ``SOLVER_FAILED``: that is the solver's).
    """
    if stop.risk_tol is None or stop.grad_tol is None:
        raise ValueError("classify needs a resolved Stop; call stop.resolve(dtype) first.")
    risk, grad_sq, param_norm = map(jnp.asarray, (risk, grad_sq, param_norm))
    finite = jnp.isfinite(risk) & jnp.isfinite(grad_sq) & jnp.isfinite(param_norm)
    negative = risk < -stop.risk_tol  # a broken risk (non-negative by contract)
    code = jnp.where(
        ~jnp.asarray(well_posed),
        Outcome.ILL_POSED,
        jnp.where(
            ~finite | (param_norm >= stop.bound) | negative,
            Outcome.DIVERGED,
            jnp.where(
                risk <= stop.risk_tol,
                Outcome.CONVERGED,
                jnp.where(
                    grad_sq <= stop.grad_tol * risk,
                    Outcome.CRITICAL_POINT,
                    Outcome.UNFINISHED,
                ),
            ),
        ),
    )
    return code.astype(jnp.int8)


def outcome_names(codes: ArrayLike) -> list[str]:
    """Names of outcome codes, e.g. ``['CONVERGED', 'DIVERGED']``.

    **Arguments:**

    - `codes`: :class:`Outcome` codes, an int or an array of any shape.

    **Returns:**

    A ``list[str]`` of the names, in the order of the flattened `codes`.
    """
    return [Outcome(int(c)).name for c in jnp.ravel(jnp.asarray(codes))]
