"""gflow_jax: gradient flows of neural-network training in JAX.

model → risk → flow → ensemble → storage → plots. The public API is re-exported here.
"""

from . import plots
from .certificates import (
    ContingencyTable,
    CriterionReport,
    PredictionCheck,
    RadiusScan,
    WellPosedReport,
    ball_criterion,
    batched_ball_criterion,
    certification_table,
    check_prediction,
    hessian_norm,
    inf_norm,
    pl_ratio,
    power_iteration,
    radius_scan,
    spectral_norm_upper_bound,
    tail_rate,
    well_posedness,
)
from .ensemble import Ensemble, Fraction, run_ensemble, wilson_interval
from .flow import (
    StateReport,
    Trajectory,
    default_controller,
    diagnose,
    gradient_descent,
    gradient_flow,
    risk_and_grad,
    step_grid,
    time_grid,
    tree_norm,
)
from .models import (
    DeepMLP,
    Equilibrium,
    ImplicitReLU,
    IndependentData,
    ShallowReLU,
    linearly_independent_data,
    partition,
    relu,
    smooth_relu,
    solve_equilibrium,
    trainable_filter,
)
from .outcomes import Outcome, Stop, classify, outcome_names
from .risks import (
    AbstractMeasure,
    AbstractRisk,
    AbstractTarget,
    Affine,
    Constant,
    EmpiricalRisk,
    ExactUniform1DRisk,
    FunctionTarget,
    Gaussian,
    PiecewiseLinear,
    PopulationRisk,
    QuadratureError,
    Uniform,
    as_target,
    exact_uniform_1d_risk,
    sample_data,
)
from .sweep import run_sweep

__version__ = "0.1.0"
