from .base import AbstractPiecewiseSmoothRisk, AbstractRisk
from .empirical import EmpiricalRisk
from .measures import AbstractMeasure, Gaussian, QuadratureError, Uniform
from .population import PopulationRisk
from .targets import (
    AbstractPiecewiseLinearTarget,
    AbstractTarget,
    Affine,
    Constant,
    FunctionTarget,
    PiecewiseLinear,
    as_target,
    sample_data,
)
