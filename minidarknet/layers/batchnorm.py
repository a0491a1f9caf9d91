"""Batch normalisation: the helpers used inside conv/connected layers and the [batchnorm] layer.

The two forks differ here (the constants are in minidarknet/fork.py, read from `layer.fork`):
  * training uses the batch mean and the UNBIASED variance, x_hat = (x - mean)/denominator with
    pjreddie's sqrt(var) + 1e-6 or AlexeyAB's sqrt(var + 1e-5) (inference: the same with the
    rolling statistics);
  * rolling statistics move inside forward: rolling = m*rolling + (1 - m)*batch_stat, m = .99
    (pjreddie), .9 (AlexeyAB; .95 in its connected layer);
  * backward (gradients="darknet") uses sqrt(var + 1e-5) and N (not N - 1) for the mean and
    variance terms, and divides the delta itself by pjreddie's sqrt(var + 1e-5) or AlexeyAB's
    sqrt(var) + 1e-5, so it is not quite the gradient of forward;
  * AlexeyAB's CPU backward never accumulates the BN biases' updates (they do not train).
gradients="exact" differentiates the forward that actually ran (same statistics, same epsilon).
Arrays are viewed as (batch, channels, spatial).
"""
import numpy as np

from ..fork import warn_quirk
from .base import F32, InShape, Layer
from .registry import register

# The mean and variance deltas use sqrt(var + 1e-5) in both forks.
EPS_BACKWARD = F32(1e-5)


def init_bn(layer, n):
    layer.scales = np.ones(n, F32)
    layer.rolling_mean = np.zeros(n, F32)
    layer.rolling_variance = np.zeros(n, F32)
    layer.scale_updates = np.zeros(n, F32)
    layer.mean = np.zeros(n, F32)
    layer.variance = np.zeros(n, F32)
    layer.x = None
    layer.x_norm = None


def _reuse(layer, name, like):
    """layer.<name> as a buffer shaped like `like`, reallocated only when the shape changes
    (a forward pass then allocates nothing)."""
    buf = getattr(layer, name, None)
    if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
        buf = np.empty_like(like)
        setattr(layer, name, buf)
    return buf


def bn_forward(layer, out, train, momentum=None):
    """Normalise `out` (B, C, S) in place, then scale and add the biases.  momentum: of the
    rolling statistics (default: the fork's, for convolutions)."""
    fork = layer.fork
    m = F32(fork.bn_rolling_momentum if momentum is None else momentum)
    np.copyto(_reuse(layer, "x", out), out)
    if train:
        n = out.shape[0] * out.shape[2]
        layer.mean[:] = out.sum(axis=(0, 2)) / F32(n)
        out -= layer.mean[None, :, None]
        squares = _reuse(layer, "x_norm", out)     # scratch until it holds x_norm below
        np.multiply(out, out, out=squares)
        layer.variance[:] = squares.sum(axis=(0, 2)) / F32(max(n - 1, 1))
        rest = F32(1 - m)
        layer.rolling_mean *= m
        layer.rolling_mean += rest * layer.mean
        layer.rolling_variance *= m
        layer.rolling_variance += rest * layer.variance
        out /= fork.bn_denominator(layer.variance)[None, :, None]
        np.copyto(layer.x_norm, out)
    else:
        out -= layer.rolling_mean[None, :, None]
        out /= fork.bn_denominator(layer.rolling_variance)[None, :, None]
    out *= layer.scales[None, :, None]
    out += layer.biases[None, :, None]


def bn_backward(layer, delta, train, biases=True):
    """Given delta (B, C, S) w.r.t. the BN output, accumulate scale (and, with biases=True,
    bias) updates and turn delta (in place) into the delta w.r.t. the BN input."""
    x_norm = layer.x_norm if train and layer.x_norm is not None else _inference_x_norm(layer)
    scratch = _reuse(layer, "_bn_scratch", delta)
    if biases:
        layer.bias_updates += delta.sum(axis=(0, 2))
    np.multiply(delta, x_norm, out=scratch)
    layer.scale_updates += scratch.sum(axis=(0, 2))
    delta *= layer.scales[None, :, None]
    if not train:
        # Darknet falls back to the rolling statistics as if they were batch statistics;
        # the exact gradient of the inference formula is a plain rescale.
        if layer.exact:
            delta /= layer.fork.bn_denominator(layer.rolling_variance)[None, :, None]
        else:
            _darknet_normalize_delta(layer, delta, layer.rolling_mean, layer.rolling_variance,
                                     scratch)
    elif layer.exact:
        _exact_normalize_delta(layer, delta, scratch)
    else:
        _darknet_normalize_delta(layer, delta, layer.mean, layer.variance, scratch)


def _inference_x_norm(layer):
    x = layer.x
    return (x - layer.rolling_mean[None, :, None]) / \
        layer.fork.bn_denominator(layer.rolling_variance)[None, :, None]


def _darknet_normalize_delta(layer, delta, mean, variance, scratch):
    # Darknet's mean_delta / variance_delta / normalize_delta (CPU), N = batch*spatial.
    n = F32(delta.shape[0] * delta.shape[2])
    centered = np.subtract(layer.x, mean[None, :, None], out=scratch)
    inv_std = (F32(1) / np.sqrt(variance + EPS_BACKWARD))
    mean_delta = -delta.sum(axis=(0, 2)) * inv_std
    variance_delta = np.einsum("bcs,bcs->c", delta, centered) * F32(-.5) * inv_std ** 3
    delta *= (F32(1) / layer.fork.bn_delta_denominator(variance))[None, :, None]
    centered *= (variance_delta * F32(2) / n)[None, :, None]
    delta += centered
    delta += (mean_delta / n)[None, :, None]


def _exact_normalize_delta(layer, delta, scratch):
    # Gradient of x_hat = (x - mean)/(sigma + eps_out), sigma = sqrt(unbiased variance + eps_in)
    # (d sigma / d var = 1 / (2 sigma)).
    n = delta.shape[0] * delta.shape[2]
    fork = layer.fork
    sigma = np.sqrt(layer.variance + F32(fork.bn_eps_inside_sqrt))
    s = sigma + F32(fork.bn_eps_outside_sqrt)
    x_norm = layer.x_norm
    mean_g = delta.mean(axis=(0, 2))
    dot = np.einsum("bcs,bcs->c", delta, x_norm)
    coef = np.where(sigma > 0, dot / (max(n - 1, 1) * np.where(sigma > 0, sigma, 1)), 0)
    delta -= mean_g[None, :, None]
    delta /= s[None, :, None]
    delta -= np.multiply(x_norm, coef.astype(delta.dtype)[None, :, None], out=scratch)


def bn_biases_train(layer, net):
    """Whether this backward accumulates the BN biases' updates: always in exact mode; in
    darknet mode as the fork's CPU code does (AlexeyAB's never does, and says nothing)."""
    if layer.exact or layer.fork.bn_biases_train:
        return True
    warn_quirk(net, "bn_biases", "AlexeyAB's CPU backward does not train batch-norm biases "
               "(their bias_updates stay 0)")
    return False


@register("batchnorm")
class BatchNorm(Layer):
    """[batchnorm]: standalone batch normalisation over the previous layer's channels.

    pjreddie's CPU build crashes on this layer and never trains it; we run it as AlexeyAB does
    for forward/backward (with the network's fork's formula), and its scales train (its biases
    too, except as AlexeyAB's CPU code in darknet mode)."""
    type = "batchnorm"

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.set_output_shape(shape.c, shape.h, shape.w, shape.inputs)
        c = self.buffer_shape[0]
        init_bn(self, c)
        self.biases = np.zeros(c, F32)
        self.bias_updates = np.zeros(c, F32)
        self.allocate(shape.batch)

    def _view(self, a):
        return a.reshape(self.batch, self.buffer_shape[0], -1)

    def forward(self, net):
        self.output[...] = net.input.reshape(self.output.shape)
        self.train = net.train
        bn_forward(self, self._view(self.output), net.train)

    def backward(self, net):
        delta = self._view(self.delta)
        bn_backward(self, delta, self.train, biases=bn_biases_train(self, net))
        prev = net.delta
        if prev is not None:
            # Darknet copies (overwrites) into the previous delta; exact mode accumulates.
            if self.exact:
                prev += delta.reshape(prev.shape)
            else:
                prev[...] = delta.reshape(prev.shape)

    def update(self, rate, momentum, decay, batch):
        if self.dont_update:
            return
        lr = F32(rate * self.learning_rate_scale / batch)
        self.biases += lr * self.bias_updates
        self.bias_updates *= F32(momentum)
        self.scales += lr * self.scale_updates
        self.scale_updates *= F32(momentum)

    def parameters(self):
        # pjreddie's file layout for [batchnorm]: scales, rolling mean, rolling variance.
        return [("scales", self.scales), ("rolling_mean", self.rolling_mean),
                ("rolling_variance", self.rolling_variance)]

    def describe(self):
        return "", "", *super().describe()[2:]


__all__ = ["BatchNorm", "init_bn", "bn_forward", "bn_backward", "bn_biases_train", "InShape"]
