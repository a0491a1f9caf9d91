"""Helpers shared by tests/test_export.py and benchmarks/check_export_corpus.py: build a cfg
at a small size with random weights and sane batch-norm statistics, export it, run it in
onnxruntime and compare every layer's output with minidarknet's forward."""
import contextlib
import hashlib
import warnings
from pathlib import Path

import numpy as np

import minidarknet
from minidarknet.errors import DarknetWarning
from minidarknet.layers import connected, convolutional

SIZES = (32, 64, 128, 256, 448)


def fork_of(path):
    return "alexeyab" if "alexeyab" in Path(path).parts else "pjreddie"


def unique_cfgs(root):
    """The corpus without byte-identical duplicates (the first of each kept)."""
    seen, paths = set(), []
    for path in sorted(Path(root).rglob("*.cfg")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            paths.append(path)
    return paths


@contextlib.contextmanager
def zero_initial_weights():
    """Build with lazily zeroed weights (np.zeros: no page is touched until written), so that
    a network's size is known before any random number is drawn."""
    modules = (convolutional, connected)
    kept = [m.uniform_weights for m in modules]
    for m in modules:
        m.uniform_weights = lambda rng, shape, scale: np.zeros(shape, np.float32)
    try:
        yield
    finally:
        for m, f in zip(modules, kept):
            m.uniform_weights = f


def build_small(path, seed=0, max_parameters=None):
    """(network at the smallest of SIZES it builds at, None) with random weights and sane
    statistics; (None, why) when it does not build or has more than max_parameters."""
    error = None
    for size in SIZES:
        try:
            with warnings.catch_warnings(), zero_initial_weights():
                warnings.simplefilter("ignore", DarknetWarning)
                net = minidarknet.load(path, batch=1, width=size, height=size, seed=seed,
                                       fork=fork_of(path))
        except minidarknet.CfgError as e:
            error = str(e)
            continue
        count = net.parameter_count()
        if max_parameters is not None and count > max_parameters:
            return None, f"{count / 1e6:.0f}M parameters"
        random_weights(net, seed)
        sane_statistics(net, seed)
        return net, None
    return None, f"minidarknet does not build it: {error}"


def random_weights(net, seed):
    """Darknet's scale*U(-1, 1) initialisation for every layer's weights (all of a [local]
    layer's positions, where Darknet fills only the first)."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if layer.type not in ("convolutional", "connected", "local") or \
                getattr(layer, "share_layer", None) is not None:
            continue
        w = layer.weights
        fan_in = w.shape[-1] if layer.type == "local" else w.size // w.shape[0]
        scale = np.float32(np.sqrt(2.0 / fan_in))
        w[...] = rng.random(w.shape, dtype=np.float32) * (2 * scale) - scale


def sane_statistics(net, seed):
    """Random batch-norm statistics, biases and shortcut weights of a plausible size, so
    that every parameter matters and values neither vanish nor blow up."""
    rng = np.random.default_rng(seed + 1)
    for layer in net.layers:
        for owner in [layer] + list(getattr(layer, "blocks", {}).values()):
            if getattr(owner, "rolling_mean", None) is not None:
                n = owner.rolling_mean.shape
                owner.rolling_mean[...] = rng.normal(0, 0.1, n)
                owner.rolling_variance[...] = rng.uniform(0.5, 1.5, n)
                owner.scales[...] = rng.uniform(0.7, 1.1, n)
            biases = getattr(owner, "biases", None)
            if biases is not None and layer.type not in ("yolo", "region", "Gaussian_yolo"):
                biases[...] = rng.normal(0, 0.1, biases.shape)
        if layer.type == "shortcut" and layer.weights is not None:
            layer.weights[...] = rng.uniform(0.5, 1.5, layer.weights.shape)


def compare_with_onnxruntime(net, model, seed=0):
    """{layer index: largest relative difference} over every output of the model."""
    from minidarknet.export.verify import onnx_session, random_input, relative_difference
    from minidarknet.export.verify import state_feeds
    session = onnx_session(model)
    x = random_input(net, 1, seed)
    names = [o.name for o in session.get_outputs()]
    feeds = {"input": x, **state_feeds(net, session)}
    got = dict(zip(names, session.run(names, feeds)))
    net.forward(x)
    result = {}
    for name in names:
        if name.endswith("_out"):       # a recurrent state: checked by test_export.py
            continue
        index = int(name.split("_")[1])
        result[index] = relative_difference(got[name], net.layers[index].output)
    return result
