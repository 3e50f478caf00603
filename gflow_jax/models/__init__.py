from .activations import ACTIVATIONS, SMOOTH_ACTIVATIONS, relu, smooth_relu
from .base import partition, trainable_filter
from .shallow import ShallowReLU
