"""[logistic] (pjreddie): sigmoid with a binary cross-entropy loss when a truth is present.

Darknet writes delta = truth - p and passes it back unchanged (the gradient w.r.t. the logits);
anything a later layer sends back is passed on without the sigmoid's derivative.  In exact mode
that downstream part is multiplied by p(1-p); the loss part is already exact.
"""
import numpy as np

from .base import F32, Layer
from .registry import register


@register("logistic")
class Logistic(Layer):
    type = "logistic"
    has_cost = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.set_output_shape(shape.c, shape.h, shape.w, shape.inputs)
        self.cost = 0.0
        self.loss_delta = None
        self.allocate(shape.batch)

    def forward(self, net):
        x = net.input.reshape(self.output.shape)
        np.negative(x, out=self.output)
        np.exp(self.output, out=self.output)
        self.output += F32(1)
        np.reciprocal(self.output, out=self.output)
        self.loss_delta = None
        if net.truth is None:
            return
        p = self.output
        t = self.truth_for_loss(net, p.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            loss = -t * np.log(p) - (1 - t) * np.log(1 - p)
        self.cost = float(loss.sum(dtype=np.float64))
        self.objective = self.cost
        if self.exact:
            self.loss_delta = t - p
        else:
            np.subtract(t, p, out=self.delta)

    def backward(self, net):
        if net.delta is None:
            return
        prev = net.delta.reshape(self.delta.shape)
        if not self.exact:
            prev += self.delta
            return
        prev += self.delta * self.output * (1 - self.output)
        if self.loss_delta is not None:
            prev += self.loss_delta

    def describe(self):
        return "", "", f"{self.inputs}", f"{self.outputs}"
