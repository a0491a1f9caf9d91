"""[softmax] / [soft]: softmax over `groups` contiguous chunks of each sample, with temperature.

With a truth (and noloss=0) the layer is also a cross-entropy loss: Darknet writes
delta = truth - p and cost = sum(-log p where truth != 0), and its backward passes delta
through unchanged (no softmax Jacobian), so a [cost] layer after it adds scale*(truth - p)
straight onto the logits.  gradients="exact" keeps the loss gradient (truth - p*sum(truth))/T
apart and applies the true softmax Jacobian to what later layers send back.

tree=FILE (YOLO9000's hierarchy, minidarknet.tree): the softmax runs within each group of the
tree instead of over `groups` chunks (Darknet reads the file, relative to the working
directory, when it builds the layer); outputs past the tree's nodes stay 0.  The CPU loss is
unchanged (Darknet's GPU also masks truth entries equal to its SECRET_NUM).
"""
import numpy as np

from ..errors import warn
from ..tree import read_tree_file
from .base import F32, Layer
from .registry import register


@register("softmax", "soft")
class Softmax(Layer):
    type = "softmax"
    has_cost = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        self.groups = section.int("groups", 1)
        if self.groups < 1 or shape.inputs % self.groups:
            raise section.error(f"[softmax] groups={self.groups} does not divide the "
                                f"{shape.inputs} inputs", "groups")
        self.temperature = section.float("temperature", 1.0)
        if self.temperature == 0:
            raise section.error("[softmax] temperature=0", "temperature")
        self.tree = read_tree_file(section) if section.has("tree") else None
        if self.tree is not None and self.tree.n > shape.inputs:
            raise section.error(f"[softmax] tree={section.raw('tree')}: the tree has "
                                f"{self.tree.n} nodes, more than the {shape.inputs} inputs",
                                "tree")
        if self.tree is not None and self.tree.n < shape.inputs:
            warn(f"{section.where('tree')}: the tree has {self.tree.n} nodes for "
                 f"{shape.inputs} inputs; the outputs past it stay 0, as in Darknet")
        self.spatial = section.int("spatial", 0)   # GPU-only in Darknet; ignored on CPU
        self.noloss = section.int("noloss", 0)
        # Darknet leaves out_c/out_h/out_w at 0: no image shape after a softmax.
        self.set_output_shape(0, 0, 0, shape.inputs)
        self.cost = 0.0
        self.loss_delta = None
        self.allocate(shape.batch)

    def _groups_view(self, a):
        return a.reshape(self.batch, self.groups, self.inputs // self.groups)

    def forward(self, net):
        x = self._groups_view(net.input)
        p = self._groups_view(self.output)
        t = F32(self.temperature)
        if self.tree is not None:
            self.tree.softmax(net.input.reshape(self.batch, self.inputs),
                              self.output.reshape(self.batch, self.inputs), temperature=t)
        else:
            np.subtract(x, x.max(axis=2, keepdims=True), out=p)
            if t != 1:
                p /= t
            np.exp(p, out=p)
            p /= p.sum(axis=2, keepdims=True)
        self.loss_delta = None
        if net.truth is None or self.noloss:
            return
        truth = self.truth_for_loss(net, p.shape)
        with np.errstate(divide="ignore"):
            loss = np.where(truth != 0, -np.log(p), F32(0))
        self.cost = float(loss.sum(dtype=np.float64))
        # Darknet's cost counts -log p wherever truth != 0; the loss whose gradient the delta
        # is, and so the objective, is the cross-entropy -sum(truth * log p) (the same for
        # 0/1 truths, different for soft labels).
        self.objective = float(np.where(truth != 0, truth * loss, F32(0)).sum(dtype=np.float64))
        if self.exact and self.tree is not None:
            flat = truth.reshape(self.batch, self.inputs)
            self.loss_delta = ((flat - self.output.reshape(flat.shape)
                                * self.tree.group_sums(flat)) / t).reshape(p.shape)
            self.loss_delta.reshape(self.batch, self.inputs)[:, self.tree.n:] = 0
        elif self.exact:
            self.loss_delta = (truth - p * truth.sum(axis=2, keepdims=True)) / t
        else:
            np.subtract(truth, p, out=self._groups_view(self.delta))

    def backward(self, net):
        if net.delta is None:
            return
        prev = net.delta.reshape(self.delta.shape)
        if not self.exact:
            prev += self.delta
            return
        g = self._groups_view(self.delta)
        p = self._groups_view(self.output)
        if self.tree is not None:
            dz = self.tree.softmax_jacobian_t(p.reshape(self.batch, -1), g.reshape(self.batch, -1),
                                              temperature=self.temperature).reshape(g.shape)
        else:
            dz = p * (g - (g * p).sum(axis=2, keepdims=True)) / F32(self.temperature)
        if self.loss_delta is not None:
            dz += self.loss_delta
        prev += dz.reshape(prev.shape)

    def describe(self):
        return "", "", f"{self.inputs}", f"{self.outputs}"
