"""Compiled kernels (minidarknet/kernels.py, numba): bit for bit the numbers of the numpy code
they replace, on every geometry that code handles; and the switch between the two."""
import numpy as np
import pytest

from minidarknet import kernels, ops

pytest.importorskip("numba", reason="the compiled kernels need numba (the 'fast' extra)")


@pytest.fixture
def numpy_only(monkeypatch):
    """Run the numpy code paths (what a machine without numba runs)."""
    def use(flag):
        monkeypatch.setattr(kernels, "enabled", lambda: not flag)
    return use


def pool_input(rng, shape, dtype):
    x = rng.normal(size=shape).astype(dtype)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, 5)] = np.nan        # NaN never wins
    flat[rng.integers(0, flat.size, 3)] = -np.inf       # below Darknet's -FLT_MAX start
    x[0, 0, :3, :3] = np.nan                             # a window of NaNs only
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size,stride_y,stride_x,pad,h,w", [
    (2, 2, 2, 0, 8, 10), (2, 2, 2, 1, 7, 9), (2, 1, 1, 1, 6, 6), (3, 2, 2, 2, 9, 8),
    (5, 1, 1, 4, 7, 7), (3, 1, 2, 2, 6, 11), (2, 2, 1, 1, 5, 5), (4, 3, 3, 0, 10, 13),
    (1, 1, 1, 0, 4, 5), (3, 3, 3, 5, 4, 4)])
def test_compiled_max_pool_equals_numpy(size, stride_y, stride_x, pad, h, w, dtype,
                                        numpy_only):
    out_h = ops.c_div(h + pad - size, stride_y) + 1
    out_w = ops.c_div(w + pad - size, stride_x) + 1
    op = ops.PoolOp(3, h, w, size, stride_y, stride_x, pad, out_h, out_w)
    x = pool_input(np.random.default_rng(size * 10 + pad), (2, 3, h, w), dtype)
    numpy_only(True)
    expected = op.max_forward(x, np.empty((2, 3, out_h, out_w), dtype)).copy()
    numpy_only(False)
    got = op.max_forward(x, np.full((2, 3, out_h, out_w), 7, dtype))
    np.testing.assert_array_equal(got, expected)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("c,h,w,n,batch", [(5, 8, 8, 4, 1), (3, 7, 9, 6, 2), (4, 1, 5, 3, 1),
                                            (2, 6, 1, 2, 2)])
def test_compiled_winograd_transforms_equal_numpy(c, h, w, n, batch, numpy_only):
    rng = np.random.default_rng(c + h + w)
    x = rng.normal(size=(batch, c, h, w)).astype(np.float32)
    weights = rng.normal(size=(n, c, 3, 3)).astype(np.float32)
    numpy_only(True)
    expected = ops.WinogradConv(c, h, w, n).forward(x, weights, np.empty((batch, n, h, w),
                                                                         np.float32)).copy()
    numpy_only(False)
    got = ops.WinogradConv(c, h, w, n).forward(x, weights, np.full((batch, n, h, w), 7,
                                                                   np.float32))
    np.testing.assert_array_equal(got, expected)
    reference = ops.ConvOp(c, h, w, n, 3, 1, 1, 1, 1, 1, h, w).forward(
        x, weights, np.empty((batch, n, h, w), np.float32))
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


def test_the_environment_variable_turns_the_kernels_off(monkeypatch):
    monkeypatch.setattr(kernels, "_compiled", None)
    monkeypatch.setenv("MINIDARKNET_KERNELS", "numpy")
    assert not kernels.enabled()
    assert "MINIDARKNET_KERNELS=numpy" in kernels.status()
    monkeypatch.setattr(kernels, "_compiled", None)
    monkeypatch.delenv("MINIDARKNET_KERNELS")
    assert kernels.enabled()
    assert kernels.status().startswith("numba ")


@pytest.mark.parametrize("body,shape", [
    ("batch_normalize=1\nfilters=8\nsize=3\npad=1\nactivation=leaky", (3, 30, 28)),
    ("batch_normalize=1\nfilters=40\nsize=3\npad=1\nactivation=leaky", (64, 5, 5)),
    ("filters=24\nsize=3\npad=1\nbatch_normalize=1\nactivation=leaky", (64, 21, 20)),
    ("filters=6\nsize=1\nactivation=linear", (10, 9, 9)),
    ("filters=6\nsize=3\nstride=2\npad=1\ngroups=2\nactivation=linear", (4, 11, 12))])
def test_compiled_convolution_epilogue_equals_numpy(body, shape, numpy_only):
    """Bias / folded batch norm and leaky or linear in one compiled pass: the same numbers
    on row chunks, filter blocks (scale not folded), Winograd, 1x1 and grouped layers."""
    from test_conv import build, net_cfg, randomize
    c, h, w = shape
    net = build(net_cfg(f"[convolutional]\n{body}\n", batch=2, c=c, h=h, w=w),
                gradients="darknet")
    randomize(net, np.random.default_rng(9))
    x = np.random.default_rng(10).normal(size=(2, c, h, w)).astype(np.float32)
    numpy_only(True)
    expected = net.forward(x).copy()
    numpy_only(False)
    np.testing.assert_array_equal(net.forward(x), expected)


def test_winograd_on_small_maps_only_with_the_compiled_transforms(numpy_only, monkeypatch):
    from test_conv import build, net_cfg, randomize
    net = build(net_cfg("[convolutional]\nfilters=16\nsize=3\npad=1\nactivation=leaky\n",
                        batch=1, c=64, h=13, w=13), gradients="darknet")
    randomize(net, np.random.default_rng(11))
    layer = net.layers[0]
    assert layer.winograd is not None and layer.winograd.needs_kernels
    calls = []
    original = ops.WinogradConv.forward
    monkeypatch.setattr(ops.WinogradConv, "forward",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    x = np.random.default_rng(12).normal(size=(1, 64, 13, 13)).astype(np.float32)
    numpy_only(True)
    im2col = net.forward(x).copy()
    assert calls == []
    numpy_only(False)
    np.testing.assert_allclose(net.forward(x), im2col, rtol=1e-4, atol=1e-4)
    assert calls == [1]
