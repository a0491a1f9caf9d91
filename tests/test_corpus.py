"""The cfg corpus (../shared/darknet-cfg, 140 files of both forks).

Every file either builds with batch=1, with the shapes and BFLOPs Darknet prints, or -- where
Darknet itself cannot build the network -- fails with a one-line `FILE:LINE:` CfgError naming
the reason (DARKNET_CANNOT_BUILD below).  The per-file check builds the network, compares the
layer count with the cfg's sections, follows every layer's input shape from the previous
layer's output (route and shortcut from the layers they name), checks each convolution's
output size and BFLOPs, and renders the `info` table.  It runs in two worker processes; the
random initial weights are replaced there by lazily zeroed arrays, since no check depends on
their values and drawing the corpus's 6 billion random numbers would dominate the run.  Every
buildable file also runs one forward pass at a small size (64x64 or the smallest it allows,
batch 1, tiled random weights), checking that each layer's output is finite.

Known totals: pjreddie's published BFLOPs (darknet.pjreddie.com: YOLO and ImageNet pages) are
the sums over the [convolutional] and [connected] layers of what its loader prints
(2 * n * size^2 * c/groups * out_h * out_w for a convolution, 2 * inputs * outputs for a
connected layer), at the cfg's size unless noted.  `minidarknet info` additionally lists
AlexeyAB's count for [shortcut] (one add per output and source), which pjreddie does not
count.
"""
import importlib
import pkgutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import minidarknet
from minidarknet import layers
from conftest import CFG_CORPUS, need_shared
from minidarknet.errors import CfgError, DarknetWarning
from minidarknet.summary import format_table, layer_rows

CORPUS = sorted(CFG_CORPUS.rglob("*.cfg")) if CFG_CORPUS.exists() else []
CORPUS_SIZE = 140

# Files Darknet cannot build on its own, with the key whose line the error names and why.
DARKNET_CANNOT_BUILD = {
    "pjreddie/darknet9000.cfg": ("tree", "[softmax] tree=data/9k.tree: Darknet reads the tree "
                                         "file relative to the working directory while parsing "
                                         "and exits when it is missing (it is not in the corpus)"),
    "pjreddie/yolo9000.cfg": ("tree", "[region] tree=data/9k.tree (and map=data/coco9k.map): "
                                      "read at parse time, not in the corpus"),
    "alexeyab/yolo9000.cfg": ("tree", "same as pjreddie/yolo9000.cfg"),
}


def corpus_id(path):
    return path.relative_to(CFG_CORPUS).as_posix()


@pytest.fixture
def lazy_weights(monkeypatch):
    """Replace the random initial weights by zeros the OS hands out lazily (np.zeros)."""
    for info in pkgutil.iter_modules(layers.__path__):
        module = importlib.import_module(f"minidarknet.layers.{info.name}")
        if hasattr(module, "uniform_weights"):
            monkeypatch.setattr(module, "uniform_weights",
                                lambda rng, shape, scale: np.zeros(shape, np.float32))


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """Darknet opens tree/map files relative to the working directory: use an empty one."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def build(path, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DarknetWarning)
        return minidarknet.load(path, **options)


def section_count(path):
    """Sections as Darknet's read_cfg sees them: lines whose first non-space character is '['."""
    count = 0
    for line in Path(path).read_text().split("\n"):
        line = "".join(line.split())
        count += line.startswith("[")
    return count


def key_line(path, key):
    """1-based line of the first `key=` (spaces removed, as Darknet strips them)."""
    for number, line in enumerate(Path(path).read_text().split("\n"), start=1):
        if "".join(line.split()).startswith(key + "="):
            return number
    raise AssertionError(f"{key}= not in {path}")


def dims(layer, side="out"):
    prefix = "out_" if side == "out" else "in_"
    count = layer.outputs if side == "out" else layer.inputs
    return (getattr(layer, prefix + "c"), getattr(layer, prefix + "h"),
            getattr(layer, prefix + "w"), count)


def check_chain(net):
    """Each layer takes the previous layer's output shape (the network input for layer 0);
    route and shortcut outputs follow from the layers they reference."""
    previous = (net.c, net.h, net.w, net.inputs)
    for layer in net.layers:
        assert dims(layer, "in") == previous, f"layer {layer.index} ({layer.type})"
        assert layer.output.shape[0] == 1
        assert layer.output.size == layer.outputs, f"layer {layer.index} ({layer.type})"
        if layer.type == "route":
            check_route(layer)
        elif layer.type == "shortcut":
            assert dims(layer) == previous, f"shortcut {layer.index} keeps the input shape"
        elif layer.type == "convolutional":
            check_convolution(layer)
        previous = dims(layer)


def check_route(layer):
    sources = layer.source_layers
    assert layer.outputs == sum(s.outputs for s in sources) // layer.groups
    first = sources[0]
    if all((s.out_w, s.out_h) == (first.out_w, first.out_h) for s in sources):
        assert (layer.out_c, layer.out_h, layer.out_w) == (
            sum(s.out_c for s in sources) // layer.groups, first.out_h, first.out_w)


def check_convolution(layer):
    k, p = layer.size, layer.padding
    assert layer.out_c == layer.filters
    assert layer.out_h == (layer.in_h + 2 * p - k) // layer.stride_y + 1
    assert layer.out_w == (layer.in_w + 2 * p - k) // layer.stride_x + 1
    expected = 2.0 * layer.filters * k * k * (layer.in_c / layer.groups) * layer.out_h * layer.out_w
    assert layer.flops() == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------- the whole corpus

def test_corpus_is_all_there():
    need_shared(CFG_CORPUS)
    assert len(CORPUS) == CORPUS_SIZE
    names = {corpus_id(p) for p in CORPUS}
    assert set(DARKNET_CANNOT_BUILD) <= names


def check_corpus_file(path):
    """Build one corpus file in the working directory and check it (module docstring)."""
    name = corpus_id(path)
    if name in DARKNET_CANNOT_BUILD:
        key, _reason = DARKNET_CANNOT_BUILD[name]
        try:
            build(path, batch=1)
        except CfgError as e:
            message = str(e)
        else:
            raise AssertionError(f"{name} built, but Darknet cannot build it")
        assert "\n" not in message, message
        assert message.startswith(f"{path}:{key_line(path, key)}: "), message
        assert f"{key}=" in message, message
        assert str(Path.cwd() / "data" / "9k.tree") in message, message
        return
    net = build(path, batch=1)
    assert len(net.layers) == section_count(path) - 1
    check_chain(net)
    table = format_table(net)
    assert len(table.splitlines()) == len(net.layers) + 4
    total = sum(r["bflops"] for r in layer_rows(net))
    assert table.splitlines()[-1] == f"total BFLOPs: {total:.3f}"


# Sizes tried for the small forward pass, smallest first; None: the cfg's own size (networks
# whose connected or detection layers fix the input size, e.g. YOLOv1).
SMALL_SIZES = (64, 128, 256, None)
# Random values in [-1, 1) tiled over every weight array: "random" enough to exercise every
# layer, and written at memory speed (drawing the corpus's weights would dominate the run).
TILE = np.random.default_rng(0).random(1 << 16, dtype=np.float32) * 2 - 1


def set_initial_weights(kind):
    """Every layer module draws its initial weights as `kind`: "zeros" (handed out lazily by
    the OS, for the checks that only look at shapes) or "tiled" (TILE * the layer's scale)."""
    def tiled(rng, shape, scale):
        return (np.resize(TILE, int(np.prod(shape))) * np.float32(scale)).reshape(shape)

    def zeros(rng, shape, scale):
        return np.zeros(shape, np.float32)

    for info in pkgutil.iter_modules(layers.__path__):
        module = importlib.import_module(f"minidarknet.layers.{info.name}")
        if hasattr(module, "uniform_weights"):
            module.uniform_weights = tiled if kind == "tiled" else zeros


def small_network(path):
    """The cfg built with batch 1 at the smallest of SMALL_SIZES it allows."""
    for size in SMALL_SIZES:
        options = {} if size is None else {"width": size, "height": size}
        try:
            return build(path, batch=1, seed=1, **options)
        except CfgError:
            if size is None:
                raise


def check_small_forward(path):
    """One forward pass of the small network on a random picture: every layer's output has
    its buffer's shape and is finite (batch-norm statistics set to mean 0 / variance 1), and a
    detector's boxes are finite.  Returns the input size used."""
    net = small_network(path)
    sane_statistics(net)
    x = np.random.default_rng(0).random((1, net.inputs), dtype=np.float32)
    image = net.c * net.h * net.w == net.inputs
    out = net.forward(x.reshape((1, net.c, net.h, net.w)) if image else x)
    assert out.shape[0] == 1 and out.size == net.output_layer.outputs
    for layer in net.layers:
        assert layer.output.size == layer.outputs, f"layer {layer.index} ({layer.type})"
        assert np.isfinite(layer.output).all(), f"layer {layer.index} ({layer.type}): not finite"
    if any(hasattr(l, "boxes") for l in net.layers):
        # no NMS: Darknet's sort over thousands of random boxes would dominate the run
        dets = net.detections(thresh=0.01, nms=0)
        assert all(np.isfinite([d.x, d.y, d.w, d.h]).all() for d in dets)
    return f"{net.w}x{net.h}"


def corpus_worker(out, paths):
    """Run in a subprocess: check each file and write {name: "ok" or the traceback}, and
    {"forward:" + name: "ok <size>" or the traceback} for the small forward pass."""
    import json
    import traceback
    results = {}
    for path in paths:
        path = Path(path)
        name = corpus_id(path)
        try:
            set_initial_weights("zeros")
            check_corpus_file(path)
            results[name] = "ok"
        except Exception:           # reported by the test for this file
            results[name] = traceback.format_exc()
        if name in DARKNET_CANNOT_BUILD:
            continue
        try:
            set_initial_weights("tiled")
            results["forward:" + name] = "ok " + check_small_forward(path)
        except Exception:
            results["forward:" + name] = traceback.format_exc()
    Path(out).write_text(json.dumps(results))


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory):
    """Check the whole corpus in two worker processes (this machine has two cores), each in
    an empty working directory.  Building a network allocates its buffers (gigabytes for the
    largest, at batch 1); in separate processes that memory is returned when they exit, and
    glibc's fixed mmap threshold keeps freshly zeroed buffers untouched (with its dynamic
    threshold, later networks would get recycled heap memory that calloc must clear).  Those
    buffers are never touched, so the memory budget (which counts them: cspx-p7-mish needs
    12 GiB at its size) is lifted for the workers: the result must not depend on how much
    memory is free at the moment."""
    import json
    import os
    import subprocess
    import sys
    need_shared(CFG_CORPUS)
    workdir = tmp_path_factory.mktemp("empty-cwd")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 20), MINIDARKNET_MAX_MEMORY="1T",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent),
                                           os.environ.get("PYTHONPATH", "")]))
    jobs = []
    for part in range(2):
        out = workdir.parent / f"corpus-{part}.json"
        paths = [str(p) for p in CORPUS[part::2]]
        jobs.append((out, subprocess.Popen(
            [sys.executable, "-c", "import sys, test_corpus; "
             "test_corpus.corpus_worker(sys.argv[1], sys.argv[2:])", str(out), *paths],
            cwd=workdir, env=env, stderr=subprocess.PIPE, text=True)))
    results = {}
    for out, job in jobs:
        _, err = job.communicate()
        assert job.returncode == 0, err
        results.update(json.loads(out.read_text()))
    return results


@pytest.mark.parametrize("path", CORPUS, ids=[corpus_id(p) for p in CORPUS])
def test_every_cfg_builds_or_fails_as_darknet(path, corpus_results):
    result = corpus_results[corpus_id(path)]
    assert result == "ok", result


RUNNABLE = [p for p in CORPUS if corpus_id(p) not in DARKNET_CANNOT_BUILD]


@pytest.mark.parametrize("path", RUNNABLE, ids=[corpus_id(p) for p in RUNNABLE])
def test_every_cfg_runs_forward_at_a_small_size(path, corpus_results):
    """A forward pass of every buildable cfg (batch 1, 64x64 or the smallest size it allows,
    random weights): a layer that crashes or goes non-finite on some cfg fails here."""
    result = corpus_results["forward:" + corpus_id(path)]
    assert result.startswith("ok "), result


def test_tree_cfgs_build_when_the_tree_exists(lazy_weights, empty_cwd):
    """With a data/9k.tree (a made-up 9418-node hierarchy) and data/coco9k.map in the working
    directory, the three YOLO9000 files build; the region/softmax use the tree."""
    need_shared(CFG_CORPUS)
    (empty_cwd / "data").mkdir()
    parents = [-1] * 18
    rng = np.random.default_rng(0)
    while len(parents) < 9418:
        parent = int(rng.integers(len(parents)))
        parents += [parent] * int(min(rng.integers(2, 12), 9418 - len(parents)))
    (empty_cwd / "data" / "9k.tree").write_text(
        "".join(f"n{i} {p}\n" for i, p in enumerate(parents)))
    (empty_cwd / "data" / "coco9k.map").write_text("".join(f"{i}\n" for i in range(80)))
    for name in DARKNET_CANNOT_BUILD:
        path = CFG_CORPUS / name
        net = build(path, batch=1)
        assert len(net.layers) == section_count(path) - 1
        check_chain(net)
        head = [l for l in net.layers if getattr(l, "tree", None) is not None]
        assert len(head) == 1 and head[0].tree.n == 9418 and head[0].tree.groups > 1


# ---------------------------------------------------------------------- known numbers

PUBLISHED_BFLOPS = [          # (cfg, width/height or None for the cfg's, pjreddie's number)
    ("pjreddie/yolov3-tiny.cfg", None, 5.56),
    ("pjreddie/yolov3.cfg", 416, 65.86),
    ("pjreddie/yolov3.cfg", 608, 140.69),
    ("pjreddie/yolov3-spp.cfg", 608, 141.45),
    ("pjreddie/yolov2.cfg", 608, 62.94),
    ("pjreddie/yolov2-tiny-voc.cfg", None, 6.97),
    ("pjreddie/darknet53.cfg", None, 18.57),
    ("pjreddie/darknet53_448.cfg", None, 56.87),
    ("pjreddie/darknet19.cfg", None, 7.29),
    ("pjreddie/darknet19_448.cfg", None, 22.33),
    ("pjreddie/darknet.cfg", None, 0.96),
    ("pjreddie/extraction.cfg", None, 8.52),
    ("pjreddie/alexnet.cfg", None, 2.27),
    ("pjreddie/vgg-16.cfg", None, 30.94),
    ("pjreddie/resnet18.cfg", None, 4.69),
    ("pjreddie/resnet34.cfg", None, 9.52),
    ("pjreddie/resnet50.cfg", None, 9.74),
    ("pjreddie/resnet101.cfg", None, 19.70),
    ("pjreddie/resnet152.cfg", None, 29.39),
    ("pjreddie/densenet201.cfg", None, 10.85),
]


@pytest.mark.parametrize("name,size,published", PUBLISHED_BFLOPS,
                         ids=[f"{n}@{s or 'cfg'}" for n, s, _ in PUBLISHED_BFLOPS])
def test_total_bflops_match_pjreddies_published_numbers(name, size, published, lazy_weights):
    need_shared(CFG_CORPUS)
    options = {} if size is None else {"width": size, "height": size}
    net = build(CFG_CORPUS / name, batch=1, **options)
    rows = layer_rows(net)
    counted = sum(r["bflops"] for r in rows if r["type"] in ("convolutional", "connected"))
    assert round(counted, 2) == pytest.approx(published, abs=1e-9)
    # info's total is pjreddie's: no other layer type adds to it.
    assert round(sum(r["bflops"] for r in rows), 2) == pytest.approx(published, abs=1e-9)


@pytest.mark.parametrize("name,size,index,line", [
    # pjreddie's load-time lines for yolov3 at 416 and yolov3-tiny at 416
    ("pjreddie/yolov3.cfg", 416, 0, ("32", "416 x 416 x 3", "416 x 416 x 32", "0.299")),
    ("pjreddie/yolov3.cfg", 416, 1, ("64", "416 x 416 x 32", "208 x 208 x 64", "1.595")),
    ("pjreddie/yolov3.cfg", 416, 2, ("32", "208 x 208 x 64", "208 x 208 x 32", "0.177")),
    ("pjreddie/yolov3.cfg", 416, 105, ("255", "52 x 52 x 256", "52 x 52 x 255", "0.353")),
    ("pjreddie/yolov3-tiny.cfg", None, 0, ("16", "416 x 416 x 3", "416 x 416 x 16", "0.150")),
    ("pjreddie/yolov3-tiny.cfg", None, 2, ("32", "208 x 208 x 16", "208 x 208 x 32", "0.399")),
    ("pjreddie/yolov3-tiny.cfg", None, 15, ("255", "13 x 13 x 512", "13 x 13 x 255", "0.044")),
])
def test_convolution_lines_as_darknet_prints_them(name, size, index, line, lazy_weights):
    need_shared(CFG_CORPUS)
    options = {} if size is None else {"width": size, "height": size}
    row = layer_rows(build(CFG_CORPUS / name, batch=1, **options))[index]
    assert (row["filters"], row["input"], row["output"], f"{row['bflops']:.3f}") == line


@pytest.mark.parametrize("name,size,heads", [
    ("pjreddie/yolov3.cfg", 416, {82: (255, 13, 13), 94: (255, 26, 26), 106: (255, 52, 52)}),
    ("pjreddie/yolov3-tiny.cfg", None, {16: (255, 13, 13), 23: (255, 26, 26)}),
    ("alexeyab/yolov4.cfg", None, {139: (255, 76, 76), 150: (255, 38, 38),
                                   161: (255, 19, 19)}),
    ("alexeyab/yolov4-tiny.cfg", None, {30: (255, 13, 13), 37: (255, 26, 26)}),
    ("pjreddie/yolov2-voc.cfg", None, {31: (125, 13, 13)}),
    ("alexeyab/Gaussian_yolov3_BDD.cfg", None, {82: (57, 16, 16), 94: (57, 32, 32),
                                                106: (57, 64, 64)}),
])
def test_detection_head_shapes(name, size, heads, lazy_weights):
    need_shared(CFG_CORPUS)
    options = {} if size is None else {"width": size, "height": size}
    net = build(CFG_CORPUS / name, batch=1, **options)
    found = {l.index: (l.out_c, l.out_h, l.out_w) for l in net.layers if hasattr(l, "boxes")}
    assert found == heads


def test_classifier_outputs():
    need_shared(CFG_CORPUS)
    for name, classes in (("pjreddie/resnet50.cfg", 1000), ("pjreddie/darknet53.cfg", 1000),
                          ("alexeyab/efficientnet_b0.cfg", 1000)):
        net = build(CFG_CORPUS / name, batch=1)
        assert net.output_layer.outputs == classes, name


# ---------------------------------------------------------------------- a few forwards

def sane_statistics(net):
    """Random weights with zero rolling variance explode through batch norm; use 1 (also in
    the layers inside recurrent layers)."""
    def parts(layer):        # layers and blocks inside a layer (e.g. [crnn]'s convolutions)
        return [v for v in vars(layer).values()
                if type(v).__module__.startswith("minidarknet.layers") and hasattr(v, "__dict__")]

    pending, seen = list(net.layers), set()
    while pending:
        layer = pending.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        variance = getattr(layer, "rolling_variance", None)
        if variance is not None:
            variance[...] = 1
        pending += parts(layer)


@pytest.mark.parametrize("name,overrides", [
    ("pjreddie/yolov3-tiny.cfg", None),
    ("alexeyab/yolov3-tiny_xnor.cfg", None),
    ("alexeyab/yolov3-tiny_xnor.cfg", {"conv.xnor_path": "bits"}),
    ("alexeyab/Gaussian_yolov3_BDD.cfg", None),
    ("alexeyab/resnet152_trident.cfg", None),
    ("alexeyab/yolov4-tiny_contrastive.cfg", None),
    ("pjreddie/rnn.cfg", None),
])
def test_tiny_forward(name, overrides):
    need_shared(CFG_CORPUS)
    path = CFG_CORPUS / name
    sized = {} if "rnn" in name else {"width": 64, "height": 64}
    net = build(path, batch=1, seed=1, overrides=overrides, **sized)
    sane_statistics(net)
    x = np.random.default_rng(0).random((1, net.inputs), dtype=np.float32)
    out = net.forward(x.reshape((1, net.c, net.h, net.w)) if net.c * net.h * net.w else x)
    assert out.shape[0] == 1 and out.size == net.output_layer.outputs
    assert all(np.isfinite(l.output).all() for l in net.layers)
    heads = [l for l in net.layers if hasattr(l, "boxes")]
    if heads:
        dets = net.detections(thresh=0.01)
        assert all(np.isfinite([d.x, d.y, d.w, d.h]).all() for d in dets)

