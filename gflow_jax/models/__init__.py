from .activations import ACTIVATIONS, SMOOTH_ACTIVATIONS, relu, smooth_relu
from .base import AbstractModel, is_smooth, is_well_posed, partition, trainable_filter
from .deep import DeepMLP, IndependentData, linearly_independent_data
from .implicit import Equilibrium, ImplicitReLU, solve_equilibrium
from .shallow import ShallowReLU
