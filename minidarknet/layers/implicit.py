"""[implicit] (AlexeyAB, YOLOR): a learned constant tensor, the same for every sample.

Keys: mean (0), std (0.2), filters (128), atoms (1).  Output (filters, atoms, 1) = the weights,
whatever the input (the layer reads nothing and sends no delta back).  The weights start as
mean + U(-std, std) (drawn from net.rng), are stored in the weights file (filters*atoms floats)
and updated like conv weights: weight_updates += sum of delta over the batch, then decay,
learning rate and momentum.
"""
import numpy as np

from .base import F32, Layer
from .registry import register


@register("implicit")
class Implicit(Layer):
    type = "implicit"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.mean = section.float("mean", 0.0)
        self.std = section.float("std", 0.2)
        self.filters = section.int("filters", 128)
        self.atoms = section.int("atoms", 1)
        for key, value in (("filters", self.filters), ("atoms", self.atoms)):
            if value < 1:
                raise section.error(f"[implicit] {key}={value}: must be at least 1", key)
        self.set_output_shape(self.filters, self.atoms, 1)
        low, high = sorted((-self.std, self.std))
        self.check_count(self.filters * self.atoms, f"weights {self.filters} x {self.atoms}",
                         "filters", bytes_per_value=12)
        self.weights = (self.mean + net.rng.uniform(low, high, (self.filters, self.atoms, 1))
                        ).astype(F32)
        self.weight_updates = np.zeros_like(self.weights)
        self.allocate(shape.batch)

    def forward(self, net):
        self.output[...] = self.weights

    def backward(self, net):
        self.weight_updates += self.delta.sum(axis=0)

    def update(self, rate, momentum, decay, batch):
        if self.dont_update:
            return
        lr = np.float32(rate * self.learning_rate_scale / batch)
        self.weight_updates -= np.float32(decay * batch) * self.weights
        self.weights += lr * self.weight_updates
        self.weight_updates *= np.float32(momentum)

    def parameters(self):
        return [("weights", self.weights)]

    def describe(self):
        return f"{self.filters}", f"mean {self.mean:g} std {self.std:g}", "", \
            f"1 x {self.atoms} x {self.filters}"
