"""[maxpool] and [local_avgpool]: Darknet's window geometry and tie rules (spec sections 3.5
and 10, golden README quirk 8) against a literal port of the C loops, backward routing,
finite-difference checks of the exact gradients, AlexeyAB's extras."""
import numpy as np
import pytest

from minidarknet.errors import CfgError

from test_conv import build, fd_check, net_cfg, randomize

FLT_MAX = np.finfo(np.float32).max


def c_loops_maxpool(x, size, stride_y, stride_x, pad):
    """maxpool_layer.c forward as written: returns output and flat argmax indexes."""
    b_, c_, h, w = x.shape
    out_h = int((h + pad - size) / stride_y) + 1
    out_w = int((w + pad - size) / stride_x) + 1
    offset = -int(pad / 2)
    out = np.zeros((b_, c_, out_h, out_w), np.float32)
    idx = np.zeros(out.shape, int)
    flat = x.reshape(-1)
    for b in range(b_):
        for k in range(c_):
            for i in range(out_h):
                for j in range(out_w):
                    best, best_i = -FLT_MAX, -1
                    for n in range(size):
                        for m in range(size):
                            cur_h, cur_w = offset + i * stride_y + n, offset + j * stride_x + m
                            index = cur_w + w * (cur_h + h * (k + b * c_))
                            valid = 0 <= cur_h < h and 0 <= cur_w < w
                            val = flat[index] if valid else -FLT_MAX
                            if val > best:
                                best, best_i = val, index
                    out[b, k, i, j] = best
                    idx[b, k, i, j] = best_i
    return out, idx


def c_loops_local_avgpool(x, size, stride_y, stride_x, pad):
    b_, c_, h, w = x.shape
    out_h = int((h + pad - size) / stride_y) + 1
    out_w = int((w + pad - size) / stride_x) + 1
    offset = -int(pad / 2)
    out = np.zeros((b_, c_, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            ys = [offset + i * stride_y + n for n in range(size)]
            xs = [offset + j * stride_x + m for m in range(size)]
            ys = [y for y in ys if 0 <= y < h]
            xs = [v for v in xs if 0 <= v < w]
            out[:, :, i, j] = x[:, :, ys][:, :, :, xs].mean(axis=(2, 3))
    return out


def pool_net(kind, body, c=2, h=3, w=3, batch=1, gradients="darknet", tail=""):
    return build(net_cfg(f"[{kind}]\n{body}\n{tail}", batch=batch, c=c, h=h, w=w),
                 gradients=gradients)


# ---------------------------------------------------------------------- spec section 10

def ramp3x3():
    return np.arange(1, 10, dtype=np.float32).reshape(1, 1, 3, 3)


def test_2x2_stride1_keeps_size_and_reads_past_the_edge():
    net = pool_net("maxpool", "size=2\nstride=1", c=1)
    out = net.forward(ramp3x3())
    np.testing.assert_array_equal(out[0, 0], [[5, 6, 6], [8, 9, 9], [8, 9, 9]])


def test_2x2_stride2_on_odd_size_rounds_up():
    net = pool_net("maxpool", "size=2\nstride=2", c=1)
    out = net.forward(ramp3x3())
    np.testing.assert_array_equal(out[0, 0], [[5, 6], [8, 9]])


def test_negative_inputs_never_lose_to_the_border():
    net = pool_net("maxpool", "size=3\nstride=1", c=1)       # padding 2: offset -1
    x = -ramp3x3() - 100
    out = net.forward(x)
    expected, _ = c_loops_maxpool(x, 3, 1, 1, 2)
    np.testing.assert_array_equal(out, expected)
    assert out.max() == -101 and out.min() == -105


def test_first_maximum_wins_ties_and_backward_adds_into_it():
    net = pool_net("maxpool", "size=2\nstride=2", c=1, h=4, w=4, tail="\n[cost]\n")
    x = np.ones((1, 1, 4, 4), np.float32)
    net.forward(x, truth=np.zeros((1, 4)), train=True)
    net.layers[0].delta[...] = [[[[1, 2], [3, 4]]]]
    net.layers[1].backward = lambda n: None      # keep the hand-set delta
    net.backward()
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 2] = 1, 2, 3, 4
    np.testing.assert_array_equal(net.input_delta[0, 0], expected)


def test_overlapping_windows_accumulate_in_backward():
    net = pool_net("maxpool", "size=2\nstride=1", c=1, tail="\n[cost]\n")
    net.forward(ramp3x3(), truth=np.zeros((1, 9)), train=True)
    net.layers[0].delta[...] = 1
    net.layers[1].backward = lambda n: None
    net.backward()
    # 9 is the max of four windows, 6 and 8 of two each, 5 of one.
    np.testing.assert_array_equal(net.input_delta[0, 0], [[0, 0, 0], [0, 1, 2], [0, 2, 4]])


def test_nan_never_wins():
    net = pool_net("maxpool", "size=2\nstride=2", c=1, h=2, w=2)
    out = net.forward(np.array([[[[np.nan, 1], [3, 2]]]], np.float32))
    assert out.ravel()[0] == 3
    out = net.forward(np.full((1, 1, 2, 2), np.nan, np.float32))
    assert out.ravel()[0] == -FLT_MAX


@pytest.mark.parametrize("size,stride,padding", [
    (2, 2, None), (2, 1, None), (3, 1, None), (3, 2, None), (3, 2, 0), (4, 3, 1), (1, 1, 0),
    (5, 1, 4), (2, 3, 2), (3, 3, 5),
])
def test_maxpool_matches_the_c_loops(size, stride, padding):
    body = f"size={size}\nstride={stride}" + (f"\npadding={padding}" if padding is not None
                                              else "")
    net = pool_net("maxpool", body, c=3, h=7, w=8, batch=2, tail="\n[cost]\n")
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.integers(-3, 4, (2, 3, 7, 8)).astype(np.float32)     # many ties
    pad = size - 1 if padding is None else padding
    expected, idx = c_loops_maxpool(x, size, stride, stride, pad)
    np.testing.assert_array_equal(net.forward(x), expected)            # inference path
    with np.errstate(over="ignore"):         # the cost of -FLT_MAX outputs overflows
        net.forward(x, truth=np.zeros((2, net.truths)), train=True)
    np.testing.assert_array_equal(net.layers[0].output, expected)
    dy = rng.normal(size=expected.shape).astype(np.float32)
    net.layers[0].delta[...] = dy
    net.layers[1].backward = lambda n: None
    net.backward()
    routed = np.zeros(x.size)
    inside = idx.ravel() >= 0                 # a window wholly outside the input routes nowhere
    np.add.at(routed, idx.ravel()[inside], dy.ravel()[inside])
    np.testing.assert_allclose(net.input_delta.ravel(), routed, rtol=1e-6, atol=1e-6)


def test_backward_after_an_inference_forward_recomputes_the_argmax():
    net = pool_net("maxpool", "size=3\nstride=2", c=2, h=7, w=7, batch=2, tail="\n[cost]\n")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 2, 7, 7)).astype(np.float32)
    net.forward(x, truth=np.zeros((2, net.truths)), train=True)
    net.backward()
    trained = net.input_delta.copy()
    net.forward(x, truth=np.zeros((2, net.truths)))
    net.input_delta = None
    net.backward()
    np.testing.assert_array_equal(net.input_delta, trained)


def test_stride_x_and_stride_y():
    net = pool_net("maxpool", "size=2\nstride=2\nstride_x=1", c=2, h=6, w=5, batch=2)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 2, 6, 5)).astype(np.float32)
    expected, _ = c_loops_maxpool(x, 2, 2, 1, 1)
    np.testing.assert_array_equal(net.forward(x), expected)
    assert net.layers[0].describe()[1] == "2 x 2 / 1x2"


def test_maxpool_depth_takes_the_max_over_channel_groups():
    net = pool_net("maxpool", "maxpool_depth=1\nout_channels=2", c=5, h=2, w=3,
                   tail="\n[cost]\n")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 5, 2, 3)).astype(np.float32)
    x[0, 2] = x[0, 0]                                    # a tie: channel 0 wins
    out = net.forward(x, truth=np.zeros((1, 12)), train=True)
    np.testing.assert_array_equal(out[0, 0], np.max(x[0, [0, 2, 4]], axis=0))
    np.testing.assert_array_equal(out[0, 1], np.max(x[0, [1, 3]], axis=0))
    net.layers[0].delta[...] = 1
    net.layers[1].backward = lambda n: None
    net.backward()
    winners = np.zeros_like(x)
    for g, group in ((0, [0, 2, 4]), (1, [1, 3])):
        first = np.argmax(x[0, group], axis=0)
        for y in range(2):
            for v in range(3):
                winners[0, group[first[y, v]], y, v] = 1
    np.testing.assert_array_equal(net.input_delta, winners)


@pytest.mark.parametrize("body,key", [
    ("size=2\nstride=2\nantialiasing=1", "antialiasing"),
    ("size=2\nstride=0", "stride"),
    ("size=2\npadding=-1", "padding"),
    ("size=9\npadding=0", "too small"),
])
def test_maxpool_rejected_configurations(body, key):
    with pytest.raises(CfgError, match=key):
        pool_net("maxpool", body)


def test_maxpool_describe_and_defaults():
    net = pool_net("max", "stride=2", c=4, h=6, w=6)
    layer = net.layers[0]
    assert (layer.size, layer.padding) == (2, 1)
    assert layer.describe() == ("", "2 x 2 / 2", "6 x 6 x 4", "3 x 3 x 4")


# ---------------------------------------------------------------------- local_avgpool

@pytest.mark.parametrize("size,stride,padding", [(2, 2, None), (3, 1, None), (3, 2, 2),
                                                 (4, 2, 3), (2, 1, 0)])
def test_local_avgpool_averages_the_cells_inside(size, stride, padding):
    body = f"size={size}\nstride={stride}" + (f"\npadding={padding}" if padding is not None
                                              else "")
    net = pool_net("local_avgpool", body, c=2, h=5, w=6, batch=2)
    x = np.random.default_rng(6).normal(size=(2, 2, 5, 6)).astype(np.float32)
    pad = size - 1 if padding is None else padding
    np.testing.assert_allclose(net.forward(x), c_loops_local_avgpool(x, size, stride, stride,
                                                                     pad),
                               rtol=1e-6, atol=1e-6)


def test_local_avgpool_darknet_backward_divides_by_size_squared():
    dark = pool_net("local_avg", "size=2\nstride=1", c=1, tail="\n[cost]\n")
    exact = pool_net("local_avg", "size=2\nstride=1", c=1, tail="\n[cost]\n",
                     gradients="exact")
    grads = []
    for net in (dark, exact):
        net.forward(ramp3x3(), truth=np.zeros((1, 9)), train=True)
        net.layers[0].delta[...] = 1
        net.layers[1].backward = lambda n: None
        net.backward()
        grads.append(net.input_delta[0, 0].copy())
    # Darknet: every window spreads 1/4 to its in-image cells.
    np.testing.assert_allclose(grads[0], [[.25, .5, .5], [.5, 1, 1], [.5, 1, 1]])
    # Exact: the windows of the last column / row average only 2 (or 1) cells.
    np.testing.assert_allclose(grads[1], [[.25, .5, .75], [.5, 1, 1.5], [.75, 1.5, 2.25]])


def test_local_avgpool_rejects_windows_outside_the_input():
    with pytest.raises(CfgError, match="padding"):
        pool_net("local_avgpool", "size=2\nstride=1\npadding=6")


# ---------------------------------------------------------------------- exact gradients

def distinct_values(rng, shape):
    """Values at least .01 apart, so that no finite difference crosses an argmax tie."""
    return (rng.permutation(int(np.prod(shape))) * .05 - 1.013).reshape(shape)


@pytest.mark.parametrize("kind,body", [
    ("maxpool", "size=2\nstride=2"), ("maxpool", "size=3\nstride=1"),
    ("maxpool", "size=3\nstride=2\nstride_x=1"), ("maxpool", "maxpool_depth=1\nout_channels=2"),
    ("local_avgpool", "size=2\nstride=1"), ("local_avgpool", "size=3\nstride=2\npadding=3"),
])
def test_exact_gradients(f64, kind, body):
    net = build(net_cfg(f"[convolutional]\nfilters=3\nsize=3\npad=1\nactivation=linear\n\n"
                        f"[{kind}]\n{body}\n\n[cost]\n", c=2, h=5, w=6))
    rng = np.random.default_rng(7)
    randomize(net, rng)
    net.layers[0].weights[...] = 0
    # Outputs x0, x1 and x0 + sqrt(2)*x1: no two cells of a window tie.
    net.layers[0].weights[:, :, 1, 1] = [[1, 0], [0, 1], [1, np.sqrt(2)]]
    net.layers[0].biases[...] = 0
    x = distinct_values(rng, (2, 2, 5, 6))
    fd_check(net, x, rng.uniform(size=(2, net.truths)), layers={0})


@pytest.mark.parametrize("threads", ["2", "3"])
def test_threaded_max_pool_equals_the_serial_one(monkeypatch, threads):
    from minidarknet import ops, parallel
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 5, 9, 9)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan                      # NaN never wins, in every slice
    op = ops.PoolOp(5, 9, 9, 2, 2, 2, 1, 5, 5)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    serial = op.max_forward(x, np.empty((2, 5, 5, 5), np.float32)).copy()
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    monkeypatch.setattr(ops, "PARALLEL_MIN_BYTES", 0)
    with parallel.region():
        threaded = op.max_forward(x, np.empty((2, 5, 5, 5), np.float32))
    np.testing.assert_array_equal(threaded, serial)
    assert np.isfinite(threaded).all()
