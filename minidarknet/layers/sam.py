"""[sam] (AlexeyAB, spatial attention module): out = act(prev * from), element by element.

Keys: from (required, one earlier layer of the previous layer's shape), activation (linear).
Backward: delta *= act'; prev.delta += delta*from.  AlexeyAB's CPU code then ASSIGNS
from.delta = prev*delta (overwriting what other layers added there); exact mode adds.
"""
from .base import Layer, _shape_str
from .registry import register
from .route import read_single_reference


@register("sam")
class Sam(Layer):
    type = "sam"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.source = read_single_reference(section, "from", net)
        self.from_layer = src = net.layers[self.source]
        self.activation = self.activation_from(section, "linear")
        prev = (shape.c, shape.h, shape.w)
        if prev != (src.out_c, src.out_h, src.out_w) or src.outputs != shape.inputs:
            raise section.error(f"[sam] from={section.raw('from')}: layer {self.source} outputs "
                                f"{_shape_str(src.out_c, src.out_h, src.out_w, src.outputs)}, "
                                f"the previous layer "
                                f"{_shape_str(shape.c, shape.h, shape.w, shape.inputs)}; they "
                                f"must be equal", "from")
        self.set_output_shape(shape.c, shape.h, shape.w, shape.inputs)
        self.x_pre = None
        self.allocate(shape.batch)

    def forward(self, net):
        prev = net.input.reshape(self.output.shape)
        src = self.from_layer.output.reshape(self.output.shape)
        if self.activation.needs_input(self.exact):
            self.x_pre = prev * src
        self.activation.forward(prev * src, self.output)

    def backward(self, net):
        self.activation.backprop(self.delta, self.output, self.x_pre, self.exact)
        if net.delta is not None:
            net.delta.reshape(self.delta.shape)[...] += \
                self.delta * self.from_layer.output.reshape(self.delta.shape)
        if self.from_layer.delta is not None:
            src = self.from_layer.delta.reshape(self.delta.shape)
            product = net.input.reshape(self.delta.shape) * self.delta
            if self.exact:
                src += product
            else:
                src[...] = product

    def describe(self):
        return f"from {self.source}", "", *super().describe()[2:]
