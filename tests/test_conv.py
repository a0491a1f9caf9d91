"""[convolutional]: forward against a direct reference, finite-difference checks of the exact
gradients (float64) over stride/pad/groups/dilation/BN variants, Darknet's quirks, weights I/O,
cfg errors, and the golden cases that exercise convolutions.

The helpers at the top (float64 mode, `fd_check`, `conv_reference`) are also used by
tests/test_pool.py and tests/test_deconv_local.py.
"""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import minidarknet
from minidarknet import ops
from minidarknet.errors import CfgError

from conftest import GOLDEN, GOLDEN_CHECK, ROOT, need_shared, numeric_gradient, use_float64

EPS = 1e-6
RTOL = 1e-6
SAMPLES = 10


# ---------------------------------------------------------------------- helpers (shared)

def build(text, gradients="exact", seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minidarknet.loads(text, gradients=gradients, seed=seed)


def net_cfg(body, batch=2, w=6, h=5, c=4):
    return f"[net]\nbatch={batch}\nwidth={w}\nheight={h}\nchannels={c}\n\n{body}"


def randomize(net, rng):
    for layer in net.layers:
        weights = getattr(layer, "weights", None)
        if weights is not None:
            fan_in = weights[0].size
            weights[...] = rng.normal(0, 1 / np.sqrt(fan_in), weights.shape)
        if getattr(layer, "biases", None) is not None:
            layer.biases[...] = rng.normal(0, .5, layer.biases.shape)
        if getattr(layer, "rolling_mean", None) is not None:
            layer.scales[...] = rng.uniform(.5, 1.5, layer.scales.shape)
            layer.rolling_mean[...] = rng.normal(0, .3, layer.rolling_mean.shape)
            layer.rolling_variance[...] = rng.uniform(.5, 1.5, layer.rolling_variance.shape)


UPDATES = (("weights", "weight_updates"), ("biases", "bias_updates"),
           ("scales", "scale_updates"))


def objective(net, x, truth, train):
    rolling = [(l, l.rolling_mean.copy(), l.rolling_variance.copy())
               for l in net.layers if getattr(l, "rolling_mean", None) is not None]
    net.forward(x, truth, train=train)
    for layer, mean, var in rolling:        # the rolling statistics are constants here
        layer.rolling_mean[...] = mean
        layer.rolling_variance[...] = var
    return net.objective


def fd_check(net, x, truth, train=True, layers=None):
    """In exact mode every *_updates and input_delta is -d objective / d (its array):
    compare them with central differences on sampled elements."""
    rng = np.random.default_rng(5)
    x = np.array(x, np.float64)
    objective(net, x, truth, train)
    net.backward()
    analytic = {}
    for i, layer in enumerate(net.layers):
        if layers is not None and i not in layers:
            continue
        for param, update in UPDATES:
            if getattr(layer, update, None) is not None:
                analytic[i, param] = getattr(layer, update).copy()
                getattr(layer, update)[...] = 0
    analytic["input"] = net.input_delta.copy()
    checked = 0
    for key, got in analytic.items():
        array = x if key == "input" else getattr(net.layers[key[0]], key[1])
        flat = array.reshape(-1)
        picks = (range(flat.size) if flat.size <= SAMPLES
                 else rng.choice(flat.size, SAMPLES, replace=False))
        numeric = -numeric_gradient(lambda: objective(net, x, truth, train), array, picks, EPS)
        got = got.reshape(-1)[list(picks)]
        scale = max(np.abs(numeric).max(), np.abs(got).max(), 1e-3)
        err = np.abs(got - numeric).max()
        assert err <= RTOL * scale + 1e-9, (f"{key}: |analytic - numeric| = {err:.3g} "
                                            f"(scale {scale:.3g})\n{got}\n{numeric}")
        checked += 1
    return checked


def conv_reference(x, w, stride_y=1, stride_x=1, pad=0, dilation=1, groups=1):
    """Direct float64 cross-correlation: one dot product per output element."""
    x = np.asarray(x, np.float64)
    batch, c, h, width = x.shape
    n, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    reach = dilation * (k - 1) + 1
    out_h = (h + 2 * pad - reach) // stride_y + 1
    out_w = (width + 2 * pad - reach) // stride_x + 1
    out = np.zeros((batch, n, out_h, out_w))
    m = n // groups
    for f in range(n):
        g = f // m
        for oy in range(out_h):
            for ox in range(out_w):
                y0, x0 = oy * stride_y, ox * stride_x
                patch = xp[:, g * cg:(g + 1) * cg, y0:y0 + reach:dilation, x0:x0 + reach:dilation]
                out[:, f, oy, ox] = (patch * w[f]).sum(axis=(1, 2, 3))
    return out


# ---------------------------------------------------------------------- forward

GEOMETRIES = [
    # size, stride, pad, padding, groups, dilation, stride_x, stride_y
    (3, 1, 1, 0, 1, 1, None, None),
    (3, 2, 1, 0, 1, 1, None, None),
    (3, 1, 0, 0, 2, 1, None, None),
    (1, 1, 0, 0, 1, 1, None, None),
    (1, 1, 0, 0, 4, 1, None, None),
    (2, 2, 0, 0, 1, 1, None, None),
    (5, 1, 0, 2, 1, 1, None, None),
    (3, 1, 1, 0, 1, 2, None, None),
    (3, 1, 0, 1, 4, 1, None, None),
    (3, 1, 1, 0, 1, 1, 2, 1),
    (4, 3, 0, 1, 2, 1, None, None),
]


def conv_section(size, stride, pad, padding, groups, dilation, stride_x, stride_y,
                 filters=4, extra=""):
    text = (f"[convolutional]\nfilters={filters}\nsize={size}\nstride={stride}\npad={pad}\n"
            f"padding={padding}\ngroups={groups}\ndilation={dilation}\nactivation=linear\n")
    if stride_x:
        text += f"stride_x={stride_x}\nstride_y={stride_y}\n"
    return text + extra


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_forward_matches_direct_reference(geometry):
    size, stride, pad, padding, groups, dilation, sx, sy = geometry
    net = build(net_cfg(conv_section(*geometry), w=7, h=6))
    layer = net.layers[0]
    rng = np.random.default_rng(0)
    randomize(net, rng)
    x = rng.normal(size=(2, 4, 6, 7)).astype(np.float32)
    out = net.forward(x)
    p = (size // 2 if pad else padding) * dilation
    expected = conv_reference(x, layer.weights, sy or stride, sx or stride, p, dilation, groups)
    expected += layer.biases[None, :, None, None]
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("batch_normalize", [0, 1])
def test_inference_in_row_chunks_matches_direct_reference(geometry, batch_normalize,
                                                          monkeypatch):
    """Chunks of one or two output rows: each pads its own input rows (zero rows above and
    below the image) and carries the bias as a row of ones in its column matrix."""
    monkeypatch.setattr(ops, "CHUNK_BYTES", 1)
    monkeypatch.setattr(ops, "MIN_CHUNK_COLS", 1)
    size, stride, pad, padding, groups, dilation, sx, sy = geometry
    body = conv_section(*geometry).replace("activation=linear",
                                           f"activation=linear\nbatch_normalize={batch_normalize}")
    net = build(net_cfg(body, w=7, h=9), gradients="darknet")
    layer = net.layers[0]
    rng = np.random.default_rng(8)
    randomize(net, rng)
    x = rng.normal(size=(2, 4, 9, 7)).astype(np.float32)
    assert len(layer.op.chunks(2, 4, 2)) >= 4
    out = net.forward(x).copy()
    p = (size // 2 if pad else padding) * dilation
    conv = conv_reference(x, layer.weights, sy or stride, sx or stride, p, dilation, groups)
    c = (slice(None), None, None)
    if batch_normalize:
        conv = ((conv - layer.rolling_mean[c]) / (np.sqrt(layer.rolling_variance[c]) + 1e-6)
                * layer.scales[c])
    np.testing.assert_allclose(out, conv + layer.biases[c], rtol=1e-5, atol=1e-5)


def test_chunked_im2col_equals_whole(monkeypatch):
    """Force tiny column chunks (bands of rows, one sample at a time) and compare forward and
    backward with the unchunked computation."""
    cfg = net_cfg("[convolutional]\nfilters=6\nsize=3\nstride=1\npad=1\ngroups=2\n"
                  "batch_normalize=1\nactivation=leaky\n\n[convolutional]\nfilters=3\nsize=3\n"
                  "stride=2\npad=1\nactivation=logistic\n\n[cost]\n", batch=3, w=9, h=11, c=4)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 11, 9)).astype(np.float32)

    def run():
        net = build(cfg, gradients="darknet")
        randomize(net, np.random.default_rng(2))
        truth = np.random.default_rng(3).uniform(size=(3, net.truths))
        net.forward(x, truth, train=True)
        net.backward()
        return ([l.output.copy() for l in net.layers[:2]], net.input_delta.copy(),
                [l.weight_updates.copy() for l in net.layers[:2]])

    whole = run()
    monkeypatch.setattr(ops, "CHUNK_BYTES", 1)
    monkeypatch.setattr(ops, "MIN_CHUNK_COLS", 10)
    chunked = run()
    for a, b in zip(whole[0] + [whole[1]] + whole[2], chunked[0] + [chunked[1]] + chunked[2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_chunk_plan_covers_every_row_and_sample(monkeypatch):
    monkeypatch.setattr(ops, "CHUNK_BYTES", 4000)
    monkeypatch.setattr(ops, "MIN_CHUNK_COLS", 20)
    op = ops.ConvOp(3, 40, 30, 8, 3, 1, 1, 1, 1, 1, 40, 30)
    plan = op.chunks(3, 4)
    assert len(plan) > 3
    covered = np.zeros((3, 40), int)
    for b0, b1, r0, r1 in plan:
        covered[b0:b1, r0:r1] += 1
        assert (r1 - r0) * 30 >= 20 or r1 == 40
    assert (covered == 1).all()


def test_inference_batchnorm_is_darknets_formula():
    """Spec section 10: mean 1, variance 4, gamma 2, beta .5, x 3 -> 2.49999905 (the epsilon
    1e-6 is added to sqrt(variance))."""
    net = build(net_cfg("[convolutional]\nfilters=1\nsize=1\nbatch_normalize=1\n"
                        "activation=linear\n", batch=1, w=1, h=1, c=1), gradients="darknet")
    layer = net.layers[0]
    layer.weights[...] = 1
    layer.scales[...] = 2
    layer.biases[...] = .5
    layer.rolling_mean[...] = 1
    layer.rolling_variance[...] = 4
    out = net.forward(np.full((1, 1, 1, 1), 3, np.float32))
    assert abs(float(out.ravel()[0]) - 2.49999905) < 2e-7


@pytest.mark.parametrize("h,w", [(5, 6), (2, 2)], ids=["scaled-weights", "scaled-output"])
def test_inference_batchnorm_matches_the_unfolded_formula(h, w):
    """Large maps fold gamma/(sqrt(var)+eps) into a copy of the weights, small ones scale the
    output; both must give Darknet's numbers."""
    net = build(net_cfg("[convolutional]\nfilters=5\nsize=3\npad=1\nbatch_normalize=1\n"
                        "activation=leaky\n", h=h, w=w), gradients="darknet")
    rng = np.random.default_rng(4)
    randomize(net, rng)
    layer = net.layers[0]
    x = rng.normal(size=(2, 4, h, w)).astype(np.float32)
    out = net.forward(x).copy()
    conv = conv_reference(x, layer.weights, pad=1)
    c = (slice(None), None, None)
    y = ((conv - layer.rolling_mean[c]) / (np.sqrt(layer.rolling_variance[c]) + 1e-6)
         * layer.scales[c] + layer.biases[c])
    y = np.where(y > 0, y, .1 * y)
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-5)


def test_training_forward_normalises_with_batch_statistics():
    net = build(net_cfg("[convolutional]\nfilters=3\nsize=3\npad=1\nbatch_normalize=1\n"
                        "activation=linear\n", batch=3), gradients="darknet")
    rng = np.random.default_rng(5)
    randomize(net, rng)
    layer = net.layers[0]
    x = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
    out = net.forward(x, train=True)
    conv = conv_reference(x, layer.weights, pad=1)
    mean = conv.mean(axis=(0, 2, 3))
    var = conv.var(axis=(0, 2, 3), ddof=1)
    c = (slice(None), None, None)
    y = (conv - mean[c]) / (np.sqrt(var[c]) + 1e-6) * layer.scales[c] + layer.biases[c]
    np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.mean, mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["logistic", "leaky", "relu", "tanh", "mish", "swish",
                                        "normalize_channels_softmax"])
def test_activations_applied_per_chunk(activation, monkeypatch):
    monkeypatch.setattr(ops, "CHUNK_BYTES", 1)
    monkeypatch.setattr(ops, "MIN_CHUNK_COLS", 7)
    net = build(net_cfg(f"[convolutional]\nfilters=3\nsize=3\npad=1\nactivation={activation}\n"),
                gradients="darknet")
    rng = np.random.default_rng(6)
    randomize(net, rng)
    layer = net.layers[0]
    x = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    out = net.forward(x).copy()
    pre = (conv_reference(x, layer.weights, pad=1)
           + layer.biases[:, None, None]).astype(np.float32)
    expected = layer.activation.forward(pre.copy(), pre.copy())
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    if layer.x_pre is not None:
        np.testing.assert_allclose(layer.x_pre, pre, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- exact gradients

@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_exact_gradients(f64, geometry):
    body = conv_section(*geometry).replace("activation=linear", "activation=logistic")
    net = build(net_cfg(body + "\n[convolutional]\nfilters=2\nsize=1\nactivation=linear\n\n"
                        "[cost]\n", w=7, h=6))
    rng = np.random.default_rng(7)
    randomize(net, rng)
    x = rng.normal(size=(2, 4, 6, 7))
    truth = rng.uniform(size=(2, net.truths))
    assert fd_check(net, x, truth) == 5


@pytest.mark.parametrize("train", [True, False], ids=["train", "inference"])
@pytest.mark.parametrize("groups", [1, 2])
def test_exact_gradients_with_batchnorm(f64, train, groups):
    net = build(net_cfg(f"[convolutional]\nfilters=4\nsize=3\npad=1\ngroups={groups}\n"
                        "batch_normalize=1\nactivation=tanh\n\n[convolutional]\nfilters=2\n"
                        "size=3\nstride=2\npad=1\nbatch_normalize=1\nactivation=linear\n\n"
                        "[cost]\n", batch=3))
    rng = np.random.default_rng(8)
    randomize(net, rng)
    x = rng.normal(size=(3, 4, 5, 6))
    assert fd_check(net, x, rng.uniform(size=(3, net.truths)), train=train) == 7


@pytest.mark.parametrize("activation", ["leaky", "relu", "mish", "swish", "gelu"])
def test_exact_gradients_of_activations(f64, activation):
    net = build(net_cfg(f"[convolutional]\nfilters=3\nsize=3\npad=1\nactivation={activation}\n"
                        "\n[cost]\n"))
    rng = np.random.default_rng(9)
    randomize(net, rng)
    x = rng.normal(size=(2, 4, 5, 6))
    fd_check(net, x, rng.uniform(size=(2, net.truths)))


def test_float32_gradients_match_float64(monkeypatch):
    cfg = net_cfg("[convolutional]\nfilters=4\nsize=3\npad=1\nbatch_normalize=1\n"
                  "activation=leaky\n\n[convolutional]\nfilters=3\nsize=1\nactivation=linear\n"
                  "\n[cost]\n")
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2, 4, 5, 6))
    truth = rng.uniform(size=(2, 90))
    results = []
    for dtype in (np.float32, np.float64):
        if dtype == np.float64:
            use_float64(monkeypatch)
        net = build(cfg)
        randomize(net, np.random.default_rng(11))
        net.forward(x, truth, train=True)
        net.backward()
        results.append([net.input_delta.copy()] +
                       [getattr(l, u).copy() for l in net.layers[:2]
                        for u in ("weight_updates", "bias_updates")])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5 * np.abs(b).max())


# ---------------------------------------------------------------------- quirks

ROUTE_AROUND_1X1 = """[convolutional]
filters=3
size=3
pad=1
activation=linear

[convolutional]
filters=2
size={size}
pad=1
activation=linear

[route]
layers=-1,-2

[cost]
"""


def deltas_at_first_layer(gradients, size):
    """Layer 0 feeds both a conv (layer 1) and a route (layer 2): in backward the route adds
    first, then layer 1 adds (or, Darknet with size 1, overwrites)."""
    net = build(net_cfg(ROUTE_AROUND_1X1.format(size=size)), gradients=gradients)
    randomize(net, np.random.default_rng(12))
    rng = np.random.default_rng(13)
    x = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    net.forward(x, rng.uniform(size=(2, net.truths)), train=True)
    cost_delta = net.layers[3].delta.reshape(2, -1).copy()
    route_share = cost_delta[:, 2 * 30:].reshape(2, 3, 5, 6)     # layer 0's part of the route
    net.backward()
    return net, route_share


def test_darknet_1x1_conv_overwrites_previous_delta():
    net, route_share = deltas_at_first_layer("darknet", 1)
    conv1 = net.layers[1]
    w = conv1.weights.reshape(2, 3)
    from_conv = np.einsum("fc,bfyx->bcyx", w, conv1.delta)
    np.testing.assert_allclose(net.layers[0].delta, from_conv, rtol=1e-5, atol=1e-6)
    assert np.abs(route_share).max() > .1          # ... and the route's share was lost


def test_exact_1x1_conv_accumulates():
    net, route_share = deltas_at_first_layer("exact", 1)
    conv1 = net.layers[1]
    w = conv1.weights.reshape(2, 3)
    from_conv = np.einsum("fc,bfyx->bcyx", w, conv1.delta)
    np.testing.assert_allclose(net.layers[0].delta, from_conv + route_share,
                               rtol=1e-5, atol=1e-5)


def test_darknet_3x3_conv_accumulates():
    dark, route_share = deltas_at_first_layer("darknet", 3)
    exact, _ = deltas_at_first_layer("exact", 3)
    np.testing.assert_allclose(dark.layers[0].delta, exact.layers[0].delta, rtol=1e-6)
    assert np.abs(dark.layers[0].delta - route_share).max() > 1e-3


# ---------------------------------------------------------------------- weights

def test_weights_round_trip(tmp_path):
    cfg = net_cfg("[convolutional]\nfilters=4\nsize=3\npad=1\ngroups=2\nbatch_normalize=1\n"
                  "activation=leaky\n\n[convolutional]\nfilters=3\nsize=1\nactivation=linear\n")
    net = build(cfg, gradients="darknet")
    randomize(net, np.random.default_rng(14))
    net.save_weights(tmp_path / "a.weights")
    other = build(cfg, gradients="darknet", seed=99)
    other.load_weights(tmp_path / "a.weights")
    for a, b in zip(net.layers, other.layers):
        for (name, x), (_, y) in zip(a.parameters(), b.parameters()):
            np.testing.assert_array_equal(x, y, err_msg=name)
    other.save_weights(tmp_path / "b.weights")
    assert (tmp_path / "a.weights").read_bytes() == (tmp_path / "b.weights").read_bytes()


def weights_file(path, *arrays):
    header = np.array([0, 2, 0], "<i4").tobytes() + np.array([0], "<u8").tobytes()
    path.write_bytes(header + b"".join(np.asarray(a, "<f4").tobytes() for a in arrays))
    return path


def test_weights_file_order_biases_bn_then_oihw(tmp_path):
    net = build(net_cfg("[convolutional]\nfilters=2\nsize=3\ngroups=2\nbatch_normalize=1\n"
                        "activation=linear\n", c=4), gradients="darknet")
    biases, scales, mean, var = [np.arange(2) + 10 * k for k in range(1, 5)]
    weights = np.arange(2 * 2 * 3 * 3) / 7
    net.load_weights(weights_file(tmp_path / "w", biases, scales, mean, var, weights))
    layer = net.layers[0]
    np.testing.assert_array_equal(layer.biases, biases)
    np.testing.assert_array_equal(layer.scales, scales)
    np.testing.assert_array_equal(layer.rolling_mean, mean)
    np.testing.assert_array_equal(layer.rolling_variance, var)
    np.testing.assert_allclose(layer.weights, weights.reshape(2, 2, 3, 3))


def test_dontloadscales_reads_no_bn_arrays_but_writes_them(tmp_path):
    net = build(net_cfg("[convolutional]\nfilters=2\nsize=1\nbatch_normalize=1\n"
                        "dontloadscales=1\nactivation=linear\n", c=3), gradients="darknet")
    net.load_weights(weights_file(tmp_path / "w", [1, 2], np.arange(6)))
    layer = net.layers[0]
    np.testing.assert_array_equal(layer.biases, [1, 2])
    np.testing.assert_array_equal(layer.weights.ravel(), np.arange(6))
    np.testing.assert_array_equal(layer.scales, [1, 1])
    net.save_weights(tmp_path / "out")
    assert len((tmp_path / "out").read_bytes()) == 20 + 4 * (2 * 4 + 6)


def test_numload_reads_the_first_filters(tmp_path):
    net = build(net_cfg("[convolutional]\nfilters=3\nsize=1\nnumload=2\nactivation=linear\n",
                        c=2), gradients="darknet")
    layer = net.layers[0]
    layer.weights[...] = -1
    net.load_weights(weights_file(tmp_path / "w", [5, 6], [1, 2, 3, 4]))
    np.testing.assert_array_equal(layer.biases, [5, 6, 0])
    np.testing.assert_array_equal(layer.weights.reshape(3, 2), [[1, 2], [3, 4], [-1, -1]])


def test_flipped_weights_are_transposed(tmp_path):
    net = build(net_cfg("[convolutional]\nfilters=3\nsize=1\nflipped=1\nactivation=linear\n",
                        c=2), gradients="darknet")
    stored = np.arange(6).reshape(2, 3)        # [c*size*size][n]
    net.load_weights(weights_file(tmp_path / "w", [0, 0, 0], stored))
    np.testing.assert_array_equal(net.layers[0].weights.reshape(3, 2), stored.T)


# ---------------------------------------------------------------------- cfg and description

@pytest.mark.parametrize("body,key", [
    ("filters=2\nsize=1\nstride=2", "size=1"),
    ("filters=2\nsize=1\npadding=1", "size=1"),
    ("filters=3\nsize=3\ngroups=2", "groups"),
    ("filters=2\nsize=3\nantialiasing=1", "antialiasing"),
    ("filters=2\nsize=3\nshare_index=-1", "share_index"),
    ("filters=2\nsize=3\nsway=1", "sway"),
    ("filters=2\nsize=3\ntrain_only_bn=1", "train_only_bn"),
    ("filters=2\nsize=3\ndilation=2", "dilation"),
    ("filters=2\nsize=9", "too small"),
    ("filters=0\nsize=3", "filters"),
    ("filters=2\nsize=3\nstride=0", "stride"),
])
def test_rejected_configurations(body, key):
    with pytest.raises(CfgError) as info:
        build(net_cfg(f"[convolutional]\n{body}\nactivation=linear\n"))
    assert key in str(info.value)
    assert "net.cfg" in str(info.value) or "<" in str(info.value)


def test_conv_needs_an_image():
    with pytest.raises(CfgError, match="must output an image"):
        build(net_cfg("[connected]\noutput=5\n\n[softmax]\n\n[convolutional]\nfilters=2\n"
                      "size=1\n"))


def test_default_activation_is_logistic_and_pad_means_half_size():
    net = build(net_cfg("[convolutional]\nfilters=2\nsize=5\npad=1\npadding=7\n"))
    layer = net.layers[0]
    assert layer.activation.name == "logistic"
    assert layer.padding == 2 and layer.buffer_shape == (2, 5, 6)


def test_stride_x_and_stride_y():
    net = build(net_cfg("[convolutional]\nfilters=2\nsize=3\npad=1\nstride=2\nstride_x=3\n"
                        "activation=linear\n", w=9, h=8))
    layer = net.layers[0]
    assert (layer.stride_x, layer.stride_y) == (3, 2)
    assert layer.buffer_shape == (2, 4, 3)


def test_describe_and_bflops_as_pjreddie_prints():
    net = build(net_cfg("[convolutional]\nfilters=6\nsize=3\nstride=2\npad=1\ngroups=3\n"
                        "activation=leaky\n", w=10, h=8, c=9))
    layer = net.layers[0]
    assert layer.describe() == ("6/3", "3 x 3 / 2", "10 x 8 x 9", "5 x 4 x 6")
    assert layer.flops() == pytest.approx(2 * 6 * 9 * (9 / 3) * 4 * 5)


# ---------------------------------------------------------------------- golden cases

@pytest.mark.parametrize("case", ["l2norm_conv_forward", "l2norm_conv_train", "small_classifier",
                                  "schedule_poly"])
def test_golden_case(case):
    need_shared(GOLDEN / case)
    result = subprocess.run([sys.executable, str(GOLDEN_CHECK), str(GOLDEN / case)],
                            cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_windows_past_the_bottom_edge_read_zeros_as_darknet():
    # height 2, size 3, stride 2, pad 0: Darknet's (2 - 3)/2 + 1 = 1 output row, and its
    # im2col reads zeros below the image.
    net = minidarknet.loads("[net]\nwidth=5\nheight=2\nchannels=1\n[convolutional]\nfilters=1\n"
                            "size=3\nstride=2\npad=0\nactivation=linear\n[cost]\n",
                            gradients="exact")
    conv = net.layers[0]
    rng = np.random.default_rng(5)
    conv.weights[...] = rng.normal(size=conv.weights.shape)
    conv.biases[...] = 0
    x = rng.normal(size=(1, 1, 2, 5)).astype(np.float32)
    padded = np.zeros((3, 5), np.float32)
    padded[:2] = x[0, 0]
    w = conv.weights[0, 0]
    expected = [(padded[:, 0:3] * w).sum(), (padded[:, 2:5] * w).sum()]
    assert (conv.out_h, conv.out_w) == (1, 2)
    np.testing.assert_allclose(net.forward(x).ravel(), expected, rtol=1e-5)
    # and the input gradient of that forward is right (the zero rows get none)
    truth = np.zeros((1, 2), np.float32)
    net.forward(x, truth=truth, train=True)
    net.backward()
    analytic = net.input_delta.copy()
    xe = x.copy()

    def cost():
        net.forward(xe, truth=truth, train=True)
        return net.objective
    numeric = -numeric_gradient(cost, xe, eps=1e-2).reshape(x.shape)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-2, atol=1e-3)


# ---------------------------------------------------------------------- Winograd F(2x2, 3x3)

def winograd_net(c, h, w, filters, bn, batch=2, seed=3):
    text = (f"[net]\nbatch={batch}\nwidth={w}\nheight={h}\nchannels={c}\nlearning_rate=0.1\n"
            f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize=3\nstride=1\n"
            f"pad=1\nactivation=leaky\n")
    net = minidarknet.loads(text)
    layer = net.layers[0]
    assert layer.winograd is not None
    rng = np.random.default_rng(seed)
    for name, array in layer.parameters():
        lo = 0.5 if name in ("scales", "rolling_variance") else -1.0
        array[...] = rng.uniform(lo, 1.5, array.shape).astype(np.float32)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    return net, layer, x


def im2col_output(net, layer, x):
    """The layer's inference output through im2col + GEMM (Winograd switched off)."""
    saved, layer.winograd = layer.winograd, None
    try:
        net.forward(x)
        return layer.output.copy()
    finally:
        layer.winograd = saved


def winograd_output(net, layer, x):
    net.forward(x)
    return layer.output.copy()


def assert_close(a, b):
    scale = np.abs(b).max()
    assert np.abs(a - b).max() <= 1e-5 * scale


@pytest.mark.parametrize("c, h, w, filters, bn, batch", [
    (64, 26, 26, 16, 1, 2), (64, 21, 23, 7, 0, 3), (96, 25, 20, 5, 1, 1),
    (64, 52, 52, 3, 0, 1), (128, 21, 21, 9, 1, 2)])
def test_winograd_matches_im2col(c, h, w, filters, bn, batch):
    net, layer, x = winograd_net(c, h, w, filters, bn, batch)
    assert_close(winograd_output(net, layer, x), im2col_output(net, layer, x))


def test_winograd_only_where_it_applies():
    assert ops.winograd_applies(256, 26, 26, 512, 3, 1, 1, 1, 1, 1)
    for args in [(256, 26, 26, 512, 3, 2, 2, 1, 1, 1), (256, 26, 26, 512, 3, 1, 1, 0, 1, 1),
                 (256, 26, 26, 512, 3, 1, 1, 2, 2, 1), (256, 26, 26, 512, 3, 1, 1, 1, 1, 2),
                 (256, 26, 26, 512, 1, 1, 1, 0, 1, 1), (16, 26, 26, 512, 3, 1, 1, 1, 1, 1),
                 (256, 416, 416, 512, 3, 1, 1, 1, 1, 1)]:
        assert not ops.winograd_applies(*args)


def test_winograd_training_forward_is_im2col():
    net, layer, x = winograd_net(64, 21, 21, 4, 0, 2)
    expected = im2col_output(net, layer, x)
    net.forward(x, train=True)
    np.testing.assert_array_equal(layer.output, expected)


def test_winograd_cache_follows_in_place_edits():
    net, layer, x = winograd_net(64, 21, 22, 6, 1, 2)
    winograd_output(net, layer, x)
    layer.weights[2, 5, 1, 0] += 0.75             # in place: same array object
    assert_close(winograd_output(net, layer, x), im2col_output(net, layer, x))
    layer.weights[-1, -1, -1, -1] -= 0.5          # the part another thread checks
    assert_close(winograd_output(net, layer, x), im2col_output(net, layer, x))
    layer.weights *= -1
    assert_close(winograd_output(net, layer, x), im2col_output(net, layer, x))
    layer.scales[1] = 3.0                         # BN scale is applied after the transform
    assert_close(winograd_output(net, layer, x), im2col_output(net, layer, x))


def test_winograd_cache_follows_update_and_load_weights(tmp_path):
    net, layer, x = winograd_net(64, 20, 20, 5, 0, 2)
    before = winograd_output(net, layer, x)
    path = tmp_path / "w.weights"
    net.save_weights(path)
    layer.weight_updates[...] = 1.0
    net.update()
    after = winograd_output(net, layer, x)
    assert not np.allclose(after, before)
    assert_close(after, im2col_output(net, layer, x))
    net.load_weights(path)
    assert_close(winograd_output(net, layer, x), before)
