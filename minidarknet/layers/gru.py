"""[gru]: Darknet's gated recurrent unit, six linear [connected] sub-layers.

u* act on the input x_t, w* on the state h_{t-1} (pjreddie's names; AlexeyAB calls them
input_z/r/h and state_z/r/h):

    z = logistic(uz x + wz h)        r = logistic(ur x + wr h)
    h~ = act(uh x + wh (r * h))      act = tanh with `tanh=1` (pjreddie), else logistic
    h_t = z * h_{t-1} + (1 - z) * h~

The state is never reset by Darknet: each forward (training or not) starts from the state the
previous one ended with (reset_state() zeroes it).

Keys: output (1), batch_normalize (0), tanh (0, pjreddie only; AlexeyAB always uses logistic),
and minidarknet's weights_order = pjreddie | alexeyab (default: the network's fork):
    pjreddie:  wz, wr, wh, uz, ur, uh        alexeyab: uz, ur, uh, wz, wr, wh
(each in [connected] format).  The forks' files are not interchangeable and a cfg does not
say which fork trained it, so a file from AlexeyAB's darknet needs fork="alexeyab" (chosen by
default for files with AlexeyAB's header revision) or weights_order=alexeyab (e.g.
overrides={"gru.weights_order": "alexeyab"}).

Backward: Darknet's CPU backward_gru_layer is EMPTY in both forks, so in gradients="darknet"
mode the layer learns nothing and passes no delta to the layers before it (a warning says so
on the first backward).  gradients="exact" runs backpropagation through time.
"""
import numpy as np

from ..errors import warn
from .base import F32
from .recurrent import (DenseBlock, LINEAR, LOGISTIC, TANH, RecurrentLayer, sequence_steps,
                        weights_order)
from .registry import register

ORDERS = {"pjreddie": ("wz", "wr", "wh", "uz", "ur", "uh"),
          "alexeyab": ("uz", "ur", "uh", "wz", "wr", "wh")}


@register("gru")
class GRU(RecurrentLayer):
    type = "gru"
    file_orders = ORDERS

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        n = self.read_output_size(s, shape)
        self.batch_normalize = s.int("batch_normalize", 0)
        # AlexeyAB's parser does not read `tanh` (its candidate is always logistic): the key
        # is then reported as unused, as AlexeyAB's Darknet does.
        self.tanh = s.int("tanh", 0) if self.fork.gru_tanh_key else 0
        self.candidate_activation = TANH if self.tanh else LOGISTIC
        self.weights_order = weights_order(s, self.fork)
        self.set_output_shape(n, 1, 1)
        self.check_count(3 * n * (shape.inputs + n), "sub-layer weights", "output",
                         bytes_per_value=12)
        bn, rng, exact = self.batch_normalize, net.rng, self.exact
        # Darknet's construction order (which draws the random initial weights).
        for gate in "zrh":
            self.add_block(DenseBlock(f"u{gate}", shape.inputs, n, LINEAR, bn, rng, exact))
            self.add_block(DenseBlock(f"w{gate}", n, n, LINEAR, bn, rng, exact))
        self.steps = sequence_steps(self, net)
        self._warned_backward = False
        self.allocate(shape.batch)

    def allocate(self, batch):
        super().allocate(batch)
        self.step_batch = self.split_batch(batch)
        self.allocate_blocks(None)
        per_step = (self.steps, self.step_batch, self.outputs)
        self.z, self.r, self.candidate, self.forgot = (np.zeros(per_step, F32)
                                                       for _ in range(4))
        self.state = np.zeros(per_step[1:], F32)
        self.initial_state = np.zeros_like(self.state)

    def reset_state(self):
        self.state.fill(0)

    def forward(self, net):
        b = self.blocks
        for block in b.values():
            block.begin(net.train)
        x = self.steps_view(net.input, (self.inputs,))
        out = self.steps_view(self.output, (self.outputs,))
        self.initial_state[...] = self.state
        h = self.initial_state
        one = F32(1)
        for t in range(self.steps):
            for gate in "zr":
                b[f"w{gate}"].forward(t, h)
            for gate in "zrh":
                b[f"u{gate}"].forward(t, x[t])
            z, r = self.z[t], self.r[t]
            np.add(b["uz"].out[t], b["wz"].out[t], out=z)
            np.add(b["ur"].out[t], b["wr"].out[t], out=r)
            LOGISTIC.forward(z, z)
            LOGISTIC.forward(r, r)
            np.multiply(h, r, out=self.forgot[t])
            b["wh"].forward(t, self.forgot[t])
            candidate = self.candidate[t]
            np.add(b["uh"].out[t], b["wh"].out[t], out=candidate)
            self.candidate_activation.forward(candidate, candidate)
            # Darknet's weighted_sum_cpu: out = z*h + (1 - z)*h~
            out[t] = z * h + (one - z) * candidate
            h = out[t]
        self.state[...] = h

    def backward(self, net):
        if not self.exact:
            if not self._warned_backward:
                self._warned_backward = True
                warn(f"{self.section.where()}: layer {self.index} [gru]: Darknet's CPU "
                     f"backward for GRU is empty (both forks), so with gradients='darknet' "
                     f"the layer learns nothing and passes no delta back; use "
                     f"gradients='exact' to train it")
            return
        b = self.blocks
        x = self.steps_view(net.input, (self.inputs,))
        prev = None if net.delta is None else self.steps_view(net.delta, (self.inputs,))
        out = self.steps_view(self.output, (self.outputs,))
        delta = self.steps_view(self.delta, (self.outputs,))
        for block in b.values():
            block.delta.fill(0)
        one = F32(1)
        for t in range(self.steps - 1, -1, -1):
            h_prev = out[t - 1] if t > 0 else self.initial_state
            z, r, candidate = self.z[t], self.r[t], self.candidate[t]
            dh = delta[t]
            d_candidate = dh * (one - z)
            self.candidate_activation.backprop(d_candidate, candidate, None, True)
            b["uh"].delta[t] = d_candidate
            b["wh"].delta[t] = d_candidate
            d_forgot = np.zeros_like(h_prev)
            b["wh"].backward(t, self.forgot[t], d_forgot)
            d_r = d_forgot * h_prev
            LOGISTIC.backprop(d_r, r, None, True)
            d_z = dh * (h_prev - candidate)
            LOGISTIC.backprop(d_z, z, None, True)
            for gate, d in (("r", d_r), ("z", d_z)):
                b[f"u{gate}"].delta[t] = d
                b[f"w{gate}"].delta[t] = d
            earlier = delta[t - 1] if t > 0 else None
            if earlier is not None:
                earlier += dh * z
                earlier += d_forgot * r
            b["wr"].backward(t, h_prev, earlier)
            b["wz"].backward(t, h_prev, earlier)
            for gate in "zrh":
                b[f"u{gate}"].backward(t, x[t], None if prev is None else prev[t])
