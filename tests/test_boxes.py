"""Tests for minidarknet.boxes: decoding, letterbox correction, NMS, drawing, printing."""
import json

import numpy as np
import pytest
from PIL import Image

from minidarknet.boxes import (
    Detection, box_iou, class_color, correct_boxes, detection_layer_boxes,
    detections_from_array, detections_to_array, do_nms_sort, draw_detections,
    format_detections, region_boxes, yolo_boxes,
)
from minidarknet.errors import ShapeError

import conftest
from conftest import need_shared

F = np.float32
GOLDEN = conftest.GOLDEN / "yolov3_tiny_small"


@pytest.fixture
def _golden_case():
    """The yolov3-tiny golden case from MINIDARKNET_SHARED (or ../shared), via conftest."""
    return need_shared(GOLDEN / "expected.npz")


needs_golden = pytest.mark.usefixtures("_golden_case")

TINY_ANCHORS = [10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319]


def det(x, y, w, h, obj, prob):
    return Detection(x, y, w, h, obj, prob)


# --------------------------------------------------------------------------- golden data

@needs_golden
@pytest.mark.parametrize("matrix_max", [None, 40, 0])
def test_nms_matches_golden_row_for_row(matrix_max, monkeypatch):
    # None: one IoU matrix for all 48 boxes; 40: per-class matrices; 0: one row at a time
    if matrix_max is not None:
        monkeypatch.setattr("minidarknet.boxes._FULL_MATRIX_MAX", matrix_max)
    exp = np.load(GOLDEN / "expected.npz")
    dets = detections_from_array(exp["detections_prenms"])
    out = do_nms_sort(dets, 80, 0.45)
    assert out is dets
    got = detections_to_array(dets)
    assert got.shape == exp["detections"].shape
    np.testing.assert_allclose(got, exp["detections"], rtol=0, atol=1e-6)


@needs_golden
def test_yolo_decoding_matches_golden():
    exp = np.load(GOLDEN / "expected.npz")
    dets = (yolo_boxes(exp["layer16_output"][0], [3, 4, 5], TINY_ANCHORS, 80, 64, 64, 0.1)
            + yolo_boxes(exp["layer23_output"], [0, 1, 2], TINY_ANCHORS, 80, 64, 64, 0.1))
    correct_boxes(dets, 64, 64, 64, 64)
    np.testing.assert_allclose(detections_to_array(dets), exp["detections_prenms"],
                               rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- yolo

def test_yolo_boxes_synthetic():
    classes, n, gh, gw = 2, 2, 2, 3
    out = np.zeros((n, 5 + classes, gh, gw), F)
    out[:, 4] = 0.05                                 # objectness below thresh everywhere
    # cell (row 1, col 2), anchor slot 1: obj .8, x .5, y .25, tw = log 2, th = 0
    out[1, :, 1, 2] = [0.5, 0.25, np.log(2), 0, 0.8, 0.5, 0.9]
    # cell (row 0, col 1), both anchors
    out[0, :, 0, 1] = [0.1, 0.2, 0, 0, 0.6, 0.1, 0.5]
    out[1, :, 0, 1] = [0.3, 0.4, 0, np.log(0.5), 0.7, 0.2, 0.05]
    anchors = [[10, 20], [30, 40], [50, 60]]
    dets = yolo_boxes(out.reshape(-1, gh, gw), [2, 0], anchors, classes, 100, 200, 0.25)
    assert len(dets) == 3
    a, b, c = dets                                    # cell (0,1) a0, a1, then cell (1,2) a1
    assert a.x == pytest.approx((1 + 0.1) / 3) and a.y == pytest.approx((0 + 0.2) / 2)
    assert a.w == pytest.approx(50 / 100) and a.h == pytest.approx(60 / 200)   # mask[0] = 2
    assert a.objectness == pytest.approx(0.6)
    np.testing.assert_allclose(a.prob, [0, 0.6 * 0.5], rtol=1e-6)           # .06 <= .25 -> 0
    assert b.w == pytest.approx(10 / 100) and b.h == pytest.approx(0.5 * 20 / 200)
    np.testing.assert_allclose(b.prob, [0, 0], rtol=1e-6)                   # .14, .035
    assert c.x == pytest.approx((2 + 0.5) / 3) and c.y == pytest.approx((1 + 0.25) / 2)
    assert c.w == pytest.approx(2 * 10 / 100, rel=1e-6) and c.h == pytest.approx(20 / 200)
    np.testing.assert_allclose(c.prob, [0.8 * 0.5, 0.8 * 0.9], rtol=1e-6)
    assert all(d.prob.dtype == F and d.classes == 2 for d in dets)


def test_yolo_boxes_threshold_is_strict_and_float32():
    out = np.zeros((6, 1, 1), F)
    out[4] = F(0.5)
    out[5] = F(1.0)
    assert yolo_boxes(out, [0], [1, 1], 1, 1, 1, 0.5) == []
    assert len(yolo_boxes(out, [0], [1, 1], 1, 1, 1, 0.4999)) == 1
    out[4] = F(0.1)                                  # float32(.1) > 0.1 in double, not in float
    assert yolo_boxes(out, [0], [1, 1], 1, 1, 1, 0.1) == []


def test_yolo_scale_x_y_and_new_coords():
    out = np.zeros((6, 1, 2), F)
    out[:, 0, 1] = [0.5, 1.0, 0.5, 0.25, 0.9, 1.0]
    d, = yolo_boxes(out, [0], [8, 16], 1, 32, 32, 0.5, scale_x_y=2.0, new_coords=True)
    assert d.x == pytest.approx((1 + (0.5 * 2 - 0.5)) / 2)
    assert d.y == pytest.approx(0 + (1.0 * 2 - 0.5))
    assert d.w == pytest.approx(0.5 ** 2 * 4 * 8 / 32) and d.h == pytest.approx(0.25 ** 2 * 4 * 16 / 32)


def test_yolo_shape_errors():
    with pytest.raises(ShapeError):
        yolo_boxes(np.zeros((10, 2, 2), F), [0, 1], TINY_ANCHORS, 80, 64, 64, 0.5)
    with pytest.raises(ShapeError):
        yolo_boxes(np.zeros((6, 2, 2), F), [7], TINY_ANCHORS, 1, 64, 64, 0.5)


# --------------------------------------------------------------------------- region / detection

def test_region_boxes_order_and_zeroing():
    n, classes, coords, gh, gw = 2, 3, 4, 1, 2
    out = np.zeros((n, coords + 1 + classes, gh, gw), F)
    out[0, :, 0, 0] = [0.5, 0.5, 0, 0, 0.9, 0.2, 0.7, 0.1]
    out[0, :, 0, 1] = [0.5, 0.5, 0, 0, 0.3, 0.2, 0.7, 0.1]      # obj .3 <= .4 -> zeroed
    out[1, :, 0, 0] = [0.0, 0.0, np.log(2), 0, 0.5, 0.9, 0.05, 0.05]
    out[1, :, 0, 1] = [0.25, 0.75, 0, 0, 0.41, 1.0, 0, 0]
    dets = region_boxes(out.reshape(-1, gh, gw), [1, 2, 3, 4], classes, coords, 0.4)
    assert len(dets) == 4                                       # every cell x anchor
    # Darknet's array order is anchor*h*w + cell
    assert [(d.x, d.y) for d in dets][:2] == [pytest.approx((0.25, 0.5)), pytest.approx((0.75, 0.5))]
    assert dets[0].w == pytest.approx(1 / 2) and dets[0].h == pytest.approx(2 / 1)
    assert dets[2].w == pytest.approx(2 * 3 / 2) and dets[2].h == pytest.approx(4 / 1)
    assert dets[1].objectness == 0 and not dets[1].prob.any()
    np.testing.assert_allclose(dets[0].prob, [0, 0.9 * 0.7, 0], rtol=1e-6)
    np.testing.assert_allclose(dets[2].prob, [0.45, 0, 0], rtol=1e-6)
    assert dets[3].objectness == pytest.approx(0.41)
    np.testing.assert_allclose(dets[3].prob, [0.41, 0, 0], rtol=1e-6)


def test_detection_layer_boxes():
    side, num, classes = 2, 2, 3
    cells = side * side
    cls = np.zeros((cells, classes), F)
    cls[3] = [0.1, 0.8, 0.1]
    conf = np.zeros((cells, num), F)
    conf[3, 1] = 0.5
    boxes = np.zeros((cells, num, 4), F)
    boxes[3, 1] = [0.5, 0.5, 0.6, 0.4]
    out = np.concatenate([cls.ravel(), conf.ravel(), boxes.ravel()])
    dets = detection_layer_boxes(out, side, num, classes, 0.2, sqrt=True)
    assert len(dets) == cells * num
    d = dets[3 * num + 1]
    assert (d.x, d.y) == (pytest.approx(0.75), pytest.approx(0.75))
    assert (d.w, d.h) == (pytest.approx(0.36), pytest.approx(0.16))
    assert d.objectness == pytest.approx(0.5)
    np.testing.assert_allclose(d.prob, [0, 0.4, 0], rtol=1e-6)
    assert sum(x.prob.any() for x in dets) == 1
    with pytest.raises(ShapeError):
        detection_layer_boxes(out[:-1], side, num, classes, 0.2)


# --------------------------------------------------------------------------- correct_boxes

def test_correct_boxes_identity_when_image_is_net_size():
    dets = [det(0.3, 0.6, 0.2, 0.1, 0.9, [0.9]), det(0.0, 1.0, 1.5, 0.05, 0.5, [0.5])]
    before = detections_to_array(dets)
    assert correct_boxes(dets, 416, 416, 416, 416) is dets
    np.testing.assert_array_equal(detections_to_array(dets), before)


def test_correct_boxes_letterbox_by_hand():
    # image 200x100 in a 100x100 net: letterboxed to 100x50, 25 px bars above and below
    dets = [det(0.5, 0.5, 0.2, 0.1, 1, [1]), det(0.25, 0.3, 0.5, 0.5, 1, [1])]
    correct_boxes(dets, 200, 100, 100, 100)
    a, b = dets
    assert (a.x, a.y, a.w, a.h) == (pytest.approx(0.5), pytest.approx(0.5),
                                    pytest.approx(0.2), pytest.approx(0.2))
    assert (b.x, b.y, b.w, b.h) == (pytest.approx(0.25), pytest.approx(0.1),
                                    pytest.approx(0.5), pytest.approx(1.0))
    c = [det(0.25, 0.3, 0.5, 0.5, 1, [1])]
    correct_boxes(c, 200, 100, 100, 100, relative=False)
    assert (c[0].x, c[0].y, c[0].w, c[0].h) == (pytest.approx(50), pytest.approx(10),
                                                pytest.approx(100), pytest.approx(100))
    s = [det(0.25, 0.3, 0.5, 0.5, 1, [1])]
    correct_boxes(s, 200, 100, 100, 100, letterbox=False)      # stretched: unchanged
    assert (s[0].x, s[0].y, s[0].w, s[0].h) == (0.25, pytest.approx(0.3), 0.5, 0.5)


# --------------------------------------------------------------------------- IoU / NMS

def test_box_iou():
    assert box_iou((0.5, 0.5, 0.2, 0.2), (0.5, 0.5, 0.2, 0.2)) == pytest.approx(1)
    assert box_iou((0.1, 0.1, 0.1, 0.1), (0.9, 0.9, 0.1, 0.1)) == 0
    assert box_iou((0, 0, 2, 2), (1, 0, 2, 2)) == pytest.approx(1 / 3)
    ious = box_iou(np.array([0, 0, 2, 2], F), np.array([[0, 0, 2, 2], [1, 0, 2, 2], [5, 5, 1, 1]], F))
    np.testing.assert_allclose(ious, [1, 1 / 3, 0], rtol=1e-6)
    assert box_iou(det(0, 0, 2, 2, 1, [1]), det(0, 1, 2, 2, 1, [1])) == pytest.approx(1 / 3)


def test_nms_moves_zero_objectness_with_swap_loop():
    dets = [det(i / 10, 0.5, 0.05, 0.05, obj, [0.5 if obj else 0]) for i, obj in
            enumerate([0, 0.9, 0, 0.8, 0.7])]
    names = [d.x for d in dets]
    do_nms_sort(dets, 1, 0.45)
    # swap loop: i=0 swaps with 4 -> [4,1,2,3,0]; i=2 swaps with 3 -> [4,1,3,2,0]
    # then a stable sort of [4,1,3] by prob (all equal) keeps that order
    assert [d.x for d in dets] == [names[4], names[1], names[3], names[2], names[0]]


def test_nms_stable_sort_and_greedy_suppression():
    # class 0: A (.9) overlaps B (.8) heavily; B overlaps C (.7) but A does not overlap C
    A = det(0.30, 0.5, 0.2, 0.2, 1, [0.9, 0.0])
    B = det(0.33, 0.5, 0.2, 0.2, 1, [0.8, 0.6])
    C = det(0.36, 0.5, 0.2, 0.2, 1, [0.7, 0.6])       # ties B on class 1
    D = det(0.90, 0.9, 0.1, 0.1, 1, [0.0, 0.6])
    assert box_iou(A, B) > 0.45 and box_iou(B, C) > 0.45 and box_iou(A, C) < 0.6
    dets = [D, C, B, A]
    do_nms_sort(dets, 2, 0.6)
    # class 0 sort: A, B, C, D; A kills B (iou .74 > .6), C survives (A-C iou .54)
    # class 1 stable sort (B, C, D tie at .6, keep the class-0 order), A last
    assert dets == [B, C, D, A]
    np.testing.assert_allclose(A.prob, [0.9, 0])
    np.testing.assert_allclose(B.prob, [0, 0.6])
    np.testing.assert_allclose(C.prob, [0.7, 0])                 # class 1: B kills C
    np.testing.assert_allclose(D.prob, [0, 0.6])


def test_nms_empty_and_all_zero():
    assert do_nms_sort([], 3, 0.45) == []
    dets = [det(0.5, 0.5, 0.1, 0.1, 0, [0, 0])]
    assert do_nms_sort(dets, 2, 0.45) == dets


# --------------------------------------------------------------------------- output

def test_class_color():
    assert class_color(0, 80) == (255, 0, 255)
    # offset = 123457 % 80 = 17, ratio 17/80*5 = 1.0625 between blue and cyan ramp points
    assert class_color(1, 80) == (255, 15, 0)
    assert class_color(0, 1) == (255, 0, 255)


def test_to_pixels_clamps_like_darknet():
    d = det(0.0625, 0.5, 0.25, 0.5, 1, [1])
    assert d.to_pixels(128, 200) == (0, 50, 24, 150)
    d = det(0.9375, 0.875, 0.25, 0.5, 1, [1])
    assert d.to_pixels(128, 200) == (104, 125, 127, 199)
    # (float32(.5) - float32(.4)/2.) * 300 = 89.99999...: Darknet truncates to 89
    assert det(0.5, 0.5, 0.4, 0.5, 1, [1]).to_pixels(300, 200)[0] == 89


def test_draw_detections_box_colour():
    img = np.zeros((3, 200, 320), F)
    dets = [det(0.5, 0.5, 0.375, 0.5, 0.9, [0.0, 0.8, 0.0]),
            det(0.2, 0.2, 0.1, 0.1, 0.9, [0.1, 0.1, 0.1])]          # below thresh: not drawn
    out = draw_detections(img, dets, ["a", "b", "c"], 0.5)
    assert isinstance(out, Image.Image) and out.size == (320, 200) and out.mode == "RGB"
    arr = np.asarray(out)
    left, top, right, bot = dets[0].to_pixels(320, 200)
    assert (left, top, right, bot) == (100, 50, 220, 150)
    colour = class_color(1, 3)
    for y, x in [(bot, left + 5), (bot, right - 5), (top + 50, left), (top + 50, right),
                 (bot, left), (bot, right)]:
        assert tuple(arr[y, x]) == colour, (y, x)
    assert tuple(arr[bot - 1, left + 40]) == (0, 0, 0)             # width int(200*.006) = 1
    assert tuple(arr[top + 50, left + 1]) == (0, 0, 0)             # inside untouched
    assert (arr[10:30, 50:70] == 0).all()                          # second det not drawn
    label_pixels = arr[:top, left:left + 20]                       # label sits above the box
    assert (label_pixels == colour).all(axis=-1).any()
    assert not img.any()                                           # input not modified


def test_draw_detections_pil_input_thick_box():
    pil = Image.new("RGB", (400, 500), (255, 255, 255))
    d = det(0.5, 0.5, 0.5, 0.5, 1, [0.9])
    arr = np.asarray(draw_detections(pil, [d], None, 0.5))
    left, top, right, bot = d.to_pixels(400, 500)
    for i in range(int(500 * .006)):                               # 3 nested rectangles
        assert tuple(arr[bot - i, left + 50]) == class_color(0, 1)
    assert tuple(arr[bot - 3, left + 50]) == (255, 255, 255)


def test_format_detections_and_to_dict():
    d = det(0.5, 0.5, 0.25, 0.25, 0.99, [0.985, 0.0, 0.4999, 0.7])
    lines = format_detections([d], ["cat", "dog", "bird", "fish"], 0.5, 128, 64)
    # float32(.985)*100 rounds to exactly 98.5 in float32 -> "%.0f" gives 98 (99 in double);
    # bird (.4999) is not above thresh
    assert lines == ["cat: 98%\t(left: 48, top: 24, right: 80, bottom: 40)",
                     "fish: 70%\t(left: 48, top: 24, right: 80, bottom: 40)"]
    assert format_detections([d], None, 0.5, 128, 64)[0].startswith("0: 98%")
    out = d.to_dict(["cat", "dog", "bird", "fish"], 128, 64)
    json.dumps(out)
    assert [c["name"] for c in out["classes"]] == ["cat", "bird", "fish"]
    assert (out["left"], out["top"], out["right"], out["bottom"]) == (48, 24, 80, 40)
    assert "left" not in d.to_dict()
