"""minidarknet: run, inspect and train Darknet networks (.cfg + .weights) with numpy.

    net = minidarknet.load("cfg/l2.cfg", weights=None, batch=None, gradients="darknet")
    out = net.forward(x)                       # x: (batch, c, h, w) float32
    net.forward(x, truth, train=True); net.backward(); net.update()
    cost = net.train_step(x, truth)            # Darknet's train_network
    net.layers[i].output / .delta / .weight_updates ...
"""

from .cfg import parse_cfg_text, read_cfg
from .errors import (CfgError, DarknetWarning, DataError, ImageError, MiniDarknetError,
                     ShapeError, WeightsError)
from .network import Network
from .overrides import apply_overrides
from .train import Trainer, TrainResult, train
from .standalone import layer

__version__ = "0.1.0"


def load(cfg, weights=None, *, batch=None, width=None, height=None, gradients="darknet",
         cutoff=None, seed=None, overrides=None, fork=None):
    """Build the network described by the cfg file `cfg` and optionally load `weights`.

    batch/width/height override the [net] values (Darknet's set_batch_network /
    resize_network); gradients is "darknet" (Darknet's CPU numbers and quirks) or "exact"
    (the true gradient of the loss); fork is "pjreddie" or "alexeyab" (whose numbers the
    network computes, see minidarknet.fork), None picks one by the rule documented there
    (the weights header's revision, then AlexeyAB-only cfg features; the choice and its
    reason are in net.fork / net.fork_reason); cutoff loads only the first N layers' weights;
    overrides {"net.learning_rate": 0.01, "l2norm.backward": "exact", "layers[2].size": 3}
    changes cfg keys before the network is built (see minidarknet.overrides)."""
    sections = apply_overrides(read_cfg(cfg), overrides)
    net = Network(sections, gradients=gradients, batch=batch, width=width, height=height,
                  seed=seed, fork=fork, weights_version=_version_of(weights, fork))
    if weights is not None:
        net.load_weights(weights, cutoff=cutoff)
    return net


def _version_of(weights, fork):
    """The weights file's header version when the default fork rule needs it."""
    if weights is None or fork is not None:
        return None
    from .weights import peek_version
    return peek_version(weights)


def loads(text, weights=None, *, path="<cfg>", **options):
    """Like load(), with the cfg given as text."""
    sections = apply_overrides(parse_cfg_text(text, path), options.pop("overrides", None))
    net = Network(sections, gradients=options.pop("gradients", "darknet"),
                  weights_version=_version_of(weights, options.get("fork")), **options)
    if weights is not None:
        net.load_weights(weights)
    return net


__all__ = ["load", "loads", "layer", "apply_overrides", "train", "Trainer", "TrainResult",
           "Network", "MiniDarknetError", "CfgError",
           "WeightsError", "ImageError", "DataError", "ShapeError", "DarknetWarning", "__version__"]
