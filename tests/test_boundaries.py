"""Every threshold comparison at its boundary, against the direction Darknet's C uses.

Each case puts a value EXACTLY on the threshold (numbers chosen to be exact in float32), so a
`>` turned into `>=` (or `<` into `<=`) changes the result.  The expected results are worked
out by hand in the comments (pjreddie/darknet: src/box.c do_nms_sort, src/yolo_layer.c
forward_yolo_layer / get_yolo_detections, src/region_layer.c forward_region_layer /
get_region_detections, src/detection_layer.c, src/image.c draw_detections,
src/network.c get_current_rate; AlexeyAB/darknet src/box.c diounms_sort for DIoU-NMS and
src/network.c for sgdr).
"""
import math

import numpy as np
import pytest

import minidarknet
from minidarknet.boxes import (
    Detection, detection_layer_boxes, do_nms_sort, format_detections, region_boxes,
    yolo_boxes,
)
from minidarknet.detect import diou_nms_sort

F32 = np.float32


def det(x, y, w, h, prob, obj=1.0):
    return Detection(x, y, w, h, obj, np.array(prob, F32))


# ------------------------------------------------------------------------------- NMS
# A = (.5,.5,1,1), B = (.5,.5,1,.5): B lies inside A, intersection .5, union 1: IoU = .5
# exactly.  Darknet suppresses when IoU > nms (strict), so at nms = .5 both boxes keep their
# probability; at nms = .49 the lower one (B) is zeroed.  The centres coincide, so the DIoU
# penalty is (0/c)**beta = 0 and the DIoU variants see the same .5.

def pair():
    return [det(.5, .5, 1, 1, [.9]), det(.5, .5, 1, .5, [.8])]


def nms_kinds():
    return {"do_nms_sort": lambda d, t: do_nms_sort(d, 1, t),
            "greedynms": lambda d, t: diou_nms_sort(d, 1, t, "greedynms"),
            "diounms": lambda d, t: diou_nms_sort(d, 1, t, "diounms", beta=0.6)}


# matrix_max None: one IoU matrix for all boxes; 0: the row-at-a-time path for large sets
@pytest.mark.parametrize("matrix_max", [None, 0])
@pytest.mark.parametrize("kind", sorted(nms_kinds()))
def test_nms_keeps_a_box_whose_overlap_equals_the_threshold(kind, matrix_max, monkeypatch):
    if matrix_max is not None:
        monkeypatch.setattr("minidarknet.boxes._FULL_MATRIX_MAX", matrix_max)
    out = nms_kinds()[kind](pair(), 0.5)
    assert [float(d.prob[0]) for d in out] == [pytest.approx(.9), pytest.approx(.8)]


@pytest.mark.parametrize("matrix_max", [None, 0])
@pytest.mark.parametrize("kind", sorted(nms_kinds()))
def test_nms_suppresses_just_below_the_threshold(kind, matrix_max, monkeypatch):
    if matrix_max is not None:
        monkeypatch.setattr("minidarknet.boxes._FULL_MATRIX_MAX", matrix_max)
    out = nms_kinds()[kind](pair(), 0.49)
    assert [float(d.prob[0]) for d in out] == [pytest.approx(.9), 0.0]


def diou_by_hand(a, b, beta):
    """IoU - (d/c)**beta in float64, from the definitions (d: squared centre distance, c:
    squared diagonal of the smallest enclosing box)."""
    ax0, ax1, ay0, ay1 = a[0] - a[2] / 2, a[0] + a[2] / 2, a[1] - a[3] / 2, a[1] + a[3] / 2
    bx0, bx1, by0, by1 = b[0] - b[2] / 2, b[0] + b[2] / 2, b[1] - b[3] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    iou = inter / (a[2] * a[3] + b[2] * b[3] - inter)
    c = (max(ax1, bx1) - min(ax0, bx0)) ** 2 + (max(ay1, by1) - min(ay0, by0)) ** 2
    d = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    return iou, iou - (d / c) ** beta


def test_diou_nms_uses_the_penalty_with_its_own_beta():
    # A = (.5,.5,1,1), B = (.6,.5,1,1): IoU = .9/1.1 = .818; enclosing box 1.1 x 1, so
    # c = 2.21, d = .01: DIoU(beta .6) = .818 - .0392 = .779, DIoU(beta 1) = .818 - .0045 = .814
    a, b = (.5, .5, 1, 1), (.6, .5, 1, 1)
    iou, diou_06 = diou_by_hand(a, b, 0.6)
    _, diou_1 = diou_by_hand(a, b, 1.0)
    assert diou_06 < .8 < diou_1 < iou
    boxes = lambda: [det(*a, [.9]), det(*b, [.8])]           # noqa: E731
    assert do_nms_sort(boxes(), 1, .8)[1].prob[0] == 0                     # IoU .818 > .8
    assert diou_nms_sort(boxes(), 1, .8, "greedynms")[1].prob[0] == F32(.8)  # .779: kept
    assert diou_nms_sort(boxes(), 1, .8, "diounms", beta=1.0)[1].prob[0] == 0   # .814
    assert diou_nms_sort(boxes(), 1, .8, "diounms", beta=0.6)[1].prob[0] == F32(.8)


# ------------------------------------------------------------------- decoding thresholds

def yolo_output(obj, cls):
    """A 1x1 [yolo] output, one anchor, one class, already activated: x=y=.5, w=h=0."""
    return np.array([.5, .5, 0, 0, obj, cls], F32).reshape(6, 1, 1)


def test_yolo_boxes_drops_objectness_equal_to_thresh():
    # get_yolo_detections: `if (objectness <= thresh) continue;`
    assert yolo_boxes(yolo_output(.5, 1), [0], [8, 8], 1, 8, 8, thresh=.5) == []
    assert len(yolo_boxes(yolo_output(.5, 1), [0], [8, 8], 1, 8, 8, thresh=.49)) == 1


def test_yolo_boxes_zeroes_a_class_probability_equal_to_thresh():
    # prob = .75 * .5 = .375 exactly; Darknet keeps it only if prob > thresh
    at = yolo_boxes(yolo_output(.75, .5), [0], [8, 8], 1, 8, 8, thresh=.375)
    below = yolo_boxes(yolo_output(.75, .5), [0], [8, 8], 1, 8, 8, thresh=.37)
    assert float(at[0].prob[0]) == 0.0
    assert float(below[0].prob[0]) == .375


def region_output(obj, cls):
    """A 1x1 [region] output, one anchor, coords 4, one class (x, y, w, h, obj, class)."""
    return np.array([.5, .5, 0, 0, obj, cls], F32).reshape(6, 1, 1)


def test_region_boxes_objectness_and_prob_at_thresh():
    # get_region_detections: objectness = scale > thresh ? scale : 0;
    # prob = scale*class, kept if prob > thresh
    (d,) = region_boxes(region_output(.5, 1), [1, 1], 1, thresh=.5)
    assert d.objectness == 0 and float(d.prob[0]) == 0
    (d,) = region_boxes(region_output(.75, .5), [1, 1], 1, thresh=.375)
    assert d.objectness == .75 and float(d.prob[0]) == 0
    (d,) = region_boxes(region_output(.75, .5), [1, 1], 1, thresh=.37)
    assert float(d.prob[0]) == .375


def test_detection_layer_boxes_prob_at_thresh():
    # YOLOv1 get_detection_detections: prob = conf*class, kept if prob > thresh
    out = np.array([.5, .75, .5, .5, .2, .2], F32)        # class, conf, x y w h
    (d,) = detection_layer_boxes(out, 1, 1, 1, thresh=.375)
    assert float(d.prob[0]) == 0 and d.objectness == .75   # objectness is never zeroed
    (d,) = detection_layer_boxes(out, 1, 1, 1, thresh=.37)
    assert float(d.prob[0]) == .375


def test_printout_lists_a_class_only_above_thresh():
    # draw_detections: `if (dets[i].prob[j] > thresh)`
    d = det(.5, .5, .5, .5, [.5, .25])
    assert format_detections([d], ["a", "b"], .5, 100, 100) == []
    lines = format_detections([d], ["a", "b"], .25, 100, 100)
    assert len(lines) == 1 and lines[0].startswith("a: 50%")


def test_network_detections_thresh_and_nms_boundaries():
    # An 8x8 network pooled to one cell, a [yolo] with two anchors of 8x8 and 8x4 pixels at
    # the same centre: boxes (.5,.5,1,1) and (.5,.5,1,.5), IoU .5 exactly.
    net = minidarknet.loads("[net]\nwidth=8\nheight=8\nchannels=12\n[maxpool]\nsize=8\n"
                            "stride=8\n[yolo]\nmask=0,1\nanchors=8,8, 8,4\nclasses=1\nnum=2\n")
    from minidarknet.detect import network_detections
    x = np.zeros((1, 12, 8, 8), F32)       # x, y -> logistic(0) = .5; w, h raw 0 -> anchor
    x[0, 4] = x[0, 10] = 10                # objectness ~1
    x[0, 5] = 10                           # class of anchor 0 ~1
    x[0, 11] = 2                           # class of anchor 1 = logistic(2) = .88
    net.forward(x)
    dets = network_detections(net, thresh=.5, nms=.5)
    assert sorted(float(d.prob[0]) > 0 for d in dets) == [True, True]
    dets = network_detections(net, thresh=.5, nms=.49)
    assert sorted(float(d.prob[0]) > 0 for d in dets) == [False, True]


# ------------------------------------------------------------------ training thresholds
# A 2x2 [yolo] / [region] grid with two anchors of .25 x .25 and .25 x .5 (relative), a zero
# input (x = y = logistic(0) = .5, w = h = exp(0) * anchor) and one truth (.25,.25,.25,.25)
# in cell (0, 0).  The truth's best anchor is anchor 0 (IoU 1), so slot 0 of cell 0 is the
# positive.  Slot 1 of cell 0 predicts (.25,.25,.25,.5): IoU with the truth .0625/.125 = .5
# exactly; every other prediction misses the truth.  Its objectness delta is the one the
# thresholds decide: Darknet zeroes it when best_iou > ignore_thresh (region: > thresh) and
# makes it a positive when best_iou > truth_thresh.

YOLO_2x2 = ("[net]\nwidth=2\nheight=2\nchannels=12\n[yolo]\nmask=0,1\nanchors=.5,.5, .5,1\n"
            "classes=1\nnum=2\nignore_thresh={ignore}\ntruth_thresh={truth}\n")


def yolo_slot1_deltas(ignore, truth_thresh):
    net = minidarknet.loads(YOLO_2x2.format(ignore=ignore, truth=truth_thresh))
    truth = np.zeros((1, net.truths), F32)
    truth[0, :5] = [.25, .25, .25, .25, 0]
    net.forward(np.zeros((1, 12, 2, 2), F32), truth, train=True)
    delta = net.layers[0].delta.reshape(2, 6, 2, 2)
    return delta[1, :, 0, 0]         # slot 1, cell (0, 0): x y w h obj class


def test_yolo_ignore_thresh_is_strict():
    d = yolo_slot1_deltas(ignore=.5, truth_thresh=1)
    assert d[4] == pytest.approx(-.5)           # not ignored: 0 - logistic(0)
    assert yolo_slot1_deltas(ignore=.49, truth_thresh=1)[4] == 0


def test_yolo_truth_thresh_is_strict():
    d = yolo_slot1_deltas(ignore=.49, truth_thresh=.5)
    assert d[4] == 0 and d[5] == 0              # ignored, not a positive
    d = yolo_slot1_deltas(ignore=.49, truth_thresh=.49)
    assert d[4] == pytest.approx(.5)            # positive: 1 - .5
    assert d[5] == pytest.approx(.5)            # class 0: 1 - .5
    # box targets on anchor 1 (.5 x 1 pixels of a 2x2 net), scale (2 - w*h): tx = .25*2 - 0
    # = .5 = logistic(0) -> delta 0; tw = log(.25*2/.5) = 0 = raw w; th = log(.25*2/1)
    assert d[0] == pytest.approx(0) and d[2] == pytest.approx(0)
    assert d[3] == pytest.approx((2 - .25 * .25) * (math.log(.5) - 0))


REGION_2x2 = ("[net]\nwidth=2\nheight=2\nchannels=12\n[region]\nanchors=.5,.5, .5,1\n"
              "classes=1\nnum=2\ncoords=4\nthresh={thresh}\nnoobject_scale=1\n")


def region_deltas(thresh, seen, x=None, with_truth=True):
    net = minidarknet.loads(REGION_2x2.format(thresh=thresh))
    truth = np.zeros((1, net.truths), F32)
    if with_truth:
        truth[0, :5] = [.25, .25, .25, .25, 0]
    net.seen = seen
    net.forward(np.zeros((1, 12, 2, 2), F32) if x is None else x, truth, train=True)
    return net.layers[0].delta.reshape(2, 6, 2, 2)


def test_region_thresh_is_strict():
    # forward_region_layer: delta obj = noobject_scale * (0 - obj), 0 if best_iou > thresh
    assert region_deltas(.5, 10 ** 6)[1, 4, 0, 0] == pytest.approx(-.5)
    assert region_deltas(.49, 10 ** 6)[1, 4, 0, 0] == 0


def test_region_anchor_prior_stops_at_12800_images():
    # `if (*(net.seen) < 12800)` every anchor is pulled towards itself at the cell centre with
    # scale .01: delta x = .01 * (.5 - logistic(1)) for a tx input of 1
    x = np.zeros((1, 12, 2, 2), F32)
    x[0, 0] = 1
    before = region_deltas(.5, 12799, x, with_truth=False)
    after = region_deltas(.5, 12800, x, with_truth=False)
    expected = .01 * (.5 - 1 / (1 + math.exp(-1)))
    np.testing.assert_allclose(before[0, 0], expected, rtol=1e-5)
    np.testing.assert_array_equal(after[0, 0], 0)


# -------------------------------------------------------------------------- lr policies

def rate_at(text, batch_num):
    net = minidarknet.loads("[net]\nbatch=1\ninputs=1\nlearning_rate=.5\n" + text +
                            "\n[connected]\noutput=1\n")
    net.seen = batch_num
    return net.current_rate()


def test_steps_scale_applies_at_exactly_the_step():
    # STEPS: for each i: if (steps[i] > batch_num) return rate; rate *= scales[i]
    text = "policy=steps\nsteps=10,20\nscales=.1,.2\n"
    assert rate_at(text, 9) == pytest.approx(.5)
    assert rate_at(text, 10) == pytest.approx(.05)
    assert rate_at(text, 19) == pytest.approx(.05)
    assert rate_at(text, 20) == pytest.approx(.01)


def test_step_policy_integer_division():
    # STEP: lr * scale ** (batch_num / step), integer division
    text = "policy=step\nstep=4\nscale=.5\n"
    assert [rate_at(text, n) for n in (3, 4, 7, 8)] == pytest.approx([.5, .25, .25, .125])


def test_burn_in_boundary():
    # batch_num < burn_in: lr * (batch_num / burn_in) ** power; at burn_in the policy takes over
    text = "burn_in=4\npower=2\npolicy=steps\nsteps=4\nscales=.1\n"
    assert rate_at(text, 3) == pytest.approx(.5 * (3 / 4) ** 2)
    assert rate_at(text, 4) == pytest.approx(.05)
    assert rate_at(text, 0) == 0


def test_sigmoid_policy_is_half_at_step():
    text = "policy=sigmoid\ngamma=2\nstep=6\n"
    assert rate_at(text, 6) == pytest.approx(.25)
    assert rate_at(text, 7) == pytest.approx(.5 / (1 + math.exp(2)))


def test_poly_reaches_zero_at_max_batches():
    text = "policy=poly\npower=3\nmax_batches=8\n"
    assert rate_at(text, 4) == pytest.approx(.5 * .5 ** 3)
    assert rate_at(text, 8) == 0


def test_exp_policy_gamma_power():
    assert rate_at("policy=exp\ngamma=.9\n", 3) == pytest.approx(.5 * .9 ** 3)


def test_sgdr_cycle_boundaries():
    # AlexeyAB: while (start + cycle < batch_num) {start += cycle; cycle *= mult}
    # rate = min + .5 (lr - min)(1 + cos((n - start) pi / cycle))
    text = "policy=sgdr\nsgdr_cycle=4\nsgdr_mult=3\nlearning_rate_min=.1\n"

    def by_hand(n, start, cycle):
        return .1 + .5 * (.5 - .1) * (1 + math.cos((n - start) * math.pi / cycle))
    assert rate_at(text, 4) == pytest.approx(by_hand(4, 0, 4))      # end of the first cycle
    assert rate_at(text, 4) == pytest.approx(.1)
    assert rate_at(text, 5) == pytest.approx(by_hand(5, 4, 12))
    assert rate_at(text, 16) == pytest.approx(by_hand(16, 4, 12))   # = .1 again
    assert rate_at(text, 17) == pytest.approx(by_hand(17, 16, 36))


# ------------------------------------------------------------------ letterbox correction

def test_correct_boxes_truncates_the_letterboxed_size_like_c():
    # a 333x500 image in a 416x416 net: 416/333 > 416/500, so new_h = 416 and
    # new_w = 333*416/500 = 277 in C integer division (277.056 exactly); correct_yolo_boxes:
    # x = (x - (416 - 277)/2/416) / (277/416), w = w * 416/277; y, h unchanged
    from minidarknet.boxes import correct_boxes
    d = [det(.3, .4, .2, .5, [1])]
    correct_boxes(d, 333, 500, 416, 416)
    assert d[0].x == pytest.approx((.3 - 139 / 2 / 416) / (277 / 416), rel=1e-6)
    assert d[0].w == pytest.approx(.2 * 416 / 277, rel=1e-6)
    assert (d[0].y, d[0].h) == (pytest.approx(.4), pytest.approx(.5))
    assert d[0].x != pytest.approx((.3 - (416 - 277.056) / 2 / 416) / (277.056 / 416), rel=1e-6)
    d = [det(.3, .4, .2, .5, [1])]
    correct_boxes(d, 333, 500, 416, 416, relative=False)        # pixels of the image
    assert d[0].x == pytest.approx(333 * (.3 - 139 / 2 / 416) / (277 / 416), rel=1e-6)
    assert d[0].h == pytest.approx(500 * .5, rel=1e-6)


# ------------------------------------------------------------------ hierarchy (tree) decoding
# Tree: a, b at the root; c, d children of a.  Conditional class values a=.5, b=.25, c=1, d=.5
# give the absolute probabilities a=.5, b=.25, c=.5, d=.25 (hierarchy_predictions).
# hierarchy_top_prediction descends while p*max > hier: root .5 > hier; then .5*.5 = .25,
# so hier = .25 stops at a (the parent of c's group), hier = .24 reaches the leaf c.

def test_hierarchy_top_prediction_descends_only_above_hier():
    from minidarknet.tree import parse_tree_text
    tree = parse_tree_text("a -1\nb -1\nc 0\nd 0\n")
    absolute = tree.hierarchy_predictions(np.array([[.5, .25, 1, .5]], F32))
    np.testing.assert_array_equal(absolute, [[.5, .25, .5, .25]])
    assert list(tree.top_prediction(absolute, .25)) == [0]
    assert list(tree.top_prediction(absolute, .24)) == [2]
    assert list(tree.top_prediction(absolute, .5)) == [0]        # stops in the root group


def test_region_tree_boxes_hier_and_thresh_boundaries():
    from minidarknet.tree import parse_tree_text, region_tree_boxes
    tree = parse_tree_text("a -1\nb -1\nc 0\nd 0\n")
    out = np.array([.5, .5, 0, 0, .5, .5, .25, 1, .5], F32).reshape(9, 1, 1)
    (d,) = region_tree_boxes(out, [1, 1], 4, tree, thresh=.49, hier_thresh=.24)
    assert list(d.prob) == [0, 0, .5, 0]                  # leaf c, prob = objectness .5
    (d,) = region_tree_boxes(out, [1, 1], 4, tree, thresh=.49, hier_thresh=.25)
    assert list(d.prob) == [.5, 0, 0, 0]                  # stopped at a
    (d,) = region_tree_boxes(out, [1, 1], 4, tree, thresh=.5, hier_thresh=.24)
    assert list(d.prob) == [0, 0, 0, 0]                   # objectness .5 is not > .5
