"""COCO's metrics in `minidarknet valid` agree with pycocotools; --coco-json, --json keys."""
import contextlib
import io
import json

import numpy as np
import pytest

from minidarknet.cocometrics import coco_evaluate, coco_json, image_id, truth_arrays
from minidarknet.errors import DataError
from tests.squares import square_detector, squares_set


def run_cli(args, cwd, monkeypatch):
    """The command in this process (click's runner), from `cwd`."""
    from click.testing import CliRunner
    from minidarknet.cli import cli
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def pycocotools_stats(truths, sizes, ids, results, classes):
    """COCOeval's 12 numbers, with ground truth made from the YOLO labels."""
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = {"images": [{"id": i, "width": w, "height": h} for i, (w, h) in zip(ids, sizes)],
          "categories": [{"id": c, "name": str(c)} for c in range(classes)],
          "annotations": []}
    for i, truth, (w, h) in zip(ids, truths, sizes):
        boxes, cls, area = truth_arrays(truth, w, h)
        for box, c, a in zip(boxes, cls, area):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i,
                                      "category_id": int(c), "bbox": box.tolist(),
                                      "area": float(a), "iscrowd": 0})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def test_random_cases_match_pycocotools_all_summaries():
    """Jittered truths, duplicates and random boxes, with tied scores, every size range."""
    rng = np.random.default_rng(1)
    classes, truths, records, sizes = 4, [], [], []
    for _ in range(40):
        w, h = int(rng.integers(100, 640)), int(rng.integers(100, 480))
        m = int(rng.integers(0, 6))
        truth = np.column_stack([rng.integers(0, classes, m), rng.uniform(.2, .8, (m, 2)),
                                 rng.uniform(.02, .4, (m, 2))])
        boxes, cls, _ = truth_arrays(truth, w, h)
        k = int(rng.integers(0, 8))
        noise = np.column_stack([rng.uniform(0, w * .8, k), rng.uniform(0, h * .8, k),
                                 rng.uniform(5, w * .3, k), rng.uniform(5, h * .3, k)])
        jittered = boxes + rng.normal(0, 4, boxes.shape)
        jittered[:, 2:] = np.abs(jittered[:, 2:]) + 1
        records.append((np.concatenate([jittered, jittered + rng.uniform(-3, 3, boxes.shape),
                                        noise]),
                        np.round(rng.uniform(0, 1, 2 * m + k), 2),      # ties on purpose
                        np.concatenate([cls, cls, rng.integers(0, classes, k)])))
        truths.append(truth)
        sizes.append((w, h))
    ids = list(range(7, 47))
    ours = coco_evaluate(records, truths, sizes, classes, order=ids)
    stats = pycocotools_stats(truths, sizes, ids, coco_json(records, ids), classes)
    mine = [ours.ap50_95, ours.ap50, ours.ap75, ours.ap_small, ours.ap_medium, ours.ap_large]
    np.testing.assert_allclose(mine, stats[:6], atol=1e-12)
    assert ours.ar100 == pytest.approx(stats[8], abs=1e-12)
    assert 0.1 < ours.ap50_95 < ours.ap50 < 1


def test_image_id_is_darknets_number_in_the_name():
    assert image_id("a/COCO_val2014_000000000139.jpg") == 139
    assert image_id("x/00012.png") == 12 and image_id("img_007.png") == 7
    with pytest.raises(DataError, match="no number in the file name"):
        image_id("dog.jpg")


def test_valid_coco_json_agrees_with_pycocotools(tmp_path, monkeypatch):
    cfg, weights = square_detector(tmp_path)
    data = squares_set(tmp_path, 12)
    done = run_cli(["valid", str(cfg), str(data), "-w", str(weights), "--json",
                    "--coco-json", "dets.json"], tmp_path, monkeypatch)
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout[done.stdout.index("{"):])
    rows = json.loads((tmp_path / "dets.json").read_text())
    assert {r["image_id"] for r in rows} == set(range(1, 13))
    assert all(r["category_id"] == 0 and len(r["bbox"]) == 4 for r in rows)
    assert len(rows) == out["detections"]
    # ground truth from the YOLO labels beside the pictures
    from PIL import Image
    truths, sizes = [], []
    for i in range(1, 13):
        truths.append(np.loadtxt(tmp_path / f"img_{i:03d}.txt", ndmin=2))
        sizes.append(Image.open(tmp_path / f"img_{i:03d}.png").size)
    stats = pycocotools_stats(truths, sizes, list(range(1, 13)), rows, 1)
    assert out["ap50_95"] == pytest.approx(stats[0], abs=1e-4)
    assert out["ap50"] == pytest.approx(stats[1], abs=1e-4)
    assert out["ap_small"] == pytest.approx(stats[3], abs=1e-4) and out["ap_large"] is None
    # the boxes are off by up to 2 pixels: perfect at IoU .5, not at .95
    assert out["ap50"] == 1.0 and 0.3 < out["ap50_95"] < 0.9
    assert out["map50"] == out["metrics"]["mAP@0.5"] and out["voc11"] == 1.0
    assert out["per_class"][0]["name"] == "square"
    assert out["per_class"][0]["ap50_95"] == pytest.approx(out["ap50_95"])
    assert out["tp"] + out["fn"] == out["truths"] == sum(len(t) for t in truths)
    table = run_cli(["valid", str(cfg), str(data), "-w", str(weights)], tmp_path, monkeypatch)
    assert f"COCO AP@[.5:.95] = {out['ap50_95']:.4f}" in table.stdout
    assert "VOC 11-point 1.0000" in table.stdout and "large =    n/a" in table.stdout
