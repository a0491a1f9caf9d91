"""[region]: pjreddie's CPU forward, its loss (and its missing backward), exact-mode gradients."""
import math

import numpy as np
import pytest

from conftest import central_difference

import minidarknet
from minidarknet.errors import CfgError

F32 = np.float32
ANCHORS = np.array([[0.57, 0.67], [1.87, 2.06], [3.3, 5.4]], F32)   # grid-cell units


def region_net(extra="", classes=3, coords=4, gradients="darknet", softmax=1):
    channels = 3 * (coords + 1 + classes)
    cfg = f"""[net]
width=4
height=4
channels={channels}

[region]
{extra}
anchors = {", ".join(f"{a:g}" for a in ANCHORS.ravel())}
classes={classes}
coords={coords}
num=3
softmax={softmax}
thresh=.6
object_scale=5
noobject_scale=1
class_scale=1
coord_scale=1
"""
    return minidarknet.loads(cfg, gradients=gradients)


def planes(a, classes=3, coords=4):
    return np.asarray(a).reshape(a.shape[0], 3, coords + 1 + classes, -1)


def sigmoid(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def truth_rows(*boxes, batch=1, per_box=5):
    truth = np.zeros((batch, 30 * per_box), F32)
    for b, box in boxes:
        row = np.flatnonzero(truth[b].reshape(30, per_box)[:, 0] == 0)[0]
        truth[b, per_box * row:per_box * row + len(box)] = box
    return truth


# --------------------------------------------------------------------------- forward

def test_forward_logistic_and_softmax_over_class_planes():
    net = region_net()
    x = np.random.default_rng(0).normal(0, 2, (2, 24, 4, 4)).astype(F32)
    out = planes(net.forward(x))
    z = planes(x)
    np.testing.assert_allclose(out[:, :, 0:2], sigmoid(z[:, :, 0:2]), rtol=1e-6)
    np.testing.assert_array_equal(out[:, :, 2:4], z[:, :, 2:4])
    np.testing.assert_allclose(out[:, :, 4], sigmoid(z[:, :, 4]), rtol=1e-6)
    e = np.exp(z[:, :, 5:].astype(np.float64))
    np.testing.assert_allclose(out[:, :, 5:], e / e.sum(axis=2, keepdims=True), rtol=1e-5)


def test_forward_logistic_classes_and_raw_extra_coords():
    net = region_net(softmax=0, coords=5)
    x = np.random.default_rng(1).normal(0, 2, (1, 27, 4, 4)).astype(F32)
    out = planes(net.forward(x), coords=5)
    z = planes(x, coords=5)
    np.testing.assert_array_equal(out[:, :, 4], z[:, :, 4])              # extra coord: raw
    np.testing.assert_allclose(out[:, :, 5], sigmoid(z[:, :, 5]), rtol=1e-6)   # objectness
    np.testing.assert_allclose(out[:, :, 6:], sigmoid(z[:, :, 6:]), rtol=1e-6)


def test_decoding_yields_every_cell_and_anchor():
    net = region_net()
    net.forward(np.random.default_rng(2).normal(0, 1, (1, 24, 4, 4)).astype(F32))
    dets = net.layers[0].boxes(0, 0.5, 0.5, 4, 4)
    assert len(dets) == 4 * 4 * 3
    o = planes(net.layers[0].output)[0]
    # detection k = anchor*16 + cell; box w = exp(tw) * anchor_w / grid_w
    d = dets[16 + 6]
    assert d.x == pytest.approx((2 + o[1, 0, 6]) / 4, rel=1e-6)
    assert d.w == pytest.approx(math.exp(o[1, 2, 6]) * ANCHORS[1, 0] / 4, rel=1e-6)


def test_tree_and_filters_mismatch_are_refused():
    with pytest.raises(CfgError, match="tree=data/9k.tree"):
        region_net("tree=data/9k.tree")
    cfg = "[net]\nwidth=4\nheight=4\nchannels=23\n[region]\nclasses=3\nnum=3\n"
    with pytest.raises(CfgError, match="set filters=24"):
        minidarknet.loads(cfg)


# --------------------------------------------------------------------------- loss

BOX = (.3, .6, .2, .3, 1)          # cell (col 1, row 2) = location 9
CELL = 9


def test_darknet_mode_writes_the_delta_but_passes_no_gradient():
    net = region_net()
    x = np.random.default_rng(3).normal(0, 1, (1, 24, 4, 4)).astype(F32)
    net.seen = 20000
    net.forward(x, truth_rows((0, BOX)), train=True)
    layer = net.layers[0]
    assert np.abs(layer.delta).sum() > 0
    assert net.cost == pytest.approx(float(np.square(layer.delta, dtype=np.float64).sum()),
                                     rel=1e-6)
    net.backward()
    assert not net.input_delta.any()      # pjreddie's CPU backward_region_layer is empty


def test_hand_built_region_deltas():
    net = region_net("bias_match=1\nrescore=0")
    x = np.zeros((1, 24, 4, 4), F32)          # x, y, obj = 0.5; w, h = the anchor; p = 1/3
    net.seen = 20000                          # past the 12800-image anchor prior
    net.forward(x, truth_rows((0, BOX)), train=True)
    d = planes(net.layers[0].delta)[0]
    # best anchor by shape (bias_match): 0.2*4 x 0.3*4 = 0.8 x 1.2 cells -> anchor 0.57x0.67
    # (IoU .398) vs 1.87x2.06 (IoU .249)
    scale = F32(2) - F32(.2) * F32(.3)
    want = scale * np.array([.2 - .5, .4 - .5, math.log(.8 / .57), math.log(1.2 / .67)])
    np.testing.assert_allclose(d[0, 0:4, CELL], want, rtol=1e-5)
    assert d[0, 4, CELL] == pytest.approx(5 * 0.5)                 # object_scale*(1 - obj)
    np.testing.assert_allclose(d[0, 5:, CELL], [-1 / 3, 2 / 3, -1 / 3], rtol=1e-6)
    assert d[2, 4, 0] == -0.5                                      # noobject: 0 - obj
    other = np.ones(d.shape, bool)
    other[0, :, CELL] = False
    other[:, 4] = False
    assert not d[other].any()                                      # no prior after 12800


def test_anchor_prior_before_12800_images():
    net = region_net("bias_match=1")
    x = np.random.default_rng(4).normal(0, 1, (1, 24, 4, 4)).astype(F32)
    net.seen = 0
    net.forward(x, np.zeros((1, 150), F32), train=True)
    o = planes(net.layers[0].output)[0]
    d = planes(net.layers[0].delta)[0]
    np.testing.assert_allclose(d[:, 0:2], F32(.01) * (F32(.5) - o[:, 0:2]), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(d[:, 2:4], F32(.01) * (0 - o[:, 2:4]), rtol=1e-4, atol=1e-8)
    assert not d[:, 5:].any()


def test_rescore_target_is_the_iou_and_logistic_classes_keep_earlier_ones():
    net = region_net("bias_match=1\nrescore=1", softmax=0)
    x = np.zeros((1, 24, 4, 4), F32)
    net.seen = 20000
    second = (.31, .61, .19, .31, 2)        # same cell, same anchor
    net.forward(x, truth_rows((0, BOX), (0, second)), train=True)
    d = planes(net.layers[0].delta)[0]
    pred = np.array([(1 + .5) / 4, (2 + .5) / 4, .57 / 4, .67 / 4])
    box = np.array(second[:4])
    lo = np.maximum(pred[:2] - pred[2:] / 2, box[:2] - box[2:] / 2)
    hi = np.minimum(pred[:2] + pred[2:] / 2, box[:2] + box[2:] / 2)
    inter = np.prod(hi - lo)
    iou = inter / (np.prod(pred[2:]) + np.prod(box[2:]) - inter)
    assert d[0, 4, CELL] == pytest.approx(5 * (iou - .5), rel=1e-5)
    np.testing.assert_allclose(d[0, 5:, CELL], [-.5, .5, .5])


# --------------------------------------------------------------------------- exact mode

@pytest.mark.parametrize("softmax, rescore, seen", [(1, 1, 20000), (0, 1, 0), (1, 0, 0)])
def test_exact_mode_is_the_gradient_of_the_objective(softmax, rescore, seen):
    # (seed chosen so that no IoU kink -- a predicted box edge meeting a truth edge -- lies
    # within eps of the inputs: the objective is only piecewise smooth)
    rng = np.random.default_rng(11)
    net = region_net(f"rescore={rescore}", softmax=softmax, gradients="exact")
    x = rng.normal(0, 1, (2, 24, 4, 4)).astype(F32)
    truth = truth_rows((0, BOX), (0, (.7, .2, .1, .3, 0)), (0, (.31, .6, .25, .3, 2)),
                       (1, (.55, .45, .5, .5, 1)), batch=2)
    net.seen = seen
    net.forward(x, truth, train=True)
    net.backward()
    grad = net.input_delta.copy()
    assert np.abs(grad).max() > 0.1
    layer = net.layers[0]
    eps = 1e-2
    xs = x.copy()

    def objective():
        net.forward(xs, truth, train=True)
        return layer.objective
    for k in [tuple(i) for i in np.argwhere(np.abs(grad) > 1e-3)]:
        assert -central_difference(objective, xs, k, eps) == pytest.approx(grad[k], rel=3e-3,
                                                                           abs=1e-4), k


def test_exact_mode_backpropagates_later_deltas_through_the_softmax():
    net = region_net(gradients="exact")
    x = np.random.default_rng(8).normal(0, 1, (1, 24, 4, 4)).astype(F32)
    out = net.forward(x).copy()
    g = np.random.default_rng(9).normal(0, 1, out.shape).astype(F32)
    net.backward(g)
    got = net.input_delta.copy()
    eps = 1e-2
    k = (0, 6, 2, 3)                 # anchor 0, class 1, row 2, col 3
    fd = central_difference(lambda: float((net.forward(x) * g).sum()), x, k, eps)
    assert got[k] == pytest.approx(fd, rel=1e-3)


def test_background_has_no_exact_gradient():
    with pytest.raises(CfgError, match="background"):
        region_net("background=1", gradients="exact")


def test_extra_coords_use_an_int_mask_scale_and_darknets_truth_offset():
    net = region_net("bias_match=1\nmask_scale=2.7", coords=5, softmax=0)
    x = np.zeros((1, 27, 4, 4), F32)
    net.seen = 20000
    net.forward(x, truth_rows((0, (.3, .6, .2, .3, .25, 2)), per_box=6), train=True)
    d = planes(net.layers[0].delta, coords=5)[0]
    # offset 5 of the box is the class id (2): int(2.7) * (2 - 0)
    assert d[0, 4, CELL] == 4
    np.testing.assert_allclose(d[0, 6:, CELL], [-.5, -.5, .5])
