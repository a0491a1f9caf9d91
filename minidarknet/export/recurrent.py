"""[rnn], [crnn], [gru] and [lstm] unrolled over their time steps.

minidarknet's inference carries a recurrent layer's state from one forward call to the next
(Darknet's l.state); the graph makes it explicit: one more input per state, named
`layer_<i>_<type>_<attribute>` (`state`, or `hidden_state` and `cell_state` for [lstm]) of
shape (batch / time_steps, ...), to be fed with zeros for a new sequence (reset_state) and
with the matching output `..._out` of the previous call otherwise.  The batch holds
time_steps x b rows, step t being rows [t*b, (t+1)*b), as in minidarknet.
"""
import numpy as np

from ..layers import crnn, gru, lstm, rnn
from .activations import activate
from .folding import batchnorm_affine
from .registry import converts

F32 = np.float32


def _state_input(g, layer, attribute, row):
    """The graph input holding the layer's carried state, and the name of its output."""
    name = f"layer_{layer.index}_{layer.type}_{attribute}"
    batch = g.state_batch(layer.steps)
    g.extra_inputs.append(g.value_info(name, (batch,) + tuple(row)))
    return name


def _state_output(g, layer, attribute, tensor, row):
    name = f"layer_{layer.index}_{layer.type}_{attribute}_out"
    g.nodes.append(_identity(tensor, name))
    g.extra_outputs.append(g.value_info(name, (g.state_batch(layer.steps),) + tuple(row)))


def _identity(tensor, name):
    from onnx import helper
    return helper.make_node("Identity", [tensor], [name], name=name)


def _steps(g, layer, x, row):
    """[x_t (b, *row)] for t < steps from x (steps*b, ...)."""
    rows = g.op("Reshape", [x, g.ints([layer.steps, -1] + list(row))], "steps")
    return [g.op("Gather", [rows, g.ints(t, "step")], f"step{t}", axis=0)
            for t in range(layer.steps)]


def _dense(g, block, x):
    scale, shift = batchnorm_affine(block)
    weights = block.weights if scale is None else block.weights * scale[:, None]
    y = g.op("Gemm", [x, g.const(weights.astype(F32), f"{block.name}_weights"),
                      g.const(shift, f"{block.name}_biases")], block.name, transB=1)
    return activate(g, block.activation, y)


def _conv_block(layer):
    def run(g, block, x):
        scale, shift = batchnorm_affine(block)
        weights = block.weights if scale is None else \
            block.weights * scale[:, None, None, None]
        pad = layer.padding * layer.dilation
        y = g.op("Conv", [x, g.const(weights.astype(F32), f"{block.name}_weights"),
                          g.const(shift, f"{block.name}_biases")], block.name,
                 kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2, pads=[pad] * 4,
                 dilations=[layer.dilation] * 2, group=layer.groups)
        return activate(g, block.activation, y)
    return run


@converts(rnn.RNN, crnn.CRNN)
def convert_three_block_recurrent(g, layer, x, sources):
    """s_t+1 = (shortcut ? s_t : 0) + input_layer(x_t) + self_layer(s_t); y_t =
    output_layer(s_t+1)."""
    block = _dense if layer.type == "rnn" else _conv_block(layer)
    state = _state_input(g, layer, "state", layer.hidden_row)
    outputs = []
    for x_t in _steps(g, layer, x, layer.input_row):
        source = block(g, layer.input_layer, x_t)
        recur = block(g, layer.self_layer, state)
        new = g.op("Add", [state, source]) if layer.shortcut else source
        state = g.op("Add", [new, recur], "state")
        outputs.append(block(g, layer.output_layer, state))
    _state_output(g, layer, "state", state, layer.hidden_row)
    return g.reshape(g.concat(outputs, axis=0, hint="steps"), layer.buffer_shape)


@converts(gru.GRU)
def convert_gru(g, layer, x, sources):
    b = layer.blocks
    n = layer.outputs
    h = _state_input(g, layer, "state", (n,))
    outputs = []
    for x_t in _steps(g, layer, x, (layer.inputs,)):
        z = g.op("Sigmoid", [g.op("Add", [_dense(g, b["uz"], x_t), _dense(g, b["wz"], h)])], "z")
        r = g.op("Sigmoid", [g.op("Add", [_dense(g, b["ur"], x_t), _dense(g, b["wr"], h)])], "r")
        forgot = g.op("Mul", [h, r], "forgot")
        candidate = g.op("Add", [_dense(g, b["uh"], x_t), _dense(g, b["wh"], forgot)])
        candidate = activate(g, layer.candidate_activation, candidate)
        keep = g.op("Mul", [z, h])
        fresh = g.op("Mul", [g.op("Sub", [g.const(1.0), z]), candidate])
        h = g.op("Add", [keep, fresh], "h")
        outputs.append(h)
    _state_output(g, layer, "state", h, (n,))
    return g.reshape(g.concat(outputs, axis=0, hint="steps"), layer.buffer_shape)


@converts(lstm.LSTM)
def convert_lstm(g, layer, x, sources):
    b = layer.blocks
    n = layer.outputs
    h = _state_input(g, layer, "hidden_state", (n,))
    c = _state_input(g, layer, "cell_state", (n,))
    outputs = []
    for x_t in _steps(g, layer, x, (layer.inputs,)):
        gates = {}
        for gate in lstm.GATES:
            value = g.op("Add", [_dense(g, b[f"w{gate}"], h), _dense(g, b[f"u{gate}"], x_t)])
            gates[gate] = g.op("Tanh" if gate == "g" else "Sigmoid", [value], gate)
        c = g.op("Add", [g.op("Mul", [gates["f"], c]), g.op("Mul", [gates["i"], gates["g"]])],
                 "cell")
        h = g.op("Mul", [g.op("Tanh", [c]), gates["o"]], "h")
        outputs.append(h)
    _state_output(g, layer, "hidden_state", h, (n,))
    _state_output(g, layer, "cell_state", c, (n,))
    return g.reshape(g.concat(outputs, axis=0, hint="steps"), layer.buffer_shape)
