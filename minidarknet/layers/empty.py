"""[empty] / [silence] (AlexeyAB): the identity, without a copy.

As in Darknet the layer's output and delta ARE the previous layer's buffers (like [dropout]),
so forward and backward do nothing.  As the first layer it copies the network input and adds
its delta into the input delta (Darknet would read layer -1 there).
"""
from .base import InPlaceLayer
from .registry import register


@register("empty", "silence")
class Empty(InPlaceLayer):
    type = "empty"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.allocate(shape.batch)

    def forward(self, net):
        self.copy_input(net)

    def backward(self, net):
        if self.prev is None and net.delta is not None:
            net.delta.reshape(self.delta.shape)[...] += self.delta
