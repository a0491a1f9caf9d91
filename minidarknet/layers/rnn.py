"""[rnn]: Darknet's simple recurrent layer, three [connected] sub-layers.

    s_t = (shortcut ? s_{t-1} : 0) + act(W_in x_t) + self_act(W_self s_{t-1})
    y_t = act(W_out s_t)

(each sub-layer adds its bias, or applies batch norm, before its activation).  State handling,
time steps and Darknet's backward quirks: see ThreeBlockRecurrent in recurrent.py.

Keys: output (1), activation (logistic), batch_normalize (0), shortcut (0); AlexeyAB adds
hidden (the state size) and logistic (1: the self layer uses logistic, 2: loggy, otherwise
`activation`).  pjreddie ignores `hidden` and sizes the state by `output`; AlexeyAB's default
is hidden=1.  Here hidden defaults to output, so pjreddie's cfgs (and AlexeyAB's, which set
hidden=output) build as in Darknet; a cfg with hidden != output builds as AlexeyAB's.

Weights file (both forks): input_layer, self_layer, output_layer, each in [connected] format.
"""
from ..activations import get_activation
from .recurrent import LOGISTIC, DenseBlock, ThreeBlockRecurrent, sequence_steps
from .registry import register


@register("rnn")
class RNN(ThreeBlockRecurrent):
    type = "rnn"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        outputs = s.int("output", 1)
        hidden = s.int("hidden", outputs)
        for key, value in (("output", outputs), ("hidden", hidden)):
            if value < 1:
                raise s.error(f"[rnn] {key}={value}: must be at least 1", key)
        if shape.inputs < 1:
            raise s.error(f"[rnn]: the layer before outputs {shape.inputs} values")
        activation = self.activation_from(s, "logistic")
        self.batch_normalize = s.int("batch_normalize", 0)
        self.logistic = s.int("logistic", 0)
        self.shortcut = s.int("shortcut", 0)
        self_activation = {1: LOGISTIC, 2: get_activation("loggy")}.get(self.logistic,
                                                                         activation)
        self.hidden = hidden
        self.input_row, self.hidden_row, self.output_row = (shape.inputs,), (hidden,), (outputs,)
        self.set_output_shape(outputs, 1, 1)
        bn, rng, exact = self.batch_normalize, net.rng, self.exact
        for name, n_in, n_out in (("input_layer", shape.inputs, hidden),
                                  ("self_layer", hidden, hidden),
                                  ("output_layer", hidden, outputs)):
            self.check_count(n_in * n_out, f"{name} weights {n_out} x {n_in}", "output",
                             bytes_per_value=12)
        self.input_layer = self.add_block(
            DenseBlock("input_layer", shape.inputs, hidden, activation, bn, rng, exact))
        self.self_layer = self.add_block(
            DenseBlock("self_layer", hidden, hidden, self_activation, bn, rng, exact))
        self.output_layer = self.add_block(
            DenseBlock("output_layer", hidden, outputs, activation, bn, rng, exact))
        self.steps = sequence_steps(self, net)
        self.allocate(shape.batch)

    def describe(self):
        return (f"hidden {self.hidden}",) + super().describe()[1:]
