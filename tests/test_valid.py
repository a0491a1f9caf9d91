"""Validation metrics (top-k, AlexeyAB's mAP) on hand-made cases, and `minidarknet valid`."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import minidarknet
from minidarknet.boxes import Detection
from minidarknet.metrics import detection_map, topk_accuracy, topk_correct
from minidarknet.valid import validate
from tests.conftest import ROOT


# --------------------------------------------------------------------------- top-k

def test_topk_by_hand():
    scores = np.array([[.1, .7, .2], [.5, .2, .3], [.3, .3, .4], [.2, .2, .6]])
    labels = np.array([1, 2, 0, 1])
    assert topk_correct(scores, labels, 1) == 1
    assert topk_correct(scores, labels, 2) == 3      # row 3: a tie at .2 goes to class 0
    assert topk_accuracy(scores, labels, 5) == 1.0   # k is capped at the class count


# --------------------------------------------------------------------------- mAP

def det(x, y, w, h, probs):
    return Detection(x, y, w, h, max(probs), probs)


A, B, C = (.25, .25, .2, .2), (.75, .75, .2, .2), (.5, .5, .4, .4)
TRUTHS = [np.array([[0, *A], [0, *B]]), np.array([[1, *C]])]
DETECTIONS = [
    [det(*A, [.9, 0, 0]),                       # rank 0: hits A (class 0)
     det(.27, .25, .2, .2, [.8, 0, 0]),         # rank 2: IoU .82 with A, already claimed: FP
     det(.9, .1, .1, .1, [.7, 0, 0]),           # rank 3: nothing there: FP
     det(*B, [.6, 0, 0])],                      # rank 4: hits B
    [det(*C, [.1, .85, 0])],                    # rank 1: class 1 hits C; rank 5: class 0 FP
]


def test_map_area_under_curve_by_hand():
    """Class 0 (2 truths), ranks over all records: precision 1, 1, 1/2, 1/3, 1/2, 2/5 and
    recall 1/2, 1/2, 1/2, 1/2, 1, 1.  AlexeyAB sums (recall[r+1]-recall[r]) * max(precision
    at ranks >= r) for r = 4..0: only r = 3 adds (1 - 1/2) * 1/2 = 1/4; the first step (0 ->
    1/2 at rank 0) is never added.  Class 1 (1 truth): precision 0 then 1, recall 0 then 1:
    AP 1.  Class 2 has no truths: AP 0.  mAP = (1/4 + 1 + 0) / 3."""
    result = detection_map(DETECTIONS, TRUTHS, classes=3)
    assert result.ap == pytest.approx([0.25, 1.0, 0.0])
    assert result.map == pytest.approx(1.25 / 3)
    assert result.detections == 6 and result.truths == 3 and result.truth_counts == [2, 1, 0]
    # At conf_thresh .25: TP = A, B, C; FP = the duplicate of A and the empty box.
    assert (result.tp, result.fp, result.fn) == (3, 2, 0)
    assert result.class_tp == [2, 1, 0] and result.class_fp == [2, 0, 0]
    assert result.precision == pytest.approx(.6) and result.recall == 1.0
    assert result.average_iou == pytest.approx(3 / 5)
    assert result.f1 == pytest.approx(.75)


def test_map_recall_points_by_hand():
    """11 points: class 0 has precision 1 at every recall level up to 1/2 (6 levels) and
    at most 1/2 above (5 levels): (6 + 2.5) / 11; class 1: 1."""
    result = detection_map(DETECTIONS, TRUTHS, classes=2, points=11)
    assert result.ap == pytest.approx([8.5 / 11, 1.0])
    assert result.map == pytest.approx((8.5 / 11 + 1) / 2)
    coco = detection_map(DETECTIONS, TRUTHS, classes=2, points=101)
    assert coco.ap[1] == pytest.approx(1.0)


def test_map_of_a_perfect_detector_shows_darknets_first_step():
    truths = [np.array([[0, *A], [0, *B]])]
    perfect = [[det(*A, [.9]), det(*B, [.8])]]
    assert detection_map(perfect, truths, 1).map == pytest.approx(0.5)       # 1 - 1/n
    assert detection_map(perfect, truths, 1, points=11).map == pytest.approx(1.0)
    assert detection_map([[]], truths, 1).map == 0.0
    with pytest.raises(ValueError, match="points"):
        detection_map(perfect, truths, 1, points=1)


def test_map_matches_the_best_box_of_the_same_class_and_image():
    truths = [np.array([[0, .5, .5, .4, .4], [0, .52, .5, .4, .4], [1, .5, .5, .4, .4]]),
              np.array([[0, .5, .5, .4, .4]])]
    dets = [[det(.52, .5, .4, .4, [.9, 0]), det(.5, .5, .4, .4, [.8, 0])], []]
    result = detection_map(dets, truths, 2, points=11)
    # Both records match (best IoU: truth 1, then truth 0): two true positives of 3 truths.
    assert result.class_tp == [2, 0] and result.truth_counts == [3, 1]


# --------------------------------------------------------------------------- validate()

def write_classifier(tmp_path):
    cfg = tmp_path / "c.cfg"
    cfg.write_text("[net]\nbatch=2\ninputs=3\n\n[connected]\noutput=3\nactivation=linear\n\n"
                   "[softmax]\n")
    net = minidarknet.load(cfg)
    net.layers[0].weights[...] = np.eye(3, dtype=np.float32)
    net.layers[0].biases[...] = 0
    net.save_weights(tmp_path / "c.weights")
    x = np.array([[3, 2, 1], [1, 3, 2], [2, 1, 3], [1, 2, 3], [0, 0, 5]], np.float32)
    np.savez(tmp_path / "c.npz", x=x, y=np.array([0, 2, 2, 0, 2]))
    return cfg


def test_validate_classifier_top1_and_topk(tmp_path):
    cfg = write_classifier(tmp_path)
    report = validate(cfg, tmp_path / "c.npz", weights=tmp_path / "c.weights", top=2)
    # argmax: 0, 1, 2, 2, 2 -> 3 of 5; second choices: row 1 has 2, row 3 has 1 (not 0).
    assert report.kind == "classifier" and report.images == 5
    assert report.metrics == {"top1": pytest.approx(.6), "top2": pytest.approx(.8)}
    net = minidarknet.load(cfg, tmp_path / "c.weights")
    assert validate(cfg, tmp_path / "c.npz", net=net, batch=4).metrics["top3"] == 1.0
    assert net.batch == 2                             # the network's batch is put back


def write_detector(tmp_path):
    """A one-anchor [yolo] head on an 8x8/8 convolution whose objectness logit is
    -10 + 20 * (mean brightness of the cell): white cells give a sure box the size of the
    cell, a grey cell a box of probability ~.5, black cells nothing."""
    cfg = tmp_path / "d.cfg"
    cfg.write_text("[net]\nbatch=1\nwidth=32\nheight=32\nchannels=3\n\n"
                   "[convolutional]\nfilters=6\nsize=8\nstride=8\npad=0\nactivation=linear\n\n"
                   "[yolo]\nmask=0\nanchors=8,8\nclasses=1\nnum=1\n")
    net = minidarknet.load(cfg)
    conv = net.layers[0]
    conv.weights[...] = 0
    conv.weights[4] = 20 / (3 * 64)
    conv.biases[...] = [0, 0, 0, 0, -10, 10]
    net.save_weights(tmp_path / "d.weights")
    picture = np.zeros((32, 32, 3), np.uint8)
    picture[0:8, 0:8] = 255          # cell (row 0, col 0): object
    picture[16:24, 24:32] = 255      # cell (row 2, col 3): object
    picture[8:16, 8:16] = 128        # cell (row 1, col 1): a doubtful box, no object
    Image.fromarray(picture).save(tmp_path / "p.png")
    (tmp_path / "p.txt").write_text("0 0.125 0.125 0.25 0.25\n0 0.875 0.625 0.25 0.25\n"
                                    "0 0.125 0.875 0.25 0.25\n")     # the last one is missed
    (tmp_path / "v.txt").write_text("p.png\n")
    (tmp_path / "d.data").write_text("classes=1\ntrain=v.txt\nvalid=v.txt\nnames=n.txt\n")
    (tmp_path / "n.txt").write_text("thing\n")
    return cfg


def test_validate_detector_end_to_end(tmp_path):
    """Records: two hits (prob ~1) then the grey box (~.5); 3 truths.  Precision 1, 1, 2/3,
    recall 1/3, 2/3, 2/3.  Area under the curve (AlexeyAB): (2/3 - 1/3) * 1 = 1/3;
    11 points: precision 1 for the 7 levels up to .6, 0 above: 7/11."""
    cfg = write_detector(tmp_path)
    report = validate(cfg, tmp_path / "d.data", weights=tmp_path / "d.weights")
    assert report.kind == "detector" and report.names == ["thing"]
    assert report.detail.detections == 3 and report.detail.class_tp == [2]
    assert report.metrics == {"mAP@0.5": pytest.approx(1 / 3)}
    eleven = validate(cfg, tmp_path / "d.data", weights=tmp_path / "d.weights", points=11)
    assert eleven.metrics["mAP@0.5"] == pytest.approx(7 / 11)


def run_cli(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_valid_command(tmp_path):
    write_detector(tmp_path)
    done = run_cli(["valid", "d.cfg", "d.data", "-w", "d.weights", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["metrics"]["mAP@0.5"] == pytest.approx(1 / 3) and out["tp"] == 2
    text = run_cli(["valid", "d.cfg", "d.data", "-w", "d.weights", "--points", "11"], tmp_path)
    assert "class   0 thing" in text.stdout
    assert "mAP@0.5 (11 recall points) = 0.6364" in text.stdout
    write_classifier(tmp_path)
    done = run_cli(["valid", "c.cfg", "c.npz", "-w", "c.weights"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5 images: top-1: 0.6000, top-3: 1.0000"
    missing = run_cli(["valid", "c.cfg", "nothing.npz", "-w", "c.weights"], tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error: nothing.npz: no such")
