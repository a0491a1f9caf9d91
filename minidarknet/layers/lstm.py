"""[lstm]: Darknet's long short-term memory layer, eight linear [connected] sub-layers.

u* act on the input x_t, w* on the previous output h_{t-1}:

    f = logistic(wf h + uf x)    i = logistic(wi h + ui x)
    g = tanh(wg h + ug x)        o = logistic(wo h + uo x)
    c_t = f * c_{t-1} + i * g    h_t = o * tanh(c_t)

Darknet never resets h or c: each forward starts from where the previous one ended
(reset_state() zeroes both).

Keys (both forks): output (1), batch_normalize (0); minidarknet's weights_order = pjreddie |
alexeyab (default: the network's fork, fork.recurrent_weights_order):
    pjreddie:  wi, wf, wo, wg, ui, uf, uo, ug       alexeyab: wf, wi, wg, wo, uf, ui, ug, uo
(each in [connected] format; a file from AlexeyAB's darknet needs weights_order=alexeyab, e.g.
overrides={"lstm.weights_order": "alexeyab"}).  AlexeyAB's peephole connections belong to
[conv_lstm], not to [lstm].

Backward, gradients="darknet": Darknet's backward_lstm_layer (pjreddie's CPU build never wires
it in and would crash; AlexeyAB's calls it), with its state quirks:
  * the step-0 gradients use c_0 and h_0 of the LAST backward step that set them (c_0 / h_0 of
    this sequence are the values of step 0 itself when steps > 1; zeros, or whatever an earlier
    call left, when steps == 1) instead of the state the forward started from;
  * the cell delta carried from step t+1 to step t starts, at the last step, from what the
    previous backward left (Darknet never clears dc_cpu);
  * afterwards the carried state is c and h of step 0 (the next forward starts from there).
gradients="exact" is backpropagation through time from the true initial state, dc = 0 at the
end, and leaves the carried state alone.
"""
import numpy as np

from .base import F32
from .recurrent import (DenseBlock, LINEAR, LOGISTIC, TANH, RecurrentLayer, sequence_steps,
                        weights_order)
from .registry import register

GATES = "figo"
ORDERS = {"pjreddie": ("wi", "wf", "wo", "wg", "ui", "uf", "uo", "ug"),
          "alexeyab": ("wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo")}


@register("lstm")
class LSTM(RecurrentLayer):
    type = "lstm"
    file_orders = ORDERS

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        n = self.read_output_size(s, shape)
        self.batch_normalize = s.int("batch_normalize", 0)
        self.weights_order = weights_order(s, self.fork)
        self.set_output_shape(n, 1, 1)
        self.check_count(4 * n * (shape.inputs + n), "sub-layer weights", "output",
                         bytes_per_value=12)
        bn, rng, exact = self.batch_normalize, net.rng, self.exact
        # Darknet's construction order (which draws the random initial weights).
        for gate in GATES:
            self.add_block(DenseBlock(f"u{gate}", shape.inputs, n, LINEAR, bn, rng, exact))
        for gate in GATES:
            self.add_block(DenseBlock(f"w{gate}", n, n, LINEAR, bn, rng, exact))
        self.steps = sequence_steps(self, net)
        self.allocate(shape.batch)

    def allocate(self, batch):
        super().allocate(batch)
        self.step_batch = self.split_batch(batch)
        self.allocate_blocks(None)
        per_step = (self.steps, self.step_batch, self.outputs)
        self.gates = {gate: np.zeros(per_step, F32) for gate in GATES}
        self.cell = np.zeros(per_step, F32)
        row = per_step[1:]
        # Carried between calls: Darknet's h_cpu, c_cpu (state) and, for its backward,
        # prev_state_cpu, prev_cell_cpu and dc_cpu.
        self.hidden_state, self.cell_state = np.zeros(row, F32), np.zeros(row, F32)
        self.initial_hidden, self.initial_cell = np.zeros(row, F32), np.zeros(row, F32)
        self.prev_hidden, self.prev_cell = np.zeros(row, F32), np.zeros(row, F32)
        self.cell_delta = np.zeros(row, F32)

    def reset_state(self):
        self.hidden_state.fill(0)
        self.cell_state.fill(0)

    def forward(self, net):
        b = self.blocks
        for block in b.values():
            block.begin(net.train)
        x = self.steps_view(net.input, (self.inputs,))
        out = self.steps_view(self.output, (self.outputs,))
        self.initial_hidden[...] = self.hidden_state
        self.initial_cell[...] = self.cell_state
        h, c = self.initial_hidden, self.initial_cell
        f, i, g, o = (self.gates[gate] for gate in GATES)
        for t in range(self.steps):
            for gate in GATES:
                b[f"w{gate}"].forward(t, h)
            for gate in GATES:
                b[f"u{gate}"].forward(t, x[t])
            for gate in GATES:
                value = self.gates[gate][t]
                np.add(b[f"w{gate}"].out[t], b[f"u{gate}"].out[t], out=value)
                (TANH if gate == "g" else LOGISTIC).forward(value, value)
            self.cell[t] = f[t] * c + i[t] * g[t]
            c = self.cell[t]
            out[t] = TANH.forward(c, np.empty_like(c)) * o[t]
            h = out[t]
        self.hidden_state[...] = h
        self.cell_state[...] = c

    def backward(self, net):
        b = self.blocks
        x = self.steps_view(net.input, (self.inputs,))
        prev = None if net.delta is None else self.steps_view(net.delta, (self.inputs,))
        out = self.steps_view(self.output, (self.outputs,))
        delta = self.steps_view(self.delta, (self.outputs,))
        for block in b.values():
            block.delta.fill(0)
        f, i, g, o = (self.gates[gate] for gate in GATES)
        one = F32(1)
        cell_delta = np.zeros_like(self.cell_delta) if self.exact else self.cell_delta.copy()
        for t in range(self.steps - 1, -1, -1):
            prev_h, prev_c = self._previous_state(t, out)
            tanh_c = TANH.forward(self.cell[t], np.empty_like(self.cell[t]))
            dh = delta[t]
            # The cell delta: through h = o*tanh(c), plus what step t+1 passed back.
            dc = dh * o[t] * (one - tanh_c * tanh_c) + cell_delta
            gate_deltas = {"o": (tanh_c * dh) * ((one - o[t]) * o[t]),
                           "g": (dc * i[t]) * (one - g[t] * g[t]),
                           "i": (dc * g[t]) * ((one - i[t]) * i[t]),
                           "f": (dc * prev_c) * ((one - f[t]) * f[t])}
            earlier = delta[t - 1] if t > 0 else None
            for gate in "ogif":          # Darknet's order (it matters for float sums only)
                b[f"w{gate}"].delta[t] = gate_deltas[gate]
                b[f"w{gate}"].backward(t, prev_h, earlier)
                b[f"u{gate}"].delta[t] = gate_deltas[gate]
                b[f"u{gate}"].backward(t, x[t], None if prev is None else prev[t])
            cell_delta = dc * f[t]
        if not self.exact:
            self.cell_delta[...] = cell_delta
            self.cell_state[...] = self.cell[0]
            self.hidden_state[...] = out[0]

    def _previous_state(self, t, out):
        """(h_{t-1}, c_{t-1}) as the backward of step t sees them (module docstring)."""
        if self.exact:
            if t == 0:
                return self.initial_hidden, self.initial_cell
            return out[t - 1], self.cell[t - 1]
        if t > 0:
            self.prev_hidden[...] = out[t - 1]
            self.prev_cell[...] = self.cell[t - 1]
        return self.prev_hidden, self.prev_cell
