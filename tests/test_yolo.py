"""[yolo]: forward against Darknet's dumps, and pjreddie's loss on hand-built cases."""
import math

import numpy as np
import pytest

import minidarknet
from conftest import GOLDEN, need_shared
from minidarknet.errors import CfgError, DataError

F32 = np.float32

# yolov3-tiny's anchors scaled to a 4x4 "image" (pixels / 16), so the yolo layer can take the
# network input directly: the net is 4x4 and the grid is 4x4.
ANCHORS = "0.625,0.875, 1.4375,1.6875, 2.3125,3.625"
ANCHOR_PAIRS = np.array([[10, 14], [23, 27], [37, 58]], F32) / 16


def yolo_net(extra="", mask="0,1,2", classes=2, gradients="darknet", size=4, channels=None,
             fork=None):
    n = len(mask.split(","))
    channels = channels or n * (classes + 5)
    cfg = f"""[net]
width={size}
height={size}
channels={channels}

[yolo]
{extra}
mask={mask}
anchors={ANCHORS}
classes={classes}
num=3
ignore_thresh=.5
truth_thresh=1
"""
    return minidarknet.loads(cfg, gradients=gradients, fork=fork)


def sigmoid(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def truth_rows(*boxes, batch=1):
    truth = np.zeros((batch, 450), F32)
    for k, (b, box) in enumerate(boxes):
        row = np.flatnonzero(truth[b].reshape(90, 5)[:, 0] == 0)[0]
        truth[b, 5 * row:5 * row + 5] = box
    return truth


def planes(a, n=3, classes=2):
    """(batch, n, 5 + classes, h*w) view of a yolo-shaped array."""
    return np.asarray(a).reshape(a.shape[0], n, 5 + classes, -1)


# --------------------------------------------------------------------------- forward

def golden_head(mask, size):
    cfg = f"""[net]
width={size}
height={size}
channels=255
[yolo]
mask = {mask}
anchors = 10,14,  23,27,  37,58,  81,82,  135,169,  344,319
classes=80
num=6
jitter=.3
ignore_thresh = .7
truth_thresh = 1
random=1
"""
    return minidarknet.loads(cfg)


@pytest.mark.parametrize("layer, mask, size", [(16, "3,4,5", 2), (23, "0,1,2", 4)])
def test_forward_matches_darknet_yolov3_tiny(layer, mask, size):
    exp = np.load(need_shared(GOLDEN / "yolov3_tiny_small") / "expected.npz")
    net = golden_head(mask, size)
    out = net.forward(exp[f"layer{layer - 1:02d}_output"])
    want = exp[f"layer{layer:02d}_output"]
    assert np.abs(out - want).max() <= 1e-4 * np.abs(want).max() + 1e-6


def test_forward_logistic_on_x_y_objectness_classes_not_on_w_h():
    net = yolo_net()
    x = np.random.default_rng(0).normal(0, 3, (2, 21, 4, 4)).astype(F32)
    out = planes(net.forward(x))
    z = planes(x)
    for e in (0, 1, 4, 5, 6):
        np.testing.assert_allclose(out[:, :, e], sigmoid(z[:, :, e]), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(out[:, :, 2:4], z[:, :, 2:4])


def test_scale_x_y_is_applied_in_forward_as_alexeyab():
    net = yolo_net("scale_x_y=1.2")
    x = np.random.default_rng(1).normal(0, 2, (1, 21, 4, 4)).astype(F32)
    out = planes(net.forward(x))
    want = sigmoid(planes(x)[:, :, 0:2]) * 1.2 - 0.1
    np.testing.assert_allclose(out[:, :, 0:2], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[:, :, 4], sigmoid(planes(x)[:, :, 4]), rtol=1e-6)


def test_new_coords_applies_no_activation():
    net = yolo_net("new_coords=1")
    x = np.random.default_rng(2).uniform(0, 1, (1, 21, 4, 4)).astype(F32)
    np.testing.assert_array_equal(net.forward(x), x)
    # decoding: w = tw^2 * 4 * anchor / net_w
    x = np.zeros((1, 21, 4, 4), F32)
    planes(x)[0, 1, 4, 5] = 0.9          # objectness of slot 1, cell 5 (row 1, col 1)
    planes(x)[0, 1, 0:4, 5] = [0.5, 0.25, 0.5, 0.75]
    net.forward(x)
    dets = net.layers[0].boxes(0, 0.5, 0.5, 4, 4)
    assert len(dets) == 1
    d = dets[0]
    assert (d.x, d.y) == pytest.approx(((1 + .5) / 4, (1 + .25) / 4))
    assert d.w == pytest.approx(.25 * 4 * ANCHOR_PAIRS[1, 0] / 4)
    assert d.h == pytest.approx(.5625 * 4 * ANCHOR_PAIRS[1, 1] / 4)


def test_filters_mismatch_names_the_filters_to_set():
    with pytest.raises(CfgError, match=r"set filters=21 .*before it"):
        yolo_net(channels=20)


def test_mask_outside_anchors_and_map_are_refused():
    with pytest.raises(CfgError, match="mask"):
        yolo_net(mask="0,1,5", channels=21)
    with pytest.raises(CfgError, match="map=data/coco9k.map"):
        yolo_net("map=data/coco9k.map")


def test_truth_size_is_90_boxes_unless_max_is_larger():
    assert yolo_net().truths == 450
    assert yolo_net("max=30").truths == 450
    assert yolo_net("max=200").truths == 1000


# --------------------------------------------------------------------------- loss

# A truth centred in cell (col 1, row 2) = location 9; its shape (20x28 in yolov3-tiny's
# pixels) fits anchor 1 (23x27) best: IoU 540/641 against 0.25 and 0.26 for the others.
BOX = (.3, .6, 20 / 64, 28 / 64, 1)
CELL = 2 * 4 + 1


def test_truth_goes_to_best_anchor_in_its_cell():
    net = yolo_net()
    x = np.zeros((1, 21, 4, 4), F32)            # every output 0.5, every w, h exactly the anchor
    net.forward(x, truth_rows((0, BOX)), train=True)
    d = planes(net.layers[0].delta)[0]
    scale = F32(2) - F32(BOX[2]) * F32(BOX[3])
    tw = math.log(BOX[2] * 4 / ANCHOR_PAIRS[1, 0])
    th = math.log(BOX[3] * 4 / ANCHOR_PAIRS[1, 1])
    np.testing.assert_allclose(d[1, 0:4, CELL], scale * np.array([.2 - .5, .4 - .5, tw, th]),
                               rtol=1e-5)
    assert d[1, 4, CELL] == 0.5                              # 1 - obj
    np.testing.assert_array_equal(d[1, 5:, CELL], [-0.5, 0.5])   # onehot - p
    # no other box or class delta anywhere
    mask = np.ones(d.shape, bool)
    mask[1, :, CELL] = False
    mask[:, 4, :] = False
    assert not d[mask].any()


def test_ignore_thresh_zeroes_objectness_of_overlapping_predictions():
    x = np.zeros((1, 21, 4, 4), F32)
    # slot 2 at the truth's cell predicts a 37x58 box at the cell centre: IoU with the truth
    # 560/2146 = 0.26 (the truth lies inside it).
    for thresh, expected in ((.2, 0.0), (.5, -0.5)):
        net = yolo_net(f"ignore_thresh={thresh}")
        net.forward(x, truth_rows((0, BOX)), train=True)
        d = planes(net.layers[0].delta)[0]
        assert d[2, 4, CELL] == expected
        assert d[0, 4, 3] == -0.5                 # a far prediction: 0 - obj
        assert d[1, 4, CELL] == 0.5               # the positive overrides the ignore


def test_cost_is_the_sum_of_squared_deltas_and_backward_adds_delta():
    net = yolo_net()
    x = np.random.default_rng(3).normal(0, 1, (2, 21, 4, 4)).astype(F32)
    truth = truth_rows((0, BOX), (0, (.7, .2, .1, .3, 0)), (1, (.55, .45, .5, .5, 1)), batch=2)
    net.forward(x, truth, train=True)
    layer = net.layers[0]
    assert net.cost == pytest.approx(float(np.square(layer.delta, dtype=np.float64).sum()),
                                     rel=1e-6)
    net.backward()
    np.testing.assert_array_equal(net.input_delta, layer.delta)


def test_truth_whose_best_anchor_is_in_another_head_gets_no_box_delta():
    net = yolo_net(mask="0,2", channels=14)
    x = np.zeros((1, 14, 4, 4), F32)
    net.forward(x, truth_rows((0, BOX)), train=True)
    d = planes(net.layers[0].delta, n=2)[0]
    assert not d[:, 0:4].any() and not d[:, 5:].any()
    assert (d[:, 4] <= 0).all()


def test_two_truths_in_one_cell_keep_both_classes_pjreddie_quirk():
    net = yolo_net(classes=3, channels=24)
    x = np.zeros((1, 24, 4, 4), F32)
    second = (.32, .58, 21 / 64, 27 / 64, 2)   # same cell, same best anchor, class 2
    net.forward(x, truth_rows((0, BOX), (0, second)), train=True)
    d = planes(net.layers[0].delta, classes=3)[0]
    # class 0's delta was already non-zero: only class 2's entry is set; class 1 stays.
    np.testing.assert_array_equal(d[1, 5:, CELL], [-0.5, 0.5, 0.5])
    # the box is the second truth's
    assert d[1, 0, CELL] == pytest.approx((F32(2) - F32(second[2]) * F32(second[3]))
                                          * (F32(.32) * 4 - 1 - F32(.5)), rel=1e-6)


def test_truth_thresh_below_one_makes_matching_predictions_positive():
    net = yolo_net("truth_thresh=.25\nignore_thresh=.2")
    x = np.zeros((1, 21, 4, 4), F32)
    net.forward(x, truth_rows((0, BOX)), train=True)
    d = planes(net.layers[0].delta)[0]
    # slot 2 at the truth's cell (IoU .26 > .25): objectness 1 - obj, classes, box on anchor 2
    assert d[2, 4, CELL] == 0.5
    np.testing.assert_array_equal(d[2, 5:, CELL], [-0.5, 0.5])
    tw = math.log(BOX[2] * 4 / ANCHOR_PAIRS[2, 0])
    assert d[2, 2, CELL] == pytest.approx((2 - BOX[2] * BOX[3]) * tw, rel=1e-5)


def test_truth_list_ends_at_first_zero_x():
    net = yolo_net()
    truth = truth_rows((0, BOX))
    truth[0, 10:15] = [.7, .2, .1, .3, 0]       # after an empty box: never read
    net.forward(np.zeros((1, 21, 4, 4), F32), truth, train=True)
    d1 = net.layers[0].delta.copy()
    net.forward(np.zeros((1, 21, 4, 4), F32), truth_rows((0, BOX)), train=True)
    np.testing.assert_array_equal(d1, net.layers[0].delta)


def test_bad_class_id_is_a_data_error():
    net = yolo_net()
    with pytest.raises(DataError, match="class id 2"):
        net.forward(np.zeros((1, 21, 4, 4), F32), truth_rows((0, BOX[:4] + (2,))), train=True)


def test_forward_without_truth_computes_no_loss():
    net = yolo_net()
    net.forward(np.zeros((1, 21, 4, 4), F32))
    assert net.cost is None


# --------------------------------------------------------------------------- AB loss keys

def test_ab_loss_keys_load_for_inference_but_refuse_training():
    """With pjreddie's numbers asked for (AlexeyAB's fork trains them: test_yolo_ab_loss)."""
    net = yolo_net("iou_loss=ciou\niou_normalizer=0.07\ncls_normalizer=1.0\nnms_kind=diounms\n"
                   "beta_nms=0.6\nmax_delta=5\nscale_x_y=1.05", fork="pjreddie")
    x = np.zeros((1, 21, 4, 4), F32)
    net.forward(x)
    with pytest.raises(CfgError, match=r"<cfg>:\d+: \[yolo\] iou_loss=ciou.*iou_normalizer"):
        net.forward(x, truth_rows((0, BOX)), train=True)


def test_neutral_ab_values_train_with_pjreddie_loss():
    plain = yolo_net()
    ab = yolo_net("iou_loss=mse\niou_normalizer=1\nobj_normalizer=1.0\ncls_normalizer=1.0\n"
                  "iou_thresh=1\nresize=1.5\ntrack_history_size=5", fork="pjreddie")
    x = np.random.default_rng(4).normal(0, 1, (1, 21, 4, 4)).astype(F32)
    plain.forward(x, truth_rows((0, BOX)), train=True)
    ab.forward(x, truth_rows((0, BOX)), train=True)
    np.testing.assert_array_equal(plain.layers[0].delta, ab.layers[0].delta)


# --------------------------------------------------------------------------- exact mode

def test_exact_mode_delta_is_the_negative_gradient_of_the_objective():
    rng = np.random.default_rng(5)
    net = yolo_net("scale_x_y=1.1\nignore_thresh=.7", gradients="exact", fork="pjreddie")
    darknet = yolo_net("scale_x_y=1.1\nignore_thresh=.7", fork="pjreddie")
    x = rng.normal(0, 1, (2, 21, 4, 4)).astype(F32)
    truth = truth_rows((0, BOX), (0, (.7, .2, .1, .3, 0)), (1, (.55, .45, .5, .5, 1)), batch=2)
    net.forward(x, truth, train=True)
    net.backward()
    grad = net.input_delta.copy()
    darknet.forward(x, truth, train=True)
    darknet.backward()
    np.testing.assert_allclose(grad, darknet.input_delta, atol=1e-6)   # the same deltas
    layer = net.layers[0]
    eps = 1e-2
    for k in [tuple(i) for i in np.argwhere(np.abs(grad) > 1e-3)]:
        xp, xm = x.copy(), x.copy()
        xp[k] += eps
        xm[k] -= eps
        net.forward(xp, truth, train=True)
        up = layer.objective
        net.forward(xm, truth, train=True)
        down = layer.objective
        assert -(up - down) / (2 * eps) == pytest.approx(grad[k], rel=2e-3, abs=1e-4), k


def test_exact_mode_takes_later_deltas_through_the_logistic():
    net = yolo_net(gradients="exact")
    x = np.random.default_rng(6).normal(0, 1, (1, 21, 4, 4)).astype(F32)
    out = net.forward(x).copy()
    g = np.ones_like(out)
    net.backward(g)
    want = planes(np.ones_like(out))
    o = planes(out)
    want[:, :, 0:2] = o[:, :, 0:2] * (1 - o[:, :, 0:2])
    want[:, :, 4:] = o[:, :, 4:] * (1 - o[:, :, 4:])
    np.testing.assert_allclose(planes(net.input_delta), want, rtol=1e-6)
    darknet = yolo_net()
    darknet.forward(x)
    darknet.backward(g)
    np.testing.assert_array_equal(darknet.input_delta, g)   # Darknet: unchanged
