"""XNOR (binary) convolutions: `xnor=1` in [convolutional] (both forks), AlexeyAB's `bin_output`.

pjreddie's CPU forward with xnor=1 (and AlexeyAB's GPU and training forward, which compute the
same thing): every filter's weights are replaced by +-mean(|w|) over the filter (w > 0 gives
+mean, anything else -mean) and the input by +-1 (x > 0 gives +1); then the usual GEMM on
the binary input (zero padding), batch norm or bias, activation.  Here the +-1 products are
summed exactly (a whole number) and then scaled by the filter's mean, which is the same sum
Darknet accumulates term by term in float.

`binary=1` without xnor binarises the weights only on Darknet's GPU; its CPU forward ignores
it (the swap of binarised weights happens in a local copy of the layer), so it is accepted
with a warning.  Darknet's CPU backward and update use the real-valued weights and input
(straight-through), which is what minidarknet's convolution backward does for xnor layers in
gradients="darknet"; the sign has no useful exact gradient, so gradients="exact" refuses the
backward of an xnor layer.

AlexeyAB's CPU inference after its calculate_binary_weights (darknet detector test/demo) takes
a bit-packed path instead; select it with the minidarknet key `xnor_path=bits` (default
`float`, the arithmetic above).  That path differs in three ways, reproduced here:
  * batch norm is first folded into the weights and biases (AlexeyAB's fuse_conv_batchnorm,
    sqrt(variance + .00001)), and the folded weights are binarised;
  * a padded input pixel counts as -1 (its bit is 0), not 0;
  * with bin_output=1 the activation becomes linear.
Its limits are errors here: it needs stride_x == stride_y and dilation 1, and when the input
channels are not a multiple of 32 only size=3 stride=1 pad=1 (AlexeyAB prints "is no
non-optimized version" and computes garbage otherwise).  AlexeyAB's bit path also computes
only the first image of a batch; here every image is computed.  A training forward always
uses the float path (AlexeyAB's CPU float path binarises with a filter size of all the
layer's weights, reading past its arrays).
"""
import numpy as np

from ..errors import warn
from ..fork import ALEXEYAB
from .base import F32
from .batchnorm import bn_forward

XNOR_PATHS = ("float", "bits")
AB_FUSE_EPS = ALEXEYAB.bn_eps_inside_sqrt    # AlexeyAB folds BN with sqrt(var + 1e-5)


def read_keys(layer, s):
    """binary / xnor / bin_output / xnor_path of a [convolutional] section."""
    binary = s.int("binary", 0)
    layer.xnor = s.int("xnor", 0)
    layer.bin_output = s.int("bin_output", 0)
    layer.xnor_path = s.str("xnor_path", "float")
    if layer.xnor_path not in XNOR_PATHS:
        raise s.error(f"[convolutional] xnor_path={layer.xnor_path}: expected "
                      f"{' or '.join(XNOR_PATHS)}", "xnor_path")
    if binary and not layer.xnor:
        warn(f"{s.where('binary')}: [convolutional] binary={s.raw('binary')} acts only on "
             f"Darknet's GPU path; ignored, as on Darknet's CPU")
    if s.has("xnor_path") and not layer.xnor:
        warn(f"{s.where('xnor_path')}: [convolutional] xnor_path={layer.xnor_path} has no "
             f"effect without xnor=1")
    if layer.bin_output and not layer.xnor:
        warn(f"{s.where('bin_output')}: [convolutional] bin_output={s.raw('bin_output')} has "
             f"no effect without xnor=1 (as in AlexeyAB)")


def check_geometry(layer, s):
    """Combinations the forks disagree on or cannot compute."""
    if not layer.xnor:
        return
    if layer.groups > 1:
        raise s.error(f"[convolutional] xnor=1 with groups={layer.groups}: AlexeyAB forces "
                      f"groups=1 for XNOR layers (different weights) while pjreddie keeps them; "
                      f"minidarknet refuses the ambiguity", "groups")
    if layer.xnor_path != "bits":
        return
    where = None
    if layer.stride_x != layer.stride_y:
        where = f"stride {layer.stride_x}x{layer.stride_y} (AlexeyAB takes its float path)"
    elif layer.dilation > 1:
        where = f"dilation={layer.dilation} (AlexeyAB's bit path ignores dilation)"
    elif layer.in_c % 32 and not (layer.size == 3 and layer.stride_x == 1 and layer.padding == 1):
        where = (f"{layer.in_c} input channels (not a multiple of 32) with size={layer.size}, "
                 f"stride={layer.stride_x}, padding={layer.padding} (AlexeyAB only handles "
                 f"size=3 stride=1 pad=1 there)")
    if where:
        raise s.error(f"[convolutional] xnor_path=bits: AlexeyAB's bit-packed path cannot run "
                      f"with {where}", "xnor_path")


def binarize_weights(weights):
    """(signs, means): signs +-1 (w > 0 -> +1) and each filter's mean |w| (float32)."""
    n = weights.shape[0]
    flat = weights.reshape(n, -1)
    means = (np.abs(flat).sum(axis=1, dtype=F32) / F32(flat.shape[1])).astype(F32)
    signs = np.where(weights > 0, F32(1), F32(-1)).astype(F32)
    return signs, means


def binarize_input(x):
    return np.where(x > 0, F32(1), F32(-1)).astype(F32)


def forward(layer, net):
    """The xnor forward of a Convolutional layer (module docstring)."""
    x = layer.input_of(net)
    layer.train = net.train
    layer._bn_affine = False
    out = layer.output
    out3 = out.reshape(layer.batch, layer.out_c, -1)
    bits = layer.xnor_path == "bits" and not net.train
    weights, biases = _folded(layer) if bits else (layer.weights, None)
    signs, means = binarize_weights(weights)
    xb = binarize_input(x)
    if bits:
        # A padded pixel counts as -1: conv(x padded with -1) = conv(x + 1 padded with 0)
        # minus each filter's sum of signs.
        xb += F32(1)
        layer.op.forward(xb, signs, out)
        out3 -= signs.reshape(layer.out_c, -1).sum(axis=1, dtype=F32)[:, None]
    else:
        layer.op.forward(xb, signs, out)
    out3 *= means[:, None]
    if bits:
        out3 += biases[:, None]
    elif layer.batch_normalize:
        bn_forward(layer, out3, net.train)
    else:
        out3 += layer.biases[:, None]
    if bits and layer.bin_output:
        return          # AlexeyAB's calculate_binary_weights makes the activation linear
    layer._activate(out3, layer._x_pre3())


def _folded(layer):
    """AlexeyAB's fuse_conv_batchnorm: (weights, biases) with the inference batch norm folded
    in (computed here in double, stored as float; AlexeyAB's own arithmetic differs only in
    rounding)."""
    if not layer.batch_normalize:
        return layer.weights, layer.biases
    std = np.sqrt(layer.rolling_variance.astype(np.float64) + AB_FUSE_EPS)
    factor = layer.scales.astype(np.float64) / std
    biases = (layer.biases - factor * layer.rolling_mean).astype(F32)
    weights = (layer.weights * factor[:, None, None, None]).astype(F32)
    return weights, biases


def check_backward(layer):
    if layer.exact:
        raise layer.section.error(
            "[convolutional] xnor=1: the sign binarisation has no exact gradient; use "
            "gradients='darknet' (Darknet's straight-through backward on the real weights)",
            "xnor")
