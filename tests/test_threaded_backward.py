"""Threaded backward passes and updates (issue 11): the convolution backward split over threads
against a float64 reference and deterministic for a given thread count, whatever the split
(whole samples, row chunks, samples shared by threads, 1x1 overwrite/accumulate, groups);
batch norm over channel blocks and the sliced SGD step against the serial code; the compiled
max-pool training kernels bit for bit the numpy code; a whole threaded training step against
the serial one."""
import numpy as np
import pytest

from minidarknet import kernels, ops, parallel
from minidarknet.fork import resolve_fork
from minidarknet.layers import base, batchnorm

from test_conv import build, net_cfg, randomize

GEOMETRIES = {     # c, h, w, n, k, stride, pad, groups
    "3x3-pad": (4, 11, 9, 6, 3, 1, 1, 1),
    "3x3-stride2": (3, 12, 10, 5, 3, 2, 1, 1),
    "3x3-nopad": (4, 9, 8, 4, 3, 1, 0, 1),
    "groups": (6, 8, 8, 6, 3, 1, 1, 3),
    "1x1": (8, 7, 6, 5, 1, 1, 0, 1),
}


def reference(x, dy, w, k, stride, pad, groups):
    """(dW, dX) of a grouped convolution in float64, by direct sums."""
    x, dy, w = (a.astype(np.float64) for a in (x, dy, w))
    batch, c, h, width = x.shape
    n, cg = w.shape[:2]
    m = n // groups
    out_h, out_w = dy.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad + k), (pad, pad + k)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for g in range(groups):
        cs, fs = slice(g * cg, (g + 1) * cg), slice(g * m, (g + 1) * m)
        for ky in range(k):
            for kx in range(k):
                win = xp[:, cs, ky:ky + stride * out_h:stride, kx:kx + stride * out_w:stride]
                dw[fs, :, ky, kx] = np.einsum("bfyx,bcyx->fc", dy[:, fs], win)
                dxp[:, cs, ky:ky + stride * out_h:stride, kx:kx + stride * out_w:stride] += \
                    np.einsum("bfyx,fc->bcyx", dy[:, fs], w[fs, :, ky, kx])
    return dw, dxp[:, :, pad:pad + h, pad:pad + width]


def conv_op(c, h, w, n, k, stride, pad, groups):
    out_h = (h + 2 * pad - k) // stride + 1
    out_w = (w + 2 * pad - k) // stride + 1
    return ops.ConvOp(c, h, w, n, k, stride, stride, pad, 1, groups, out_h, out_w)


def run_backward(op, x, dy, w, threads, overwrite=False, start=None):
    wu = np.full(w.shape, 0.25, np.float32)
    dx = np.full(x.shape, 0.5, np.float32) if start is None else start.copy()
    op.backward(x, dy, w, wu, dx, overwrite=overwrite, threads=threads)
    return wu, dx


@pytest.mark.parametrize("name", GEOMETRIES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("chunks", ["samples", "rows"])
def test_threaded_convolution_backward(name, batch, chunks, monkeypatch):
    c, h, w, n, k, stride, pad, groups = GEOMETRIES[name]
    monkeypatch.setattr(ops, "PARALLEL_MIN_FLOPS", 0)
    if chunks == "rows":        # the forward's row chunks, several per sample
        monkeypatch.setattr(ops, "BACKWARD_CHUNK_BYTES", 0)
        monkeypatch.setattr(ops, "CHUNK_BYTES", 400)
        monkeypatch.setattr(ops, "MIN_CHUNK_COLS", 8)
    op = conv_op(c, h, w, n, k, stride, pad, groups)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(batch, c, h, w)).astype(np.float32)
    dy = rng.normal(size=(batch, n, op.out_h, op.out_w)).astype(np.float32)
    weights = rng.normal(size=(n, c // groups, k, k)).astype(np.float32)
    dw_ref, dx_ref = reference(x, dy, weights, k, stride, pad, groups)
    for threads in (1, 2, 3):
        wu, dx = run_backward(op, x, dy, weights, threads)
        np.testing.assert_allclose(wu, 0.25 + dw_ref, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(dx, 0.5 + dx_ref, rtol=1e-5, atol=1e-4)
        again = run_backward(op, x, dy, weights, threads)
        np.testing.assert_array_equal(again[0], wu)          # deterministic
        np.testing.assert_array_equal(again[1], dx)
    if k == 1:      # Darknet's 1x1 overwrite: dx replaced, not accumulated
        for threads in (1, 2):
            _, dx = run_backward(op, x, dy, weights, threads, overwrite=True)
            np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-4)


def test_weight_gradient_alone_and_input_gradient_alone(monkeypatch):
    monkeypatch.setattr(ops, "PARALLEL_MIN_FLOPS", 0)
    op = conv_op(*GEOMETRIES["3x3-pad"])
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 11, 9)).astype(np.float32)
    dy = rng.normal(size=(2, 6, op.out_h, op.out_w)).astype(np.float32)
    weights = rng.normal(size=(6, 4, 3, 3)).astype(np.float32)
    dw_ref, dx_ref = reference(x, dy, weights, 3, 1, 1, 1)
    wu = np.zeros_like(weights)
    op.backward(x, dy, weights, wu, None, threads=2)
    np.testing.assert_allclose(wu, dw_ref, rtol=1e-5, atol=1e-4)
    dx = np.zeros_like(x)
    op.backward(None, dy, weights, None, dx, threads=2)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fork", ["pjreddie", "alexeyab"])
@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_over_channel_blocks_equals_the_serial_code(train, fork, monkeypatch):
    monkeypatch.setattr(ops, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "worker_threads", lambda: 3)
    rng = np.random.default_rng(4)
    values = rng.normal(1, 2, size=(4, 7, 30)).astype(np.float32)
    delta = rng.normal(size=values.shape).astype(np.float32)

    class Holder:
        exact = False

    Holder.fork = resolve_fork(fork)

    layers = []
    for split in (False, True):
        layer = Holder()
        batchnorm.init_bn(layer, 7)
        layer.biases = np.linspace(-1, 1, 7, dtype=np.float32)
        layer.bias_updates = np.zeros(7, np.float32)
        layer.scales[:] = np.linspace(.5, 1.5, 7, dtype=np.float32)
        layer.rolling_variance[:] = 1
        out, d = values.copy(), delta.copy()
        with parallel.region():
            assert parallel.workers() == 3
            (batchnorm.bn_forward_split if split else batchnorm.bn_forward)(layer, out, train)
            (batchnorm.bn_backward_split if split else batchnorm.bn_backward)(layer, d, train)
        layers.append((layer, out, d))
    (a, out_a, d_a), (b, out_b, d_b) = layers
    np.testing.assert_allclose(out_b, out_a, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(d_b, d_a, rtol=1e-5, atol=1e-6)
    for name in ("mean", "variance", "rolling_mean", "rolling_variance", "scale_updates",
                 "bias_updates"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_sgd_step_equals_darknets_update(monkeypatch):
    monkeypatch.setattr(ops, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(parallel, "worker_threads", lambda: 2)
    monkeypatch.setattr(base, "UPDATE_PIECE", 1000)
    rng = np.random.default_rng(5)
    weights = rng.normal(size=(37, 5, 3, 3)).astype(np.float32)
    updates = rng.normal(size=weights.shape).astype(np.float32)
    lr, decay_batch, momentum = np.float32(.01 / 8), np.float32(.0005 * 8), np.float32(.9)
    w_ref, u_ref = weights.copy(), updates.copy()
    u_ref -= decay_batch * w_ref
    w_ref += lr * u_ref
    u_ref *= momentum
    with parallel.region():
        base.sgd_step(weights, updates, lr, decay_batch, momentum)
    np.testing.assert_array_equal(weights, w_ref)
    np.testing.assert_array_equal(updates, u_ref)


@pytest.mark.parametrize("size,stride,pad,h,w", [
    (2, 2, 0, 8, 10), (2, 2, 1, 7, 9), (2, 1, 1, 6, 6), (3, 2, 2, 9, 8), (3, 1, 2, 7, 5),
    (3, 3, 5, 4, 4), (1, 1, 0, 4, 5)])
def test_compiled_max_pool_training_equals_numpy(size, stride, pad, h, w, monkeypatch):
    pytest.importorskip("numba", reason="the compiled kernels need numba (the 'fast' extra)")
    from test_kernels import pool_input
    out_h = ops.c_div(h + pad - size, stride) + 1
    out_w = ops.c_div(w + pad - size, stride) + 1
    op = ops.PoolOp(3, h, w, size, stride, stride, pad, out_h, out_w)
    rng = np.random.default_rng(size * 10 + pad)
    x = pool_input(rng, (2, 3, h, w), np.float32)
    dy = rng.normal(size=(2, 3, out_h, out_w)).astype(np.float32)
    dx0 = rng.normal(size=x.shape).astype(np.float32)
    results = []
    for compiled in (False, True):
        monkeypatch.setattr(kernels, "enabled", lambda c=compiled: c)
        out = np.full((2, 3, out_h, out_w), 7, np.float32)
        arg = np.full(out.shape, 9, np.int8)
        op.max_argmax(x, out, arg)
        dx = dx0.copy()
        op.max_backward(arg, dy, dx)
        results.append((out, arg, dx))
    for expected, got in zip(*results):
        np.testing.assert_array_equal(got, expected)


def test_threaded_training_step_equals_the_serial_one(monkeypatch):
    monkeypatch.setattr(ops, "PARALLEL_MIN_FLOPS", 0)
    monkeypatch.setattr(ops, "PARALLEL_MIN_BYTES", 0)
    text = net_cfg("[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\n"
                   "activation=leaky\n\n[maxpool]\nsize=2\nstride=2\n\n"
                   "[convolutional]\nfilters=6\nsize=1\nactivation=leaky\n\n"
                   "[route]\nlayers=-1,-2\n\n[convolutional]\nbatch_normalize=1\nfilters=4\n"
                   "size=3\npad=1\nactivation=leaky\n\n[avgpool]\n\n[softmax]\n",
                   batch=3, w=12, h=10, c=3)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 3, 10, 12)).astype(np.float32)
    truth = np.eye(4, dtype=np.float32)[[0, 2, 3]]
    nets = []
    for threads in ("1", "3"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        net = build(text, gradients="darknet")
        randomize(net, np.random.default_rng(1))
        costs = [net.train_step(x, truth) for _ in range(3)]
        nets.append((net, costs))
    (serial, costs_s), (threaded, costs_t) = nets
    np.testing.assert_allclose(costs_t, costs_s, rtol=1e-5)
    for a, b in zip(serial.layers, threaded.layers):
        for name, array in a.parameters():
            other = dict(b.parameters())[name]
            tol = 1e-4 * np.abs(array).max() + 1e-6
            assert np.abs(other - array).max() <= tol, f"layer {a.index} {name}"
