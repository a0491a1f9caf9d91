"""What Darknet's recurrent layers ([rnn], [gru], [lstm], [crnn]) share.

Time steps.  A recurrent layer runs `steps` = [net] time_steps steps; the network batch holds
steps x b rows, step t being rows [t*b, (t+1)*b) (b = batch / steps sequences side by side),
for the input and the output alike.  When the batch is not a multiple of time_steps (typically
`load(cfg, batch=1)` on a training cfg) the layer runs every row as a sequence of ONE step and
warns: that is what AlexeyAB's inference loader does (it forces batch=1 and time_steps=1);
pjreddie's set_batch_network would read past the input instead.  The steps are fixed when the
network is built; a later batch must be a multiple of them.  Set `net.time_steps` with an
override to choose otherwise.

Blocks.  Each layer owns sub-layers, [connected] ones for rnn/gru/lstm and [convolutional] ones
for crnn (`DenseBlock`, `ConvBlock`).  Darknet allocates each sub-layer for batch*steps rows and
walks its output / delta / batch-norm pointers one step at a time (increment_layer); a block
here keeps the same per-step arrays, shaped (steps, b, ...).  Quirks of that scheme kept in
gradients="darknet" mode:
  * batch norm in training uses each step's own batch statistics in forward, but backward
    reads the sub-layer's single `mean` / `variance`, which hold the LAST step's statistics;
  * the per-layer `learning_rate` multiplier is not applied: Darknet updates the sub-layers,
    whose multiplier is always 1 (a warning says so when the key is set);
  * a 1x1 convolutional block writes its input delta with GEMM beta=0 (replacing what was
    there), as the [convolutional] layer does (see convolutional.py).
gradients="exact" uses every step's own statistics and accumulates every delta.

Weights file: every block in the layer's file order, each in the format of its kind
([connected]: biases, weights, then scales / rolling mean / rolling variance with batch norm;
[convolutional]: biases, the three BN arrays, weights).  Sub-layers always load their BN arrays
(Darknet does not pass `dontloadscales` down to them).
"""
import numpy as np

from .. import ops
from ..activations import get_activation
from ..errors import ShapeError, warn
from .base import F32, Layer, WeightedLayer
from ..fork import PJREDDIE
from .batchnorm import bn_backward, bn_forward

LOGISTIC = get_activation("logistic")
TANH = get_activation("tanh")
LINEAR = get_activation("linear")

# minidarknet's key picking the weights-file order of [gru] / [lstm] (the forks differ).
WEIGHTS_ORDERS = ("pjreddie", "alexeyab")


def sequence_steps(layer, net):
    """The number of time steps the layer runs (see the module docstring)."""
    steps = net.time_steps
    if layer.batch % steps == 0:
        return steps
    # One message per network (the warnings filter shows a repeated message once).
    warn(f"{net.options.section.where('time_steps')}: the batch of {layer.batch} rows is not "
         f"a multiple of [net] time_steps={steps}; the recurrent layers run every row as a "
         f"sequence of one time step (time_steps=1, as AlexeyAB's inference loader does)")
    return 1


def weights_order(section, fork):
    """The [lstm]/[gru] sub-layer order in the weights file: the key, else the fork's."""
    order = section.str("weights_order", fork.recurrent_weights_order)
    if order not in WEIGHTS_ORDERS:
        raise section.error(f"{section.header} weights_order={order}: expected pjreddie or "
                            f"alexeyab (the forks store the sub-layers in different orders)",
                            "weights_order")
    return order


def _uniform(rng, shape, scale):
    """scale * U(-1, 1) drawn directly in the parameter dtype (large sub-layers: a float64
    draw would take most of the build time)."""
    values = rng.random(shape, dtype=F32)
    values *= F32(2 * scale)
    values -= F32(scale)
    return values


class _BNStep:
    """The batch-norm state of one block at one time step, in the attribute names that
    bn_forward / bn_backward use: the block's parameters and rolling statistics (shared by
    every step) and this step's batch statistics and saved values."""

    def __init__(self, block):
        for name in ("scales", "biases", "rolling_mean", "rolling_variance", "bias_updates",
                     "scale_updates", "exact", "fork"):
            setattr(self, name, getattr(block, name))
        self.mean = np.zeros_like(block.scales)
        self.variance = np.zeros_like(block.scales)
        self.x = self.x_norm = None

    def with_statistics_of(self, other):
        """A copy reading `other`'s batch mean / variance (Darknet mode: the last step's)."""
        view = object.__new__(_BNStep)
        view.__dict__.update(self.__dict__)
        view.mean, view.variance = other.mean, other.variance
        return view


class _Block:
    """What dense and convolutional blocks share: parameters, per-step buffers, update."""

    kind = "block"
    fork = PJREDDIE               # the owning layer's (add_block sets it)
    dont_update = 0
    learning_rate_scale = 1.0     # Darknet's sub-layers always have multiplier 1

    def __init__(self, name, n, activation, batch_normalize, exact):
        self.name, self.n = name, n
        self.activation = activation
        self.batch_normalize = batch_normalize
        self.exact = exact
        self.biases = np.zeros(n, F32)
        self.bias_updates = np.zeros(n, F32)
        if batch_normalize:
            self.scales = np.ones(n, F32)
            self.scale_updates = np.zeros(n, F32)
            self.rolling_mean = np.zeros(n, F32)
            self.rolling_variance = np.zeros(n, F32)
        else:
            self.scales = self.scale_updates = None
        self.out = self.delta = self.x_pre = None
        self.bn = []
        self.train = False

    def allocate(self, steps, batch, out=None):
        """Per-step buffers (steps, batch, *row_shape).  With `out` (the layer's own output)
        the block writes there and its delta is the layer's, bound by the layer's backward."""
        shape = (steps, batch) + self.row_shape
        self.out = np.zeros(shape, F32) if out is None else out.reshape(shape)
        self.delta = np.zeros(shape, F32) if out is None else None
        self.x_pre = (np.zeros(shape, F32) if self.activation.needs_input(self.exact)
                      else None)
        self.bn = [None] * steps

    def begin(self, train):
        """Start of a layer forward: remember the mode (batch-norm backward needs it)."""
        self.train = train

    def _normalize(self, t, out3):
        """Bias, or batch norm (the step's own state), on out3 (b, n, spatial) in place."""
        if self.batch_normalize:
            self.bn[t] = _BNStep(self)
            # The fork's rolling momentum of the layer type this block is in Darknet.
            momentum = (self.fork.bn_connected_rolling_momentum if self.kind == "connected"
                        else self.fork.bn_rolling_momentum)
            bn_forward(self.bn[t], out3, self.train, momentum=momentum)
        else:
            out3 += self.biases[None, :, None]

    def _activate(self, t, out):
        if self.x_pre is not None:
            self.x_pre[t] = out
        self.activation.forward(out, out)

    def _backprop(self, t, delta3):
        """delta[t] through the activation and the bias / batch norm; returns delta[t]."""
        x_pre = None if self.x_pre is None else self.x_pre[t]
        self.activation.backprop(self.delta[t], self.out[t], x_pre, self.exact)
        if self.batch_normalize:
            state = self.bn[t]
            if not self.exact:
                state = state.with_statistics_of(self.bn[-1])
            # As the layer type this block is in Darknet (AlexeyAB's conv BN biases: no update).
            biases = self.exact or self.fork.bn_biases_train or self.kind == "connected"
            bn_backward(state, delta3, self.train, biases=biases)
        else:
            self.bias_updates += delta3.sum(axis=(0, 2))

    def update(self, rate, momentum, decay, batch):
        # Darknet's update_connected_layer / update_convolutional_layer (the same rule).
        WeightedLayer.update(self, rate, momentum, decay, batch)

    def _bn_arrays(self):
        if not self.batch_normalize:
            return []
        return [("scales", self.scales), ("rolling_mean", self.rolling_mean),
                ("rolling_variance", self.rolling_variance)]

    def read(self, reader, transpose, layer):
        for name, array in self.parameters():
            values = reader.read(array.size, layer, f"{self.name}.{name}")
            if name == "weights" and transpose and self.kind == "connected":
                values = values.reshape(array.shape[::-1]).T
            array[...] = values.reshape(array.shape)

    def write(self, out, transpose):
        for name, array in self.parameters():
            if name == "weights" and transpose and self.kind == "connected":
                array = array.T
            out.append(np.ascontiguousarray(array, "<f4").tobytes())


class DenseBlock(_Block):
    """A [connected] sub-layer: y = act(x W^T + b) or act(BN(x W^T))."""

    kind = "connected"

    def __init__(self, name, inputs, outputs, activation, batch_normalize, rng, exact):
        super().__init__(name, outputs, activation, batch_normalize, exact)
        self.inputs, self.outputs = inputs, outputs
        self.row_shape = (outputs,)
        # Darknet's initialisation: sqrt(2/inputs) * U(-1, 1).
        self.weights = _uniform(rng, (outputs, inputs), np.sqrt(2.0 / inputs))
        self.weight_updates = np.zeros(self.weights.shape, F32)   # calloc: no page touched

    def forward(self, t, x):
        """Step t on x (b, inputs): writes out[t]."""
        out = self.out[t]
        np.matmul(x, self.weights.T, out=out)
        self._normalize(t, out[:, :, None])
        self._activate(t, out)

    def backward(self, t, x, prev):
        """Step t: delta[t] (set by the caller) back through the block; the weight updates
        accumulate and prev (b, inputs), when not None, receives delta . W."""
        delta = self.delta[t]
        self._backprop(t, delta[:, :, None])
        self.weight_updates += delta.T @ x
        if prev is not None:
            prev += delta @ self.weights

    def parameters(self):
        # [connected] format: the batch-norm arrays come after the weights.
        return [("biases", self.biases), ("weights", self.weights)] + self._bn_arrays()

    def flops(self):
        return 2.0 * self.inputs * self.outputs


class ConvBlock(_Block):
    """A [convolutional] sub-layer whose output has the size of its input (stride and
    padding chosen so), as the recurrence needs."""

    kind = "convolutional"

    def __init__(self, name, c, h, w, filters, geometry, activation, batch_normalize, rng,
                 exact):
        super().__init__(name, filters, activation, batch_normalize, exact)
        size, stride, padding, dilation, groups = geometry
        self.c, self.size, self.stride, self.groups = c, size, stride, groups
        self.out_h, self.out_w = h, w
        self.row_shape = (filters, h, w)
        self.op = ops.ConvOp(c, h, w, filters, size, stride, stride, padding * dilation,
                             dilation, groups, h, w)
        fan_in = size * size * (c // groups)
        self.weights = _uniform(rng, (filters, c // groups, size, size), np.sqrt(2.0 / fan_in))
        self.weight_updates = np.zeros(self.weights.shape, F32)   # calloc: no page touched

    def forward(self, t, x):
        """Step t on x (b, c, h, w): writes out[t]."""
        out = self.out[t]
        self.op.forward(x, self.weights, out)
        self._normalize(t, out.reshape(out.shape[0], self.n, -1))
        self._activate(t, out)

    def backward(self, t, x, prev):
        delta = self.delta[t]
        self._backprop(t, delta.reshape(delta.shape[0], self.n, -1))
        # Darknet (pjreddie CPU) writes a 1x1 convolution's input delta with beta=0.
        overwrite = self.size == 1 and not self.exact and prev is not None
        self.op.backward(x, delta, self.weights, self.weight_updates, prev, overwrite)

    def parameters(self):
        # [convolutional] format: the batch-norm arrays come between biases and weights.
        return [("biases", self.biases)] + self._bn_arrays() + [("weights", self.weights)]

    def flops(self):
        return (2.0 * self.n * self.size * self.size * (self.c / self.groups)
                * self.out_h * self.out_w)


class RecurrentLayer(Layer):
    """Base of the four recurrent layers: time steps, blocks, update, weights I/O, state."""
    blas_threads = True

    # {weights_order: block names in file order}, for the layers whose forks store their
    # sub-layers in different orders (gru, lstm); None: the order the blocks were added.
    file_orders = None

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.blocks = {}
        if self.learning_rate_scale != 1.0:
            warn(f"{section.where('learning_rate')}: {section.header} learning_rate="
                 f"{section.raw('learning_rate')}: Darknet updates a recurrent layer's "
                 f"sub-layers with the global rate (their multiplier is always 1), and so "
                 f"does minidarknet")
        if self.dontloadscales:
            warn(f"{section.where('dontloadscales')}: {section.header} dontloadscales: "
                 f"Darknet does not pass it to the sub-layers, which still load their "
                 f"batch-norm arrays (and so does minidarknet)")

    def read_output_size(self, section, shape):
        """`output=` (the state size) of a gated layer, checked, and the input checked."""
        n = section.int("output", 1)
        if n < 1:
            raise section.error(f"{section.header} output={n}: must be at least 1", "output")
        if shape.inputs < 1:
            raise section.error(f"{section.header}: the layer before outputs {shape.inputs} "
                                f"values")
        return n

    def add_block(self, block):
        self.blocks[block.name] = block
        block.fork = self.fork
        # The momentum buffers also as the layer's own `*_updates` attributes (e.g.
        # `uz_weight_updates`): the trainer's checkpoints and step snapshots collect those.
        for name in ("weight_updates", "bias_updates", "scale_updates"):
            if getattr(block, name) is not None:
                setattr(self, f"{block.name}_{name}", getattr(block, name))
        return block

    # ------------------------------------------------------------------ time steps
    def split_batch(self, batch):
        """Per-step batch b for a network batch of `batch` rows."""
        if batch % self.steps:
            raise ShapeError(f"layer {self.index} ({self.type}) runs {self.steps} time steps: "
                             f"a batch of {batch} rows is not a multiple of them")
        return batch // self.steps

    def steps_view(self, array, row_shape):
        """A (batch, ...) array viewed as (steps, b, *row_shape)."""
        return array.reshape((self.steps, self.step_batch) + tuple(row_shape))

    def allocate_blocks(self, own_output_block):
        for block in self.blocks.values():
            out = self.output if block is own_output_block else None
            block.allocate(self.steps, self.step_batch, out)

    # ------------------------------------------------------------------ training
    def update(self, rate, momentum, decay, batch):
        if self.dont_update:
            return
        for block in self.blocks.values():
            block.update(rate, momentum, decay, batch)

    # ------------------------------------------------------------------ weights file
    def file_blocks(self):
        """The blocks in the order of the weights file."""
        if self.file_orders:
            return [self.blocks[name] for name in self.file_orders[self.weights_order]]
        return list(self.blocks.values())

    def parameters(self):
        return [(f"{b.name}.{name}", array) for b in self.file_blocks()
                for name, array in b.parameters()]

    def read_weights(self, reader, transpose):
        for block in self.file_blocks():
            block.read(reader, transpose, self)

    def write_weights(self, out, transpose):
        for block in self.file_blocks():
            block.write(out, transpose)

    # ------------------------------------------------------------------ description
    def flops(self):
        """Per row (one time step of one sequence), the sum over the sub-layers."""
        return sum(b.flops() for b in self.blocks.values())

    def describe(self):
        # Darknet prints "RNN Layer: %d inputs, %d outputs" (GRU, LSTM likewise).
        return "", f"{self.steps} steps", f"{self.inputs}", f"{self.outputs}"


class ThreeBlockRecurrent(RecurrentLayer):
    """[rnn] and [crnn]: blocks input_layer (x -> hidden), self_layer (hidden -> hidden) and
    output_layer (hidden -> output), each with its own activation:

        s_t = (shortcut ? s_{t-1} : 0) + input_layer(x_t) + self_layer(s_{t-1})
        y_t = output_layer(s_t)

    State (Darknet's l.state): training resets s_0 to zero at every forward and leaves it zero
    afterwards; inference starts from the state the previous inference forward ended with
    (reset_state() zeroes it).  s_0 .. s_steps of the last forward are kept in `states`.

    Darknet's backward (gradients="darknet"), reproduced:
      * the output layer's weight gradient uses input_layer(x_t) + self_layer(s_{t-1}), the
        state recomputed WITHOUT the shortcut term;
      * the input layer's delta is a copy of the self layer's delta taken AFTER the self
        layer's backward, i.e. already multiplied by the self layer's activation gradient
        (and batch-norm backward); with shortcut the same post-gradient delta is added to the
        previous step.
    gradients="exact" uses the state s_t and the delta w.r.t. s_t in both places."""

    hidden_row = ()       # (hidden,) or (hidden_filters, h, w), set by the subclass
    input_row = ()
    output_row = ()

    def allocate(self, batch):
        super().allocate(batch)
        self.step_batch = self.split_batch(batch)
        self.allocate_blocks(self.output_layer)
        shape = (self.steps + 1, self.step_batch) + self.hidden_row
        self.check_count(int(np.prod(shape)), f"state {shape}")
        self.states = np.zeros(shape, F32)
        self.state = np.zeros(shape[1:], F32)

    def reset_state(self):
        """Zero the state carried from one inference forward to the next."""
        self.state.fill(0)

    def forward(self, net):
        x = self.steps_view(net.input, self.input_row)
        train = net.train
        for block in self.blocks.values():
            block.begin(train)
        states = self.states
        states[0] = 0 if train else self.state
        source, recur, sink = self.input_layer, self.self_layer, self.output_layer
        for t in range(self.steps):
            source.forward(t, x[t])
            recur.forward(t, states[t])
            new = states[t + 1]
            if self.shortcut:
                new[...] = states[t]
            else:
                new.fill(0)
            new += source.out[t]
            new += recur.out[t]
            sink.forward(t, new)
        if train:
            self.state.fill(0)
        else:
            self.state[...] = states[self.steps]

    def backward(self, net):
        x = self.steps_view(net.input, self.input_row)
        prev = None if net.delta is None else self.steps_view(net.delta, self.input_row)
        source, recur, sink = self.input_layer, self.self_layer, self.output_layer
        sink.delta = self.steps_view(self.delta, self.output_row)
        source.delta.fill(0)
        recur.delta.fill(0)
        states = self.states
        for t in range(self.steps - 1, -1, -1):
            state = states[t + 1] if self.exact else source.out[t] + recur.out[t]
            sink.backward(t, state, recur.delta[t])
            earlier = recur.delta[t - 1] if t > 0 else None
            if self.exact:
                source.delta[t] = recur.delta[t]
                if self.shortcut and earlier is not None:
                    earlier += recur.delta[t]
                recur.backward(t, states[t], earlier)
            else:
                recur.backward(t, states[t], earlier)
                source.delta[t] = recur.delta[t]
                if self.shortcut and earlier is not None:
                    earlier += recur.delta[t]
            source.backward(t, x[t], None if prev is None else prev[t])
