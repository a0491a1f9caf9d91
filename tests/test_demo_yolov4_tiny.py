"""A short version of the YOLOv4-tiny demo (docs/demos.md): cfg/demo-yolov4-tiny.cfg, with
AlexeyAB's loss (CIoU, scale_x_y, normalizers) and its mosaic loader, learns the synthetic
detection set.  The full demo takes minutes; this runs 120 iterations of 8 inputs drawn from
24 pictures and checks that training runs with AlexeyAB's fork and loader and that the loss
falls, not the final figures (120 iterations are too few for the detections to mean much:
the full demo has mAP 0.2 after 200 iterations of 16)."""
from pathlib import Path

import numpy as np
from PIL import Image

import minidarknet
from minidarknet.data import open_data
from minidarknet.synthetic import make_detection

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "cfg" / "demo-yolov4-tiny.cfg"


def objectness(net, x):
    """Per picture and cell of the 8x8 grid: the best objectness of any anchor of the two
    heads (the 4x4 head's cells cover 2x2 cells of the 8x8 grid)."""
    net.forward(x)
    maps = []
    for head in (l for l in net.layers if l.type == "yolo"):
        out = head.output.reshape(len(x), head.n, -1, head.out_h, head.out_w)
        best = out[:, :, 4].max(axis=1)
        scale = 8 // head.out_h
        maps.append(best.repeat(scale, axis=1).repeat(scale, axis=2))
    return np.maximum(*maps)


def test_yolov4_tiny_demo_learns_with_mosaic_and_ciou(tmp_path):
    # 24 pictures seen through mosaics, flips and colour changes for 120 iterations of 8
    data = make_detection(tmp_path / "det", classes=3, train=24, valid=8, seed=2)
    result = minidarknet.train(CFG, data.data, max_batches=120, out=tmp_path / "w", seed=0,
                               overrides={"net.batch": 8, "net.burn_in": 10})
    assert result.status == "finished" and result.iterations == 120
    net = minidarknet.load(CFG, result.weights, batch=24)
    assert net.fork.name == "alexeyab"             # chosen by the cfg's AlexeyAB-only keys
    loader = open_data(data.data, net).ab_loader
    assert loader is not None and loader.options.mosaic == 1
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-10:])
    assert last < 0.15 * first, (first, last)      # measured: 41 -> 2.5
    obj = objectness(net, np.stack([np.asarray(Image.open(p), np.float32).transpose(2, 0, 1)
                                    / 255 for p in (tmp_path / "det" / "train.txt")
                                    .read_text().split()]))
    assert np.isfinite(obj).all()
