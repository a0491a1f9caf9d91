"""Short versions of the two demos (docs/demos.md): the shipped cfgs learn the synthetic sets.

The full demos take 20 s to minutes; these run a few dozen iterations on small sets and check
that learning happens (the loss falls clearly, the classifier beats chance), not the final
figures."""
from pathlib import Path

import numpy as np
from PIL import Image

import minidarknet
from minidarknet.synthetic import make_detection, make_shapes
from minidarknet.valid import validate

ROOT = Path(__file__).resolve().parents[1]
SHAPES_CFG = ROOT / "cfg" / "demo-shapes.cfg"
DETECTOR_CFG = ROOT / "cfg" / "demo-detector.cfg"


def mean(values):
    return float(np.mean(values))


def test_shapes_demo_learns_the_synthetic_classes(tmp_path):
    data = make_shapes(tmp_path / "set", classes=6, train=600, valid=120, seed=1)
    # the cfg's schedule compressed into 250 iterations (poly decay to 0 at the end)
    result = minidarknet.train(SHAPES_CFG, data.data, out=tmp_path / "w", seed=0,
                               overrides={"net.max_batches": 250})
    assert result.status == "finished" and result.iterations == 250
    # the loss starts at chance (ln 6 = 1.79) and falls clearly
    assert mean(result.losses[:10]) > 1.5
    assert mean(result.losses[-20:]) < 0.6 * mean(result.losses[:10])
    report = validate(SHAPES_CFG, data.valid, weights=result.weights)
    assert report.images == 120
    assert report.metrics["top1"] > 0.5            # chance is 1/6


def objectness_maps(net, x):
    """The best anchor's objectness at every cell of the [yolo] grid: (images, rows, cols)."""
    head = net.layers[-1]
    out = net.forward(x).reshape(len(x), head.n, -1, head.out_h, head.out_w)
    return out[:, :, 4].max(axis=1)


def test_detector_demo_learns_to_find_the_shapes(tmp_path):
    data = make_detection(tmp_path / "det", classes=3, train=200, valid=40, seed=1)
    result = minidarknet.train(DETECTOR_CFG, data.data, max_batches=200, out=tmp_path / "w",
                               seed=0, overrides={"net.batch": 16, "net.burn_in": 10})
    assert result.status == "finished" and result.iterations == 200
    first, last = mean(result.losses[:5]), mean(result.losses[-10:])
    assert last < 0.2 * first, (first, last)
    # it has learnt where the shapes are: the cells holding a shape's centre say "object"
    # far more than the empty cells
    paths = (tmp_path / "det" / "valid.txt").read_text().split()
    x = np.stack([np.asarray(Image.open(p), np.float32).transpose(2, 0, 1) / 255
                  for p in paths])
    net = minidarknet.load(DETECTOR_CFG, result.weights, batch=len(x))
    objectness = objectness_maps(net, x)
    rows, cols = objectness.shape[1:]
    centres = np.zeros(objectness.shape, bool)
    for i, path in enumerate(paths):
        for line in Path(path).with_suffix(".txt").read_text().splitlines():
            _, bx, by, _, _ = map(float, line.split())
            centres[i, int(by * rows), int(bx * cols)] = True
    assert objectness[centres].mean() > 2.5 * objectness[~centres].mean()
    report = validate(DETECTOR_CFG, data.valid, weights=result.weights)
    assert report.images == 40
    assert report.metrics["mAP@0.5"] > 0.02
