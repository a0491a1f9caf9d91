"""Real cfgs' forward values (not only shapes) and [route] groups, against independent numpy.

For two corpus detectors at 64x64 with seeded random weights, every layer's output is
recomputed here from the outputs of the layers it reads (Darknet's rules written out in plain
numpy loops over output positions or channels), so a wrong source index, group slice, padding,
stride, batch-norm constant or activation in any layer fails.  The [route] groups / group_id
tests build their expected slices by hand.
"""
import numpy as np
import pytest

import minidarknet
from conftest import CFG_CORPUS, need_shared

F32 = np.float32


# ----------------------------------------------------------------- per-layer references

def activate(name, v):
    v = np.asarray(v, np.float64)
    if name == "linear":
        return v
    if name == "leaky":
        return np.where(v > 0, v, .1 * v)
    if name == "logistic":
        return 1 / (1 + np.exp(-v))
    if name == "relu":
        return np.maximum(v, 0)
    if name == "mish":
        return v * np.tanh(np.log1p(np.exp(v)))
    raise AssertionError(f"no reference for activation {name}")


def conv_at(layer, x, f, i, j):
    """Output (filter f, row i, col j) of a [convolutional] (groups 1, dilation 1), float64:
    cross-correlation with zero padding, then batch norm with the rolling statistics
    (x - mean)/(sqrt(var) + 1e-6)*scale + bias, or + bias, then the activation."""
    assert layer.groups == 1 and layer.dilation == 1
    c, h, w = x.shape
    k, p = layer.size, layer.padding
    total = 0.0
    weights = layer.weights.reshape(layer.filters, c, k, k).astype(np.float64)
    for ky in range(k):
        for kx in range(k):
            yy, xx = i * layer.stride_y + ky - p, j * layer.stride_x + kx - p
            if 0 <= yy < h and 0 <= xx < w:
                total += float(weights[f, :, ky, kx] @ x[:, yy, xx])
    if layer.batch_normalize:
        total = ((total - layer.rolling_mean[f]) / (np.sqrt(layer.rolling_variance[f]) + 1e-6)
                 * layer.scales[f])
    return activate(layer.activation.name, total + layer.biases[f])


def maxpool_reference(layer, x):
    """Darknet's maxpool: window of `size` from (i*stride - padding/2), outside = -inf."""
    c, h, w = x.shape
    out = np.full((c, layer.out_h, layer.out_w), -np.inf)
    off = -(layer.padding // 2)
    for i in range(layer.out_h):
        for j in range(layer.out_w):
            for ky in range(layer.size):
                for kx in range(layer.size):
                    yy, xx = i * layer.stride_y + ky + off, j * layer.stride_x + kx + off
                    if 0 <= yy < h and 0 <= xx < w:
                        out[:, i, j] = np.maximum(out[:, i, j], x[:, yy, xx])
    return out


def yolo_reference(layer, x):
    """logistic on x, y, objectness and classes of every anchor; x, y then scaled by
    scale_x_y as s*v - (s - 1)/2; w, h unchanged."""
    per = 5 + layer.classes
    out = x.astype(np.float64).reshape(layer.n, per, -1).copy()
    logistic = [0, 1] + list(range(4, per))
    out[:, logistic] = 1 / (1 + np.exp(-out[:, logistic]))
    s = layer.scale_x_y
    out[:, 0:2] = out[:, 0:2] * s - (s - 1) / 2
    return out.reshape(x.shape)


def route_reference(layer, outputs):
    parts = []
    for src in layer.sources:
        flat = outputs[src].reshape(-1)
        size = flat.size // layer.groups
        parts.append(flat[size * layer.group_id:size * (layer.group_id + 1)])
    return np.concatenate(parts)


def check_every_layer(net, x):
    outputs = {}
    prev = x[0].astype(np.float64)
    rng = np.random.default_rng(3)
    for index, layer in enumerate(net.layers):
        got = layer.output[0].astype(np.float64)
        if layer.type == "convolutional":
            for _ in range(6):                      # sampled output positions
                f = int(rng.integers(layer.out_c))
                i, j = int(rng.integers(layer.out_h)), int(rng.integers(layer.out_w))
                expected = conv_at(layer, prev, f, i, j)
                assert got.reshape(layer.out_c, layer.out_h, layer.out_w)[f, i, j] == \
                    pytest.approx(expected, rel=2e-4, abs=2e-4), (index, f, i, j)
        elif layer.type == "maxpool":
            np.testing.assert_allclose(got.reshape(layer.out_c, layer.out_h, layer.out_w),
                                       maxpool_reference(layer, prev), rtol=1e-6,
                                       err_msg=str(index))
        elif layer.type == "route":
            np.testing.assert_array_equal(got.reshape(-1), route_reference(layer, outputs),
                                          err_msg=str(index))
        elif layer.type == "upsample":
            expected = prev.repeat(layer.stride, axis=1).repeat(layer.stride, axis=2)
            np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-6)
        elif layer.type == "yolo":
            np.testing.assert_allclose(got.reshape(prev.shape), yolo_reference(layer, prev),
                                       rtol=1e-5, atol=1e-6, err_msg=str(index))
        else:
            raise AssertionError(f"layer {index}: no reference for [{layer.type}]")
        outputs[index] = got
        prev = got.reshape(layer.out_c, layer.out_h, layer.out_w)
    return outputs


@pytest.mark.parametrize("name", ["pjreddie/yolov3-tiny.cfg", "alexeyab/yolov4-tiny.cfg"])
def test_corpus_detector_every_layer_matches_an_independent_reference(name):
    path = need_shared(CFG_CORPUS / name)
    net = minidarknet.load(path, batch=1, width=64, height=64, seed=1)
    rng = np.random.default_rng(2)
    for layer in net.layers:                 # non-trivial batch-norm statistics
        if getattr(layer, "batch_normalize", 0):
            layer.rolling_mean[...] = rng.normal(0, .1, layer.rolling_mean.shape)
            layer.rolling_variance[...] = rng.uniform(.5, 2, layer.rolling_variance.shape)
            layer.scales[...] = rng.uniform(.5, 1.5, layer.scales.shape)
    x = rng.random((1, 3, 64, 64), dtype=np.float32)
    net.forward(x)
    outputs = check_every_layer(net, x)
    types = {layer.type for layer in net.layers}
    assert {"convolutional", "maxpool", "route", "upsample", "yolo"} <= types
    assert max(abs(o).max() for o in outputs.values()) > 0


# ---------------------------------------------------------------------- [route] groups

ROUTE = """[net]
batch=2
width=2
height=1
channels=6

[activation]
activation=logistic

[convolutional]
filters=6
size=3
pad=1
activation=linear

[route]
layers=0,1
groups={groups}
group_id={group_id}
"""


@pytest.mark.parametrize("groups,group_id", [(2, 1), (3, 1), (3, 2), (6, 5)])
def test_route_group_slices_forward_and_backward(groups, group_id):
    # layer 0: s = logistic(x); layer 1: 2*s (a 3x3 convolution whose only non-zero taps are
    # the centres of 2*identity); the route takes group `group_id` of each
    # exact gradients: the sums the test expects (groups= makes the default fork AlexeyAB's,
    # whose CPU convolution backward overwrites the delta the route added)
    net = minidarknet.loads(ROUTE.format(groups=groups, group_id=group_id), gradients="exact")
    conv, route = net.layers[1], net.layers[2]
    conv.weights[...] = 0
    conv.weights.reshape(6, 6, 3, 3)[:, :, 1, 1] = 2 * np.eye(6)
    per = 6 // groups                                     # channels per group
    chans = list(range(per * group_id, per * (group_id + 1)))
    assert (route.out_c, route.out_h, route.out_w) == (2 * per, 1, 2)
    x = np.random.default_rng(0).normal(size=(2, 6, 1, 2)).astype(F32)
    out = net.forward(x, train=True).reshape(2, 2 * per, 1, 2)
    s = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(out[:, :per], s[:, chans], rtol=1e-6)
    np.testing.assert_allclose(out[:, per:], 2 * s[:, chans], rtol=1e-6)
    g = np.random.default_rng(1).normal(size=out.shape).astype(F32)
    net.backward(g)
    # the route's delta lands in its sources' channel slices and nowhere else
    conv_delta = np.zeros((2, 6, 1, 2))
    conv_delta[:, chans] = g[:, per:]
    np.testing.assert_allclose(conv.delta.reshape(2, 6, 1, 2), conv_delta, rtol=1e-6)
    act_delta = 2 * conv_delta                            # back through the convolution
    act_delta[:, chans] += g[:, :per]                     # the route's own slice of layer 0
    np.testing.assert_allclose(net.input_delta.reshape(2, 6, 1, 2), act_delta * s * (1 - s),
                               rtol=1e-5, atol=1e-7)


def test_route_groups_slice_flat_outputs_of_a_spatial_source():
    # groups cut each source's flat output (c*h*w) into contiguous chunks: with 4 channels of
    # 2x2 and groups=2, group_id=1 is channels 2 and 3, i.e. flat elements 8..15
    net = minidarknet.loads("[net]\nwidth=2\nheight=2\nchannels=4\n[maxpool]\nsize=1\n"
                            "stride=1\n[route]\nlayers=-1\ngroups=2\ngroup_id=1\n")
    x = np.arange(16, dtype=F32).reshape(1, 4, 2, 2)
    out = net.forward(x)
    np.testing.assert_array_equal(out.reshape(-1), np.arange(8, 16))
    assert (net.layers[1].out_c, net.layers[1].outputs) == (2, 8)
