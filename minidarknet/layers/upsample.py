"""[upsample]: nearest-neighbour upsampling by an integer `stride`, times `scale` (both forks).

Keys: stride (2), scale (1).
  stride > 0: out(c, y, x) = scale * in(c, y // s, x // s), size (c, h*s, w*s).
              Backward: prev(c, y//s, x//s) += scale * delta(c, y, x) (each s x s block summed).
  stride < 0: pjreddie's "downsample" with s = -stride: out (c, h/s, w/s) = scale * the SUM of
              each s x s block (a sum-pool, not an average).  Darknet's backward broadcasts
              scale*delta back by ASSIGNMENT (overwriting whatever routes/shortcuts added to the
              previous delta); exact mode accumulates.  h and w must be multiples of s (Darknet
              would index a misaligned buffer otherwise).
"""
import numpy as np

from .base import F32, Layer
from .registry import register


@register("upsample")
class Upsample(Layer):
    type = "upsample"
    needs_image = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        stride = section.int("stride", 2)
        self.scale = F32(section.float("scale", 1.0))
        if stride == 0:
            raise section.error("[upsample] stride=0: must be non-zero (negative: downsample)",
                                "stride")
        self.reverse = stride < 0
        self.stride = s = abs(stride)
        if self.reverse:
            if shape.h % s or shape.w % s:
                raise section.error(f"[upsample] stride={stride}: the {shape.w} x {shape.h} "
                                    f"input is not a multiple of {s}", "stride")
            self.set_output_shape(shape.c, shape.h // s, shape.w // s)
        else:
            self.set_output_shape(shape.c, shape.h * s, shape.w * s)
        self.allocate(shape.batch)

    def _blocks(self, big):
        """The large tensor viewed as (batch, c, small h, s, small w, s)."""
        s = self.stride
        h, w = (self.out_h, self.out_w) if self.reverse else (self.in_h, self.in_w)
        return big.reshape(self.batch, self.out_c, h, s, w, s)

    def forward(self, net):
        x = self.input_of(net)
        if self.reverse:
            np.multiply(self._blocks(x).sum(axis=(3, 5), dtype=F32), self.scale, out=self.output)
        else:
            self._blocks(self.output)[...] = (self.scale * x)[:, :, :, None, :, None]

    def backward(self, net):
        if net.delta is None:
            return
        prev = net.delta.reshape((self.batch,) + self.in_shape)
        if self.reverse:
            spread = (self.scale * self.delta)[:, :, :, None, :, None]
            if self.exact:
                self._blocks(prev)[...] += spread
            else:
                self._blocks(prev)[...] = spread
        else:
            prev += self.scale * self._blocks(self.delta).sum(axis=(3, 5), dtype=F32)

    def describe(self):
        size = f"/{self.stride}" if self.reverse else f"{self.stride}x"
        return ("down" if self.reverse else ""), size, *super().describe()[2:]
