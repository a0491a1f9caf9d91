"""ONNX export (minidarknet/export): every layer type has a converter or a stated refusal, and
onnxruntime computes minidarknet's numbers -- layer by layer on small networks that exercise
every converter and its variants, on the cfg corpus, and on the real yolov3-tiny weights,
whose decoded boxes after NMS are Darknet's own detections of dog.jpg."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx extra")
ort = pytest.importorskip("onnxruntime", reason="checking the export needs onnxruntime")

import minidarknet  # noqa: E402
from conftest import CFG_CORPUS, ROOT, SHARED, need_shared  # noqa: E402
from export_check import (build_small, compare_with_onnxruntime, random_weights,  # noqa: E402
                          sane_statistics, unique_cfgs)
from minidarknet.activations import ACTIVATIONS  # noqa: E402
from minidarknet.errors import DarknetWarning  # noqa: E402
from minidarknet.export import (CONVERTERS, REFUSED, ExportError, build_model,  # noqa: E402
                                export_onnx, verify)
from minidarknet.export.activations import ACTIVATION_CONVERTERS  # noqa: E402
from minidarknet.layers import LAYER_TYPES  # noqa: E402

F32 = np.float32
TOLERANCE = 1e-4


def build(text, fork=None, batch=1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DarknetWarning)
        net = minidarknet.loads(text, seed=0, fork=fork, **({"batch": batch} if batch else {}))
    random_weights(net, 0)
    sane_statistics(net, 0)
    return net


def net_text(body, c=4, h=8, w=8):
    return f"[net]\nbatch=1\nwidth={w}\nheight={h}\nchannels={c}\n\n{body}"


def conv(filters, size=3, extra="", activation="leaky", bn=1, stride=1):
    return (f"[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\n"
            f"stride={stride}\npad={1 if size > 1 else 0}\nactivation={activation}\n{extra}\n")


# Small networks that together use every converter and the variants the issue names.
NETWORKS = {
    "conv_pool": net_text(
        conv(6) + "[maxpool]\nsize=2\nstride=1\n\n"                # 2x2/1: pads bottom/right
        + conv(6, bn=0, stride=2) + "[maxpool]\nsize=3\nstride=2\n\n"
        + conv(4, 1, "groups=2", "mish") + "[avgpool]\n\n[connected]\noutput=5\n"
        "batch_normalize=1\nactivation=relu\n\n[dropout]\nprobability=.3\n\n"
        "[softmax]\ngroups=1\n\n"
        # padding beyond the window: ONNX needs an explicit -FLT_MAX Pad (Darknet's fill)
        "[route]\nlayers=-6\n\n[maxpool]\nsize=2\nstride=1\npadding=5\n\n", h=12, w=10),
    "dilated_xnor": net_text(
        conv(8, 3, "dilation=2\npadding=2\npad=0") + conv(8, 3, "xnor=1")
        + conv(8, 3, "xnor=1\nxnor_path=bits\nbin_output=1")
        + conv(8, 3, "share_index=-2\ndilation=2\npadding=2\npad=0", "swish"), c=4),
    "routes_shortcuts": net_text(
        conv(8) + conv(8, 1) + "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n\n"
        + conv(8) + "[shortcut]\nfrom=-4\nactivation=leaky\n\n"            # 8 into 8
        + conv(4, stride=2) + "[shortcut]\nfrom=-2\nalpha=.5\nbeta=2\n\n"   # from larger
        + "[upsample]\nstride=2\nscale=.5\n\n" + "[shortcut]\nfrom=-3\n\n"    # from smaller
        + "[shortcut]\nfrom=-8, -9\nweights_type=per_channel\nweights_normalization=relu\n\n"
        + "[shortcut]\nfrom=-1\nweights_type=per_feature\nweights_normalization=softmax\n\n"
        + "[route]\nlayers=-1,-7\n\n" + "[upsample]\nstride=-2\n\n"
        + "[route]\nlayers=-1,-8\n\n" + "[route]\nlayers=-1,-3\n\n", c=3),
    "reorg": net_text(
        conv(8) + "[reorg]\nstride=2\n\n[reorg]\nstride=2\nreverse=1\n\n"
        "[reorg3d]\nstride=2\n\n[reorg3d]\nstride=1\nreverse=1\n\n[reorg]\nflatten=1\n\n"
        "[reorg]\nflatten=1\nreverse=1\n\n[reorg]\nextra=3\n\n", c=3),
    "attention": net_text(
        conv(8) + "[avgpool]\n\n" + conv(8, 1, bn=0, activation="logistic")
        + "[scale_channels]\nfrom=-3\n\n" + conv(1, 1, bn=0, activation="logistic")
        + "[scale_channels]\nfrom=-2\nscale_wh=1\nactivation=relu6\n\n"
        + conv(8, 1, bn=0, activation="hard_mish") + "[sam]\nfrom=-2\n\n"
        + "[implicit]\nfilters=8\n\n[route]\nlayers=-2\n\n[empty]\n\n"
        + "[local_avgpool]\nsize=3\nstride=1\n\n[batchnorm]\n\n"
        + "[l2norm]\n\n[lrn]\nsize=5\nalpha=.1\nbeta=.75\nkappa=2\n\n"
        + "[crop]\ncrop_height=6\ncrop_width=5\n\n[maxpool]\nmaxpool_depth=1\nout_channels=3\n\n"
        "[l2norm]\naxis=sample\n\n[logistic]\n\n", c=3),
    "local_deconv": net_text(
        "[local]\nfilters=3\nsize=3\nstride=1\npad=1\nactivation=leaky\n\n"
        "[deconvolutional]\nfilters=4\nsize=4\nstride=2\npad=1\nbatch_normalize=1\n"
        "activation=elu\n\n[local]\nfilters=2\nsize=3\nstride=2\npad=0\nactivation=selu\n\n"
        "[crop]\ncrop_height=3\ncrop_width=2\nnoadjust=1\n\n[connected]\noutput=7\n"
        "activation=loggy\n\n[softmax]\ngroups=7\ntemperature=.5\n\n[cost]\n", c=2, h=6, w=6),
    "yolo": net_text(
        conv(14, 1, bn=0, activation="linear") + "[yolo]\nmask=0,1\nanchors=2,3, 4,5, 6,7\n"
        "classes=2\nnum=3\nscale_x_y=1.1\n\n[route]\nlayers=-2\n\n" + conv(14, 1, bn=0, activation="logistic")
        + "[yolo]\nmask=1,2\nanchors=2,3, 4,5, 6,7\nclasses=2\nnum=3\nnew_coords=1\n"
        "scale_x_y=2.0\n\n[route]\nlayers=-5\n\n" + conv(22, 1, bn=0, activation="linear")
        + "[Gaussian_yolo]\nmask=0,1\nanchors=2,3, 4,5, 6,7\nclasses=2\nnum=3\n"
        "scale_x_y=1.05\n\n", c=3, h=6, w=4),
    "region": net_text(
        conv(14, 1, bn=0, activation="linear") + "[region]\nanchors=1,1, 2,2\nclasses=2\n"
        "coords=4\nnum=2\nsoftmax=1\n\n[route]\nlayers=-2\n\n" + conv(16, 1, bn=0, activation="linear")
        + "[region]\nanchors=1,1, 2,2\nclasses=2\ncoords=5\nnum=2\n\n[route]\nlayers=-4\n\n"
        + conv(14, 1, bn=0, activation="linear")
        + "[region]\nanchors=1,1, 2,2\nclasses=2\ncoords=4\nnum=2\nbackground=1\nsoftmax=1\n\n",
        c=3, h=5, w=4),
    "detection": net_text(
        "[connected]\noutput=52\nactivation=linear\n\n[detection]\nclasses=3\ncoords=4\n"
        "side=2\nnum=2\nsoftmax=1\nsqrt=1\n\n", c=2, h=4, w=4),
    "contrastive": net_text(
        conv(8, 1, bn=0) + conv(14, 1, bn=0, activation="linear")
        + "[yolo]\nmask=0,1\nanchors=1,1, 2,2\nclasses=2\nnum=2\nembedding_layer=-2\n\n"
        "[route]\nlayers=-3\n\n[contrastive]\nclasses=1\nyolo_layer=-2\n\n", c=3, h=4, w=4),
}

ACTIVATION_NET = net_text("".join(
    f"[convolutional]\nfilters=4\nsize=1\nactivation={name}\n\n[activation]\n"
    f"activation={name}\n\n" for name in ACTIVATIONS), c=4, h=3, w=3)


def model_of(net, **options):
    return build_model(net, outputs="all", **options)


def assert_graph_matches(net, model=None, seed=0):
    model = model or model_of(net)
    outputs = [o.name for o in model.graph.output]
    for name in outputs:
        index = int(name.split("_")[1])
        layer_name = f"layer_{index}_{net.layers[index].type}"
        # a recurrent layer's carried state comes out as layer_<i>_<type>_<state>_out
        assert name == layer_name or (name.startswith(layer_name + "_") and
                                      name.endswith("_out")), name
    diffs = compare_with_onnxruntime(net, model, seed)
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= TOLERANCE, (worst, net.layers[worst], diffs[worst])
    return diffs


# ---------------------------------------------------------------------------- the registry

def test_every_layer_type_has_a_converter_or_a_stated_refusal():
    for name, cls in LAYER_TYPES.items():
        assert cls in CONVERTERS or (cls.type in REFUSED and REFUSED[cls.type]), name
        assert not (cls in CONVERTERS and cls.type in REFUSED), name
    assert not REFUSED      # every type exports today (some keys are refused: tests below)


def test_every_activation_of_both_forks_has_a_converter():
    assert set(ACTIVATION_CONVERTERS) == set(ACTIVATIONS)


def test_the_small_networks_use_every_converter():
    used = set()
    for text in list(NETWORKS.values()) + [ACTIVATION_NET]:
        used |= {type(layer) for layer in build(text).layers}
    for text in RECURRENT.values():
        used |= {type(layer) for layer in build(text, batch=None).layers}
    assert set(CONVERTERS) <= used, set(CONVERTERS) - used


# ---------------------------------------------------------------------------- numbers

@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_layer_matches_minidarknet(name):
    net = build(NETWORKS[name])
    diffs = assert_graph_matches(net)
    assert len(diffs) == sum(layer.type != "cost" for layer in net.layers)


@pytest.mark.parametrize("fork", ["pjreddie", "alexeyab"])
def test_every_activation_matches_both_forks(fork):
    net = build(ACTIVATION_NET, fork=fork)
    # inputs spread over every branch of the piecewise activations (stair, plse, lhtan, ...)
    layer = net.layers[0]
    layer.weights[...] = np.random.default_rng(1).normal(0, 3, layer.weights.shape)
    assert_graph_matches(net)


def test_batch_norm_follows_the_network_fork():
    text = net_text(conv(6) + "[connected]\noutput=4\nbatch_normalize=1\nactivation=linear\n",
                    c=3, h=4, w=4)
    for fork in ("pjreddie", "alexeyab"):
        net = build(text, fork=fork)
        for layer in net.layers:
            layer.rolling_variance[...] = 1e-5     # where the forks' epsilons matter most
        assert_graph_matches(net)


def test_tree_softmax_and_tree_region(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.tree").write_text("animal -1\nplant -1\ndog 0\ncat 0\nrose 1\n"
                                         "tulip 1\ndaisy 1\npoodle 2\n")
    net = build(net_text("[softmax]\ntree=small.tree\ntemperature=2\n", c=10, h=1, w=1))
    assert_graph_matches(net)
    net = build(net_text(conv(26, 1, bn=0, activation="linear")
                         + "[region]\nanchors=1,1, 2,2\nclasses=8\ncoords=4\nnum=2\n"
                         "tree=small.tree\nsoftmax=1\n", c=3, h=3, w=2))
    assert_graph_matches(net)
    with pytest.raises(ExportError, match="tree"):
        build_model(net, decode=True)


def test_l2norm_zero_column_gives_zero_not_nan():
    net = build(net_text("[l2norm]\n", c=3, h=2, w=2))
    session = ort.InferenceSession(model_of(net).SerializeToString())
    x = np.ones((1, 3, 2, 2), F32)
    x[0, :, 0, 1] = 0
    got = session.run(None, {"input": x})[0]
    np.testing.assert_array_equal(got, net.forward(x))
    assert got[0, 0, 0, 1] == 0


def test_dynamic_batch_runs_any_batch():
    net = build(NETWORKS["routes_shortcuts"])
    model = build_model(net, dynamic_batch=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(2).random((3, 3, 8, 8), dtype=F32)
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    want = net.forward(x)
    assert np.max(np.abs(got - want)) <= TOLERANCE * np.max(np.abs(want))


@pytest.mark.parametrize("opset", [13, 18])
def test_other_opsets(opset):
    net = build(NETWORKS["attention"])
    model = model_of(net, opset=opset)
    assert model.opset_import[0].version == opset
    assert_graph_matches(net, model)


def test_decoding_matches_minidarknet_for_every_head():
    for name in ("yolo", "region", "detection"):
        net = build(NETWORKS[name])
        model = build_model(net, decode=True, image_size_input=True)
        results = dict(verify(net, model, image_size=(50, 20)))
        assert set(results) == {"boxes", "scores"}
        assert max(results.values()) <= TOLERANCE, (name, results)


# ---------------------------------------------------------------------------- refusals

RECURRENT = {
    "rnn": "[net]\nbatch=4\ntime_steps=2\nwidth=1\nheight=1\nchannels=6\n\n[rnn]\noutput=5\n"
           "hidden=7\nactivation=leaky\nbatch_normalize=1\nshortcut=1\n",
    "gru": "[net]\nbatch=4\ntime_steps=2\nwidth=1\nheight=1\nchannels=6\n\n[gru]\noutput=5\n"
           "tanh=1\nbatch_normalize=1\n",
    "lstm": "[net]\nbatch=4\ntime_steps=2\nwidth=1\nheight=1\nchannels=6\n\n[lstm]\noutput=5\n"
            "batch_normalize=1\n",
    "crnn_ab": "[net]\nbatch=6\ntime_steps=3\nwidth=5\nheight=4\nchannels=3\n\n[crnn]\noutput=4\n"
               "hidden=3\nsize=3\npad=1\nactivation=leaky\nbatch_normalize=1\n",
    "crnn_pj": "[net]\nbatch=2\ntime_steps=2\nwidth=5\nheight=4\nchannels=2\n\n[crnn]\n"
               "output_filters=4\nhidden_filters=3\nactivation=leaky\nshortcut=1\n",
}


@pytest.mark.parametrize("name", sorted(RECURRENT))
def test_recurrent_layers_unrolled_with_their_state(name):
    """Two calls in a row: the second starts from the state the first left (the graph's
    state output fed back as its state input), as minidarknet's inference does."""
    net = build(RECURRENT[name], batch=None)
    model = build_model(net, batch=net.batch)
    session = ort.InferenceSession(model.SerializeToString())
    states = [i.name for i in session.get_inputs() if i.name != "input"]
    assert states and all(s.startswith("layer_0_") for s in states)
    feeds = {s: np.zeros([d for d in i.shape], F32)
             for s, i in zip(states, session.get_inputs()[1:])}
    rng = np.random.default_rng(3)
    for _ in range(2):
        x = rng.random((net.batch,) + net.layers[0].in_shape, dtype=F32)
        feeds["input"] = x
        outputs = session.run(None, feeds)
        results = dict(zip([o.name for o in session.get_outputs()], outputs))
        want = net.forward(x)
        got = results[f"layer_0_{net.layers[0].type}"]
        assert np.max(np.abs(got - want)) <= TOLERANCE * np.max(np.abs(want))
        for s in states:
            feeds[s] = results[s + "_out"]
            attribute = s[len(f"layer_0_{net.layers[0].type}_"):]
            np.testing.assert_allclose(feeds[s], getattr(net.layers[0], attribute),
                                       atol=TOLERANCE)


def test_refusals_are_one_line_naming_the_layer(tmp_path):
    net = build(RECURRENT["rnn"], batch=None)
    with pytest.raises(ExportError, match=r"^batch 3 is not a multiple of the 2 time steps"):
        export_onnx(net, tmp_path / "x.onnx", batch=3)
    with pytest.raises(ExportError, match=r"--decode needs a detector"):
        build_model(net, batch=4, decode=True)
    assert not (tmp_path / "x.onnx").exists()


def test_local_avgpool_padding_beyond_the_window():
    net = build(net_text("[local_avgpool]\nsize=3\nstride=2\npadding=5\n", c=2, h=5, w=5))
    assert max(net.layers[0].padding - net.layers[0].padding // 2, 0) >= 3
    assert_graph_matches(net)


def test_diou_nms_is_refused_in_the_graph():
    net = build(NETWORKS["yolo"].replace("classes=2\nnum=3\nscale_x_y=1.05",
                                         "classes=2\nnum=3\nnms_kind=diounms"))
    build_model(net, decode=True)
    with pytest.raises(ExportError, match="DIoU"):
        build_model(net, decode=True, nms=.45)


def test_cli_refusal_is_one_line_with_status_2(tmp_path):
    cfg = tmp_path / "net.cfg"
    cfg.write_text(NETWORKS["yolo"].replace("scale_x_y=1.05", "scale_x_y=1.05\nnms_kind=diounms"))
    done = subprocess.run([sys.executable, "-m", "minidarknet", "export", str(cfg),
                           str(tmp_path / "o.onnx"), "--decode", "--nms", ".45"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "net.cfg" in errors[0] and "DIoU" in errors[0]
    assert "Traceback" not in done.stderr and not (tmp_path / "o.onnx").exists()


def test_cli_export_and_verify(tmp_path):
    cfg = tmp_path / "net.cfg"
    cfg.write_text(NETWORKS["yolo"])
    out = tmp_path / "net.onnx"
    done = subprocess.run([sys.executable, "-m", "minidarknet", "export", str(cfg), str(out),
                           "--decode", "--nms", ".45", "--verify", "--fork", "alexeyab"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "boxes: largest relative difference" in done.stdout
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert sorted(os.listdir(tmp_path)) == ["net.cfg", "net.onnx"]    # no temporary left


def test_network_method_writes_the_same_model(tmp_path):
    net = build(NETWORKS["reorg"])
    net.export_onnx(tmp_path / "a.onnx", outputs="all")
    assert onnx.load(tmp_path / "a.onnx") == model_of(net)


def test_core_import_does_not_load_onnx():
    code = "import sys, minidarknet; minidarknet.Network; print('onnx' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.stdout.strip() == "False"


# ---------------------------------------------------------------------------- real weights

def test_real_yolov3_tiny_decoded_and_nms_gives_darknets_detections_of_the_dog(tmp_path):
    from minidarknet.image import letterbox_image, load_image
    real = need_shared(SHARED / "real")
    expected = json.loads((real / "dog.dets.json").read_text())
    net = minidarknet.load(CFG_CORPUS / "pjreddie" / "yolov3-tiny.cfg",
                           real / "yolov3-tiny.weights", batch=1)
    out = tmp_path / "yolov3-tiny.onnx"
    done = subprocess.run([sys.executable, "-m", "minidarknet", "export",
                           str(CFG_CORPUS / "pjreddie" / "yolov3-tiny.cfg"), str(out),
                           "--weights", str(real / "yolov3-tiny.weights"), "--decode",
                           "--image-size-input", "--nms", ".45", "--thresh", ".5"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    picture = load_image(real / "dog.pixels.png")
    x = letterbox_image(picture, net.w, net.h)[None]
    size = np.array([[picture.shape[2], picture.shape[1]]], np.int64)
    assert size.tolist() == [expected["size"]]
    session = ort.InferenceSession(str(out))
    boxes, scores, selected = session.run(["boxes", "scores", "selected_indices"],
                                          {"input": x, "image_size": size})
    got = sorted((int(c), round(float(scores[0, k, c]), 3), *np.round(boxes[0, k], 3))
                 for _, c, k in selected)
    want = sorted((cls["id"], round(cls["prob"], 3),
                   *np.round([d["x"], d["y"], d["w"], d["h"]], 3))
                  for d in expected["detections"] for cls in d["classes"])
    assert len(got) == len(want) == 5
    for g, w in zip(got, want):
        assert g[0] == w[0]
        np.testing.assert_allclose(g[1:], w[1:], atol=2e-3)


# ---------------------------------------------------------------------------- the corpus

# The corpus holds 5 billion parameters (cspx-p7 alone 276 million): the suite checks the cfgs
# up to this size (every layer type and option of the corpus occurs among them);
# benchmarks/check_export_corpus.py checks every cfg (README: Export).
CORPUS_PARAMETER_LIMIT = 12_000_000


def corpus_cases():
    return unique_cfgs(CFG_CORPUS) if CFG_CORPUS.exists() else []


@pytest.mark.parametrize("path", corpus_cases(), ids=lambda p: p.relative_to(CFG_CORPUS).as_posix())
def test_corpus_cfg_exports_and_agrees(path):
    need_shared(CFG_CORPUS)
    net, why = build_small(path, max_parameters=CORPUS_PARAMETER_LIMIT)
    if net is None:
        pytest.skip(f"{why} (benchmarks/check_export_corpus.py checks the large ones)")
    assert_graph_matches(net)
