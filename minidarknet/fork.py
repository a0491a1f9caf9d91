"""Which Darknet's numbers a network computes: pjreddie's (the original) or AlexeyAB's.

Every difference between the two forks that changes a number lives in the `Fork` table below,
one field per difference, so that a reader sees them all together; layers consult
`net.fork` (copied onto each layer as `layer.fork`) instead of testing a fork name.

    PJREDDIE.bn_rolling_momentum    # .99
    ALEXEYAB.bn_rolling_momentum    # .9

`resolve_fork("alexeyab")` turns a user's choice into one of the two objects;
`choose_fork(fork, sections, weights_version)` also applies the default rule (fork=None):

    AlexeyAB when the weights file's header carries AlexeyAB's revision (5: AlexeyAB's
    save_weights writes 0.2.5, pjreddie's 0.2.0), or when the cfg uses a section, key or
    activation that only AlexeyAB's parser knows (`ab_only_features`); otherwise pjreddie.

The values were read from pjreddie/darknet and AlexeyAB/darknet (commit 59596d7, CPU build) and
are checked by the reference cases in ../shared/golden and ../shared/golden-ab.
"""
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import DarknetWarning

F32 = np.float32


class ForkQuirkWarning(DarknetWarning):
    """A place where the chosen fork's CPU code is broken and gradients="darknet" reproduces it
    (given once per network; gradients="exact" computes the mathematics instead)."""


@dataclass(frozen=True)
class Fork:
    name: str
    display: str                        # as people write it: "pjreddie", "AlexeyAB"
    # ---- batch norm (conv, [batchnorm], connected, deconv, recurrent blocks)
    # Forward and inference: x_hat = (x - mean) / (sqrt(var + eps_in) + eps_out)
    bn_eps_inside_sqrt: float
    bn_eps_outside_sqrt: float
    # rolling = momentum * rolling + (1 - momentum) * batch statistic, inside forward
    bn_rolling_momentum: float
    # ... for [connected] layers (AlexeyAB's forward_connected_layer has its own: .95)
    bn_connected_rolling_momentum: float
    # Backward: normalize_delta's own term divides the delta by sqrt(var + in) + out; the mean
    # and variance deltas use sqrt(var + 1e-5) in both forks
    bn_backward_eps_inside_sqrt: float
    bn_backward_eps_outside_sqrt: float
    # AlexeyAB's CPU backward_batchnorm_layer never calls backward_bias: the biases of BN convs
    # and [batchnorm] layers do not train (its connected layer adds its bias updates itself)
    bn_biases_train: bool
    # ---- convolution backward: which kernel sizes WRITE (not add) the previous layer's delta.
    # pjreddie: size 1 only (gemm with beta=0 straight into it); AlexeyAB: every size (its
    # col2im_cpu_ext zeroes the destination first); "never" would be the mathematics
    conv_backward_overwrites: str       # "size1" | "always"
    # ---- activations on the CPU: the gelu gradient evaluates the x-formula at the output y
    # (AlexeyAB); tanh written (e^2x-1)/(e^2x+1) or 2/(1+e^-2x) - 1
    gelu_gradient_at_output: bool
    # names the generic CPU activate() lacks (output 0, gradient 0) unless the layer computes
    # them itself (AlexeyAB's convolution: swish, mish, hard_mish, normalize_channels*;
    # shortcut: swish, mish; `layer.special_activations`)
    cpu_activate_missing: frozenset
    tanh_formula: str                   # "exp2x": (e^2x-1)/(e^2x+1) | "logistic": 2/(1+e^-2x)-1
    # ---- [lstm]/[gru]: the order of the sub-layers in the weights file (layers/lstm.py, gru.py)
    recurrent_weights_order: str
    # [gru] tanh=1 (tanh candidate state) is read by pjreddie only; AlexeyAB always uses logistic
    gru_tanh_key: bool
    # (the update rule is the same: both CPU builds run SGD with momentum and decay; AlexeyAB's
    # adam=1 only allocates Adam's buffers, its Adam update is GPU-only -- netoptions.py)
    # ---- [yolo] truth per box and default number of boxes (AlexeyAB: x y w h class track_id)
    yolo_truth_floats: int
    yolo_max_boxes: int
    # ---- weights files: the revision this fork writes (and recognises); the header written by
    # save_weights (None: the version the weights were loaded with); AlexeyAB's save_weights
    # stores seen = cur_iteration * batch * subdivisions instead of the running `seen`
    weights_revision: int
    weights_header: tuple
    weights_seen_from_iterations: bool
    # ---- detections: the NMS comes from the LAST layer's nms_kind (greedynms / diounms);
    # pjreddie always runs do_nms_sort. greedynms uses this fixed DIoU exponent (beta_nms unused)
    nms_from_last_layer: bool
    greedy_diou_beta: float

    def __str__(self):
        return self.name

    # Formulas written once, from the fields above (float32, as Darknet's C).
    def bn_denominator(self, variance):
        """sqrt(var + eps_in) + eps_out: what x - mean is divided by (forward, inference)."""
        return np.sqrt(variance + F32(self.bn_eps_inside_sqrt)) + F32(self.bn_eps_outside_sqrt)

    def bn_delta_denominator(self, variance):
        """What normalize_delta divides the delta itself by (darknet gradients)."""
        return (np.sqrt(variance + F32(self.bn_backward_eps_inside_sqrt))
                + F32(self.bn_backward_eps_outside_sqrt))

    def conv_overwrites_delta(self, size):
        """True when Darknet's convolution backward of this kernel size overwrites (instead of
        adding to) the previous layer's delta."""
        return self.conv_backward_overwrites == "always" or size == 1

    def saved_seen(self, seen, iteration, batch):
        """The `seen` stored in the weights header (batch = batch * subdivisions)."""
        return iteration * batch if self.weights_seen_from_iterations else seen


PJREDDIE = Fork(
    name="pjreddie", display="pjreddie",
    bn_eps_inside_sqrt=0.0, bn_eps_outside_sqrt=1e-6,
    bn_rolling_momentum=.99, bn_connected_rolling_momentum=.99,
    bn_backward_eps_inside_sqrt=1e-5, bn_backward_eps_outside_sqrt=0.0,
    bn_biases_train=True,
    conv_backward_overwrites="size1",
    gelu_gradient_at_output=False, tanh_formula="exp2x",
    cpu_activate_missing=frozenset(),
    recurrent_weights_order="pjreddie", gru_tanh_key=True,
    yolo_truth_floats=5, yolo_max_boxes=90,
    weights_revision=0, weights_header=None, weights_seen_from_iterations=False,
    nms_from_last_layer=False, greedy_diou_beta=0.6,
)

ALEXEYAB = Fork(
    name="alexeyab", display="AlexeyAB",
    bn_eps_inside_sqrt=1e-5, bn_eps_outside_sqrt=0.0,
    bn_rolling_momentum=.9, bn_connected_rolling_momentum=.95,
    bn_backward_eps_inside_sqrt=0.0, bn_backward_eps_outside_sqrt=1e-5,
    bn_biases_train=False,
    conv_backward_overwrites="always",
    gelu_gradient_at_output=True, tanh_formula="logistic",
    cpu_activate_missing=frozenset(("relu6", "swish", "mish", "hard_mish", "normalize_channels",
                                    "normalize_channels_softmax",
                                    "normalize_channels_softmax_maxval")),
    recurrent_weights_order="alexeyab", gru_tanh_key=False,
    yolo_truth_floats=6, yolo_max_boxes=200,
    weights_revision=5, weights_header=(0, 2, 5), weights_seen_from_iterations=True,
    nms_from_last_layer=True, greedy_diou_beta=0.6,
)

FORKS = {f.name: f for f in (PJREDDIE, ALEXEYAB)}


def resolve_fork(fork):
    """A Fork from a name ("pjreddie", "alexeyab"), a Fork, or None (pjreddie)."""
    if fork is None:
        return PJREDDIE
    if isinstance(fork, Fork):
        return fork
    try:
        return FORKS[str(fork).lower()]
    except KeyError:
        raise ValueError(f"fork must be one of {sorted(FORKS)}, not {fork!r}") from None


# ---------------------------------------------------------------------------- the default rule

# Section types pjreddie's parser knows (string_to_layer_type); every other section minidarknet
# runs is AlexeyAB's.
PJREDDIE_SECTIONS = frozenset((
    "net", "network", "shortcut", "crop", "cost", "detection", "region", "yolo", "iseg",
    "local", "conv", "convolutional", "deconv", "deconvolutional", "activation", "logistic",
    "l2norm", "crnn", "gru", "lstm", "rnn", "conn", "connected", "max", "maxpool", "reorg",
    "avg", "avgpool", "dropout", "lrn", "normalization", "batchnorm", "soft", "softmax",
    "route", "upsample"))

# Keys only AlexeyAB's parser reads, per section type (a few that decide the maths or are in
# most AlexeyAB cfgs; a cfg using any of them was written for AlexeyAB's Darknet).
AB_ONLY_KEYS = {
    "net": ("mosaic", "letter_box", "cutmix", "mixup", "blur", "gaussian_noise",
            "track", "sequential_subdivisions", "adversarial_lr", "ema_alpha",
            "max_chart_loss", "dynamic_minibatch", "optimized_memory", "workspace_size_limit_MB",
            "label_smooth_eps", "resize_step", "contrastive", "unsupervised"),
    "yolo": ("scale_x_y", "iou_loss", "iou_normalizer", "obj_normalizer", "cls_normalizer",
             "nms_kind", "beta_nms", "new_coords", "max_delta", "iou_thresh",
             "label_smooth_eps", "focal_loss", "objectness_smooth", "counters_per_class",
             "resize", "track_history_size", "embedding_layer", "show_details"),
    "region": ("scale_x_y", "new_coords"),
    "convolutional": ("stride_x", "stride_y", "dilation", "antialiasing", "share_index",
                      "bin_output", "sway", "rotate", "stretch", "stretch_sway",
                      "assisted_excitation", "coordconv", "cbn", "train_only_bn",
                      "grad_centr", "stream", "wait_stream"),
    "route": ("groups", "group_id"),
    "maxpool": ("stride_x", "stride_y", "maxpool_depth", "out_channels", "antialiasing"),
    "shortcut": ("weights_type", "weights_normalization"),
    "upsample": (),
}
_ALIASES = {"conv": "convolutional", "max": "maxpool", "network": "net"}


def ab_only_features(sections):
    """['file:line: [section] key=...' ...] for what in the cfg only AlexeyAB's Darknet has:
    section types (those minidarknet registers that pjreddie's parser lacks), keys
    (AB_ONLY_KEYS) and activations (the ones activations.py marks fork="ab")."""
    from .activations import ACTIVATIONS
    from .layers import LAYER_TYPES
    ab_sections = {name for name in LAYER_TYPES if name not in PJREDDIE_SECTIONS}
    ab_sections |= {"conv_lstm", "history"}
    found = []
    for s in sections:
        kind = _ALIASES.get(s.type, s.type)
        if s.type in ab_sections:
            found.append(f"{s.where()}: {s.header}")
            continue
        for key in AB_ONLY_KEYS.get(kind, ()):
            if s.has(key):
                found.append(f"{s.where(key)}: {s.header} {key}={s.peek(key)}")
        if s.has("activation"):
            act = ACTIVATIONS.get(s.peek("activation"))
            if act is not None and act.fork == "ab":
                found.append(f"{s.where('activation')}: {s.header} activation={act.name}")
    return found


def choose_fork(fork, sections, weights_version=None):
    """(Fork, reason): the caller's choice, or the default rule for fork=None (module doc)."""
    if fork is not None:
        chosen = resolve_fork(fork)
        return chosen, f"chosen with fork={chosen.name}"
    if weights_version is not None and weights_version[2] >= ALEXEYAB.weights_revision:
        major, minor, revision = weights_version
        return ALEXEYAB, (f"the weights header is {major}.{minor}.{revision}: revision "
                          f"{revision} is written by AlexeyAB's Darknet")
    found = ab_only_features(sections)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        return ALEXEYAB, f"the cfg uses what only AlexeyAB's Darknet has: {found[0]}{more}"
    return PJREDDIE, "default: nothing in the cfg or the weights header is AlexeyAB-only"


def quirk_warned(net, key):
    """True once warn_quirk(net, key, ...) has warned."""
    return key in net.__dict__.get("_fork_quirks_warned", ())


def warn_quirk(net, key, message):
    """Warn once per network that the fork's CPU code is broken here and is reproduced."""
    done = net.__dict__.setdefault("_fork_quirks_warned", set())
    if key in done:
        return
    done.add(key)
    warnings.warn(f"{message} (fork={net.fork.name}, gradients=\"darknet\" reproduces it; "
                  f"gradients=\"exact\" computes it correctly)", ForkQuirkWarning, stacklevel=3)


__all__ = ["Fork", "PJREDDIE", "ALEXEYAB", "FORKS", "ForkQuirkWarning", "resolve_fork",
           "choose_fork", "ab_only_features", "warn_quirk", "quirk_warned", "AB_ONLY_KEYS",
           "PJREDDIE_SECTIONS"]
