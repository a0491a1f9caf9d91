"""One layer on its own, without a cfg file: build it from keys, run it on an array.

    l2 = minidarknet.layer("l2norm", (2, 3, 4, 5), axis="sample", eps=1e-8, backward="exact")
    y = l2.forward(x)                 # x: (2, 3, 4, 5) float32, NCHW
    dx = l2.backward(dy)              # the delta (negative gradient) w.r.t. x
    l2.scales, l2.output, l2.delta    # the layer's own buffers

The layer is the same object a cfg builds: keys are cfg keys (values as in a cfg file;
Python lists become "a,b,c" and booleans 1/0) and a bad key raises the same CfgError.  It runs
inside a one-layer network, so forward/backward follow Darknet's control flow and the chosen
`gradients` mode.  Any registered layer type works except those that refer to other layers
(route, shortcut, ...).  A (batch, n) input is taken as n channels of 1x1, the shape Darknet
gives a [connected] layer's output.
"""
import numpy as np

from .cfg import parse_cfg_text
from .errors import ShapeError
from .network import Network

__all__ = ["layer", "StandaloneLayer"]


def layer(kind, input_shape, *, gradients="darknet", seed=None, fork=None, **keys):
    """Build one layer of section type `kind` ("l2norm", "connected", "soft", ... or a layer
    class) for inputs of `input_shape` = (batch, c, h, w) or (batch, n); fork as for
    minidarknet.load (None: the default rule applied to this one section)."""
    name = kind if isinstance(kind, str) else kind.section_names[0]
    batch, c, h, w = _nchw(input_shape)
    lines = ["[net]", f"batch={batch}", f"channels={c}", f"height={h}", f"width={w}",
             f"[{name}]"]
    lines += [f"{key}={_cfg_value(key, value)}" for key, value in keys.items()]
    sections = parse_cfg_text("\n".join(lines) + "\n", path=f"layer({name!r})")
    return StandaloneLayer(Network(sections, gradients=gradients, seed=seed, fork=fork))


def _nchw(shape):
    shape = tuple(int(v) for v in shape)
    if len(shape) == 4:
        return shape
    if len(shape) == 2:
        return shape[0], shape[1], 1, 1
    raise ShapeError(f"input_shape {shape}: expected (batch, c, h, w) or (batch, n)")


def _cfg_value(key, value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(_cfg_value(key, v) for v in value)
    text = str(value)
    if not text or any(ch in text for ch in "\r\n[]#;=") or text.isspace():
        raise ValueError(f"layer key {key}={value!r}: not a value a cfg file can hold")
    return text


class StandaloneLayer:
    """A layer with array-in, array-out forward and backward.  Attribute access falls through
    to the layer itself (`output`, `delta`, `weights`, `scales`, `cost`, ...)."""

    def __init__(self, net):
        self.net = net
        self.layer = net.layers[0]
        self._loss_delta = None
        self._flat = False      # the last input was (batch, n): give arrays back that way

    def forward(self, x, truth=None, train=False):
        """Run the layer on x (batch, c, h, w) or (batch, n); returns its output buffer
        (viewed as (batch, outputs) when x is (batch, n))."""
        net = self.net
        x = np.asarray(x, np.float32)
        net.forward(x, truth, train=train)
        self._flat = x.ndim == 2
        delta = self.layer.delta
        # What forward itself left in delta (a loss layer's truth - p), restored before each
        # backward so that several backward calls after one forward are independent.
        self._loss_delta = None if delta is None else delta.copy()
        out = self.layer.output
        return out.reshape(net.batch, -1) if self._flat else out

    def backward(self, delta=None):
        """Add `delta` (the NEGATIVE gradient w.r.t. the output, Darknet's convention) to what
        forward left in the layer's delta, propagate, and return the delta w.r.t. the input
        (a new array shaped like the input).  Parameter updates accumulate until update()."""
        net = self.net
        if net.x is None:
            raise RuntimeError("backward() needs a forward() first")
        net._allocate_deltas()
        own = self.layer.delta
        if self._loss_delta is not None and self._loss_delta.shape == own.shape:
            own[...] = self._loss_delta
        else:
            own.fill(0)
        if delta is not None:
            delta = np.asarray(delta, np.float32)
            if delta.size != own.size:
                raise ShapeError(f"delta has {delta.size} values; the layer's output has "
                                 f"{own.size} ({self.layer.outputs} per sample x batch "
                                 f"{net.batch})")
        if net.input_delta is None or net.input_delta.shape != net.x.shape:
            net.input_delta = np.zeros_like(net.x)
        else:
            net.input_delta.fill(0)
        net.backward(delta)
        dx = net.input_delta.copy()
        return dx.reshape(net.batch, -1) if self._flat else dx

    def update(self, learning_rate, momentum=0.9, decay=0.0005):
        """Darknet's SGD step on the accumulated updates (batch = the current batch)."""
        self.layer.update(learning_rate, momentum, decay, self.net.batch)

    def __getattr__(self, name):
        if name in ("net", "layer"):
            raise AttributeError(name)
        return getattr(self.layer, name)

    def __repr__(self):
        return f"<StandaloneLayer {self.layer.type} {self.layer.in_shape} -> " \
               f"{self.layer.buffer_shape}, batch {self.net.batch}>"
