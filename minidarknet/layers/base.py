"""What every layer shares: shapes, buffers, the generic cfg keys, Darknet's SGD update.

A layer is built from its cfg section and the shape of what comes in; it owns its buffers
(allocated once per batch size, written in place so that aliases such as dropout's stay valid)
and runs with Darknet's control flow: `forward(net)` reads `net.input`, `backward(net)` adds
into `net.delta` (the previous layer's delta, or None for the first layer), `update(...)`
applies the accumulated `*_updates`.
"""
import os
from collections import namedtuple

import numpy as np

from ..activations import get_activation
from ..errors import ShapeError

# The shape handed from one layer to the next (Darknet's size_params).
InShape = namedtuple("InShape", "batch c h w inputs")

F32 = np.float32

# The largest buffer or parameter array a layer may have: Darknet indexes its arrays with C
# ints, so anything larger overflows there.  An array also may not take more than half of the
# machine's memory (an absurd size in a cfg should be an error, not a swap storm or a kill).
MAX_ELEMENTS = 2**31 - 1


def physical_memory():
    """Bytes of RAM on this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def uniform_weights(rng, shape, scale):
    """Darknet's random initialisation scale * rand_uniform(-1, 1), drawn directly in float32:
    a float64 draw takes three times the memory and several times as long on a large network,
    and the values only matter until a weights file is loaded."""
    weights = rng.random(shape, dtype=F32)
    weights *= F32(2 * scale)
    weights -= F32(scale)
    return weights


class Layer:
    type = "layer"          # Darknet's name for the type (shown by `minidarknet info`)
    has_cost = False        # owns a cost (counted in the network cost mean)
    needs_image = False     # Darknet: "Layer before X layer must output image."
    truths = None           # truth size per sample for loss heads that define their own
    # True for layers whose forward relies on BLAS's own threads for large products: the
    # network then restores them for this layer (parallel.py); the others split their work
    # over parallel.workers() threads themselves, or do no BLAS work at all.
    blas_threads = False
    # Activations this layer type computes itself in AlexeyAB's CPU code (the others go
    # through its generic activate(), which lacks some: fork.cpu_activate_missing).
    special_activations = ()

    def __init__(self, section, shape, net):
        self.section = section
        self.index = net.building_index
        self.batch = shape.batch
        self.in_c, self.in_h, self.in_w, self.inputs = shape.c, shape.h, shape.w, shape.inputs
        self.exact = net.gradients == "exact"
        self.fork = net.fork
        # (when, key, message): where this layer reproduces a broken CPU computation of its
        # fork; the network warns once per key, at the first forward/backward ("forward",
        # "backward").
        self.fork_quirks = []
        if self.needs_image and not (shape.c and shape.h and shape.w):
            raise section.error(f"{section.header}: the layer before must output an image "
                                f"(it outputs {shape.inputs} values with no c x h x w shape)")
        if self.needs_image and shape.c * shape.h * shape.w != shape.inputs:
            raise section.error(f"{section.header}: the layer before must output an image "
                                f"(its {shape.inputs} values are not {shape.c} x {shape.h} x "
                                f"{shape.w})")
        self._read_generic_keys(section)
        self.output = None
        self.delta = None
        self.cost = None

    # ------------------------------------------------------------------ cfg
    def _read_generic_keys(self, s):
        # Darknet reads these for every layer (quietly); both forks' sets are accepted.
        self.stopbackward = s.int("stopbackward", 0)
        self.onlyforward = s.int("onlyforward", 0)
        self.dontload = s.int("dontload", 0)
        self.dontsave = s.int("dontsave", 0)
        self.dontloadscales = s.int("dontloadscales", 0)
        self.numload = s.int("numload", 0)
        self.learning_rate_scale = s.float("learning_rate", 1.0)
        self.dont_update = s.int("dont_update", 0)
        self.truth = s.int("truth", 0)
        # `smooth` (label smoothing) and `clip` only act on Darknet's GPU path.
        s.float("smooth", 0.0)
        s.float("clip", 0.0)

    def activation_from(self, section, default):
        name = section.str("activation", default)
        act = get_activation(name)
        if act is None:
            raise section.error(f"{section.header}: unknown activation '{name}'", "activation")
        return self.fork_activation(act)

    def fork_activation(self, act):
        """`act` as this layer's fork computes it on the CPU (gradients="darknet"): a name the
        fork's generic activate() lacks gives 0; tanh/gelu formulas per fork.  Exact mode
        computes every activation properly."""
        fork = self.fork
        if (not self.exact and act.name in fork.cpu_activate_missing
                and act.name not in self.special_activations):
            self.fork_quirks.append((
                "forward", f"activation:{act.name}",
                f"{self.section.where('activation')}: {self.section.header} "
                f"activation={act.name}: {fork.display}'s CPU activate() has no {act.name}, the "
                f"layer outputs 0 (and passes no gradient)"))
            return act.zeroed()
        if not self.exact and act.name == "gelu" and fork.gelu_gradient_at_output:
            self.fork_quirks.append((
                "backward", "gelu_gradient",
                f"{self.section.where('activation')}: {self.section.header} activation=gelu: "
                f"{fork.display}'s CPU gelu gradient is evaluated at the output, not the input"))
        return act.for_fork(fork)

    # ------------------------------------------------------------------ shapes and buffers
    def set_output_shape(self, c, h, w, outputs=None):
        self.out_c, self.out_h, self.out_w = c, h, w
        self.outputs = c * h * w if outputs is None else outputs
        self.check_count(self.outputs * max(self.batch, 1),
                         f"output {w} x {h} x {c} x batch {self.batch}")

    def check_count(self, count, what, key=None, bytes_per_value=4):
        """Refuse a buffer or parameter array of `count` values before allocating it.
        bytes_per_value: what building it takes at its peak (e.g. 12 for a float64 random
        draw turned into float32)."""
        if count > MAX_ELEMENTS:
            raise self.section.error(
                f"{self.section.header}: {what} = {count} values is more than Darknet can "
                f"index ({MAX_ELEMENTS}); check the sizes in the cfg", key)
        memory = physical_memory()
        if memory and count * bytes_per_value > memory // 2:
            raise self.section.error(
                f"{self.section.header}: {what} = {count} values needs "
                f"{count * bytes_per_value / 2**30:.1f} GiB, more than half of this machine's "
                f"{memory / 2**30:.1f} GiB; check the sizes in the cfg", key)

    @property
    def buffer_shape(self):
        """(c, h, w) of the output buffer; (outputs, 1, 1) where Darknet's dims are 0 or
        do not describe the buffer (softmax, cost, route of unequal sizes)."""
        if self.out_c * self.out_h * self.out_w == self.outputs and self.outputs:
            return (self.out_c, self.out_h, self.out_w)
        return (self.outputs, 1, 1)

    @property
    def in_shape(self):
        if self.in_c * self.in_h * self.in_w == self.inputs and self.inputs:
            return (self.in_c, self.in_h, self.in_w)
        return (self.inputs, 1, 1)

    def allocate(self, batch):
        """(Re)allocate the per-batch buffers; called at build time and when the batch changes."""
        self.batch = batch
        self.output = np.zeros((batch,) + self.buffer_shape, F32)
        if self.delta is not None:
            self.delta = np.zeros_like(self.output)

    def allocate_delta(self):
        if self.delta is None or self.delta.shape != self.output.shape:
            self.delta = np.zeros_like(self.output)

    def input_of(self, net):
        """net.input viewed with this layer's input shape (batch, c, h, w)."""
        return net.input.reshape((self.batch,) + self.in_shape)

    def truth_for_loss(self, net, shape):
        """net.truth viewed with `shape` for a loss this layer computes; a truth of another size
        (a loss layer that is not last: Darknet would read past the truth) is a ShapeError."""
        if net.truth.size != int(np.prod(shape)):
            raise ShapeError(
                f"layer {self.index} ({self.type}) computes a loss against the truth, which has "
                f"{net.truth.size // self.batch} values per sample, but the layer has "
                f"{self.outputs}; a loss layer must match the network's truth")
        return net.truth.reshape(shape)

    @staticmethod
    def prev_delta(net, shape):
        """net.delta viewed with `shape`, or None when there is no previous delta."""
        return None if net.delta is None else net.delta.reshape(shape)

    # ------------------------------------------------------------------ running
    def forward(self, net):
        raise NotImplementedError

    def backward(self, net):
        pass

    def update(self, rate, momentum, decay, batch):
        pass

    # ------------------------------------------------------------------ parameters
    def parameters(self):
        """[(name, array)] in the order of the weights file; arrays are updated in place."""
        return []

    def weight_count(self):
        return sum(a.size for _, a in self.parameters())

    def read_weights(self, reader, transpose):
        for name, array in self.parameters():
            array[...] = reader.read(array.size, self, name).reshape(array.shape)

    def write_weights(self, out, transpose):
        for _, array in self.parameters():
            out.append(np.ascontiguousarray(array, "<f4").tobytes())

    # ------------------------------------------------------------------ description
    def flops(self):
        return 0.0

    def describe(self):
        """(filters, size, input, output) strings for the `info` table."""
        return "", "", _shape_str(self.in_c, self.in_h, self.in_w, self.inputs), \
            _shape_str(self.out_c, self.out_h, self.out_w, self.outputs)

    def __repr__(self):
        return f"<{type(self).__name__} {self.index} {self.type} -> {self.buffer_shape}>"


def _shape_str(c, h, w, n):
    return f"{w} x {h} x {c}" if c * h * w == n and n else f"{n}"


class InPlaceLayer(Layer):
    """A layer whose output and delta ARE the previous layer's buffers (Darknet's [dropout],
    AlexeyAB's [empty]); as the first layer it owns buffers and copies the network input."""

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.set_output_shape(shape.c, shape.h, shape.w, shape.inputs)
        self.prev = net.layers[-1] if net.layers else None

    def allocate(self, batch):
        self.batch = batch
        if self.prev is None:
            super().allocate(batch)
        else:
            self.output = self.prev.output
            self.delta = self.prev.delta

    def allocate_delta(self):
        if self.prev is None:
            super().allocate_delta()
        else:
            self.delta = self.prev.delta

    def copy_input(self, net):
        if self.prev is None:
            self.output[...] = net.input.reshape(self.output.shape)


class WeightedLayer(Layer):
    """Layers with biases/weights (and optionally batch-norm scales) and Darknet's SGD update."""

    batch_normalize = 0
    scales = None

    def init_parameters(self, weights, n):
        """Start from Darknet's initial values: the given random weights, zero biases, empty
        update accumulators, and the batch-norm arrays when batch_normalize is set."""
        from .batchnorm import init_bn
        self.weights = weights
        self.weight_updates = np.zeros(weights.shape, F32)
        self.biases = np.zeros(n, F32)
        self.bias_updates = np.zeros(n, F32)
        if self.batch_normalize:
            init_bn(self, n)
        else:
            self.scale_updates = None

    def update(self, rate, momentum, decay, batch):
        if self.dont_update:
            return
        lr = np.float32(rate * self.learning_rate_scale / batch)
        self.biases += lr * self.bias_updates
        self.bias_updates *= np.float32(momentum)
        if self.scales is not None and self.scale_updates is not None:
            self.scales += lr * self.scale_updates
            self.scale_updates *= np.float32(momentum)
        self.weight_updates -= np.float32(decay * batch) * self.weights
        self.weights += lr * self.weight_updates
        self.weight_updates *= np.float32(momentum)
