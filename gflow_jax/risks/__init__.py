from .base import AbstractRisk
from .empirical import EmpiricalRisk
from .exact1d import ExactUniform1DRisk, exact_uniform_1d_risk
from .measures import AbstractMeasure, Gaussian, QuadratureError, Uniform
from .population import PopulationRisk
from .targets import (
    AbstractTarget,
    Affine,
    Constant,
    FunctionTarget,
    PiecewiseLinear,
    as_target,
    sample_data,
)
