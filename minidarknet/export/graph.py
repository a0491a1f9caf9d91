"""The ONNX graph under construction: nodes, initializers and small helpers that hide the
differences between opsets (axes as an attribute or an input), built with onnx.helper.

Every tensor of a layer's output has the shape (batch,) + layer.buffer_shape, the shape of
minidarknet's own buffer, so that a converter can rely on what it reads.  Reshapes use 0 for
the batch dimension (ONNX: copy the input's), which keeps a dynamic batch working.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = np.float32

# Reduce* operators whose `axes` became an input (instead of an attribute) at this opset.
AXES_AS_INPUT = {"ReduceSum": 13, "ReduceMax": 18, "ReduceMean": 18, "ReduceMin": 18,
                 "ReduceSumSquare": 18, "ReduceL2": 18, "ReduceProd": 18}


class Graph:
    def __init__(self, opset, batch_dim=1):
        self.opset = opset
        self.batch_dim = batch_dim      # an int, or the name of a symbolic batch dimension
        self.extra_inputs = []          # recurrent layers' carried state (recurrent.py)
        self.extra_outputs = []
        self.nodes = []
        self.initializers = []
        self.prefix = "graph"
        self._used = set()
        self._constants = {}

    # ------------------------------------------------------------------ names
    def fresh(self, hint):
        """A tensor/node name not used before, under the current layer's prefix."""
        base = f"{self.prefix}/{hint}"
        name, k = base, 1
        while name in self._used:
            k += 1
            name = f"{base}_{k}"
        self._used.add(name)
        return name

    # ------------------------------------------------------------------ building blocks
    def const(self, value, hint="const", dtype=F32):
        """An initializer holding `value` (a numpy array or a scalar)."""
        array = np.asarray(value, dtype=dtype)
        if array.size <= 16:
            # Small constants (shapes, scalars) are shared across the graph.
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self._constants:
                return self._constants[key]
            name = self.fresh(hint)
            self._constants[key] = name
        else:
            name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def ints(self, values, hint="shape"):
        return self.const(np.asarray(values, np.int64), hint, np.int64)

    def op(self, op_type, inputs, hint=None, outputs=1, **attrs):
        """Add one node; returns its output name (or a list of names when outputs > 1)."""
        hint = hint or op_type.lower()
        names = [self.fresh(hint if outputs == 1 else f"{hint}_{k}") for k in range(outputs)]
        node = helper.make_node(op_type, list(inputs), names, name=names[0], **attrs)
        self.nodes.append(node)
        return names[0] if outputs == 1 else names

    # ------------------------------------------------------------------ shapes
    def reshape(self, x, shape, hint="reshape"):
        """Reshape to (batch,) + shape (the batch kept from the input)."""
        return self.op("Reshape", [x, self.ints([0] + [int(s) for s in shape])], hint)

    def transpose(self, x, perm, hint="transpose"):
        return self.op("Transpose", [x], hint, perm=list(perm))

    def slice(self, x, axis, start, end, step=1, hint="slice"):
        inputs = [x, self.ints([start]), self.ints([end]), self.ints([axis])]
        if step != 1:
            inputs.append(self.ints([step]))
        return self.op("Slice", inputs, hint)

    def concat(self, xs, axis, hint="concat"):
        if len(xs) == 1:
            return xs[0]
        return self.op("Concat", list(xs), hint, axis=axis)

    def pad(self, x, pads, value=0.0, hint="pad"):
        """ONNX Pad with `pads` = begins of every axis then ends of every axis."""
        return self.op("Pad", [x, self.ints(pads, "pads"), self.const(value, "pad_value")],
                       hint, mode="constant")

    def reduce(self, op_type, x, axes, keepdims=1, hint=None):
        if self.opset >= AXES_AS_INPUT[op_type]:
            return self.op(op_type, [x, self.ints(axes, "axes")], hint, keepdims=keepdims)
        return self.op(op_type, [x], hint, axes=list(axes), keepdims=keepdims)

    def batch_shape(self, source, tail, hint="batch_shape"):
        """A 1-d int64 tensor (batch of `source`,) + tail, for Expand / ConstantOfShape."""
        batch = self.op("Shape", [source], "shape", start=0, end=1) if self.opset >= 15 else \
            self.slice(self.op("Shape", [source], "shape"), 0, 0, 1)
        return self.op("Concat", [batch, self.ints(list(tail))], hint, axis=0)

    def state_batch(self, steps):
        """The first dimension of a recurrent state: batch / time steps."""
        if isinstance(self.batch_dim, str):
            return f"{self.batch_dim}_per_{steps}_steps" if steps > 1 else self.batch_dim
        if self.batch_dim % steps:
            from .registry import ExportError
            raise ExportError(f"batch {self.batch_dim} is not a multiple of the "
                              f"{steps} time steps of the recurrent layers")
        return self.batch_dim // steps

    # ------------------------------------------------------------------ arithmetic
    def mul(self, x, value, hint="mul"):
        return self.op("Mul", [x, value if isinstance(value, str) else self.const(value)], hint)

    def add(self, x, value, hint="add"):
        return self.op("Add", [x, value if isinstance(value, str) else self.const(value)], hint)

    def where(self, cond, a, b, hint="where"):
        return self.op("Where", [cond, a, b], hint)

    def less(self, x, value):
        return self.op("Less", [x, self.const(value)], "less")

    def greater(self, x, value):
        return self.op("Greater", [x, self.const(value)], "greater")

    # ------------------------------------------------------------------ finishing a layer
    def rename(self, old, new, since):
        """Give tensor `old` (made by nodes[since:]) the name `new`; False if no node of
        those made it."""
        made = any(old in node.output for node in self.nodes[since:])
        if not made:
            return False
        for node in self.nodes[since:]:
            for k, name in enumerate(node.output):
                if name == old:
                    node.output[k] = new
                    node.name = new
            for k, name in enumerate(node.input):
                if name == old:
                    node.input[k] = new
        self._used.add(new)
        return True

    def value_info(self, name, shape, elem=TensorProto.FLOAT):
        return helper.make_tensor_value_info(name, elem, list(shape))

    def model(self, inputs, outputs, graph_name, doc):
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.initializers,
                                  doc_string=doc)
        model = helper.make_model(graph, producer_name="minidarknet",
                                  opset_imports=[helper.make_opsetid("", self.opset)])
        # The IR version the opset needs, not the newest the installed onnx knows (older
        # runtimes refuse a newer IR).
        model.ir_version = min(model.ir_version, _ir_for_opset(self.opset))
        return model


def _ir_for_opset(opset):
    for entry in onnx.helper.VERSION_TABLE:
        _, ir, ai_onnx = entry[:3]
        if ai_onnx is not None and ai_onnx >= opset:
            return ir
    return onnx.IR_VERSION
