"""[deconvolutional] and [local]: forward against direct references (a scatter loop for the
transposed convolution, one dot product per location for the locally connected layer),
finite-difference checks of the exact gradients, weights layout and cfg errors."""
import numpy as np
import pytest

from minidarknet.errors import CfgError

from test_conv import build, fd_check, net_cfg, randomize


def deconv_reference(x, w, stride, pad):
    """Scatter every input pixel times its (c, n, k, k) kernel block into the output."""
    batch, c, h, width = x.shape
    _, n, k, _ = w.shape
    full_h, full_w = (h - 1) * stride + k, (width - 1) * stride + k
    full = np.zeros((batch, n, full_h, full_w))
    for y in range(h):
        for v in range(width):
            full[:, :, y * stride:y * stride + k, v * stride:v * stride + k] += np.einsum(
                "bc,cnij->bnij", x[:, :, y, v], w)
    return full[:, :, pad:full_h - pad, pad:full_w - pad]


def local_reference(x, w, biases, k, stride, pad, out_h, out_w):
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((x.shape[0], w.shape[1], out_h, out_w))
    for oy in range(out_h):
        for ox in range(out_w):
            patch = xp[:, :, oy * stride:oy * stride + k, ox * stride:ox * stride + k]
            out[:, :, oy, ox] = patch.reshape(x.shape[0], -1) @ w[oy * out_w + ox].T
    return out + biases.reshape(1, -1, out_h, out_w)


# ---------------------------------------------------------------------- deconvolutional

@pytest.mark.parametrize("size,stride,pad", [(3, 1, 1), (3, 2, 1), (2, 2, 0), (4, 2, 1),
                                             (1, 1, 0), (5, 3, 1)])
def test_deconv_forward_matches_scatter(size, stride, pad):
    net = build(net_cfg(f"[deconvolutional]\nfilters=3\nsize={size}\nstride={stride}\n"
                        f"padding={pad}\nactivation=linear\n", c=2, h=4, w=5),
                gradients="darknet")
    rng = np.random.default_rng(size * stride)
    randomize(net, rng)
    layer = net.layers[0]
    x = rng.normal(size=(2, 2, 4, 5)).astype(np.float32)
    out = net.forward(x)
    expected = deconv_reference(x, layer.weights, stride, pad) + layer.biases[:, None, None]
    assert out.shape == expected.shape == (2, 3, (4 - 1) * stride + size - 2 * pad,
                                           (5 - 1) * stride + size - 2 * pad)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_deconv_pad_means_half_size_and_default_activation_is_logistic():
    net = build(net_cfg("[deconv]\nfilters=2\nsize=4\nstride=2\npad=1\n", c=2, h=3, w=3))
    layer = net.layers[0]
    assert layer.padding == 2 and layer.activation.name == "logistic"
    assert layer.buffer_shape == (2, 4, 4)
    assert layer.describe() == ("2", "4 x 4 / 2", "3 x 3 x 2", "4 x 4 x 2")


@pytest.mark.parametrize("batch_normalize,train", [(0, True), (1, True), (1, False)])
@pytest.mark.parametrize("size,stride,pad", [(3, 2, 1), (2, 1, 0)])
def test_deconv_exact_gradients(f64, batch_normalize, train, size, stride, pad):
    net = build(net_cfg(f"[deconvolutional]\nfilters=3\nsize={size}\nstride={stride}\n"
                        f"padding={pad}\nbatch_normalize={batch_normalize}\n"
                        "activation=logistic\n\n[convolutional]\nfilters=2\nsize=3\npad=1\n"
                        "activation=linear\n\n[cost]\n", batch=3, c=2, h=3, w=4))
    rng = np.random.default_rng(11)
    randomize(net, rng)
    x = rng.normal(size=(3, 2, 3, 4))
    checked = fd_check(net, x, rng.uniform(size=(3, net.truths)), train=train)
    assert checked == 5 + batch_normalize


def test_deconv_darknet_and_exact_agree_without_batchnorm():
    grads = []
    for gradients in ("darknet", "exact"):
        net = build(net_cfg("[deconv]\nfilters=2\nsize=3\nstride=2\npad=1\nactivation=leaky\n"
                            "\n[cost]\n", c=2, h=3, w=3), gradients=gradients)
        randomize(net, np.random.default_rng(12))
        rng = np.random.default_rng(13)
        net.forward(rng.normal(size=(2, 2, 3, 3)), rng.uniform(size=(2, net.truths)),
                    train=True)
        net.backward()
        grads.append((net.input_delta.copy(), net.layers[0].weight_updates.copy()))
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_deconv_weights_layout_and_round_trip(tmp_path):
    cfg = net_cfg("[deconv]\nfilters=3\nsize=2\nstride=2\nbatch_normalize=1\n"
                  "activation=linear\n", c=2, h=2, w=2)
    net = build(cfg, gradients="darknet")
    rng = np.random.default_rng(14)
    randomize(net, rng)
    layer = net.layers[0]
    assert layer.weights.shape == (2, 3, 2, 2)        # [c][n][k][k]
    assert [name for name, _ in layer.parameters()] == ["biases", "scales", "rolling_mean",
                                                         "rolling_variance", "weights"]
    net.save_weights(tmp_path / "w")
    data = (tmp_path / "w").read_bytes()
    assert len(data) == 20 + 4 * (4 * 3 + 2 * 3 * 2 * 2)
    other = build(cfg, gradients="darknet", seed=5)
    other.load_weights(tmp_path / "w")
    np.testing.assert_array_equal(other.layers[0].weights, layer.weights)
    np.testing.assert_array_equal(other.layers[0].rolling_variance, layer.rolling_variance)


@pytest.mark.parametrize("body,key", [("filters=2\nsize=3\nstride=0", "stride"),
                                      ("filters=2\nsize=2\npadding=3", "padding"),
                                      ("filters=2\nsize=2\nnumload=1", "numload")])
def test_deconv_rejected_configurations(body, key):
    with pytest.raises(CfgError, match=key):
        build(net_cfg(f"[deconvolutional]\n{body}\n", c=2, h=2, w=2))


# ---------------------------------------------------------------------- local

@pytest.mark.parametrize("size,stride,pad", [(3, 1, 1), (3, 2, 1), (2, 1, 0), (3, 2, 0),
                                             (5, 1, 2), (1, 1, 0)])
def test_local_forward_matches_reference(size, stride, pad):
    net = build(net_cfg(f"[local]\nfilters=3\nsize={size}\nstride={stride}\npad={pad}\n"
                        "activation=linear\n", c=2, h=5, w=6), gradients="darknet")
    rng = np.random.default_rng(size + 10 * stride)
    randomize(net, rng)
    layer = net.layers[0]
    x = rng.normal(size=(2, 2, 5, 6)).astype(np.float32)
    out = net.forward(x)
    expected = local_reference(x, layer.weights, layer.biases, size, stride, pad,
                               layer.out_h, layer.out_w)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_local_output_size_follows_darknet():
    net = build(net_cfg("[local]\nfilters=4\nsize=3\nstride=2\npad=1\n", c=2, h=7, w=8))
    layer = net.layers[0]
    assert layer.buffer_shape == (4, 4, 4)              # (h - 1)/stride + 1 with pad
    assert layer.weights.shape == (16, 4, 2 * 9) and layer.biases.shape == (4, 16)
    assert layer.activation.name == "logistic"


@pytest.mark.parametrize("size,stride,pad", [(3, 1, 1), (3, 2, 1), (2, 1, 0)])
def test_local_exact_gradients(f64, size, stride, pad):
    net = build(net_cfg(f"[local]\nfilters=3\nsize={size}\nstride={stride}\npad={pad}\n"
                        "activation=tanh\n\n[local]\nfilters=2\nsize=1\nactivation=linear\n\n"
                        "[cost]\n", c=2, h=4, w=5))
    rng = np.random.default_rng(15)
    randomize(net, rng)
    for layer in net.layers[:2]:
        layer.weights[...] = rng.normal(0, .5, layer.weights.shape)
    x = rng.normal(size=(2, 2, 4, 5))
    assert fd_check(net, x, rng.uniform(size=(2, net.truths))) == 5


def test_local_weights_file_order(tmp_path):
    net = build(net_cfg("[local]\nfilters=2\nsize=1\nactivation=linear\n", c=3, h=1, w=2),
                gradients="darknet")
    biases = np.arange(4) + 100.0
    weights = np.arange(2 * 2 * 3, dtype=float)
    header = np.array([0, 2, 0], "<i4").tobytes() + np.array([0], "<u8").tobytes()
    path = tmp_path / "w"
    path.write_bytes(header + biases.astype("<f4").tobytes() + weights.astype("<f4").tobytes())
    net.load_weights(path)
    layer = net.layers[0]
    np.testing.assert_array_equal(layer.biases.ravel(), biases)
    np.testing.assert_array_equal(layer.weights, weights.reshape(2, 2, 3))
    # location j, filter f: sum_c w[j, f, c] * x[c, j] + biases[f, j]
    x = np.arange(6, dtype=np.float32).reshape(1, 3, 1, 2)
    out = net.forward(x)[0, :, 0, :]
    expected = np.einsum("jfc,cj->fj", weights.reshape(2, 2, 3), x[0, :, 0, :]) + \
        biases.reshape(2, 2)
    np.testing.assert_allclose(out, expected)


@pytest.mark.parametrize("body,key", [("filters=2\nsize=2\npad=1", "pad"),
                                      ("filters=2\nsize=5\npad=1", "pad"),
                                      ("filters=2\nsize=9", "too small")])
def test_local_rejected_configurations(body, key):
    with pytest.raises(CfgError, match=key):
        build(net_cfg(f"[local]\n{body}\n", c=2, h=4, w=4))
