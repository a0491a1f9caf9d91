"""[convolutional] / [conv]: grouped 2-d convolution (+ batch norm or bias) + activation.

Keys (pjreddie): filters (1), size (1), stride (1), pad / padding (pad=1 means padding=size/2,
overriding padding), groups (1), batch_normalize (0), activation (logistic), flipped, dot.
AlexeyAB extras: stride_x / stride_y (each defaults to stride), dilation (forced to 1 for
size 1; the im2col padding is padding*dilation while the output size ignores dilation, as AB
computes it -- a combination where the two disagree would make AB read garbage and is
rejected), stream / wait_stream (GPU scheduling, no effect), grad_centr (AB's GPU update
only, no effect on the CPU path that minidarknet reproduces).

XNOR nets (xnor=1, binary, AlexeyAB's bin_output, minidarknet's xnor_path) run through
layers/xnor.py; AlexeyAB's share_index (another layer's parameters) through layers/share.py.

Rejected with an error naming the key, because they change the maths and are not implemented:
antialiasing, cbn, sway / rotate /
stretch / stretch_sway (deformable kernels), coordconv, assisted_excitation, train_only_bn
(AlexeyAB then trains only the BN parameters of this and all earlier layers).  Also rejected:
size=1 with stride > 1 or padding > 0 -- pjreddie's CPU code then skips im2col and multiplies
the first out_h*out_w input pixels of each channel (garbage; verified, spec section 10) and AB
does the same for padding; no shipped cfg uses it, so we refuse rather than reproduce it.

Weights file: biases[n], then with batch_normalize scales[n], rolling_mean[n],
rolling_variance[n] (read only without dontloadscales, always written, as Darknet), then
weights[n][c/groups][size][size].  numload=k (pjreddie) reads only the first k filters;
flipped=1 means the file stores the weights transposed ([c*size*size][n]).

gradients="darknet" reproduces the fork's CPU backward, including its overwrite quirk
(fork.conv_backward_overwrites): pjreddie writes a size-1 convolution's input delta with GEMM
beta=0, REPLACING what a route/shortcut had already added to the previous layer's delta (golden
README quirk 5); AlexeyAB's col2im zeroes its destination, so there EVERY convolution
overwrites (golden-ab ab_yolo_ciou_train confirms it).  gradients="exact" accumulates.

Inference batch norm is Darknet's gamma*(x - mean)/denominator + beta with the fork's
denominator (pjreddie sqrt(var) + 1e-6, AlexeyAB sqrt(var + 1e-5)), computed as a per-channel
affine map; on large feature maps the scale is multiplied into a
fresh copy of the weights at every forward (cheaper than scaling the output, and never stale)
and the bias rides in the GEMM.  The rest of the affine map and leaky/linear activations run
in one compiled pass when numba is installed (kernels.py), else in numpy.  Inside
Network.forward the work is split over threads (parallel.py, ops.ConvOp.forward).
Inference forward of 3x3 / stride 1 / padding 1 / ungrouped layers with 64+ input channels on
20x20..52x52 maps (13x13 and up with the compiled kernels) runs by Winograd F(2x2, 3x3)
(ops.WinogradConv; its transformed-weight cache is checked bit for bit against the weights at
every forward); training keeps im2col + GEMM.
"""
import numpy as np

from .. import kernels, ops, parallel
from ..fork import quirk_warned, warn_quirk
from . import share, xnor
from .base import WeightedLayer, uniform_weights
from .batchnorm import bn_backward, bn_biases_train, bn_forward
from .registry import register

# AlexeyAB keys that change the maths and are not implemented: key -> what it is.
UNSUPPORTED_AB = {
    "antialiasing": "AlexeyAB's anti-aliased (blurred) strided convolution",
    "cbn": "AlexeyAB's cross-iteration batch normalization",
    "sway": "AlexeyAB's deformable (sway) kernels",
    "rotate": "AlexeyAB's deformable (rotate) kernels",
    "stretch": "AlexeyAB's deformable (stretch) kernels",
    "stretch_sway": "AlexeyAB's deformable (stretch_sway) kernels",
    "coordconv": "AlexeyAB's CoordConv channels",
    "assisted_excitation": "AlexeyAB's assisted excitation",
    "train_only_bn": "AlexeyAB's train_only_bn (freezing the weights of earlier layers)",
}


@register("convolutional", "conv")
class Convolutional(WeightedLayer):
    type = "convolutional"
    needs_image = True
    # AlexeyAB's forward_convolutional_layer computes these itself (not by activate())
    special_activations = ("swish", "mish", "hard_mish", "normalize_channels",
                           "normalize_channels_softmax", "normalize_channels_softmax_maxval")

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self._read_keys(section, shape)
        out_h, out_w = self._check_geometry(section, shape)
        xnor.check_geometry(self, section)
        n, cg, k = self.filters, shape.c // self.groups, self.size
        self.set_output_shape(n, out_h, out_w)
        self.op = ops.ConvOp(shape.c, shape.h, shape.w, n, k, self.stride_y, self.stride_x,
                             self.padding * self.dilation, self.dilation, self.groups,
                             self.out_h, self.out_w)
        # Inference forward by Winograd F(2x2, 3x3) where it measured faster (ops.py).
        self.winograd = (ops.WinogradConv(shape.c, shape.h, shape.w, n)
                         if ops.winograd_applies(shape.c, shape.h, shape.w, n, k,
                                                 self.stride_y, self.stride_x, self.padding,
                                                 self.dilation, self.groups)
                         else None)
        fan_in = k * k * cg
        self.check_count(n * cg * k * k, f"weights {n} x {cg} x {k} x {k}", "filters")
        self.init_parameters(uniform_weights(net.rng, (n, cg, k, k), np.sqrt(2.0 / fan_in)), n)
        self.share_layer = share.shared_layer(self, section, net)
        if self.share_layer is not None:
            share.share_parameters(self, self.share_layer)
        self.train = False
        self._bn_affine = False
        self.allocate(shape.batch)

    @property
    def blas_threads(self):
        # XNOR layers multiply through layers/xnor.py, which does not split its work.
        return bool(self.xnor)

    # ------------------------------------------------------------------ cfg
    def _read_keys(self, s, shape):
        self.filters = s.int("filters", 1)
        self.size = s.int("size", 1)
        self.stride = s.int("stride", 1)
        stride_x, stride_y = s.int("stride_x", -1), s.int("stride_y", -1)
        self.stride_x = stride_x if stride_x >= 1 else self.stride
        self.stride_y = stride_y if stride_y >= 1 else self.stride
        self.dilation = s.int("dilation", 1)
        if self.size == 1:
            self.dilation = 1           # AlexeyAB forces it
        pad, self.padding = s.int("pad", 0), s.int("padding", 0)
        if pad:
            self.padding = self.size // 2
        self.groups = s.int("groups", 1)
        self.activation = self.activation_from(s, "logistic")
        self.batch_normalize = s.int("batch_normalize", 0)
        xnor.read_keys(self, s)
        for key, what in UNSUPPORTED_AB.items():
            if s.has(key) and s.float(key, 0):
                raise s.error(f"[convolutional] {key}={s.raw(key)}: {what} is not supported "
                              f"by minidarknet", key)
        self.flipped = s.int("flipped", 0)
        s.float("dot", 0.0)             # pjreddie: only read by a disabled GPU routine
        s.int("grad_centr", 0)          # AlexeyAB: GPU update only
        s.int("stream", -1)             # AlexeyAB: CUDA stream scheduling
        s.int("wait_stream", -1)

    def _check_geometry(self, s, shape):
        checks = [("filters", self.filters >= 1), ("size", self.size >= 1),
                  ("stride", self.stride_x >= 1 and self.stride_y >= 1),
                  ("groups", self.groups >= 1), ("dilation", self.dilation >= 1),
                  ("padding", self.padding >= 0)]
        for key, ok in checks:
            if not ok:
                raise s.error(f"[convolutional] {key}={s.raw(key)}: must be at least "
                              f"{0 if key == 'padding' else 1}", key)
        if shape.c % self.groups or self.filters % self.groups:
            raise s.error(f"[convolutional] groups={self.groups}: must divide both the input "
                          f"channels ({shape.c}) and filters ({self.filters})", "groups")
        if self.size == 1 and (self.stride_x > 1 or self.stride_y > 1 or self.padding > 0):
            raise s.error(
                f"[convolutional] size=1 with stride {self.stride_x}x{self.stride_y} and "
                f"padding {self.padding}: Darknet's CPU code skips im2col for size 1 and "
                f"computes garbage here; use size=1 stride=1 without padding (or a [maxpool] "
                f"/ [reorg] to subsample)", "size")
        if self.flipped and self.groups > 1:
            raise s.error("[convolutional] flipped=1 with groups > 1: Darknet transposes "
                          "c*size*size x n values, more than the layer holds", "flipped")
        k, p, d = self.size, self.padding, self.dilation
        out_h = ops.c_div(shape.h + 2 * p - k, self.stride_y) + 1
        out_w = ops.c_div(shape.w + 2 * p - k, self.stride_x) + 1
        if out_h < 1 or out_w < 1:
            raise s.error(f"[convolutional] size={k} padding={p}: the {shape.w} x {shape.h} "
                          f"input is too small (output {out_w} x {out_h})", "size")
        reach = d * (k - 1) + 1
        cols_h = ops.c_div(shape.h + 2 * p * d - reach, self.stride_y) + 1
        cols_w = ops.c_div(shape.w + 2 * p * d - reach, self.stride_x) + 1
        if (cols_h, cols_w) != (out_h, out_w):
            raise s.error(
                f"[convolutional] dilation={d} with size={k} padding={p}: AlexeyAB sizes the "
                f"output {out_w} x {out_h} without dilation but its im2col produces "
                f"{cols_w} x {cols_h} (Darknet would read garbage); use pad=1 with an odd "
                f"size", "dilation")
        return out_h, out_w

    # ------------------------------------------------------------------ buffers
    def allocate(self, batch):
        super().allocate(batch)
        # np.zeros (not zeros_like) leaves the pages untouched until the first forward.
        self.x_pre = (np.zeros(self.output.shape, self.output.dtype)
                      if self.activation.needs_input(self.exact)
                      else None)
        most = self.op.largest_chunk(batch, self.output.itemsize)
        self._act_scratch = np.empty(most * self.out_w * self.out_c, self.output.dtype)

    # ------------------------------------------------------------------ forward
    def forward(self, net):
        if self.xnor:
            xnor.forward(self, net)
            return
        x = self.input_of(net)
        self.train = net.train
        threads = parallel.workers()
        out = self.output
        out3 = out.reshape(self.batch, self.out_c, -1)
        if self.batch_normalize and net.train:
            self._bn_affine = False
            self.op.forward(x, self.weights, out, threads=threads)
            bn_forward(self, out3, True)
            x_pre3 = self._x_pre3()
            for b0, b1, c0, c1 in self._chunk_regions():
                self._activate(out3[b0:b1, :, c0:c1],
                               None if x_pre3 is None else x_pre3[b0:b1, :, c0:c1])
            return
        # Bias (or inference batch norm as a per-channel affine map) and the activation run
        # on each piece of the convolution while it is still in cache.
        scale, shift = self._affine(out.dtype)
        self._bn_affine = bool(self.batch_normalize)
        weights = self.weights
        # Inference only (training keeps Darknet's im2col + GEMM sums).  Winograd keeps the
        # raw weights (its cache of their transform checks them at every use) and the
        # batch-norm scale is applied to the product in the epilogue.
        winograd = None if net.train else self.winograd
        if winograd is not None and winograd.needs_kernels and not kernels.enabled():
            winograd = None
        if winograd is None and scale is not None and self.weights.size <= out.size:
            # Cheaper to scale the weights than the output (large feature maps).  Done every
            # forward, so there is no cached copy to go stale when the weights change.
            weights = self._scaled_weights(scale)
            scale = None
        x_pre3 = self._x_pre3()
        # Without a scale left to apply, im2col + GEMM adds the bias itself (in the GEMM).
        shift_in_op = winograd is None and scale is None
        epilogue = self._epilogue(out3, scale, None if shift_in_op else shift, x_pre3)
        if winograd is not None:
            winograd.forward(x, weights, out, epilogue, threads)
        else:
            self.op.forward(x, weights, out, epilogue, threads,
                            bias=shift if shift_in_op else None)

    def _epilogue(self, out3, scale, shift, x_pre3):
        """epilogue(product, region, worker) for ConvOp / WinogradConv: out3's region =
        act(product * scale + shift), scale and shift per filter (None: skipped)."""
        slope = {"leaky": 0.1, "linear": 1.0}.get(self.activation.name)
        if slope is not None and x_pre3 is None and kernels.enabled():
            none = np.empty(0, out3.dtype)
            scale_k = none if scale is None else scale
            shift_k = none if shift is None else shift

            def compiled(product, region, worker):
                b0, _, f0, _, c0, _ = region
                kernels.conv_epilogue(product, scale_k, shift_k, slope, out3, b0, f0, c0)
            return compiled

        def epilogue(product, region, worker):
            b0, b1, f0, f1, c0, c1 = region
            if scale is not None:
                np.multiply(product, scale[f0:f1, None], out=product)
            if shift is not None:
                np.add(product, shift[f0:f1, None], out=product)
            self._activate_into(out3[b0:b1, f0:f1, c0:c1], product,
                                None if x_pre3 is None else x_pre3[b0:b1, f0:f1, c0:c1])
        return epilogue

    def _scaled_weights(self, scale):
        buf = getattr(self, "_weights_buffer", None)
        if buf is None or buf.shape != self.weights.shape or buf.dtype != self.weights.dtype:
            buf = self._weights_buffer = np.empty_like(self.weights)
        return np.multiply(self.weights, scale[:, None, None, None], out=buf)

    def _chunk_regions(self):
        """(b0, b1, c0, c1) of the convolution's column chunks (what _act_scratch fits)."""
        return [(b0, b1, r0 * self.out_w, r1 * self.out_w)
                for b0, b1, r0, r1 in self.op.chunks(self.batch, self.output.itemsize)]

    def _x_pre3(self):
        return None if self.x_pre is None else self.x_pre.reshape(self.batch, self.out_c, -1)

    def _affine(self, dtype):
        """(scale, shift) with out*scale + shift = Darknet's inference output before the
        activation: biases alone, or gamma*(x - mean)/denominator + beta with the fork's
        denominator (pjreddie sqrt(var) + 1e-6, AlexeyAB sqrt(var + 1e-5))."""
        if not self.batch_normalize:
            return None, self.biases
        scale = (self.scales / self.fork.bn_denominator(self.rolling_variance)).astype(dtype)
        shift = (self.biases - self.rolling_mean * scale).astype(dtype)
        return scale, shift

    def _activate_into(self, v, pre, x_pre):
        """v = act(pre) (and x_pre = pre when kept); pre may be overwritten."""
        if x_pre is not None:
            np.copyto(x_pre, pre)
        name = self.activation.name
        if name == "linear":
            np.copyto(v, pre)
        elif name == "leaky":
            # max(pre, 0.1*pre): Darknet's (pre > 0 ? pre : 0.1*pre), no temporary.
            np.multiply(pre, v.dtype.type(0.1), out=v)
            np.maximum(pre, v, out=v)
        else:
            self.activation.forward(pre, v)

    def _activate(self, v, x_pre):
        if x_pre is not None:
            np.copyto(x_pre, v)
        name = self.activation.name
        if name == "linear":
            return
        if name == "leaky":
            ops.leaky_inplace(v, self._act_scratch)
        else:
            self.activation.forward(v, v)

    # ------------------------------------------------------------------ backward
    def backward(self, net):
        if self.xnor:
            xnor.check_backward(self)
        delta = self.delta
        if self.activation.name == "leaky":
            ops.leaky_backprop_inplace(delta, self.output, self._act_scratch)
        else:
            self.activation.backprop(delta, self.output, self.x_pre, self.exact)
        delta3 = delta.reshape(self.batch, self.out_c, -1)
        x = self.input_of(net)
        if self.batch_normalize:
            if self._bn_affine:
                self._recompute_bn_input(x)
            bn_backward(self, delta3, self.train, biases=bn_biases_train(self, net))
        else:
            self.bias_updates += delta3.sum(axis=(0, 2))
        prev = self.prev_delta(net, x.shape)
        # Darknet writes (not adds) the input delta: pjreddie for 1x1 kernels (gemm beta=0),
        # AlexeyAB for every size (its col2im zeroes the destination first).
        overwrite = not self.exact and self.fork.conv_overwrites_delta(self.size)
        if overwrite and prev is not None and self.fork.conv_backward_overwrites == "always" \
                and not quirk_warned(net, "conv_overwrite") and prev.any():
            warn_quirk(net, "conv_overwrite",
                       f"layer {self.index}: AlexeyAB's CPU convolution backward overwrites "
                       f"the previous layer's delta (what a route or shortcut added there is "
                       f"lost)")
        if overwrite and not self.op.direct:
            # im2col convolutions add into their destination: zero it first
            if prev is not None:
                prev.fill(0)
            overwrite = False
        self.op.backward(x, delta, self.weights, self.weight_updates, prev, overwrite)

    def _recompute_bn_input(self, x):
        # The inference forward folded BN into an affine map and kept no pre-BN copy; the
        # batch-norm backward needs it.
        pre = np.empty_like(self.output)
        self.op.forward(x, self.weights, pre)
        self.x = pre.reshape(self.batch, self.out_c, -1)
        self.x_norm = None

    # ------------------------------------------------------------------ weights
    def _bn_arrays(self):
        return [("scales", self.scales), ("rolling_mean", self.rolling_mean),
                ("rolling_variance", self.rolling_variance)]

    def update(self, rate, momentum, decay, batch):
        if self.share_layer is None:      # the owner of shared parameters updates them once
            super().update(rate, momentum, decay, batch)

    def parameters(self):
        if self.share_layer is not None:  # AlexeyAB: nothing in the weights file
            return []
        params = [("biases", self.biases)]
        if self.batch_normalize:
            params += self._bn_arrays()
        return params + [("weights", self.weights)]

    def _loaded_arrays(self):
        params = [("biases", self.biases)]
        if self.batch_normalize and not self.dontloadscales:
            params += self._bn_arrays()
        return params + [("weights", self.weights)]

    def read_weights(self, reader, transpose):
        count = self.filters
        if self.numload:
            if not 0 < self.numload <= self.filters:
                raise self.section.error(f"[convolutional] numload={self.numload}: must be "
                                         f"between 1 and filters={self.filters}", "numload")
            count = self.numload
        for name, array in self._loaded_arrays():
            if name != "weights":
                array[:count] = reader.read(count, self, name)
                continue
            per_filter = array[0].size
            values = reader.read(count * per_filter, self, name)
            if self.flipped:
                # Stored [c*size*size][count]; Darknet transposes after loading.
                values = values.reshape(per_filter, count).T
            array[:count] = values.reshape((count,) + array.shape[1:])

    def write_weights(self, out, transpose):
        # Darknet writes the BN arrays whenever the layer has them (even with dontloadscales)
        # and the weights in memory order (flipped files come back unflipped).
        for _, array in self.parameters():
            out.append(np.ascontiguousarray(array, "<f4").tobytes())

    # ------------------------------------------------------------------ description
    def flops(self):
        # pjreddie: 2 * n * size^2 * (c/groups) * out_h * out_w, with c/groups in double.
        return (2.0 * self.filters * self.size * self.size * (self.in_c / self.groups)
                * self.out_h * self.out_w)

    def describe(self):
        filters = f"{self.filters}" if self.groups == 1 else f"{self.filters}/{self.groups}"
        stride = (f"{self.stride_x}" if self.stride_x == self.stride_y
                  else f"{self.stride_x}x{self.stride_y}")
        size = f"{self.size} x {self.size} / {stride}"
        if self.dilation > 1:
            size += f" ({self.dilation})"
        _, _, inp, out = super().describe()
        return filters, size, inp, out
