"""The [net] section: input size, batch, training hyper-parameters and the lr schedule.

Darknet never checks [net] for unknown keys; we warn about unknown ones, and about known
AlexeyAB options that minidarknet does not implement (so nothing is silently ignored).
"""
import math

from .errors import warn
from .layers.base import MAX_ELEMENTS

# A sanity limit on the input's width and height (JPEG's own limit is 65535).
MAX_SIDE = 65536

POLICIES = ("constant", "step", "exp", "poly", "steps", "sigmoid", "sig", "random", "sgdr")

# Keys read here or by the training code (augmentation, multi-scale).
USED_LATER = ("angle", "aspect", "saturation", "exposure", "hue", "max_crop", "min_crop",
              "max_ratio", "min_ratio", "center", "random", "flip", "letter_box", "jitter",
              "notruth", "clip", "track", "augment_speed", "sequential_subdivisions")

# [net] keys (mostly AlexeyAB training options) that minidarknet does not reproduce.
AB_NOT_IMPLEMENTED = (
    "try_fix_nan", "weights_reject_freq", "equidistant_point", "badlabels_rejection_percentage",
    "num_sigmas_reject_badlabels", "ema_alpha", "use_cuda_graph", "loss_scale",
    "dynamic_minibatch", "optimized_memory", "workspace_size_limit_MB", "blur",
    "gaussian_noise", "mixup", "cutmix", "mosaic", "mosaic_bound", "contrastive",
    "contrastive_jit_flip", "contrastive_color", "unsupervised", "label_smooth_eps",
    "resize_step", "attention", "adversarial_lr", "max_chart_loss", "seq_scales",
    "show_receptive_field", "adam", "B1", "B2", "eps", "cudnn_half", "time_steps_per_batch")

# Adam's keys: AlexeyAB's adam=1 only allocates its buffers on the CPU, whose update stays SGD
# with momentum (fork.py: adam_on_cpu is False for both forks; golden-ab ab_adam_train).
GPU_ONLY_UPDATE = ("adam", "B1", "B2", "eps")


class NetOptions:
    def __init__(self, section):
        self.section = section
        self.core = {}


def read_net_options(s, batch=None, width=None, height=None, channels=None):
    o = NetOptions(s)
    subdivisions = s.int("subdivisions", 1)
    time_steps = s.int("time_steps", 1)
    cfg_batch = s.int("batch", 1)
    if subdivisions < 1 or time_steps < 1 or cfg_batch < 1:
        raise s.error("[net] batch, subdivisions and time_steps must be at least 1")
    sub_batch = cfg_batch // subdivisions * time_steps
    if sub_batch < 1:
        warn(f"{s.where('subdivisions')}: subdivisions={subdivisions} is larger than "
             f"batch={cfg_batch}; using a mini-batch of 1 (as AlexeyAB does)")
        sub_batch = 1
    if batch is not None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        sub_batch = batch
    h, w, c = s.int("height", 0), s.int("width", 0), s.int("channels", 0)
    h = h if height is None else height
    w = w if width is None else width
    c = c if channels is None else channels
    inputs = s.int("inputs", h * w * c)
    if inputs != h * w * c and h * w * c:
        raise s.error(f"[net] inputs={inputs} does not equal width*height*channels={h * w * c}",
                      "inputs")
    if inputs <= 0 or min(h, w, c) < 0:
        raise s.error("[net] needs width, height and channels (or inputs)")
    for key, side in (("width", w), ("height", h)):
        if side > MAX_SIDE:
            raise s.error(f"[net] {key}={side}: more than {MAX_SIDE} pixels (is it a typo?)", key)
    if inputs * sub_batch > MAX_ELEMENTS:
        raise s.error(f"[net] input {w} x {h} x {c} x batch {sub_batch} = {inputs * sub_batch} "
                      f"values is more than Darknet can index ({MAX_ELEMENTS})")
    o.core.update(batch=sub_batch, subdivisions=subdivisions, time_steps=time_steps,
                  h=h, w=w, c=c, inputs=inputs,
                  learning_rate=s.float("learning_rate", 0.001),
                  momentum=s.float("momentum", 0.9), decay=s.float("decay", 0.0001))
    o.learning_rate = o.core["learning_rate"]
    _read_policy(o, s)
    o.augment = {k: s.raw(k) for k in USED_LATER if s.has(k)}
    for option in s.options:
        if option.used:
            continue
        if option.key in GPU_ONLY_UPDATE:
            warn(f"{s.path}:{option.line}: [net] {option.key}={option.value}: Adam runs only "
                 f"in Darknet's GPU build; the CPU update (SGD with momentum, as minidarknet "
                 f"runs it) ignores it")
        elif option.key in AB_NOT_IMPLEMENTED:
            warn(f"{s.path}:{option.line}: [net] {option.key}={option.value} is not "
                 f"implemented by minidarknet and is ignored")
        else:
            warn(f"{s.path}:{option.line}: unused key '{option.key}={option.value}' in [net]")
        option.used = True
    return o


def _read_policy(o, s):
    policy = s.str("policy", "constant")
    if policy not in POLICIES:
        raise s.error(f"[net] policy={policy}: unknown learning-rate policy (expected one of "
                      f"{', '.join(POLICIES)})", "policy")
    o.policy = "sigmoid" if policy == "sig" else policy
    o.burn_in = s.int("burn_in", 0)
    o.power = s.float("power", 4.0)
    o.max_batches = s.int("max_batches", 0)
    if o.policy == "step":
        o.step = s.int("step", 1)
        o.scale = s.float("scale", 1.0)
        if o.step < 1:
            raise s.error(f"[net] step={o.step}: must be at least 1", "step")
    elif o.policy == "steps":
        o.steps = s.ints("steps")
        o.scales = s.floats("scales")
        if o.steps is None or o.scales is None:
            raise s.error("[net] policy=steps needs steps= and scales=", "policy")
        if len(o.scales) < len(o.steps):
            raise s.error(f"[net] {len(o.steps)} steps but only {len(o.scales)} scales",
                          "scales")
    elif o.policy == "exp":
        o.gamma = s.float("gamma", 1.0)
    elif o.policy == "sigmoid":
        o.gamma = s.float("gamma", 1.0)
        o.step = s.int("step", 1)
    elif o.policy == "poly" and o.max_batches <= 0:
        raise s.error("[net] policy=poly needs max_batches > 0", "policy")
    elif o.policy == "sgdr":
        o.learning_rate_min = s.float("learning_rate_min", 0.00001)
        o.sgdr_cycle = s.int("sgdr_cycle", o.max_batches)
        o.sgdr_mult = s.int("sgdr_mult", 2)
        if o.sgdr_cycle < 1:
            raise s.error("[net] policy=sgdr needs sgdr_cycle or max_batches > 0", "policy")
    o.rate = lambda batch_num, rng: _rate(o, batch_num, rng)


def _rate(o, n, rng):
    """Darknet's get_current_rate for batch number n (float32 result)."""
    import numpy as np
    lr = o.learning_rate
    if n < o.burn_in:
        return float(np.float32(lr * (np.float32(n) / np.float32(o.burn_in)) ** o.power))
    if o.policy == "constant":
        rate = lr
    elif o.policy == "step":
        rate = lr * o.scale ** (n // o.step)
    elif o.policy == "steps":
        rate = lr
        for step, scale in zip(o.steps, o.scales):
            if step > n:
                break
            rate *= scale
    elif o.policy == "exp":
        rate = lr * o.gamma ** n
    elif o.policy == "poly":
        rate = lr * max(0.0, 1 - float(np.float32(n) / np.float32(o.max_batches))) ** o.power
    elif o.policy == "random":
        rate = lr * rng.random() ** o.power
    elif o.policy == "sigmoid":
        rate = lr * (1. / (1. + math.exp(min(700.0, o.gamma * (n - o.step)))))
    else:  # sgdr (AlexeyAB): cosine annealing with cycles growing by sgdr_mult
        start, cycle = 0, o.sgdr_cycle
        while start + cycle < n:
            start += cycle
            cycle *= o.sgdr_mult
        rate = o.learning_rate_min + 0.5 * (lr - o.learning_rate_min) * \
            (1. + math.cos((n - start) * 3.14159265 / cycle))
    return float(np.float32(rate))
