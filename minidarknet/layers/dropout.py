"""[dropout]: in training, zero each input with probability p and scale the rest by 1/(1-p).

As in Darknet the layer works in place: its output and delta ARE the previous layer's buffers,
so the dropped values are visible to any route that reads the previous layer.  Inactive at
inference.  (Darknet's default probability is .5 in pjreddie's fork, .2 in AlexeyAB's.)
"""
import numpy as np

from .base import F32, InPlaceLayer
from .registry import register


@register("dropout")
class Dropout(InPlaceLayer):
    type = "dropout"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.probability = section.float("probability", 0.5)
        if not 0 <= self.probability < 1:
            raise section.error(f"[dropout] probability={self.probability}: must be in [0, 1)",
                                "probability")
        for key in ("dropblock", "dropblock_size_rel", "dropblock_size_abs"):
            if section.float(key, 0):
                raise section.error(f"[dropout] {key}: AlexeyAB's DropBlock is not supported", key)
        self.scale = F32(1 / (1 - self.probability))
        self.mask = None
        self.undropped = None
        self.allocate(shape.batch)

    def forward(self, net):
        self.copy_input(net)
        if not net.train:
            self.mask = None
            return
        r = net.rng.random(self.output.shape, dtype=F32)
        self.mask = np.where(r < F32(self.probability), F32(0), self.scale)
        if self.exact and self.prev is not None:
            self.undropped = self.output.copy()
        self.output *= self.mask

    def backward(self, net):
        if net.delta is None or self.mask is None:
            return
        if self.prev is None:
            net.delta.reshape(self.delta.shape)[...] += self.delta * self.mask
        else:
            self.delta *= self.mask   # the previous delta itself
            if self.exact and self.undropped is not None:
                # The previous layer's activation gradient is a function of its output, which
                # dropout scaled in place (Darknet evaluates it there); the exact gradient
                # needs the values before dropout.  Later layers' backward has already run.
                self.output[...] = self.undropped
                self.undropped = None

    def describe(self):
        return f"p = {self.probability:.2f}", "", f"{self.inputs}", f"{self.outputs}"
