"""What became of a trajectory: the outcome codes and the stop rules, in one place.

Every stopping decision of :func:`gflow_jax.gradient_flow`, :func:`gflow_jax.gradient_descent`
and :func:`gflow_jax.run_ensemble` is made by :func:`classify`, evaluated on the current
parameters θ: with ``L = L(θ)``, ``g = ‖∇L(θ)‖²`` and ``n = ‖θ‖`` (Euclidean norm over all
trainable arrays),

1. the model reports that its forward map is not well posed → ``ILL_POSED``
   (a model opts in by defining ``well_posed(self) -> bool``, e.g. γ‖A‖₂ < 1 − margin);
2. ``L``, ``g`` or ``n`` is non-finite, or ``n ≥ bound`` → ``DIVERGED``;
3. ``L ≤ risk_tol`` → ``CONVERGED``;
4. ``g ≤ grad_tol · L`` → ``CRITICAL_POINT`` (stuck at a critical value ``L > risk_tol``);
5. otherwise the trajectory goes on; if it ends at ``t1`` or ``max_steps`` → ``UNFINISHED``.

The critical-point rule compares ``g`` with the risk, not with ‖θ‖ (unlike
``diffrax.steady_state_event``): ``g / L = −(d/dt) log L`` is the instantaneous rate of
decay of the risk (the PL ratio of MATH.md §3.2). A trajectory converging to zero at any
non-vanishing rate keeps it away from 0, while at a critical point with ``L > 0`` it
collapses. (An absolute rule ``g ≤ tol·(1 + L)`` mistakes slowly converging tails with
``L ≈ 1e-8`` for critical points; measured on the demo's ensemble.)
"""

from __future__ import annotations

import enum

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ._checks import positive_float


class Outcome(enum.IntEnum):
    """Per-trajectory outcome codes (stored as ``int8`` arrays)."""

    UNFINISHED = 0
    CONVERGED = 1
    CRITICAL_POINT = 2
    DIVERGED = 3
    ILL_POSED = 4


_DEFAULTS = {  # (risk_tol, grad_tol) by floating dtype
    "float64": (1e-10, 1e-10),
    "float32": (1e-7, 1e-6),
    "float16": (1e-3, 1e-6),
    "bfloat16": (1e-3, 1e-6),
}


class Stop(eqx.Module):
    """Stop rules (see the module docstring).

    - ``risk_tol``: ``L ≤ risk_tol`` is *converged* (risk units). Default by dtype:
      ``1e-10`` in float64, ``1e-7`` in float32.
    - ``grad_tol``: ``‖∇L‖² ≤ grad_tol·L`` is a *critical point* (the risk's log-rate of
      decay ``‖∇L‖²/L`` has collapsed). Default ``1e-10`` in float64, ``1e-6`` in
      float32. The flow resolves the gradient only to about ``rtol·‖θ‖`` times the local
      Lipschitz constant of ``∇L``: with the default controller (``rtol = 1e-7``) an
      explicit solver stalls at gradients of ``1e-7``–``1e-6`` near a critical point
      (its steps become stability-limited and the error test is met relative to
      ``‖θ‖``). A tighter ``grad_tol`` needs a tighter controller too.
    - ``bound``: ``‖θ‖ ≥ bound`` is *diverged* (default ``1e6``; ``inf`` disables it, as
      needed to watch unbounded trajectories, Theorem C of MATH.md §1.5).
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
        """Fill unset tolerances with the defaults for ``dtype``."""
        risk_tol, grad_tol = _DEFAULTS.get(jnp.dtype(dtype).name, _DEFAULTS["float32"])
        return Stop(
            risk_tol=risk_tol if self.risk_tol is None else self.risk_tol,
            grad_tol=grad_tol if self.grad_tol is None else self.grad_tol,
            bound=self.bound,
        )


def classify(
    risk: Float[ArrayLike, ""],
    grad_sq: Float[ArrayLike, ""],
    param_norm: Float[ArrayLike, ""],
    well_posed: Bool[ArrayLike, ""],
    stop: Stop,
) -> Int[Array, ""]:
    """The outcome code of a state (``UNFINISHED`` means: keep going)."""
    if stop.risk_tol is None or stop.grad_tol is None:
        raise ValueError("classify needs a resolved Stop; call stop.resolve(dtype) first.")
    risk, grad_sq, param_norm = map(jnp.asarray, (risk, grad_sq, param_norm))
    finite = jnp.isfinite(risk) & jnp.isfinite(grad_sq) & jnp.isfinite(param_norm)
    code = jnp.where(
        ~jnp.asarray(well_posed),
        Outcome.ILL_POSED,
        jnp.where(
            ~finite | (param_norm >= stop.bound),
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
    """Names of outcome codes, e.g. ``['CONVERGED', 'DIVERGED']``."""
    return [Outcome(int(c)).name for c in jnp.ravel(jnp.asarray(codes))]
