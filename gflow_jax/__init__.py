"""gflow_jax: gradient flows of neural-network training in JAX.

model → risk → flow → ensemble → storage → plots. The public API is re-exported here.
"""

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
from .models import ShallowReLU, partition, relu, smooth_relu, trainable_filter
from .outcomes import Outcome, Stop, classify, outcome_names
from .risks import (
    AbstractRisk,
    AbstractTarget,
    Affine,
    Constant,
    EmpiricalRisk,
    FunctionTarget,
    PiecewiseLinear,
    as_target,
    sample_data,
)

__version__ = "0.1.0"
