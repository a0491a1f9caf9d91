"""AlexeyAB's [yolo] / [Gaussian_yolo] training loss (layers/yolo_loss_ab.py).

* gradients="darknet": the layers' output, delta and cost against AlexeyAB's C code: the two
  [yolo] layers of ../shared/golden-ab/ab_yolo_ciou_train fed the dumped input, and 20 small
  cases (tests/data/ab_yolo_loss.npz, one per loss option and combinations of them) that
  AlexeyAB's forward_yolo_layer / forward_gaussian_yolo_layer (commit 59596d7, CPU, -O2)
  computed through tests/data/ab_yolo_harness.c.
* box.c's dx_box_iou: the derivatives it documents (IoU's dx exact and dw doubled, DIoU's
  penalty derivative not doubled, CIoU's alpha*v term without 1/(w^2+h^2)).
* gradients="exact": for every loss option the layer's input delta is minus the finite-
  difference gradient of the objective the module docstring defines.
"""
import json
import math
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

import minidarknet
from conftest import SHARED, need_shared
from minidarknet.errors import CfgError
from minidarknet.layers.yolo_loss_ab import dx_box_iou, iou_kind_gradient

try:                                   # the shared finite-difference helper
    from conftest import Check, check_all
except ImportError:
    from test_gradients import Check, check_all

F32 = np.float32
DATA = Path(__file__).parent / "data" / "ab_yolo_loss.npz"
GOLDEN_AB = SHARED / "golden-ab"


def feed(layer, x, truth, net_w, net_h):
    """Run one layer's forward on its own (the network's w, h given)."""
    fake = types.SimpleNamespace(input=np.ascontiguousarray(x, F32).reshape(x.shape[0], -1),
                                 truth=np.ascontiguousarray(truth, F32).reshape(x.shape[0], -1),
                                 w=net_w, h=net_h, delta=None)
    layer.forward(fake)


def assert_golden_close(got, expected, what):
    got = np.asarray(got, np.float64).reshape(np.shape(expected))
    err = np.abs(got - expected).max()
    bound = 1e-4 * np.abs(expected).max() + 1e-6
    assert err <= bound, f"{what}: max|diff| {err:.3g} > {bound:.3g}"


# --------------------------------------------------------------------------- golden

@pytest.mark.parametrize("index", [30, 37])
def test_ciou_heads_of_the_golden_case_alone(index):
    case = need_shared(GOLDEN_AB / "ab_yolo_ciou_train")
    exp = np.load(case / "expected.npz")
    truth = np.fromfile(case / "truth.f32", "<f4").reshape(2, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = minidarknet.load(case / "net.cfg", fork="alexeyab")
    layer = net.layers[index]
    assert layer.truths == 1200 and layer.truth_floats == 6 and layer.max_boxes == 200
    feed(layer, exp[f"layer{index - 1:02d}_output"], truth, net.w, net.h)
    for key, got in (("output", layer.output), ("delta", layer.delta), ("cost", [layer.cost])):
        assert_golden_close(got, exp[f"layer{index}_{key}"], f"layer{index}_{key}")


# --------------------------------------------------------------------------- C reference

def reference_cases():
    if not DATA.exists():
        return []
    with np.load(DATA) as data:
        return sorted({k.split("__")[0] for k in data.files})


def reference_cfg(opts, gaussian):
    """The cfg the harness case was made with (5x4 grid, network 80x64, batch 2)."""
    classes = opts.get("classes", 3)
    mask = opts.get("mask", [1, 2, 3])
    entries = classes + (9 if gaussian else 5)
    text = (f"[net]\nbatch=2\nwidth=5\nheight=4\nchannels={len(mask) * entries}\n"
            f"[{'Gaussian_yolo' if gaussian else 'yolo'}]\nmask={','.join(map(str, mask))}\n"
            f"anchors=4,6, 10,12, 18,26, 30,30, 50,60, 70,40\nclasses={classes}\nnum=6\n"
            f"max=20\n")
    for key, value in opts.items():
        if key in ("classes", "mask"):
            continue
        if key == "counters_per_class":
            value = ",".join(map(str, value))
        text += f"{key}={value}\n"
    return text


@pytest.mark.parametrize("name", reference_cases())
def test_loss_matches_alexeyab_c_code(name):
    with np.load(DATA) as data:
        meta = json.loads(str(data[f"{name}__opts"]))
        case = {k: data[f"{name}__{k}"] for k in ("input", "truth", "output", "delta", "cost")}
    net = minidarknet.loads(reference_cfg(meta["opts"], meta["gaussian"]), fork="alexeyab")
    layer = net.layers[0]
    x = case["input"].reshape(2, -1)
    feed(layer, x, case["truth"].reshape(2, -1), 80, 64)
    assert np.abs(case["delta"]).max() > 0
    assert_golden_close(layer.output, case["output"], "output")
    assert_golden_close(layer.delta, case["delta"], "delta")
    assert_golden_close([layer.cost], case["cost"], "cost")


# --------------------------------------------------------------------------- dx_box_iou

def numeric_box_gradient(kind_value, pred, truth, eps=1e-7):
    grad = np.zeros_like(pred)
    for j in range(4):
        p, m = pred.copy(), pred.copy()
        p[:, j] += eps
        m[:, j] -= eps
        grad[:, j] = (kind_value(p, truth) - kind_value(m, truth)) / (2 * eps)
    return grad


def overlapping_pairs(rng, count=20):
    pred = np.column_stack([rng.uniform(.3, .7, (count, 2)), rng.uniform(.2, .5, (count, 2))])
    truth = pred + np.column_stack([rng.uniform(-.1, .1, (count, 2)),
                                    rng.uniform(-.1, .1, (count, 2))])
    return pred, truth


def iou(p, t):
    return iou_kind_gradient(p, t, "iou")[0]        # float64 (box_iou_kinds is float32)


def enclosing_c2(p, t):
    cw = np.maximum(p[:, 0] + p[:, 2] / 2, t[:, 0] + t[:, 2] / 2) - \
        np.minimum(p[:, 0] - p[:, 2] / 2, t[:, 0] - t[:, 2] / 2)
    ch = np.maximum(p[:, 1] + p[:, 3] / 2, t[:, 1] + t[:, 3] / 2) - \
        np.minimum(p[:, 1] - p[:, 3] / 2, t[:, 1] - t[:, 3] / 2)
    return cw ** 2 + ch ** 2


def rho2(p, t):
    return (p[:, 0] - t[:, 0]) ** 2 + (p[:, 1] - t[:, 1]) ** 2


def rho2_over_c2(p, t):
    return rho2(p, t) / enclosing_c2(p, t)


def test_dx_box_iou_is_iou_gradient_with_w_h_doubled():
    pred, truth = overlapping_pairs(np.random.default_rng(0))
    got = dx_box_iou(pred, truth, "iou")
    want = numeric_box_gradient(iou, pred, truth)
    np.testing.assert_allclose(got[:, :2], want[:, :2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, 2:], 2 * want[:, 2:], rtol=1e-5, atol=1e-5)


def test_dx_box_iou_giou_is_giou_gradient_with_w_h_doubled():
    pred, truth = overlapping_pairs(np.random.default_rng(1))
    got = dx_box_iou(pred, truth, "giou")
    want = numeric_box_gradient(lambda p, t: iou_kind_gradient(p, t, "giou")[0], pred, truth)
    np.testing.assert_allclose(got[:, :2], want[:, :2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, 2:], 2 * want[:, 2:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["diou", "ciou"])
def test_dx_box_iou_diou_ciou_as_box_c_writes_them(kind):
    pred, truth = overlapping_pairs(np.random.default_rng(2))
    got = dx_box_iou(pred, truth, kind)
    d_iou = numeric_box_gradient(iou, pred, truth)
    d_penalty = numeric_box_gradient(lambda p, t: -rho2_over_c2(p, t), pred, truth)
    want = d_iou + d_penalty
    want[:, 2:] += d_iou[:, 2:]                 # only the IoU part of dw, dh is doubled
    # box.c subtracts rho^2 * dc^2/dx / c^4 for x and y where the derivative of
    # -rho^2/c^2 adds it (w, h have the right sign)
    d_c2 = numeric_box_gradient(enclosing_c2, pred, truth)
    want[:, :2] -= 2 * (rho2(pred, truth) / enclosing_c2(pred, truth) ** 2)[:, None] \
        * d_c2[:, :2]
    if kind == "ciou":
        gap = np.arctan(truth[:, 2] / truth[:, 3]) - np.arctan(pred[:, 2] / pred[:, 3])
        v = 4 / math.pi ** 2 * gap ** 2
        alpha = v / (1 - iou(pred, truth) + v + 1e-6)
        want[:, 2] += alpha * 8 / math.pi ** 2 * gap * pred[:, 3]
        want[:, 3] -= alpha * 8 / math.pi ** 2 * gap * pred[:, 2]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["iou", "giou", "diou", "ciou"])
def test_exact_iou_kind_gradient_against_finite_differences(kind):
    pred, truth = overlapping_pairs(np.random.default_rng(3))
    far = np.array([[.2, .2, .1, .1]]), np.array([[.7, .6, .2, .3]])   # no overlap
    pred, truth = np.vstack([pred, far[0]]), np.vstack([truth, far[1]])
    _, grad = iou_kind_gradient(pred, truth, kind)
    want = numeric_box_gradient(lambda p, t: iou_kind_gradient(p, t, kind)[0], pred, truth)
    np.testing.assert_allclose(grad, want, atol=2e-6)


# --------------------------------------------------------------------------- exact mode

EXACT_OPTIONS = {
    "mse": "iou_loss=mse\nscale_x_y=1.1",
    "iou": "iou_loss=iou",
    "giou": "iou_loss=giou\niou_normalizer=0.5",
    "diou": "iou_loss=diou",
    "ciou": "iou_loss=ciou\niou_normalizer=0.07\nscale_x_y=1.05\ncls_normalizer=1.0",
    "new_coords_ciou": "new_coords=1\niou_loss=ciou\nscale_x_y=2.0",
    "new_coords_mse": "new_coords=1\nscale_x_y=2.0",
    "focal": "focal_loss=1\niou_loss=giou",
    "objectness_smooth": "objectness_smooth=1\niou_loss=ciou\nignore_thresh=.2",
    "iou_thresh": "iou_thresh=0.2\niou_loss=ciou",
    "iou_thresh_mse": "iou_thresh=0.2\niou_thresh_kind=diou",
    "label_smooth_counters": "label_smooth_eps=0.1\ncounters_per_class=100,20,5\n"
                             "cls_normalizer=0.5\nobj_normalizer=0.4\niou_loss=diou",
    "truth_thresh_smooth": "truth_thresh=.3\nignore_thresh=.2\nobjectness_smooth=1\n"
                           "iou_loss=ciou",
}


def exact_case(options, rng, new_coords=False):
    cfg = ("[net]\nbatch=2\nwidth=6\nheight=5\nchannels=24\n\n[yolo]\nmask=1,2,3\n"
           "anchors=0.8,1, 1.5,1.2, 2,2.5, 3,2, 4,4.5, 5,3\nclasses=3\nnum=6\nmax=12\n"
           f"ignore_thresh=.5\n{options}\n")
    x = rng.normal(0, 1, (2, 3, 8, 30))
    if new_coords:
        x[:, :, 0:4] = rng.uniform(.2, .9, x[:, :, 0:4].shape)
        x[:, :, 4:] = rng.uniform(.05, .95, x[:, :, 4:].shape)
    truth = np.zeros((2, 12, 6))
    for b in range(2):
        for t in range(4):
            truth[b, t, :5] = [rng.uniform(.1, .9), rng.uniform(.1, .9), rng.uniform(.1, .6),
                               rng.uniform(.1, .6), rng.integers(3)]
    truth[0, 4] = truth[0, 0] + [.02, .01, .05, -.03, 0, 0]     # same cell, second truth
    truth[0, 4, 4] = (truth[0, 0, 4] + 1) % 3
    return cfg, x.reshape(2, -1), truth.reshape(2, -1)


@pytest.mark.parametrize("name", sorted(EXACT_OPTIONS))
def test_exact_delta_is_minus_the_gradient_of_the_objective(f64, name):
    rng = np.random.default_rng(sorted(EXACT_OPTIONS).index(name))
    cfg, x, truth = exact_case(EXACT_OPTIONS[name], rng, new_coords="new_coords" in name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = minidarknet.loads(cfg, gradients="exact", fork="alexeyab")
    net.forward(x, truth, train=True)
    loss_delta = net.layers[0].loss_delta.copy()
    assert np.abs(loss_delta).max() > 0
    check_all(net, x, truth)           # samples a few input entries (and the rest of the net)
    # the box and objectness entries of every cell that got a box term
    cells = np.abs(loss_delta[:, :, 0:4]).max(axis=2) > 0            # (batch, slot, cell)
    chosen = np.zeros(loss_delta.shape, bool)
    chosen[:, :, 0:5] = cells[:, :, None, :]
    assert chosen.sum() >= 5 * 6
    check = Check(net, np.array(x, np.float64), truth)
    picks = np.flatnonzero(chosen.reshape(-1))
    numeric = np.array([-check._central(check.x, i) for i in picks])
    got = loss_delta.reshape(-1)[picks]
    scale = max(np.abs(numeric).max(), 1e-3)
    assert np.abs(got - numeric).max() <= 2e-6 * scale + 1e-9, (
        f"max |analytic - numeric| {np.abs(got - numeric).max():.3g} (scale {scale:.3g})")


def test_exact_and_darknet_agree_where_darknet_is_a_gradient():
    """mse box deltas and (non-focal, non-smooth) objectness/class deltas are exact."""
    rng = np.random.default_rng(7)
    cfg, x, truth = exact_case("iou_loss=mse\nscale_x_y=1.1", rng)
    exact = minidarknet.loads(cfg, gradients="exact", fork="alexeyab")
    darknet = minidarknet.loads(cfg, fork="alexeyab")
    exact.forward(x, truth, train=True)
    darknet.forward(x, truth, train=True)
    np.testing.assert_allclose(exact.layers[0].loss_delta.reshape(2, -1),
                               darknet.layers[0].delta.reshape(2, -1), atol=1e-6)
    assert exact.cost == pytest.approx(darknet.cost, rel=1e-6)


# --------------------------------------------------------------------------- forks, layout

def test_truth_layout_follows_the_fork():
    cfg = ("[net]\nwidth=4\nheight=4\nchannels=21\n[yolo]\nmask=0,1,2\n"
           "anchors=1,1, 2,2, 3,3\nclasses=2\nnum=3\n")
    assert minidarknet.loads(cfg).truths == 450
    ab = minidarknet.loads(cfg, fork="alexeyab")
    assert ab.truths == 1200 and ab.layers[0].truth_floats == 6
    assert minidarknet.loads(cfg + "max=30\n", fork="alexeyab").truths == 180
    assert minidarknet.loads(cfg + "max=30\n").truths == 450


def test_pjreddie_fork_still_refuses_ab_loss_keys_and_names_the_fork():
    cfg = ("[net]\nwidth=4\nheight=4\nchannels=21\n[yolo]\nmask=0,1,2\n"
           "anchors=1,1, 2,2, 3,3\nclasses=2\nnum=3\niou_loss=ciou\n")
    net = minidarknet.loads(cfg, fork="pjreddie")
    x = np.zeros((1, 21, 4, 4), F32)
    truth = np.zeros((1, 450), F32)
    truth[0, :5] = [.5, .5, .2, .2, 1]
    with pytest.raises(CfgError, match=r"iou_loss=ciou.*fork='alexeyab'"):
        net.forward(x, truth, train=True)
    ab = minidarknet.loads(cfg, fork="alexeyab")
    ab_truth = np.zeros((1, 1200), F32)
    ab_truth[0, :6] = [.5, .5, .2, .2, 1, 0]
    ab.forward(x, ab_truth, train=True)
    assert np.isfinite(ab.cost) and np.abs(ab.layers[0].delta).max() > 0


def test_counters_per_class_must_match_classes():
    cfg = ("[net]\nwidth=4\nheight=4\nchannels=21\n[yolo]\nmask=0,1,2\n"
           "anchors=1,1, 2,2, 3,3\nclasses=2\nnum=3\ncounters_per_class=5,6,7\n")
    with pytest.raises(CfgError, match=r":10: \[yolo\] counters_per_class has 3 values"):
        minidarknet.loads(cfg, fork="alexeyab")


def test_detector_data_fills_six_float_truths(tmp_path):
    """The data loader writes x, y, w, h, class, track_id 0 for AlexeyAB's [yolo]; the same
    boxes as the 5-float pjreddie truth."""
    from test_data import make_detection_set
    from minidarknet.data import open_data
    data_file = make_detection_set(tmp_path)
    cfg = (f"[net]\nbatch=2\nwidth=32\nheight=32\nchannels=3\nflip=0\n\n"
           f"[convolutional]\nfilters=21\nsize=8\nstride=8\npad=0\nactivation=linear\n\n"
           f"[yolo]\nmask=0,1,2\nanchors=4,4, 8,8, 16,16\nclasses=2\nnum=3\njitter=0\n")
    (tmp_path / "det.cfg").write_text(cfg)
    rows = {}
    for fork in ("pjreddie", "alexeyab"):
        net = minidarknet.load(tmp_path / "det.cfg", fork=fork)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = open_data(data_file, net)
        _, truth = data.train_batch(0, 4, seed=0)
        assert truth.shape == (4, net.truths)
        rows[fork] = truth
    pj = rows["pjreddie"].reshape(4, 90, 5)
    ab = rows["alexeyab"].reshape(4, 200, 6)
    assert pj[:, :, 0].any()
    # the alexeyab fork trains with AlexeyAB's loader (data_ab.py: its own draws, crop and
    # resize), so the layout is checked, not the numbers
    assert ab[:, :, 0].any()
    for a in ab:
        n = int((a[:, 0] > 0).sum())
        assert not a[n:].any()
        assert (a[:n, 2:4] > 0).all() and set(a[:n, 4]) <= {0.0, 1.0} and (a[:n, 5] >= 0).all()


def test_alexeyab_keeps_route_deltas_across_iterations():
    """AlexeyAB's forward_network zeroes only the deltas of layers with l.train (convolution,
    batchnorm, maxpool, shortcut, ...): a [route]'s delta, which the max-pool after it adds
    into, keeps the previous iteration's values (ab_yolo_ciou_train's third iteration depends
    on it); pjreddie and exact mode start every iteration from zero."""
    cfg = ("[net]\nbatch=1\nwidth=4\nheight=4\nchannels=2\n\n"
           "[convolutional]\nfilters=3\nsize=1\nstride=1\npad=0\nactivation=linear\n\n"
           "[route]\nlayers=-1\n\n"
           "[maxpool]\nsize=2\nstride=2\n\n"
           "[cost]\ntype=sse\n")
    x = np.random.default_rng(0).normal(0, 1, (1, 2, 4, 4))
    truth = np.zeros((1, 12))
    once = {}
    for fork, gradients in (("alexeyab", "darknet"), ("pjreddie", "darknet"),
                            ("alexeyab", "exact")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = minidarknet.loads(cfg, fork=fork, gradients=gradients, seed=1)
        deltas = []
        for _ in range(2):
            net.forward(x, truth, train=True)
            net.backward()
            deltas.append(net.layers[1].delta.copy())
        once[fork, gradients] = deltas
        assert np.abs(deltas[0]).max() > 0
    ab = once["alexeyab", "darknet"]
    np.testing.assert_allclose(ab[1], 2 * ab[0], rtol=1e-6)
    for key in (("pjreddie", "darknet"), ("alexeyab", "exact")):
        np.testing.assert_allclose(once[key][1], once[key][0], rtol=1e-6)
