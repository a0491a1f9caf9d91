"""[local_avgpool] / [local_avg] (AlexeyAB): average over size x size windows.

Same keys and geometry as [maxpool] (stride, stride_x, stride_y, size, padding = total padding
with the window origin at -(padding/2)); each output is the mean of the window's cells that lie
inside the input.

AlexeyAB's CPU backward divides every delta by size*size, not by the number of cells it
averaged, so it is not the gradient of its forward at the borders: gradients="darknet" keeps
that, gradients="exact" divides by the count.  A window with no cell inside the input would
give 0/0 in Darknet; such paddings are rejected.
"""
import numpy as np

from .. import ops
from .base import Layer
from .maxpool import pool_output_size, pool_size_text, read_pool_geometry
from .registry import register


@register("local_avgpool", "local_avg")
class LocalAvgPool(Layer):
    type = "local_avgpool"
    needs_image = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        read_pool_geometry(self, s, "local_avgpool")
        out_h, out_w = pool_output_size(self, s, "local_avgpool", shape)
        self.set_output_shape(shape.c, out_h, out_w)
        self.op = ops.PoolOp(shape.c, shape.h, shape.w, self.size, self.stride_y,
                             self.stride_x, self.padding, out_h, out_w)
        counts = self.op.valid_counts(np.float64)
        if not counts.all():
            raise s.error(f"[local_avgpool] padding={self.padding}: some windows lie entirely "
                          f"outside the {shape.w} x {shape.h} input (Darknet divides 0 by 0)",
                          "padding")
        self.counts = counts.astype(np.float32)
        self.allocate(shape.batch)

    def forward(self, net):
        x = self.input_of(net)
        self.op.sum_forward(x, self.output)
        self.output /= self.counts.astype(self.output.dtype, copy=False)

    def backward(self, net):
        if net.delta is None:
            return
        prev = self.prev_delta(net, self.input_of(net).shape)
        divisor = (self.counts.astype(self.delta.dtype, copy=False) if self.exact
                   else self.delta.dtype.type(self.size * self.size))
        self.op.spread_backward(self.delta / divisor, prev)

    def describe(self):
        _, _, inp, out = super().describe()
        return "avg", pool_size_text(self), inp, out
