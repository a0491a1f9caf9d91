"""Darknet's activation functions (both forks), vectorised with numpy.

`ACTIVATIONS` maps every cfg name of pjreddie/darknet and AlexeyAB/darknet to an `Activation`;
`get_activation(name)` returns it, or None for an unknown name (the caller raises the error;
Darknet itself would print "Couldn't find activation function X, going with ReLU").

Forward passes use Darknet's formulas in float32 (the dtype of the input: the same code runs in
float64, which the tests use for finite differences).  Backward passes come in two flavours,
picked per call with `exact`:

* ``exact=False`` (Darknet): the CPU gradient as Darknet codes it.  For every activation except
  the AB ones below it is a function of the OUTPUT y (`delta *= grad(y)`, spec section 4).
  AB's swish, mish and hard_mish use the stored pre-activation x (AB keeps the input, or for
  swish the sigmoid, which is recomputed here from x); AB's normalize_channels* use y.
* ``exact=True``: the true derivative d act/dx of the forward pass implemented here.

Where Darknet's gradient is NOT the true derivative (users of gradients="exact" see a difference):

* gelu (AB): Darknet evaluates the closed-form derivative gelu'(.) at the output y instead of
  at the input x, so its "gradient" is wrong everywhere except at 0.  It also uses slightly
  different constants (0.0356774, 0.0535161) from the forward pass (0.035677).  Exact mode
  differentiates the forward pass at x (and therefore keeps a copy of x).
* normalize_channels (AB): y_k = max(x_k,0) / (1e-4 + sum_j max(x_j,0)) per pixel.  Darknet
  computes G = sum_j y_j*delta_j and then delta_k *= G where y_k > 0, leaving delta_k unchanged
  where y_k == 0.  The true vector-Jacobian product is [x_k>0] * (delta_k - G) / S with
  S = 1e-4 + sum_j max(x_j,0), which needs x.
* normalize_channels_softmax and _maxval (AB): Darknet does delta_k *= G with G as above; the
  true product is y_k * (delta_k - G).  For _maxval the 1e-4 in the denominator also makes the
  output depend on the subtracted maximum, which adds -(1e-4/S)*G = -(1 - sum_j y_j)*G at the
  arg-max channel (first maximum, as AB picks it).
* mish (AB): Darknet uses d softplus/dx = 1 - exp(-softplus(x)), which is exact in the
  logarithmic branch but off by < 1e-8 relative in the thresholded branches (|x| > 20).
* Everywhere: the derivative at a kink (relu at 0, plse at +-4, hardtan at +-1, lhtan at 0 and 1,
  relu6 at 0 and 6, leaky/relie/ramp at 0, selu at 0, hard_mish at -2 and 0, stair at integers)
  is whatever Darknet's comparison on y picks; exact mode uses the same one-sided choice (a
  derivative does not exist there).  Gradients computed from y in float32 also lose precision
  where y has saturated (logistic/tanh: 1-y*y is 0 once y rounds to +-1).
* stair: Darknet's "0 if y is an integer, else 1" IS the derivative almost everywhere (y is an
  integer exactly where floor(x) is even and the function is flat); only at integer x, or for
  |x| > ~2^23 where float32 loses the fraction, does the rule misfire.
* revleaky (AB): forward and CPU gradient are those of leaky (true derivative); AB's GPU kernel
  divides by the slope instead, which is not reproduced here.

For all other activations (logistic, loggy, relu, elu, selu, relie, ramp, linear, tanh, plse,
leaky, hardtan, lhtan, relu6, swish, hard_mish) Darknet's gradient is the true derivative
written as a function of y (or of x), and both modes give the same numbers.

Deliberate deviations from Darknet's forward pass:

* tanh is computed like pjreddie's (e^{2x}-1)/(e^{2x}+1), but 2x is clamped at 80 first, so large
  x gives 1 instead of NaN (inf/inf).  For |x| <= 40 the result is unchanged.  (AB computes
  2/(1+e^{-2x})-1, which differs by about 1 ulp.)
* elu and selu evaluate e^x only on the negative side, so large positive x gives x instead of
  the NaN that Darknet's (x<0)*(exp(x)-1) = 0*inf produces beyond exp's overflow.
* Everything is float32 (pjreddie evaluates exp in double and rounds; differences ~1 ulp).

Fork-level quirks (applied by the layers, see Layer.fork_activation and minidarknet/fork.py):
AB's generic CPU `activate()` has no case for relu6, swish, mish, hard_mish or
normalize_channels*, so with fork alexeyab and gradients="darknet" those names output 0 where
AB's layer does not compute them itself (relu6 everywhere; the others outside convolutions);
AB's tanh is written 2/(1+e^-2x)-1 (`Activation.for_fork`).  Exact mode computes every
activation properly.
"""
import numpy as np

__all__ = ["Activation", "ACTIVATIONS", "get_activation"]

_EPS_NORM = 1e-4            # AB's eps in the normalize_channels* denominators
_SELU_L = 1.0507
_SELU_LA = 1.0507 * 1.6732
_MISH_THRESHOLD = 20.0
_TANH_CLAMP = 80.0          # e^80 is finite in float32 and (e-1)/(e+1) rounds to 1 there


def _sel(cond, a, b, dtype):
    """np.where with scalar branches kept in `dtype` (not promoted to float64)."""
    t = np.dtype(dtype).type
    return np.where(cond, t(a), t(b))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------- forward functions
# Each takes x and returns act(x) (a new array, or `out` when it writes there directly).

def _f_linear(x, out):
    if out is not x:
        np.copyto(out, x, casting="same_kind")
    return out


def _f_logistic(x, out):
    t = np.negative(x)
    np.exp(t, out=t)
    t += 1.0
    return np.divide(1.0, t, out=out, casting="same_kind")


def _f_loggy(x, out):
    t = np.negative(x)
    np.exp(t, out=t)
    t += 1.0
    np.divide(2.0, t, out=t)
    return np.subtract(t, 1.0, out=out, casting="same_kind")


def _f_relu(x, out):
    return np.multiply(x, x > 0, out=out, casting="same_kind")      # x*(x>0), as written


def _leaky_like(slope):
    def f(x, out):
        return np.multiply(x, _sel(x > 0, 1.0, slope, x.dtype), out=out, casting="same_kind")
    return f


def _f_ramp(x, out):
    return np.add(x * (x > 0), 0.1 * x, out=out, casting="same_kind")


def _f_elu(x, out):
    neg = np.exp(np.minimum(x, 0.0)) - 1.0
    return np.where(x >= 0, x, neg)


def _f_selu(x, out):
    neg = _SELU_LA * (np.exp(np.minimum(x, 0.0)) - 1.0)
    return np.where(x >= 0, _SELU_L * x, neg)


def _f_tanh(x, out):
    e = np.minimum(2.0 * x, _TANH_CLAMP)
    np.exp(e, out=e)
    return np.divide(e - 1.0, e + 1.0, out=out, casting="same_kind")


def _f_tanh_logistic(x, out):
    # AlexeyAB's tanh_activate: 2/(1 + e^{-2x}) - 1 (no overflow for large x: e^{-2x} -> 0)
    e = np.exp(-2.0 * x)
    e += 1.0
    np.divide(2.0, e, out=e)
    return np.subtract(e, 1.0, out=out, casting="same_kind")


def _f_zero(x, out):
    out[...] = 0
    return out


def _g_zero(y, x):
    return np.zeros_like(y)


def _f_plse(x, out):
    r = np.where(x < -4, 0.01 * (x + 4.0),
                 np.where(x > 4, 0.01 * (x - 4.0) + 1.0, 0.125 * x + 0.5))
    return r


def _f_stair(x, out):
    n = np.floor(x)
    half = np.floor(x / 2.0)
    odd = np.mod(n, 2.0) != 0          # C's int n % 2 != 0 (also true for negative odd n)
    r = np.where(odd, (x - n) + half, half)
    return r


def _f_hardtan(x, out):
    return np.clip(x, -1.0, 1.0, out=out, casting="same_kind")


def _f_lhtan(x, out):
    r = np.where(x < 0, 0.001 * x, np.where(x > 1, 0.001 * (x - 1.0) + 1.0, x))
    return r


def _f_relu6(x, out):
    return np.clip(x, 0.0, 6.0, out=out, casting="same_kind")


def _gelu_u(x):
    return 0.797885 * x + 0.035677 * (x * x * x)


def _f_gelu(x, out):
    t = np.tanh(_gelu_u(x))
    t += 1.0
    t *= x
    return np.multiply(t, 0.5, out=out, casting="same_kind")


def _f_swish(x, out):
    return np.multiply(x, _sigmoid(x), out=out, casting="same_kind")


def _softplus(x):
    """AB's softplus_activate(x, 20): x above 20, e^x below -20, else log(e^x + 1)."""
    ex = np.exp(x)
    return np.where(x > _MISH_THRESHOLD, x,
                    np.where(x < -_MISH_THRESHOLD, ex, np.log(ex + 1.0)))


def _f_mish(x, out):
    sp = _softplus(x)
    tsp = 2.0 / (1.0 + np.exp(-2.0 * sp)) - 1.0        # AB's tanh_activate
    return np.multiply(x, tsp, out=out, casting="same_kind")


def _f_hard_mish(x, out):
    r = np.where(x > 0, x, np.where(x > -2, x * x / 2.0 + x, 0.0))
    return r


# ---------------------------------------------------------------------------- gradient factors
# g(y, x) -> array (or None for 1); backprop does delta *= g.

def _g_logistic(y, x):
    return (1.0 - y) * y


def _g_loggy(y, x):
    u = (y + 1.0) / 2.0
    return 2.0 * (1.0 - u) * u


def _g_relu(y, x):
    return (y > 0).astype(y.dtype)


def _g_slope(slope):
    return lambda y, x: _sel(y > 0, 1.0, slope, y.dtype)


def _g_ramp(y, x):
    return (y > 0) + y.dtype.type(0.1)


def _g_elu(y, x):
    return np.where(y >= 0, y.dtype.type(1.0), y + 1.0)


def _g_selu(y, x):
    return np.where(y >= 0, y.dtype.type(_SELU_L), y + _SELU_LA)


def _g_tanh(y, x):
    return 1.0 - y * y


def _g_plse(y, x):
    return _sel((y < 0) | (y > 1), 0.01, 0.125, y.dtype)


def _g_stair(y, x):
    return _sel(np.floor(y) == y, 0.0, 1.0, y.dtype)


def _g_hardtan(y, x):
    return ((y > -1) & (y < 1)).astype(y.dtype)


def _g_lhtan(y, x):
    return _sel((y > 0) & (y < 1), 1.0, 0.001, y.dtype)


def _g_relu6(y, x):
    return ((y > 0) & (y < 6)).astype(y.dtype)


def _g_gelu_darknet(y, x):
    # AB's gelu_gradient, applied (as AB does) to the output y.
    y3 = y * y * y
    a = 0.0356774 * y3 + 0.797885 * y
    sech2 = 1.0 / np.cosh(a)
    sech2 *= sech2
    g = 0.5 * np.tanh(a) + (0.0535161 * y3 + 0.398942 * y) * sech2 + 0.5
    # Beyond |y| ~ 1e13 the cube overflows: inf * 0 = NaN (as in AB); keep the limit instead.
    return np.where(np.isfinite(g) | ~np.isfinite(y), g, (y > 0).astype(y.dtype))


def _g_gelu_exact(y, x):
    u = _gelu_u(x)
    t = np.tanh(u)
    sech2 = 1.0 - t * t
    g = 0.5 * (1.0 + t) + 0.5 * x * sech2 * (0.797885 + 3.0 * 0.035677 * x * x)
    # Far from 0 the second term is 0 but may be computed as inf*0; use the limit.
    return np.where(np.abs(u) < 40, g, (x > 0).astype(g.dtype))


def _g_swish(y, x):
    s = _sigmoid(x)
    return y + s * (1.0 - y)


def _mish_grad(x, dsp):
    sp = _softplus(x)
    tsp = np.tanh(sp)
    return x * ((1.0 - tsp * tsp) * dsp(x, sp)) + tsp


def _g_mish_darknet(y, x):
    return _mish_grad(x, lambda x, sp: 1.0 - np.exp(-sp))


def _g_mish_exact(y, x):
    def dsp(x, sp):
        ex = np.exp(np.minimum(x, _MISH_THRESHOLD))
        return np.where(x > _MISH_THRESHOLD, x.dtype.type(1.0),
                        np.where(x < -_MISH_THRESHOLD, ex, ex / (ex + 1.0)))
    return _mish_grad(x, dsp)


def _g_hard_mish(y, x):
    return np.where(x > 0, x.dtype.type(1.0), np.where(x > -2, x + 1.0, x.dtype.type(0.0)))


# ---------------------------------------------------------------------------- classes

class Activation:
    """One activation function.

    name         cfg name
    channelwise  True for AB's normalize_channels*: they work across axis 1 at each pixel
    fork         "both" (pjreddie and AlexeyAB) or "ab" (AlexeyAB only)
    """

    channelwise = False

    def __init__(self, name, forward, grad, exact_grad=None, *, input_darknet=False,
                 input_exact=None, fork="both"):
        self.name = name
        self.fork = fork
        self._forward = forward
        self._grad = grad
        self._exact_grad = grad if exact_grad is None else exact_grad
        self._input_darknet = input_darknet
        self._input_exact = input_darknet if input_exact is None else input_exact

    def needs_input(self, exact):
        """True if backprop() needs the pre-activation x (the layer then keeps a copy of x)."""
        return self._input_exact if exact else self._input_darknet

    def forward(self, x, out):
        """Write act(x) into `out` (which may be x itself) and return out."""
        with np.errstate(over="ignore", under="ignore"):
            r = self._forward(x, out)
        if r is not out:
            out[...] = r
        return out

    def _check_x(self, x, exact):
        if x is None and self.needs_input(exact):
            raise ValueError(f"activation {self.name!r} needs the pre-activation input x "
                             f"for its {'exact' if exact else 'Darknet'} gradient")

    def backprop(self, delta, y, x, exact):
        """Multiply `delta` in place by the derivative (Darknet's, or the true one if exact)."""
        self._check_x(x, exact)
        g = self._exact_grad if exact else self._grad
        if g is None:
            return
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            f = g(y, x)
        np.multiply(delta, f, out=delta, casting="same_kind")

    def __repr__(self):
        return f"<Activation {self.name}>"

    def _variant(self, forward=None, grad=None, exact_grad=None, input_darknet=None):
        v = object.__new__(type(self))
        v.__dict__.update(self.__dict__)
        if forward is not None:
            v._forward = forward
        if grad is not None:
            v._grad = grad
        if exact_grad is not None:
            v._exact_grad = exact_grad
        if input_darknet is not None:
            v._input_darknet = input_darknet
        return v

    def zeroed(self):
        """This activation as a Darknet build without it computes it: output 0, gradient 0
        (AlexeyAB's generic CPU activate()/gradient() fall through to `return 0`)."""
        return Activation(self.name, _f_zero, _g_zero, _g_zero, fork=self.fork)

    def for_fork(self, fork):
        """This activation with the formulas of `fork` (a minidarknet.fork.Fork): AlexeyAB's
        tanh is written 2/(1+e^-2x) - 1; AlexeyAB's CPU gelu gradient is evaluated at the
        output (without that quirk the darknet gradient is the true one)."""
        if self.name == "tanh" and fork.tanh_formula == "logistic":
            return self._variant(forward=_f_tanh_logistic)
        if self.name == "gelu" and not fork.gelu_gradient_at_output:
            return self._variant(grad=_g_gelu_exact, input_darknet=True)
        return self


class _Channelwise(Activation):
    """AB's normalize_channels family: per (batch, pixel), across the channel axis 1."""

    channelwise = True

    def __init__(self, name, kind, *, input_exact):
        super().__init__(name, None, None, input_darknet=False, input_exact=input_exact,
                         fork="ab")
        self.kind = kind            # "positive", "softmax" or "softmax_maxval"

    def forward(self, x, out):
        eps = x.dtype.type(_EPS_NORM)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            if self.kind == "positive":
                num = np.where(x > 0, x, x.dtype.type(0))
            else:
                shifted = x - np.max(x, axis=1, keepdims=True) if self.kind == "softmax_maxval" else x
                num = np.exp(shifted)
            s = np.sum(num, axis=1, keepdims=True, initial=eps)   # AB starts the sum at eps
            np.divide(num, s, out=out, casting="same_kind")
        return out

    def backprop(self, delta, y, x, exact):
        self._check_x(x, exact)
        g = np.sum(y * delta, axis=1, keepdims=True)             # G = sum_k y_k delta_k
        if not exact:
            if self.kind == "positive":
                np.multiply(delta, g, out=delta, where=y > 0)     # y<=0: delta left unchanged
            else:
                delta *= g
            return
        if self.kind == "positive":
            pos = x > 0
            s = np.sum(np.where(pos, x, x.dtype.type(0)), axis=1, keepdims=True,
                       initial=x.dtype.type(_EPS_NORM))
            res = np.where(pos, (delta - g) / s, delta.dtype.type(0))
        else:
            res = y * (delta - g)
            if self.kind == "softmax_maxval":
                # The max m also sits in the eps term: dy_k/dm = -y_k * eps/S, eps/S = 1 - sum y.
                k = np.argmax(y, axis=1)[:, None]
                extra = (1.0 - np.sum(y, axis=1, keepdims=True)) * g
                cur = np.take_along_axis(res, k, axis=1)
                np.put_along_axis(res, k, cur - extra, axis=1)
        delta[...] = res


def _build():
    acts = [
        Activation("logistic", _f_logistic, _g_logistic),
        Activation("loggy", _f_loggy, _g_loggy),
        Activation("relu", _f_relu, _g_relu),
        Activation("elu", _f_elu, _g_elu),
        Activation("selu", _f_selu, _g_selu),
        Activation("relie", _leaky_like(0.01), _g_slope(0.01)),
        Activation("ramp", _f_ramp, _g_ramp),
        Activation("linear", _f_linear, None),
        Activation("tanh", _f_tanh, _g_tanh),
        Activation("plse", _f_plse, _g_plse),
        Activation("leaky", _leaky_like(0.1), _g_slope(0.1)),
        Activation("stair", _f_stair, _g_stair),
        Activation("hardtan", _f_hardtan, _g_hardtan),
        Activation("lhtan", _f_lhtan, _g_lhtan),
        # AlexeyAB only
        Activation("relu6", _f_relu6, _g_relu6, fork="ab"),
        Activation("gelu", _f_gelu, _g_gelu_darknet, _g_gelu_exact, input_exact=True, fork="ab"),
        Activation("revleaky", _leaky_like(0.1), _g_slope(0.1), fork="ab"),
        Activation("swish", _f_swish, _g_swish, input_darknet=True, fork="ab"),
        Activation("mish", _f_mish, _g_mish_darknet, _g_mish_exact, input_darknet=True, fork="ab"),
        Activation("hard_mish", _f_hard_mish, _g_hard_mish, input_darknet=True, fork="ab"),
        _Channelwise("normalize_channels", "positive", input_exact=True),
        _Channelwise("normalize_channels_softmax", "softmax", input_exact=False),
        _Channelwise("normalize_channels_softmax_maxval", "softmax_maxval", input_exact=False),
    ]
    return {a.name: a for a in acts}


ACTIVATIONS = _build()


def get_activation(name):
    """The Activation for a cfg name, or None if neither fork knows it."""
    return ACTIVATIONS.get(name)
