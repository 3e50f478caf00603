"""gflow_jax: gradient flows of neural-network training in JAX.

model → risk → flow → ensemble → storage → plots. The public API is re-exported here.
"""

from . import plots
from .certificates.rates import tail_rate
from .certificates.wellposed import (
    WellPosedReport,
    inf_norm,
    power_iteration,
    spectral_norm_upper_bound,
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
    Equilibrium,
    ImplicitReLU,
    ShallowReLU,
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
