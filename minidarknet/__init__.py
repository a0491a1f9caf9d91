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
         cutoff=None, seed=None, overrides=None, fork=None, partial=False, max_memory=None):
    """Build the network described by the cfg file `cfg` and optionally load `weights`.

    batch/width/height override the [net] values (Darknet's set_batch_network /
    resize_network); gradients is "darknet" (Darknet's CPU numbers and quirks) or "exact"
    (the true gradient of the loss); fork is "pjreddie" or "alexeyab" (whose numbers the
    network computes, see minidarknet.fork), None picks one by the rule documented there
    (the weights header's revision, then AlexeyAB-only cfg features; the choice and its
    reason are in net.fork / net.fork_reason); cutoff loads only the first N layers' weights;
    overrides {"net.learning_rate": 0.01, "l2norm.backward": "exact", "layers[2].size": 3}
    changes cfg keys before the network is built (see minidarknet.overrides).

    A weights file with floats left over after the last layer is an error unless
    partial=True (or a cutoff) asks for a partial load.  max_memory (bytes) caps what the
    network's arrays may take (default: the memory available, or MINIDARKNET_MAX_MEMORY);
    above it the build is refused before anything large is allocated."""
    sections = apply_overrides(read_cfg(cfg), overrides)
    net = Network(sections, gradients=gradients, batch=batch, width=width, height=height,
                  seed=seed, fork=fork, weights_version=_version_of(weights, fork),
                  max_memory=max_memory)
    if weights is not None:
        net.load_weights(weights, cutoff=cutoff, partial=partial)
    return net


def _version_of(weights, fork):
    """The weights file's header version when the default fork rule needs it."""
    if weights is None or fork is not None:
        return None
    from .weights import peek_version
    return peek_version(weights)


def prepare_input(image, net, resize="letterbox"):
    """A picture -> the (1, c, h, w) float32 input `net` takes, made as `minidarknet run`
    makes it: read with Pillow (a path; or a (3, h, w) float array in [0, 1] as load_image
    returns), turned into the network's channels, and fitted to its [net] size by `resize`
    ("letterbox", pjreddie's default; "stretch" or "crop", AlexeyAB's detector/classifier)."""
    import os
    from .image import load_image, prepare_image, to_channels
    name = "<array>"
    if isinstance(image, (str, os.PathLike)):
        name = os.fspath(image)
        image = load_image(name)
    picture = to_channels(image, net.c, name)
    return prepare_image(picture, net.w, net.h, resize)[None]


def loads(text, weights=None, *, path="<cfg>", **options):
    """Like load(), with the cfg given as text."""
    sections = apply_overrides(parse_cfg_text(text, path), options.pop("overrides", None))
    partial = options.pop("partial", False)
    net = Network(sections, gradients=options.pop("gradients", "darknet"),
                  weights_version=_version_of(weights, options.get("fork")), **options)
    if weights is not None:
        net.load_weights(weights, partial=partial)
    return net


from .image import load_image  # noqa: E402  (public: a picture as (3, h, w) float32)

__all__ = ["load", "loads", "layer", "prepare_input", "load_image", "apply_overrides", "train", "Trainer", "TrainResult",
           "Network", "MiniDarknetError", "CfgError",
           "WeightsError", "ImageError", "DataError", "ShapeError", "DarknetWarning", "__version__"]
