"""pjreddie vs AlexeyAB: every difference in minidarknet/fork.py, checked against float64
formulas written here from the two forks' C code (and the default fork rule, the CLI option)."""
import json
from pathlib import Path
import warnings

import numpy as np
import pytest

import minidarknet
from minidarknet.cli import main
from minidarknet.fork import ALEXEYAB, PJREDDIE, ForkQuirkWarning, choose_fork
from minidarknet.cfg import parse_cfg_text

F64 = np.float64


def net_of(body, head="width=6\nheight=5\nchannels=3\nbatch=2", **options):
    return minidarknet.loads(f"[net]\n{head}\n{body}", **options)


def rng_input(net, seed=0, rows=None):
    rng = np.random.default_rng(seed)
    rows = rows or net.batch
    return rng.normal(0.3, 1.0, (rows, net.c, net.h, net.w)).astype(np.float32)


def randomize_bn(layer, rng):
    n = layer.scales.size
    layer.scales[:] = rng.uniform(.5, 1.5, n)
    layer.biases[:] = rng.normal(0, .1, n)
    layer.rolling_mean[:] = rng.normal(0, .1, n)
    layer.rolling_variance[:] = rng.uniform(.5, 1.5, n)


# ------------------------------------------------------------------ batch norm, float64 formulas

def bn_train_ref(x, scales, biases, fork):
    """(out, mean, var) of Darknet's training batch norm over axes (0, 2), float64."""
    x = x.astype(F64)
    n = x.shape[0] * x.shape[2]
    mean = x.mean(axis=(0, 2))
    var = ((x - mean[None, :, None]) ** 2).sum(axis=(0, 2)) / (n - 1)
    if fork is ALEXEYAB:
        den = np.sqrt(var + 1e-5)
    else:
        den = np.sqrt(var) + 1e-6
    xn = (x - mean[None, :, None]) / den[None, :, None]
    return xn * scales[None, :, None] + biases[None, :, None], mean, var, xn


def bn_infer_ref(x, layer, fork):
    x = x.astype(F64)
    var = layer.rolling_variance.astype(F64)
    den = np.sqrt(var + 1e-5) if fork is ALEXEYAB else np.sqrt(var) + 1e-6
    return ((x - layer.rolling_mean[None, :, None]) / den[None, :, None]
            * layer.scales[None, :, None] + layer.biases[None, :, None])


@pytest.mark.parametrize("fork", [PJREDDIE, ALEXEYAB], ids=str)
def test_batchnorm_layer_training_forward_and_rolling_statistics(fork):
    net = net_of("[batchnorm]", fork=fork)
    layer = net.layers[0]
    rng = np.random.default_rng(1)
    randomize_bn(layer, rng)
    rm0, rv0 = layer.rolling_mean.astype(F64), layer.rolling_variance.astype(F64)
    x = rng_input(net, 1) * 0.01          # small variances: where the two formulas differ
    out = net.forward(x, train=True)
    ref, mean, var, _ = bn_train_ref(x.reshape(2, 3, -1), layer.scales, layer.biases, fork)
    np.testing.assert_allclose(out.reshape(ref.shape), ref, rtol=2e-5, atol=2e-5)
    m = .9 if fork is ALEXEYAB else .99
    np.testing.assert_allclose(layer.rolling_mean, m * rm0 + (1 - m) * mean, rtol=1e-5)
    np.testing.assert_allclose(layer.rolling_variance, m * rv0 + (1 - m) * var, rtol=1e-5)


def test_the_two_forks_differ_where_variances_are_small():
    outs = []
    for fork in ("pjreddie", "alexeyab"):
        net = net_of("[batchnorm]", fork=fork)
        outs.append(net.forward(rng_input(net, 2) * 1e-3, train=True).copy())
    # sqrt(var) + 1e-6 vs sqrt(var + 1e-5) with var ~ 1e-6: a large difference
    assert np.abs(outs[0] - outs[1]).max() > 0.1


@pytest.mark.parametrize("fork", [PJREDDIE, ALEXEYAB], ids=str)
@pytest.mark.parametrize("shape", [
    ("width=6\nheight=5\nchannels=3", 4),     # fewer weights than outputs: weights scaled
    ("width=2\nheight=2\nchannels=16", 32),   # more weights than outputs: scale in epilogue
    ("width=20\nheight=20\nchannels=64", 8),  # Winograd F(2x2,3x3) where it applies
], ids=["scaled-weights", "epilogue", "winograd"])
def test_convolution_inference_folds_batch_norm_with_the_forks_formula(fork, shape):
    head, filters = shape
    net = net_of(f"[convolutional]\nfilters={filters}\nsize=3\npad=1\nbatch_normalize=1\n"
                 f"activation=linear", head=head + "\nbatch=1", fork=fork)
    layer = net.layers[0]
    rng = np.random.default_rng(3)
    randomize_bn(layer, rng)
    layer.rolling_variance[:] = rng.uniform(1e-7, 1e-5, filters)   # where eps matters
    x = rng_input(net, 3)
    out = net.forward(x)
    # the convolution itself in float64, then the fork's inference batch norm
    w = layer.weights.astype(F64)
    xp = np.pad(x.astype(F64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((1, filters, net.h, net.w))
    for i in range(3):
        for j in range(3):
            conv += np.einsum("fc,bchw->bfhw", w[:, :, i, j], xp[:, :, i:i + net.h, j:j + net.w])
    ref = bn_infer_ref(conv.reshape(1, filters, -1), layer, fork)
    np.testing.assert_allclose(out.reshape(ref.shape), ref, rtol=1e-3,
                               atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("fork", [PJREDDIE, ALEXEYAB], ids=str)
def test_connected_batch_norm_momentum_and_inference(fork):
    net = net_of("[connected]\noutput=4\nbatch_normalize=1\nactivation=linear",
                 head="inputs=5\nbatch=3", fork=fork)
    layer = net.layers[0]
    rng = np.random.default_rng(4)
    randomize_bn(layer, rng)
    rv0 = layer.rolling_variance.astype(F64)
    x = rng.normal(0, 1, (3, 5)).astype(np.float32)
    net.forward(x, train=True)
    pre = x.astype(F64) @ layer.weights.T.astype(F64)
    _, _, var, _ = bn_train_ref(pre[:, :, None], layer.scales, layer.biases, fork)
    m = .95 if fork is ALEXEYAB else .99      # AlexeyAB's forward_connected_layer: .95/.05
    np.testing.assert_allclose(layer.rolling_variance, m * rv0 + (1 - m) * var, rtol=1e-5)
    out = net.forward(x)
    ref = bn_infer_ref(pre[:, :, None], layer, fork)
    np.testing.assert_allclose(out.reshape(ref.shape), ref, rtol=1e-5, atol=1e-6)


def darknet_bn_backward_ref(x, delta, scales, fork):
    """Darknet's CPU backward_batchnorm (after backward_scale), float64: the input delta."""
    x, d = x.astype(F64), delta.astype(F64) * scales[None, :, None]
    n = x.shape[0] * x.shape[2]
    mean = x.mean(axis=(0, 2))
    var = ((x - mean[None, :, None]) ** 2).sum(axis=(0, 2)) / (n - 1)
    mean_delta = (d * (-1 / np.sqrt(var + 1e-5))[None, :, None]).sum(axis=(0, 2))
    var_delta = (d * (x - mean[None, :, None])).sum(axis=(0, 2)) * -.5 * (var + 1e-5) ** -1.5
    own = 1 / (np.sqrt(var) + 1e-5) if fork is ALEXEYAB else 1 / np.sqrt(var + 1e-5)
    return (d * own[None, :, None] + var_delta[None, :, None] * 2 * (x - mean[None, :, None]) / n
            + mean_delta[None, :, None] / n)


@pytest.mark.parametrize("fork", [PJREDDIE, ALEXEYAB], ids=str)
def test_darknet_batch_norm_backward_and_bias_training(fork):
    net = net_of("[batchnorm]", fork=fork)
    layer = net.layers[0]
    rng = np.random.default_rng(5)
    randomize_bn(layer, rng)
    x = rng_input(net, 5) * 0.01
    net.forward(x, train=True)
    delta = rng.normal(0, 1, layer.output.shape).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.backward(delta)
        net.forward(x, train=True)
        net.backward(delta)              # a second backward: no second warning
    quirks = [w for w in caught if issubclass(w.category, ForkQuirkWarning)]
    ref = darknet_bn_backward_ref(x.reshape(2, 3, -1), delta.reshape(2, 3, -1), layer.scales,
                                  fork)
    np.testing.assert_allclose(net.input_delta.reshape(ref.shape), ref, rtol=1e-4,
                               atol=1e-4 * np.abs(ref).max())
    if fork is ALEXEYAB:      # AlexeyAB's CPU backward_batchnorm_layer has no backward_bias
        assert not layer.bias_updates.any()
        assert len(quirks) == 1 and "biases" in str(quirks[0].message)
    else:
        np.testing.assert_allclose(layer.bias_updates, 2 * delta.sum(axis=(0, 2, 3)),
                                   rtol=1e-5)
        assert not quirks


def test_exact_mode_trains_batch_norm_biases_in_alexeyab():
    net = net_of("[convolutional]\nfilters=2\nsize=1\nbatch_normalize=1\nactivation=linear",
                 fork="alexeyab", gradients="exact")
    layer = net.layers[0]
    x = rng_input(net, 6)
    net.forward(x, train=True)
    delta = np.random.default_rng(6).normal(0, 1, layer.output.shape).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForkQuirkWarning)
        net.backward(delta)
    np.testing.assert_allclose(layer.bias_updates, delta.sum(axis=(0, 2, 3)), rtol=1e-5)


def test_exact_alexeyab_batch_norm_gradient_matches_finite_differences(f64):
    net = net_of("[convolutional]\nfilters=3\nsize=3\npad=1\nbatch_normalize=1\n"
                 "activation=leaky\n[cost]\ntype=sse", fork="alexeyab", gradients="exact")
    layer = net.layers[0]
    rng = np.random.default_rng(7)
    randomize_bn(layer, rng)
    x = rng.normal(0, 1, (2, 3, 5, 6)) * 0.003   # variances comparable to 1e-5
    truth = rng.normal(0, 1, (2, net.truths))

    def objective(v):
        net.forward(v, truth=truth, train=True)
        return net.objective

    objective(x)
    net.backward()
    grad = -net.input_delta
    h = 1e-6
    for idx in [(0, 0, 0, 0), (1, 2, 3, 4), (0, 1, 4, 5), (1, 0, 2, 2)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        numeric = (objective(xp) - objective(xm)) / (2 * h)
        assert grad[idx] == pytest.approx(numeric, rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------ convolution backward

@pytest.mark.parametrize("fork,size,gradients,overwrites", [
    ("pjreddie", 1, "darknet", True), ("pjreddie", 3, "darknet", False),
    ("alexeyab", 1, "darknet", True), ("alexeyab", 3, "darknet", True),
    ("alexeyab", 3, "exact", False), ("alexeyab", 1, "exact", False)])
def test_convolution_backward_overwrites_or_adds_to_the_previous_delta(fork, size, gradients,
                                                                      overwrites):
    net = net_of(f"[convolutional]\nfilters=2\nsize=1\nactivation=linear\n"
                 f"[convolutional]\nfilters=3\nsize={size}\npad=1\nactivation=linear",
                 fork=fork, gradients=gradients)
    net.forward(rng_input(net, 8), train=True)
    first, second = net.layers
    rng = np.random.default_rng(8)
    before = rng.normal(0, 1, first.delta.shape).astype(np.float32)   # e.g. from a route
    first.delta[...] = before
    second.delta[...] = rng.normal(0, 1, second.delta.shape)
    dy = second.delta.astype(F64)
    net.index, net.input, net.delta = 1, first.output, first.delta
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second.backward(net)
    quirks = [w for w in caught if issubclass(w.category, ForkQuirkWarning)]
    assert len(quirks) == (fork == "alexeyab" and gradients == "darknet")
    # the convolution's own input delta, float64: transposed convolution with padding
    w, p = second.weights.astype(F64), size // 2
    grad = np.zeros((2, 2, net.h + 2 * p, net.w + 2 * p))
    for i in range(size):
        for j in range(size):
            grad[:, :, i:i + net.h, j:j + net.w] += np.einsum("fc,bfhw->bchw", w[:, :, i, j], dy)
    own = grad[:, :, p:p + net.h, p:p + net.w]
    expected = own if overwrites else own + before
    np.testing.assert_allclose(first.delta, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ activations

def test_alexeyab_relu6_outputs_zero_in_darknet_mode_and_is_warned_once():
    body = "[convolutional]\nfilters=2\nsize=1\nactivation=relu6"
    x = rng_input(net_of(body), 9) * 10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = net_of(body, fork="alexeyab")
        out = net.forward(x).copy()
        net.forward(x)
    assert not out.any()
    quirks = [w for w in caught if issubclass(w.category, ForkQuirkWarning)]
    assert len(quirks) == 1 and "relu6" in str(quirks[0].message)
    exact = net_of(body, fork="alexeyab", gradients="exact")
    exact.layers[0].weights[...] = net.layers[0].weights
    pre = np.einsum("fc,bchw->bfhw", net.layers[0].weights[:, :, 0, 0].astype(F64),
                    x.astype(F64))
    np.testing.assert_allclose(exact.forward(x), np.clip(pre, 0, 6), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer,computed", [
    ("[convolutional]\nfilters=3\nsize=1\nactivation=mish", True),
    ("[activation]\nactivation=mish", False),
    ("[activation]\nactivation=swish", False),
    ("[connected]\noutput=4\nactivation=hard_mish", False)])
def test_alexeyab_generic_activate_lacks_mish_swish_hard_mish(layer, computed):
    net = net_of(layer, fork="alexeyab")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ForkQuirkWarning)
        out = net.forward(rng_input(net, 10))
    assert bool(np.abs(out).max() > 0) == computed


@pytest.mark.parametrize("fork", ["pjreddie", "alexeyab"])
def test_tanh_formula_follows_the_fork(fork):
    net = net_of("[activation]\nactivation=tanh", fork=fork)
    x = np.linspace(-3, 3, net.inputs * 2).astype(np.float32).reshape(2, 3, 5, 6)
    out = net.forward(x)
    if fork == "alexeyab":
        expected = np.float32(2) / (np.float32(1) + np.exp(np.float32(-2) * x)) - np.float32(1)
    else:
        e = np.exp(np.float32(2) * x)
        expected = (e - np.float32(1)) / (e + np.float32(1))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(out, np.tanh(x.astype(F64)), atol=3e-7)


def gelu_ab_gradient_at(v):
    """AlexeyAB's gelu_gradient formula (its constants), float64."""
    v3 = v ** 3
    a = 0.0356774 * v3 + 0.797885 * v
    return 0.5 * np.tanh(a) + (0.0535161 * v3 + 0.398942 * v) / np.cosh(a) ** 2 + 0.5


@pytest.mark.parametrize("fork,gradients", [("alexeyab", "darknet"), ("pjreddie", "darknet"),
                                            ("alexeyab", "exact")])
def test_gelu_gradient(fork, gradients):
    net = net_of("[activation]\nactivation=gelu", fork=fork, gradients=gradients)
    x = np.linspace(-3, 3, net.inputs * 2).astype(np.float32).reshape(2, 3, 5, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = net.forward(x, train=True).astype(F64)
        net.backward(np.ones_like(y))
    quirks = [w for w in caught if issubclass(w.category, ForkQuirkWarning)]
    xd = x.astype(F64)
    if fork == "alexeyab" and gradients == "darknet":
        expected = gelu_ab_gradient_at(y)            # evaluated at the OUTPUT
        assert len(quirks) == 1 and "gelu" in str(quirks[0].message)
    else:
        u = 0.797885 * xd + 0.035677 * xd ** 3       # d/dx of the forward formula
        t = np.tanh(u)
        expected = 0.5 * (1 + t) + 0.5 * xd * (1 - t * t) * (0.797885 + 3 * 0.035677 * xd * xd)
        assert not quirks
    np.testing.assert_allclose(net.input_delta, expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ weights header and seen

def test_weights_header_and_seen_as_each_fork_writes_them(tmp_path):
    body = "[convolutional]\nfilters=2\nsize=1\nactivation=linear\n[cost]\ntype=sse"
    heads = {}
    for fork in ("pjreddie", "alexeyab"):
        net = net_of(body, head="width=4\nheight=4\nchannels=1\nbatch=2\nsubdivisions=1",
                     fork=fork)
        x = rng_input(net, 11)
        truth = np.zeros((2, net.truths), np.float32)
        for _ in range(3):
            net.train_step(x, truth)
        net.seen += 1                  # e.g. a sample counted without a finished iteration
        path = tmp_path / f"{fork}.weights"
        net.save_weights(path)
        data = path.read_bytes()
        heads[fork] = (tuple(np.frombuffer(data, "<i4", 3)),
                       int(np.frombuffer(data, "<u8", 1, 12)[0]))
    assert heads["pjreddie"] == ((0, 2, 0), 7)
    assert heads["alexeyab"] == ((0, 2, 5), 6)     # cur_iteration * batch * subdivisions


# ------------------------------------------------------------------ the default rule

PLAIN = "[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=2\nsize=1\n"


def test_default_fork_rule(tmp_path):
    net = minidarknet.loads(PLAIN)
    assert net.fork is PJREDDIE and net.layers[0].fork is PJREDDIE
    assert "default" in net.fork_reason
    net = minidarknet.loads(PLAIN + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n")
    assert net.fork is ALEXEYAB and "groups" in net.fork_reason
    assert net.layers[0].fork is ALEXEYAB
    net = minidarknet.loads(PLAIN.replace("size=1", "size=1\nactivation=mish"))
    assert net.fork is ALEXEYAB and "mish" in net.fork_reason
    net = minidarknet.loads(PLAIN + "[empty]\n")
    assert net.fork is ALEXEYAB and "[empty]" in net.fork_reason
    # the weights header: AlexeyAB writes revision 5
    path = tmp_path / "ab.weights"
    minidarknet.loads(PLAIN, fork="alexeyab").save_weights(path)
    net = minidarknet.loads(PLAIN, weights=path)
    assert net.fork is ALEXEYAB and "0.2.5" in net.fork_reason
    cfg = tmp_path / "plain.cfg"
    cfg.write_text(PLAIN)
    assert minidarknet.load(cfg, weights=path).fork is ALEXEYAB
    assert minidarknet.load(cfg, weights=path, fork="pjreddie").fork is PJREDDIE
    with pytest.raises(ValueError, match="fork must be one of"):
        minidarknet.loads(PLAIN, fork="darknet")


def test_the_rule_does_not_hide_unused_key_warnings():
    sections = parse_cfg_text(PLAIN + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n", "x.cfg")
    fork, reason = choose_fork(None, sections)
    assert fork is ALEXEYAB
    assert not any(o.used for s in sections for o in s.options)


def test_every_pjreddie_corpus_cfg_defaults_to_pjreddie_and_yolov4_to_alexeyab():
    from conftest import CFG_CORPUS, need_shared
    from minidarknet.cfg import read_cfg
    need_shared(CFG_CORPUS)
    for path in sorted((CFG_CORPUS / "pjreddie").glob("*.cfg")):
        fork, reason = choose_fork(None, read_cfg(path))
        assert fork is PJREDDIE, (path.name, reason)
    for name in ("yolov4-tiny", "yolov4", "yolov4-csp", "yolov7-tiny"):
        path = CFG_CORPUS / "alexeyab" / f"{name}.cfg"
        if path.exists():
            assert choose_fork(None, read_cfg(path))[0] is ALEXEYAB, name


def cli(*args):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def test_info_prints_the_fork_and_its_reason(tmp_path, capsys):
    cfg = tmp_path / "net.cfg"
    cfg.write_text(PLAIN.replace("size=1", "size=1\nactivation=mish"))
    assert cli("info", cfg) == 0
    out = capsys.readouterr().out
    assert "fork: alexeyab (the cfg uses what only AlexeyAB's Darknet has:" in out
    assert "activation=mish" in out
    assert cli("info", cfg, "--fork", "pjreddie", "--json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["fork"] == "pjreddie" and "fork=pjreddie" in record["fork_reason"]


# ------------------------------------------------------------------ detections

YOLO = """[net]
width=8
height=8
channels=3
[convolutional]
filters=18
size=1
activation=linear
[yolo]
mask=0,1,2
anchors=3,3, 4,5, 6,4
classes=1
num=3
nms_kind=greedynms
"""


def test_detections_use_the_last_layers_nms_kind_only_with_alexeyab():
    from minidarknet import boxes, detect
    counts = {}
    for fork in ("pjreddie", "alexeyab"):
        net = minidarknet.loads(YOLO, fork=fork, seed=3)
        layer = net.layers[0]
        rng = np.random.default_rng(12)
        layer.weights[...] = rng.normal(0, .3, layer.weights.shape)
        layer.biases[...] = 0
        layer.biases[4::6] = 2.0      # objectness: many overlapping boxes
        x = rng.uniform(0, 1, (1, 3, 8, 8)).astype(np.float32)
        net.forward(x)
        got = net.detections(thresh=.5, nms=.3)
        raw = net.detections(thresh=.5, nms=0)
        if fork == "alexeyab":
            expected = detect.diou_nms_sort(raw, 1, .3, "greedynms")
        else:
            expected = boxes.do_nms_sort(raw, 1, .3) or raw
        probs = np.array([d.prob for d in got]).ravel()
        np.testing.assert_array_equal(probs, np.array([d.prob for d in expected]).ravel())
        counts[fork] = int((probs > 0).sum())
    assert counts["pjreddie"] != counts["alexeyab"]


def test_trainer_with_fork_alexeyab_reproduces_alexeyabs_iter3_weights(tmp_path):
    from conftest import SHARED, need_shared
    folder = need_shared(SHARED / "golden-ab" / "ab_bn_train")
    case = json.loads((folder / "case.json").read_text())
    x = np.fromfile(folder / "input.f32", "<f4").reshape(case["input"]["shape"])
    truth = np.fromfile(folder / "truth.f32", "<f4").reshape(case["truth"]["shape"])
    np.savez(tmp_path / "d.npz", x=x, y=truth)
    result = minidarknet.train(folder / "net.cfg", tmp_path / "d.npz",
                               weights=folder / "net.weights", max_batches=3,
                               out=tmp_path / "out", shuffle=False, fork="alexeyab")
    assert result.net.fork is ALEXEYAB
    got, want = (Path(result.weights).read_bytes(), (folder / "iter3.weights").read_bytes())
    assert got[:20] == want[:20]           # header 0.2.5 and seen = 3 iterations * batch 2
    got, want = np.frombuffer(got[20:], "<f4"), np.frombuffer(want[20:], "<f4")
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("section", ["lstm", "gru"])
def test_recurrent_weights_order_defaults_to_the_forks(section):
    text = f"[net]\ninputs=3\nbatch=1\ntime_steps=1\n[{section}]\noutput=2\n"
    assert minidarknet.loads(text, fork="pjreddie").layers[0].weights_order == "pjreddie"
    assert minidarknet.loads(text, fork="alexeyab").layers[0].weights_order == "alexeyab"
    text += "weights_order=pjreddie\n"
    assert minidarknet.loads(text, fork="alexeyab").layers[0].weights_order == "pjreddie"


def test_experiment_train_setting_fork(tmp_path):
    from minidarknet.experiment import ExperimentError, experiment_from_dict
    (tmp_path / "net.cfg").write_text(PLAIN)
    (tmp_path / "d.npz").write_bytes(b"")
    spec = {"cfg": "net.cfg", "data": "d.npz", "train": {"fork": ["pjreddie", "alexeyab"]}}
    experiment = experiment_from_dict(spec, base=tmp_path)
    assert [a.values for a in experiment.axes if a.key == "fork"] == [["pjreddie", "alexeyab"]]
    spec["train"]["fork"] = "darknet"
    with pytest.raises(ExperimentError, match="fork: 'darknet' is not one of alexeyab, pjreddie"):
        experiment_from_dict(spec, base=tmp_path)


def test_gru_tanh_key_is_pjreddies_only():
    text = "[net]\ninputs=3\nbatch=1\ntime_steps=1\n[gru]\noutput=2\ntanh=1\n"
    assert minidarknet.loads(text, fork="pjreddie").layers[0].candidate_activation.name == "tanh"
    with pytest.warns(minidarknet.DarknetWarning, match="tanh"):
        net = minidarknet.loads(text, fork="alexeyab")
    assert net.layers[0].candidate_activation.name == "logistic"
