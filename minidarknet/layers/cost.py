"""[cost]: a loss on the previous layer's output against the truth.

`output` holds the per-element error (not a pass-through) and the layer is not the network's
output.  Types: sse (also seg, wgan and masked, as on Darknet's CPU), smooth, L1.  backward adds
scale*delta into the previous delta.  Darknet's `smooth` delta has the wrong sign (pjreddie);
gradients="exact" uses the right one.  In exact mode each delta is the negative gradient of
`objective`: scale * (sum(diff^2)/2 | sum(smooth error)/2 | sum(|diff|)).
"""
import numpy as np

from .base import F32, Layer
from .registry import register

SECRET_NUM = F32(-1234)
TYPES = ("sse", "masked", "smooth", "L1", "seg", "wgan")


@register("cost")
class Cost(Layer):
    type = "cost"
    has_cost = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.cost_type = section.str("type", "sse")
        if self.cost_type not in TYPES:
            raise section.error(f"[cost] type={self.cost_type}: unknown cost type "
                                f"(expected one of {', '.join(TYPES)})", "type")
        self.scale = F32(section.float("scale", 1.0))
        # ratio, noobj and thresh only act on Darknet's GPU path.
        self.ratio = section.float("ratio", 0.0)
        self.noobject_scale = section.float("noobj", 1.0)
        self.thresh = section.float("thresh", 0.0)
        self.set_output_shape(0, 0, 0, shape.inputs)
        self.cost = 0.0
        self.allocate(shape.batch)

    def forward(self, net):
        if net.truth is None:
            return
        pred = net.input.reshape(self.output.shape)
        truth = self.truth_for_loss(net, self.output.shape)
        if self.cost_type == "masked":
            pred[truth == SECRET_NUM] = SECRET_NUM   # Darknet overwrites the input in place
        diff = truth - pred
        if self.cost_type == "smooth":
            small = np.abs(diff) < 1
            np.copyto(self.output, np.where(small, diff * diff, 2 * np.abs(diff) - 1))
            sign = F32(1) if self.exact else F32(-1)   # pjreddie's sign bug
            np.copyto(self.delta, np.where(small, diff, np.where(diff > 0, sign, -sign)))
            objective_scale = .5
        elif self.cost_type == "L1":
            np.abs(diff, out=self.output)
            np.copyto(self.delta, np.where(diff > 0, F32(1), F32(-1)))
            objective_scale = 1.0
        else:
            np.multiply(diff, diff, out=self.output)
            np.copyto(self.delta, diff)
            objective_scale = .5
        self.cost = float(self.output.sum(dtype=np.float64))
        self.objective = float(self.scale) * objective_scale * self.cost

    def backward(self, net):
        if net.delta is not None:
            net.delta.reshape(self.delta.shape)[...] += self.scale * self.delta

    def describe(self):
        return "", "", f"{self.inputs}", f"{self.outputs}"
