"""[normalization] / [lrn]: local response normalisation across channels (both forks).

Keys: alpha (1e-4), beta (0.75), kappa (1), size (5).
    y_k = x_k * norm_k^(-beta),   norm_k = kappa + alpha * sum_{j in window(k)} x_j^2
(alpha is NOT divided by size).  Darknet builds the windows with a running sum that is off by
one, reproduced literally: channel 0 starts with channels [0, size/2) (a centred window would
be [0, size/2]), then channel k adds channel k + size/2 and subtracts channel
k - (size-1)/2 - 1.  For size 5 channel 2 is never added and, from channel 5 on, it is
subtracted (the norm can drop below kappa, and a negative norm gives NaN as in Darknet).
On nine channels of ones with size=5 alpha=1 kappa=1 the norms are 3 4 5 5 5 5 5 4 3.
`norms` (kappa + alpha*...) is kept per element, as Darknet's l.norms.

Backward: Darknet's is an approximation that OVERWRITES the previous delta:
prev = delta * norm^(-beta).  Exact mode adds the true gradient of the forward above, window
quirk included: dx_m = g_m norm_m^-beta - 2 alpha beta x_m sum_k A_km g_k x_k norm_k^(-beta-1),
with A the literal window matrix (entries -1, 0 or 1).
"""
import numpy as np

from .base import F32, Layer
from .registry import register


def darknet_lrn_windows(channels, size):
    """A[k, j]: how often channel j's square counts in norm_k with Darknet's running sum."""
    a = np.zeros((channels, channels), np.float32)
    a[0, :size // 2] = 1
    for k in range(1, channels):
        a[k] = a[k - 1]
        drop, add = k - (size - 1) // 2 - 1, k + size // 2
        if drop >= 0:
            a[k, drop] -= 1
        if add < channels:
            a[k, add] += 1
    return a


@register("normalization", "lrn")
class Normalization(Layer):
    type = "normalization"
    needs_image = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.alpha = F32(section.float("alpha", 1e-4))
        self.beta = F32(section.float("beta", 0.75))
        self.kappa = F32(section.float("kappa", 1.0))
        self.size = section.int("size", 5)
        if self.size < 1:
            raise section.error(f"[{section.type}] size={self.size}: must be at least 1", "size")
        if self.size // 2 > shape.c:
            raise section.error(f"[{section.type}] size={self.size}: half the window "
                                f"({self.size // 2}) is more than the {shape.c} channels "
                                f"(Darknet would read past the sample)", "size")
        self.set_output_shape(shape.c, shape.h, shape.w)
        self.windows = darknet_lrn_windows(shape.c, self.size)
        self.allocate(shape.batch)

    def allocate(self, batch):
        super().allocate(batch)
        self.norms = np.zeros_like(self.output)

    def _compute_norms(self, x):
        """Darknet's running sum over channels, as one cumulative sum along axis 1."""
        c, half, back = self.out_c, self.size // 2, (self.size - 1) // 2 + 1
        sq = x * x
        steps = np.zeros_like(sq)
        steps[:, 0] = self.kappa + self.alpha * sq[:, :half].sum(axis=1)
        if c > 1 + half:
            steps[:, 1:c - half] += self.alpha * sq[:, 1 + half:]
        if c > back:
            steps[:, back:] -= self.alpha * sq[:, :c - back]
        np.cumsum(steps, axis=1, out=self.norms)

    def forward(self, net):
        x = self.input_of(net)
        self._compute_norms(x)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.power(self.norms, -self.beta, out=self.output)
        self.output *= x

    def backward(self, net):
        if net.delta is None:
            return
        prev = net.delta.reshape(self.delta.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.power(self.norms, -self.beta)
            if not self.exact:
                np.multiply(self.delta, scale, out=prev)
                return
            x = self.input_of(net)
            g = self.delta
            b, c = self.batch, self.out_c
            inner = (g * x * scale / self.norms).reshape(b, c, -1)
            spread = np.matmul(self.windows.T, inner).reshape(g.shape)
            prev += g * scale - (2 * self.alpha * self.beta) * x * spread

    def describe(self):
        return "", f"size {self.size}", *super().describe()[2:]
