"""Every AlexeyAB detector cfg of the corpus (../shared/darknet-cfg/alexeyab, those with
[yolo], [Gaussian_yolo] or [region]) trains: one iteration (forward with a truth, backward,
update) with fork="alexeyab", batch 1, at 64x64 (128x128 where the network's strides need
it), with synthetic truths in the layout the network's last detection layer reads.  Each
iteration must give a finite cost, finite non-zero loss deltas, a gradient reaching the head's
convolution, and run the update.

[region] cfgs train with pjreddie's region loss (AlexeyAB's own CPU [region] is not
reproduced), whose CPU backward sends nothing to the layer before.  Files that cannot train
say why in one line: yolo9000 cannot even be built without its tree
file (as in Darknet), and [contrastive] (the tracker's embedding loss) is not implemented.

The networks are built in two worker processes (this machine has two cores), with their
random initial weights replaced by lazily zeroed arrays and small random biases: drawing
hundreds of millions of random numbers would dominate the run, and biases are enough to make
every head's input vary by channel.
"""
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import CFG_CORPUS, need_shared

AB_CORPUS = CFG_CORPUS / "alexeyab"
HEADS = ("[yolo]", "[Gaussian_yolo]", "[region]")
DETECTORS = sorted(p for p in AB_CORPUS.glob("*.cfg")
                   if any(h in p.read_text(errors="replace") for h in HEADS)) \
    if AB_CORPUS.exists() else []
SIZES = (64, 128)           # the first at which the network builds
# Files that cannot train, with the text their one-line error must contain.
CANNOT_TRAIN = {
    "yolo9000.cfg": "tree=data/9k.tree",
    "yolov4-tiny_contrastive.cfg": "[contrastive]: training",
}


def synthetic_truth(net, rng, boxes=4):
    """Boxes of the last detection layer's layout: x, y, w, h, class (, track_id 0)."""
    heads = [l for l in net.layers if l.type in ("yolo", "Gaussian_yolo", "region")]
    head = heads[-1]
    floats = getattr(head, "truth_floats", 5)
    rows = np.zeros((boxes, floats), np.float32)
    rows[:, 0:2] = rng.uniform(.1, .9, (boxes, 2))
    rows[:, 2:4] = rng.uniform(.05, .6, (boxes, 2))
    rows[:, 4] = rng.integers(0, head.classes, boxes)
    truth = np.zeros((1, net.truths), np.float32)
    truth[0, :rows.size] = rows.reshape(-1)
    return truth, floats


def train_once(path):
    """Build at a small size, run one training iteration; return what the test checks."""
    import minidarknet
    from minidarknet.errors import CfgError
    net = None
    for size in SIZES:
        try:
            net = minidarknet.load(path, batch=1, width=size, height=size, fork="alexeyab")
            break
        except CfgError as e:
            if "tree" in str(e) or size == SIZES[-1]:
                raise
    rng = np.random.default_rng(0)
    for layer in net.layers:
        if getattr(layer, "biases", None) is not None and hasattr(layer, "weights"):
            layer.biases[...] = rng.normal(0, .5, layer.biases.shape)
    truth, floats = synthetic_truth(net, rng)
    x = rng.uniform(0, 1, (1, net.c, net.h, net.w)).astype(np.float32)
    head = [l for l in net.layers if l.type in ("yolo", "Gaussian_yolo", "region")][-1]
    conv = head_conv(net, head)
    net.forward(x, truth, train=True)
    net.backward()
    gradient = conv.bias_updates.copy()
    net.update()
    losses = [l for l in net.layers if l.has_cost]
    return {"size": size, "cost": float(net.cost), "floats": floats, "truths": net.truths,
            "max_boxes": int(getattr(head, "max_boxes", 0)),
            "head_delta_finite": all(bool(np.isfinite(l.delta).all()) for l in losses),
            "head_delta_nonzero": all(bool(np.abs(l.delta).max() > 0) for l in losses),
            "head_gradient": bool(np.abs(gradient).max() > 0),
            # Darknet's update ends with updates *= momentum
            "updated": bool(np.allclose(conv.bias_updates, gradient * np.float32(net.momentum)))}


def head_conv(net, head):
    """The convolution feeding a detection head (its biases always train)."""
    return net.layers[head.index - 1]


def worker(out, paths):
    """Run in a subprocess: train each file once; write {name: result or error text}."""
    from minidarknet import layers
    from minidarknet.errors import MiniDarknetError
    for info in pkgutil.iter_modules(layers.__path__):
        module = importlib.import_module(f"minidarknet.layers.{info.name}")
        if hasattr(module, "uniform_weights"):
            module.uniform_weights = lambda rng, shape, scale: np.zeros(shape, np.float32)
    results = {}
    for path in paths:
        name = Path(path).name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results[name] = train_once(path)
        except MiniDarknetError as e:
            results[name] = {"error": str(e)}
        except Exception:           # reported by the test for this file
            results[name] = {"crash": traceback.format_exc()}
    Path(out).write_text(json.dumps(results))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    need_shared(AB_CORPUS)
    workdir = tmp_path_factory.mktemp("empty-cwd")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                           os.environ.get("PYTHONPATH", "")]))
    # balance the two workers: largest files alternate
    ordered = sorted(DETECTORS, key=lambda p: -p.stat().st_size)
    jobs = []
    for part in range(2):
        out = workdir.parent / f"corpus-train-{part}.json"
        jobs.append((out, subprocess.Popen(
            [sys.executable, "-c", "import sys, test_corpus_train as t; "
             "t.worker(sys.argv[1], sys.argv[2:])", str(out),
             *[str(p) for p in ordered[part::2]]],
            cwd=workdir, env=env, stderr=subprocess.PIPE, text=True)))
    results = {}
    for out, job in jobs:
        _, err = job.communicate()
        assert job.returncode == 0, err
        results.update(json.loads(out.read_text()))
    return results


def test_the_detectors_are_there():
    need_shared(AB_CORPUS)
    assert len(DETECTORS) >= 50


@pytest.mark.parametrize("path", DETECTORS, ids=[p.name for p in DETECTORS])
def test_every_alexeyab_detector_trains_one_iteration(path, trained):
    result = trained[path.name]
    assert "crash" not in result, result.get("crash")
    if path.name in CANNOT_TRAIN:
        assert CANNOT_TRAIN[path.name] in result.get("error", ""), result
        assert "\n" not in result["error"]
        return
    assert "error" not in result, result["error"]
    assert np.isfinite(result["cost"]) and result["cost"] > 0
    assert result["head_delta_finite"] and result["head_delta_nonzero"]
    assert result["updated"]
    text = path.read_text(errors="replace")
    # [region] trains with pjreddie's CPU region loss, whose backward passes nothing on
    # (AlexeyAB's CPU [region], the YOLOv2-era layer, is not reproduced)
    assert result["head_gradient"] == ("[region]" not in text)
    if "[yolo]" in text or "[Gaussian_yolo]" in text:
        # AlexeyAB's truth: max= boxes (default 200) of x, y, w, h, class, track_id
        assert result["floats"] == 6
        assert result["truths"] == 6 * result["max_boxes"]
