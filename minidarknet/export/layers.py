"""One ONNX converter per layer type (registry.py explains the contract).  Each reproduces the
layer's inference forward as minidarknet computes it; what a layer would compute differently
in the graph is refused with an error naming the layer."""
import numpy as np

from ..layers import (activation, avgpool, batchnorm, connected, contrastive, convolutional,
                      cost, crop, deconvolutional, detection, dropout, empty, gaussian_yolo,
                      implicit, l2norm, local, local_avgpool, logistic, maxpool,
                      normalization, region, reorg, route, sam, scale_channels, shortcut,
                      softmax, upsample, xnor, yolo)
from .activations import activate
from .folding import batchnorm_affine
from .registry import converts, refuse

F32 = np.float32
NEG_FLT_MAX = float(-np.finfo(np.float32).max)


def _image(layer):
    return layer.in_c * layer.in_h * layer.in_w == layer.inputs and layer.inputs


def _per_channel(values, ndim=4):
    """A (C,) array shaped (1, C, 1, ...) to broadcast against (batch, C, ...)."""
    return np.asarray(values, F32).reshape((1, -1) + (1,) * (ndim - 2))


def _affine(g, x, scale, shift, ndim=4):
    if scale is not None:
        x = g.mul(x, _per_channel(scale, ndim), "bn_scale")
    return g.add(x, _per_channel(shift, ndim), "bias")


# ---------------------------------------------------------------------------- weighted layers

@converts(convolutional.Convolutional)
def convert_convolutional(g, layer, x, sources):
    if layer.xnor:
        return _xnor_convolution(g, layer, x)
    scale, shift = batchnorm_affine(layer)
    weights = layer.weights if scale is None else layer.weights * scale[:, None, None, None]
    y = _conv(g, layer, x, weights, shift)
    return activate(g, layer.activation, y)


def _conv(g, layer, x, weights, biases):
    pad = layer.padding * layer.dilation
    return g.op("Conv", [x, g.const(weights.astype(F32), "weights"),
                         g.const(np.asarray(biases, F32), "biases")], "conv",
                kernel_shape=[layer.size, layer.size], strides=[layer.stride_y, layer.stride_x],
                pads=[pad] * 4, dilations=[layer.dilation] * 2, group=layer.groups)


def _xnor_convolution(g, layer, x):
    """xnor=1: binarised input (x > 0 -> +1, else -1) times each filter's +-mean|w|
    (xnor.py).  The bit path (AlexeyAB's xnor_path=bits) folds batch norm first, counts a
    padded pixel as -1 and, with bin_output, skips the activation."""
    bits = layer.xnor_path == "bits"
    weights, biases = xnor._folded(layer) if bits else (layer.weights, layer.biases)
    signs, means = xnor.binarize_weights(weights)
    sign = g.where(g.greater(x, 0.0), g.const(1.0), g.const(-1.0), "binarize")
    if bits:
        # padding counts as -1: pad explicitly, then convolve without padding
        p = layer.padding * layer.dilation
        if p:
            sign = g.pad(sign, [0, 0, p, p, 0, 0, p, p], -1.0)
    y = g.op("Conv", [sign, g.const(signs * means[:, None, None, None], "weights")], "conv",
             kernel_shape=[layer.size] * 2, strides=[layer.stride_y, layer.stride_x],
             pads=[0 if bits else layer.padding * layer.dilation] * 4,
             dilations=[layer.dilation] * 2, group=layer.groups)
    if bits:
        y = g.add(y, _per_channel(biases))
        return y if layer.bin_output else activate(g, layer.activation, y)
    scale, shift = batchnorm_affine(layer, force_probe=True)
    return activate(g, layer.activation, _affine(g, y, scale, shift))


@converts(connected.Connected)
def convert_connected(g, layer, x, sources):
    flat = g.op("Flatten", [x], "flatten", axis=1)
    scale, shift = batchnorm_affine(layer)
    weights = layer.weights if scale is None else layer.weights * scale[:, None]
    y = g.op("Gemm", [flat, g.const(weights.astype(F32), "weights"),
                      g.const(shift.astype(F32), "biases")], "gemm", transB=1)
    y = g.reshape(y, layer.buffer_shape)
    return activate(g, layer.activation, y)


@converts(deconvolutional.Deconvolutional)
def convert_deconvolutional(g, layer, x, sources):
    scale, shift = batchnorm_affine(layer)
    weights = layer.weights if scale is None else layer.weights * scale[None, :, None, None]
    y = g.op("ConvTranspose", [x, g.const(weights.astype(F32), "weights"),
                               g.const(shift.astype(F32), "biases")], "deconv",
             kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2,
             pads=[layer.padding] * 4)
    return activate(g, layer.activation, y)


@converts(local.Local)
def convert_local(g, layer, x, sources):
    """Different weights at every output position: the columns (Darknet's im2col, order
    c, ky, kx) come from a grouped identity convolution, then one batched MatMul over the
    positions."""
    k, c = layer.size, layer.in_c
    picks = np.zeros((c * k * k, 1, k, k), F32)
    for j in range(k * k):
        picks[j::k * k, 0, j // k, j % k] = 1
    cols = g.op("Conv", [x, g.const(picks, "im2col")], "im2col", kernel_shape=[k, k],
                strides=[layer.stride] * 2, pads=[layer.pad] * 4, group=c)
    kdim, places = c * k * k, layer.locations
    cols = g.transpose(g.reshape(cols, (kdim, places)), (2, 0, 1))       # (L, batch, kdim)
    weights_t = np.ascontiguousarray(layer.weights.transpose(0, 2, 1))   # (L, kdim, n)
    y = g.op("MatMul", [cols, g.const(weights_t, "weights")], "matmul")  # (L, batch, n)
    y = g.transpose(y, (1, 2, 0))                                        # (batch, n, L)
    y = g.op("Add", [y, g.const(layer.biases[None].astype(F32), "biases")], "bias")
    return activate(g, layer.activation, g.reshape(y, layer.buffer_shape))


@converts(batchnorm.BatchNorm)
def convert_batchnorm(g, layer, x, sources):
    scale, shift = batchnorm_affine(layer)
    c = layer.buffer_shape[0]
    y = g.reshape(x, (c, -1))
    y = _affine(g, y, scale, shift, ndim=3)
    return g.reshape(y, layer.buffer_shape)


@converts(implicit.Implicit)
def convert_implicit(g, layer, x, sources):
    shape = g.batch_shape(x, layer.buffer_shape)
    return g.op("Expand", [g.const(layer.weights[None], "weights"), shape], "implicit")


# ---------------------------------------------------------------------------- pooling

def _pool_pads(layer):
    """Darknet's window origin -(padding/2); the rest of the total padding at the end."""
    begin = layer.padding // 2
    return [begin, begin, layer.padding - begin, layer.padding - begin]


@converts(maxpool.MaxPool)
def convert_maxpool(g, layer, x, sources):
    if layer.maxpool_depth:
        return _depth_maxpool(g, layer, x)
    pads = _pool_pads(layer)
    if max(pads) >= layer.size:
        # ONNX pooling wants padding smaller than the window: pad with -FLT_MAX as Darknet
        x = g.pad(x, [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], NEG_FLT_MAX)
        pads = [0, 0, 0, 0]
    return g.op("MaxPool", [x], "maxpool", kernel_shape=[layer.size] * 2,
                strides=[layer.stride_y, layer.stride_x], pads=pads)


def _depth_maxpool(g, layer, x):
    """AlexeyAB's maxpool_depth: out[k] = max over channels k, k+K, k+2K, ..."""
    k = layer.out_channels
    steps = -(-layer.in_c // k)
    extra = steps * k - layer.in_c
    if extra:
        x = g.pad(x, [0, 0, 0, 0, 0, extra, 0, 0], NEG_FLT_MAX)
    x = g.reshape(x, (steps, k, layer.in_h, layer.in_w))
    return g.reduce("ReduceMax", x, [1], keepdims=0, hint="maxpool_depth")


@converts(local_avgpool.LocalAvgPool)
def convert_local_avgpool(g, layer, x, sources):
    """The mean of each window's in-image cells."""
    pads = _pool_pads(layer)
    if max(pads) < layer.size:
        return g.op("AveragePool", [x], "avgpool", kernel_shape=[layer.size] * 2,
                    strides=[layer.stride_y, layer.stride_x], pads=pads, count_include_pad=0)
    # ONNX pooling wants padding smaller than the window: pad with zeros explicitly, then
    # window sum / the layer's own count of in-image cells
    x = g.pad(x, [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])
    mean = g.op("AveragePool", [x], "avgpool", kernel_shape=[layer.size] * 2,
                strides=[layer.stride_y, layer.stride_x])
    return g.mul(mean, (layer.size * layer.size / layer.counts).astype(F32)[None, None],
                 "counts")


@converts(avgpool.AvgPool)
def convert_avgpool(g, layer, x, sources):
    return g.op("GlobalAveragePool", [x], "avgpool")


@converts(upsample.Upsample)
def convert_upsample(g, layer, x, sources):
    s = layer.stride
    if layer.reverse:
        blocks = g.reshape(x, (layer.out_c, layer.out_h, s, layer.out_w, s))
        y = g.reduce("ReduceSum", blocks, [3, 5], keepdims=0, hint="downsample")
    else:
        y = g.op("Resize", [x, "", g.const(np.array([1, 1, s, s], F32), "scales")],
                 "upsample", mode="nearest", coordinate_transformation_mode="asymmetric",
                 nearest_mode="floor")
    return y if layer.scale == 1 else g.mul(y, float(layer.scale), "scale")


# ---------------------------------------------------------------------------- plumbing

@converts(dropout.Dropout, empty.Empty)
def convert_identity(g, layer, x, sources):
    """Inactive at inference (dropout) or the identity (empty/silence)."""
    return x


@converts(route.Route)
def convert_route(g, layer, x, sources):
    """Concatenate the sources (AlexeyAB: the group_id-th of `groups` chunks of each): along
    the channels when they share h x w, else their flat outputs, as Darknet does."""
    spatial = {src.buffer_shape[1:] for src in layer.source_layers}
    by_channel = spatial == {layer.buffer_shape[1:]}
    parts = []
    for index, src in zip(layer.sources, layer.source_layers):
        t = sources(index)
        if by_channel:
            part = src.buffer_shape[0] // layer.groups
        else:
            part = src.outputs // layer.groups
            t = g.op("Flatten", [t], "flatten", axis=1)
        if layer.groups > 1:
            t = g.slice(t, 1, part * layer.group_id, part * (layer.group_id + 1))
        parts.append(t)
    y = g.concat(parts, axis=1, hint="route")
    if by_channel:
        return y if y != sources(layer.sources[0]) else g.op("Identity", [y])
    return g.reshape(y, layer.buffer_shape)


@converts(shortcut.Shortcut)
def convert_shortcut(g, layer, x, sources):
    y = _shortcut_ab(g, layer, x, sources) if layer.ab else _shortcut_pj(g, layer, x, sources)
    return activate(g, layer.activation, y)


def _region_size(region, size):
    return len(range(*region.indices(size)))


def _shortcut_pj(g, layer, x, sources):
    """out = prev; over the overlap out = alpha*prev + beta*from (shortcut.py): `from` is
    cut to its overlap region, spread onto the output's (every sample-th pixel when it is
    smaller) with zeros elsewhere, and added."""
    src = layer.source_layers[0]
    frm = sources(layer.sources[0])
    full = layer.source_shape
    if src.buffer_shape != full:
        frm = g.reshape(frm, full)
    for axis, region, size in zip((1, 2, 3), layer.from_region, full):
        if region.stop < size or (region.step or 1) > 1:
            frm = g.slice(frm, axis, 0, region.stop, region.step or 1)
    c, h, w = (_region_size(r, n) for r, n in zip(layer.from_region, full))
    if layer.beta != 1:
        frm = g.mul(frm, float(layer.beta), "beta")
    sample = layer.out_region[1].step or 1
    if sample > 1:
        frm = g.reshape(frm, (c, h, 1, w, 1))
        frm = g.pad(frm, [0] * 6 + [0, 0, 0, sample - 1, 0, sample - 1])
        frm = g.reshape(frm, (c, h * sample, w * sample))
        h, w = h * sample, w * sample
    pads = [0, 0, 0, 0, 0, layer.out_c - c, layer.out_h - h, layer.out_w - w]
    if any(pads):
        frm = g.pad(frm, pads)
    if layer.alpha != 1:
        if layer.full_overlap:
            x = g.mul(x, float(layer.alpha), "alpha")
        else:
            alphas = np.ones((1,) + layer.buffer_shape, F32)
            alphas[(0,) + layer.out_region] = layer.alpha
            x = g.mul(x, alphas, "alpha")
    return g.op("Add", [x, frm], "shortcut")


def _shortcut_ab(g, layer, x, sources):
    """AlexeyAB: out[i] = a0*prev[i] + sum_k a_k*from_k[i] over flat indices (shortcut.py),
    with the weights after weights_normalization from the layer's own function."""
    image = layer.buffer_shape
    weights = None if layer.weights is None else layer._flat_weights()[1]
    if weights is None and all(src.buffer_shape == image for src in layer.source_layers):
        y = x
        for index in layer.sources:
            y = g.op("Add", [y, sources(index)], "shortcut")
        return y
    flat = g.op("Flatten", [x], "flatten", axis=1)
    y = flat if weights is None else g.mul(flat, weights[0][None], "weight")
    for k, (index, src) in enumerate(zip(layer.sources, layer.source_layers)):
        t = g.op("Flatten", [sources(index)], "flatten", axis=1)
        n = min(src.outputs, layer.outputs)
        if src.outputs > n:
            t = g.slice(t, 1, 0, n)
        if weights is not None:
            t = g.mul(t, weights[k + 1][None, :n], "weight")
        if n < layer.outputs:
            t = g.pad(t, [0, 0, 0, layer.outputs - n])
        y = g.op("Add", [y, t], "shortcut")
    return g.reshape(y, image)


@converts(scale_channels.ScaleChannels)
def convert_scale_channels(g, layer, x, sources):
    frm = sources(layer.source)
    y = g.op("Mul", [x, frm], "scale_channels")
    return activate(g, layer.activation, y)


@converts(sam.Sam)
def convert_sam(g, layer, x, sources):
    y = g.op("Mul", [x, sources(layer.source)], "sam")
    return activate(g, layer.activation, y)


@converts(reorg.Reorg, reorg.Reorg3d)
def convert_reorg(g, layer, x, sources):
    """The layer's own permutation (reorg.py) as Reshape + Transpose: mode B reads
    (C/s^2, H, s, W, s) -> (s, s, C/s^2, H, W), mode A the inverse."""
    if getattr(layer, "extra", 0):
        flat = g.op("Flatten", [x], "flatten", axis=1)
        return g.reshape(g.pad(flat, [0, 0, 0, layer.extra]), layer.buffer_shape)
    if getattr(layer, "flatten", 0):
        c, hw = layer.in_c, layer.in_h * layer.in_w
        rows = (c, hw) if not layer.reverse else (hw, c)
        y = g.transpose(g.reshape(x, rows), (0, 2, 1))
        return g.reshape(y, layer.buffer_shape)
    if layer.type == "reorg3d":
        W, H, C = layer.out_w, layer.out_h, layer.out_c
    else:
        W, H, C = layer.in_w, layer.in_h, layer.in_c
    s = layer.stride
    if layer.reverse:       # big from small (mode A)
        y = g.reshape(x, (s, s, C // (s * s), H, W))
        y = g.transpose(y, (0, 3, 4, 1, 5, 2))
    else:                   # small from big (mode B)
        y = g.reshape(x, (C // (s * s), H, s, W, s))
        y = g.transpose(y, (0, 3, 5, 1, 2, 4))
    return g.reshape(y, layer.buffer_shape)


@converts(crop.Crop)
def convert_crop(g, layer, x, sources):
    """Inference crop: the centre window, then scale*x + trans (2x-1 unless noadjust)."""
    dh, dw = (layer.in_h - layer.out_h) // 2, (layer.in_w - layer.out_w) // 2
    y = x
    if (dh, layer.out_h) != (0, layer.in_h):
        y = g.slice(y, 2, dh, dh + layer.out_h)
    if (dw, layer.out_w) != (0, layer.in_w):
        y = g.slice(y, 3, dw, dw + layer.out_w)
    if layer.scale != 1:
        y = g.mul(y, float(layer.scale), "scale")
    if layer.trans != 0:
        y = g.add(y, float(layer.trans), "trans")
    return y if y != x else g.op("Identity", [x])


# ---------------------------------------------------------------------------- normalisation

@converts(l2norm.L2Norm)
def convert_l2norm(g, layer, x, sources):
    """x / sqrt(sum x^2 (+ eps)) over the channels (or the sample); a zero norm counts as 1
    (minidarknet's rule for Darknet's 0/0)."""
    if layer.axis == "sample":
        grouped = g.reshape(x, (-1, 1))
    elif layer.out_c * layer.out_h * layer.out_w == layer.outputs and layer.out_c:
        grouped = g.reshape(x, (layer.out_c, -1))
    else:
        return g.op("Identity", [x])    # no image shape: Darknet normalises nothing
    norm = g.reduce("ReduceSumSquare", grouped, [1])
    if layer.eps:
        norm = g.add(norm, float(layer.eps))
    norm = g.op("Sqrt", [norm])
    zero = g.op("Equal", [norm, g.const(0.0)])
    norm = g.where(zero, g.const(1.0), norm, "norm")
    y = g.op("Div", [grouped, norm], "l2norm")
    return g.reshape(y, layer.buffer_shape)


@converts(normalization.Normalization)
def convert_normalization(g, layer, x, sources):
    """LRN with Darknet's running-sum windows: norm = kappa + alpha * A (x*x), A the layer's
    own window matrix applied as a 1x1 convolution."""
    c = layer.out_c
    square = g.op("Mul", [x, x])
    windows = (layer.alpha * layer.windows).astype(F32).reshape(c, c, 1, 1)
    norms = g.op("Conv", [square, g.const(windows, "windows"),
                          g.const(np.full(c, layer.kappa, F32), "kappa")], "norms",
                 kernel_shape=[1, 1])
    scale = g.op("Pow", [norms, g.const(-float(layer.beta))])
    return g.op("Mul", [scale, x], "lrn")


@converts(activation.ActivationLayer)
def convert_activation(g, layer, x, sources):
    y = activate(g, layer.activation, x)
    return y if y != x else g.op("Identity", [x])


@converts(logistic.Logistic)
def convert_logistic(g, layer, x, sources):
    return g.op("Sigmoid", [x], "logistic")


@converts(softmax.Softmax)
def convert_softmax(g, layer, x, sources):
    if layer.tree is not None:
        flat = g.op("Flatten", [x], "flatten", axis=1)
        y = _tree_softmax(g, layer, flat, 1, layer.inputs, layer.temperature, rest="zeros")
        return g.reshape(y, layer.buffer_shape)
    y = g.reshape(x, (layer.groups, layer.inputs // layer.groups))
    if layer.temperature != 1:
        y = g.op("Div", [y, g.const(float(layer.temperature))], "temperature")
    y = g.op("Softmax", [y], "softmax", axis=2)
    return g.reshape(y, layer.buffer_shape)


def _tree_softmax(g, layer, x, axis, length, temperature, rest):
    """Darknet's group-wise softmax over the tree's groups along `axis` (of `length`
    entries); entries past the tree's nodes are 0 (rest="zeros", [softmax], whose buffer
    they are never written to) or kept (rest="keep", [region])."""
    tree = layer.tree
    groups = sorted((int(o), int(n)) for o, n in zip(tree.group_offset, tree.group_size) if n)
    start = 0
    parts = []
    for offset, size in groups:
        if offset != start:
            raise refuse(layer, "the tree's groups do not tile its nodes one after another")
        part = g.slice(x, axis, offset, offset + size, hint="group")
        if temperature != 1:
            part = g.op("Div", [part, g.const(float(temperature))], "temperature")
        parts.append(g.op("Softmax", [part], "group_softmax", axis=axis))
        start = offset + size
    if start < length:
        tail = g.slice(x, axis, start, length, hint="past_tree")
        parts.append(tail if rest == "keep" else g.mul(tail, 0.0, "zeros"))
    return g.concat(parts, axis=axis, hint="tree_softmax")


@converts(cost.Cost)
def convert_cost(g, layer, x, sources):
    """A loss: nothing to compute at inference (the network's output is the layer before);
    a layer that reads it is refused (exporter.py)."""
    return None


@converts(contrastive.Contrastive)
def convert_contrastive(g, layer, x, sources):
    """AlexeyAB's contrastive loss outputs 0 at inference (as in Darknet)."""
    shape = g.batch_shape(x, layer.buffer_shape)
    return g.op("ConstantOfShape", [shape], "contrastive")


# ---------------------------------------------------------------------------- detection heads

def _entry_map(g, layer, x, entries, logistic_entries, scaled_entries):
    """(batch, n, entries, h*w): logistic on the listed entries, then AlexeyAB's scale_x_y
    (x*s - (s-1)/2) on the scaled ones, as the layer's forward does."""
    planes = g.reshape(x, (layer.n, entries, layer.out_h * layer.out_w))
    if len(logistic_entries):
        mask = np.zeros((1, 1, entries, 1), bool)
        mask[0, 0, list(logistic_entries)] = True
        planes = g.where(g.const(mask, "logistic_entries", bool),
                         g.op("Sigmoid", [planes]), planes, "activation")
    s = float(np.float32(layer.scale_x_y))
    if s != 1:
        scale = np.ones((1, 1, entries, 1), F32)
        shift = np.zeros((1, 1, entries, 1), F32)
        scale[0, 0, list(scaled_entries)] = s
        shift[0, 0, list(scaled_entries)] = -0.5 * (layer.scale_x_y - 1)
        planes = g.add(g.mul(planes, scale, "scale_x_y"), shift, "scale_x_y")
    return g.reshape(planes, layer.buffer_shape)


@converts(yolo.Yolo)
def convert_yolo(g, layer, x, sources):
    entries = layer.entries
    logistic_entries = [] if layer.new_coords else [0, 1] + list(range(4, entries))
    return _entry_map(g, layer, x, entries, logistic_entries, [0, 1])


@converts(gaussian_yolo.GaussianYolo)
def convert_gaussian_yolo(g, layer, x, sources):
    entries = layer.entries
    logistic_entries = list(gaussian_yolo.LOGISTIC_ENTRIES) + \
        list(range(gaussian_yolo.BOX_ENTRIES, entries))
    return _entry_map(g, layer, x, entries, logistic_entries, [0, 2])


@converts(region.Region)
def convert_region(g, layer, x, sources):
    """Logistic on x, y and (unless background) the objectness; softmax over the class group
    (which takes the objectness in with background=1) or logistic on the classes."""
    entries, hw, obj = layer.entries, layer.out_h * layer.out_w, layer.coords
    planes = g.reshape(x, (layer.n, entries, hw))
    parts = [g.op("Sigmoid", [g.slice(planes, 2, 0, 2)], "xy")]
    if obj > 2:
        parts.append(g.slice(planes, 2, 2, obj))
    if not layer.background:
        parts.append(g.op("Sigmoid", [g.slice(planes, 2, obj, obj + 1)], "objectness"))
    if layer.tree is not None:
        if layer.background:
            parts.append(g.slice(planes, 2, obj, obj + 1))
        first = obj + 1
        classes = g.slice(planes, 2, first, entries, hint="classes")
        parts.append(_tree_softmax(g, layer, classes, 2, entries - first, 1.0, rest="keep"))
    elif layer.softmax:
        group = layer._class_group
        parts.append(g.op("Softmax", [g.slice(planes, 2, group.start, group.stop)], "classes",
                          axis=2))
    else:
        if layer.background:
            parts.append(g.slice(planes, 2, obj, obj + 1))
        if entries > obj + 1:
            parts.append(g.op("Sigmoid", [g.slice(planes, 2, obj + 1, entries)], "classes"))
    y = g.concat(parts, axis=2, hint="region")
    return g.reshape(y, layer.buffer_shape)


@converts(detection.DetectionLayer)
def convert_detection(g, layer, x, sources):
    flat = g.op("Flatten", [x], "flatten", axis=1)
    if not layer.softmax:
        return g.reshape(flat, layer.buffer_shape)
    cells = layer.side * layer.side
    k1 = cells * layer.classes
    probs = g.reshape(g.slice(flat, 1, 0, k1), (cells, layer.classes))
    probs = g.op("Flatten", [g.op("Softmax", [probs], "classes", axis=2)], "flatten", axis=1)
    y = g.concat([probs, g.slice(flat, 1, k1, layer.outputs)], axis=1, hint="detection")
    return g.reshape(y, layer.buffer_shape)
