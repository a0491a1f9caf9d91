"""The network: builds layers from cfg sections and runs Darknet's control flow.

forward:  net.input starts at the caller's batch; each layer reads it and writes its own
          output, which becomes net.input for the next layer (forward_network).
backward: from the last layer down, net.input / net.delta point at the previous layer's output
          and delta (for layer 0: the network input and `input_delta`) (backward_network).
update:   every layer applies its accumulated updates with B = batch * subdivisions
          (update_network); train_step is Darknet's train_network.
"""
import contextlib
import math

import numpy as np

from . import parallel
from .errors import ShapeError
from .fork import choose_fork, warn_quirk
from .layers import InShape, layer_class
from .netoptions import read_net_options

GRADIENT_MODES = ("darknet", "exact")


# numpy's ValueError for an array whose size does not even fit in a C ssize_t
_TOO_BIG = ("array is too big", "Maximum allowed size exceeded",
            "Maximum allowed dimension exceeded")


@contextlib.contextmanager
def _memory_errors(section, doing):
    """A MemoryError, or numpy's "array is too big" (sizes in the cfg too large for this
    machine), becomes a one-line CfgError naming the section."""
    try:
        yield
    except (MemoryError, ValueError) as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, ValueError) and not detail.startswith(_TOO_BIG):
            raise
        raise section.error(f"{section.header}: not enough memory to {doing} "
                            f"({detail[:160]})") from None


class Network:
    def __init__(self, sections, *, gradients="darknet", batch=None, width=None, height=None,
                 channels=None, seed=None, fork=None, weights_version=None):
        if gradients not in GRADIENT_MODES:
            raise ValueError(f"gradients must be one of {GRADIENT_MODES}, not {gradients!r}")
        self.gradients = gradients
        # Whose numbers (fork.py lists every difference); fork=None: the rule in fork.py, with
        # the header version of the weights about to be loaded when the caller knows it.
        self.fork, self.fork_reason = choose_fork(fork, sections, weights_version)
        self.sections = sections
        self.path = sections[0].path
        self.rng = np.random.default_rng(seed)
        options = read_net_options(sections[0], batch=batch, width=width, height=height,
                                   channels=channels)
        self.options = options
        for key, value in options.core.items():
            setattr(self, key, value)
        self.seen = 0
        self.iteration = 0      # updates done (AlexeyAB's cur_iteration; set by load_weights)
        self.weights_version = (0, 2, 0)
        self.layers = []
        shape = InShape(self.batch, self.c, self.h, self.w, self.inputs)
        for index, section in enumerate(sections[1:]):
            self.building_index = index
            with _memory_errors(section, "build this layer"):
                layer = layer_class(section)(section, shape, self)
            section.warn_unused()
            self.layers.append(layer)
            shape = InShape(self.batch, layer.out_c, layer.out_h, layer.out_w, layer.outputs)
        if not self.layers:
            raise sections[0].error("the cfg has a [net] section but no layers")
        costless = [l for l in self.layers if l.type != "cost"]
        if not costless:
            raise sections[0].error("the cfg has only [cost] layers")
        self.output_layer = costless[-1]
        # Broken CPU computations of the fork that this network reproduces: warned once each,
        # at the first pass that runs them.
        self._quirks = {}
        for layer in self.layers:
            for when, key, message in layer.fork_quirks:
                self._quirks.setdefault(when, {}).setdefault(key, message)
        last = self.layers[-1]
        self.truths = last.truths if last.truths else self.output_layer.outputs
        self.input = self.delta = self.truth = self.x = None
        self.input_delta = None
        self.wants_input_delta = True
        self.train = False
        self.cost = None
        self.objective = None
        self._deltas = False

    # ------------------------------------------------------------------ shapes
    @property
    def output(self):
        return self.output_layer.output

    def set_batch(self, batch):
        """Reallocate every layer's buffers for `batch` samples (Darknet's set_batch_network)."""
        if batch == self.batch and self.layers[0].output is not None:
            return
        self.batch = batch
        for layer in self.layers:
            layer.allocate(batch)
            if self._deltas:
                layer.allocate_delta()

    def _allocate_deltas(self):
        if not self._deltas:
            self._deltas = True
            for layer in self.layers:
                layer.allocate_delta()

    def _as_input(self, x):
        x = np.asarray(x, dtype=np.float32)
        per_sample = self.inputs
        image = (self.c, self.h, self.w) if self.c * self.h * self.w == self.inputs else None
        if x.ndim == 4 and image and x.shape[1:] != image:
            raise ShapeError(f"input shape {x.shape} does not match the network's (c, h, w) = "
                             f"{image} (minidarknet takes NCHW)")
        if x.ndim == 3 and image and x.shape == image:
            x = x[None]
        if x.size == 0 or x.size % per_sample:
            raise ShapeError(f"input has {x.size} values; the network takes {per_sample} "
                             f"per sample")
        rows = x.size // per_sample
        return np.ascontiguousarray(x.reshape((rows,) + (image or (per_sample,))))

    def _as_truth(self, truth, rows):
        truth = np.ascontiguousarray(truth, dtype=np.float32)
        if truth.size != rows * self.truths:
            raise ShapeError(f"truth has {truth.size} values for {rows} samples; the network "
                             f"expects {self.truths} per sample")
        return truth.reshape(rows, self.truths)

    # ------------------------------------------------------------------ running
    def forward(self, x, truth=None, train=False, *, input_delta=True):
        """Run every layer; returns the output of the last non-cost layer (a view of its buffer).

        With train=True, batch-norm uses batch statistics, dropout drops, deltas are zeroed and
        `input_delta` (the delta w.r.t. the input) is set up for backward."""
        x = self._as_input(x)
        self.set_batch(x.shape[0])
        self.truth = None if truth is None else self._as_truth(truth, x.shape[0])
        self.train = bool(train)
        # Loss layers write their deltas in forward whenever they see a truth (the caller's,
        # or a `truth=1` layer's output).
        if self.train or self._deltas or self.truth is not None or \
                any(layer.truth for layer in self.layers):
            self._allocate_deltas()
            for layer in self.layers:
                if layer.delta is not None:
                    layer.delta.fill(0)
        # Darknet's own training (train_step) leaves the input delta unset.
        self.wants_input_delta = input_delta
        self._warn_quirks("forward")
        self.input_delta = np.zeros_like(x) if self.train and input_delta else None
        self.x = self.input = x
        self.delta = None
        # Layers split their work over threads while BLAS runs single-threaded (parallel.py);
        # those that rely on BLAS's own threads get them back.
        with parallel.region():
            for index, layer in enumerate(self.layers):
                self.index = index
                threads = parallel.blas_restored() if layer.blas_threads else \
                    contextlib.nullcontext()
                with _memory_errors(layer.section, f"run layer {index} with batch {self.batch}"), \
                        threads:
                    layer.forward(self)
                self.input = layer.output
                if layer.truth:
                    self.truth = layer.output.reshape(self.batch, -1)
        self._collect_cost()
        return self.output

    def _collect_cost(self):
        owners = [l for l in self.layers if l.has_cost]
        if self.truth is None:
            self.cost = self.objective = None
            return
        # Darknet: the mean of cost[0] over the layers that own a cost (0/0 -> NaN).
        self.cost = sum(l.cost for l in owners) / len(owners) if owners else math.nan
        self.objective = sum(getattr(l, "objective", 0.0) or 0.0 for l in owners)

    def backward(self, delta=None):
        """Propagate the deltas from the last layer to the first.

        `delta`, if given, is added to the output layer's delta (the NEGATIVE gradient of
        whatever you are maximising-away, Darknet's convention).  Afterwards every layer's
        `.delta` and `*_updates` hold the accumulated values, and `input_delta` the delta
        with respect to the input (when forward ran with train=True, or when set up here)."""
        if self.x is None:
            raise RuntimeError("backward() needs a forward() first")
        self._allocate_deltas()
        if delta is not None:
            last = self.output_layer
            out = last.delta
            if out is None:
                raise last.section.error(f"{last.section.header}: layer {last.index} has no "
                                         f"delta (no backward in Darknet): it cannot take one")
            delta = np.asarray(delta, np.float32)
            if delta.size != out.size:
                raise ShapeError(f"delta has {delta.size} values; the output layer {last.index} "
                                 f"({last.type}) has {out.size} ({last.outputs} per sample x "
                                 f"batch {self.batch})")
            out += delta.reshape(out.shape)
        self._warn_quirks("backward")
        if self.input_delta is None and self.wants_input_delta:
            self.input_delta = np.zeros_like(self.x)
        for index in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[index]
            if layer.stopbackward:
                break
            if layer.onlyforward:
                continue
            if index == 0:
                self.input, self.delta = self.x, self.input_delta
            else:
                prev = self.layers[index - 1]
                self.input, self.delta = prev.output, prev.delta
            self.index = index
            with _memory_errors(layer.section, f"run layer {index} with batch {self.batch}"):
                layer.backward(self)

    def _warn_quirks(self, when):
        for key, message in self._quirks.pop(when, {}).items():
            warn_quirk(self, key, message)

    def update(self):
        """Apply one SGD step with Darknet's rule (momentum, decay, B = batch*subdivisions)."""
        rate = self.current_rate()
        batch = self.batch * self.subdivisions
        for layer in self.layers:
            layer.update(rate, self.momentum, self.decay, batch)
        self.iteration += 1

    def train_step(self, x, truth):
        """Darknet's train_network: x holds batch*subdivisions rows (any multiple of batch);
        each sub-batch runs forward and backward, updates happen every `subdivisions`
        sub-batches.  Returns the summed cost / (number of sub-batches * batch)."""
        x = np.asarray(x, np.float32)
        rows = x.shape[0] if x.ndim >= 2 else 1
        batch = self.batch
        if rows % batch:
            raise ShapeError(f"train_step got {rows} rows, not a multiple of the batch {batch}")
        truth = np.asarray(truth, np.float32).reshape(rows, -1)
        total = 0.0
        for start in range(0, rows, batch):
            self.seen += batch
            self.forward(x[start:start + batch], truth[start:start + batch], train=True,
                         input_delta=False)
            self.backward()
            total += self.cost
            if (self.seen // batch) % self.subdivisions == 0:
                self.update()
        return total / (rows // batch * batch)

    def reset_state(self):
        """Zero the state that recurrent layers carry from one forward call to the next
        (Darknet's reset_rnn_state), e.g. before feeding a new sequence."""
        for layer in self.layers:
            if hasattr(layer, "reset_state"):
                layer.reset_state()

    # ------------------------------------------------------------------ schedule
    def current_batch(self):
        return self.seen // (self.batch * self.subdivisions)

    def current_rate(self):
        """The learning rate Darknet's get_current_rate gives for the current `seen`."""
        return self.options.rate(self.current_batch(), self.rng)

    # ------------------------------------------------------------------ weights
    def load_weights(self, path, cutoff=None):
        from .weights import load_weights
        load_weights(self, path, cutoff=cutoff)

    def save_weights(self, path, cutoff=None):
        from .weights import save_weights
        save_weights(self, path, cutoff=cutoff)

    def detections(self, thresh=0.5, hier=0.5, nms=0.45, image_size=None, letterbox=True,
                   index=0):
        from .detect import network_detections
        return network_detections(self, thresh=thresh, hier=hier, nms=nms,
                                  image_size=image_size, letterbox=letterbox, index=index)

    def export_onnx(self, path, **options):
        """Write the network as an ONNX model (minidarknet.export.build_model's options:
        batch, dynamic_batch, opset, outputs, decode, image_size_input, nms, thresh); needs
        the `onnx` extra.  Returns the onnx ModelProto."""
        from .export import export_onnx
        return export_onnx(self, path, **options)

    # ------------------------------------------------------------------ description
    def parameter_count(self):
        return sum(layer.weight_count() for layer in self.layers)

    def __repr__(self):
        return (f"<Network {self.path}: {len(self.layers)} layers, input "
                f"{self.c}x{self.h}x{self.w}, batch {self.batch}>")

