"""Network -> ONNX model: runs every layer's converter in network order and names each
layer's output tensor (and its last node) `layer_<index>_<type>`, so that an intermediate
output of the graph can be matched to net.layers[index]."""
import onnx

from ..atomic import write_atomic
from . import layers as _layers, recurrent as _recurrent  # noqa: F401  (the converters)
from .decode import add_decoding
from .graph import Graph
from .registry import ExportError, converter_for

DEFAULT_OPSET = 17
MIN_OPSET = 13
INPUT = "input"
PROTOBUF_LIMIT = 2**31 - 1


def layer_tensor_name(layer):
    return f"layer_{layer.index}_{layer.type}"


def default_outputs(net):
    """The detection heads (every one feeds the decoding) and the network's output layer."""
    indices = [layer.index for layer in net.layers if hasattr(layer, "boxes")]
    if net.output_layer.index not in indices:
        indices.append(net.output_layer.index)
    return indices


def build_model(net, *, batch=None, dynamic_batch=False, opset=DEFAULT_OPSET, outputs=None,
                decode=False, image_size_input=False, nms=None, thresh=0.5):
    """The ONNX ModelProto for `net` with its current weights.

    batch: the graph's fixed batch (default: the network's), or dynamic_batch=True for a
    symbolic one.
    outputs: layer indices whose outputs the graph returns (default: the detection heads and
    the output layer; "all": every layer).  decode / image_size_input / nms / thresh: see
    decode.py."""
    _check_opset(opset)
    batch = net.batch if batch is None else batch
    batch_dim = "batch" if dynamic_batch else int(batch)
    g = Graph(opset, batch_dim)
    if not dynamic_batch and int(batch) < 1:
        raise ExportError(f"batch must be at least 1, not {batch}")
    image = net.c * net.h * net.w == net.inputs
    in_shape = (net.c, net.h, net.w) if image else (net.inputs,)
    graph_inputs = [g.value_info(INPUT, (batch_dim,) + in_shape)]
    tensors = {}

    def sources(index):
        name = tensors.get(index)
        if name is None:
            src = net.layers[index]
            raise ExportError(f"layer {index} ({src.type}) has no inference output for a later "
                              f"layer to read")
        return name

    current, current_shape = INPUT, in_shape
    for layer in net.layers:
        convert = converter_for(layer)
        g.prefix = layer_tensor_name(layer)
        since = len(g.nodes)
        if current is None:
            raise ExportError(f"layer {layer.index} ({layer.type}) reads the output of a "
                              f"[cost] layer, which holds no inference value")
        x = current
        if tuple(current_shape) != tuple(layer.in_shape):
            x = g.reshape(x, layer.in_shape, "input")
        out = convert(g, layer, x, sources)
        if out is not None:
            out = _finish(g, layer, out, since)
        tensors[layer.index] = out
        current, current_shape = out, layer.buffer_shape

    indices = _output_indices(net, outputs)
    graph_outputs = []
    for index in indices:
        layer = net.layers[index]
        if tensors.get(index) is None:
            raise ExportError(f"layer {index} ({layer.type}) has no inference output to return")
        graph_outputs.append(g.value_info(tensors[index], (batch_dim,) + layer.buffer_shape))
    graph_inputs += g.extra_inputs
    if decode:
        g.prefix = "decode"
        inputs, decoded = add_decoding(g, net, tensors, batch_dim, image_size_input, nms,
                                       thresh)
        graph_inputs += inputs
        graph_outputs = decoded + ([] if outputs is None else graph_outputs)
    graph_outputs += g.extra_outputs
    doc = (f"minidarknet export of {net.path} ({net.fork} fork), input {in_shape} "
           f"float32 NCHW")
    model = g.model(graph_inputs, graph_outputs, "minidarknet", doc)
    size = sum(t.ByteSize() for t in model.graph.initializer)
    if size > PROTOBUF_LIMIT:
        raise ExportError(f"{net.path}: the weights take {size / 2**30:.1f} GiB, more than the "
                          f"2 GiB a single ONNX file can hold")
    onnx.checker.check_model(model, full_check=True)
    return model


def _check_opset(opset):
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= newest:
        raise ExportError(f"opset {opset}: the exporter writes opsets {MIN_OPSET} to {newest} "
                          f"(the installed onnx {onnx.__version__} knows up to {newest})")


def _output_indices(net, outputs):
    if outputs is None:
        return default_outputs(net)
    if outputs == "all":
        return [layer.index for layer in net.layers if layer.type != "cost"]
    indices = []
    for value in outputs:
        index = int(value)
        if index < 0:
            index += len(net.layers)
        if not 0 <= index < len(net.layers):
            raise ExportError(f"output layer {value}: the network has layers 0 to "
                              f"{len(net.layers) - 1}")
        if index not in indices:
            indices.append(index)
    return indices


def _finish(g, layer, out, since):
    """Name the layer's output tensor (and the node making it) after the layer."""
    name = layer_tensor_name(layer)
    if not g.rename(out, name, since):
        g.nodes.append(onnx.helper.make_node("Identity", [out], [name], name=name))
    return name


def save_model(model, path):
    """Write the model atomically (a crash leaves the old file or the new one)."""
    write_atomic(path, model.SerializeToString())


def export_onnx(net, path, **options):
    """Build the model for `net` (build_model's options) and write it to `path`."""
    model = build_model(net, **options)
    save_model(model, path)
    return model


__all__ = ["build_model", "export_onnx", "save_model", "default_outputs", "layer_tensor_name",
           "DEFAULT_OPSET", "ExportError"]
