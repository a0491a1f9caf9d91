"""XNOR convolutions (minidarknet/layers/xnor.py) against direct references written here:
pjreddie's float path (+-mean|w| per filter, +-1 inputs, zero padding) and AlexeyAB's
bit-packed inference (BN folded first, padding as -1, bin_output -> linear)."""
import warnings

import numpy as np
import pytest

import minidarknet
from minidarknet.errors import CfgError, DarknetWarning

F32 = np.float32


def net_text(body, c=3, h=5, w=4, batch=1):
    return f"[net]\nbatch={batch}\nwidth={w}\nheight={h}\nchannels={c}\n\n{body}"


def build(text, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DarknetWarning)
        return minidarknet.loads(text, seed=0, **options)


def conv_reference(x, w, bias, pad, pad_value, stride=1):
    """Plain cross-correlation in float64 with a constant padding value."""
    b, c, h, wd = x.shape
    n, _, k, _ = w.shape
    xp = np.full((b, c, h + 2 * pad, wd + 2 * pad), pad_value, np.float64)
    xp[:, :, pad:pad + h, pad:pad + wd] = x
    oh = (h + 2 * pad - k) // stride + 1
    ow = (wd + 2 * pad - k) // stride + 1
    out = np.zeros((b, n, oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = np.einsum("bckl,nckl->bn", window, w)
    return out + np.asarray(bias, np.float64)[None, :, None, None]


def binary_weights(w):
    means = np.abs(w).reshape(len(w), -1).mean(axis=1)
    return np.where(w > 0, 1.0, -1.0) * means[:, None, None, None]


def sample(rng, shape):
    x = rng.normal(0, 1, shape).astype(F32)
    x.flat[::7] = 0          # zeros binarise to -1 (inputs) and -mean (weights)
    return x


def leaky(v):
    return np.where(v > 0, v, 0.1 * v)


def test_float_path_is_pjreddies_binarised_convolution():
    net = build(net_text("[convolutional]\nxnor=1\nfilters=2\nsize=3\npad=1\n"
                         "activation=linear\n"))
    layer = net.layers[0]
    rng = np.random.default_rng(1)
    layer.weights[...] = sample(rng, layer.weights.shape)
    layer.biases[...] = [.5, -.25]
    x = sample(rng, (1, 3, 5, 4))
    out = net.forward(x)
    xb = np.where(x > 0, 1.0, -1.0)
    expected = conv_reference(xb, binary_weights(layer.weights), layer.biases, 1, 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_float_path_with_batch_norm_at_inference():
    net = build(net_text("[convolutional]\nxnor=1\nbatch_normalize=1\nfilters=2\nsize=3\n"
                         "stride=2\npad=1\nactivation=leaky\n"))
    layer = net.layers[0]
    rng = np.random.default_rng(2)
    layer.weights[...] = sample(rng, layer.weights.shape)
    layer.scales[...] = [1.5, .5]
    layer.biases[...] = [.1, -.2]
    layer.rolling_mean[...] = [.3, -1]
    layer.rolling_variance[...] = [4, .25]
    x = sample(rng, (1, 3, 5, 4))
    out = net.forward(x)
    pre = conv_reference(np.where(x > 0, 1.0, -1.0), binary_weights(layer.weights), [0, 0],
                         1, 0.0, stride=2)
    mean, var = layer.rolling_mean[:, None, None], layer.rolling_variance[:, None, None]
    bn = (layer.scales[:, None, None] * (pre - mean) / (np.sqrt(var) + 1e-6)
          + layer.biases[:, None, None])
    np.testing.assert_allclose(out, leaky(bn), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bin_output", [0, 1])
def test_bits_path_folds_batch_norm_pads_with_minus_one(bin_output):
    net = build(net_text(f"[convolutional]\nxnor=1\nbin_output={bin_output}\nbatch_normalize=1"
                         f"\nfilters=3\nsize=3\npad=1\nactivation=leaky\nxnor_path=bits\n"))
    layer = net.layers[0]
    rng = np.random.default_rng(3)
    layer.weights[...] = sample(rng, layer.weights.shape)
    layer.scales[...] = [1.5, -.5, 2]       # a negative scale flips the binarised signs
    layer.biases[...] = [.1, -.2, .3]
    layer.rolling_mean[...] = [.3, -1, 0]
    layer.rolling_variance[...] = [4, .25, 1]
    x = sample(rng, (1, 3, 5, 4))
    out = net.forward(x).copy()         # (forward returns a view of the output buffer)
    factor = layer.scales / np.sqrt(layer.rolling_variance.astype(np.float64) + 1e-5)
    folded = layer.weights * factor[:, None, None, None]
    bias = layer.biases - factor * layer.rolling_mean
    expected = conv_reference(np.where(x > 0, 1.0, -1.0), binary_weights(folded), bias, 1,
                              -1.0)
    if not bin_output:
        expected = leaky(expected)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # The float path of the same layer pads with 0 and does not fold: different numbers.
    layer.xnor_path = "float"
    assert not np.allclose(net.forward(x), out)


def test_bits_path_computes_every_image_of_a_batch():
    text = net_text("[convolutional]\nxnor=1\nfilters=2\nsize=3\npad=1\nactivation=linear\n"
                    "xnor_path=bits\n", batch=2)
    net = build(text)
    x = sample(np.random.default_rng(4), (2, 3, 5, 4))
    both = net.forward(x).copy()
    single = build(text.replace("batch=2", "batch=1"))
    single.layers[0].weights[...] = net.layers[0].weights
    np.testing.assert_allclose(both[1:], single.forward(x[1:]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("body,key", [
    ("xnor=1\nxnor_path=bits\nfilters=2\nsize=3\nstride_x=2\nstride_y=1\npad=1", "xnor_path"),
    ("xnor=1\nxnor_path=bits\nfilters=2\nsize=1", "xnor_path"),        # 3 channels, size 1
    ("xnor=1\nxnor_path=bits\nfilters=2\nsize=3\npad=1\ndilation=2", "xnor_path"),
    ("xnor=1\nxnor_path=fast\nfilters=2\nsize=3", "xnor_path"),
    ("xnor=1\nfilters=2\nsize=3\ngroups=3\nchannels=3", "groups"),
])
def test_bits_path_limits_are_errors(body, key):
    with pytest.raises(CfgError) as info:
        build(net_text(f"[convolutional]\n{body}\nactivation=linear\n", c=6 if "groups" in body
                       else 3, h=8, w=8))
    assert f"{key}=" in str(info.value) and "\n" not in str(info.value)


def test_binary_alone_is_ignored_on_the_cpu_with_a_warning():
    plain = build(net_text("[convolutional]\nfilters=2\nsize=3\npad=1\nactivation=linear\n"))
    with pytest.warns(DarknetWarning, match="binary=1 acts only on Darknet's GPU"):
        binary = minidarknet.loads(net_text("[convolutional]\nbinary=1\nfilters=2\nsize=3\n"
                                            "pad=1\nactivation=linear\n"), seed=0)
    binary.layers[0].weights[...] = plain.layers[0].weights
    x = sample(np.random.default_rng(5), (1, 3, 5, 4))
    np.testing.assert_array_equal(binary.forward(x), plain.forward(x))


def test_darknet_backward_is_straight_through_on_real_weights():
    """Darknet's CPU backward of an xnor layer uses the real weights and input: with a linear
    activation its weight updates and input delta are a plain convolution's."""
    body = "filters=2\nsize=3\npad=1\nactivation=linear\n"
    xnor_net = build(net_text("[convolutional]\nxnor=1\n" + body))
    plain = build(net_text("[convolutional]\n" + body))
    rng = np.random.default_rng(6)
    plain.layers[0].weights[...] = xnor_net.layers[0].weights
    x = sample(rng, (1, 3, 5, 4))
    delta = rng.normal(0, 1, (1, 2, 5, 4)).astype(F32)
    for net in (xnor_net, plain):
        net.forward(x, train=True)
        net.backward(delta)
    np.testing.assert_allclose(xnor_net.layers[0].weight_updates,
                               plain.layers[0].weight_updates, rtol=1e-6)
    np.testing.assert_allclose(xnor_net.input_delta, plain.input_delta, rtol=1e-6)
    assert not np.allclose(xnor_net.layers[0].output, plain.layers[0].output)


def test_exact_gradients_are_refused():
    net = build(net_text("[convolutional]\nxnor=1\nfilters=2\nsize=3\npad=1\n"
                         "activation=linear\n"), gradients="exact")
    net.forward(np.ones((1, 3, 5, 4), F32), train=True)
    with pytest.raises(CfgError, match="xnor=1: the sign binarisation has no exact gradient"):
        net.backward(np.ones((1, 2, 5, 4), F32))
