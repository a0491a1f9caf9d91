"""[maxpool] / [max]: maximum over size x size windows (Darknet's maxpool_layer.c).

Keys (pjreddie): stride (1), size (default stride), padding (default size-1).  `padding` is the
TOTAL padding: out = (h + padding - size)/stride + 1 and the window origin is -(padding/2)
(C division, so odd padding pads the bottom/right: 2x2/1 keeps h x w).  Cells outside the
input count as -FLT_MAX; the maximum is taken with a strict `>` in row-major window order, so
the first maximum wins (and NaN never wins); backward adds each delta into its argmax.

AlexeyAB extras: stride_x / stride_y (default stride); maxpool_depth=1 with out_channels=K
(the max over the channels g, g+K, g+2K, ... at each pixel; size/stride/padding are ignored);
maxpool_zero_nonmax (read; AlexeyAB uses it only on the GPU, so the CPU result is unchanged).
antialiasing is rejected (not implemented).
"""
import numpy as np

from .. import ops
from .base import Layer
from .registry import register


def read_pool_geometry(layer, s, kind):
    """stride(s), size, padding as maxpool_layer.c reads them; sets them on `layer`."""
    layer.stride = s.int("stride", 1)
    layer.stride_x = s.int("stride_x", layer.stride)
    layer.stride_y = s.int("stride_y", layer.stride)
    layer.size = s.int("size", layer.stride)
    layer.padding = s.int("padding", layer.size - 1)
    for key, value, least in (("stride", min(layer.stride_x, layer.stride_y), 1),
                              ("size", layer.size, 1), ("padding", layer.padding, 0)):
        if value < least:
            raise s.error(f"[{kind}] {key}={value}: must be at least {least}", key)


def pool_output_size(layer, s, kind, shape):
    out_h = ops.c_div(shape.h + layer.padding - layer.size, layer.stride_y) + 1
    out_w = ops.c_div(shape.w + layer.padding - layer.size, layer.stride_x) + 1
    if out_h < 1 or out_w < 1:
        raise s.error(f"[{kind}] size={layer.size} padding={layer.padding}: the {shape.w} x "
                      f"{shape.h} input is too small (output {out_w} x {out_h})", "size")
    return out_h, out_w


def pool_size_text(layer):
    stride = (f"{layer.stride_x}" if layer.stride_x == layer.stride_y
              else f"{layer.stride_x}x{layer.stride_y}")
    return f"{layer.size} x {layer.size} / {stride}"


@register("maxpool", "max")
class MaxPool(Layer):
    type = "maxpool"
    needs_image = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        read_pool_geometry(self, s, "maxpool")
        if s.int("antialiasing", 0):
            raise s.error(f"[maxpool] antialiasing={s.raw('antialiasing')}: AlexeyAB's "
                          f"anti-aliased maxpool is not supported by minidarknet",
                          "antialiasing")
        s.int("maxpool_zero_nonmax", 0)     # AlexeyAB GPU path only
        self.maxpool_depth = s.int("maxpool_depth", 0)
        self.out_channels = s.int("out_channels", 1)
        self.op = None
        if self.maxpool_depth:
            if self.out_channels < 1:
                raise s.error(f"[maxpool] out_channels={self.out_channels}: must be at least "
                              f"1", "out_channels")
            self.set_output_shape(self.out_channels, shape.h, shape.w)
        else:
            out_h, out_w = pool_output_size(self, s, "maxpool", shape)
            self.set_output_shape(shape.c, out_h, out_w)
            self.op = ops.PoolOp(shape.c, shape.h, shape.w, self.size, self.stride_y,
                                 self.stride_x, self.padding, out_h, out_w)
        self.indexes = None
        self.allocate(shape.batch)

    def allocate(self, batch):
        super().allocate(batch)
        # Window offset (or channel step for maxpool_depth) of each output's maximum.
        count = (-(-self.in_c // self.out_channels) if self.maxpool_depth
                 else self.size * self.size)
        dtype = np.int8 if count < 127 else np.int32
        self.indexes = np.zeros(self.output.shape, dtype)
        self._indexes_valid = False

    def forward(self, net):
        x = self.input_of(net)
        # Darknet always records the argmax; we do it only when training (a backward after
        # an inference forward recomputes it from the same input).
        if net.train:
            self._argmax(x)
        else:
            self._indexes_valid = False
            if self.maxpool_depth:
                self._depth_argmax(x)
            else:
                self.op.max_forward(x, self.output)

    def _argmax(self, x):
        if self.maxpool_depth:
            self._depth_argmax(x)
        else:
            self.op.max_argmax(x, self.output, self.indexes)
        self._indexes_valid = True

    def _depth_argmax(self, x):
        """AlexeyAB's maxpool_depth: out[g] = max over channels g, g+K, g+2K, ..."""
        k = self.out_channels
        out, arg = self.output, self.indexes
        out.fill(ops.NEG_FLT_MAX)
        arg.fill(-1)
        for step, c0 in enumerate(range(0, self.in_c, k)):
            cand = x[:, c0:c0 + k]
            width = cand.shape[1]
            better = cand > out[:, :width]
            np.copyto(out[:, :width], cand, where=better)
            np.copyto(arg[:, :width], step, where=better)
        self._indexes_valid = True

    def backward(self, net):
        if net.delta is None:
            return
        x = self.input_of(net)
        if not self._indexes_valid:
            self._argmax(x)
        prev = self.prev_delta(net, x.shape)
        if self.maxpool_depth:
            k = self.out_channels
            for step, c0 in enumerate(range(0, self.in_c, k)):
                target = prev[:, c0:c0 + k]
                width = target.shape[1]
                np.add(target, self.delta[:, :width], out=target,
                       where=(self.indexes[:, :width] == step))
            return
        self.op.max_backward(self.indexes, self.delta, prev)

    def describe(self):
        _, _, inp, out = super().describe()
        if self.maxpool_depth:
            return "depth", f"-> {self.out_channels}", inp, out
        return "", pool_size_text(self), inp, out
