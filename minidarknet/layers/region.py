"""[region]: the YOLOv2 detection head (pjreddie's CPU layer).

Layout as [yolo] (pjreddie's): per sample, anchor-major; for each of the `num` anchors the
entries x, y, w, h, (extra coords), objectness, class_0..class_{C-1}, each an h*w plane.
Anchors are in grid-cell units.

Forward (CPU): copy the input; logistic on x, y; logistic on objectness unless `background`;
classes: with softmax=1 a softmax across the class planes of each cell, computed from the raw
input, temperature fixed at 1 (with background=1 the objectness plane joins it); else logistic.
Extra coords (coords > 4) get no activation.  With `tree=FILE` (YOLO9000, minidarknet.tree)
the classes get the tree's group-wise softmax instead, temperature 1, as pjreddie's GPU
forward and AlexeyAB compute it (pjreddie's CPU branch still indexes the class planes with
offsets from the old interleaved layout); decoding then follows the hierarchy
(hierarchy_top_prediction with `hier`), and training a tree layer is refused.  A class map
(`map=FILE`) is read as Darknet reads it (the file must exist); training with it is refused.

Loss (whenever a truth is given; pjreddie's forward_region_layer).  Truth: 30 boxes of
(x, y, w, h, extra coords..., class) per sample, relative, ending at the first x == 0.
  * every prediction: objectness delta noobject_scale*(0 - obj), or 0 when its best IoU with
    any truth is > thresh; while net.seen < 12800 every anchor's box is also pulled towards the
    anchor itself at the cell centre with scale .01;
  * every truth: the anchor at its cell whose box (predicted, or the anchor itself with
    bias_match=1) best matches its shape gets box deltas coord_scale*(2 - w*h)*(target - out)
    on x, y (after the logistic), w, h (raw); extra coords mask_scale (truncated to an int, as
    Darknet's int parameter does) * (truth - out), the truth values read from offset 5 of the
    box as Darknet does (with coords=5 that is the class id); objectness object_scale*(1 - obj)
    (rescore=1: IoU(pred, truth) - obj); classes class_scale*(onehot - p), where with logistic
    classes a cell whose class-0 delta is already non-zero only gets the new class's entry.
  * cost = sum of squared deltas.
**pjreddie's CPU backward is commented out: the layer passes no gradient to the network.**
gradients="darknet" reproduces that (the network's deltas stay as they are; `delta` holds the
loss's delta for inspection).  gradients="exact" passes the gradient of
    objective = sum w/2*(t - sigmoid(z))^2          (x, y, objectness)
              + sum w/2*(t - z)^2                   (w, h, extra coords)
              + sum class_scale*CE(onehot, softmax) (softmax classes) or w*BCE (logistic)
with the truth assignment held fixed (it is piecewise constant); that is what Darknet's GPU
backward does (logistic derivative on x, y, objectness; class deltas unchanged), plus, with
rescore=1, the derivative of the IoU target through the predicted box, which Darknet drops.
background=1 has no exact gradient here and is refused in that mode.
"""
import numpy as np

from ..activations import get_activation
from ..tree import read_class_map, read_tree_file, region_tree_boxes
from .base import F32, Layer
from .registry import register
from .yolo import (F64, box_iou_f32, cell_location, check_truth_size, class_ids, first_best,
                   iou_gradient, logistic_grad, softplus, valid_truth_count)

LOGISTIC = get_activation("logistic")
REGION_TRUTH_BOXES = 30      # pjreddie's region layer always reads 30 boxes
PRIOR_SEEN = 12800           # images after which the anchor prior stops
PRIOR_SCALE = F32(.01)


@register("region")
class Region(Layer):
    type = "region"
    has_cost = True
    needs_image = True
    letterbox_corrected = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        self.coords = s.int("coords", 4)
        self.classes = s.int("classes", 20)
        self.n = s.int("num", 1)
        if self.coords < 4 or self.classes < 0 or self.n < 1:
            raise s.error(f"[region] coords={self.coords}, classes={self.classes}, num={self.n}: "
                          f"need coords >= 4, classes >= 0 and num >= 1")
        self.tree = read_tree_file(s) if s.has("tree") else None
        if self.tree is not None and self.tree.n != self.classes:
            raise s.error(f"[region] tree={s.raw('tree')}: the tree has {self.tree.n} nodes "
                          f"but classes={self.classes} (Darknet would read past the class "
                          f"planes or leave some raw)", "tree")
        # Darknet reads the class map (a training-time remapping of truth class ids) when it
        # parses the layer, so the file must exist; training with it is refused below.
        self.class_map = read_class_map(s) if s.has("map") else None
        self.softmax = s.int("softmax", 0)
        self.background = s.int("background", 0)
        self.rescore = s.int("rescore", 0)
        self.thresh = s.float("thresh", 0.5)
        self.bias_match = s.int("bias_match", 0)
        self.coord_scale = F32(s.float("coord_scale", 1.0))
        self.object_scale = F32(s.float("object_scale", 1.0))
        self.noobject_scale = F32(s.float("noobject_scale", 1.0))
        self.mask_scale = s.float("mask_scale", 1.0)
        self.class_scale = F32(s.float("class_scale", 1.0))
        # Read by Darknet but unused by pjreddie's CPU region layer (or by training only).
        for key in ("log", "sqrt", "absolute"):
            s.int(key, 0)
        # Darknet's data loader fills `max` boxes; the loss always reads 30 per sample.
        self.max_boxes = min(s.int("max", REGION_TRUTH_BOXES), REGION_TRUTH_BOXES)
        for key in ("jitter", "random", "resize"):
            s.float(key, 0.0)
        # AlexeyAB-only loss options: refused for training when they would change the loss.
        self.loss_problems = [(k, f"{k}={s.raw(k)}") for k in ("classfix", "focal_loss")
                              if s.int(k, 0) != 0]
        if self.exact and self.background:
            raise s.error("[region] background=1 has no exact gradient in minidarknet; use "
                          "gradients='darknet'", "background")
        self.biases = self._read_anchors(s)
        self.entries = self.coords + 1 + self.classes
        if self.n * self.entries * shape.h * shape.w != shape.inputs:
            expected = self.n * self.entries
            raise s.error(
                f"[region] with coords={self.coords}, classes={self.classes} and num={self.n} "
                f"needs {expected} x {shape.h} x {shape.w} inputs, but the layer before outputs "
                f"{shape.c} x {shape.h} x {shape.w}: set filters={expected} in the "
                f"[convolutional] layer before it (filters = num * (classes + coords + 1))")
        self.truths = REGION_TRUTH_BOXES * (self.coords + 1)
        self.set_output_shape(self.n * self.entries, shape.h, shape.w)
        self.cost = 0.0
        self.objective = 0.0
        self.loss_delta = None
        self.allocate(shape.batch)

    def _read_anchors(self, s):
        from ..errors import warn
        biases = np.full(2 * self.n, 0.5, F32)
        anchors = s.floats("anchors")
        if anchors:
            if len(anchors) > biases.size:
                warn(f"{s.where('anchors')}: {len(anchors)} anchor values for num={self.n} "
                     f"({biases.size} used)")
            used = anchors[:biases.size]
            biases[:len(used)] = used
        return biases

    # ------------------------------------------------------------------ views
    def _planes(self, a):
        return a.reshape(self.batch, self.n, self.entries, self.out_h * self.out_w)

    @property
    def _class_group(self):
        """Entries softmax-ed together: the classes, plus the objectness with background=1."""
        first = self.coords + (0 if self.background else 1)
        return slice(first, first + self.classes + self.background)

    # ------------------------------------------------------------------ forward
    def forward(self, net):
        x = self._planes(net.input)
        out = self._planes(self.output)
        out[...] = x
        LOGISTIC.forward(out[:, :, 0:2], out[:, :, 0:2])
        obj = self.coords
        if not self.background:
            LOGISTIC.forward(out[:, :, obj:obj + 1], out[:, :, obj:obj + 1])
        if self.tree is not None:
            classes = slice(self.coords + 1, self.coords + 1 + self.classes)
            self.tree.softmax(x[:, :, classes], out[:, :, classes], axis=2)
        elif self.softmax:
            group = self._class_group
            z = x[:, :, group]
            e = np.exp((z - z.max(axis=2, keepdims=True)).astype(F64)).astype(F32)
            out[:, :, group] = e / e.sum(axis=2, keepdims=True, dtype=F32)
        else:
            LOGISTIC.forward(out[:, :, obj + 1:], out[:, :, obj + 1:])
        self.loss_delta = None
        if net.truth is None:
            return
        for key, what in (("tree", self.tree), ("map", self.class_map)):
            if what is not None:
                raise self.section.error(
                    f"[region] {key}={self.section.raw(key)}: training with a class "
                    f"{'hierarchy' if key == 'tree' else 'map'} is not implemented in "
                    f"minidarknet (inference only)", key)
        if self.loss_problems:
            key, shown = self.loss_problems[0]
            raise self.section.error(f"[region] {shown}: an AlexeyAB loss option minidarknet "
                                     f"does not train with (pjreddie's loss only)", key)
        truth = check_truth_size(self, net)
        target, weight, rescored = self._targets(truth, net.seen)
        delta = (weight * (target - out)).astype(F32)
        self.cost = float(np.square(delta, dtype=F64).sum())
        self.objective = self._objective(x, target, weight)
        self.allocate_delta()
        if self.exact:
            self.loss_delta = self._exact_loss_delta(delta, weight, rescored)
        else:
            self._planes(self.delta)[...] = delta

    # ------------------------------------------------------------------ loss
    def _pred_boxes(self, out_b):
        """Darknet's get_region_box for every (anchor, cell): (n, h*w, 4) float32."""
        h, w = self.out_h, self.out_w
        cell = np.arange(h * w)
        col, row = (cell % w).astype(F32), (cell // w).astype(F32)
        anchors = self.biases.reshape(-1, 2)
        x = (col + out_b[:, 0]) / F32(w)
        y = (row + out_b[:, 1]) / F32(h)
        with np.errstate(over="ignore"):
            bw = (np.exp(out_b[:, 2].astype(F64)) * anchors[:, :1] / w).astype(F32)
            bh = (np.exp(out_b[:, 3].astype(F64)) * anchors[:, 1:] / h).astype(F32)
        return np.stack([x, y, bw, bh], axis=-1).astype(F32)

    def _box_targets(self, box, anchor, col, row):
        """delta_region_box targets for a (relative) box on an anchor at a cell."""
        w, h = self.out_w, self.out_h
        tx = F32(box[0]) * F32(w) - F32(col)
        ty = F32(box[1]) * F32(h) - F32(row)
        with np.errstate(divide="ignore", invalid="ignore"):
            tw = np.log((F32(box[2]) * F32(w) / self.biases[0::2][anchor]).astype(F64))
            th = np.log((F32(box[3]) * F32(h) / self.biases[1::2][anchor]).astype(F64))
        return tx, ty, tw.astype(F32), th.astype(F32)

    def _targets(self, truth, seen):
        out = self._planes(self.output)
        target = np.zeros_like(out)
        weight = np.zeros_like(out)
        rescored = []        # (b, anchor, cell, truth box) whose objectness target is an IoU
        per_box = self.coords + 1
        all_boxes = truth.reshape(self.batch, REGION_TRUTH_BOXES, per_box)
        for b in range(self.batch):
            boxes = all_boxes[b, :valid_truth_count(all_boxes[b])]
            ids = class_ids(boxes[:, self.coords], self.classes, self) if len(boxes) else []
            pred = self._pred_boxes(out[b])
            self._negatives(pred, boxes, target[b], weight[b], seen)
            for t, box in enumerate(boxes):
                hit = self._positive(out[b], pred, box, truth[b, t * per_box:], ids[t],
                                     target[b], weight[b])
                rescored = [r for r in rescored if r[:3] != (b,) + hit[:2]]
                if self.rescore and not self.background:
                    rescored.append((b, hit[0], hit[1], box[:4].copy()))
        return target, weight, rescored

    def _negatives(self, pred, boxes, target_b, weight_b, seen):
        obj = self.coords
        weight_b[:, obj] = self.noobject_scale
        target_b[:, obj] = 1 if self.background else 0
        if len(boxes):
            best, _ = first_best(box_iou_f32(pred[:, :, None, :], boxes[None, None, :, :4]))
            weight_b[:, obj][best > F32(self.thresh)] = 0
        if seen < PRIOR_SEEN:
            h, w = self.out_h, self.out_w
            cell = np.arange(h * w)
            col, row = cell % w, cell // w
            cx = ((col + .5) / w).astype(F32)
            cy = ((row + .5) / h).astype(F32)
            for a in range(self.n):
                aw = self.biases[2 * a] / F32(w)
                ah = self.biases[2 * a + 1] / F32(h)
                targets = self._box_targets((cx, cy, aw, ah), a, col, row)
                for e in range(4):
                    target_b[a, e] = targets[e]
                weight_b[a, 0:4] = PRIOR_SCALE

    def _positive(self, out_b, pred_b, box, flat_truth, class_id, target_b, weight_b):
        """One truth (Darknet's second loop body); returns (anchor, cell) it was put on."""
        w, h = self.out_w, self.out_h
        i, j, cell = cell_location(box[0], box[1], w, h, self)
        pred = pred_b[:, cell]                                            # (n, 4)
        shapes = pred.copy()
        if self.bias_match:
            shapes[:, 2] = self.biases[0::2] / F32(w)
            shapes[:, 3] = self.biases[1::2] / F32(h)
        shapes[:, :2] = 0
        shifted = np.array([0, 0, box[2], box[3]], F32)
        _, best_n = first_best(box_iou_f32(shapes, shifted)[None, :])
        a = int(best_n[0])
        target_b[a, 0:4, cell] = self._box_targets(box, a, i, j)
        weight_b[a, 0:4, cell] = self.coord_scale * (F32(2) - F32(box[2]) * F32(box[3]))
        if self.coords > 4:
            extra = slice(4, self.coords)
            target_b[a, extra, cell] = flat_truth[5:5 + self.coords - 4]
            weight_b[a, extra, cell] = F32(int(self.mask_scale))
        obj = self.coords
        weight_b[a, obj, cell] = self.object_scale
        if self.background:
            target_b[a, obj, cell] = 0
        elif self.rescore:
            target_b[a, obj, cell] = box_iou_f32(pred[a], box[:4])
        else:
            target_b[a, obj, cell] = 1
        self._set_class(out_b, target_b, weight_b, a, cell, class_id)
        return a, cell

    def _set_class(self, out_b, target_b, weight_b, a, cell, class_id):
        first = self.coords + 1
        if not self.softmax:      # Darknet's `tag`: only logistic classes keep earlier ones
            d0 = weight_b[a, first, cell] * (target_b[a, first, cell] - out_b[a, first, cell])
            if d0 != 0:
                target_b[a, first + class_id, cell] = 1
                weight_b[a, first + class_id, cell] = self.class_scale
                return
        target_b[a, first:, cell] = 0
        target_b[a, first + class_id, cell] = 1
        weight_b[a, first:, cell] = self.class_scale

    # ------------------------------------------------------------------ exact mode
    def _objective(self, z, target, weight):
        out = self._planes(self.output).astype(F64)
        z = z.astype(F64)
        t = target.astype(F64)
        w = weight.astype(F64)
        obj = self.coords
        logistic = [0, 1] + ([] if self.background else [obj])
        linear = [2, 3] + list(range(4, self.coords))
        total = sum((w[:, :, e] * 0.5 * (t[:, :, e] - out[:, :, e]) ** 2).sum() for e in logistic)
        total += sum((w[:, :, e] * 0.5 * (t[:, :, e] - z[:, :, e]) ** 2).sum() for e in linear)
        cls = slice(obj + 1, None)
        if self.softmax:
            with np.errstate(divide="ignore", invalid="ignore"):
                ce = np.where(w[:, :, cls] * t[:, :, cls] != 0,
                              -w[:, :, cls] * t[:, :, cls] * np.log(out[:, :, cls]), 0.0)
            total += ce.sum()
        else:
            total += (w[:, :, cls] * (softplus(z[:, :, cls]) - t[:, :, cls] * z[:, :, cls])).sum()
        return float(total)

    def _exact_loss_delta(self, delta, weight, rescored):
        """The loss's delta w.r.t. the input z: logistic derivative on x, y, objectness (as
        Darknet's GPU backward), class deltas as they are, and the rescore IoU's derivative."""
        out = self._planes(self.output)
        dz = delta.copy()
        obj = self.coords
        dz[:, :, 0:2] *= logistic_grad(out[:, :, 0:2])
        dz[:, :, obj] *= logistic_grad(out[:, :, obj])
        w, h = self.out_w, self.out_h
        for b, a, cell, box in rescored:
            pred = self._pred_boxes(out[b])[a, cell]
            iou, grad = iou_gradient(pred, box)
            sx, sy = logistic_grad(out[b, a, 0:2, cell].astype(F64))
            chain = np.array([sx / w, sy / h, pred[2], pred[3]], F64)
            scale = F64(weight[b, a, obj, cell]) * (iou - F64(out[b, a, obj, cell]))
            dz[b, a, 0:4, cell] -= (scale * grad * chain).astype(F32)
        return dz

    # ------------------------------------------------------------------ backward
    def backward(self, net):
        if not self.exact or net.delta is None:
            return        # pjreddie's CPU backward_region_layer does nothing
        prev = self._planes(net.delta)
        prev += self._input_delta(self._planes(self.delta))
        if self.loss_delta is not None:
            prev += self.loss_delta

    def _input_delta(self, g):
        out = self._planes(self.output)
        dz = g.copy()
        obj = self.coords
        dz[:, :, 0:2] *= logistic_grad(out[:, :, 0:2])
        dz[:, :, obj] *= logistic_grad(out[:, :, obj])
        cls = slice(obj + 1, None)
        if self.tree is not None:
            dz[:, :, cls] = self.tree.softmax_jacobian_t(out[:, :, cls], g[:, :, cls], axis=2)
        elif self.softmax:
            p = out[:, :, cls]
            dz[:, :, cls] = p * (g[:, :, cls] - (g[:, :, cls] * p).sum(axis=2, keepdims=True))
        else:
            dz[:, :, cls] *= logistic_grad(out[:, :, cls])
        return dz

    # ------------------------------------------------------------------ decoding
    def boxes(self, index, thresh, hier, net_w, net_h):
        """Darknet's get_region_detections for batch item `index`: every cell x anchor
        (boxes relative to the network input, before any letterbox correction)."""
        from ..boxes import region_boxes
        if self.tree is not None:
            return region_tree_boxes(self.output[index], self.biases, self.classes, self.tree,
                                     coords=self.coords, thresh=thresh, hier_thresh=hier,
                                     background=bool(self.background))
        return region_boxes(self.output[index], self.biases, self.classes, coords=self.coords,
                            thresh=thresh, hier_thresh=hier, background=bool(self.background))
