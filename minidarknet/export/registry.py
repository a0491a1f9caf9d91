"""Layer class -> ONNX converter, one function per layer type (registered like the layers in
minidarknet/layers/registry.py), and the layer types that cannot be exported, with why.

    @converts(MaxPool)
    def maxpool(g, layer, x, net_tensors): ...   # returns the name of the output tensor

A converter receives the graph `g`, the layer, its input tensor `x` shaped
(batch,) + layer.in_shape, and `sources(i)`, the output tensor of an earlier layer i (shaped
(batch,) + net.layers[i].buffer_shape).  It returns a tensor shaped (batch,) +
layer.buffer_shape holding exactly what the layer's inference forward computes.
"""
from ..errors import MiniDarknetError

CONVERTERS = {}

# Layer types ONNX cannot express as minidarknet runs them: type -> reason (README lists them).
# Every layer type has a converter today; some refuse particular keys (tree softmax, ...).
REFUSED = {}


class ExportError(MiniDarknetError):
    """A network (or a layer of it) that cannot be exported as asked; names the layer."""


def converts(*classes):
    def add(function):
        for cls in classes:
            if cls in CONVERTERS:
                raise RuntimeError(f"{cls.__name__} has two ONNX converters")
            CONVERTERS[cls] = function
        return function
    return add


def converter_for(layer):
    function = CONVERTERS.get(type(layer))
    if function is not None:
        return function
    where = f"layer {layer.index} [{layer.section.type}] ({layer.section.path}:" \
            f"{layer.section.line})"
    reason = REFUSED.get(layer.type)
    if reason:
        raise ExportError(f"{where} cannot be exported to ONNX: {reason}")
    raise ExportError(f"{where} cannot be exported to ONNX: no converter for layer type "
                      f"{layer.type}")


def refuse(layer, why):
    """An ExportError naming the layer: `why` the graph would not compute its numbers."""
    s = layer.section
    return ExportError(f"layer {layer.index} {s.header} ({s.path}:{s.line}) cannot be exported "
                       f"to ONNX: {why}")
