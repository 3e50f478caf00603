"""Dynamics: gradient flow and gradient descent behind one ``init/advance/finish`` interface."""

from .base import AbstractDynamics, State
from .descent import GradientDescent
from .flow import GradientFlow
from .integrate import integrate
from .piecewise import PiecewiseGradientFlow
from .problem import Problem
from .trajectory import Trajectory
