"""Darknet's `partial`: the first N layers' weights of a network, as a new weights file.

    partial("yolov4-tiny.cfg", "yolov4-tiny.weights", "yolov4-tiny.conv.29", 29)

As AlexeyAB's and pjreddie's `darknet partial cfg weights out N`: the network is built with
batch 1, the first N layers' weights are loaded, ``seen`` is set to 0 (so training with the
result starts at iteration 0 with the burn-in), and the header (same version as the source)
plus those N layers' parameters are written, in Darknet's order.  Loading the result into
the full network gives the short-file warning and keeps the other layers' initial values,
which is how a pretrained backbone (``darknet53.conv.74``) is used.

Different from Darknet: N beyond the number of layers is an error (Darknet saves them all
without a word), so is a source file that ends before layer N (Darknet would save those
layers' random initial values), OUT may not be the source file, and the file is written
atomically.
"""
import os
import warnings

from .errors import MiniDarknetError


def partial(cfg, weights, out, count):
    """Write the first `count` layers of `weights` (for the network `cfg`) to `out`;
    returns (network, bytes written)."""
    from . import load
    from .atomic import write_atomic
    from .weights import weights_bytes
    count = int(count)
    net = load(cfg, batch=1)
    if not 0 <= count <= len(net.layers):
        raise MiniDarknetError(f"{cfg}: cannot keep {count} layers, the network has "
                               f"{len(net.layers)} (0..{len(net.layers)})")
    if os.path.exists(out) and os.path.exists(weights) and os.path.samefile(weights, out):
        raise MiniDarknetError(f"{out}: is the weights file being read; give another name")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.load_weights(weights, cutoff=count)
    for warning in caught:
        if "the file ends before layer" in str(warning.message):
            # Darknet would save those layers' random initial values as if trained
            raise MiniDarknetError(f"{warning.message.args[0].split(';')[0]}, so it cannot "
                                   f"give the first {count} layers")
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
    net.seen = 0
    data = weights_bytes(net, cutoff=count)
    write_atomic(out, data)
    return net, len(data)
