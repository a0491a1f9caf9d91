"""[shortcut]: residual add of earlier layers onto the previous layer's output, then activation.

Output dims = the previous layer's.  Two sets of semantics, picked from the section:

pjreddie (a single `from`, weights_type=none; the default and what every PJ cfg uses):
    out = copy(prev); over the overlap of prev and from, out = alpha*out + beta*from; act(out).
    The overlap is the first min(c) channels and, when the spatial sizes differ by an integer
    factor s, every s-th pixel of the larger one (from larger: from is subsampled; from smaller:
    it lands on every s-th output pixel).  Outside the overlap out = prev, WITHOUT alpha:
    ResNet cfgs add 64 channels into 256 this way.  Unequal factors for w and h make Darknet
    abort on an assert; here they are a CfgError.  alpha and beta default to 1.
    Backward (Darknet): delta *= act'; prev.delta += alpha*delta everywhere;
    from.delta += beta*delta over the overlap.  Exact mode: prev gets alpha*delta only on the
    overlap and delta elsewhere (the true gradient of the copy there).
    For equal shapes both forks compute the same thing, and AlexeyAB's flat rule below gives
    the same numbers whenever only the channel counts differ; only a spatial mismatch differs
    (AB adds the first from-outputs flat elements; its parser only prints "Downsample here").

AlexeyAB (`from` lists several layers, or weights_type is per_feature/per_layer/per_channel):
    out[i] = a0*prev[i] + sum_k a_{k+1} * from_k[i] for every flat index i (per sample) below
    from_k's outputs (smaller inputs are added to the first elements).  Weights: per_feature ->
    one per input (n+1), per_channel -> one per input and channel ((n+1)*c), initialised to 1,
    stored in the weights file and updated like conv weights (decay, momentum, no bias).
    weights_normalization: none (a = w), relu/avg_relu (a_k = relu(w_k)/(1e-4 + sum relu)),
    softmax (a_k = exp(w_k - max)/(1e-4 + sum exp(w_j - max))), per weight slot.
    Backward (Darknet): prev.delta += a0*delta, from_k.delta += a_{k+1}*delta; the weight
    updates are AB's: without normalisation sum(delta*input_k) (the true gradient); with it,
    delta*input_k*G where G = delta*prev*sum_j a_j, i.e. the square of delta*prev for w0 —
    not a gradient.  Exact mode differentiates through the normalisation.  alpha/beta are
    pjreddie keys and are rejected here.

Keys: from (required), activation (linear), alpha, beta (PJ), weights_type, weights_normalization
(AB).
"""
import numpy as np

from ..errors import warn
from .base import F32, Layer, _shape_str
from .registry import register
from .route import read_references

WEIGHTS_TYPES = {"none": "none", "per_feature": "per_feature", "per_layer": "per_feature",
                 "per_channel": "per_channel"}
NORMALIZATIONS = {"none": "none", "relu": "relu", "avg_relu": "relu", "softmax": "softmax"}
EPS = F32(1e-4)


@register("shortcut")
class Shortcut(Layer):
    type = "shortcut"
    special_activations = ("swish", "mish")     # AlexeyAB's shortcut computes these itself

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        if not (shape.c and shape.h and shape.w):
            raise section.error("[shortcut]: the layer before must output an image (c x h x w; "
                                f"it outputs {shape.inputs} values with no shape)")
        self.sources = read_references(section, "from", net)
        self.source_layers = [net.layers[i] for i in self.sources]
        self.activation = self.activation_from(section, "linear")
        self.weights_type = self._choice(section, "weights_type", WEIGHTS_TYPES)
        self.normalization = self._choice(section, "weights_normalization", NORMALIZATIONS)
        self.ab = len(self.sources) > 1 or self.weights_type != "none"
        self.set_output_shape(shape.c, shape.h, shape.w)
        if self.ab:
            for key in ("alpha", "beta"):
                if section.has(key):
                    raise section.error(f"[shortcut] {key}= is pjreddie's and needs a single "
                                        f"from= with weights_type=none (AlexeyAB's multi-input "
                                        f"/ weighted shortcut has no {key})", key)
            self.alpha = self.beta = F32(1)
        else:
            self.alpha = F32(section.float("alpha", 1.0))
            self.beta = F32(section.float("beta", 1.0))
            self._pj_overlap(section)
        if self.weights_type == "none" and self.normalization != "none":
            warn(f"{section.where('weights_normalization')}: weights_normalization="
                 f"{self.normalization} has no effect with weights_type=none (as in Darknet)")
        self._init_weights()
        self.x_pre = None
        self.allocate(shape.batch)

    @staticmethod
    def _choice(section, key, choices):
        value = section.str(key, "none")
        if value not in choices:
            raise section.error(f"[shortcut] {key}={value}: expected one of "
                                f"{', '.join(choices)}", key)
        return choices[value]

    # ------------------------------------------------------------------ pjreddie geometry
    def _pj_overlap(self, section):
        src = self.source_layers[0]
        fc, fh, fw = src.out_c, src.out_h, src.out_w
        if not (fc and fh and fw) or fc * fh * fw != src.outputs:
            raise section.error(f"[shortcut] from={section.raw('from')}: layer "
                                f"{self.sources[0]} ({src.type}) has no c x h x w shape "
                                f"({src.outputs} values)", "from")
        stride, sample = fw // self.out_w, self.out_w // fw     # from larger / from smaller
        if stride != fh // self.out_h or sample != self.out_h // fh:
            raise section.error(f"[shortcut] from={section.raw('from')}: layer "
                                f"{self.sources[0]} is {fw} x {fh}, this layer {self.out_w} x "
                                f"{self.out_h}; the two sizes must differ by the same factor "
                                f"in w and h (Darknet aborts on an assert)", "from")
        stride, sample = max(stride, 1), max(sample, 1)
        c, h, w = min(fc, self.out_c), min(fh, self.out_h), min(fw, self.out_w)
        # (channel, row, column) slices of the overlap in this output and in the from output
        self.out_region = (slice(0, c), slice(0, h * sample, sample), slice(0, w * sample, sample))
        self.from_region = (slice(0, c), slice(0, h * stride, stride), slice(0, w * stride, stride))
        self.full_overlap = (c, h, w) == (self.out_c, self.out_h, self.out_w)

    # ------------------------------------------------------------------ AlexeyAB weights
    def _init_weights(self):
        n = len(self.sources) + 1
        if self.weights_type == "per_feature":
            self.weights = np.ones((n, 1), F32)
        elif self.weights_type == "per_channel":
            self.weights = np.ones((n, self.out_c), F32)
        else:
            self.weights = None
            self.weight_updates = None
            return
        self.weight_updates = np.zeros_like(self.weights)

    def normalized_weights(self):
        """(n+1, slots) effective weights a after weights_normalization."""
        w = self.weights
        if self.normalization == "relu":
            r = np.maximum(w, F32(0))
            return r / (EPS + r.sum(axis=0, keepdims=True))
        if self.normalization == "softmax":
            e = np.exp(w - w.max(axis=0, keepdims=True))
            return e / (EPS + e.sum(axis=0, keepdims=True))
        return w

    def _flat_weights(self):
        """[(outputs,) effective weight of input k at every flat index] for k = 0..n."""
        a = self.normalized_weights()
        per_slot = self.outputs // a.shape[1]
        return a, [np.repeat(a[k], per_slot) for k in range(a.shape[0])]

    # ------------------------------------------------------------------ forward
    def forward(self, net):
        prev = net.input.reshape(self.output.shape)
        if self.ab:
            self._forward_ab(prev)
        else:
            out = self.output
            out[...] = prev
            frm = self.source_layers[0].output.reshape((self.batch,) + self.source_shape)
            o = (slice(None),) + self.out_region
            f = (slice(None),) + self.from_region
            out[o] = self.alpha * out[o] + self.beta * frm[f]
        if self.activation.needs_input(self.exact):
            self.x_pre = self.output.copy()
        self.activation.forward(self.output, self.output)

    @property
    def source_shape(self):
        src = self.source_layers[0]
        return (src.out_c, src.out_h, src.out_w)

    def _flat(self, a):
        return a.reshape(self.batch, self.outputs)

    def _forward_ab(self, prev):
        flat = self._flat(self.output)
        if self.weights is None:
            flat[...] = self._flat(prev)
            for src in self.source_layers:
                n = min(src.outputs, self.outputs)
                flat[:, :n] += src.output.reshape(self.batch, -1)[:, :n]
            return
        _, a_flat = self._flat_weights()
        np.multiply(self._flat(prev), a_flat[0], out=flat)
        for src, ak in zip(self.source_layers, a_flat[1:]):
            n = min(src.outputs, self.outputs)
            flat[:, :n] += src.output.reshape(self.batch, -1)[:, :n] * ak[:n]

    # ------------------------------------------------------------------ backward
    def backward(self, net):
        self.activation.backprop(self.delta, self.output, self.x_pre, self.exact)
        if self.ab:
            self._backward_ab(net)
            return
        delta = self.delta
        o = (slice(None),) + self.out_region
        f = (slice(None),) + self.from_region
        if net.delta is not None:
            prev = net.delta.reshape(delta.shape)
            if self.exact and not self.full_overlap:
                scale = np.ones(delta.shape[1:], F32)
                scale[self.out_region] = self.alpha
                prev += scale * delta
            else:
                prev += self.alpha * delta
        src = self.source_layers[0]
        if src.delta is not None:
            frm = src.delta.reshape((self.batch,) + self.source_shape)
            frm[f] += self.beta * delta[o]

    def _inputs_ab(self, net):
        """[(flat (batch, outputs) input k, flat delta or None, n elements)] for k = 0..n."""
        items = [(self._flat(net.input), None if net.delta is None else self._flat(net.delta),
                  self.outputs)]
        for src in self.source_layers:
            n = min(src.outputs, self.outputs)
            d = None if src.delta is None else src.delta.reshape(self.batch, -1)
            items.append((src.output.reshape(self.batch, -1), d, n))
        return items

    def _backward_ab(self, net):
        delta = self._flat(self.delta)
        items = self._inputs_ab(net)
        if self.weights is None:
            for x, d, n in items:
                if d is not None:
                    d[:, :n] += delta[:, :n]
            return
        a, a_flat = self._flat_weights()
        for (x, d, n), ak in zip(items, a_flat):
            if d is not None:
                d[:, :n] += delta[:, :n] * ak[:n]
        slots = a.shape[1]
        # delta * input_k at every flat index (0 beyond input k's elements), summed per slot
        products = []
        for x, d, n in items:
            p = np.zeros((self.batch, self.outputs), F32)
            p[:, :n] = delta[:, :n] * x[:, :n]
            products.append(p)

        def per_slot(p):
            return p.reshape(self.batch, slots, -1).sum(axis=(0, 2))

        if self.exact:
            g_a = np.stack([per_slot(p) for p in products])            # d objective / d a
            self.weight_updates += self._through_normalization(g_a, a)
        elif self.normalization == "none":
            for k, p in enumerate(products):
                self.weight_updates[k] += per_slot(p)
        else:
            # AB: G = delta * prev * sum_j a_j at each element; update_k += delta*input_k*G.
            g = products[0] * sum(a_flat)
            for k, p in enumerate(products):
                self.weight_updates[k] += per_slot(p * g)

    def _through_normalization(self, g_a, a):
        """Chain rule from d/da (n+1, slots) to d/dw through weights_normalization."""
        w = self.weights
        if self.normalization == "none":
            return g_a
        if self.normalization == "relu":
            r = np.maximum(w, F32(0))
            s = EPS + r.sum(axis=0, keepdims=True)
            # da_i/dw_k = [w_k > 0] (delta_ik - a_i) / s
            return (w > 0) * (g_a - (g_a * a).sum(axis=0, keepdims=True)) / s
        # softmax with eps: da_i/dw_k = a_i (delta_ik - a_k - [k = argmax] (1 - sum_j a_j))
        ga_dot_a = (g_a * a).sum(axis=0, keepdims=True)
        grad = a * g_a - a * ga_dot_a
        top = np.argmax(w, axis=0)
        rest = 1 - a.sum(axis=0)
        grad[top, np.arange(w.shape[1])] -= rest * ga_dot_a[0]
        return grad

    # ------------------------------------------------------------------ parameters
    def parameters(self):
        return [] if self.weights is None else [("weights", self.weights)]

    def update(self, rate, momentum, decay, batch):
        if self.weights is None or self.dont_update:
            return
        lr = np.float32(rate * self.learning_rate_scale / batch)
        self.weight_updates -= np.float32(decay * batch) * self.weights
        self.weights += lr * self.weight_updates
        self.weight_updates *= np.float32(momentum)

    # ------------------------------------------------------------------ description
    def flops(self):
        # pjreddie counts no operations for a shortcut (its published BFLOPs are the sums of
        # the convolutional and connected layers); AlexeyAB's loader adds one per output and
        # source, doubled when weighted.  `info` follows pjreddie.
        return 0.0

    def describe(self):
        sources = ",".join(str(i) for i in self.sources)
        src = self.source_layers[0]
        inp = _shape_str(src.out_c, src.out_h, src.out_w, src.outputs) \
            if len(self.sources) == 1 else f"layers {sources}"
        kind = f"res {sources}"
        if self.weights is not None:
            kind += f" {self.weights_type}"
        return kind, "", inp, _shape_str(self.out_c, self.out_h, self.out_w, self.outputs)
