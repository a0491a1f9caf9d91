"""One module per Darknet layer type; importing the package registers them all."""
import importlib
import pkgutil

from .base import InShape, Layer, WeightedLayer
from .registry import LAYER_TYPES, layer_class, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["InShape", "Layer", "WeightedLayer", "LAYER_TYPES", "layer_class", "register"]
