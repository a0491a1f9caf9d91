"""[empty] / [silence] (AlexeyAB): the identity, without a copy.

As in Darknet the layer's output and delta ARE the previous layer's buffers (like [dropout]),
so forward and backward do nothing.  As the first layer it copies the network input and adds
its delta into the input delta (Darknet would read layer -1 there).
"""
from .base import Layer
from .registry import register


@register("empty", "silence")
class Empty(Layer):
    type = "empty"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.set_output_shape(shape.c, shape.h, shape.w, shape.inputs)
        self.prev = net.layers[-1] if net.layers else None
        self.allocate(shape.batch)

    def allocate(self, batch):
        self.batch = batch
        if self.prev is None:
            super().allocate(batch)
        else:
            self.output = self.prev.output
            self.delta = self.prev.delta

    def allocate_delta(self):
        if self.prev is None:
            super().allocate_delta()
        else:
            self.delta = self.prev.delta

    def forward(self, net):
        if self.prev is None:
            self.output[...] = net.input.reshape(self.output.shape)

    def backward(self, net):
        if self.prev is None and net.delta is not None:
            net.delta.reshape(self.delta.shape)[...] += self.delta
