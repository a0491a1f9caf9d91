"""Network control flow (spec section 5): forward / backward / update, delta zeroing,
stopbackward, onlyforward, dontload/dontsave, per-layer learning-rate multipliers, every
learning-rate policy against hand-computed Darknet values, and train_step with subdivisions."""
import math
import warnings

import numpy as np
import pytest

import minidarknet
from minidarknet import CfgError, ShapeError

F = np.float32


def build(text, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minidarknet.loads(text, **options)


def net_cfg(body, net_keys="", batch=2, w=4, h=1, c=1):
    return f"[net]\nbatch={batch}\nwidth={w}\nheight={h}\nchannels={c}\n{net_keys}\n{body}"


MLP = ("[connected]\noutput=5\nactivation=leaky\n{k0}\n"
       "[connected]\noutput=3\nactivation=linear\n{k1}\n[cost]\n")


def mlp(k0="", k1="", net_keys="", batch=2, **options):
    net = build(net_cfg(MLP.format(k0=k0, k1=k1), net_keys, batch=batch), seed=0, **options)
    rng = np.random.default_rng(1)
    for layer in net.layers:
        if hasattr(layer, "biases"):
            layer.biases[...] = rng.normal(0, .5, layer.biases.shape)
    return net


def batch_data(rows=2, seed=2):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (rows, 4)).astype(F), rng.uniform(0, 1, (rows, 3)).astype(F)


# ------------------------------------------------------------------ forward / backward

def test_forward_returns_the_output_layer_buffer():
    net = mlp()
    x, _ = batch_data()
    out = net.forward(x)
    assert out is net.layers[1].output                   # the last non-cost layer
    w0, b0 = net.layers[0].weights, net.layers[0].biases
    h = x @ w0.T + b0
    h = np.where(h > 0, h, F(.1) * h)
    expected = h @ net.layers[1].weights.T + net.layers[1].biases
    np.testing.assert_allclose(out.reshape(2, 3), expected, rtol=1e-5, atol=1e-6)
    assert net.cost is None and net.layers[2].output.sum() == 0    # no truth: no loss


def test_forward_with_truth_but_no_training_computes_the_cost():
    net = mlp()
    x, truth = batch_data()
    out = net.forward(x, truth).reshape(2, 3).copy()
    assert net.cost == pytest.approx(((truth - out) ** 2).sum(), rel=1e-5)
    assert net.input_delta is None


def test_cost_is_nan_without_cost_layers():
    # Darknet divides the summed cost by the number of cost layers, 0/0 here.
    net = build(net_cfg("[connected]\noutput=3\n"))
    x, truth = batch_data()
    net.forward(x, truth)
    assert math.isnan(net.cost)


def test_cost_is_the_mean_over_cost_layers():
    net = build(net_cfg("[connected]\noutput=3\nactivation=linear\n[softmax]\n[cost]\n"))
    x, _ = batch_data()
    truth = np.array([[0, 1, 0], [1, 0, 0]], F)
    p = net.forward(x, truth).reshape(2, 3)
    xent = -np.log(p[truth == 1]).sum()
    sse = ((truth - p) ** 2).sum()
    assert net.cost == pytest.approx((xent + sse) / 2, rel=1e-5)


def test_deltas_are_zeroed_at_every_forward():
    net = mlp()
    x, truth = batch_data()
    net.forward(x, truth, train=True)
    net.backward()
    assert all(np.abs(l.delta).max() > 0 for l in net.layers)
    first = [l.delta.copy() for l in net.layers]
    net.forward(x, truth, train=True)
    assert not net.layers[0].delta.any() and not net.layers[1].delta.any()
    np.testing.assert_array_equal(net.layers[2].delta, first[2])      # the loss delta, anew
    net.backward()
    for a, b in zip(first, net.layers):
        np.testing.assert_array_equal(a, b.delta)                     # not doubled


def test_updates_accumulate_until_update():
    net = mlp()
    x, truth = batch_data()
    net.forward(x, truth, train=True)
    net.backward()
    once = net.layers[0].weight_updates.copy(), net.layers[1].bias_updates.copy()
    net.forward(x, truth, train=True)
    net.backward()
    np.testing.assert_allclose(net.layers[0].weight_updates, 2 * once[0], rtol=1e-6)
    np.testing.assert_allclose(net.layers[1].bias_updates, 2 * once[1], rtol=1e-6)


def test_input_delta():
    net = mlp()
    x, truth = batch_data()
    net.forward(x, truth, train=True)
    assert net.input_delta.shape == (2, 1, 1, 4) and not net.input_delta.any()
    net.backward()
    # the first layer's delta (w.r.t. its pre-activation) times its weights
    np.testing.assert_allclose(net.input_delta.reshape(2, 4),
                               net.layers[0].delta.reshape(2, 5) @ net.layers[0].weights,
                               rtol=1e-5, atol=1e-7)


def test_backward_with_an_external_delta():
    net = build(net_cfg("[connected]\noutput=3\nactivation=linear\n"))
    x, _ = batch_data()
    net.forward(x)
    delta = np.array([[1, 0, 0], [0, 0, 2]], F)
    net.backward(delta)
    np.testing.assert_allclose(net.layers[0].weight_updates, delta.T @ x, rtol=1e-6)
    np.testing.assert_allclose(net.input_delta.reshape(2, 4), delta @ net.layers[0].weights,
                               rtol=1e-6)


def test_backward_needs_forward():
    with pytest.raises(RuntimeError):
        mlp().backward()


def test_stopbackward_stops_at_that_layer():
    net = mlp(k1="stopbackward=1")
    x, truth = batch_data()
    net.forward(x, truth, train=True)
    net.backward()
    assert not net.layers[1].weight_updates.any()       # the layer itself gets no backward
    assert not net.layers[0].weight_updates.any()
    assert not net.layers[0].delta.any()
    assert not net.input_delta.any()
    assert net.layers[1].delta.any()                    # the cost still wrote its delta


def test_onlyforward_skips_only_that_layer():
    net = mlp(k1="onlyforward=1")
    x, truth = batch_data()
    net.forward(x, truth, train=True)
    net.backward()
    assert not net.layers[1].weight_updates.any()
    assert not net.layers[0].delta.any()                # nothing reached it
    assert not net.layers[0].weight_updates.any()


def test_shape_errors():
    net = mlp()
    with pytest.raises(ShapeError, match="5 values"):
        net.forward(np.zeros(5, F))
    with pytest.raises(ShapeError, match="truth"):
        net.forward(np.zeros((2, 4), F), np.zeros((2, 4), F))
    image = build(net_cfg("[avgpool]\n", w=3, h=2, c=2))
    with pytest.raises(ShapeError, match="NCHW"):
        image.forward(np.zeros((1, 2, 3, 2), F))
    out = image.forward(np.ones((2, 3, 2), F))           # one (c, h, w) sample
    assert out.shape == (1, 2, 1, 1)


def test_batch_follows_the_input():
    net = mlp()
    x, _ = batch_data(rows=5)
    assert net.forward(x).shape == (5, 3, 1, 1)
    assert net.batch == 5
    single = net.forward(x[:1]).copy()
    np.testing.assert_allclose(single, net.forward(x)[:1], rtol=1e-6)


def test_bad_gradients_mode():
    with pytest.raises(ValueError, match="gradients"):
        mlp(gradients="approximate")


# ------------------------------------------------------------------ update

def test_update_rule_by_hand():
    net = mlp(net_keys="learning_rate=.5\nmomentum=.9\ndecay=.01")
    x, truth = batch_data()
    layer = net.layers[1]
    w, b = layer.weights.astype(np.float64), layer.biases.astype(np.float64)
    net.forward(x, truth, train=True)
    net.backward()
    wu, bu = layer.weight_updates.astype(np.float64), layer.bias_updates.astype(np.float64)
    net.update()
    batch = 2
    b1 = b + .5 / batch * bu
    wu1 = wu - .01 * batch * w
    w1 = w + .5 / batch * wu1
    np.testing.assert_allclose(layer.biases, b1, rtol=1e-5)
    np.testing.assert_allclose(layer.weights, w1, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(layer.bias_updates, .9 * bu, rtol=1e-5)
    np.testing.assert_allclose(layer.weight_updates, .9 * wu1, rtol=1e-5, atol=1e-7)
    # a second update without backward moves by the momentum alone (minus decay)
    net.update()
    np.testing.assert_allclose(layer.biases, b1 + .5 / batch * .9 * bu, rtol=1e-5)


def test_update_batch_is_batch_times_subdivisions():
    net = mlp(net_keys="learning_rate=.5\nmomentum=0\ndecay=0\nsubdivisions=2", batch=4)
    assert net.batch == 2 and net.subdivisions == 2
    x, truth = batch_data()
    layer = net.layers[1]
    b = layer.biases.copy()
    net.forward(x, truth, train=True)
    net.backward()
    bu = layer.bias_updates.copy()
    net.update()
    np.testing.assert_allclose(layer.biases, b + .5 / 4 * bu, rtol=1e-6)


def test_per_layer_learning_rate_multiplier():
    keys = "learning_rate=1\nmomentum=0\ndecay=0"
    plain = mlp(net_keys=keys)
    scaled = mlp(k0="learning_rate=.1", k1="learning_rate=3", net_keys=keys)
    x, truth = batch_data()
    before = [(l.weights.copy(), l.biases.copy()) for l in plain.layers[:2]]
    for net in (plain, scaled):
        net.forward(x, truth, train=True)
        net.backward()
        net.update()
    for index, factor in ((0, .1), (1, 3)):
        for name, start in zip(("weights", "biases"), before[index]):
            step_plain = getattr(plain.layers[index], name) - start
            step_scaled = getattr(scaled.layers[index], name) - start
            np.testing.assert_allclose(step_scaled, factor * step_plain, rtol=1e-3, atol=1e-7)


def test_dont_update():
    net = mlp(k0="dont_update=1")
    x, truth = batch_data()
    weights = net.layers[0].weights.copy()
    net.forward(x, truth, train=True)
    net.backward()
    net.update()
    np.testing.assert_array_equal(net.layers[0].weights, weights)


def test_batchnorm_scales_update_without_decay():
    net = build(net_cfg("[connected]\noutput=3\nbatch_normalize=1\nactivation=linear\n[cost]\n",
                        "learning_rate=1\nmomentum=0\ndecay=.5", batch=4), seed=0)
    rng = np.random.default_rng(3)
    x, truth = rng.uniform(-1, 1, (4, 4)), rng.uniform(0, 1, (4, 3))
    layer = net.layers[0]
    scales = layer.scales.copy()
    net.forward(x, truth, train=True)
    net.backward()
    su = layer.scale_updates.copy()
    net.update()
    np.testing.assert_allclose(layer.scales, scales + su / 4, rtol=1e-6)


def test_dontload_and_dontsave(tmp_path):
    source = mlp()
    path = tmp_path / "a.weights"
    source.save_weights(path)
    target = mlp(k0="dontload=1")
    fresh = target.layers[0].weights.copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        target.load_weights(path)
    # layer 0 was not read: layer 1 got layer 0's floats, and floats are left over
    np.testing.assert_array_equal(target.layers[0].weights, fresh)
    assert any("left over" in str(w.message) for w in caught)
    skipping = mlp(k0="dontsave=1")
    skipping.save_weights(tmp_path / "b.weights")
    size = (tmp_path / "b.weights").stat().st_size
    assert size == 20 + 4 * (3 + 5 * 3)


# ------------------------------------------------------------------ learning-rate policies

def rate_at(policy_keys, batch_num, net_keys="learning_rate=.1", batch=2, subdivisions=1,
            seed=0):
    net = build(net_cfg("[connected]\noutput=1\n",
                        f"{net_keys}\nsubdivisions={subdivisions}\n{policy_keys}",
                        batch=batch * subdivisions), seed=seed)
    net.seen = batch_num * batch * subdivisions
    assert net.current_batch() == batch_num
    return net.current_rate()


def f32(v):
    return float(np.float32(v))


POLICIES = [
    # (keys, batch number, Darknet's value computed by hand)
    ("policy=constant", 0, .1),
    ("policy=constant", 5000, .1),
    ("", 77, .1),                                          # constant is the default
    ("policy=step\nstep=10\nscale=.5", 9, .1),
    ("policy=step\nstep=10\nscale=.5", 10, .05),
    ("policy=step\nstep=10\nscale=.5", 25, .025),
    ("policy=exp\ngamma=.9", 3, .1 * .9 ** 3),
    ("policy=exp\ngamma=.9", 0, .1),
    ("policy=poly\npower=2\nmax_batches=100", 25, .1 * .75 ** 2),
    ("policy=poly\nmax_batches=100", 50, .1 * .5 ** 4),      # power defaults to 4
    ("policy=poly\npower=1\nmax_batches=100", 100, 0.0),
    ("policy=steps\nsteps=10,20,30\nscales=.1,.5,2", 5, .1),
    ("policy=steps\nsteps=10,20,30\nscales=.1,.5,2", 10, .01),   # steps[i] > n stops
    ("policy=steps\nsteps=10,20,30\nscales=.1,.5,2", 25, .005),
    ("policy=steps\nsteps=10,20,30\nscales=.1,.5,2", 30, .01),
    ("policy=steps\nsteps=10,20,30\nscales=.1,.5,2", 9999, .01),
    ("policy=sigmoid\ngamma=.5\nstep=10", 12, .1 / (1 + math.exp(.5 * 2))),
    ("policy=sigmoid\ngamma=.5\nstep=10", 10, .05),
    ("policy=sig\ngamma=2\nstep=4", 1, .1 / (1 + math.exp(2 * -3))),
    # sgdr (AlexeyAB): cosine from lr to learning_rate_min, cycles of 10, 20, 40, ...
    ("policy=sgdr\nsgdr_cycle=10\nlearning_rate_min=.01", 0, .1),
    ("policy=sgdr\nsgdr_cycle=10\nlearning_rate_min=.01", 5,
     .01 + .5 * .09 * (1 + math.cos(5 * 3.14159265 / 10))),
    ("policy=sgdr\nsgdr_cycle=10\nlearning_rate_min=.01", 10, .01),   # start + cycle < n: no
    ("policy=sgdr\nsgdr_cycle=10\nlearning_rate_min=.01", 11,
     .01 + .5 * .09 * (1 + math.cos(1 * 3.14159265 / 20))),
    ("policy=sgdr\nsgdr_cycle=10\nsgdr_mult=3\nlearning_rate_min=.01", 45,
     .01 + .5 * .09 * (1 + math.cos(5 * 3.14159265 / 90))),
    ("policy=sgdr\nmax_batches=8", 2,                        # cycle = max_batches, min 1e-5
     .00001 + .5 * (.1 - .00001) * (1 + math.cos(2 * 3.14159265 / 8))),
]


@pytest.mark.parametrize("keys,n,expected", POLICIES)
def test_learning_rate_policy(keys, n, expected):
    assert rate_at(keys, n) == pytest.approx(f32(expected), rel=2e-7, abs=1e-12)


@pytest.mark.parametrize("keys", ["policy=constant", "policy=steps\nsteps=1,2\nscales=.1,.1",
                                  "policy=poly\nmax_batches=100"])
@pytest.mark.parametrize("n,power", [(0, 4), (25, 4), (50, 2), (99, 1)])
def test_burn_in_overrides_every_policy(keys, n, power):
    rate = rate_at(f"{keys}\nburn_in=100\npower={power}", n)
    assert rate == pytest.approx(f32(.1 * (n / 100) ** power), rel=2e-7, abs=1e-15)


def test_burn_in_ends():
    assert rate_at("policy=constant\nburn_in=100", 100) == pytest.approx(f32(.1))


def test_batch_number_counts_batch_times_subdivisions():
    # seen counts images; batch_num = seen / (batch * subdivisions)
    net = build(net_cfg("[connected]\noutput=1\n", "learning_rate=.1\nsubdivisions=4\n"
                        "policy=step\nstep=2\nscale=.1", batch=8))
    assert net.batch == 2
    net.seen = 15
    assert net.current_batch() == 1 and net.current_rate() == pytest.approx(f32(.1))
    net.seen = 16
    assert net.current_batch() == 2 and net.current_rate() == pytest.approx(f32(.01))


def test_random_policy_uses_the_network_generator():
    net = build(net_cfg("[connected]\noutput=1\n", "learning_rate=.1\npolicy=random\npower=2"))
    for seed in (0, 7):
        net.rng = np.random.default_rng(seed)
        expected = .1 * np.random.default_rng(seed).random() ** 2
        assert net.current_rate() == pytest.approx(f32(expected), rel=2e-7)
    net.rng = np.random.default_rng(3)
    a, b = net.current_rate(), net.current_rate()
    assert a != b                                            # a new draw per call


def test_random_policy_is_reproducible_with_a_seed():
    text = net_cfg("[connected]\noutput=1\n", "learning_rate=.1\npolicy=random")
    first, second = (build(text, seed=11).current_rate() for _ in range(2))
    assert first == second


@pytest.mark.parametrize("keys,words", [
    ("policy=fast", ["policy=fast"]),
    ("policy=steps\nsteps=10", ["steps"]),
    ("policy=steps\nsteps=10,20\nscales=.1", ["scales"]),
    ("policy=step\nstep=0", ["step=0"]),
    ("policy=poly", ["max_batches"]),
    ("policy=sgdr", ["sgdr_cycle"]),
])
def test_bad_policy_keys(keys, words):
    with pytest.raises(CfgError) as info:
        build(net_cfg("[connected]\noutput=1\n", keys))
    for word in words:
        assert word in str(info.value)


# ------------------------------------------------------------------ train_step

def manual_train(net, x, truth):
    """Darknet's train_network written out: sub-batches of net.batch, update every
    `subdivisions` sub-batches, return sum(cost) / (number of sub-batches * batch)."""
    total, rows = 0.0, x.shape[0]
    for start in range(0, rows, net.batch):
        net.seen += net.batch
        net.forward(x[start:start + net.batch], truth[start:start + net.batch], train=True)
        net.backward()
        total += net.cost
        if (net.seen // net.batch) % net.subdivisions == 0:
            net.update()
    return total / (rows // net.batch * net.batch)


KEYS = "learning_rate=.05\nmomentum=.9\ndecay=.001\nsubdivisions=2"


def test_train_step_matches_darknets_train_network():
    a, b = mlp(net_keys=KEYS, batch=4), mlp(net_keys=KEYS, batch=4)
    x, truth = batch_data(rows=4)
    for _ in range(3):
        expected = manual_train(b, x, truth)
        got = a.train_step(x, truth)
        assert got == pytest.approx(expected, rel=1e-6)
    assert a.seen == b.seen == 12
    for la, lb in zip(a.layers[:2], b.layers[:2]):
        np.testing.assert_array_equal(la.weights, lb.weights)


def test_train_step_updates_only_every_subdivisions_sub_batches():
    net = mlp(net_keys=KEYS, batch=4)
    assert net.batch == 2
    x, truth = batch_data(rows=2)
    weights = net.layers[0].weights.copy()
    net.train_step(x, truth)                       # one sub-batch of two: no update yet
    assert net.seen == 2
    np.testing.assert_array_equal(net.layers[0].weights, weights)
    assert net.layers[0].weight_updates.any()
    net.train_step(x, truth)                       # the second sub-batch: update
    assert net.seen == 4
    assert not np.array_equal(net.layers[0].weights, weights)


def test_train_step_cost_is_the_average():
    net = mlp(net_keys="learning_rate=0\nmomentum=0\ndecay=0\nsubdivisions=2", batch=4)
    x, truth = batch_data(rows=4)
    costs = []
    for start in (0, 2):
        net.forward(x[start:start + 2], truth[start:start + 2])
        costs.append(net.cost)
    assert net.train_step(x, truth) == pytest.approx(sum(costs) / 4, rel=1e-6)


def test_train_step_uses_the_rate_at_update_time():
    keys = "learning_rate=.1\nmomentum=0\ndecay=0\npolicy=steps\nsteps=1\nscales=.5"
    net = mlp(net_keys=keys)
    x, truth = batch_data()
    layer = net.layers[1]
    b = layer.biases.copy()
    net.forward(x, truth, train=True)
    net.backward()
    bu = layer.bias_updates.copy()
    net.layers[1].bias_updates[...] = 0
    net.layers[0].bias_updates[...] = 0
    net.layers[0].weight_updates[...] = 0
    net.layers[1].weight_updates[...] = 0
    net.train_step(x, truth)          # seen = 2 -> batch_num 1 -> rate .05 at the update
    np.testing.assert_allclose(layer.biases, b + .05 / 2 * bu, rtol=1e-5)


def test_train_step_rows_must_be_a_multiple_of_the_batch():
    net = mlp(batch=2)
    x, truth = batch_data(rows=3)
    with pytest.raises(ShapeError, match="multiple"):
        net.train_step(x, truth)


def test_train_step_leaves_no_input_delta():
    net = mlp()
    x, truth = batch_data()
    net.train_step(x, truth)
    assert net.input_delta is None


def test_training_lowers_the_cost():
    net = mlp(net_keys="learning_rate=.1\nmomentum=.9\ndecay=0")
    x, truth = batch_data()
    first = net.train_step(x, truth)
    for _ in range(30):
        last = net.train_step(x, truth)
    assert last < first / 2


def test_truth_layer_feeds_the_later_losses():
    # Darknet: a layer with truth=1 becomes the truth of the layers after it, with or
    # without a truth from the caller.
    net = build(net_cfg("[connected]\noutput=3\nactivation=linear\ntruth=1\n"
                        "[connected]\noutput=3\nactivation=linear\n[cost]\n"), seed=0)
    x, _ = batch_data()
    out = net.forward(x).reshape(2, 3)
    target = net.layers[0].output.reshape(2, 3)
    assert net.cost == pytest.approx(((target - out) ** 2).sum(), rel=1e-5)
    np.testing.assert_allclose(net.layers[2].delta.reshape(2, 3), target - out, rtol=1e-6)


def test_network_reset_state_restarts_a_recurrent_sequence():
    net = minidarknet.loads("[net]\ninputs=4\nbatch=1\ntime_steps=1\n[rnn]\noutput=3\n"
                            "hidden=3\nactivation=tanh\n", seed=1)
    x = np.ones((1, 4), np.float32)
    first = net.forward(x).copy()
    second = net.forward(x).copy()          # the state carried over changes the output
    net.reset_state()
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(net.forward(x), first)
