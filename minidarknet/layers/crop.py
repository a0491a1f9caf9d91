"""[crop]: cut a crop_height x crop_width window out of each channel (both forks).

Keys: crop_height (1), crop_width (1), flip (0), noadjust (0); angle (0), saturation (1),
exposure (1) and shift (0) act only on Darknet's GPU path (a warning says so when set).
  * Inference: the centre window ((h - crop_h)/2, (w - crop_w)/2, C integer division), no flip.
  * Training: one random offset in [0, h - crop_h] x [0, w - crop_w] and, with flip=1, one
    random horizontal flip for the WHOLE batch (as Darknet draws them once per forward), taken
    from the network's random generator (`net.rng`) instead of C's rand().
  * Values are mapped x*2 - 1 ([0,1] -> [-1,1]) unless noadjust=1.
Darknet gives the layer no delta, so no gradient flows to the layers before it.  In exact mode
the layer has a delta and its backward scatters scale*delta back to the cropped positions.
"""
import numpy as np

from ..errors import warn
from .base import F32, Layer
from .registry import register

GPU_ONLY = {"angle": 0.0, "saturation": 1.0, "exposure": 1.0, "shift": 0.0}


@register("crop")
class Crop(Layer):
    type = "crop"
    needs_image = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.crop_height = section.int("crop_height", 1)
        self.crop_width = section.int("crop_width", 1)
        self.flip = section.int("flip", 0)
        self.noadjust = section.int("noadjust", 0)
        for key, neutral in GPU_ONLY.items():
            value = section.float(key, neutral)
            if value != neutral:
                warn(f"{section.where(key)}: [crop] {key}={value:g} acts only on Darknet's GPU "
                     f"path; ignored, as on Darknet's CPU")
        for key, size, limit in (("crop_height", self.crop_height, shape.h),
                                 ("crop_width", self.crop_width, shape.w)):
            if not 1 <= size <= limit:
                raise section.error(f"[crop] {key}={size}: must be between 1 and the input's "
                                    f"{limit}", key)
        self.scale, self.trans = (F32(1), F32(0)) if self.noadjust else (F32(2), F32(-1))
        self.set_output_shape(shape.c, self.crop_height, self.crop_width)
        self.offset = (0, 0, False)
        self.allocate(shape.batch)

    def allocate_delta(self):
        # Darknet's crop layer has no delta; exact mode passes the gradient through.
        if self.exact:
            super().allocate_delta()

    def _window(self):
        dh, dw, flip = self.offset
        rows = slice(dh, dh + self.out_h)
        if flip:
            # Darknet: column j reads input column w - dw - j - 1 (mirrored offset too)
            first = self.in_w - dw - 1
            stop = first - self.out_w
            cols = slice(first, stop if stop >= 0 else None, -1)
        else:
            cols = slice(dw, dw + self.out_w)
        return (slice(None), slice(None), rows, cols)

    def forward(self, net):
        if net.train:
            flip = bool(self.flip) and bool(net.rng.integers(2))
            dh = int(net.rng.integers(self.in_h - self.out_h + 1))
            dw = int(net.rng.integers(self.in_w - self.out_w + 1))
            self.offset = (dh, dw, flip)
        else:
            self.offset = ((self.in_h - self.out_h) // 2, (self.in_w - self.out_w) // 2, False)
        x = self.input_of(net)[self._window()]
        np.multiply(x, self.scale, out=self.output)
        self.output += self.trans

    def backward(self, net):
        if self.delta is None or net.delta is None:
            return
        prev = net.delta.reshape((self.batch,) + self.in_shape)
        prev[self._window()] += self.scale * self.delta

    def describe(self):
        return "flip" if self.flip else "", f"{self.out_h} x {self.out_w}", \
            *super().describe()[2:]
