"""[deconvolutional] / [deconv] (pjreddie): transposed convolution (+ batch norm or bias)
+ activation.

Keys: filters (1), size (1), stride (1), pad / padding (pad=1 means padding=size/2),
batch_normalize (0), activation (logistic).  out = (h - 1)*stride + size - 2*padding.
Forward per sample: columns = W^T . x, scattered (added) into the output with col2im, i.e. the
adjoint of a convolution from the output back to the input.  Backward: the activation and
BN/bias gradients, weight_updates += x . im2col(delta)^T, previous delta += W . im2col(delta)
(accumulating); this is the true gradient, so only batch norm differs between the modes.

Weights file: biases[n], [scales, rolling_mean, rolling_variance], weights[c][n][size][size]
(the layout of PyTorch's ConvTranspose2d).  pjreddie never sets groups for this layer and its
loader divides by it (a crash, pjreddie#1515); minidarknet reads c*n*size*size weights.
"""
import numpy as np

from .. import ops
from .base import F32, WeightedLayer
from .batchnorm import bn_backward, bn_forward
from .registry import register


@register("deconvolutional", "deconv")
class Deconvolutional(WeightedLayer):
    type = "deconvolutional"
    blas_threads = True
    needs_image = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        n, k = s.int("filters", 1), s.int("size", 1)
        self.filters, self.size, self.stride = n, k, s.int("stride", 1)
        pad, self.padding = s.int("pad", 0), s.int("padding", 0)
        if pad:
            self.padding = k // 2
        self.activation = self.activation_from(s, "logistic")
        self.batch_normalize = s.int("batch_normalize", 0)
        for key, value, least in (("filters", n, 1), ("size", k, 1),
                                  ("stride", self.stride, 1), ("padding", self.padding, 0)):
            if value < least:
                raise s.error(f"[deconvolutional] {key}={value}: must be at least {least}", key)
        if self.numload:
            raise s.error("[deconvolutional] numload is not supported (Darknet cannot load "
                          "deconvolutional weights at all)", "numload")
        out_h = (shape.h - 1) * self.stride + k - 2 * self.padding
        out_w = (shape.w - 1) * self.stride + k - 2 * self.padding
        if out_h < 1 or out_w < 1:
            raise s.error(f"[deconvolutional] padding={self.padding}: output {out_w} x {out_h} "
                          f"is empty", "padding")
        self.set_output_shape(n, out_h, out_w)
        # The convolution from this layer's output back to its input: its weights
        # (c, n, k, k) are exactly the deconvolution's.
        self.op = ops.ConvOp(n, out_h, out_w, shape.c, k, self.stride, self.stride,
                             self.padding, 1, 1, shape.h, shape.w)
        self.check_count(shape.c * n * k * k, f"weights {shape.c} x {n} x {k} x {k}", "filters",
                         bytes_per_value=12)
        self.init_parameters(
            (F32(.02) * net.rng.standard_normal((shape.c, n, k, k))).astype(F32), n)
        self.train = False
        self.allocate(shape.batch)

    def allocate(self, batch):
        super().allocate(batch)
        self.x_pre = (np.zeros_like(self.output) if self.activation.needs_input(self.exact)
                      else None)
        self._input_scratch = None

    def forward(self, net):
        x = self.input_of(net)
        self.train = net.train
        out = self.output
        out.fill(0)
        self.op.backward(None, x, self.weights, None, out)
        out3 = out.reshape(self.batch, self.out_c, -1)
        if self.batch_normalize:
            bn_forward(self, out3, net.train)
        else:
            out3 += self.biases[:, None]
        if self.x_pre is not None:
            np.copyto(self.x_pre, out)
        self.activation.forward(out, out)

    def backward(self, net):
        delta = self.delta
        self.activation.backprop(delta, self.output, self.x_pre, self.exact)
        delta3 = delta.reshape(self.batch, self.out_c, -1)
        if self.batch_normalize:
            bn_backward(self, delta3, self.train)
        else:
            self.bias_updates += delta3.sum(axis=(0, 2))
        x = self.input_of(net)
        self.op.backward(delta, x, self.weights, self.weight_updates, None)
        prev = self.prev_delta(net, x.shape)
        if prev is not None:
            if self._input_scratch is None or self._input_scratch.dtype != prev.dtype:
                self._input_scratch = np.empty(x.shape, prev.dtype)
            prev += self.op.forward(delta, self.weights, self._input_scratch)

    # ------------------------------------------------------------------ weights
    def _bn_arrays(self):
        return [("scales", self.scales), ("rolling_mean", self.rolling_mean),
                ("rolling_variance", self.rolling_variance)]

    def parameters(self):
        params = [("biases", self.biases)]
        if self.batch_normalize:
            params += self._bn_arrays()
        return params + [("weights", self.weights)]

    def read_weights(self, reader, transpose):
        skip = set() if not self.dontloadscales else {"scales", "rolling_mean",
                                                       "rolling_variance"}
        for name, array in self.parameters():
            if name not in skip:
                array[...] = reader.read(array.size, self, name).reshape(array.shape)

    def describe(self):
        _, _, inp, out = super().describe()
        return f"{self.filters}", f"{self.size} x {self.size} / {self.stride}", inp, out
