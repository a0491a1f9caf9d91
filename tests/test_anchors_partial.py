"""`minidarknet anchors` (AlexeyAB's calc_anchors, seeded) and `minidarknet partial`."""
import subprocess
import sys
import warnings

import numpy as np
import pytest

import minidarknet
from minidarknet.anchors import (_kmeans_once, centred_iou, kmeans_anchors, label_sizes,
                                 plan_heads, rewrite_cfg)
from minidarknet.errors import DarknetWarning
from minidarknet.synthetic import make_detection
from tests.conftest import ROOT

DEMO = ROOT / "cfg" / "demo-detector.cfg"
TINY = ROOT / "cfg" / "yolov3-tiny.cfg"


def run_cli(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def detection(tmp_path_factory):
    out = tmp_path_factory.mktemp("det")
    make_detection(out, train=40, valid=8, size=64, seed=3)
    return out / "detection.data"


# --------------------------------------------------------------------------- k-means

def test_centred_iou_by_hand():
    iou = centred_iou(np.array([[2., 4.]]), np.array([[4., 2.], [2., 4.], [1., 1.]]))
    # (2x4 vs 4x2): overlap 2x2 = 4, union 8 + 8 - 4 = 12; identical: 1; 1x1 inside: 1/8
    np.testing.assert_allclose(iou, [[4 / 12, 1.0, 1 / 8]])


def _darknet_kmeans(data, centres):
    """AlexeyAB's do_kmeans written as its C loops (expectation with 1 - IoU and strict '<',
    maximization with means, empty clusters keep their centre), from the given centres."""
    n, k = len(data), len(centres)
    centres = [list(c) for c in centres]
    assignment = [0] * n
    for _ in range(1000):
        changed = 0
        for i, (w, h) in enumerate(data):
            best, best_d = 0, float("inf")
            for j, (cw, ch) in enumerate(centres):
                inter = min(w, cw) * min(h, ch)
                d = 1 - inter / (w * h + cw * ch - inter)
                if d < best_d:
                    best, best_d = j, d
            changed += best != assignment[i]
            assignment[i] = best
        if not changed:
            break
        sums = [[0.0, 0.0, 0] for _ in range(k)]
        for (w, h), a in zip(data, assignment):
            sums[a][0] += w
            sums[a][1] += h
            sums[a][2] += 1
        centres = [[s[0] / s[2], s[1] / s[2]] if s[2] else c for s, c in zip(sums, centres)]
    return np.array(centres)


def test_kmeans_run_is_alexeyabs_loop():
    rng = np.random.default_rng(5)
    sizes = np.concatenate([rng.normal(m, m / 6, (40, 2)) for m in (10, 30, 80)]).clip(2)
    sizes = sizes.astype(np.float32)
    start = np.random.default_rng(11)
    init = sizes[np.random.default_rng(11).choice(len(sizes), 4, replace=False)]
    centres, rounds = _kmeans_once(sizes, 4, start)
    np.testing.assert_allclose(centres, _darknet_kmeans(sizes.astype(np.float64), init),
                               rtol=1e-12)
    assert 2 <= rounds < 1000


def test_kmeans_recovers_clusters_sorted_and_is_deterministic():
    rng = np.random.default_rng(0)
    true = np.array([[80, 40], [12, 20], [40, 90]], np.float32)
    sizes = np.concatenate([t * rng.uniform(0.95, 1.05, (50, 2)) for t in true])
    fit = kmeans_anchors(sizes, 3, seed=4, restarts=5, width=416)
    # sorted by area: 12x20, 80x40, 40x90; whole pixels as Darknet prints them at width > 32
    np.testing.assert_allclose(fit.anchors, [[12, 20], [80, 40], [40, 90]], atol=1)
    assert np.all(fit.anchors == np.rint(fit.anchors))
    again = kmeans_anchors(sizes, 3, seed=4, restarts=5, width=416)
    np.testing.assert_array_equal(fit.anchors, again.anchors)
    # the reported IoU is that of every box with its best (rounded) anchor
    assert fit.avg_iou == pytest.approx(centred_iou(sizes.astype(np.float64),
                                                    fit.anchors).max(axis=1).mean())
    assert fit.avg_iou > 0.9
    # best of several restarts is never worse than any of them
    assert max(fit.run_ious) >= fit.run_ious[0]
    small = kmeans_anchors(sizes / 32, 3, seed=4, width=13)     # grid units: 4 decimals
    assert np.all(np.round(small.anchors, 4) == small.anchors) and small.anchors.min() < 1


def test_too_few_distinct_boxes_is_an_error():
    with pytest.raises(minidarknet.DataError, match="cannot make 3 anchors"):
        kmeans_anchors(np.array([[5, 5], [5, 5], [6, 6]]), 3)


# --------------------------------------------------------------------------- heads, cfg

def test_head_split_finest_grid_gets_smallest_anchors():
    net = minidarknet.load(TINY, batch=1)
    anchors = np.array([[10, 10], [20, 20], [30, 30], [40, 40], [50, 50], [60, 60],
                        [70, 70]], np.float64)
    plans = plan_heads(net, anchors)
    # layer 16 is the 13x13 head (stride 32), layer 23 the 26x26 one (stride 16)
    assert [(p.layer.index, p.stride, p.mask, p.filters, p.conv.index) for p in plans] == \
        [(16, 32, [3, 4, 5, 6], 4 * 85, 15), (23, 16, [0, 1, 2], 3 * 85, 22)]
    text = TINY.read_text()
    new = rewrite_cfg(text, plans)
    changed = [(a, b) for a, b in zip(text.split("\n"), new.split("\n")) if a != b]
    assert len(text.split("\n")) == len(new.split("\n"))
    # 2nd head: mask 0,1,2 and filters 255 stay as they are
    assert ("filters=255", "filters=340") in changed and len(changed) == 6
    assert sum("anchors=10,10, 20,20, 30,30" in b for _, b in changed) == 2
    built = minidarknet.loads(new, batch=1)
    assert list(built.layers[16].mask) == [3, 4, 5, 6] and built.layers[16].total == 7


def test_rewrite_keeps_comments_and_adds_missing_keys():
    text = ("# top comment\n[net]\nwidth=32\nheight=32\nchannels=3\n\n"
            "[convolutional]\nfilters=99   # to be set\nsize=1\nstride=1\nactivation=linear\n"
            "\n; the head\n[yolo]\nclasses=1\nanchors=1,1\n\n# end\n")
    net = minidarknet.loads(text.replace("filters=99", "filters=6"), batch=1)
    plans = plan_heads(net, np.array([[4, 4], [8, 9]], np.float64))
    new = rewrite_cfg(text, plans)
    assert new.startswith("# top comment\n[net]") and new.endswith("\n# end\n")
    assert "filters=12  # to be set\n" in new and "; the head\n[yolo]" in new
    assert "anchors=4,4, 8,9\nmask=0,1\nnum=2\n" in new     # missing keys follow the last one
    assert minidarknet.loads(new).layers[1].n == 2


# --------------------------------------------------------------------------- the command

def test_anchors_command_writes_a_cfg_that_trains(detection, tmp_path):
    original = DEMO.read_bytes()
    args = ["anchors", str(detection), "--cfg", str(DEMO), "--num", "4", "--seed", "2",
            "--write", "new.cfg", "--plot", "boxes.png"]
    done = run_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert DEMO.read_bytes() == original
    lines = done.stdout.splitlines()
    anchors_line = next(l for l in lines if l.startswith("anchors = "))
    again = run_cli(args[:-4], tmp_path)                     # same seed, same anchors
    assert anchors_line in again.stdout.splitlines()
    # the figures printed are those of the labels: recompute them here
    sizes, images = label_sizes(detection, 64, 64)
    assert f"{len(sizes)} boxes from {images} images" in lines[0]
    anchors = np.array([[float(v) for v in pair.split(",")]
                        for pair in anchors_line[len("anchors = "):].split(", ")])
    avg = centred_iou(sizes.astype(np.float64), anchors).max(axis=1).mean()
    assert f"avg IoU = {avg * 100:.2f} %" in lines
    assert "mask=0,1,2,3" in done.stdout and "filters=32 in layer 7" in done.stdout
    assert (tmp_path / "boxes.png").stat().st_size > 1000
    new = (tmp_path / "new.cfg").read_text()
    assert new.startswith("# The detection demo") and "filters=32\n" in new
    net = minidarknet.load(tmp_path / "new.cfg")
    np.testing.assert_array_equal(net.layers[8].biases.reshape(-1, 2), anchors)
    result = minidarknet.train(tmp_path / "new.cfg", detection, max_batches=2,
                               overrides={"net.batch": 4})
    assert result.status == "finished" and np.isfinite(result.losses).all()
    refused = run_cli(["anchors", str(detection), "--cfg", "new.cfg", "--write", "new.cfg"],
                      tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "is the cfg being read" in refused.stderr
    assert (tmp_path / "new.cfg").read_text() == new


# --------------------------------------------------------------------------- partial

def test_partial_keeps_the_first_layers_bytes_and_resets_seen(tmp_path):
    net = minidarknet.load(DEMO, seed=7)
    net.seen = 12345
    net.save_weights(tmp_path / "full.weights")
    source = (tmp_path / "full.weights").read_bytes()
    done = run_cli(["partial", str(DEMO), "full.weights", "cut.weights", "5"], tmp_path)
    assert done.returncode == 0, done.stderr
    cut = (tmp_path / "cut.weights").read_bytes()
    floats = sum(layer.weight_count() for layer in net.layers[:5])
    assert len(cut) == 20 + 4 * floats and f"({floats} floats" in done.stdout
    assert cut[:12] == source[:12]                                  # version 0.2.0
    assert int(np.frombuffer(cut, "<u8", 1, 12)[0]) == 0             # seen reset
    assert int(np.frombuffer(source, "<u8", 1, 12)[0]) == 12345
    assert cut[20:] == source[20:20 + 4 * floats]
    fresh = minidarknet.load(DEMO, seed=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fresh.load_weights(tmp_path / "cut.weights")
    assert any(issubclass(w.category, DarknetWarning) and "ends before layer 6" in
               str(w.message) for w in caught)
    np.testing.assert_array_equal(fresh.layers[4].weights, net.layers[4].weights)
    assert not np.array_equal(fresh.layers[6].weights, net.layers[6].weights)
    assert fresh.seen == 0
    too_many = run_cli(["partial", str(DEMO), "full.weights", "x.weights", "10"], tmp_path)
    assert too_many.returncode == 2 and "the network has 9" in too_many.stderr
    short = run_cli(["partial", str(DEMO), "cut.weights", "x.weights", "8"], tmp_path)
    assert short.returncode == 2 and short.stderr.count("\n") == 1
    assert "ends before layer 6" in short.stderr and not (tmp_path / "x.weights").exists()
    same = run_cli(["partial", str(DEMO), "full.weights", "full.weights", "3"], tmp_path)
    assert same.returncode == 2 and (tmp_path / "full.weights").read_bytes() == source


def test_region_heads_get_anchors_in_grid_cells(detection, tmp_path):
    cfg = tmp_path / "v2.cfg"
    cfg.write_text("[net]\nwidth=64\nheight=64\nchannels=3\n\n[maxpool]\nsize=8\nstride=8\n\n"
                   "[convolutional]\nfilters=16\nsize=1\nstride=1\nactivation=linear\n\n"
                   "[region]\nanchors=1,1, 2,2\nclasses=3\nnum=2\n")
    done = run_cli(["anchors", str(detection), "--cfg", str(cfg), "--num", "3", "--write",
                    "new.cfg"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "grid 8x8 (cells)" in done.stdout and "all anchors" in done.stdout
    sizes, _ = label_sizes(detection, 8, 8)                  # the boxes in grid cells
    fit = kmeans_anchors(sizes, 3, seed=0, width=8)
    net = minidarknet.load(tmp_path / "new.cfg")
    np.testing.assert_allclose(net.layers[2].biases[:6].reshape(-1, 2), fit.anchors,
                               atol=1e-6)
    assert fit.anchors.max() < 4 and net.layers[1].out_c == 3 * 8   # filters = 3 * (3 + 5)
