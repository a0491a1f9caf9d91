"""The [l2norm] layer used on its own (minidarknet.layer), as in NumPyNet's example: build it,
forward an array, read the output, backward a delta; and the standalone-layer API in general."""
import warnings

import numpy as np
import pytest

import minidarknet
from minidarknet import CfgError, DarknetWarning, ShapeError
from minidarknet.layers.l2norm import L2Norm
from conftest import GOLDEN, central_difference, need_shared

F = np.float32


def reference(x, axis="channels", eps=0.0):
    """float64 L2 normalisation of x (B, C, H, W) and its norm."""
    x = x.astype(np.float64)
    dims = (1,) if axis == "channels" else (1, 2, 3)
    norm = np.sqrt((x * x).sum(axis=dims, keepdims=True) + eps)
    safe = np.where(norm == 0, 1, norm)
    return x / safe, safe


def reference_backward(delta, y, norm, axis="channels"):
    dims = (1,) if axis == "channels" else (1, 2, 3)
    return (delta - y * (delta * y).sum(axis=dims, keepdims=True)) / norm


@pytest.fixture
def x():
    return np.random.default_rng(0).uniform(-1, 1, (2, 3, 4, 5)).astype(F)


# ------------------------------------------------------------------ the NumPyNet-style example

def test_numpynet_style_example(x):
    layer = minidarknet.layer("l2norm", x.shape, axis="sample", eps=1e-8, backward="exact")
    out = layer.forward(x)
    assert out.shape == x.shape and out.dtype == F
    y, norm = reference(x, "sample", 1e-8)
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.sqrt((out.astype(np.float64) ** 2).sum(axis=(1, 2, 3))),
                               [1, 1], rtol=1e-5)
    delta = np.random.default_rng(1).normal(0, 1, x.shape).astype(F)
    dx = layer.backward(delta)
    assert dx.shape == x.shape and dx.dtype == F
    np.testing.assert_allclose(dx, reference_backward(delta, y, norm, "sample"), rtol=1e-4,
                               atol=1e-6)
    assert layer.delta is layer.layer.delta and layer.output is out


@pytest.mark.parametrize("axis", ["channels", "sample"])
@pytest.mark.parametrize("eps", [0.0, 0.25])
def test_forward_matches_reference(x, axis, eps):
    layer = minidarknet.layer("l2norm", x.shape, axis=axis, eps=eps)
    y, norm = reference(x, axis, eps)
    np.testing.assert_allclose(layer.forward(x), y, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(layer.scales, (1 - y) / norm, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("axis", ["channels", "sample"])
def test_exact_backward_against_finite_differences(x, axis):
    layer = minidarknet.layer("l2norm", x.shape, axis=axis, eps=0.01, gradients="exact")
    rng = np.random.default_rng(2)
    direction = rng.normal(0, 1, x.shape).astype(F)     # objective = sum(direction * y)
    layer.forward(x)
    dx = layer.backward(-direction)                     # delta = -d objective / dy
    x64 = x.astype(np.float64)
    for index in rng.choice(x.size, 10, replace=False):
        numeric = -central_difference(lambda: (reference(x64, axis, .01)[0] * direction).sum(),
                                      x64, int(index), 1e-6)
        assert dx.reshape(-1)[index] == pytest.approx(numeric, rel=1e-3, abs=1e-5)


def test_darknet_backward_passes_the_delta_through(x):
    layer = minidarknet.layer("l2norm", x.shape)
    assert layer.backward_mode == "darknet"
    layer.forward(x)
    delta = np.full(x.shape, .5, F)
    np.testing.assert_array_equal(layer.backward(delta), delta)


def test_scales_backward_adds_the_scales(x):
    layer = minidarknet.layer("l2norm", x.shape, backward="scales")
    layer.forward(x)
    delta = np.full(x.shape, .5, F)
    np.testing.assert_allclose(layer.backward(delta), delta + layer.scales, rtol=1e-6)


def test_exact_mode_default_is_exact_backward(x):
    assert minidarknet.layer("l2norm", x.shape, gradients="exact").backward_mode == "exact"


def test_backward_calls_are_independent(x):
    layer = minidarknet.layer("l2norm", x.shape, backward="exact")
    layer.forward(x)
    rng = np.random.default_rng(3)
    d1, d2 = rng.normal(0, 1, (2,) + x.shape).astype(F)
    first = layer.backward(d1)
    layer.backward(d2)
    np.testing.assert_array_equal(layer.backward(d1), first)
    np.testing.assert_allclose(layer.backward(d1 + d2), first + layer.backward(d2),
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ zero columns

@pytest.mark.parametrize("mode", ["darknet", "scales", "exact"])
@pytest.mark.parametrize("axis", ["channels", "sample"])
def test_zero_columns_give_zero_not_nan(mode, axis):
    x = np.random.default_rng(4).uniform(-1, 1, (2, 3, 2, 2)).astype(F)
    x[0, :, 1, 1] = 0
    if axis == "sample":
        x[1] = 0
    layer = minidarknet.layer("l2norm", x.shape, axis=axis, backward=mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # no numpy "invalid value" either
        out = layer.forward(x)
        dx = layer.backward(np.ones_like(x))
    assert np.isfinite(out).all() and np.isfinite(layer.scales).all() and np.isfinite(dx).all()
    zero = (x == 0) if axis == "channels" else np.broadcast_to(x[1:2] == 0, x.shape)
    if axis == "channels":
        np.testing.assert_array_equal(out[0, :, 1, 1], 0)
        np.testing.assert_array_equal(layer.scales[0, :, 1, 1], 1)
    else:
        np.testing.assert_array_equal(out[1], 0)
    assert zero.any()


def test_all_zero_input():
    layer = minidarknet.layer("l2norm", (1, 4))
    np.testing.assert_array_equal(layer.forward(np.zeros((1, 4), F)), np.zeros((1, 4)))


# ------------------------------------------------------------------ shapes

def test_vector_input_is_normalised_as_channels():
    # (batch, n) is n channels of 1x1, as after a [connected] layer.
    layer = minidarknet.layer(L2Norm, (2, 4))
    out = layer.forward(np.array([[3, 4, 0, 0], [1, 1, 1, 1]], F))
    np.testing.assert_allclose(out.reshape(2, 4), [[.6, .8, 0, 0], [.5, .5, .5, .5]])


def test_after_softmax_nothing_is_normalised():
    # Darknet's softmax has no image shape (out_c = 0): l2norm then copies its input.
    net = minidarknet.loads("[net]\nbatch=1\ninputs=4\n[softmax]\n[l2norm]\n")
    p = net.forward(np.array([[1, 2, 3, 4]], F))
    np.testing.assert_allclose(p.sum(), 1, rtol=1e-6)
    np.testing.assert_array_equal(net.layers[1].output, net.layers[0].output)


def test_batch_can_change_between_calls(x):
    layer = minidarknet.layer("l2norm", x.shape)
    one = layer.forward(x[:1]).copy()
    both = layer.forward(x)
    np.testing.assert_array_equal(both[:1], one)
    assert layer.batch == 2


def test_golden_l2norm_only():
    folder = need_shared(GOLDEN / "l2norm_only")
    expected = np.load(folder / "expected.npz")
    x = np.fromfile(folder / "input.f32", "<f4").reshape(2, 3, 4, 5)
    layer = minidarknet.layer("l2norm", x.shape)
    out = layer.forward(x)
    for got, key in ((out, "layer00_output"), (layer.scales, "layer00_scales")):
        want = expected[key]
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max() + 1e-6, key


# ------------------------------------------------------------------ standalone API, any layer

def test_standalone_connected():
    conn = minidarknet.layer("connected", (2, 3), output=2, activation="linear", seed=1)
    conn.weights[...] = [[1, 2, 3], [0, -1, 1]]
    conn.biases[...] = [.5, 0]
    x = np.array([[1, 1, 1], [2, 0, 1]], F)
    np.testing.assert_allclose(conn.forward(x).reshape(2, 2), [[6.5, 0], [5.5, 1]])
    dx = conn.backward(np.array([[1, 0], [0, 1]], F))
    np.testing.assert_allclose(dx, [[1, 2, 3], [0, -1, 1]])
    np.testing.assert_allclose(conn.weight_updates, [[1, 1, 1], [2, 0, 1]])
    np.testing.assert_allclose(conn.bias_updates, [1, 1])
    conn.update(.1, momentum=0, decay=0)          # b += lr/batch * updates
    np.testing.assert_allclose(conn.biases, [.55, .05], rtol=1e-6)


def test_standalone_softmax_as_a_loss():
    soft = minidarknet.layer("soft", (1, 3), groups=1, temperature=2.0)
    p = soft.forward(np.array([[0, 2, 4]], F), truth=np.array([[0, 0, 1]], F))
    z = np.exp(np.array([0, 1, 2]) - 2.0)
    np.testing.assert_allclose(p.ravel(), z / z.sum(), rtol=1e-6)
    assert soft.cost == pytest.approx(-np.log(p.ravel()[2]), rel=1e-6)
    # Darknet: the loss delta truth - p passes through unchanged
    np.testing.assert_allclose(soft.backward().ravel(), [0, 0, 1] - p.ravel(), rtol=1e-6)
    np.testing.assert_allclose(soft.backward().ravel(), [0, 0, 1] - p.ravel(), rtol=1e-6)


@pytest.mark.parametrize("kind,keys,check", [
    ("activation", {"activation": "relu"}, lambda x, y: np.maximum(x, 0)),
    ("logistic", {}, lambda x, y: 1 / (1 + np.exp(-x))),
    ("avgpool", {}, lambda x, y: x.mean(axis=(2, 3), keepdims=True)),
    ("dropout", {"probability": .5}, lambda x, y: x),            # inference: identity
    ("batchnorm", {}, lambda x, y: x / (1 + 1e-6)),              # rolling mean 0, variance 1
])
def test_standalone_other_layer_types(kind, keys, check):
    x = np.random.default_rng(5).normal(0, 1, (2, 3, 2, 2)).astype(F)
    layer = minidarknet.layer(kind, x.shape, **keys)
    if kind == "batchnorm":
        layer.rolling_variance[...] = 1
    out = layer.forward(x)
    np.testing.assert_allclose(out, check(x, out), rtol=1e-5, atol=1e-6)
    dx = layer.backward(np.ones(out.shape, F))
    assert dx.shape == x.shape and np.isfinite(dx).all()


def test_standalone_dropout_in_training():
    x = np.ones((2, 50), F)
    drop = minidarknet.layer("dropout", x.shape, probability=.5, seed=3)
    out = drop.forward(x, train=True).reshape(2, 50)
    assert set(np.unique(out)) == {0, 2}
    dx = drop.backward(np.ones((2, 50), F))
    np.testing.assert_array_equal(dx.reshape(2, 50), out)


def test_keys_are_checked_like_cfg_keys():
    with pytest.raises(CfgError, match=r"axis=rows"):
        minidarknet.layer("l2norm", (1, 3), axis="rows")
    with pytest.raises(CfgError, match=r"output=many"):
        minidarknet.layer("connected", (1, 3), output="many")
    with pytest.raises(CfgError, match=r"unknown section type \[l3norm\]"):
        minidarknet.layer("l3norm", (1, 3))
    with pytest.warns(DarknetWarning, match=r"unused key 'axes=sample' in \[l2norm\]"):
        minidarknet.layer("l2norm", (1, 3), axes="sample")
    with pytest.raises(ValueError, match="cfg file"):
        minidarknet.layer("l2norm", (1, 3), axis="sample\n[net]")


def test_python_values_become_cfg_values():
    layer = minidarknet.layer("connected", (1, 3), output=4, batch_normalize=True,
                              activation="leaky")
    assert layer.batch_normalize == 1 and layer.outputs == 4


def test_shape_errors():
    with pytest.raises(ShapeError):
        minidarknet.layer("l2norm", (3, 4, 5))
    layer = minidarknet.layer("l2norm", (2, 3, 4, 5))
    with pytest.raises(ShapeError):
        layer.forward(np.zeros((2, 3, 4, 4), F))
    layer.forward(np.ones((2, 3, 4, 5), F))
    with pytest.raises(ShapeError):
        layer.backward(np.ones((2, 3), F))


def test_backward_before_forward():
    with pytest.raises(RuntimeError):
        minidarknet.layer("l2norm", (1, 3)).backward(np.ones((1, 3), F))


def test_repr():
    assert "l2norm" in repr(minidarknet.layer("l2norm", (2, 3, 4, 5)))
