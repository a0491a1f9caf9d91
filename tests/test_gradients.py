"""Finite-difference checks of gradients="exact" for every core layer type and every activation,
and the Darknet-mode quirks that make gradients="darknet" differ from the true gradient.

In exact mode the objective is `net.objective` (the sum of the loss layers' objectives) and
every delta is -d objective / d (what it is attached to): the delta that reaches a layer's
output, `input_delta`, and the weight / bias / BN-scale updates accumulated by one backward.

The checks run in float64: the `f64` fixture makes the layers allocate float64 buffers and
parameters (they all take their dtype from the `F32` name of their module) and hands the
network a float64 input, so central differences with eps=1e-6 are accurate to ~1e-9 and a
tolerance of 1e-6 relative still catches any wrong formula.  `test_float32_matches_float64`
checks that the real float32 code path gives the same gradients.
"""
import warnings

import numpy as np
import pytest

import minidarknet
from minidarknet.activations import ACTIVATIONS
from conftest import central_difference, numeric_gradient, use_float64

EPS = 1e-6
RTOL = 2e-6
ATOL = 1e-9
SAMPLES = 12        # elements checked per array (all of them when the array is smaller)


# ------------------------------------------------------------------ float64 mode

def build(text, gradients="exact", seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minidarknet.loads(text, gradients=gradients, seed=seed)


def net_cfg(body, batch=2, w=5, h=1, c=1):
    return f"[net]\nbatch={batch}\nwidth={w}\nheight={h}\nchannels={c}\n\n{body}"


def randomize(net, rng, weight_scale=1.0):
    """Give every parameter a non-trivial value (biases, BN scales and rolling statistics)."""
    for layer in net.layers:
        if getattr(layer, "weights", None) is not None:
            layer.weights[...] = rng.normal(0, weight_scale / np.sqrt(layer.weights.shape[1]),
                                            layer.weights.shape)
        if getattr(layer, "biases", None) is not None:
            layer.biases[...] = rng.normal(0, .5, layer.biases.shape)
        if getattr(layer, "scales", None) is not None and hasattr(layer, "rolling_mean"):
            layer.scales[...] = rng.uniform(.5, 1.5, layer.scales.shape)
            layer.rolling_mean[...] = rng.normal(0, .3, layer.rolling_mean.shape)
            layer.rolling_variance[...] = rng.uniform(.5, 1.5, layer.rolling_variance.shape)


PARAMS = (("weights", "weight_updates"), ("biases", "bias_updates"), ("scales", "scale_updates"))


class Check:
    """Runs one forward+backward and compares its deltas with central differences."""

    def __init__(self, net, x, truth, train=True, seed=0):
        self.net, self.x, self.truth, self.train, self.seed = net, x, truth, train, seed
        self.rng = np.random.default_rng(1234)

    def objective(self):
        # The same dropout mask every time: reset the network's generator before forward.
        self.net.rng = np.random.default_rng(self.seed)
        rolling = self._save_rolling()
        self.net.forward(self.x, self.truth, train=self.train)
        self._restore_rolling(rolling)
        return self.net.objective

    def _save_rolling(self):
        # Training forward moves BN rolling statistics; keep them fixed between evaluations
        # (they only matter in inference mode, where they are constants of the objective).
        return [(l, l.rolling_mean.copy(), l.rolling_variance.copy())
                for l in self.net.layers if hasattr(l, "rolling_mean")]

    @staticmethod
    def _restore_rolling(saved):
        for layer, mean, var in saved:
            layer.rolling_mean[...] = mean
            layer.rolling_variance[...] = var

    def analytic(self):
        """One forward and backward: the delta that reached each layer's output, the
        parameter updates and the input delta."""
        net = self.net
        self.objective()
        reached = {}
        for i, layer in enumerate(net.layers):
            layer.backward = self._snapshot(layer, reached, i)
        try:
            net.backward()
        finally:
            for layer in net.layers:
                del layer.backward
        updates = {}
        for i, layer in enumerate(net.layers):
            for param, update in PARAMS:
                if getattr(layer, update, None) is not None and getattr(layer, param, None) \
                        is not None:
                    updates[i, param] = getattr(layer, update).copy()
                    getattr(layer, update)[...] = 0     # the next analytic() starts from zero
        input_delta = None if net.input_delta is None else net.input_delta.copy()
        return reached, updates, input_delta

    @staticmethod
    def _snapshot(layer, reached, i):
        original = type(layer).backward

        def backward(net):
            reached[i] = layer.delta.copy()
            original(layer, net)
        return backward

    def _pick(self, size):
        if size <= SAMPLES:
            return range(size)
        return self.rng.choice(size, SAMPLES, replace=False)

    def numeric_array(self, array):
        """-d objective / d array[i] for sampled i (array is changed in place and restored)."""
        picks = list(self._pick(array.size))
        return picks, -numeric_gradient(self.objective, array, picks, EPS)

    def numeric_output(self, index):
        """-d objective / d (layer index's output) as later layers see it."""
        layer = self.net.layers[index]
        original = type(layer).forward
        bump = np.zeros(1)        # added to output element `at` by the patched forward
        at = [0]

        def forward(net):
            original(layer, net)
            layer.output.reshape(-1)[at[0]] += bump[0]
        layer.forward = forward
        try:
            picks = list(self._pick(layer.output.size))
            values = []
            for i in picks:
                at[0] = i
                values.append(-central_difference(self.objective, bump, 0, EPS))
            return picks, np.array(values)
        finally:
            del layer.forward


def assert_close(analytic, picks, numeric, what):
    got = np.asarray(analytic).reshape(-1)[picks]
    scale = max(np.abs(numeric).max(), np.abs(got).max(), 1e-3)
    err = np.abs(got - numeric).max()
    assert err <= RTOL * scale + ATOL, (
        f"{what}: max |analytic - numeric| = {err:.3g} (scale {scale:.3g})\n"
        f"analytic {got}\nnumeric  {numeric}")


def check_all(net, x, truth, train=True, seed=0, skip_outputs=()):
    """Every layer's output delta, every parameter update and the input delta."""
    check = Check(net, x, truth, train=train, seed=seed)
    reached, updates, input_delta = check.analytic()
    assert net.objective is not None and np.isfinite(net.objective)
    for (i, param), update in updates.items():
        picks, numeric = check.numeric_array(getattr(net.layers[i], param))
        assert_close(update, picks, numeric, f"layer {i} {param}")
    for i, layer in enumerate(net.layers):
        if layer.type == "cost" or i in skip_outputs or i not in reached:
            continue
        picks, numeric = check.numeric_output(i)
        assert_close(reached[i], picks, numeric, f"layer {i} ({layer.type}) delta")
    check.x = np.array(check.x, dtype=np.float64)      # perturbed in place below
    picks, numeric = check.numeric_array(check.x)
    assert_close(input_delta, picks, numeric, "input_delta")
    return check


def data(rng, batch, n, low=-1.0, high=1.0):
    return rng.uniform(low, high, (batch, n))


# ------------------------------------------------------------------ connected

@pytest.mark.parametrize("activation", ["linear", "logistic", "tanh"])
def test_connected(f64, activation):
    rng = np.random.default_rng(1)
    net = build(net_cfg(f"[connected]\noutput=4\nactivation={activation}\n\n"
                        "[connected]\noutput=3\nactivation=linear\n\n[cost]\n"))
    randomize(net, rng)
    check_all(net, data(rng, 2, 5), data(rng, 2, 3))


@pytest.mark.parametrize("train", [True, False], ids=["train", "inference"])
def test_connected_batchnorm(f64, train):
    rng = np.random.default_rng(2)
    net = build(net_cfg("[connected]\noutput=4\nbatch_normalize=1\nactivation=logistic\n\n"
                        "[connected]\noutput=3\nbatch_normalize=1\nactivation=linear\n\n[cost]\n",
                        batch=4))
    randomize(net, rng)
    check_all(net, data(rng, 4, 5), data(rng, 4, 3), train=train)


def test_connected_learning_rate_scale_does_not_change_gradients(f64):
    rng = np.random.default_rng(3)
    net = build(net_cfg("[connected]\noutput=3\nlearning_rate=.1\nactivation=linear\n[cost]\n"))
    randomize(net, rng)
    check_all(net, data(rng, 2, 5), data(rng, 2, 3))


# ------------------------------------------------------------------ every activation

def kink_free_connected(activation, seed):
    """A [connected] layer whose pre-activations are at least .02 away from every integer
    (all kinks of Darknet's activations are at integers) and spread over [-6, 7]."""
    for attempt in range(200):
        rng = np.random.default_rng(seed * 1000 + attempt)
        net = build(net_cfg(f"[connected]\noutput=4\nactivation={activation}\n\n"
                            "[connected]\noutput=3\nactivation=linear\n\n[cost]\n"))
        randomize(net, rng)
        first = net.layers[0]
        first.weights *= 5
        first.biases[...] = rng.uniform(-4, 5, first.biases.shape)
        x = data(rng, 2, 5)
        pre = x @ first.weights.T + first.biases
        if np.abs(pre - np.round(pre)).min() > .02:
            return net, x, data(rng, 2, 3)
    raise AssertionError("no kink-free draw")


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_through_connected(f64, activation):
    net, x, truth = kink_free_connected(activation, 7)
    check_all(net, x, truth)


def kink_free_values(rng, shape):
    """Values k + u with k an integer in [-6, 6] and u in [.05, .95]: away from every kink."""
    return rng.integers(-6, 7, shape) + rng.uniform(.05, .95, shape)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_layer(f64, activation):
    rng = np.random.default_rng(8)
    net = build(net_cfg(f"[activation]\nactivation={activation}\n\n"
                        "[connected]\noutput=3\nactivation=linear\n\n[cost]\n", w=2, h=2, c=3))
    randomize(net, rng)
    check_all(net, kink_free_values(rng, (2, 3, 2, 2)), data(rng, 2, 3))


# ------------------------------------------------------------------ l2norm

@pytest.mark.parametrize("axis", ["channels", "sample"])
@pytest.mark.parametrize("eps", [0, .5])
def test_l2norm_on_an_image(f64, axis, eps):
    rng = np.random.default_rng(9)
    net = build(net_cfg(f"[l2norm]\naxis={axis}\neps={eps}\n\n"
                        "[connected]\noutput=3\nactivation=linear\n\n[cost]\n", w=2, h=2, c=3))
    randomize(net, rng)
    check_all(net, rng.normal(0, 1, (2, 3, 2, 2)), data(rng, 2, 3))


@pytest.mark.parametrize("axis", ["channels", "sample"])
def test_l2norm_after_connected_as_output(f64, axis):
    rng = np.random.default_rng(10)
    net = build(net_cfg(f"[connected]\noutput=4\nactivation=linear\n\n[l2norm]\naxis={axis}\n\n"
                        "[cost]\nscale=2\n"))
    randomize(net, rng)
    check_all(net, data(rng, 2, 5), data(rng, 2, 4))


# ------------------------------------------------------------------ softmax

def distributions(rng, batch, groups, size, one_hot):
    if one_hot:
        t = np.zeros((batch, groups, size))
        idx = rng.integers(0, size, (batch, groups))
        np.put_along_axis(t, idx[..., None], 1, axis=2)
    else:
        t = rng.uniform(0, 1, (batch, groups, size))
        t[..., 0] = 0                                   # some zero entries
        t /= t.sum(axis=2, keepdims=True)
    return t.reshape(batch, groups * size)


@pytest.mark.parametrize("groups,temperature", [(1, 1), (2, .5), (3, 2)])
@pytest.mark.parametrize("one_hot", [True, False], ids=["onehot", "soft"])
def test_softmax_alone_as_loss(f64, groups, temperature, one_hot):
    rng = np.random.default_rng(11)
    net = build(net_cfg("[connected]\noutput=6\nactivation=linear\n\n"
                        f"[softmax]\ngroups={groups}\ntemperature={temperature}\n"))
    randomize(net, rng, weight_scale=2)
    check_all(net, data(rng, 2, 5), distributions(rng, 2, groups, 6 // groups, one_hot))


@pytest.mark.parametrize("groups,temperature", [(1, 1), (2, .5), (3, 2)])
def test_softmax_followed_by_cost(f64, groups, temperature):
    rng = np.random.default_rng(12)
    net = build(net_cfg("[connected]\noutput=6\nactivation=linear\n\n"
                        f"[softmax]\ngroups={groups}\ntemperature={temperature}\n\n"
                        "[cost]\nscale=1.5\n"))
    randomize(net, rng, weight_scale=2)
    check_all(net, data(rng, 2, 5), distributions(rng, 2, groups, 6 // groups, True))


def test_softmax_noloss_in_the_middle(f64):
    rng = np.random.default_rng(13)
    net = build(net_cfg("[connected]\noutput=6\nactivation=linear\n\n"
                        "[softmax]\ngroups=2\ntemperature=.7\nnoloss=1\n\n"
                        "[connected]\noutput=3\nactivation=linear\n\n[cost]\n"))
    randomize(net, rng, weight_scale=2)
    check_all(net, data(rng, 2, 5), data(rng, 2, 3))


# ------------------------------------------------------------------ cost

@pytest.mark.parametrize("cost_type", ["sse", "smooth", "L1", "masked", "seg", "wgan"])
@pytest.mark.parametrize("scale", [1, .5])
def test_cost_types(f64, cost_type, scale):
    rng = np.random.default_rng(14)
    net = build(net_cfg("[connected]\noutput=6\nactivation=linear\n\n"
                        f"[cost]\ntype={cost_type}\nscale={scale}\n"))
    randomize(net, rng)
    x = data(rng, 2, 5)
    net.forward(x)
    pred = net.output.reshape(2, 6).copy()
    # differences of .3 to 2.5 in both directions: both branches of smooth, away from L1's kink
    diff = rng.uniform(.3, 2.5, pred.shape) * rng.choice([-1, 1], pred.shape)
    diff[0, :2] = [.5, -.7]      # |diff| < 1 and > 1 in every case
    diff[1, :2] = [1.6, -2.2]
    truth = pred + diff
    if cost_type == "masked":
        truth[:, 1] = -1234
    check_all(net, x, truth)


# ------------------------------------------------------------------ logistic

def test_logistic_as_loss(f64):
    rng = np.random.default_rng(15)
    net = build(net_cfg("[connected]\noutput=4\nactivation=linear\n\n[logistic]\n"))
    randomize(net, rng, weight_scale=2)
    check_all(net, data(rng, 2, 5), rng.uniform(0, 1, (2, 4)))


def test_logistic_loss_and_a_later_cost(f64):
    rng = np.random.default_rng(16)
    net = build(net_cfg("[connected]\noutput=4\nactivation=linear\n\n[logistic]\n\n"
                        "[activation]\nactivation=tanh\n\n[cost]\n"))
    randomize(net, rng, weight_scale=2)
    check_all(net, data(rng, 2, 5), rng.uniform(0, 1, (2, 4)))


# ------------------------------------------------------------------ avgpool, dropout, batchnorm

def test_avgpool(f64):
    rng = np.random.default_rng(17)
    net = build(net_cfg("[avgpool]\n\n[connected]\noutput=2\nactivation=tanh\n\n[cost]\n",
                        w=2, h=3, c=3))
    randomize(net, rng)
    check_all(net, rng.normal(0, 1, (2, 3, 3, 2)), data(rng, 2, 2))


def test_avgpool_after_connected(f64):
    rng = np.random.default_rng(18)
    net = build(net_cfg("[connected]\noutput=4\nactivation=linear\n\n[avgpool]\n\n[cost]\n"))
    randomize(net, rng)
    check_all(net, data(rng, 2, 5), data(rng, 2, 4))


def test_dropout_with_a_fixed_mask(f64):
    rng = np.random.default_rng(19)
    net = build(net_cfg("[connected]\noutput=8\nactivation=linear\n\n[dropout]\nprobability=.4\n\n"
                        "[connected]\noutput=3\nactivation=linear\n\n[cost]\n"), seed=5)
    randomize(net, rng)
    check = check_all(net, data(rng, 2, 5), data(rng, 2, 3), seed=5)
    mask = net.layers[1].mask
    assert (mask == 0).any() and (mask != 0).any()      # something was dropped
    assert check is not None


def test_dropout_as_first_layer(f64):
    rng = np.random.default_rng(20)
    net = build(net_cfg("[dropout]\nprobability=.3\n\n[connected]\noutput=3\nactivation=linear\n"
                        "\n[cost]\n", w=4, h=2), seed=6)
    randomize(net, rng)
    check_all(net, data(rng, 2, 8), data(rng, 2, 3), seed=6)
    assert (net.layers[0].mask == 0).any()


@pytest.mark.parametrize("train", [True, False], ids=["train", "inference"])
def test_batchnorm_layer(f64, train):
    rng = np.random.default_rng(21)
    net = build(net_cfg("[batchnorm]\n\n[connected]\noutput=3\nactivation=linear\n\n[cost]\n",
                        batch=3, w=2, h=2, c=2))
    randomize(net, rng)
    net.layers[0].scales[...] = rng.uniform(.5, 1.5, 2)
    net.layers[0].biases[...] = rng.normal(0, .5, 2)
    net.layers[0].rolling_mean[...] = [.2, -.3]
    net.layers[0].rolling_variance[...] = [.7, 1.3]
    check_all(net, rng.normal(0, 1, (3, 2, 2, 2)), data(rng, 3, 3), train=train)


def test_a_deeper_mixed_network(f64):
    rng = np.random.default_rng(22)
    net = build(net_cfg("[connected]\noutput=6\nbatch_normalize=1\nactivation=tanh\n\n"
                        "[dropout]\nprobability=.25\n\n[l2norm]\n\n"
                        "[connected]\noutput=6\nactivation=logistic\n\n[activation]\n"
                        "activation=elu\n\n[avgpool]\n\n[connected]\noutput=4\nactivation=linear\n"
                        "\n[softmax]\ngroups=2\ntemperature=1.5\n\n[cost]\n", batch=3), seed=2)
    randomize(net, rng)
    check_all(net, data(rng, 3, 5), distributions(rng, 3, 2, 2, True), seed=2)


# ------------------------------------------------------------------ float32 = float64

def _gradients(text, x, truth, seed=0):
    rng = np.random.default_rng(seed)
    net = build(text)
    randomize(net, rng)
    reached, updates, input_delta = Check(net, x, truth).analytic()
    return reached, updates, input_delta


def test_float32_matches_float64():
    text = net_cfg("[connected]\noutput=6\nbatch_normalize=1\nactivation=leaky\n\n[l2norm]\n\n"
                   "[connected]\noutput=4\nactivation=linear\n\n[softmax]\n\n[cost]\n", batch=3)
    rng = np.random.default_rng(23)
    x, truth = data(rng, 3, 5), distributions(rng, 3, 1, 4, True)
    single = _gradients(text, x.astype(np.float32), truth)
    with pytest.MonkeyPatch.context() as mp:
        use_float64(mp)
        double = _gradients(text, x, truth)
    for (a, b) in zip(single[0].values(), double[0].values()):
        assert a.dtype == np.float32 and b.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * np.abs(b).max())
    for key in double[1]:
        np.testing.assert_allclose(single[1][key], double[1][key], rtol=1e-3,
                                   atol=1e-5 * np.abs(double[1][key]).max())
    np.testing.assert_allclose(single[2], double[2], rtol=1e-3, atol=1e-5 * np.abs(double[2]).max())



# ------------------------------------------------------------------ Darknet-mode quirks

def _forward_backward(text, x, truth, gradients, seed=0, prepare=None):
    net = build(text, gradients=gradients)
    randomize(net, np.random.default_rng(seed))
    if prepare:
        prepare(net)
    net.forward(x, truth, train=True)
    reached = {}
    for i, layer in enumerate(net.layers):
        layer.backward = Check._snapshot(layer, reached, i)
    net.backward()
    return net, reached


L2_NET = net_cfg("[l2norm]\n{keys}\n[connected]\noutput=3\nactivation=linear\n\n[cost]\n",
                 w=2, h=2, c=3)


def test_l2norm_darknet_backward_is_a_pass_through():
    rng = np.random.default_rng(30)
    x, truth = rng.normal(0, 1, (2, 3, 2, 2)).astype(np.float32), data(rng, 2, 3)
    net, reached = _forward_backward(L2_NET.format(keys=""), x, truth, "darknet")
    np.testing.assert_array_equal(net.input_delta, reached[0])
    assert np.abs(reached[0]).max() > 0
    y = x / np.sqrt((x.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(net.layers[0].output, y, rtol=1e-6)
    norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(net.layers[0].scales, (1 - y) / norm, rtol=1e-5)


def test_l2norm_scales_backward_adds_the_scales():
    rng = np.random.default_rng(31)
    x, truth = rng.normal(0, 1, (2, 3, 2, 2)).astype(np.float32), data(rng, 2, 3)
    for gradients in ("darknet", "exact"):        # an explicit key wins over the mode
        net, reached = _forward_backward(L2_NET.format(keys="backward=scales"), x, truth,
                                         gradients)
        np.testing.assert_allclose(net.input_delta, reached[0] + net.layers[0].scales,
                                   rtol=1e-6)


def test_l2norm_exact_differs_from_darknet():
    rng = np.random.default_rng(32)
    x, truth = rng.normal(0, 1, (2, 3, 2, 2)).astype(np.float32), data(rng, 2, 3)
    darknet, _ = _forward_backward(L2_NET.format(keys=""), x, truth, "darknet")
    exact, reached = _forward_backward(L2_NET.format(keys=""), x, truth, "exact")
    g, y = reached[0], exact.layers[0].output
    norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    expected = (g - y * (g * y).sum(axis=1, keepdims=True)) / norm
    np.testing.assert_allclose(exact.input_delta, expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(exact.input_delta, darknet.input_delta, rtol=.1)


SOFTMAX_COST = net_cfg("[connected]\noutput=4\nactivation=linear\n\n[softmax]\n\n"
                       "[cost]\nscale={scale}\n")


@pytest.mark.parametrize("scale", [1, .5])
def test_softmax_then_cost_doubles_the_logit_delta_in_darknet_mode(scale):
    rng = np.random.default_rng(33)
    x, truth = data(rng, 2, 5), distributions(rng, 2, 1, 4, True)
    net, reached = _forward_backward(SOFTMAX_COST.format(scale=scale), x, truth, "darknet")
    p = net.layers[1].output.reshape(2, 4)
    # softmax writes truth - p, the cost adds scale*(truth - p), backward passes it through
    np.testing.assert_allclose(net.layers[0].delta.reshape(2, 4), (1 + scale) * (truth - p),
                               rtol=1e-5, atol=1e-7)
    xent = -np.log(p[truth != 0]).sum()
    sse = ((truth - p) ** 2).sum()
    assert net.cost == pytest.approx((xent + sse) / 2, rel=1e-5)     # mean over cost layers
    assert net.layers[2].cost == pytest.approx(sse, rel=1e-5)


def test_softmax_then_cost_exact_uses_the_jacobian():
    rng = np.random.default_rng(34)
    x, truth = data(rng, 2, 5), distributions(rng, 2, 1, 4, True)
    net, _ = _forward_backward(SOFTMAX_COST.format(scale=1), x, truth, "exact")
    p = net.layers[1].output.reshape(2, 4).astype(np.float64)
    g = truth - p                                   # the sse delta w.r.t. p
    jacobian_part = p * (g - (g * p).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(net.layers[0].delta.reshape(2, 4), (truth - p) + jacobian_part,
                               rtol=1e-5, atol=1e-7)


BN_NET = net_cfg("[connected]\noutput=4\nbatch_normalize=1\nactivation=linear\n\n"
                 "[connected]\noutput=3\nactivation=linear\n\n[cost]\n", batch=16)


def test_batchnorm_darknet_backward_differs_slightly_from_exact():
    rng = np.random.default_rng(35)
    x, truth = data(rng, 16, 5), data(rng, 16, 3)
    darknet, _ = _forward_backward(BN_NET, x, truth, "darknet", seed=1)
    exact, _ = _forward_backward(BN_NET, x, truth, "exact", seed=1)
    a, b = darknet.layers[0].delta, exact.layers[0].delta
    difference = np.abs(a - b).max() / np.abs(b).max()
    # N vs N-1 in the variance term (N=16) and eps inside vs outside the square root
    assert 1e-4 < difference < .1, difference
    # the parameter updates before BN's input gradient agree
    np.testing.assert_allclose(darknet.layers[0].scale_updates, exact.layers[0].scale_updates,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(darknet.layers[0].bias_updates, exact.layers[0].bias_updates,
                               rtol=1e-5, atol=1e-6)


def test_batchnorm_darknet_backward_formula():
    """Darknet's CPU backward: sqrt(var + 1e-5) and N, with the unbiased variance of forward."""
    rng = np.random.default_rng(36)
    x, truth = data(rng, 16, 5), data(rng, 16, 3)
    net, reached = _forward_backward(BN_NET, x, truth, "darknet", seed=1)
    layer = net.layers[0]
    d = reached[0].reshape(16, 4).astype(np.float64) * layer.scales
    pre = x @ layer.weights.T.astype(np.float64)
    mean, var = pre.mean(axis=0), pre.var(axis=0, ddof=1)
    inv = 1 / np.sqrt(var + 1e-5)
    mean_delta = -d.sum(axis=0) * inv
    var_delta = (d * (pre - mean)).sum(axis=0) * -.5 * inv ** 3
    expected = d * inv + var_delta * 2 * (pre - mean) / 16 + mean_delta / 16
    np.testing.assert_allclose(layer.delta.reshape(16, 4), expected, rtol=1e-4,
                               atol=1e-5 * np.abs(expected).max())


def test_activation_layer_darknet_overwrites_exact_accumulates():
    text = net_cfg("[connected]\noutput=4\nactivation=linear\n\n[activation]\n"
                   "activation=leaky\n\n[cost]\n")
    rng = np.random.default_rng(37)
    x, truth = data(rng, 2, 5), data(rng, 2, 4)
    results = {}
    for gradients in ("darknet", "exact"):
        net = build(text, gradients=gradients)
        randomize(net, np.random.default_rng(0))
        net.forward(x, truth, train=True)
        net.layers[0].delta += 1          # as if a route had added something there
        net.backward()
        results[gradients] = net.layers[0].delta.copy()
    np.testing.assert_allclose(results["exact"], results["darknet"] + 1, rtol=1e-6)


def test_smooth_cost_sign_bug_in_darknet_mode():
    text = net_cfg("[connected]\noutput=4\nactivation=linear\n\n[cost]\ntype=smooth\n")
    x = np.zeros((2, 5), np.float32)
    truth = np.array([[3, -3, .5, -.25], [1.5, -2, 0, .75]], np.float32)  # outputs are 0
    deltas = {}
    for gradients in ("darknet", "exact"):
        net = build(text, gradients=gradients)
        net.forward(x, truth, train=True)
        deltas[gradients] = net.layers[1].delta.reshape(2, 4)
        assert net.cost == pytest.approx(5 + 5 + .25 + .0625 + 2 + 3 + 0 + .5625)
    small = np.abs(truth) < 1
    np.testing.assert_array_equal(deltas["exact"], np.where(small, truth, np.sign(truth)))
    np.testing.assert_array_equal(deltas["darknet"], np.where(small, truth, -np.sign(truth)))


def test_logistic_darknet_passes_later_deltas_without_the_derivative():
    text = net_cfg("[connected]\noutput=4\nactivation=linear\n\n[logistic]\n\n"
                   "[activation]\nactivation=linear\n\n[cost]\n")
    rng = np.random.default_rng(38)
    x, truth = data(rng, 2, 5), rng.uniform(0, 1, (2, 4))
    for gradients in ("darknet", "exact"):
        net = build(text, gradients=gradients)
        randomize(net, np.random.default_rng(0))
        net.forward(x, truth, train=True)
        net.backward()
        p = net.layers[1].output.reshape(2, 4)
        later = (truth - p)                         # the sse delta, through the linear layer
        if gradients == "exact":
            expected = (truth - p) + later * p * (1 - p)
        else:
            # [activation] OVERWRITES the logistic delta (its own truth - p is lost), then
            # logistic passes that on without the sigmoid's derivative.
            expected = later
        np.testing.assert_allclose(net.layers[0].delta.reshape(2, 4), expected, rtol=1e-5,
                                   atol=1e-7)


def test_dropout_darknet_keeps_the_dropped_output_exact_restores_it():
    text = net_cfg("[connected]\noutput=8\nactivation=logistic\n\n[dropout]\nprobability=.5\n\n"
                   "[connected]\noutput=3\nactivation=linear\n\n[cost]\n")
    rng = np.random.default_rng(39)
    x, truth = data(rng, 2, 5), data(rng, 2, 3)
    for gradients in ("darknet", "exact"):
        net = build(text, gradients=gradients, seed=4)
        randomize(net, np.random.default_rng(0))
        net.forward(x, truth, train=True)
        dropped = net.layers[0].output.copy()
        mask = net.layers[1].mask
        net.backward()
        y = 1 / (1 + np.exp(-(x @ net.layers[0].weights.T + net.layers[0].biases)))
        expected = dropped if gradients == "darknet" else y.reshape(dropped.shape)
        np.testing.assert_allclose(net.layers[0].output, expected, rtol=1e-5)
        np.testing.assert_allclose(dropped, y.reshape(dropped.shape) * mask, rtol=1e-5)
