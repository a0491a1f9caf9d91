"""[avgpool] / [avg]: global average over each channel, (c, h, w) -> (c, 1, 1)."""
import numpy as np

from .base import F32, Layer
from .registry import register


@register("avgpool", "avg")
class AvgPool(Layer):
    type = "avgpool"
    needs_image = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.set_output_shape(shape.c, 1, 1)
        self.allocate(shape.batch)

    def forward(self, net):
        x = net.input.reshape(self.batch, self.in_c, -1)
        np.mean(x, axis=2, out=self.output.reshape(self.batch, self.in_c), dtype=F32)

    def backward(self, net):
        if net.delta is None:
            return
        prev = net.delta.reshape(self.batch, self.in_c, -1)
        prev += self.delta.reshape(self.batch, self.in_c, 1) / F32(self.in_h * self.in_w)

    def describe(self):
        return "", "", f"{self.in_w} x {self.in_h} x {self.in_c}", f"{self.out_c}"
