"""[crnn]: Darknet's convolutional recurrent layer, three [convolutional] sub-layers arranged
like [rnn] (input_layer: c -> hidden, self_layer: hidden -> hidden, output_layer: hidden ->
output filters, each with the activation; see ThreeBlockRecurrent in recurrent.py for the state,
the time steps and Darknet's backward quirks).  Every sub-layer keeps the w x h of the input.

The forks read different keys; the cfg says which one it is written for:
  * pjreddie: output_filters (1), hidden_filters (1); the convolutions are always 3x3, stride 1,
    padding 1.  pjreddie passes the input's width and height swapped to the layer, so a
    non-square W x H input is read as an H x W image (the buffer is not transposed, only
    re-read) and the layer outputs H x W: reproduced.
  * AlexeyAB: output (1), hidden (1), size (3), stride (1), dilation (1), pad (0) / padding (0)
    (pad=1 means padding=size/2), groups (1), xnor (0, XNOR is not supported).  The sizes
    must keep the w x h (AlexeyAB asserts it).
  Common: activation (logistic), batch_normalize (0), shortcut (0).  A section with any of
  AlexeyAB's keys is read as AlexeyAB's; mixing the two sets is an error.

Weights file (both forks): input_layer, self_layer, output_layer in [convolutional] format.

Backward (gradients="darknet") follows pjreddie's convolution: a 1x1 block writes its input
delta with beta=0 (replacing the recurrent delta already gathered for that step), larger kernels
accumulate.  AlexeyAB's CPU convolution overwrites for every kernel size; as for the
[convolutional] layer, that is not reproduced.
"""
from .. import ops
from .base import Layer
from .convolutional import Convolutional
from .recurrent import ConvBlock, ThreeBlockRecurrent, sequence_steps
from .registry import register

PJ_KEYS = ("output_filters", "hidden_filters")
AB_KEYS = ("output", "hidden", "size", "stride", "dilation", "pad", "padding", "groups", "xnor")


@register("crnn")
class CRNN(ThreeBlockRecurrent):
    type = "crnn"
    needs_image = True
    # its blocks are convolutional layers in AlexeyAB's Darknet
    special_activations = Convolutional.special_activations

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        pj = [k for k in PJ_KEYS if s.has(k)]
        ab = [k for k in AB_KEYS if s.has(k)]
        if pj and ab:
            raise s.error(f"[crnn]: pjreddie's keys ({', '.join(pj)}) and AlexeyAB's "
                          f"({', '.join(ab)}) in one section; use one fork's set", ab[0])
        self.key_set = "alexeyab" if ab else "pjreddie"
        if self.key_set == "pjreddie":
            outputs, hidden = s.int("output_filters", 1), s.int("hidden_filters", 1)
            geometry = (3, 1, 1, 1, 1)
            h, w = shape.w, shape.h            # pjreddie's swap
        else:
            outputs, hidden = s.int("output", 1), s.int("hidden", 1)
            geometry = self._ab_geometry(s)
            h, w = shape.h, shape.w
        for key, value in (("output", outputs), ("hidden", hidden)):
            if value < 1:
                key = key + "_filters" if self.key_set == "pjreddie" else key
                raise s.error(f"[crnn] {key}={value}: must be at least 1", key)
        activation = self.activation_from(s, "logistic")
        self.batch_normalize = s.int("batch_normalize", 0)
        self.shortcut = s.int("shortcut", 0)
        self.size, self.stride, self.padding, self.dilation, self.groups = geometry
        self._check_geometry(s, shape.c, hidden, outputs, h, w)
        self.output_filters, self.hidden_filters = outputs, hidden
        self.input_row = (shape.c, h, w)
        self.hidden_row = (hidden, h, w)
        self.output_row = (outputs, h, w)
        self.set_output_shape(outputs, h, w)
        bn, rng, exact = self.batch_normalize, net.rng, self.exact
        self.input_layer = self.add_block(ConvBlock(
            "input_layer", shape.c, h, w, hidden, geometry, activation, bn, rng, exact))
        self.self_layer = self.add_block(ConvBlock(
            "self_layer", hidden, h, w, hidden, geometry, activation, bn, rng, exact))
        self.output_layer = self.add_block(ConvBlock(
            "output_layer", hidden, h, w, outputs, geometry, activation, bn, rng, exact))
        self.steps = sequence_steps(self, net)
        self.allocate(shape.batch)

    @staticmethod
    def _ab_geometry(s):
        size, stride = s.int("size", 3), s.int("stride", 1)
        dilation = s.int("dilation", 1)
        pad, padding = s.int("pad", 0), s.int("padding", 0)
        if pad:
            padding = size // 2
        groups = s.int("groups", 1)
        if s.int("xnor", 0):
            raise s.error("[crnn] xnor: XNOR convolutions are not supported by minidarknet",
                          "xnor")
        checks = [("size", size >= 1), ("stride", stride >= 1), ("dilation", dilation >= 1),
                  ("groups", groups >= 1), ("padding", padding >= 0)]
        for key, ok in checks:
            if not ok:
                raise s.error(f"[crnn] {key}={s.raw(key)}: must be at least "
                              f"{0 if key == 'padding' else 1}", key)
        if size == 1:
            dilation = 1                        # AlexeyAB forces it
        return size, stride, padding, dilation, groups

    def _check_geometry(self, s, c, hidden, outputs, h, w):
        k, stride, p, d = self.size, self.stride, self.padding, self.dilation
        for what, n in (("input channels", c), ("hidden", hidden), ("output", outputs)):
            if n % self.groups:
                raise s.error(f"[crnn] groups={self.groups}: must divide the {what} ({n})",
                              "groups")
        if k == 1 and (stride > 1 or p > 0):
            raise s.error(f"[crnn] size=1 with stride {stride} and padding {p}: Darknet's CPU "
                          f"code skips im2col for size 1 and computes garbage here", "size")
        out_h = ops.c_div(h + 2 * p - k, stride) + 1
        out_w = ops.c_div(w + 2 * p - k, stride) + 1
        reach = d * (k - 1) + 1
        cols = (ops.c_div(h + 2 * p * d - reach, stride) + 1,
                ops.c_div(w + 2 * p * d - reach, stride) + 1)
        if (out_h, out_w) != (h, w) or cols != (h, w):
            raise s.error(f"[crnn] size={k} stride={stride} padding={p} dilation={d}: the "
                          f"sub-layers must keep the {w} x {h} input size (they give "
                          f"{out_w} x {out_h}); use stride=1 and pad=1 with an odd size",
                          "size")

    def describe(self):
        # Darknet prints "CRNN Layer: %d x %d x %d image, %d filters".
        _, _, inp, out = Layer.describe(self)          # image shapes, as [convolutional]
        size = f"{self.size} x {self.size} / {self.stride}, hidden {self.hidden_filters}"
        return f"{self.output_filters}", size, inp, out
