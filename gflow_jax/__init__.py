"""gflow_jax: gradient flows of neural-network training, in JAX.

The data flows one way: models → risks → dynamics → ensemble → sweeps/studies → plots.
This module re-exports the public API; specialised tools live in the subpackages
:mod:`gflow_jax.certificates`, :mod:`gflow_jax.limits`, :mod:`gflow_jax.statistics` and
:mod:`gflow_jax.plots`.
"""

from . import certificates as certificates
from . import limits as limits
from . import plots as plots
from . import statistics as statistics
from .dynamics import (
    AbstractDynamics as AbstractDynamics,
)
from .dynamics import (
    GradientDescent as GradientDescent,
)
from .dynamics import (
    GradientFlow as GradientFlow,
)
from .dynamics import (
    Trajectory as Trajectory,
)
from .dynamics import (
    integrate as integrate,
)
from .dynamics.piecewise import PiecewiseGradientFlow as PiecewiseGradientFlow
from .dynamics.tail import ExponentialTail as ExponentialTail
from .engine import run_ensemble as run_ensemble
from .ensemble import Ensemble as Ensemble
from .limits import Limit as Limit
from .limits import LimitAnalysis as LimitAnalysis
from .limits import LimitReason as LimitReason
from .models import (
    AbstractModel as AbstractModel,
)
from .models import (
    DeepMLP as DeepMLP,
)
from .models import (
    ImplicitReLU as ImplicitReLU,
)
from .models import (
    ShallowReLU as ShallowReLU,
)
from .outcomes import Outcome as Outcome
from .outcomes import SolverVerdict as SolverVerdict
from .outcomes import Stop as Stop
from .risks import (
    AbstractRisk as AbstractRisk,
)
from .risks import (
    Affine as Affine,
)
from .risks import (
    Constant as Constant,
)
from .risks import (
    EmpiricalRisk as EmpiricalRisk,
)
from .risks import (
    Gaussian as Gaussian,
)
from .risks import (
    PiecewiseLinear as PiecewiseLinear,
)
from .risks import (
    PopulationRisk as PopulationRisk,
)
from .risks import (
    Uniform as Uniform,
)
from .risks import (
    sample_data as sample_data,
)
from .sweep import run_sweep as run_sweep

__all__ = [
    "AbstractDynamics",
    "AbstractModel",
    "AbstractRisk",
    "Affine",
    "Constant",
    "DeepMLP",
    "Ensemble",
    "EmpiricalRisk",
    "ExponentialTail",
    "Gaussian",
    "GradientDescent",
    "GradientFlow",
    "PiecewiseGradientFlow",
    "ImplicitReLU",
    "Limit",
    "LimitAnalysis",
    "LimitReason",
    "Outcome",
    "PiecewiseLinear",
    "PopulationRisk",
    "ShallowReLU",
    "SolverVerdict",
    "Stop",
    "Trajectory",
    "Uniform",
    "certificates",
    "integrate",
    "limits",
    "plots",
    "run_ensemble",
    "run_sweep",
    "sample_data",
    "statistics",
]

__version__ = "0.2.0"
