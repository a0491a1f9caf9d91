"""Batch norm folded into a per-channel scale and shift, taken from the layer's own inference
code so that the graph computes what the chosen fork computes (minidarknet/fork.py): the
exporter never writes the formula a second time.

    scale, shift = batchnorm_affine(layer)   # x*scale + shift = the layer's inference BN
"""
import numpy as np

from ..layers.batchnorm import bn_forward

F32 = np.float32


def batchnorm_affine(layer, force_probe=False):
    """(scale, shift) float32 per channel; scale is None for a layer without batch norm
    (shift = its biases).

    [convolutional] folds batch norm itself (Convolutional._affine, the map its inference
    forward applies).  The other layers (connected, deconvolutional, batchnorm, and xnor
    convolutions) run bn_forward at inference; it is affine per channel, so evaluating it in
    float64 at 0 and 1 gives its shift and scale exactly as that code defines them."""
    if not getattr(layer, "batch_normalize", 1) and getattr(layer, "type", "") != "batchnorm":
        return None, np.asarray(layer.biases, F32)
    if hasattr(layer, "_affine") and not force_probe:
        scale, shift = layer._affine(F32)
        return (None if scale is None else np.asarray(scale, F32)), np.asarray(shift, F32)
    return _probe_bn_forward(layer)


def _probe_bn_forward(layer):
    channels = layer.rolling_mean.shape[0]
    probe = np.zeros((1, channels, 2), np.float64)
    probe[:, :, 1] = 1.0
    had, kept = hasattr(layer, "x"), getattr(layer, "x", None)
    try:
        bn_forward(layer, probe, False)
    finally:
        # bn_forward keeps a copy of its input there
        if had:
            layer.x = kept
        else:
            del layer.x
    shift = probe[0, :, 0]
    scale = probe[0, :, 1] - shift
    return scale.astype(F32), shift.astype(F32)
