"""How the ball criterion searches its ball: :class:`SearchOptions` and :class:`Search`.

The criterion's ``α`` is an infimum and ``β`` a supremum over a ball, so every estimate
is the result of a finite search. :class:`SearchOptions` gathers the sizes and step
lengths of those searches in one validated, hashable value that every criterion function
(:func:`~gflow_jax.certificates.ball_criterion`,
:func:`~gflow_jax.certificates.batched_ball_criterion`,
:func:`~gflow_jax.certificates.radius_scan`) takes as ``search=``; :class:`Search` names
the search that found the smallest ratio.
"""

from __future__ import annotations

import enum
from numbers import Integral, Real
from typing import Literal, final

import equinox as eqx

__all__ = ["Search", "SearchOptions"]


class Search(enum.IntEnum):
    """Which search found the smallest ratio ``‖∇f‖²/f`` (``CriterionReport.alpha_source``).

    - `CENTER`: the centre ``θ_0`` itself;
    - `RANDOM`: points uniform in the ball;
    - `TRAJECTORY`: points of an actual flow that lie in the ball;
    - `ADVERSARIAL`: projected descent on ``log(‖∇f‖²/f)`` inside the ball;
    - `PROBE`: projected gradient descent on ``f`` from ``θ_0`` (a discretised flow).
    """

    CENTER = 0
    RANDOM = 1
    TRAJECTORY = 2
    ADVERSARIAL = 3
    PROBE = 4


HessianMethod = Literal["lanczos", "power"]


def _int_at_least(name: str, value, minimum: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(
            f"SearchOptions.{name} must be an int ({what}), got {value!r} of type "
            f"{type(value).__name__}."
        )
    if value < minimum:
        raise ValueError(
            f"SearchOptions.{name} must be >= {minimum} ({what}), got {value}; "
            f"pass {name}={minimum} or more."
        )


def _positive_real(name: str, value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(
            f"SearchOptions.{name} must be a positive number ({what}), got {value!r} of type "
            f"{type(value).__name__}."
        )
    if not (0 < float(value) < float("inf")):
        raise ValueError(
            f"SearchOptions.{name} must be finite and > 0 ({what}), got {value}; "
            f"pass a positive {name}."
        )


@final
class SearchOptions(eqx.Module):
    """Sizes and step lengths of the searches for ``α̂`` and ``β̂`` (every field static).

    The searches are described in :mod:`gflow_jax.certificates.ball`. All fields are
    Python numbers fixed at construction, validated there; changing any of them compiles
    the criterion anew. Derive variants with ``dataclasses.replace(options, n_random=0)``.

    **Arguments:**

    - `n_random`: points drawn uniformly in the ball (``≥ 0``).
    - `n_adversarial`: runs of the adversarial search, started from ``θ_0``, the probe's
      best point, then random points of the ball (``≥ 0``; ``0`` disables it).
    - `ascent_steps`: steps per adversarial run (``≥ 1``).
    - `ascent_lr`: first adversarial step length as a fraction of the radius ``r``
      (dimensionless, ``> 0``); the lengths decay geometrically to ``10⁻³ ascent_lr · r``.
    - `probe_steps`: steps of the flow probe, projected gradient descent from ``θ_0``
      (``≥ 0``; ``0`` disables it).
    - `probe_lr`: the probe's step in units of ``1/β̂(θ_0)``, i.e. ``η = probe_lr/β̂(θ_0)``
      (dimensionless, ``> 0``; below ``2`` for a stable discretised flow).
    - `n_beta`: random points and trajectory points (each up to this many) at which
      ``‖∇²f‖_op`` is estimated besides the centre, the ``α̂`` point and the end points of
      the local searches (``≥ 0``).
    - `hessian_iters`: Lanczos or power-iteration steps per Hessian-norm estimate (``≥ 1``).
    - `hessian_method`: ``"lanczos"`` (default) or ``"power"``.

    **Raises:**

    ``TypeError`` for a value of the wrong type and ``ValueError`` for one out of range,
    naming the field and what to pass instead.
    """

    n_random: int = eqx.field(static=True, default=64)
    n_adversarial: int = eqx.field(static=True, default=4)
    ascent_steps: int = eqx.field(static=True, default=100)
    ascent_lr: float = eqx.field(static=True, default=0.2)
    probe_steps: int = eqx.field(static=True, default=500)
    probe_lr: float = eqx.field(static=True, default=1.0)
    n_beta: int = eqx.field(static=True, default=4)
    hessian_iters: int = eqx.field(static=True, default=32)
    hessian_method: HessianMethod = eqx.field(static=True, default="lanczos")

    def __check_init__(self):
        _int_at_least("n_random", self.n_random, 0, "points uniform in the ball")
        _int_at_least("n_adversarial", self.n_adversarial, 0, "adversarial runs; 0 disables")
        _int_at_least("ascent_steps", self.ascent_steps, 1, "steps per adversarial run")
        _positive_real("ascent_lr", self.ascent_lr, "first step as a fraction of the radius")
        _int_at_least("probe_steps", self.probe_steps, 0, "flow-probe steps; 0 disables")
        _positive_real("probe_lr", self.probe_lr, "probe step in units of 1/β̂(θ_0)")
        _int_at_least("n_beta", self.n_beta, 0, "extra points of the β̂ search")
        _int_at_least("hessian_iters", self.hessian_iters, 1, "Krylov steps per estimate")
        if self.hessian_method not in ("lanczos", "power"):
            raise ValueError(
                "SearchOptions.hessian_method must be 'lanczos' or 'power', got "
                f"{self.hessian_method!r}."
            )

    @property
    def n_starts(self) -> int:
        """Adversarial runs started from random points of the ball (the others start
        from ``θ_0`` and, with a probe, from the probe's best point)."""
        return max(self.n_adversarial - 1 - (1 if self.probe_steps else 0), 0)
