"""Darknet's class hierarchies (`tree=` in [softmax] and [region], YOLO9000's 9k.tree).

A tree file has one node per line, `name parent` (Darknet's read_tree: `sscanf("%s %d")`, so a
missing or unreadable parent is -1, a root).  Nodes are numbered by line.  Consecutive lines
with the same parent form a *group*: the hierarchical softmax normalises each group on its
own, and a node's absolute probability is the product of the conditional probabilities on its
path to the root.  As in read_tree, group 0 is the run of lines before the first change of
parent (empty when the first line already has a parent), `child[p]` is the group of p's
children (the last such group if they are not contiguous) and a leaf is a node nobody names
as parent.

Darknet opens the file relative to the working directory when it parses the cfg, and crashes
when it is missing; here that is a CfgError naming the cfg line, the key and the resolved path.
Darknet does not check the parents either: a parent that is not an earlier line would make it
write out of bounds (or multiply by a probability not yet computed), so it is an error here.
"""
import os
import re

import numpy as np

from .errors import CfgError
from .files import read_regular

F32 = np.float32
_PARENT = re.compile(r"\s*([+-]?\d+)")


class Tree:
    """parent[n], child[n] (group of the node's children, -1 if none), group[n] (the node's
    group), group_offset[g], group_size[g], leaf[n], name[n]; `levels[d]` lists the nodes at depth
    d + 1 (their parents are all at depth d), for vectorised products along the paths."""

    def __init__(self, names, parents, path="<tree>"):
        self.path = path
        self.name = list(names)
        self.parent = np.asarray(parents, np.int64)
        n = self.n = len(self.parent)
        self.child = np.full(n, -1, np.int64)
        self.group = np.zeros(n, np.int64)
        offsets, sizes = [], []
        last_parent, size = -1, 0
        for i, p in enumerate(self.parent):
            if p != last_parent:
                offsets.append(i - size)
                sizes.append(size)
                size, last_parent = 0, p
            self.group[i] = len(offsets)
            if p >= 0:
                self.child[p] = len(offsets)
            size += 1
        offsets.append(n - size)
        sizes.append(size)
        self.group_offset = np.array(offsets, np.int64)
        self.group_size = np.array(sizes, np.int64)
        self.groups = len(sizes)
        self.leaf = np.ones(n, bool)
        self.leaf[self.parent[self.parent >= 0]] = False
        self.depth = np.zeros(n, np.int64)
        for i, p in enumerate(self.parent):
            if p >= 0:
                self.depth[i] = self.depth[p] + 1
        deepest = int(self.depth.max(initial=0))
        self.levels = [np.flatnonzero(self.depth == d) for d in range(1, deepest + 1)]

    # ------------------------------------------------------------------ softmax
    def softmax(self, x, out, axis=-1, temperature=1.0):
        """Darknet's group-wise softmax of x into out along `axis`: each group's entries (the
        first `n` along the axis) get a max-subtracted softmax of x/T; entries past the
        tree's nodes are left as they are."""
        x = np.moveaxis(x, axis, -1)
        o = np.moveaxis(out, axis, -1)
        t = F32(temperature)
        for offset, size in zip(self.group_offset, self.group_size):
            if size == 0:
                continue
            z = x[..., offset:offset + size]
            e = z - z.max(axis=-1, keepdims=True)
            if t != 1:
                e = e / t
            e = np.exp(e.astype(np.float64)).astype(F32)
            o[..., offset:offset + size] = e / e.sum(axis=-1, keepdims=True, dtype=F32)
        return out

    def softmax_jacobian_t(self, p, g, axis=-1, temperature=1.0):
        """J^T g of the group-wise softmax, given its output p and a gradient g (same shape);
        entries past the tree's nodes do not depend on the input (0)."""
        p = np.moveaxis(p, axis, -1)
        g = np.moveaxis(g, axis, -1)
        dz = np.zeros_like(g)
        for offset, size in zip(self.group_offset, self.group_size):
            sl = slice(offset, offset + size)
            ps, gs = p[..., sl], g[..., sl]
            dz[..., sl] = ps * (gs - (gs * ps).sum(axis=-1, keepdims=True)) / F32(temperature)
        return np.moveaxis(dz, -1, axis)

    def group_sums(self, values, axis=-1):
        """Each entry replaced by the sum of its group's entries (along `axis`)."""
        v = np.moveaxis(values, axis, -1)
        out = np.zeros_like(v)
        for offset, size in zip(self.group_offset, self.group_size):
            sl = slice(offset, offset + size)
            out[..., sl] = v[..., sl].sum(axis=-1, keepdims=True)
        return np.moveaxis(out, -1, axis)

    # ------------------------------------------------------------------ decoding
    def hierarchy_predictions(self, predictions, only_leaves=False):
        """Darknet's hierarchy_predictions on a copy: (..., n) conditional probabilities ->
        absolute ones (each node times its parent's absolute probability, in line order);
        with only_leaves, inner nodes are set to 0."""
        p = np.array(predictions, F32, copy=True)
        for nodes in self.levels:
            p[..., nodes] *= p[..., self.parent[nodes]]
        if only_leaves:
            p[..., ~self.leaf] = 0
        return p

    def top_prediction(self, predictions, thresh):
        """Darknet's hierarchy_top_prediction for every row of (rows, n) probabilities:
        descend from group 0 to the most likely node of the group while the running product
        of the values passed stays > thresh; a leaf reached is returned, otherwise the parent
        of the group where it stopped (the best of group 0 when it stops there).  Ties go to
        the first node, and a group whose values are all <= 0 picks node 0 (Darknet's
        max_i = 0).  Darknet hands it the absolute probabilities of hierarchy_predictions,
        so the product counts every ancestor again; region_tree_boxes does the same."""
        pred = np.asarray(predictions, F32)
        rows = pred.shape[0]
        widest = int(self.group_size.max(initial=0))
        # padded[g, i] = node i of group g, or -1 past the group's end
        padded = np.full((self.groups, max(widest, 1)), -1, np.int64)
        for g, (offset, size) in enumerate(zip(self.group_offset, self.group_size)):
            padded[g, :size] = np.arange(offset, offset + size)
        result = np.zeros(rows, np.int64)
        group = np.zeros(rows, np.int64)
        p = np.ones(rows, F32)
        active = np.arange(rows)
        while active.size:
            members = padded[group[active]]                               # (k, widest)
            values = np.where(members >= 0,
                              pred[active[:, None], np.maximum(members, 0)], F32(0))
            values = np.where(values > 0, values, F32(0))   # `val > max` starting from 0
            best = values.max(axis=1)
            best_i = np.where(best > 0, members[np.arange(active.size), values.argmax(axis=1)], 0)
            product = (p[active] * best).astype(F32)
            go_on = product > F32(thresh)
            child = self.child[best_i]
            # descend: a leaf ends the search, otherwise continue in the child group
            leaf_end = go_on & (child < 0)
            result[active[leaf_end]] = best_i[leaf_end]
            stop = ~go_on
            at_root = stop & (group[active] == 0)
            result[active[at_root]] = best_i[at_root]
            inner = stop & ~at_root
            result[active[inner]] = self.parent[self.group_offset[group[active[inner]]]]
            deeper = go_on & (child >= 0)
            p[active[deeper]] = product[deeper]
            group[active[deeper]] = child[deeper]
            active = active[deeper]
        return result


def parse_tree_text(text, path="<tree>"):
    """A Tree from tree-file text (one `name parent` per line)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()          # fgetl returns nothing for the final newline
    names, parents = [], []
    for number, line in enumerate(lines, start=1):
        fields = line.split(None, 1)
        name = fields[0] if fields else ""
        parent = -1
        if len(fields) > 1:
            match = _PARENT.match(fields[1])
            if match:
                parent = int(match.group(1))
        index = number - 1
        if parent < -1 or parent >= index:
            raise CfgError(path, number, f"node '{name}' has parent {parent}: a parent must be "
                                         f"an earlier line (0..{index - 1}) or -1")
        names.append(name)
        parents.append(parent)
    if not names:
        raise CfgError(path, 0, "the tree file is empty")
    return Tree(names, parents, path)


def read_tree_file(section, key="tree"):
    """The Tree named by `key` in a cfg section, opened relative to the working directory as
    Darknet does; a missing or unreadable file is a CfgError at the cfg line of the key."""
    name = section.str(key)
    resolved = os.path.abspath(name)
    data = read_regular(resolved, lambda reason: section.error(
        f"{section.header} {key}={name}: cannot open the tree file {resolved} ({reason}; "
        f"Darknet opens it relative to the working directory)", key))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise section.error(f"{section.header} {key}={name}: {resolved} is not a text file",
                            key) from None
    return parse_tree_text(text, resolved)


def region_tree_boxes(output, anchors, classes, tree, coords=4, thresh=0.5, hier_thresh=0.5,
                      background=False):
    """Darknet's get_region_detections for a tree [region] layer, one image: the boxes and
    objectness of boxes.region_boxes, and one class per box: the node hierarchy_top_prediction
    picks from the absolute probabilities (hierarchy_predictions) with `hier_thresh`, whose
    prob is the objectness when that is > thresh (else 0).  Darknet reads the class planes
    from entry coords + !background and multiplies them in place in the layer's output; here
    the output is left as it is."""
    from .boxes import region_boxes
    out = np.asarray(output, F32)
    dets = region_boxes(out, anchors, classes, coords=coords, thresh=thresh,
                        hier_thresh=hier_thresh, background=background)
    n = len(np.asarray(anchors).reshape(-1)) // 2
    entries = coords + 1 + classes
    planes = out.reshape(n, entries, -1)
    first = coords + (0 if background else 1)
    cls = planes[:, first:first + classes].transpose(0, 2, 1).reshape(-1, classes)
    scale = (np.ones(len(cls), F32) if background
             else planes[:, coords].reshape(-1))
    top = tree.top_prediction(tree.hierarchy_predictions(cls), hier_thresh)
    for det, j, s in zip(dets, top, scale):
        det.prob[:] = 0
        det.prob[j] = s if s > F32(thresh) else F32(0)
    return dets


def read_class_map(section, key="map"):
    """Darknet's read_map: the file named by `key`, one integer per line (atoi: a line that
    does not start with a number reads as 0), opened relative to the working directory when
    the cfg is parsed; a missing file is a CfgError at the cfg line of the key."""
    name = section.str(key)
    resolved = os.path.abspath(name)
    text = read_regular(resolved, lambda reason: section.error(
        f"{section.header} {key}={name}: cannot open the class map {resolved} ({reason}; "
        f"Darknet opens it relative to the working directory)", key)).decode(
        "utf-8", errors="replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    values = []
    for line in lines:
        match = _PARENT.match(line)
        values.append(int(match.group(1)) if match else 0)
    return np.array(values, np.int64)
