"""[activation]: apply an activation function (default linear) to the previous output.

Darknet's backward COPIES its delta into the previous delta (overwriting what routes or
shortcuts added there); gradients="exact" accumulates instead.
"""
from .base import Layer
from .registry import register


@register("activation")
class ActivationLayer(Layer):
    type = "activation"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.activation = self.activation_from(section, "linear")
        self.set_output_shape(shape.c, shape.h, shape.w, shape.inputs)
        self.x_pre = None
        self.allocate(shape.batch)

    def forward(self, net):
        x = net.input.reshape(self.output.shape)
        self.x_pre = x.copy() if self.activation.needs_input(self.exact) else None
        self.activation.forward(x, self.output)

    def backward(self, net):
        self.activation.backprop(self.delta, self.output, self.x_pre, self.exact)
        if net.delta is None:
            return
        prev = net.delta.reshape(self.delta.shape)
        if self.exact:
            prev += self.delta
        else:
            prev[...] = self.delta

    def describe(self):
        return self.activation.name, "", *super().describe()[2:]
