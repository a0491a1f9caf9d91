"""[rnn], [gru], [lstm], [crnn]: every recurrent cfg of the corpus builds and runs; forward
against direct numpy references of the equations; Darknet-mode backward against references of
Darknet's loops (quirks included); finite-difference checks of gradients="exact"; state
handling; weights files (round trip, block order of each fork, transposed files); cfg errors.
"""
import warnings

import numpy as np
import pytest

import minidarknet
from minidarknet.activations import get_activation
from minidarknet.errors import CfgError, DarknetWarning, ShapeError
from minidarknet.layers.recurrent import LINEAR, DenseBlock
from minidarknet.summary import layer_rows

from conftest import CFG_CORPUS, need_shared, use_float64

RECURRENT = ("rnn", "gru", "lstm", "crnn")


# ------------------------------------------------------------------ helpers

def build(text, gradients="darknet", seed=0, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minidarknet.loads(text, gradients=gradients, seed=seed, **options)


def cfg(body, time_steps=3, batch=2, head="inputs=3"):
    return f"[net]\nbatch={batch}\ntime_steps={time_steps}\n{head}\n\n{body}\n"


def randomize(layer, rng, scale=0.7):
    """Non-trivial values for every sub-layer parameter and rolling statistic."""
    for block in layer.blocks.values():
        fan_in = block.weights[0].size
        block.weights[...] = rng.normal(0, scale / np.sqrt(fan_in) * 2, block.weights.shape)
        block.biases[...] = rng.normal(0, .5, block.biases.shape)
        if block.scales is not None:
            block.scales[...] = rng.uniform(.5, 1.5, block.scales.shape)
            block.rolling_mean[...] = rng.normal(0, .3, block.rolling_mean.shape)
            block.rolling_variance[...] = rng.uniform(.5, 1.5, block.rolling_variance.shape)


def sample_input(net, rows, rng):
    shape = (net.c, net.h, net.w) if net.c * net.h * net.w == net.inputs else (net.inputs,)
    return rng.normal(size=(rows,) + shape).astype(np.float32)


def act(name, x):
    return get_activation(name).forward(np.array(x, np.float64), np.empty(np.shape(x)))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def dense(block, x):
    """A [connected] block in inference mode (bias or rolling-statistics batch norm)."""
    y = np.asarray(x, np.float64) @ block.weights.T.astype(np.float64)
    if block.batch_normalize:
        y = (y - block.rolling_mean) / (np.sqrt(block.rolling_variance) + 1e-6)
        return y * block.scales + block.biases
    return y + block.biases


def conv(block, x, pad):
    """A stride-1 [convolutional] block in inference mode, written out per kernel offset."""
    b, c, h, w = x.shape
    weights = block.weights.astype(np.float64)
    k = weights.shape[-1]
    groups = c // weights.shape[1]
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n = weights.shape[0]
    out = np.zeros((b, n, h, w))
    cg, ng = c // groups, n // groups
    for g in range(groups):
        for ky in range(k):
            for kx in range(k):
                window = xp[:, g * cg:(g + 1) * cg, ky:ky + h, kx:kx + w]
                out[:, g * ng:(g + 1) * ng] += np.einsum(
                    "nc,bchw->bnhw", weights[g * ng:(g + 1) * ng, :, ky, kx], window)
    if block.batch_normalize:
        out = (out - block.rolling_mean[:, None, None]) / \
            (np.sqrt(block.rolling_variance) + 1e-6)[:, None, None]
        return out * block.scales[:, None, None] + block.biases[:, None, None]
    return out + block.biases[:, None, None]


# ------------------------------------------------------------------ the cfg corpus

CORPUS = ["pjreddie/rnn.cfg", "pjreddie/rnn.train.cfg", "pjreddie/gru.cfg", "alexeyab/rnn.cfg",
          "alexeyab/rnn.train.cfg", "alexeyab/gru.cfg", "alexeyab/lstm.train.cfg",
          "alexeyab/crnn.train.cfg", "alexeyab/yolov3-tiny_occlusion_track.cfg"]


def test_corpus_lists_every_recurrent_cfg():
    corpus = need_shared(CFG_CORPUS)
    found = set()
    for path in corpus.rglob("*.cfg"):
        text = path.read_text(errors="replace")
        if any(f"\n[{kind}]" in "\n" + text for kind in RECURRENT):
            found.add(str(path.relative_to(corpus)))
    assert found == set(CORPUS)


def expected_weight_count(layer):
    n_in, n = layer.inputs, layer.outputs
    if layer.type == "rnn":
        h = layer.hidden
        count = (n_in + 1) * h + (h + 1) * h + (h + 1) * n
        bn = 2 * h + n
    elif layer.type in ("gru", "lstm"):
        gates = 3 if layer.type == "gru" else 4
        count = gates * ((n_in + 1) * n + (n + 1) * n)
        bn = 2 * gates * n
    else:
        c, k, h, out = layer.in_c, layer.size, layer.hidden_filters, layer.output_filters
        count = (c * k * k + 1) * h + (h * k * k + 1) * h + (h * k * k + 1) * out
        bn = 2 * h + out
    return count + (3 * bn if layer.batch_normalize else 0)


@pytest.mark.parametrize("name", CORPUS)
def test_corpus_cfg_builds_and_runs(name):
    path = need_shared(CFG_CORPUS) / name
    small = {"width": 64, "height": 64} if "yolov3" in name else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = minidarknet.load(path, batch=1, **small)
    recurrent = [l for l in net.layers if l.type in RECURRENT]
    assert recurrent
    for layer in recurrent:
        # batch=1: one sequence of one step, whatever time_steps the cfg trains with
        assert (layer.steps, layer.step_batch) == (1, 1)
        assert layer.weight_count() == expected_weight_count(layer)
        if layer.type == "crnn":
            assert (layer.out_h, layer.out_w) == (layer.in_h, layer.in_w)
            assert layer.out_c == layer.output_filters
        else:
            assert (layer.out_c, layer.out_h, layer.out_w) == (layer.outputs, 1, 1)
    if "yolov3" in name:
        return      # random BN weights overflow in the deep conv stack; the shapes suffice
    x = sample_input(net, 1, np.random.default_rng(0))
    out = net.forward(x)
    assert out.shape[0] == 1 and np.isfinite(out).all()


SHRINK = {"pjreddie/rnn.train.cfg": {"rnn.output": 64, "rnn.hidden": 64},
          "alexeyab/lstm.train.cfg": {"lstm.output": 64},
          "alexeyab/crnn.train.cfg": {"crnn.output": 64, "crnn.hidden": 64},
          "pjreddie/gru.cfg": {"gru.output": 64}}


@pytest.mark.parametrize("name", SHRINK)
def test_corpus_cfg_runs_several_time_steps(name):
    """time_steps=3, batch=48: 16 sequences of three steps through every recurrent layer
    (64 units instead of 1024 to keep it fast), forward and backward in both gradient modes.
    (With only a few sequences per step, Darknet's batch-norm backward -- sqrt(var + 1e-5)
    against the forward's sqrt(var) + 1e-6, and the last step's statistics for every step --
    blows the deltas up to inf.)"""
    path = need_shared(CFG_CORPUS) / name
    rng = np.random.default_rng(1)
    for gradients in ("darknet", "exact"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = minidarknet.load(path, batch=48, gradients=gradients,
                                   overrides={"net.time_steps": 3, **SHRINK[name]})
            x = sample_input(net, 48, rng)
            out = net.forward(x, train=True)
            net.backward(rng.normal(size=out.shape).astype(np.float32) * .01)
        for layer in net.layers:
            if layer.type in RECURRENT:
                assert (layer.steps, layer.step_batch) == (3, 16)
        assert np.isfinite(out).all() and np.isfinite(net.input_delta).all()


# ------------------------------------------------------------------ forward references

def rnn_reference(layer, x, state):
    act_name = layer.section.str("activation", "logistic")
    self_act = {1: "logistic", 2: "loggy"}.get(layer.logistic, act_name)
    blocks = layer.blocks
    ys = []
    for xt in x:
        new = act(act_name, dense(blocks["input_layer"], xt)) + \
            act(self_act, dense(blocks["self_layer"], state))
        state = new + (state if layer.shortcut else 0)
        ys.append(act(act_name, dense(blocks["output_layer"], state)))
    return np.stack(ys), state


def gru_reference(layer, x, h):
    b = layer.blocks
    ys = []
    for xt in x:
        z = sigmoid(dense(b["uz"], xt) + dense(b["wz"], h))
        r = sigmoid(dense(b["ur"], xt) + dense(b["wr"], h))
        pre = dense(b["uh"], xt) + dense(b["wh"], r * h)
        candidate = np.tanh(pre) if layer.tanh else sigmoid(pre)
        h = z * h + (1 - z) * candidate
        ys.append(h)
    return np.stack(ys), h


def lstm_reference(layer, x, h, c):
    b = layer.blocks
    ys = []
    for xt in x:
        f, i, o = (sigmoid(dense(b[f"u{g}"], xt) + dense(b[f"w{g}"], h)) for g in "fio")
        g = np.tanh(dense(b["ug"], xt) + dense(b["wg"], h))
        c = f * c + i * g
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys), h, c


def crnn_reference(layer, x, state):
    pad = layer.padding
    act_name = layer.section.str("activation", "logistic")
    blocks = layer.blocks
    ys = []
    for xt in x:
        new = act(act_name, conv(blocks["input_layer"], xt, pad)) + \
            act(act_name, conv(blocks["self_layer"], state, pad))
        state = new + (state if layer.shortcut else 0)
        ys.append(act(act_name, conv(blocks["output_layer"], state, pad)))
    return np.stack(ys), state


RNN_CASES = {
    "pjreddie": "[rnn]\noutput=4\nactivation=tanh",
    "hidden_shortcut_loggy": "[rnn]\noutput=2\nhidden=5\nactivation=leaky\nshortcut=1\n"
                             "logistic=2",
    "bn": "[rnn]\noutput=3\nhidden=4\nbatch_normalize=1\nlogistic=1",
}


@pytest.mark.parametrize("case", RNN_CASES)
def test_rnn_forward_matches_reference_and_carries_state(case):
    net = build(cfg(RNN_CASES[case]))
    layer = net.layers[0]
    rng = np.random.default_rng(2)
    randomize(layer, rng)
    x = sample_input(net, 6, rng)
    steps = x.reshape(3, 2, 3)
    zero = np.zeros((2, layer.hidden))
    # inference: the state carries from one forward to the next
    y1 = net.forward(x).reshape(3, 2, -1).copy()
    ref1, state = rnn_reference(layer, steps, zero)
    np.testing.assert_allclose(y1, ref1, rtol=1e-5, atol=1e-6)
    y2 = net.forward(x).reshape(3, 2, -1).copy()
    ref2, _ = rnn_reference(layer, steps, state)
    np.testing.assert_allclose(y2, ref2, rtol=1e-5, atol=1e-6)
    layer.reset_state()
    np.testing.assert_allclose(net.forward(x).reshape(3, 2, -1), ref1, rtol=1e-5, atol=1e-6)
    if not layer.batch_normalize:
        # training starts from a zero state every time and leaves it zero
        net.forward(x)
        np.testing.assert_allclose(net.forward(x, train=True).reshape(3, 2, -1), ref1,
                                   rtol=1e-5, atol=1e-6)
        assert not layer.state.any()
        np.testing.assert_allclose(net.forward(x).reshape(3, 2, -1), ref1, rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("tanh", [0, 1])
def test_gru_forward_matches_reference_and_never_resets(tanh):
    net = build(cfg(f"[gru]\noutput=4\ntanh={tanh}"))
    layer = net.layers[0]
    rng = np.random.default_rng(3)
    randomize(layer, rng)
    x = sample_input(net, 6, rng)
    h = np.zeros((2, 4))
    for train in (False, True, False):        # Darknet keeps the state in training too
        y = net.forward(x, train=train).reshape(3, 2, 4)
        ref, h = gru_reference(layer, x.reshape(3, 2, 3), h)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    layer.reset_state()
    ref, _ = gru_reference(layer, x.reshape(3, 2, 3), np.zeros((2, 4)))
    np.testing.assert_allclose(net.forward(x).reshape(3, 2, 4), ref, rtol=1e-5, atol=1e-6)


def test_lstm_forward_matches_reference_and_never_resets():
    net = build(cfg("[lstm]\noutput=4"))
    layer = net.layers[0]
    rng = np.random.default_rng(4)
    randomize(layer, rng)
    x = sample_input(net, 6, rng)
    h = c = np.zeros((2, 4))
    for train in (False, True, False):
        y = net.forward(x, train=train).reshape(3, 2, 4)
        ref, h, c = lstm_reference(layer, x.reshape(3, 2, 3), h, c)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.cell_state, c, rtol=1e-5, atol=1e-6)
    layer.reset_state()
    assert not layer.hidden_state.any() and not layer.cell_state.any()


def test_lstm_batch_norm_forward_uses_rolling_statistics_in_inference():
    net = build(cfg("[lstm]\noutput=3\nbatch_normalize=1"))
    layer = net.layers[0]
    rng = np.random.default_rng(5)
    randomize(layer, rng)
    x = sample_input(net, 6, rng)
    ref, _, _ = lstm_reference(layer, x.reshape(3, 2, 3), np.zeros((2, 3)), np.zeros((2, 3)))
    np.testing.assert_allclose(net.forward(x).reshape(3, 2, 3), ref, rtol=1e-5, atol=1e-6)


CRNN_CASES = {
    # pjreddie reads a W x H input as H x W (the buffer is re-read, not transposed)
    "pjreddie_swapped": ("[crnn]\noutput_filters=2\nhidden_filters=3\nactivation=tanh\n"
                         "shortcut=1", "width=4\nheight=2\nchannels=2"),
    "alexeyab_3x3": ("[crnn]\noutput=2\nhidden=4\nsize=3\npad=1\ngroups=2\nactivation=leaky",
                     "width=4\nheight=3\nchannels=2"),
    "alexeyab_1x1_bn": ("[crnn]\noutput=3\nhidden=2\nsize=1\nbatch_normalize=1",
                        "width=2\nheight=3\nchannels=2"),
}


@pytest.mark.parametrize("case", CRNN_CASES)
def test_crnn_forward_matches_reference(case):
    body, head = CRNN_CASES[case]
    net = build(cfg(body, head=head))
    layer = net.layers[0]
    rng = np.random.default_rng(6)
    randomize(layer, rng)
    x = sample_input(net, 6, rng)
    if layer.key_set == "pjreddie":
        assert (layer.out_h, layer.out_w) == (net.w, net.h)
    else:
        assert (layer.out_h, layer.out_w) == (net.h, net.w)
    image = (net.c, layer.out_h, layer.out_w)
    state = np.zeros((2, layer.hidden_filters) + image[1:])
    y = net.forward(x).reshape((3, 2, layer.out_c) + image[1:])
    ref, _ = crnn_reference(layer, x.reshape((3, 2) + image), state)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ Darknet-mode backward

def rnn_darknet_backward(layer, x, dy, act_name):
    """Darknet's backward_rnn_layer (CPU), written out: returns the block updates and the
    input delta.  No batch norm; all three blocks use `act_name`."""
    grad = {"logistic": lambda y: y * (1 - y), "tanh": lambda y: 1 - y * y}[act_name]
    blocks = {n: layer.blocks[n] for n in ("input_layer", "self_layer", "output_layer")}
    w = {n: b.weights.astype(np.float64) for n, b in blocks.items()}
    outs = {n: b.out.astype(np.float64) for n, b in blocks.items()}
    states = layer.states.astype(np.float64)
    steps = len(x)
    updates = {n: [np.zeros_like(w[n]), np.zeros(w[n].shape[0])] for n in blocks}
    self_delta = np.zeros_like(outs["self_layer"])
    dx = np.zeros_like(x, dtype=np.float64)
    for i in range(steps - 1, -1, -1):
        state = outs["input_layer"][i] + outs["self_layer"][i]     # no shortcut term
        d_out = dy[i] * grad(outs["output_layer"][i])
        updates["output_layer"][0] += d_out.T @ state
        updates["output_layer"][1] += d_out.sum(0)
        self_delta[i] += d_out @ w["output_layer"]
        d_self = self_delta[i] * grad(outs["self_layer"][i])
        updates["self_layer"][0] += d_self.T @ states[i]
        updates["self_layer"][1] += d_self.sum(0)
        if i > 0:
            self_delta[i - 1] += d_self @ w["self_layer"]
            if layer.shortcut:
                self_delta[i - 1] += d_self          # the post-gradient delta
        d_in = d_self * grad(outs["input_layer"][i])  # copied AFTER the self backward
        updates["input_layer"][0] += d_in.T @ x[i]
        updates["input_layer"][1] += d_in.sum(0)
        dx[i] += d_in @ w["input_layer"]
    return updates, dx


@pytest.mark.parametrize("shortcut", [0, 1])
@pytest.mark.parametrize("activation", ["logistic", "tanh"])
def test_rnn_darknet_backward_matches_darknets_loop(shortcut, activation):
    net = build(cfg(f"[rnn]\noutput=2\nhidden=3\nactivation={activation}\n"
                    f"shortcut={shortcut}"))
    layer = net.layers[0]
    rng = np.random.default_rng(7)
    randomize(layer, rng)
    x = sample_input(net, 6, rng)
    dy = rng.normal(size=(6, 2)).astype(np.float32)
    net.forward(x, train=True)
    net.backward(dy)
    updates, dx = rnn_darknet_backward(layer, x.reshape(3, 2, 3).astype(np.float64),
                                       dy.reshape(3, 2, 2), activation)
    for name, (weights, biases) in updates.items():
        block = layer.blocks[name]
        np.testing.assert_allclose(block.weight_updates, weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(block.bias_updates, biases, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.input_delta.reshape(3, 2, 3), dx, rtol=1e-5, atol=1e-6)


def test_rnn_darknet_input_delta_carries_the_self_gradient():
    """One step, no shortcut: Darknet's input-layer delta is the exact one times the self
    layer's activation gradient (it is copied after the self layer's backward)."""
    text = cfg("[rnn]\noutput=2\nhidden=3\nactivation=logistic", time_steps=1)
    dy = np.random.default_rng(8).normal(size=(2, 2)).astype(np.float32)
    layers = {}
    for gradients in ("darknet", "exact"):
        net = build(text, gradients=gradients, seed=3)
        randomize(net.layers[0], np.random.default_rng(9))
        net.forward(np.ones((2, 3), np.float32), train=True)
        net.backward(dy)
        layers[gradients] = net.layers[0]
    dark, exact = layers["darknet"], layers["exact"]
    np.testing.assert_allclose(dark.output_layer.bias_updates, exact.output_layer.bias_updates)
    np.testing.assert_allclose(dark.self_layer.bias_updates, exact.self_layer.bias_updates)
    y_self = dark.self_layer.out[0].astype(np.float64)
    exact_delta = exact.input_layer.delta[0]
    assert not np.allclose(dark.input_layer.bias_updates, exact_delta.sum(0), rtol=1e-3)
    np.testing.assert_allclose(dark.input_layer.bias_updates,
                               (exact_delta * y_self * (1 - y_self)).sum(0), rtol=1e-5)


def lstm_darknet_backward(layer, x, dy, carried):
    """Darknet's backward_lstm_layer, written out (no batch norm).  `carried` holds its
    buffers that live from call to call: prev_h, prev_c, dc; they are updated in place."""
    b = {n: blk for n, blk in layer.blocks.items()}
    w = {n: blk.weights.astype(np.float64) for n, blk in b.items()}
    out = layer.output.reshape(layer.steps, layer.step_batch, -1).astype(np.float64)
    cell = layer.cell.astype(np.float64)
    gates = {g: layer.gates[g].astype(np.float64) for g in "figo"}
    updates = {n: [np.zeros_like(w[n]), np.zeros(w[n].shape[0])] for n in b}
    delta = dy.astype(np.float64).copy()
    dx = np.zeros_like(x)
    for t in range(layer.steps - 1, -1, -1):
        if t:
            carried["prev_h"], carried["prev_c"] = out[t - 1], cell[t - 1]
        f, i, g, o = (gates[k][t] for k in "figo")
        tanh_c = np.tanh(cell[t])
        dc = delta[t] * o * (1 - tanh_c ** 2) + carried["dc"]
        d = {"o": delta[t] * tanh_c * o * (1 - o), "g": dc * i * (1 - g * g),
             "i": dc * g * i * (1 - i), "f": dc * carried["prev_c"] * f * (1 - f)}
        for gate, dg in d.items():
            updates[f"w{gate}"][0] += dg.T @ carried["prev_h"]
            updates[f"w{gate}"][1] += dg.sum(0)
            updates[f"u{gate}"][0] += dg.T @ x[t]
            updates[f"u{gate}"][1] += dg.sum(0)
            if t:
                delta[t - 1] += dg @ w[f"w{gate}"]
            dx[t] += dg @ w[f"u{gate}"]
        carried["dc"] = dc * f
    return updates, dx


def test_lstm_darknet_backward_matches_darknets_loop_over_two_calls():
    net = build(cfg("[lstm]\noutput=3", time_steps=2))
    layer = net.layers[0]
    rng = np.random.default_rng(10)
    randomize(layer, rng)
    carried = {k: np.zeros((2, 3)) for k in ("prev_h", "prev_c", "dc")}
    for call in range(2):       # the second call starts from the first one's leftovers
        x = sample_input(net, 4, rng)
        dy = rng.normal(size=(4, 3)).astype(np.float32)
        net.forward(x, train=True)
        out = layer.output.reshape(2, 2, 3).copy()
        net.backward(dy)
        updates, dx = lstm_darknet_backward(layer, x.reshape(2, 2, 3).astype(np.float64),
                                            dy.reshape(2, 2, 3), carried)
        for name, (weights, biases) in updates.items():
            block = layer.blocks[name]
            np.testing.assert_allclose(block.weight_updates, weights, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(block.bias_updates, biases, rtol=1e-4, atol=1e-6)
            block.weight_updates.fill(0)
            block.bias_updates.fill(0)
        np.testing.assert_allclose(net.input_delta.reshape(2, 2, 3), dx, rtol=1e-4,
                                   atol=1e-6)
        # Darknet leaves h and c of step 0 as the state the next forward starts from
        np.testing.assert_array_equal(layer.hidden_state, out[0])
        np.testing.assert_array_equal(layer.cell_state, layer.cell[0])


def test_gru_has_no_darknet_backward():
    net = build(cfg("[gru]\noutput=3"))
    layer = net.layers[0]
    x = sample_input(net, 6, np.random.default_rng(11))
    net.forward(x, train=True)
    with pytest.warns(DarknetWarning, match="backward for GRU is empty"):
        net.backward(np.ones((6, 3), np.float32))
    assert not net.input_delta.any()
    assert not any(b.weight_updates.any() or b.bias_updates.any()
                   for b in layer.blocks.values())


def test_darknet_batch_norm_backward_reads_the_last_steps_statistics():
    """A batch-normalised block run for two steps: Darknet's backward of step 0 normalises
    with step 1's mean and variance; exact mode with step 0's own."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    delta = rng.normal(size=(2, 4, 2)).astype(np.float32)
    results = {}
    for exact in (False, True):
        block = DenseBlock("b", 3, 2, LINEAR, 1, np.random.default_rng(0), exact)
        block.allocate(2, 4)
        block.begin(True)
        block.forward(0, x[0])
        block.forward(1, x[1] * 3 + 1)         # different statistics at step 1
        block.delta[...] = delta
        prev = np.zeros((4, 3), np.float32)
        block.backward(0, x[0], prev)
        results[exact] = prev
    pre = (x[0] @ block.weights.T).astype(np.float64)
    pre1 = ((x[1] * 3 + 1) @ block.weights.T).astype(np.float64)

    def darknet_bn_delta(d, pre, stats_from):
        mean, var = stats_from.mean(0), stats_from.var(0, ddof=1)
        n = d.shape[0]
        d = d * block.scales
        mean_delta = -d.sum(0) / np.sqrt(var + 1e-5)
        var_delta = (d * (pre - mean)).sum(0) * -.5 * (var + 1e-5) ** -1.5
        return d / np.sqrt(var + 1e-5) + (var_delta * 2 * (pre - mean) + mean_delta) / n

    expected = darknet_bn_delta(delta[0].astype(np.float64), pre, pre1) @ block.weights
    np.testing.assert_allclose(results[False], expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(results[True], results[False], atol=1e-3)


# ------------------------------------------------------------------ exact mode: finite differences

FD_CASES = {
    "rnn": ("[rnn]\noutput=2\nhidden=4\nactivation=tanh\nshortcut=1\nlogistic=2\n"
            "batch_normalize=1", "inputs=3", True),
    "rnn_inference": ("[rnn]\noutput=3\nactivation=logistic\nbatch_normalize=1",
                      "inputs=3", False),
    "gru": ("[gru]\noutput=3\nbatch_normalize=1", "inputs=3", True),
    "gru_tanh": ("[gru]\noutput=3\ntanh=1", "inputs=2", False),
    "lstm": ("[lstm]\noutput=3\nbatch_normalize=1", "inputs=3", True),
    "lstm_inference": ("[lstm]\noutput=2", "inputs=3", False),
    "crnn_pjreddie": ("[crnn]\noutput_filters=2\nhidden_filters=3\nactivation=tanh\n"
                      "shortcut=1\nbatch_normalize=1", "width=3\nheight=2\nchannels=2", True),
    "crnn_alexeyab_1x1": ("[crnn]\noutput=2\nhidden=2\nsize=1\nactivation=logistic\n"
                          "batch_normalize=1", "width=2\nheight=2\nchannels=2", True),
}

STATE_ARRAYS = ("state", "hidden_state", "cell_state")


@pytest.mark.parametrize("case", FD_CASES)
def test_exact_gradients_match_finite_differences(case, monkeypatch):
    use_float64(monkeypatch)
    body, head, train = FD_CASES[case]
    net = build(cfg(body, head=head), gradients="exact", seed=1)
    layer = net.layers[0]
    rng = np.random.default_rng(13)
    randomize(layer, rng, scale=1.0)
    x = rng.normal(size=(6,) + layer.in_shape if net.h * net.w > 1 else (6, net.inputs))
    weights_out = rng.normal(size=(6, layer.outputs))
    # a non-zero carried state (the forward's starting point; a constant of the objective)
    start = {name: rng.normal(size=getattr(layer, name).shape) for name in STATE_ARRAYS
             if isinstance(getattr(layer, name, None), np.ndarray)}
    rolling = [(b, b.rolling_mean.copy(), b.rolling_variance.copy())
               for b in layer.blocks.values() if b.batch_normalize]

    def objective():
        for name, value in start.items():
            getattr(layer, name)[...] = value
        y = net.forward(x, train=train).reshape(6, -1)
        for block, mean, var in rolling:     # training moves them; keep them fixed
            block.rolling_mean[...] = mean
            block.rolling_variance[...] = var
        return float((y * weights_out).sum())

    objective()
    net.backward(weights_out)     # delta = -d(-objective): the gradient of the objective
    analytic = {("x", "x"): net.input_delta.copy()}
    for name, block in layer.blocks.items():
        for param, update in (("weights", "weight_updates"), ("biases", "bias_updates"),
                              ("scales", "scale_updates")):
            if getattr(block, param) is not None:
                analytic[(name, param)] = getattr(block, update).copy()

    def numeric(array, index, eps=1e-6):
        old = array[index]
        array[index] = old + eps
        plus = objective()
        array[index] = old - eps
        minus = objective()
        array[index] = old
        return (plus - minus) / (2 * eps)

    checked = 0
    for (name, param), grad in analytic.items():
        array = x if name == "x" else getattr(layer.blocks[name], param)
        flat = range(array.size) if array.size <= 8 else rng.choice(array.size, 8, False)
        for k in flat:
            index = np.unravel_index(k, array.shape)
            expected = numeric(array, index)
            assert abs(grad[index] - expected) <= 1e-6 + 1e-5 * abs(expected), \
                f"{name}.{param}{index}: analytic {grad[index]}, numeric {expected}"
            checked += 1
    assert checked > 20


# ------------------------------------------------------------------ time steps and batches

def test_batch_not_a_multiple_of_time_steps_runs_single_steps_with_a_warning():
    text = cfg("[rnn]\noutput=2", time_steps=4, batch=1)
    with pytest.warns(DarknetWarning, match="not a multiple of \\[net\\] time_steps=4"):
        net = minidarknet.loads(text, batch=3)
    assert (net.layers[0].steps, net.layers[0].step_batch) == (1, 3)
    net = build(text)                  # batch 1*4: one sequence of four steps
    layer = net.layers[0]
    assert (net.batch, layer.steps, layer.step_batch) == (4, 4, 1)
    net.forward(np.zeros((8, 3), np.float32))
    assert layer.step_batch == 2
    with pytest.raises(ShapeError, match="runs 4 time steps"):
        net.forward(np.zeros((6, 3), np.float32))


@pytest.mark.parametrize("gradients", ["darknet", "exact"])
def test_train_step_with_time_steps_learns(gradients):
    text = cfg("[lstm]\noutput=2\n\n[connected]\noutput=2\nactivation=linear\n\n[cost]\n"
               "type=sse", time_steps=3, batch=2, head="inputs=2\nlearning_rate=0.5\n"
               "momentum=0.5\ndecay=0")
    net = build(text, gradients=gradients, seed=2)
    rng = np.random.default_rng(14)
    x = rng.normal(size=(6, 2)).astype(np.float32)
    truth = np.roll(x, 1, axis=1) * .5
    costs = []
    for _ in range(60):
        net.layers[0].reset_state()
        costs.append(net.train_step(x, truth))
    assert costs[-1] < .1 * costs[0]


def test_update_is_darknets_rule_and_ignores_the_layer_multiplier():
    with pytest.warns(DarknetWarning, match="multiplier is always 1"):
        net = minidarknet.loads(cfg("[gru]\noutput=2\nlearning_rate=10"))
    layer = net.layers[0]
    block = layer.blocks["uz"]
    w, b = block.weights.copy(), block.biases.copy()
    block.weight_updates[...] = 1.0
    block.bias_updates[...] = 2.0
    layer.update(0.5, 0.9, 0.01, 4)
    np.testing.assert_allclose(block.biases, b + 0.5 / 4 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(block.bias_updates, 1.8, rtol=1e-6)
    np.testing.assert_allclose(block.weights, w + 0.5 / 4 * (1.0 - 0.01 * 4 * w), rtol=1e-5)
    np.testing.assert_allclose(block.weight_updates, 0.9 * (1.0 - 0.01 * 4 * w), rtol=1e-5)


# ------------------------------------------------------------------ weights files

WEIGHT_CASES = {
    "rnn": ("[rnn]\noutput=2\nhidden=3\nbatch_normalize=1", "inputs=3",
            ["input_layer", "self_layer", "output_layer"], None),
    "gru_pjreddie": ("[gru]\noutput=2", "inputs=3",
                     ["wz", "wr", "wh", "uz", "ur", "uh"], "pjreddie"),
    "gru_alexeyab": ("[gru]\noutput=2\nbatch_normalize=1", "inputs=3",
                     ["uz", "ur", "uh", "wz", "wr", "wh"], "alexeyab"),
    "lstm_pjreddie": ("[lstm]\noutput=2\nbatch_normalize=1", "inputs=3",
                      ["wi", "wf", "wo", "wg", "ui", "uf", "uo", "ug"], "pjreddie"),
    "lstm_alexeyab": ("[lstm]\noutput=2", "inputs=3",
                      ["wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo"], "alexeyab"),
    "crnn": ("[crnn]\noutput_filters=2\nhidden_filters=3\nbatch_normalize=1",
             "width=3\nheight=3\nchannels=2", ["input_layer", "self_layer", "output_layer"],
             None),
}


def file_floats(path):
    data = np.fromfile(path, np.uint8)
    return np.frombuffer(data[20:].tobytes(), "<f4")      # header: 3 int32 + uint64 seen


@pytest.mark.parametrize("case", WEIGHT_CASES)
def test_weights_file_block_order_and_round_trip(case, tmp_path):
    body, head, order, fork = WEIGHT_CASES[case]
    if fork:
        body += f"\nweights_order={fork}"
    net = build(cfg(body, head=head), seed=1)
    layer = net.layers[0]
    randomize(layer, np.random.default_rng(15))
    expected = []
    for name in order:
        block = layer.blocks[name]
        arrays = [block.biases]
        bn = [block.scales, block.rolling_mean, block.rolling_variance] \
            if block.batch_normalize else []
        # [connected]: BN after the weights; [convolutional]: BN between biases and weights
        arrays += [block.weights] + bn if block.kind == "connected" else bn + [block.weights]
        expected += [a.ravel() for a in arrays]
    path = tmp_path / "w.weights"
    net.save_weights(path)
    np.testing.assert_array_equal(file_floats(path), np.concatenate(expected))
    other = build(cfg(body, head=head), seed=2)
    other.load_weights(path)
    for (name, a), (_, b) in zip(layer.parameters(), other.layers[0].parameters()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    x = sample_input(net, 6, np.random.default_rng(16))
    np.testing.assert_array_equal(net.forward(x), other.forward(x))


ORDER_PJ_GRU = ["wz", "wr", "wh", "uz", "ur", "uh"]
ORDER_AB_GRU = ["uz", "ur", "uh", "wz", "wr", "wh"]


def test_alexeyab_gru_file_loads_with_weights_order_alexeyab(tmp_path):
    pj = build(cfg("[gru]\noutput=2"), seed=1)
    randomize(pj.layers[0], np.random.default_rng(17))
    pj.save_weights(tmp_path / "pj.weights")
    floats = file_floats(tmp_path / "pj.weights")
    sizes = [sum(a.size for _, a in pj.layers[0].blocks[n].parameters())
             for n in ORDER_PJ_GRU]
    pieces = dict(zip(ORDER_PJ_GRU, np.split(floats, np.cumsum(sizes)[:-1])))
    header = np.fromfile(tmp_path / "pj.weights", np.uint8)[:20].tobytes()
    ab_bytes = header + np.concatenate([pieces[n] for n in ORDER_AB_GRU]).tobytes()
    (tmp_path / "ab.weights").write_bytes(ab_bytes)
    ab = build(cfg("[gru]\noutput=2"), seed=2,
               overrides={"gru.weights_order": "alexeyab"})
    ab.load_weights(tmp_path / "ab.weights")
    for name in ORDER_PJ_GRU:
        np.testing.assert_array_equal(ab.layers[0].blocks[name].weights,
                                      pj.layers[0].blocks[name].weights)


def test_transposed_weights_file_stores_dense_blocks_in_by_out(tmp_path):
    net = build(cfg("[rnn]\noutput=2\nhidden=3"), seed=1)
    layer = net.layers[0]
    net.weights_version = (0, 1001, 0)     # minor > 1000: [connected] weights transposed
    path = tmp_path / "t.weights"
    net.save_weights(path)
    floats = np.frombuffer(path.read_bytes()[16:], "<f4")   # 4-byte seen for this version
    block = layer.blocks["input_layer"]
    np.testing.assert_array_equal(floats[3:3 + 9], block.weights.T.ravel())
    other = build(cfg("[rnn]\noutput=2\nhidden=3"), seed=2)
    other.load_weights(path)
    np.testing.assert_array_equal(other.layers[0].blocks["input_layer"].weights,
                                  block.weights)


# ------------------------------------------------------------------ cfg handling

@pytest.mark.parametrize("body, head, message", [
    ("[crnn]\noutput_filters=2\nhidden=3", "width=3\nheight=3\nchannels=1",
     "pjreddie's keys .* and AlexeyAB's"),
    ("[crnn]\noutput=2\nhidden=3\nsize=3", "width=3\nheight=3\nchannels=1",
     "must keep the 3 x 3 input size"),
    ("[crnn]\noutput=2\nhidden=3\nsize=1\nstride=2", "width=4\nheight=4\nchannels=1",
     "size=1 with stride 2"),
    ("[crnn]\noutput=3\nhidden=3\ngroups=2\nsize=1", "width=2\nheight=2\nchannels=2",
     "groups=2: must divide the hidden"),
    ("[crnn]\noutput=2\nhidden=2\nsize=1\nxnor=1", "width=2\nheight=2\nchannels=2",
     "XNOR"),
    ("[rnn]\noutput=0", "inputs=3", "output=0"),
    ("[gru]\noutput=2\nweights_order=darknet", "inputs=3", "weights_order=darknet"),
    ("[conv_lstm]\noutput=2", "width=3\nheight=3\nchannels=1", "not supported"),
])
def test_cfg_errors(body, head, message):
    with pytest.raises(CfgError, match=message):
        build(cfg(body, head=head))


def test_crnn_needs_an_image():
    with pytest.raises(CfgError, match="must output an image"):
        build(cfg("[crnn]\noutput_filters=1"))


def test_unused_keys_are_reported():
    with pytest.warns(DarknetWarning, match="unused key 'activation=tanh'"):
        minidarknet.loads(cfg("[lstm]\noutput=2\nactivation=tanh"))


def test_info_rows_and_flops():
    net = build(cfg("[rnn]\noutput=2\nhidden=3\n\n[gru]\noutput=4\n\n[lstm]\noutput=5"))
    rows = layer_rows(net)
    assert [r["type"] for r in rows] == ["rnn", "gru", "lstm"]
    assert [(r["input"], r["output"]) for r in rows] == [("3", "2"), ("2", "4"), ("4", "5")]
    assert rows[0]["size"] == "3 steps"
    assert rows[0]["bflops"] * 1e9 == pytest.approx(2 * (3 * 3 + 3 * 3 + 3 * 2))
    assert rows[1]["bflops"] * 1e9 == pytest.approx(2 * 3 * (2 * 4 + 4 * 4))
    assert rows[2]["bflops"] * 1e9 == pytest.approx(2 * 4 * (4 * 5 + 5 * 5))
    assert [r["params"] for r in rows] == [expected_weight_count(l) for l in net.layers]


def test_standalone_layer():
    lstm = minidarknet.layer("lstm", (2, 3), output=4, gradients="exact", seed=0)
    y = lstm.forward(np.ones((2, 3), np.float32))
    assert y.shape == (2, 4)
    dx = lstm.backward(np.ones((2, 4), np.float32))
    assert dx.shape == (2, 3) and dx.any()


def test_crnn_info_row():
    net = build(cfg("[crnn]\noutput=4\nhidden=3\nsize=3\npad=1", head="width=5\nheight=4\n"
                    "channels=2"))
    row = layer_rows(net)[0]
    assert (row["filters"], row["size"]) == ("4", "3 x 3 / 1, hidden 3")
    assert (row["input"], row["output"]) == ("5 x 4 x 2", "5 x 4 x 4")
    assert row["bflops"] * 1e9 == pytest.approx(2 * 9 * 20 * (2 * 3 + 3 * 3 + 3 * 4))


def test_trainer_state_includes_the_sub_layer_momentum():
    from minidarknet.train import momentum_arrays, state_arrays
    net = build(cfg("[gru]\noutput=2\nbatch_normalize=1"))
    momentum = {id(a) for _, a in momentum_arrays(net)}
    state = {id(a) for _, a in state_arrays(net)}
    for block in net.layers[0].blocks.values():
        for array in (block.weight_updates, block.bias_updates, block.scale_updates):
            assert id(array) in momentum
        for _, array in block.parameters():
            assert id(array) in state
