"""[local]: locally connected layer (a convolution with different weights at every output
position), pjreddie's local_layer.c.

Keys: filters (1), size (1), stride (1), pad (0), activation (logistic).
out = (h - size)/stride + 1 when pad is 0, else (h - 1)/stride + 1; im2col however pads by
`pad` pixels, which agrees with that output size only for size = 2*pad + 1 (or pad 0): other
combinations make Darknet index garbage and are rejected.

Weights per output location j = (y, x): a [filters][c*size*size] block; biases per output
element.  File order: biases[filters*out_h*out_w], weights[out_h*out_w][filters][c*size*size].
Forward: out = biases + W_j . col_j, activation.  Backward: the activation gradient,
bias_updates += delta, W_j updates += delta_j col_j^T, previous delta += col2im(W_j^T delta_j)
(accumulating); this is the true gradient in both modes.
"""
import numpy as np

from .. import ops
from .base import F32, WeightedLayer
from .registry import register


@register("local")
class Local(WeightedLayer):
    type = "local"
    blas_threads = True
    needs_image = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        n, k, stride, pad = (s.int("filters", 1), s.int("size", 1), s.int("stride", 1),
                             s.int("pad", 0))
        self.filters, self.size, self.stride, self.pad = n, k, stride, pad
        self.activation = self.activation_from(s, "logistic")
        for key, value, least in (("filters", n, 1), ("size", k, 1), ("stride", stride, 1),
                                  ("pad", pad, 0)):
            if value < least:
                raise s.error(f"[local] {key}={value}: must be at least {least}", key)
        out_h = ops.c_div(shape.h - (k if not pad else 1), stride) + 1
        out_w = ops.c_div(shape.w - (k if not pad else 1), stride) + 1
        cols_h = ops.c_div(shape.h + 2 * pad - k, stride) + 1
        cols_w = ops.c_div(shape.w + 2 * pad - k, stride) + 1
        if out_h < 1 or out_w < 1:
            raise s.error(f"[local] size={k}: the {shape.w} x {shape.h} input is too small",
                          "size")
        if (cols_h, cols_w) != (out_h, out_w):
            raise s.error(f"[local] pad={pad} with size={k}: Darknet sizes the output "
                          f"{out_w} x {out_h} but im2col pads {pad} pixels and makes "
                          f"{cols_w} x {cols_h} columns (garbage); use pad=0 or "
                          f"size={2 * pad + 1}", "pad")
        self.set_output_shape(n, out_h, out_w)
        self.locations = out_h * out_w
        self.op = ops.ConvOp(shape.c, shape.h, shape.w, n, k, stride, stride, pad, 1, 1,
                             out_h, out_w)
        kdim = shape.c * k * k
        # Darknet initialises only the first location's block (the rest stays 0).
        self.check_count(self.locations * n * kdim,
                         f"weights {self.locations} x {n} x {kdim}", "filters")
        self.weights = np.zeros((self.locations, n, kdim), F32)
        self.weights[0] = np.sqrt(2.0 / kdim) * net.rng.uniform(-1, 1, (n, kdim))
        self.weight_updates = np.zeros_like(self.weights)
        self.biases = np.zeros((n, self.locations), F32)
        self.bias_updates = np.zeros_like(self.biases)
        self.scale_updates = None
        self.allocate(shape.batch)

    def allocate(self, batch):
        super().allocate(batch)
        self.x_pre = (np.zeros_like(self.output) if self.activation.needs_input(self.exact)
                      else None)

    def _columns_by_location(self, x):
        """(locations, kdim, batch) contiguous columns of x."""
        col = self.op.columns(x).reshape(self.batch, -1, self.locations)
        return np.ascontiguousarray(col.transpose(2, 1, 0))

    def forward(self, net):
        x = self.input_of(net)
        cols = self._columns_by_location(x)
        per_location = np.matmul(self.weights, cols)          # (locations, n, batch)
        out3 = self.output.reshape(self.batch, self.out_c, self.locations)
        np.add(per_location.transpose(2, 1, 0), self.biases, out=out3)
        if self.x_pre is not None:
            np.copyto(self.x_pre, self.output)
        self.activation.forward(self.output, self.output)

    def backward(self, net):
        self.activation.backprop(self.delta, self.output, self.x_pre, self.exact)
        delta3 = self.delta.reshape(self.batch, self.out_c, self.locations)
        self.bias_updates += delta3.sum(axis=0)
        x = self.input_of(net)
        cols = self._columns_by_location(x)
        delta_t = np.ascontiguousarray(delta3.transpose(2, 1, 0))   # (locations, n, batch)
        self.weight_updates += np.matmul(delta_t, cols.transpose(0, 2, 1))
        prev = self.prev_delta(net, x.shape)
        if prev is None:
            return
        dcols = np.matmul(self.weights.transpose(0, 2, 1), delta_t)  # (locations, kdim, batch)
        col_shape = (self.batch, self.in_c, self.size, self.size, self.out_h, self.out_w)
        dcol = np.ascontiguousarray(dcols.transpose(2, 1, 0)).reshape(col_shape)
        self.op.add_columns(dcol, prev)

    def parameters(self):
        return [("biases", self.biases), ("weights", self.weights)]

    def flops(self):
        return 2.0 * self.filters * self.in_c * self.size * self.size * self.locations

    def describe(self):
        _, _, inp, out = super().describe()
        return f"{self.filters}", f"{self.size} x {self.size} / {self.stride}", inp, out
