"""Numeric cfg keys at values other than Darknet's defaults, checked against formulas worked
out here in float64 (so a key that is read but ignored, or a constant that is off, fails).

Darknet's rules (pjreddie/darknet): update_connected_layer / update_convolutional_layer
(src/connected_layer.c, src/convolutional_layer.c), forward/backward_batchnorm_layer with
normalize_cpu, mean_delta_cpu, variance_delta_cpu, normalize_delta_cpu (src/blas.c),
forward_region_layer (src/region_layer.c).
"""
import numpy as np
import pytest

import minidarknet

F32 = np.float32


# ------------------------------------------------------------------ learning rate, momentum,
#                                                                    decay (one SGD step)

SGD_NET = """[net]
batch=6
subdivisions=3
inputs=3
learning_rate={lr}
momentum={momentum}
decay={decay}

[connected]
output=2
batch_normalize={bn}
activation=linear
"""


@pytest.mark.parametrize("bn", [0, 1])
def test_update_uses_the_cfg_learning_rate_momentum_and_decay(bn):
    lr, momentum, decay = .3, .7, .01
    net = minidarknet.loads(SGD_NET.format(lr=lr, momentum=momentum, decay=decay, bn=bn))
    layer = net.layers[0]
    rng = np.random.default_rng(0)
    arrays = ["weights", "biases", "weight_updates", "bias_updates"]
    if bn:
        arrays += ["scales", "scale_updates"]
    for name in arrays:
        getattr(layer, name)[...] = rng.normal(size=getattr(layer, name).shape)
    before = {name: getattr(layer, name).astype(np.float64) for name in arrays}
    net.update()
    big_b = 2 * 3                                  # batch * subdivisions
    step = lr / big_b
    w_upd = before["weight_updates"] - decay * big_b * before["weights"]
    expected = {"biases": before["biases"] + step * before["bias_updates"],
                "bias_updates": momentum * before["bias_updates"],
                "weights": before["weights"] + step * w_upd,
                "weight_updates": momentum * w_upd}
    if bn:
        expected["scales"] = before["scales"] + step * before["scale_updates"]
        expected["scale_updates"] = momentum * before["scale_updates"]
    for name, value in expected.items():
        np.testing.assert_allclose(getattr(layer, name), value, rtol=1e-5, atol=1e-7,
                                   err_msg=name)


def test_momentum_carries_the_previous_step_into_the_next():
    # two train steps of a linear unit with an l2 cost: the second weight change is
    # lr/B * (g2 + momentum * (g1 - decay*B*w0))... worked out step by step in float64
    text = ("[net]\nbatch=1\ninputs=1\nlearning_rate=.1\nmomentum=.5\ndecay=0\n"
            "[connected]\noutput=1\nactivation=linear\n[cost]\ntype=sse\n")
    net = minidarknet.loads(text)
    layer = net.layers[0]
    layer.weights[...] = 1
    layer.biases[...] = 0
    w, b, wu, bu = 1.0, 0.0, 0.0, 0.0
    for x, t in ((2.0, 1.0), (1.0, 3.0)):
        net.train_step(np.array([[x]], F32), np.array([[t]], F32))
        delta = t - (w * x + b)                    # sse delta = truth - output
        wu, bu = wu + delta * x, bu + delta
        b += .1 * bu
        bu *= .5
        w += .1 * wu
        wu *= .5
        assert float(layer.weights[0, 0]) == pytest.approx(w, rel=1e-6)
        assert float(layer.biases[0]) == pytest.approx(b, rel=1e-6, abs=1e-7)


# ------------------------------------------------------------------ batch-norm epsilons

BN_NET = "[net]\nbatch=2\nwidth=2\nheight=1\nchannels=2\n[batchnorm]\n"


def tiny_variance_input():
    # channel 0: values a few 1e-6 apart (variance ~1e-12, sqrt ~1e-6: the size of the
    # forward epsilon); channel 1: ordinary values
    x = np.array([[[[1e-6, 3e-6]], [[.5, -1.]]],
                  [[[-2e-6, 0.]], [[2., .25]]]], F32)
    return x


def bn_forward_by_hand(x, eps=1e-6):
    x = x.astype(np.float64)
    mean = x.mean(axis=(0, 2, 3))
    var = ((x - mean[None, :, None, None]) ** 2).sum(axis=(0, 2, 3)) / (x[:, 0].size - 1)
    return (x - mean[None, :, None, None]) / (np.sqrt(var) + eps)[None, :, None, None], \
        mean, var


def test_batchnorm_training_forward_epsilon_is_1e_6():
    net = minidarknet.loads(BN_NET)
    x = tiny_variance_input()
    out = net.forward(x, train=True)
    expected, mean, var = bn_forward_by_hand(x)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # a 10x larger epsilon would give channel 0 values about 4x smaller
    assert np.abs(bn_forward_by_hand(x, 1e-5)[0][:, 0] - expected[:, 0]).max() > .5
    # rolling statistics move by .99 / .01
    np.testing.assert_allclose(net.layers[0].rolling_mean, .01 * mean, rtol=1e-4)
    np.testing.assert_allclose(net.layers[0].rolling_variance, .01 * var, rtol=1e-4)


def test_batchnorm_inference_epsilon_and_rolling_statistics():
    net = minidarknet.loads(BN_NET)
    layer = net.layers[0]
    layer.rolling_mean[...] = [1e-6, .5]
    layer.rolling_variance[...] = [1e-12, 4.]
    layer.scales[...] = [2., 3.]
    layer.biases[...] = [.5, -1.]
    x = tiny_variance_input()
    out = net.forward(x)
    x64 = x.astype(np.float64)
    expected = np.empty_like(x64)
    expected[:, 0] = 2 * (x64[:, 0] - 1e-6) / (1e-6 + 1e-6) + .5
    expected[:, 1] = 3 * (x64[:, 1] - .5) / (2 + 1e-6) - 1
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_conv_batchnorm_inference_epsilon():
    # the same formula inside [convolutional] batch_normalize=1 (1x1 filter of weight 1)
    net = minidarknet.loads("[net]\nwidth=2\nheight=1\nchannels=1\n[convolutional]\nfilters=1\n"
                            "size=1\nbatch_normalize=1\nactivation=linear\n")
    layer = net.layers[0]
    layer.weights[...] = 1
    layer.rolling_mean[...] = 0
    layer.rolling_variance[...] = 4e-12
    out = net.forward(np.array([[[[2e-6, -3e-6]]]], F32))
    np.testing.assert_allclose(out.reshape(-1), [2e-6 / 3e-6, -3e-6 / 3e-6], rtol=1e-4)


def test_batchnorm_darknet_backward_epsilon_is_1e_5():
    net = minidarknet.loads(BN_NET)
    layer = net.layers[0]
    layer.scales[...] = [1.5, .5]
    x = tiny_variance_input()
    net.forward(x, train=True)
    g = np.array([[[[1., -2.]], [[.5, .25]]], [[[.75, 1.]], [[-1., 2.]]]], F32)
    net.backward(g)
    # pjreddie: delta *= scale; mean_delta = -sum(delta)/sqrt(var + 1e-5);
    # variance_delta = sum(delta*(x - mean)) * -.5 * (var + 1e-5)**-1.5;
    # delta = delta/sqrt(var + 1e-5) + variance_delta*2*(x - mean)/N + mean_delta/N
    x64 = x.astype(np.float64)
    _, mean, var = bn_forward_by_hand(x)
    d = g.astype(np.float64) * np.array([1.5, .5])[None, :, None, None]
    n = 2 * 2
    centered = x64 - mean[None, :, None, None]
    ve = var + 1e-5
    mean_delta = -d.sum(axis=(0, 2, 3)) / np.sqrt(ve)
    variance_delta = (d * centered).sum(axis=(0, 2, 3)) * -.5 * ve ** -1.5
    expected = (d / np.sqrt(ve)[None, :, None, None]
                + variance_delta[None, :, None, None] * 2 * centered / n
                + mean_delta[None, :, None, None] / n)
    np.testing.assert_allclose(net.input_delta, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(expected[:, 0]).max() > 100      # the epsilon dominates channel 0


# ------------------------------------------------------------------ [region] scales

REGION = ("[net]\nwidth=2\nheight=2\nchannels=14\n[region]\nanchors=.5,.5, .5,1\n"
          "classes=2\nnum=2\ncoords=4\nsoftmax=1\nthresh=.6\ncoord_scale=4\nobject_scale=3\n"
          "noobject_scale=.25\nclass_scale=2\n")


def test_region_scales_at_non_default_values():
    # zero input: x = y = obj = logistic(0) = .5, w = h = 0, class softmax = (.5, .5).
    # Truth (.25,.25,.25,.25) class 1 in cell (0, 0) on anchor 0 (shape IoU 1).
    net = minidarknet.loads(REGION)
    truth = np.zeros((1, net.truths), F32)
    truth[0, :5] = [.25, .25, .25, .25, 1]
    net.seen = 10 ** 6                                  # past the anchor prior
    x = np.zeros((1, 14, 2, 2), F32)
    x[0, 3, 0, 0] = .5           # anchor 0's raw h in cell (0, 0): still the best anchor
    net.forward(x, truth, train=True)
    d = net.layers[0].delta.reshape(2, 7, 2, 2)
    # negatives: noobject_scale * (0 - .5) where the best IoU is <= thresh (.6): slot 1 of
    # cell 0 has IoU .5 with the truth, so it is a negative too
    assert d[1, 4, 0, 0] == pytest.approx(.25 * -.5)
    assert d[0, 4, 1, 1] == pytest.approx(.25 * -.5)
    # the positive: object_scale * (1 - .5); classes class_scale * (onehot - p)
    assert d[0, 4, 0, 0] == pytest.approx(3 * .5)
    assert d[0, 5, 0, 0] == pytest.approx(2 * (0 - .5))
    assert d[0, 6, 0, 0] == pytest.approx(2 * (1 - .5))
    # box: coord_scale * (2 - w*h) * (target - out); th target = log(.25*2/.5) = 0
    assert d[0, 3, 0, 0] == pytest.approx(4 * (2 - .0625) * (0 - .5), rel=1e-5)


# ------------------------------------------------------------------ defaults and per-layer lr

def test_defaults_are_darknets():
    # pjreddie parse.c: learning_rate .001, momentum .9, decay .0001, policy constant,
    # burn_in 0, power 4; [yolo] ignore_thresh .5, truth_thresh 1; [region] thresh .5,
    # scales 1; [shortcut] alpha = beta = 1
    net = minidarknet.loads("[net]\nwidth=1\nheight=1\nchannels=6\nburn_in=4\n[yolo]\nmask=0\n"
                            "anchors=1,1\nclasses=1\nnum=1\n")
    assert (net.learning_rate, net.momentum, net.decay) == (pytest.approx(.001),
                                                           pytest.approx(.9),
                                                           pytest.approx(.0001))
    net.seen = 2
    assert net.current_rate() == pytest.approx(.001 * .5 ** 4)      # burn-in power 4
    net.seen = 9
    assert net.current_rate() == pytest.approx(.001)                 # constant afterwards
    yolo = net.layers[0]
    assert (yolo.ignore_thresh, yolo.truth_thresh) == (.5, 1)
    region = minidarknet.loads("[net]\nwidth=1\nheight=1\nchannels=6\n[region]\nanchors=1,1\n"
                               "classes=1\nnum=1\n").layers[0]
    assert region.thresh == .5
    assert (region.coord_scale, region.object_scale, region.noobject_scale,
            region.class_scale) == (1, 1, 1, 1)


def test_per_layer_learning_rate_scales_the_step():
    # AlexeyAB's per-layer `learning_rate` multiplies the network's rate for that layer
    text = SGD_NET.format(lr=.3, momentum=0, decay=0, bn=0) + "learning_rate=.25\n"
    net = minidarknet.loads(text)
    layer = net.layers[0]
    layer.weights[...] = 0
    layer.weight_updates[...] = 1
    layer.bias_updates[...] = 2
    net.update()
    np.testing.assert_allclose(layer.weights, .3 * .25 / 6, rtol=1e-6)
    np.testing.assert_allclose(layer.biases, 2 * .3 * .25 / 6, rtol=1e-6)


def test_region_coord_and_class_scales_without_the_others():
    # coord_scale and class_scale alone (the other scales at 1), logistic classes
    text = REGION.replace("softmax=1\n", "").replace("object_scale=3\n", "") \
        .replace("noobject_scale=.25\n", "")
    net = minidarknet.loads(text)
    truth = np.zeros((1, net.truths), F32)
    truth[0, :5] = [.25, .25, .25, .25, 1]
    net.seen = 10 ** 6
    x = np.zeros((1, 14, 2, 2), F32)
    x[0, 3, 0, 0] = .5
    net.forward(x, truth, train=True)
    d = net.layers[0].delta.reshape(2, 7, 2, 2)
    assert d[0, 4, 0, 0] == pytest.approx(.5)              # object_scale 1 * (1 - .5)
    assert d[1, 4, 0, 0] == pytest.approx(-.5)             # noobject_scale 1
    assert d[0, 6, 0, 0] == pytest.approx(2 * (1 - .5))    # class_scale * (1 - logistic(0))
    assert d[0, 3, 0, 0] == pytest.approx(4 * (2 - .0625) * -.5, rel=1e-5)


# ------------------------------------------------------------------ augmentation keys

class FixedRng:
    """random() -> r, integers(n) -> k: every random draw known in advance."""
    def __init__(self, r, k):
        self.r, self.k = r, k

    def random(self):
        return self.r

    def integers(self, lo, hi=None):
        return self.k if hi is None else min(max(self.k, lo), hi - 1)


def test_center_crop_takes_the_middle_square():
    # center=1 (load_image_augment_paths): the centre square of the shorter side, resized to
    # the net size; a 2x4 image into a 2x2 net keeps columns 1 and 2 unchanged
    from minidarknet.augment import AugmentOptions, augment_classifier_image
    im = np.arange(24, dtype=F32).reshape(3, 2, 4) / 24
    out = augment_classifier_image(im, FixedRng(.5, 1), AugmentOptions(center=1, flip=0), 2, 2)
    np.testing.assert_allclose(out, im[:, :, 1:3], rtol=1e-6)


def test_aspect_key_stretches_the_random_crop():
    # random_augment_args with every draw fixed: aspect = 1 + (a - 1)*r (kept as is when the
    # coin is 1), r_size = min_crop, scale = r_size/shorter side, dx = (w*scale/aspect - W)/2
    # drawn as -dx + 2dx*r; rotate_crop_image then samples x = (i - W/2)/scale*aspect + ...
    from minidarknet.augment import random_augment_image, rotate_crop_image
    im = np.random.default_rng(0).random((1, 8, 8), dtype=np.float32)
    got = random_augment_image(im, FixedRng(.25, 1), 0.0, 2.0, 8, 8, 4, 4)
    aspect = 1 + (2 - 1) * .25
    scale = 8 / int(8 if 8 < 8 * aspect else 8 * aspect)     # the shorter side: h = 8
    dx, dy = (8 * scale / aspect - 4) / 2, (8 * scale - 4) / 2
    dx, dy = -dx + 2 * dx * .25, -dy + 2 * dy * .25
    np.testing.assert_allclose(got, rotate_crop_image(im, 0.0, scale, 4, 4, dx, dy, aspect))
    plain = random_augment_image(im, FixedRng(.25, 1), 0.0, 1.0, 8, 8, 4, 4)
    assert np.abs(plain - got).max() > 1e-3


def test_dropout_probability_scales_the_kept_inputs():
    # forward_dropout_layer: r < p -> 0, else x * 1/(1 - p); nothing at inference
    net = minidarknet.loads("[net]\nbatch=4\ninputs=500\n[dropout]\nprobability=.25\n", seed=3)
    x = np.random.default_rng(0).uniform(.5, 1.5, (4, 500)).astype(F32)
    out = net.forward(x, train=True).reshape(4, 500)
    dropped = out == 0
    np.testing.assert_allclose(out[~dropped], x[~dropped] / .75, rtol=1e-6)
    assert .2 < dropped.mean() < .3                       # 2000 draws with p = .25
    np.testing.assert_array_equal(net.forward(x).reshape(4, 500), x)
