from .base import AbstractRisk
from .empirical import EmpiricalRisk
from .targets import (
    AbstractTarget,
    Affine,
    Constant,
    FunctionTarget,
    PiecewiseLinear,
    as_target,
    sample_data,
)
