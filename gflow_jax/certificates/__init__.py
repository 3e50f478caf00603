"""Certificates: test a theory's hypotheses on a concrete parameter point.

- :mod:`.ball` — Chatterjee's ball criterion (α̂, β̂ estimates; MATH.md §3);
- :mod:`.wellposed` — well-posedness of implicit networks (γ‖A‖₂; MATH.md §2.3);
- :mod:`.rates` — tail rates of trajectories (linear convergence).
"""

from .ball import (
    ContingencyTable,
    CriterionReport,
    PredictionCheck,
    RadiusScan,
    Search,
    ball_criterion,
    batched_ball_criterion,
    certification_table,
    check_prediction,
    hessian_norm,
    pl_ratio,
    radius_scan,
)
from .rates import tail_rate
from .wellposed import (
    WellPosedReport,
    inf_norm,
    power_iteration,
    spectral_norm_upper_bound,
    well_posedness,
)
