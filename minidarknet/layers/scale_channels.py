"""[scale_channels] (AlexeyAB): scale an earlier layer's output by the previous layer's output.

Keys: from (required, one earlier layer), scale_wh (0), activation (linear).
  * scale_wh=0 (squeeze-excitation): the previous layer is 1 x 1 x C and out(c, y, x) =
    prev(c) * from(c, y, x).
  * scale_wh=1: the previous layer is W x H x 1 and out(c, y, x) = prev(y, x) * from(c, y, x).
Output dims = the from layer's.  Then the activation.  Backward (the true gradient, as Darknet):
delta *= act'; prev.delta += sum over the broadcast axis of delta*from; from.delta +=
prev*delta.  AlexeyAB asserts the shapes fit; here a mismatch is a CfgError.
"""
from .base import Layer, _shape_str
from .registry import register
from .route import read_single_reference


@register("scale_channels")
class ScaleChannels(Layer):
    type = "scale_channels"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.source = read_single_reference(section, "from", net)
        self.from_layer = src = net.layers[self.source]
        self.scale_wh = section.int("scale_wh", 0)
        self.activation = self.activation_from(section, "linear")
        fc, fh, fw = src.out_c, src.out_h, src.out_w
        if not (fc and fh and fw) or fc * fh * fw != src.outputs:
            raise section.error(f"[scale_channels] from={section.raw('from')}: layer "
                                f"{self.source} ({src.type}) has no c x h x w shape", "from")
        if self.scale_wh:
            ok = shape.c == 1 and (shape.w, shape.h) == (fw, fh)
            want = f"{fw} x {fh} x 1"
        else:
            ok = shape.w == 1 and shape.h == 1 and shape.c == fc
            want = f"1 x 1 x {fc}"
        if not ok or shape.c * shape.h * shape.w != shape.inputs:
            raise section.error(f"[scale_channels]{' scale_wh=1' if self.scale_wh else ''}: "
                                f"the previous layer must output {want} (the scale for layer "
                                f"{self.source}'s {fw} x {fh} x {fc}); it outputs "
                                f"{_shape_str(shape.c, shape.h, shape.w, shape.inputs)}")
        self.set_output_shape(fc, fh, fw)
        self.x_pre = None
        self.allocate(shape.batch)

    def _scale_view(self, a):
        """The previous layer's buffer shaped to broadcast against (batch, c, h*w)."""
        if self.scale_wh:
            return a.reshape(self.batch, 1, self.out_h * self.out_w)
        return a.reshape(self.batch, self.out_c, 1)

    def _from_view(self, a):
        return a.reshape(self.batch, self.out_c, -1)

    def forward(self, net):
        out = self._from_view(self.output)
        out[...] = self._scale_view(net.input) * self._from_view(self.from_layer.output)
        if self.activation.needs_input(self.exact):
            self.x_pre = self.output.copy()
        self.activation.forward(self.output, self.output)

    def backward(self, net):
        self.activation.backprop(self.delta, self.output, self.x_pre, self.exact)
        delta = self._from_view(self.delta)
        if net.delta is not None:
            axis = 1 if self.scale_wh else 2
            prev = self._scale_view(net.delta)
            prev += (delta * self._from_view(self.from_layer.output)).sum(axis=axis,
                                                                          keepdims=True)
        if self.from_layer.delta is not None:
            self._from_view(self.from_layer.delta)[...] += self._scale_view(net.input) * delta

    def describe(self):
        return f"from {self.source}", "wh" if self.scale_wh else "", *super().describe()[2:]
