"""The one table of dtype-dependent defaults (tolerances that follow machine precision)."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class Defaults(NamedTuple):
    """Default tolerances for one floating dtype.

    - `risk_tol`: ``L ≤ risk_tol`` stops a flow as converged (risk units).
    - `grad_tol`: ``‖∇L‖² ≤ grad_tol·L`` stops it at a critical point (1/time).
    - `rtol`, `atol`: the default step-size controller's tolerances.
    - `fixed_point_tol`: tolerance of inner fixed-point / implicit solves (relative).
    - `curvature_rtol`: Hessian eigenvalues ``|λ| ≤ curvature_rtol·max|λ|`` count as 0.
    - `zero_risk`: a refined limit with ``L ≤ zero_risk`` is a zero of the risk.
    - `fixed_point_atol`: absolute tolerance of inner fixed-point solves.
    """

    risk_tol: float
    grad_tol: float
    rtol: float
    atol: float
    fixed_point_tol: float
    curvature_rtol: float
    zero_risk: float
    fixed_point_atol: float


_TABLE = {
    "float64": Defaults(1e-10, 1e-10, 1e-7, 1e-10, 1e-10, 1e-8, 1e-20, 1e-10),
    "float32": Defaults(1e-7, 1e-6, 1e-5, 1e-7, 1e-5, 1e-4, 1e-10, 1e-6),
}


def defaults(dtype) -> Defaults:
    """The :class:`Defaults` of a floating dtype (float16/bfloat16 use float32's)."""
    return _TABLE.get(jnp.dtype(dtype).name, _TABLE["float32"])
