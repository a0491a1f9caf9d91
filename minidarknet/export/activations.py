"""Every activation of both forks (minidarknet/activations.py) as standard ONNX operators,
one function per name, with Darknet's formulas and constants (not ONNX's own Gelu, Mish or
HardSwish, whose constants differ)."""
import numpy as np

from .. import activations as _act
from ..activations import _EPS_NORM, _MISH_THRESHOLD, _SELU_L, _SELU_LA

ACTIVATION_CONVERTERS = {}


def _activation(*names):
    def add(function):
        for name in names:
            ACTIVATION_CONVERTERS[name] = function
        return function
    return add


def activate(g, activation, x):
    """The tensor act(x) for a minidarknet Activation (x of any shape; the channel-wise ones
    work across axis 1).  A fork variant that outputs 0 (AlexeyAB's CPU activate() has no
    case for some names, minidarknet/fork.py) exports as zeros, not as the named function."""
    if getattr(activation, "_forward", None) is getattr(_act, "_f_zero", object()):
        return g.op("ConstantOfShape", [g.op("Shape", [x])], "zero_activation")
    return ACTIVATION_CONVERTERS[activation.name](g, x)


def _piecewise(g, x, low, low_value, high, high_value, middle):
    """where(x < low, low_value, where(x > high, high_value, middle))."""
    inner = g.where(g.greater(x, high), high_value, middle)
    return g.where(g.less(x, low), low_value, inner)


@_activation("linear")
def _linear(g, x):
    return x


@_activation("logistic")
def _logistic(g, x):
    return g.op("Sigmoid", [x], "logistic")


@_activation("loggy")
def _loggy(g, x):
    return g.add(g.mul(g.op("Sigmoid", [x]), 2.0), -1.0, "loggy")


@_activation("relu")
def _relu(g, x):
    return g.op("Relu", [x], "relu")


@_activation("leaky", "revleaky")
def _leaky(g, x):
    return g.op("LeakyRelu", [x], "leaky", alpha=0.1)


@_activation("relie")
def _relie(g, x):
    return g.op("LeakyRelu", [x], "relie", alpha=0.01)


@_activation("ramp")
def _ramp(g, x):
    return g.op("Add", [g.op("Relu", [x]), g.mul(x, 0.1)], "ramp")


@_activation("elu")
def _elu(g, x):
    return g.op("Elu", [x], "elu", alpha=1.0)


@_activation("selu")
def _selu(g, x):
    # Darknet: x >= 0 ? 1.0507 x : 1.0507*1.6732 (e^x - 1), i.e. ONNX Selu's formula
    return g.op("Selu", [x], "selu", alpha=float(np.float32(_SELU_LA / _SELU_L)),
                gamma=float(_SELU_L))


@_activation("tanh")
def _tanh(g, x):
    return g.op("Tanh", [x], "tanh")


@_activation("plse")
def _plse(g, x):
    low = g.mul(g.add(x, 4.0), 0.01)
    high = g.add(g.mul(g.add(x, -4.0), 0.01), 1.0)
    middle = g.add(g.mul(x, 0.125), 0.5)
    return _piecewise(g, x, -4.0, low, 4.0, high, middle)


@_activation("stair")
def _stair(g, x):
    n = g.op("Floor", [x])
    half = g.op("Floor", [g.mul(x, 0.5)])
    odd = g.op("Not", [g.op("Equal", [g.op("Mod", [n, g.const(2.0)], fmod=1), g.const(0.0)])])
    return g.where(odd, g.op("Add", [g.op("Sub", [x, n]), half]), half, "stair")


def _clip(g, x, low, high, hint):
    return g.op("Clip", [x, g.const(low), g.const(high)], hint)


@_activation("hardtan")
def _hardtan(g, x):
    return _clip(g, x, -1.0, 1.0, "hardtan")


@_activation("relu6")
def _relu6(g, x):
    return _clip(g, x, 0.0, 6.0, "relu6")


@_activation("lhtan")
def _lhtan(g, x):
    low = g.mul(x, 0.001)
    high = g.add(g.mul(g.add(x, -1.0), 0.001), 1.0)
    return _piecewise(g, x, 0.0, low, 1.0, high, x)


@_activation("gelu")
def _gelu(g, x):
    # AlexeyAB: 0.5 x (1 + tanh(0.797885 x + 0.035677 x^3))
    cube = g.op("Mul", [g.op("Mul", [x, x]), x])
    u = g.op("Add", [g.mul(x, 0.797885), g.mul(cube, 0.035677)])
    t = g.add(g.op("Tanh", [u]), 1.0)
    return g.mul(g.op("Mul", [t, x]), 0.5, "gelu")


@_activation("swish")
def _swish(g, x):
    return g.op("Mul", [x, g.op("Sigmoid", [x])], "swish")


@_activation("mish")
def _mish(g, x):
    # AlexeyAB's softplus with threshold 20, then x * tanh(softplus)
    ex = g.op("Exp", [x])
    softplus = g.op("Log", [g.add(ex, 1.0)])
    sp = _piecewise(g, x, -_MISH_THRESHOLD, ex, _MISH_THRESHOLD, x, softplus)
    return g.op("Mul", [x, g.op("Tanh", [sp])], "mish")


@_activation("hard_mish")
def _hard_mish(g, x):
    quad = g.op("Add", [g.mul(g.op("Mul", [x, x]), 0.5), x])
    inner = g.where(g.greater(x, -2.0), quad, g.const(0.0))
    return g.where(g.greater(x, 0.0), x, inner, "hard_mish")


def _normalize_channels(g, numerator, hint):
    total = g.add(g.reduce("ReduceSum", numerator, [1]), _EPS_NORM)
    return g.op("Div", [numerator, total], hint)


@_activation("normalize_channels")
def _norm_channels(g, x):
    return _normalize_channels(g, g.op("Relu", [x]), "normalize_channels")


@_activation("normalize_channels_softmax")
def _norm_channels_softmax(g, x):
    return _normalize_channels(g, g.op("Exp", [x]), "normalize_channels_softmax")


@_activation("normalize_channels_softmax_maxval")
def _norm_channels_softmax_maxval(g, x):
    shifted = g.op("Sub", [x, g.reduce("ReduceMax", x, [1])])
    return _normalize_channels(g, g.op("Exp", [shifted]), "normalize_channels_softmax_maxval")
