"""ONNX export: a network minidarknet runs, as a graph of standard ONNX operators that
computes the same numbers (batch norm folded as the network's fork computes it).

    from minidarknet.export import export_onnx
    export_onnx(net, "net.onnx", batch=1, opset=17, decode=True)
    net.export_onnx("net.onnx")                  # the same, from the network

Needs the `onnx` package (pip install 'minidarknet[onnx]'); verifying needs onnxruntime.
One converter per layer type (layers.py, registry.py), activations in activations.py,
detector decoding in decode.py.
"""
try:
    import onnx  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("ONNX export needs the onnx package: pip install 'minidarknet[onnx]'") \
        from e

from .exporter import (DEFAULT_OPSET, build_model, default_outputs, export_onnx,
                       layer_tensor_name, save_model)
from .registry import CONVERTERS, REFUSED, ExportError
from .verify import TOLERANCE, verify

__all__ = ["export_onnx", "build_model", "save_model", "verify", "default_outputs",
           "layer_tensor_name", "ExportError", "CONVERTERS", "REFUSED", "DEFAULT_OPSET",
           "TOLERANCE"]
