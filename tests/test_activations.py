"""Tests for minidarknet.activations: Darknet's forward formulas and quirks (spec section 4,
golden README quirk 6), Darknet's CPU gradients, and exact gradients against finite differences."""
import math

import numpy as np
import pytest

from conftest import numeric_gradient

from minidarknet.activations import ACTIVATIONS, Activation, get_activation

PJ_NAMES = {"logistic", "loggy", "relu", "elu", "selu", "relie", "ramp", "linear", "tanh",
            "plse", "leaky", "stair", "hardtan", "lhtan"}
AB_NAMES = {"swish", "mish", "hard_mish", "relu6", "gelu", "revleaky", "normalize_channels",
            "normalize_channels_softmax", "normalize_channels_softmax_maxval"}
ALL_NAMES = PJ_NAMES | AB_NAMES
CHANNELWISE = {"normalize_channels", "normalize_channels_softmax",
               "normalize_channels_softmax_maxval"}
ELEMENTWISE = ALL_NAMES - CHANNELWISE
# Darknet's gradient is not the derivative of the forward pass for these.
DARKNET_NOT_TRUE = {"gelu"} | CHANNELWISE

LA = 1.0507 * 1.6732          # selu lambda*alpha


def sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def gelu(v):
    return 0.5 * v * (1.0 + math.tanh(0.797885 * v + 0.035677 * v ** 3))


def gelu_grad_as_coded(v):
    """AB's gelu_gradient closed form (applied by Darknet to the output y)."""
    a = 0.0356774 * v ** 3 + 0.797885 * v
    return 0.5 * math.tanh(a) + (0.0535161 * v ** 3 + 0.398942 * v) / math.cosh(a) ** 2 + 0.5


def mish_grad(v):
    sp = math.log1p(math.exp(v))
    t = math.tanh(sp)
    return t + v * (1 - t * t) * sig(v)


# ------------------------------------------------------------------ hand-computed forward values
FORWARD = {
    "logistic": [(0, 0.5), (2, sig(2)), (-2, sig(-2)), (-100, 0.0), (100, 1.0)],
    "loggy": [(0, 0.0), (2, 2 / (1 + math.exp(-2)) - 1), (-2, 2 / (1 + math.exp(2)) - 1)],
    "relu": [(-1, 0.0), (0, 0.0), (2.5, 2.5)],
    "elu": [(-1, math.exp(-1) - 1), (0, 0.0), (3, 3.0), (-100, -1.0), (100, 100.0)],
    "selu": [(1, 1.0507), (-1, LA * (math.exp(-1) - 1)), (0, 0.0), (2, 2.1014)],
    "relie": [(-2, -0.02), (0, 0.0), (3, 3.0)],
    "ramp": [(-2, -0.2), (0, 0.0), (2, 2.2), (0.5, 0.55)],
    "linear": [(-3.5, -3.5), (0, 0.0), (7.25, 7.25)],
    "tanh": [(0.5, (math.e - 1) / (math.e + 1)), (-1, math.tanh(-1)), (0, 0.0),
             (50, 1.0), (-50, -1.0)],
    # 0.125x+0.5 on [-4, 4], slope 0.01 outside
    "plse": [(-6, -0.02), (-4, 0.0), (0, 0.5), (2, 0.75), (4, 1.0), (6, 1.02)],
    "leaky": [(-2, -0.2), (0, 0.0), (1.5, 1.5)],
    # n=floor(x): n even -> floor(x/2); n odd -> (x-n) + floor(x/2)
    "stair": [(0.5, 0.0), (1.5, 0.5), (2.5, 1.0), (3.25, 1.25), (-0.5, -0.5), (-1.5, -1.0),
              (-2.75, -1.75), (3, 1.0), (4, 2.0)],
    "hardtan": [(-3, -1.0), (-1, -1.0), (-0.5, -0.5), (1, 1.0), (2, 1.0)],
    # slope 1 on [0, 1], 0.001 outside
    "lhtan": [(-2, -0.002), (0, 0.0), (0.5, 0.5), (1, 1.0), (3, 1.002)],
    "relu6": [(-1, 0.0), (0, 0.0), (3, 3.0), (6, 6.0), (7, 6.0)],
    "gelu": [(0, 0.0), (1, gelu(1)), (-1, gelu(-1)), (2.5, gelu(2.5))],
    "revleaky": [(-2, -0.2), (0, 0.0), (1.5, 1.5)],
    "swish": [(0, 0.0), (1, sig(1)), (-1, -sig(-1)), (2, 2 * sig(2))],
    # x*tanh(softplus(x)); softplus threshold 20: x above, e^x below -20
    "mish": [(0, 0.0), (1, math.tanh(math.log(math.e + 1))),
             (-1, -math.tanh(math.log(math.exp(-1) + 1))), (25, 25.0),
             (-25, -25 * math.tanh(math.exp(-25)))],
    # x>0: x; x>-2: x^2/2 + x; else 0
    "hard_mish": [(1, 1.0), (-1, -0.5), (-1.5, -0.375), (-2, 0.0), (-3, 0.0)],
}

# Darknet's CPU gradient at x (evaluated, as Darknet does, on y = act(x) or on x for AB's ones)
DARKNET_GRAD = {
    "logistic": [(0, 0.25), (2, sig(2) * (1 - sig(2)))],
    "loggy": [(0, 0.5), (2, 2 * sig(2) * (1 - sig(2)))],
    "relu": [(-1, 0.0), (0, 0.0), (2, 1.0)],
    "elu": [(-1, math.exp(-1)), (0, 1.0), (2, 1.0)],
    "selu": [(-1, LA * math.exp(-1)), (0, 1.0507), (2, 1.0507)],
    "relie": [(-2, 0.01), (0, 0.01), (3, 1.0)],
    "ramp": [(-2, 0.1), (0, 0.1), (2, 1.1)],
    "linear": [(-3, 1.0), (4, 1.0)],
    "tanh": [(0.5, 1 - math.tanh(0.5) ** 2), (0, 1.0)],
    # 0.125 for y in [0, 1] (x in [-4, 4], ends included), else 0.01
    "plse": [(-6, 0.01), (-4, 0.125), (-3.9, 0.125), (0, 0.125), (4, 0.125), (6, 0.01)],
    "leaky": [(-2, 0.1), (0, 0.1), (1, 1.0)],
    # 0 whenever y is an integer (floor(x) even, or x an integer), else 1
    "stair": [(0.5, 0.0), (1.5, 1.0), (2.5, 0.0), (3.25, 1.0), (-0.5, 1.0), (-1.5, 0.0),
              (3, 0.0)],
    "hardtan": [(-3, 0.0), (-1, 0.0), (0.5, 1.0), (1, 0.0), (2, 0.0)],
    # 1 for 0 < y < 1, else 0.001
    "lhtan": [(-2, 0.001), (0, 0.001), (0.5, 1.0), (1, 0.001), (3, 0.001)],
    "relu6": [(-1, 0.0), (0, 0.0), (3, 1.0), (6, 0.0), (7, 0.0)],
    "gelu": [(1, gelu_grad_as_coded(gelu(1))), (-1, gelu_grad_as_coded(gelu(-1))),
             (0.3, gelu_grad_as_coded(gelu(0.3)))],
    "revleaky": [(-2, 0.1), (0, 0.1), (1, 1.0)],
    "swish": [(1, sig(1) + sig(1) * (1 - sig(1))), (-2, -2 * sig(-2) + sig(-2) * (1 + 2 * sig(-2)))],
    "mish": [(1, mish_grad(1)), (-1.5, mish_grad(-1.5))],
    "hard_mish": [(1, 1.0), (-1, 0.0), (-1.5, -0.5), (-2, 0.0), (-3, 0.0)],
}

NEEDS_INPUT = {  # name: (darknet, exact)
    "swish": (True, True), "mish": (True, True), "hard_mish": (True, True),
    "gelu": (False, True), "normalize_channels": (False, True),
}


def fwd(act, x):
    return act.forward(x, np.empty_like(x))


def grad_factor(name, xs, exact, dtype=np.float32):
    act = ACTIVATIONS[name]
    x = np.asarray(xs, dtype).reshape(1, -1)
    y = fwd(act, x)
    d = np.ones_like(x)
    act.backprop(d, y, x, exact)
    return d.ravel()


def sample_points(shape, seed, dtype=np.float64):
    """Points in (-6, 6) at least 0.05 away from every integer: all kinks of all activations
    (0, +-1, -2, +-4, 6, stair's integers) are integers."""
    rng = np.random.RandomState(seed)
    return (rng.randint(-6, 6, shape) + rng.uniform(0.05, 0.95, shape)).astype(dtype)


# ------------------------------------------------------------------ names and lookup
def test_names_are_exactly_both_forks():
    assert set(ACTIVATIONS) == ALL_NAMES
    assert len(ALL_NAMES) == 23
    for name, act in ACTIVATIONS.items():
        assert isinstance(act, Activation)
        assert act.name == name
        assert act.channelwise == (name in CHANNELWISE)
        assert get_activation(name) is act


def test_every_name_is_covered_by_the_value_tables():
    assert set(FORWARD) | CHANNELWISE == ALL_NAMES
    assert set(DARKNET_GRAD) | CHANNELWISE == ALL_NAMES
    assert set(FORWARD).isdisjoint(CHANNELWISE)


@pytest.mark.parametrize("name", ["foo", "leaky\r", "Leaky", "LEAKY", "", " relu", "softmax",
                                  "normalize_channels_max", "l2norm"])
def test_unknown_name_gives_none(name):
    assert get_activation(name) is None


def test_needs_input():
    for name, act in ACTIVATIONS.items():
        assert (act.needs_input(False), act.needs_input(True)) == NEEDS_INPUT.get(name, (False, False)), name


# ------------------------------------------------------------------ forward values
@pytest.mark.parametrize("name", sorted(FORWARD))
def test_forward_hand_values(name):
    xs, ys = zip(*FORWARD[name])
    x = np.array(xs, np.float32).reshape(1, -1)
    out = np.full_like(x, np.nan)
    r = ACTIVATIONS[name].forward(x, out)
    assert r is out
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.ravel(), ys, rtol=2e-6, atol=1e-7)


def test_stair_is_floor_half_when_floor_even():
    x = np.linspace(-9.9, 9.9, 397, dtype=np.float32).reshape(1, -1)
    y = fwd(ACTIVATIONS["stair"], x).ravel()
    xr = x.ravel().astype(np.float64)
    even = np.floor(xr) % 2 == 0
    np.testing.assert_array_equal(y[even], np.floor(xr[even] / 2))
    np.testing.assert_allclose(y[~even], (xr - np.floor(xr) + np.floor(xr / 2))[~even], atol=1e-6)
    # y is an integer exactly where floor(x) is even (or x is an integer)
    assert np.array_equal(np.floor(y) == y, even | (xr == np.floor(xr)))


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_extreme_inputs_stay_finite_without_fp_warnings(name):
    act = ACTIVATIONS[name]
    x = np.array([[-1e30, -100, -30, 30, 100, 1e30]], np.float32)
    with np.errstate(all="raise"):
        y = fwd(act, x)
    assert np.all(np.isfinite(y)), y
    for exact in (False, True):
        d = np.ones_like(x)
        act.backprop(d, y, x, exact)
        assert np.all(np.isfinite(d)), (exact, d)


def test_extreme_limits():
    x = np.array([[-1e30, -100, 100, 1e30]], np.float32)
    np.testing.assert_array_equal(fwd(ACTIVATIONS["tanh"], x), [[-1, -1, 1, 1]])
    np.testing.assert_array_equal(fwd(ACTIVATIONS["logistic"], x), [[0, 0, 1, 1]])
    np.testing.assert_allclose(fwd(ACTIVATIONS["elu"], x), [[-1, -1, 100, 1e30]], rtol=1e-6)
    np.testing.assert_allclose(fwd(ACTIVATIONS["selu"], x), [[-LA, -LA, 105.07, 1.0507e30]],
                               rtol=1e-6)
    np.testing.assert_allclose(fwd(ACTIVATIONS["mish"], x), [[0, 0, 100, 1e30]], rtol=1e-6,
                               atol=1e-30)


# ------------------------------------------------------------------ channelwise forward
def test_normalize_channels_forward():
    # one pixel, channels (1, 3, -2, 0): positive part / (1e-4 + sum of positive parts)
    x = np.array([1, 3, -2, 0], np.float32).reshape(1, 4, 1, 1)
    y = fwd(ACTIVATIONS["normalize_channels"], x).ravel()
    np.testing.assert_allclose(y, [1 / 4.0001, 3 / 4.0001, 0, 0], rtol=1e-6)
    # all non-positive: zeros (sum is just eps)
    z = fwd(ACTIVATIONS["normalize_channels"], -np.abs(x)).ravel()
    np.testing.assert_array_equal(z, 0)


def test_normalize_channels_softmax_forward():
    x = np.log(np.array([1, 2, 3], np.float32)).reshape(1, 3)
    y = fwd(ACTIVATIONS["normalize_channels_softmax"], x).ravel()
    np.testing.assert_allclose(y, np.array([1, 2, 3]) / 6.0001, rtol=1e-6)
    # _maxval subtracts the max first: exp = 1/3, 2/3, 1 -> the eps weighs differently
    ym = fwd(ACTIVATIONS["normalize_channels_softmax_maxval"], x).ravel()
    np.testing.assert_allclose(ym, np.array([1 / 3, 2 / 3, 1]) / (2 + 1e-4), rtol=1e-6)
    assert not np.allclose(y, ym, rtol=1e-6, atol=0)
    # large logits overflow without the max but not with it
    big = np.array([[100.0, 101.0]], np.float32)
    np.testing.assert_allclose(fwd(ACTIVATIONS["normalize_channels_softmax_maxval"], big),
                               [[sig(-1), sig(1)]], rtol=1e-4)


@pytest.mark.parametrize("name", sorted(CHANNELWISE))
def test_channelwise_works_across_axis_1_per_pixel(name):
    act = ACTIVATIONS[name]
    x = sample_points((2, 5, 3, 4), seed=3, dtype=np.float32)
    y = fwd(act, x)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                col = x[b, :, i, j].reshape(1, 5)
                np.testing.assert_allclose(fwd(act, col).ravel(), y[b, :, i, j], rtol=1e-6)
    s = y.sum(axis=1)
    assert np.all(s < 1) and np.all((s > 0.99) | (s == 0))


# ------------------------------------------------------------------ Darknet gradients (exact=False)
@pytest.mark.parametrize("name", sorted(DARKNET_GRAD))
def test_darknet_gradient_values(name):
    xs, gs = zip(*DARKNET_GRAD[name])
    np.testing.assert_allclose(grad_factor(name, xs, exact=False), gs, rtol=1e-5, atol=1e-7)


def test_darknet_gradients_are_functions_of_the_output():
    # Passing the output y (and no x) is all these need; a wrong "y" changes the result.
    y = np.array([[0.5, -0.5, 0.0, 2.0]], np.float32)
    d = np.ones_like(y)
    ACTIVATIONS["leaky"].backprop(d, y, None, False)
    np.testing.assert_allclose(d, [[1, 0.1, 0.1, 1]])
    d = np.ones_like(y)
    ACTIVATIONS["logistic"].backprop(d, y, None, False)
    np.testing.assert_allclose(d, [[0.25, -0.75, 0, -2]])


def test_normalize_channels_darknet_and_exact_gradient():
    act = ACTIVATIONS["normalize_channels"]
    x = np.array([1, 3, -2, 0], np.float32).reshape(1, 4, 1, 1)
    y = fwd(act, x)
    s = 4.0001
    d0 = np.array([0.5, -1, 2, 3], np.float32).reshape(1, 4, 1, 1)
    g = (0.5 * 1 - 1 * 3) / s                       # G = sum y*delta
    d = d0.copy()
    act.backprop(d, y, None, False)                  # Darknet: delta*G where y>0, else unchanged
    np.testing.assert_allclose(d.ravel(), [0.5 * g, -g, 2, 3], rtol=1e-5)
    d = d0.copy()
    act.backprop(d, y, x, True)                      # true: [x>0](delta - G)/S
    np.testing.assert_allclose(d.ravel(), [(0.5 - g) / s, (-1 - g) / s, 0, 0], rtol=1e-5)


@pytest.mark.parametrize("name", ["normalize_channels_softmax", "normalize_channels_softmax_maxval"])
def test_softmax_darknet_gradient_multiplies_by_sum(name):
    act = ACTIVATIONS[name]
    x = np.array([[0.2, -1.0, 1.5]], np.float32)
    y = fwd(act, x)
    d0 = np.array([[1.0, 2.0, -0.5]], np.float32)
    d = d0.copy()
    act.backprop(d, y, None, False)
    np.testing.assert_allclose(d, d0 * np.sum(y * d0), rtol=1e-6)


# ------------------------------------------------------------------ exact gradients
def fd_vjp(act, x, g, h=1e-6):
    """Central differences of sum(g * act(x)) with respect to each element of x (float64)."""
    x = np.array(x, np.float64)
    return numeric_gradient(lambda: np.sum(g * fwd(act, x)), x, eps=h).reshape(x.shape)


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_exact_gradient_matches_finite_differences(name):
    act = ACTIVATIONS[name]
    x = sample_points((2, 4, 3), seed=1)
    g = np.random.RandomState(2).uniform(-1, 1, x.shape)
    y = fwd(act, x)
    assert y.dtype == np.float64
    d = g.copy()
    act.backprop(d, y, x if act.needs_input(True) else None, True)
    np.testing.assert_allclose(d, fd_vjp(act, x, g), rtol=1e-6, atol=1e-8)


def test_exact_gradient_at_mish_thresholds_and_gelu_far_out():
    x = np.array([[-25.0, -21.0, 21.0, 25.0]])
    g = np.ones_like(x)
    for name in ("mish", "gelu"):
        act = ACTIVATIONS[name]
        d = g.copy()
        act.backprop(d, fwd(act, x), x, True)
        np.testing.assert_allclose(d, fd_vjp(act, x, g, h=1e-5), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", sorted(ALL_NAMES - DARKNET_NOT_TRUE))
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_exact_and_darknet_agree_where_darknet_is_the_derivative(name, dtype, tol):
    act = ACTIVATIONS[name]
    x = sample_points((3, 4, 5), seed=4, dtype=dtype)
    y = fwd(act, x)
    g = np.random.RandomState(5).uniform(-1, 1, x.shape).astype(dtype)
    dk, ex = g.copy(), g.copy()
    act.backprop(dk, y, x, False)
    act.backprop(ex, y, x, True)
    np.testing.assert_allclose(dk, ex, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(DARKNET_NOT_TRUE))
def test_darknet_gradient_differs_from_derivative_for_gelu_and_normalize_channels(name):
    act = ACTIVATIONS[name]
    x = sample_points((2, 4, 3), seed=6)
    y = fwd(act, x)
    g = np.random.RandomState(7).uniform(-1, 1, x.shape)
    dk, ex = g.copy(), g.copy()
    act.backprop(dk, y, x, False)
    act.backprop(ex, y, x, True)
    assert np.max(np.abs(dk - ex)) > 1e-2


# ------------------------------------------------------------------ in place, dtype, x=None
@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_forward_in_place(name):
    act = ACTIVATIONS[name]
    x = sample_points((2, 3, 4, 4), seed=8, dtype=np.float32) * np.float32(1.5)
    expected = fwd(act, x)
    buf = x.copy()
    r = act.forward(buf, buf)
    assert r is buf
    np.testing.assert_array_equal(buf, expected)
    assert expected.dtype == np.float32


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
@pytest.mark.parametrize("exact", [False, True])
def test_backprop_needs_x_only_when_declared(name, exact):
    act = ACTIVATIONS[name]
    x = sample_points((2, 3, 2, 2), seed=9, dtype=np.float32)
    y = fwd(act, x)
    d = np.ones_like(x)
    if act.needs_input(exact):
        with pytest.raises(ValueError):
            act.backprop(d, y, None, exact)
    else:
        act.backprop(d, y, None, exact)
        ref = np.ones_like(x)
        act.backprop(ref, y, x, exact)
        np.testing.assert_array_equal(d, ref)
    assert d.dtype == np.float32
