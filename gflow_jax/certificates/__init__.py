"""Certificates: test a theory's hypotheses on a concrete parameter point.

Every function takes ``(model, risk, ...)``, like the rest of the library.

- :mod:`.ball` — Chatterjee's local PL ("ball") criterion (arXiv:2203.16462), estimated:
  :func:`ball_criterion`, :func:`batched_ball_criterion`, :func:`radius_scan`,
  :func:`pl_ratio`;
- :mod:`.search` — :class:`SearchOptions` (how the ball is searched) and :class:`Search`;
- :mod:`.hessian` — :func:`hessian_norm`, ``‖∇²f‖_op`` from Hessian-vector products;
- :mod:`.prediction` — :func:`check_prediction`, an actual flow against a report;
- :mod:`.wellposed` — well-posedness of implicit ReLU networks (``γ‖A‖₂ < 1``);
- :mod:`.rates` — :func:`tail_rate`, tail rates of trajectories (linear convergence).

:class:`ContingencyTable` and :func:`certification_table` live in
:mod:`gflow_jax.statistics` and are re-exported here.
"""

from ..statistics import ContingencyTable, certification_table
from .ball import (
    CriterionReport,
    RadiusScan,
    ball_criterion,
    batched_ball_criterion,
    pl_ratio,
    radius_scan,
)
from .hessian import hessian_norm
from .prediction import PredictionCheck, check_prediction
from .rates import tail_rate
from .search import Search, SearchOptions
from .wellposed import (
    WellPosedReport,
    inf_norm,
    power_iteration,
    spectral_norm,
    spectral_norm_upper_bound,
    well_posedness,
)

__all__ = [
    "ContingencyTable",
    "CriterionReport",
    "PredictionCheck",
    "RadiusScan",
    "Search",
    "SearchOptions",
    "WellPosedReport",
    "ball_criterion",
    "batched_ball_criterion",
    "certification_table",
    "check_prediction",
    "hessian_norm",
    "inf_norm",
    "pl_ratio",
    "power_iteration",
    "radius_scan",
    "spectral_norm",
    "spectral_norm_upper_bound",
    "tail_rate",
    "well_posedness",
]
