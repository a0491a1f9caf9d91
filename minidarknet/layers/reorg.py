"""[reorg] (pjreddie's, = AlexeyAB's old reorg) and [reorg3d] (AlexeyAB's space-to-depth).

Both are Darknet's one index routine (reorg_cpu) with parameters (W, H, C, s): a "small"
tensor (C, H, W) and a "big" one (C/s^2, H*s, W*s) of the same size, where
    small[(dy*s + dx)*C/s^2 + c, j, i]  <->  big[c, j*s + dy, i*s + dx].
"Mode A" writes big from small, "mode B" small from big.  The two layers differ in which dims
they pass:

[reorg] stride (1), reverse, flatten, extra (the last two pjreddie only):
  * forward = mode B with the INPUT dims: the input buffer is read as a (C/s^2, H*s, W*s)
    tensor and space-to-depth'ed into (C, H, W), which is then labelled (C*s^2, H/s, W/s).
    This is the "strange permutation" every YOLOv2 weights file was trained with; for
    stride 2 on a 4x4x4 ramp the first output channel is 0 2 4 6 (a true space-to-depth
    gives 0 2 8 10).  Equivalent numpy (golden quirk 7):
        x.reshape(B, C/s^2, H, s, W, s).transpose(0, 3, 5, 1, 2, 4).reshape(B, C*s^2, H/s, W/s)
  * reverse=1: mode A with the input dims: out (C/s^2, H*s, W*s), a true depth-to-space.
  * flatten=1: (C, H*W) -> (H*W, C) per sample (reverse: the other way); dims as for stride.
  * extra=k: out dims 0, outputs = inputs + k; the input is copied, the tail stays 0.
[reorg3d] stride, reverse:
  * forward = mode B with the OUTPUT dims (W/s, H/s, C*s^2): a correct space-to-depth, output
    channel (dy*s + dx)*C + c at (y, x) = input (c, y*s + dy, x*s + dx).
  * reverse=1: mode A with the output dims (W*s, H*s, C/s^2), i.e. the input read as
    (C/s^2, H*s, W*s) and written as (C/s^4, H*s^2, W*s^2) -- literally what AlexeyAB's code
    does (it is not the inverse of the forward); needs C divisible by s^4.

Backward is the inverse permutation in every mode.  Darknet ASSIGNS it into the previous delta
(overwriting what a route or shortcut may have added); exact mode adds.  Shapes whose
divisions are not exact make Darknet read or write out of bounds; here they are a CfgError.
"""

from .base import Layer
from .registry import register


def reorg_small_from_big(x, W, H, C, s):
    """Mode B on (batch, C*H*W) rows: big (C/s^2, H*s, W*s) -> small (C, H, W)."""
    big = x.reshape(x.shape[0], C // (s * s), H, s, W, s)          # [c, j, dy, i, dx]
    return big.transpose(0, 3, 5, 1, 2, 4).reshape(x.shape[0], -1)  # [dy, dx, c, j, i]


def reorg_big_from_small(x, W, H, C, s):
    """Mode A on (batch, C*H*W) rows: small (C, H, W) -> big (C/s^2, H*s, W*s)."""
    small = x.reshape(x.shape[0], s, s, C // (s * s), H, W)         # [dy, dx, c, j, i]
    return small.transpose(0, 3, 4, 1, 5, 2).reshape(x.shape[0], -1)  # [c, j, dy, i, dx]


class _ReorgBase(Layer):
    needs_image = True

    def _read_stride(self, section):
        s = section.int("stride", 1)
        if s < 1:
            raise section.error(f"{section.header} stride={s}: must be at least 1", "stride")
        return s

    def _check_divisible(self, section, c, h, w, s, reverse, channels_read_big):
        """Darknet's integer divisions must be exact, or its loops leave the buffers."""
        if reverse:
            if c % (s * s):
                raise section.error(f"{section.header} reverse with stride={s}: the {c} input "
                                    f"channels are not a multiple of {s * s}", "stride")
        elif h % s or w % s:
            raise section.error(f"{section.header} stride={s}: the {w} x {h} input is not a "
                                f"multiple of {s}", "stride")
        elif channels_read_big and c % (s * s):
            raise section.error(f"{section.header} stride={s}: the {c} input channels are not "
                                f"a multiple of {s * s} (Darknet reads the input as a "
                                f"{c}/{s * s} x {h * s} x {w * s} tensor)", "stride")

    def _dims(self, c, h, w, s, reverse):
        return (c // (s * s), h * s, w * s) if reverse else (c * s * s, h // s, w // s)

    def _apply(self, x, inverse):
        """The forward permutation (or its inverse) on (batch, n) rows."""
        raise NotImplementedError

    def forward(self, net):
        x = net.input.reshape(self.batch, self.inputs)
        self.output.reshape(self.batch, -1)[...] = self._apply(x, inverse=False)

    def backward(self, net):
        if net.delta is None:
            return
        prev = net.delta.reshape(self.batch, self.inputs)
        back = self._apply(self.delta.reshape(self.batch, -1), inverse=True)
        if self.exact:
            prev += back
        else:
            prev[...] = back

    def describe(self):
        return "", f"/{self.stride}", *super().describe()[2:]


@register("reorg")
class Reorg(_ReorgBase):
    type = "reorg"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = self.stride = self._read_stride(section)
        self.reverse = section.int("reverse", 0)
        self.flatten = section.int("flatten", 0)
        self.extra = section.int("extra", 0)
        if self.extra < 0:
            raise section.error(f"[reorg] extra={self.extra}: must not be negative", "extra")
        if self.extra and (self.reverse or self.flatten):
            # Darknet's forward and backward pick different branches for these combinations.
            other = "reverse" if self.reverse else "flatten"
            raise section.error(f"[reorg] extra= cannot be combined with {other}=1 (Darknet's "
                                f"forward and backward disagree there)", "extra")
        c, h, w = shape.c, shape.h, shape.w
        if self.extra:
            self.set_output_shape(0, 0, 0, shape.inputs + self.extra)
        else:
            self._check_divisible(section, c, h, w, s, self.reverse,
                                  channels_read_big=not self.flatten)
            self.set_output_shape(*self._dims(c, h, w, s, self.reverse))
        self.allocate(shape.batch)

    def _apply(self, x, inverse):
        W, H, C, s = self.in_w, self.in_h, self.in_c, self.stride
        if self.flatten:
            # forward: (C, H*W) -> (H*W, C); reverse flips the direction, inverse flips again
            to_pixels_major = bool(self.reverse) == inverse
            shape = (C, H * W) if to_pixels_major else (H * W, C)
            return x.reshape((x.shape[0],) + shape).transpose(0, 2, 1).reshape(x.shape[0], -1)
        if self.extra:
            return x[:, :self.inputs] if inverse else x
        if bool(self.reverse) != inverse:
            return reorg_big_from_small(x, W, H, C, s)
        return reorg_small_from_big(x, W, H, C, s)

    def forward(self, net):
        if not self.extra:
            return super().forward(net)
        # the tail beyond the inputs is never written (zeros from allocation)
        self.output.reshape(self.batch, -1)[:, :self.inputs] = \
            net.input.reshape(self.batch, self.inputs)

    def describe(self):
        if self.extra:
            return "", f"+{self.extra}", f"{self.inputs}", f"{self.outputs}"
        return super().describe()


@register("reorg3d")
class Reorg3d(_ReorgBase):
    type = "reorg3d"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = self.stride = self._read_stride(section)
        self.reverse = section.int("reverse", 0)
        c, h, w = shape.c, shape.h, shape.w
        if self.reverse and c % (s ** 4):
            raise section.error(f"[reorg3d] reverse=1 stride={s}: AlexeyAB's reverse reads the "
                                f"input as {c}/{s * s} channels and needs {c} to be a multiple "
                                f"of {s ** 4}", "reverse")
        self._check_divisible(section, c, h, w, s, self.reverse, channels_read_big=False)
        self.set_output_shape(*self._dims(c, h, w, s, self.reverse))
        self.allocate(shape.batch)

    def _apply(self, x, inverse):
        W, H, C, s = self.out_w, self.out_h, self.out_c, self.stride
        if bool(self.reverse) != inverse:
            return reorg_big_from_small(x, W, H, C, s)
        return reorg_small_from_big(x, W, H, C, s)
