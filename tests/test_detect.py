"""Network-level detections: Darknet's get_network_boxes + NMS over every detection head."""
import numpy as np
import pytest

import minidarknet
from conftest import GOLDEN, need_shared
from minidarknet.boxes import Detection, correct_boxes, detections_to_array, do_nms_sort
from minidarknet.detect import batch_detections, box_diou, diou_nms_sort, network_detections
from minidarknet.errors import ShapeError

F32 = np.float32


def golden_case():
    case = need_shared(GOLDEN / "yolov3_tiny_small")
    x = np.fromfile(case / "input.f32", "<f4").reshape(1, 3, 64, 64)
    return case, x, np.load(case / "expected.npz")


@pytest.fixture(scope="module")
def yolo_tiny():
    case, x, exp = golden_case()
    net = minidarknet.load(str(case / "net.cfg"), weights=str(case / "net.weights"))
    net.forward(x)
    return net, x, exp, case


def rows(dets):
    return detections_to_array(dets).astype(np.float64)


def close(got, want):
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max() + 1e-6


# --------------------------------------------------------------------------- Darknet's boxes

def test_golden_detections_row_for_row(yolo_tiny):
    net, _, exp, _ = yolo_tiny
    close(rows(network_detections(net, thresh=.1, hier=.5, nms=.45)), exp["detections"])
    close(rows(net.detections(thresh=.1, nms=.45)), exp["detections"])


def test_nms_zero_or_none_gives_the_decoded_boxes_in_darknet_order(yolo_tiny):
    net, _, exp, _ = yolo_tiny
    close(rows(network_detections(net, thresh=.1, nms=0)), exp["detections_prenms"])
    close(rows(network_detections(net, thresh=.1, nms=None)), exp["detections_prenms"])


def test_letterbox_correction_maps_to_the_original_image(yolo_tiny):
    net, _, exp, _ = yolo_tiny
    plain = network_detections(net, thresh=.1, nms=0)
    wide = network_detections(net, thresh=.1, nms=0, image_size=(128, 64))
    # 128x64 letterboxed into 64x64: 64x32 image in rows 16..47
    for p, d in zip(plain, wide):
        assert d.x == pytest.approx(p.x, rel=1e-6)
        assert d.w == pytest.approx(p.w, rel=1e-6)
        assert d.y == pytest.approx((p.y - .25) * 2, rel=1e-5, abs=1e-6)
        assert d.h == pytest.approx(p.h * 2, rel=1e-6)
    expected = correct_boxes(network_detections(net, thresh=.1, nms=0), 128, 64, 64, 64)
    close(rows(wide), rows(expected))
    stretched = network_detections(net, thresh=.1, nms=0, image_size=(128, 64), letterbox=False)
    close(rows(stretched), rows(plain))          # AlexeyAB's stretch: relative boxes unchanged


def test_each_sample_is_decoded_on_its_own_no_flip_averaging(yolo_tiny):
    _, x, exp, case = yolo_tiny
    net = minidarknet.load(str(case / "net.cfg"), weights=str(case / "net.weights"), batch=2)
    other = np.ascontiguousarray(x[:, :, :, ::-1])
    net.forward(np.concatenate([x, other]))
    close(rows(net.detections(thresh=.1, nms=.45, index=0)), exp["detections"])
    per_sample = batch_detections(net, thresh=.1, nms=.45)
    assert len(per_sample) == 2
    close(rows(per_sample[0]), exp["detections"])
    second = rows(per_sample[1])
    assert second.shape != exp["detections"].shape or not np.allclose(second, exp["detections"])
    single = minidarknet.load(str(case / "net.cfg"), weights=str(case / "net.weights"))
    single.forward(other)
    close(second, rows(single.detections(thresh=.1, nms=.45)))
    close(rows(net.detections(thresh=.1, nms=.45, index=-1)), second)
    sized = batch_detections(net, thresh=.1, nms=0, image_sizes=[(64, 64), (128, 64)])
    close(rows(sized[1]), rows(network_detections(net, thresh=.1, nms=0, index=1,
                                                  image_size=(128, 64))))


def test_diounms_kind_of_the_last_yolo_layer_is_used(yolo_tiny):
    net, x, _, case = yolo_tiny
    text = (case / "net.cfg").read_text().rstrip() + "\nnms_kind=diounms\nbeta_nms=0.8\n"
    diou = minidarknet.loads(text, weights=str(case / "net.weights"))
    diou.forward(x)
    got = diou.detections(thresh=.1, nms=.45)
    want = diou_nms_sort(network_detections(net, thresh=.1, nms=0), 80, .45, "diounms", 0.8)
    close(rows(got), rows(want))
    greedy = do_nms_sort(network_detections(net, thresh=.1, nms=0), 80, .45)
    # DIoU suppresses less than IoU: at least as many class probabilities survive
    assert (rows(got)[:, 5:] > 0).sum() >= (rows(greedy)[:, 5:] > 0).sum()


# --------------------------------------------------------------------------- DIoU-NMS

def pair():
    a = Detection(.5, .5, .4, .4, .9, [.9])
    b = Detection(.6, .5, .4, .4, .8, [.8])
    return [b, a]


def test_box_diou_by_hand():
    # IoU .12/.20 = .6; enclosing box .5 x .4 -> c = .41; d = .01
    want = .6 - (.01 / .41) ** .6
    assert float(box_diou([.5, .5, .4, .4], [.6, .5, .4, .4], .6)) == pytest.approx(want,
                                                                                   rel=1e-5)
    assert float(box_diou([.5, .5, 0, 0], [.5, .5, 0, 0], .6)) == 0   # c == 0: the IoU


def test_diou_nms_keeps_what_iou_nms_suppresses():
    iou = do_nms_sort(pair(), 1, .5)
    assert [d.prob[0] for d in iou] == [pytest.approx(.9), 0]        # sorted, b suppressed
    kept = diou_nms_sort(pair(), 1, .5, "diounms", 0.6)              # DIoU .492 < .5
    assert [float(d.prob[0]) for d in kept] == [pytest.approx(.9), pytest.approx(.8)]
    strict = diou_nms_sort(pair(), 1, .5, "diounms", 0.8)            # .6 - .051 = .549
    assert strict[1].prob[0] == 0
    greedy = diou_nms_sort(pair(), 1, .5, "greedynms", 0.8)          # always beta .6
    assert greedy[1].prob[0] == pytest.approx(.8)


def test_diou_nms_moves_zero_objectness_to_the_end():
    dets = [Detection(.1, .1, .1, .1, 0, [.5]), *pair()]
    out = diou_nms_sort(dets, 1, .5)
    assert out[-1].objectness == 0 and out[-1].prob[0] == pytest.approx(.5)


# --------------------------------------------------------------------------- region, YOLOv1

REGION = """[net]
width=64
height=64
channels=3

[convolutional]
filters=16
size=8
stride=16
pad=0
activation=linear

[region]
anchors = 0.57,0.67, 1.87,2.06
classes=3
coords=4
num=2
softmax=1
"""


def test_region_heads_give_every_cell_and_anchor_and_are_corrected():
    net = minidarknet.loads(REGION, seed=0)
    net.forward(np.random.default_rng(0).uniform(0, 1, (1, 3, 64, 64)).astype(F32))
    dets = network_detections(net, thresh=.3, nms=0)
    assert len(dets) == 4 * 4 * 2
    corrected = network_detections(net, thresh=.3, nms=0, image_size=(64, 128))
    for d, c in zip(dets, corrected):
        assert c.x == pytest.approx((d.x - .25) * 2, rel=1e-5, abs=1e-6)
        assert c.y == pytest.approx(d.y, rel=1e-6)
    assert all(d.objectness == 0 or d.objectness > .3 for d in dets)


YOLOV1 = """[net]
width=8
height=8
channels=1

[connected]
output={out}
activation=logistic

[detection]
classes=2
coords=4
side=2
num=2
softmax=0
sqrt=1
"""


def test_yolov1_boxes_are_relative_and_never_corrected():
    out = 2 * 2 * (2 * 5 + 2)
    net = minidarknet.loads(YOLOV1.format(out=out), seed=0)
    net.forward(np.random.default_rng(1).uniform(0, 1, (1, 1, 8, 8)).astype(F32))
    dets = network_detections(net, thresh=.2, nms=0)
    assert len(dets) == 2 * 2 * 2
    flat = net.layers[-1].output[0].ravel()
    # detection 3 = cell 1 (row 0, col 1), box 1; boxes start after classes and confidences
    box = flat[8 + 8 + 3 * 4:8 + 8 + 4 * 4]
    assert dets[3].x == pytest.approx((box[0] + 1) / 2, rel=1e-6)
    assert dets[3].w == pytest.approx(box[2] ** 2, rel=1e-5)
    assert dets[3].objectness == pytest.approx(flat[8 + 3])
    same = network_detections(net, thresh=.2, nms=0, image_size=(100, 50))
    close(rows(same), rows(dets))


# --------------------------------------------------------------------------- errors

def test_errors_name_the_problem():
    net = minidarknet.loads("[net]\nwidth=2\nheight=2\nchannels=1\n[softmax]\n")
    net.forward(np.zeros((1, 1, 2, 2), F32))
    with pytest.raises(ShapeError, match="no \\[yolo\\], \\[region\\] or \\[detection\\]"):
        network_detections(net)
    fresh = minidarknet.loads(REGION)
    with pytest.raises(ShapeError, match="forward"):
        network_detections(fresh)
    fresh.forward(np.zeros((1, 3, 64, 64), F32))
    with pytest.raises(ShapeError, match="index 3"):
        network_detections(fresh, index=3)
    with pytest.raises(ShapeError, match="image_size"):
        network_detections(fresh, image_size=(10,))
