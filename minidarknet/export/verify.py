"""Run an exported model in onnxruntime and the network in minidarknet on the same random
input and compare every output (`--verify`)."""
import numpy as np

from .registry import ExportError

TOLERANCE = 1e-4


def random_input(net, batch, seed=0):
    """Uniform [0, 1) values (a picture's range) of the network's input shape."""
    rng = np.random.default_rng(seed)
    image = net.c * net.h * net.w == net.inputs
    shape = (batch, net.c, net.h, net.w) if image else (batch, net.inputs)
    return rng.random(shape, dtype=np.float32)


def onnx_session(model_or_path):
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("verifying needs onnxruntime: pip install onnxruntime") from None
    data = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") \
        else str(model_or_path)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def relative_difference(got, want):
    """max |got - want| / max |want| (0 for two zero arrays; inf when shapes differ)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    scale = np.max(np.abs(want)) if want.size else 0.0
    diff = np.max(np.abs(got - want)) if want.size else 0.0
    if not np.isfinite(diff):
        same = np.array_equal(np.isnan(got), np.isnan(want)) and \
            np.array_equal(got[~np.isnan(got)], want[~np.isnan(want)])
        return 0.0 if same else float("inf")
    return float(diff / scale) if scale else float(diff)


def verify(net, model, batch=1, seed=0, image_size=None):
    """[(output name, largest relative difference)] between onnxruntime and minidarknet."""
    from .exporter import INPUT
    session = onnx_session(model)
    x = random_input(net, batch, seed)
    feeds = {INPUT: x}
    names = [o.name for o in session.get_outputs()]
    if any(i.name == "image_size" for i in session.get_inputs()):
        size = image_size or (net.w * 2, net.h)
        feeds["image_size"] = np.tile(np.asarray(size, np.int64), (batch, 1))
    feeds.update(state_feeds(net, session))
    got = dict(zip(names, session.run(names, feeds)))
    net.forward(x)
    want = expected_outputs(net, names, feeds)
    for name in names:
        if name in want and not np.all(np.isfinite(want[name])):
            raise ExportError(f"minidarknet's {name} is not finite for a random input, so "
                              f"there is nothing to compare (without --weights: Darknet's "
                              f"initial batch-norm variance of 0 is divided by 1e-6)")
    return [(name, relative_difference(got[name], want[name])) for name in names
            if name in want]


def _state_of(net, name):
    """The recurrent state a graph input / output `layer_<i>_<type>_<attribute>[_out]`
    stands for (recurrent.py), or None."""
    parts = name.split("_")
    if len(parts) < 4 or parts[0] != "layer" or not parts[1].isdigit():
        return None
    layer = net.layers[int(parts[1])]
    attribute = name[len(f"layer_{layer.index}_{layer.type}_"):]
    attribute = attribute[:-4] if attribute.endswith("_out") else attribute
    return getattr(layer, attribute, None) if attribute else None


def state_feeds(net, session):
    """The recurrent layers' current state (what minidarknet's next forward starts from)
    for the graph's state inputs."""
    feeds = {}
    for item in session.get_inputs():
        state = _state_of(net, item.name)
        if state is not None:
            feeds[item.name] = np.array(state, np.float32)
    return feeds


def expected_outputs(net, names, feeds):
    """minidarknet's numbers for the graph's output names (after a forward)."""
    from .reference import decoded_reference
    want = {}
    for name in names:
        if name.endswith("_out"):
            want[name] = _state_of(net, name)
        elif name.startswith("layer_"):
            index = int(name.split("_")[1])
            want[name] = net.layers[index].output
    if "boxes" in names:
        boxes, scores = decoded_reference(net, feeds.get("image_size"))
        want["boxes"], want["scores"] = boxes, scores
    return want
