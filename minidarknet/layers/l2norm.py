"""[l2norm]: divide by the L2 norm across channels at each pixel (pjreddie's layer).

Forward as Darknet: y = x / sqrt(sum_c x^2), no epsilon, and `scales = (1 - y)/norm` is kept.
An all-zero column gives y = 0 (and scales = 1), as Darknet's GPU path does, where its CPU path
gives NaN.  Optional keys beyond Darknet:
  backward = darknet | scales | exact  (default: the network's gradients mode)
      darknet: pass delta through unchanged (Darknet's CPU code);
      scales:  delta += scales, then pass through (Darknet's GPU code, NumPyNet);
      exact:   the true Jacobian, (delta - y * sum(delta*y)) / norm.
  axis = channels | sample   (sample: all values of one sample, as NumPyNet's axis=None per image)
  eps = 0                    (added under the square root; NumPyNet uses 1e-8)
"""
import numpy as np

from .base import F32, Layer
from .registry import register

BACKWARD_MODES = ("darknet", "scales", "exact")
AXES = {"channels": "channels", "c": "channels", "1": "channels",
        "sample": "sample", "all": "sample"}


@register("l2norm")
class L2Norm(Layer):
    type = "l2norm"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.set_output_shape(shape.c, shape.h, shape.w, shape.inputs)
        default = "exact" if self.exact else "darknet"
        self.backward_mode = section.str("backward", default)
        if self.backward_mode not in BACKWARD_MODES:
            raise section.error(f"[l2norm] backward={self.backward_mode}: expected one of "
                                f"{', '.join(BACKWARD_MODES)}", "backward")
        axis = section.str("axis", "channels")
        if axis not in AXES:
            raise section.error(f"[l2norm] axis={axis}: expected channels or sample", "axis")
        self.axis = AXES[axis]
        self.eps = F32(section.float("eps", 0.0))
        if self.eps < 0:
            raise section.error(f"[l2norm] eps={self.eps}: must not be negative", "eps")
        self.allocate(shape.batch)

    def allocate(self, batch):
        super().allocate(batch)
        self.scales = np.zeros_like(self.output)
        self.norm = None

    def _grouped(self, a):
        """View as (batch, group, spatial) with the sum taken over axis 1.  After a layer with
        no image shape Darknet's out_c is 0 and nothing is normalised (spatial = 0)."""
        if self.axis == "sample":
            return a.reshape(self.batch, -1, 1)
        c = self.out_c if self.out_c * self.out_h * self.out_w == self.outputs else 0
        if c == 0:
            return None
        return a.reshape(self.batch, c, -1)

    def forward(self, net):
        self.output[...] = net.input.reshape(self.output.shape)
        x = self._grouped(self.output)
        if x is None:
            self.norm = None
            return
        norm = np.einsum("bcs,bcs->bs", x, x)
        if self.eps:
            norm += self.eps
        np.sqrt(norm, out=norm)
        norm[norm == 0] = 1  # 0/0: Darknet's GPU path substitutes 1; its CPU path gives NaN
        self.norm = norm[:, None, :]
        x /= self.norm
        scales = self._grouped(self.scales)
        np.subtract(F32(1), x, out=scales)
        scales /= self.norm

    def backward(self, net):
        if self.backward_mode == "scales":
            self.delta += self.scales
        if net.delta is None:
            return
        prev = net.delta.reshape(self.delta.shape)
        if self.backward_mode != "exact" or self.norm is None:
            prev += self.delta
            return
        g = self._grouped(self.delta)
        y = self._grouped(self.output)
        dot = np.einsum("bcs,bcs->bs", g, y)[:, None, :]
        self._grouped(prev)[...] += (g - y * dot) / self.norm

    def describe(self):
        return "", "", f"{self.inputs}", f"{self.outputs}"
