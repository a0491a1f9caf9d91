"""AlexeyAB-only pieces of the cfg corpus: [Gaussian_yolo] (forward, decoding), [contrastive]
(inference), share_index (parameter sharing) and a [yolo] mask beyond num."""
import warnings

import numpy as np
import pytest

from conftest import numeric_gradient

import minidarknet
from minidarknet.boxes import correct_boxes
from minidarknet.errors import CfgError, DarknetWarning

F32 = np.float32


def build(text, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DarknetWarning)
        return minidarknet.loads(text, seed=0, **options)


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


# ---------------------------------------------------------------------- [Gaussian_yolo]

def gaussian(extra="", classes=2, size=3, channels=None):
    entries = 9 + classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DarknetWarning)
        return minidarknet.loads(
            f"[net]\nbatch=1\nwidth={size}\nheight={size}\nchannels={channels or 2 * entries}"
            f"\n\n[Gaussian_yolo]\nmask=1,2\nanchors=10,20, 30,40, 50,60\nclasses={classes}\n"
            f"num=3\n{extra}")


def test_gaussian_forward_activations_and_scale_x_y():
    net = gaussian("scale_x_y=1.2\n")
    x = np.random.default_rng(0).normal(0, 2, (1, 22, 3, 3)).astype(F32)
    out = net.forward(x).reshape(2, 11, 9)
    z = x.reshape(2, 11, 9).astype(np.float64)
    for e in (1, 3, 5, 7, 8, 9, 10):
        np.testing.assert_allclose(out[:, e], sigmoid(z[:, e]), rtol=1e-6, atol=1e-7)
    for e in (4, 6):
        np.testing.assert_array_equal(out[:, e], x.reshape(2, 11, 9)[:, e])
    for e in (0, 2):      # the means only get scale_x_y
        np.testing.assert_allclose(out[:, e], 1.2 * sigmoid(z[:, e]) - 0.1, rtol=1e-5,
                                   atol=1e-6)


def test_gaussian_decoding_by_hand():
    net = gaussian()
    x = np.full((1, 2, 11, 3, 3), -10, F32)         # everything improbable ...
    cell = 1 * 3 + 2                                # row 1, col 2; anchor slot 1 (anchor 2)
    v = x[0, 1].reshape(11, 9)
    v[:, cell] = [0, -1, .5, 0, .2, 1, -.3, -2, 2, 1, -1]
    out = net.forward(x.reshape(1, 22, 3, 3))
    dets = net.detections(thresh=.3, nms=0)
    assert len(dets) == 1
    d = dets[0]
    assert d.x == pytest.approx((2 + sigmoid(0)) / 3, rel=1e-6)
    assert d.y == pytest.approx((1 + sigmoid(.5)) / 3, rel=1e-6)
    assert d.w == pytest.approx(np.exp(.2) * 50 / 3, rel=1e-6)
    assert d.h == pytest.approx(np.exp(-.3) * 60 / 3, rel=1e-6)
    obj = sigmoid(2)
    uc = (sigmoid(-1) + sigmoid(0) + sigmoid(1) + sigmoid(-2)) / 4
    assert d.objectness == pytest.approx(obj, rel=1e-6)
    expected = obj * sigmoid(np.array([1, -1])) * (1 - uc)
    np.testing.assert_allclose(d.prob, np.where(expected > .3, expected, 0), rtol=1e-5)
    assert d.prob[1] == 0 and d.prob[0] > 0
    assert out.shape == (1, 22, 3, 3)


def test_gaussian_letterbox_correction_and_yolo_point():
    net = gaussian()
    x = np.full((1, 22, 3, 3), -10, F32)
    x[0, 8, 0, 0] = 3
    net.forward(x)
    plain = net.detections(thresh=.5, nms=0)
    corrected = net.detections(thresh=.5, nms=0, image_size=(200, 100))
    expected = correct_boxes(plain, 200, 100, 3, 3)
    assert [(d.x, d.y, d.w, d.h) for d in corrected] == [(d.x, d.y, d.w, d.h) for d in expected]
    left_top = gaussian("yolo_point=left_top\n")
    left_top.forward(x)
    moved = left_top.detections(thresh=.5, nms=0)[0]
    centre = net.detections(thresh=.5, nms=0)[0]
    assert moved.x == pytest.approx(centre.x + centre.w / 2, rel=1e-6)
    assert moved.y == pytest.approx(centre.y + centre.h / 2, rel=1e-6)


def test_gaussian_errors():
    with pytest.raises(CfgError, match=r"set filters=22 .*\(classes \+ 9\)"):
        gaussian(channels=21)
    with pytest.raises(CfgError, match="nms_kind=cornersnms"):
        gaussian("nms_kind=cornersnms\n")
    net = minidarknet.loads("[net]\nbatch=1\nwidth=3\nheight=3\nchannels=22\n\n"
                            "[Gaussian_yolo]\nmask=1,2\nanchors=10,20, 30,40, 50,60\n"
                            "classes=2\nnum=3\n", gradients="exact")
    with pytest.raises(CfgError, match=r"\[Gaussian_yolo\]: gradients='exact' is not available"):
        net.forward(np.zeros((1, 22, 3, 3), F32), np.zeros((1, net.layers[0].truths), F32))


def test_gaussian_exact_backward_goes_through_the_activations():
    net = minidarknet.loads("[net]\nbatch=1\nwidth=3\nheight=3\nchannels=22\n\n"
                            "[Gaussian_yolo]\nmask=1,2\nanchors=10,20, 30,40, 50,60\n"
                            "classes=2\nnum=3\nscale_x_y=1.1\n", gradients="exact")
    x = np.random.default_rng(1).normal(0, 1, (1, 22, 3, 3))
    g = np.random.default_rng(2).normal(0, 1, (1, 22, 3, 3))
    net.forward(x.astype(F32), train=True)
    net.backward(g.astype(F32))

    def f(v):
        out = v.reshape(2, 11, 9).copy()
        for e in (0, 1, 2, 3, 5, 7, 8, 9, 10):
            out[:, e] = sigmoid(out[:, e])
        out[:, [0, 2]] = 1.1 * out[:, [0, 2]] - 0.05
        return float((out.reshape(-1) * g.reshape(-1)).sum())

    flat = x.reshape(-1).copy()
    numeric = numeric_gradient(lambda: f(flat), flat, eps=1e-6)
    np.testing.assert_allclose(net.input_delta.reshape(-1), numeric, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- [contrastive]

CONTRASTIVE = """[net]
batch=2
width=4
height=4
channels=3

[convolutional]
filters=8
size=1
activation=linear

[convolutional]
filters=14
size=1
activation=linear

[yolo]
mask=0,1
anchors=1,1, 2,2
classes=2
num=2
embedding_layer=-2

[route]
layers=-3

[contrastive]
classes=1
yolo_layer=-2
"""


def test_contrastive_builds_outputs_zeros_and_refuses_training():
    net = build(CONTRASTIVE)
    layer = net.layers[-1]
    assert (layer.embedding_size, layer.n, layer.classes) == (4, 2, 2)
    assert (layer.out_c, layer.out_h, layer.out_w, layer.outputs) == (0, 0, 0, 128)
    out = net.forward(np.random.default_rng(0).random((2, 3, 4, 4), dtype=F32))
    np.testing.assert_array_equal(out, 0)
    with pytest.raises(CfgError, match=r"\[contrastive\]: training"):
        net.forward(np.zeros((2, 3, 4, 4), F32), train=True)


@pytest.mark.parametrize("change,message", [
    (("yolo_layer=-2", "yolo_layer=-1"), "must point at an earlier \\[yolo\\] layer"),
    (("embedding_layer=-2", "embedding_layer=-1"), "embedding size 4 differs"),
])
def test_contrastive_errors(change, message):
    with pytest.raises(CfgError, match=message):
        build(CONTRASTIVE.replace(*change))


# ---------------------------------------------------------------------- share_index

SHARED = """[net]
batch=1
width=6
height=6
channels=2

[convolutional]
batch_normalize=1
filters=3
size=3
pad=1
activation=leaky

[convolutional]
filters=2
size=1
activation=leaky

[route]
layers=-2

[convolutional]
share_index=1
filters=2
size=1
activation=leaky
"""


def test_shared_layer_uses_the_other_layers_arrays(tmp_path):
    net = build(SHARED)
    owner, sharer = net.layers[1], net.layers[3]
    for name in ("weights", "biases", "weight_updates", "bias_updates"):
        assert getattr(sharer, name) is getattr(owner, name)
    x = np.random.default_rng(0).normal(0, 1, (1, 2, 6, 6)).astype(F32)
    net.forward(x)
    np.testing.assert_array_equal(sharer.output, owner.output)   # same input, same filters
    # nothing in the weights file for the sharing layer
    net.save_weights(tmp_path / "w")
    values = sum(a.size for l in net.layers[:2] for _, a in l.parameters())
    assert (tmp_path / "w").stat().st_size == 20 + 4 * values
    other = build(SHARED)
    other.load_weights(tmp_path / "w")
    np.testing.assert_array_equal(other.layers[3].weights, owner.weights)


def test_shared_parameters_are_updated_once():
    net = build(SHARED)
    owner = net.layers[1]
    before = owner.weights.copy()
    owner.weight_updates[...] = 1
    net.update()
    lr = net.current_rate() / (net.batch * net.subdivisions)
    step = lr * (1 - net.decay * net.batch * net.subdivisions * before)
    np.testing.assert_allclose(owner.weights, before + step, rtol=1e-5, atol=1e-7)


def test_dilated_sharing_as_in_tridentnet():
    net = build("[net]\nbatch=1\nwidth=6\nheight=6\nchannels=2\n\n"
                "[convolutional]\nbatch_normalize=1\nfilters=2\nsize=3\npad=1\n"
                "activation=linear\n\n"
                "[convolutional]\nshare_index=-1\ndilation=2\nbatch_normalize=1\nfilters=2\n"
                "size=3\npad=1\nactivation=linear\n")
    first, second = net.layers
    assert second.weights is first.weights and second.scales is first.scales
    assert second.rolling_variance is first.rolling_variance
    assert second.out_w == 6 and second.op is not first.op
    assert second.parameters() == [] and first.parameters()


@pytest.mark.parametrize("index,message", [
    ("3", "must name an earlier layer"),
    ("2", "layer 2 is a \\[route\\]"),
    ("0", "they must match"),
])
def test_share_index_errors(index, message):
    with pytest.raises(CfgError, match=message):
        build(SHARED.replace("share_index=1", f"share_index={index}"))


# ---------------------------------------------------------------------- [yolo] mask > num

def yolo_text(anchors):
    return ("[net]\nbatch=1\nwidth=1\nheight=1\nchannels=21\n\n[yolo]\nmask=2,3,4\n"
            f"anchors={anchors}\nclasses=2\nnum=3\n")


def test_yolo_mask_beyond_num_uses_the_listed_anchors():
    with pytest.warns(DarknetWarning, match=r"mask=2,3,4 names anchors beyond num=3"):
        net = minidarknet.loads(yolo_text("1,2, 3,4, 5,6, 7,8, 9,10"))
    layer = net.layers[0]
    np.testing.assert_array_equal(layer.biases.reshape(-1, 2)[layer.mask],
                                  [[5, 6], [7, 8], [9, 10]])
    x = np.zeros((1, 21, 1, 1), F32)
    x[0, 4] = 5                                    # slot 0 (anchor 2) confident
    x[0, 7 + 4] = 5                                # slot 1 (anchor 3) confident
    net.forward(x)
    dets = net.detections(thresh=.5, nms=0)
    assert [(d.w, d.h) for d in dets] == [(5, 6), (7, 8)]
    # training still matches truths against the first num anchors only (no crash)
    truth = np.zeros((1, layer.truths), F32)
    truth[0, :5] = [.5, .5, .1, .1, 1]
    net.forward(x, truth, train=True)


def test_yolo_mask_beyond_the_listed_anchors_is_an_error():
    with pytest.raises(CfgError, match=r"names anchor 4, but num=3 and anchors= lists 3"):
        build(yolo_text("1,2, 3,4, 5,6"))
