"""[yolo]: the YOLOv3 detection head (pjreddie's layer, with AlexeyAB's inference keys).

Layout (Darknet's): per sample, anchor-major; for anchor slot a (of the n anchors the `mask`
picks) the entries x, y, w, h, objectness, class_0..class_{C-1}, each an h*w plane.  The
previous layer must output exactly n*(C+5) x h x w values.

Forward (CPU): copy the input, logistic on x, y, objectness and the classes (not on w, h).
AlexeyAB's `new_coords=1` applies no activation at all.  AlexeyAB's `scale_x_y=s` is applied to
the output in forward, as AB's CPU forward does: x <- s*x - (s-1)/2 (likewise y), so decoding
reads x, y as they are.

Loss (whenever a truth is given; Darknet computes it when training).  This is pjreddie's
forward_yolo_layer: truth = up to `max` boxes (x, y, w, h, class) per sample, relative to the
network input, the list ending at the first box with x == 0 (a sample holds max(90, max)*5
values: pjreddie always sizes it for 90 boxes).  Then
  * every prediction gets objectness delta -obj, or 0 when its best IoU with any truth is
    > ignore_thresh; when that IoU is > truth_thresh it is treated as a positive (below);
  * every truth goes to the cell holding its centre and to the best of all `num` anchors by
    shape-only IoU; if that anchor is in this layer's mask, the box gets
    delta = (2 - w*h) * (target - output) on x, y (after the logistic), w, h (raw), with targets
    x*lw - col, y*lh - row, log(w*net_w/anchor_w), log(h*net_h/anchor_h); objectness 1 - obj;
    classes onehot - p.  Later truths overwrite earlier ones at the same anchor and cell; for
    the classes, pjreddie's check of the class-0 delta applies (if it is already non-zero only
    the new class's entry is set, so a cell keeps every class assigned to it).
  * cost = sum of squared deltas (Darknet's).  backward adds the delta to the previous delta.
Darknet's deltas are written on the activated outputs without the logistic's derivative.  Each
one is nevertheless exactly the negative gradient, with respect to this layer's INPUT z, of
    objective = sum w*s*BCE(t', sigmoid(z))   (x, y, objectness, classes; BCE(t, p) =
                                                 softplus(z) - t*z, s = scale_x_y on x, y and 1
                                                 elsewhere, t' = (t + (s-1)/2)/s)
              + sum w/2*(t - z)^2              (w, h)
where w and t are the weight and target each delta has, and the assignment of truths to
anchors (and the ignore mask) is held fixed: it is piecewise constant in the predictions.  So
gradients="exact" uses the same deltas (in `loss_delta`), reports that sum as `objective`, and
only differs for deltas that later layers send back into `delta`: those get the activation's
derivative, where Darknet passes them through unchanged.

AlexeyAB keys: inference keys (scale_x_y, new_coords, nms_kind, beta_nms, and the tracker's
keys) are honoured or accepted.  The training loss follows the network's fork
(`fork.yolo_loss`): with AlexeyAB's, the truth is `max=` boxes (default 200) of 6 values
(x, y, w, h, class, track_id) and the loss is AB's, every loss key included
(yolo_loss_ab.py, which documents it).  With pjreddie's, AB's loss keys are accepted at load,
and training with one that would change pjreddie's loss (iou_loss other than mse, normalizers
other than 1, iou_thresh < 1, max_delta, label_smooth_eps, counters_per_class, focal_loss,
objectness_smooth, embedding_layer, new_coords) raises a CfgError naming the key and the fork
to use.  `map` (a class-remapping file) is refused.  The truth layout is the layer's
`truth_floats` x `max_boxes` (pjreddie: 5 x max(90, max)); the data loader reads it here.
"""
import math

import numpy as np

from ..activations import get_activation
from ..errors import DataError, ShapeError, warn
from .base import F32, Layer
from .registry import register
from .yolo_loss_ab import AlexeyABYoloLoss

LOGISTIC = get_activation("logistic")
F64 = np.float64

NMS_KINDS = ("default", "greedynms", "diounms")
IOU_LOSSES = ("mse", "giou", "diou", "ciou", "iou")

# AlexeyAB loss keys: (key, value that leaves pjreddie's loss unchanged, reader).
AB_LOSS_KEYS = (
    ("iou_loss", "mse", "str"), ("iou_normalizer", 1.0, "float"),
    ("obj_normalizer", 1.0, "float"), ("cls_normalizer", 1.0, "float"),
    ("delta_normalizer", 1.0, "float"), ("max_delta", math.inf, "float"),
    ("label_smooth_eps", 0.0, "float"), ("counters_per_class", None, "str"),
    ("focal_loss", 0, "int"), ("objectness_smooth", 0, "int"), ("iou_thresh", 1.0, "float"),
    ("embedding_layer", None, "str"), ("new_coords", 0, "int"),
)
# Accepted and without effect here: augmentation (read by the training data loader), AB's
# logging and its tracker's parameters, and iou_thresh_kind (only used with iou_thresh < 1).
INERT_KEYS = (("jitter", "float"), ("random", "float"), ("resize", "float"),
              ("show_details", "int"), ("track_history_size", "int"), ("sim_thresh", "float"),
              ("dets_for_track", "int"), ("dets_for_show", "int"),
              ("track_ciou_norm", "float"), ("iou_thresh_kind", "str"))


# ----------------------------------------------------------------------------- shared helpers
# (used by the [region] and [detection] heads too)

def read_key(section, key, kind, default=None):
    return getattr(section, kind)(key, default)


def refuse_map(section, header):
    if section.has("map"):
        raise section.error(f"{header} map={section.raw('map')}: class-remapping files are not "
                            f"supported by minidarknet", "map")


def valid_truth_count(boxes):
    """Darknet stops reading a sample's truth at the first box whose x is 0."""
    zero = np.flatnonzero(boxes[:, 0] == 0)
    return int(zero[0]) if zero.size else boxes.shape[0]


def class_ids(values, classes, layer):
    """Darknet's (int) cast of the class entries; one outside [0, classes) is a DataError
    (pjreddie would write past the class entries)."""
    if not np.all(np.isfinite(values)):
        raise DataError(f"layer {layer.index} ({layer.type}): a truth box has a non-finite "
                        f"class id")
    ids = np.trunc(values).astype(np.int64)
    bad = (ids < 0) | (ids >= classes)
    if bad.any():
        raise DataError(f"layer {layer.index} ({layer.type}): truth class id "
                        f"{int(ids[bad][0])} is outside 0..{classes - 1} (classes={classes})")
    return ids


def cell_location(x, y, w, h, layer):
    """Darknet's cell for a truth centre: i = (int)(x*w), j = (int)(y*h) (float32 products),
    flat location j*w + i (as Darknet indexes it).  Outside the grid is a DataError."""
    i = int(F32(x) * F32(w))
    j = int(F32(y) * F32(h))
    loc = j * w + i
    if not 0 <= loc < w * h or i < 0 or j < 0:
        raise DataError(f"layer {layer.index} ({layer.type}): truth box centre ({float(x):g}, "
                        f"{float(y):g}) is outside the image (relative coordinates 0..1)")
    return i, j, loc


def box_iou_f32(a, b):
    """Darknet's box_iou in float32 for centre boxes (..., 4), broadcast; NaN -> 0 (a NaN IoU
    never wins Darknet's strict > comparisons, which start from 0)."""
    a = np.asarray(a, F32)
    b = np.asarray(b, F32)
    two = F32(2)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ow = (np.minimum(a[..., 0] + a[..., 2] / two, b[..., 0] + b[..., 2] / two)
              - np.maximum(a[..., 0] - a[..., 2] / two, b[..., 0] - b[..., 2] / two))
        oh = (np.minimum(a[..., 1] + a[..., 3] / two, b[..., 1] + b[..., 3] / two)
              - np.maximum(a[..., 1] - a[..., 3] / two, b[..., 1] - b[..., 3] / two))
        inter = np.where((ow < 0) | (oh < 0), F32(0), ow * oh).astype(F32)
        union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
        iou = (inter / union).astype(F32)
    return np.where(np.isnan(iou), F32(0), iou)


def first_best(iou):
    """(best value, first index of it) along the last axis, as Darknet's strict-> scan from 0."""
    if iou.shape[-1] == 0:
        return np.zeros(iou.shape[:-1], F32), np.zeros(iou.shape[:-1], np.int64)
    index = np.argmax(iou, axis=-1)
    best = np.take_along_axis(iou, index[..., None], axis=-1)[..., 0]
    return np.maximum(best, F32(0)), np.where(best > 0, index, 0)


def iou_gradient(a, b):
    """IoU of centre boxes a, b (..., 4) in float64 and d IoU / d a (..., 4) (a.e.)."""
    a = np.asarray(a, F64)
    b = np.asarray(b, F64)
    grads = []
    overlaps = []
    for c, s in ((0, 2), (1, 3)):
        a_lo, a_hi = a[..., c] - a[..., s] / 2, a[..., c] + a[..., s] / 2
        b_lo, b_hi = b[..., c] - b[..., s] / 2, b[..., c] + b[..., s] / 2
        hi_is_a = a_hi < b_hi
        lo_is_a = a_lo > b_lo
        overlaps.append(np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo))
        # d overlap / d centre, d overlap / d size
        grads.append((hi_is_a.astype(F64) - lo_is_a, 0.5 * hi_is_a + 0.5 * lo_is_a))
    ow, oh = overlaps
    hit = (ow > 0) & (oh > 0)
    inter = np.where(hit, ow * oh, 0.0)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
        d_inter = [np.where(hit, grads[0][0] * oh, 0.0), np.where(hit, grads[1][0] * ow, 0.0),
                   np.where(hit, grads[0][1] * oh, 0.0), np.where(hit, grads[1][1] * ow, 0.0)]
        d_union = [-d_inter[0], -d_inter[1], a[..., 3] - d_inter[2], a[..., 2] - d_inter[3]]
        grad = np.stack([(di * union - inter * du) / (union * union)
                         for di, du in zip(d_inter, d_union)], axis=-1)
    return np.nan_to_num(iou), np.nan_to_num(grad)


def softplus(z):
    z = np.asarray(z, F64)
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def logistic_grad(y):
    return y * (F32(1) - y)


def check_truth_size(layer, net):
    per_sample = net.truth.size // layer.batch
    if per_sample != layer.truths:
        raise ShapeError(f"layer {layer.index} ({layer.type}) reads {layer.truths} truth values "
                         f"per sample, but the network's truth has {per_sample} (the heads of "
                         f"a network must agree on the truth size)")
    return net.truth.reshape(layer.batch, layer.truths)


# ----------------------------------------------------------------------------- the layer

@register("yolo")
class Yolo(Layer):
    type = "yolo"
    has_cost = True
    needs_image = True
    letterbox_corrected = True    # get_network_boxes applies the letterbox correction

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        self.classes = s.int("classes", 20)
        self.total = s.int("num", 1)
        if self.classes < 0 or self.total < 1:
            raise s.error(f"[yolo] classes={self.classes}, num={self.total}: need classes >= 0 "
                          f"and num >= 1")
        mask = s.ints("mask")
        self.mask = np.arange(self.total) if mask is None else np.array(mask, np.int64)
        self.n = len(self.mask)
        if self.n and self.mask.min() < 0:
            raise s.error(f"[yolo] mask={s.raw('mask')} names an anchor outside 0..{self.total - 1}"
                          f" (num={self.total})", "mask")
        self.biases = self._read_anchors(s)
        # truth layout (the data loader reads it from here): boxes of truth_floats values
        fork = self.fork
        self.truth_floats = fork.yolo_truth_floats
        self.max_boxes = s.int("max", fork.yolo_max_boxes)
        if self.max_boxes < 0:
            raise s.error(f"[yolo] max={self.max_boxes}: must not be negative", "max")
        if fork.yolo_loss == "alexeyab":
            self.truths = self.truth_floats * self.max_boxes
        else:   # pjreddie sizes every sample's truth for 90 boxes, whatever `max` says
            self.truths = self.truth_floats * max(fork.yolo_max_boxes, self.max_boxes)
        self.ignore_thresh = s.float("ignore_thresh", 0.5)
        self.truth_thresh = s.float("truth_thresh", 1.0)
        refuse_map(s, "[yolo]")
        self.scale_x_y = s.float("scale_x_y", 1.0)
        self.new_coords = s.int("new_coords", 0)
        self._read_nms(s)
        self.ab_loss = None
        if fork.yolo_loss == "alexeyab":
            self.loss_problems = []
            self.ab_loss = AlexeyABYoloLoss(self, s)
            self._read_tracker_keys(s)
        else:
            self.loss_problems = self._read_ab_loss_keys(s)
        for key, kind in INERT_KEYS:
            read_key(s, key, kind)
        expected = self.n * (self.classes + 5)
        if expected * shape.h * shape.w != shape.inputs:
            raise s.error(
                f"[yolo] with classes={self.classes} and {self.n} anchors in mask needs "
                f"{expected} x {shape.h} x {shape.w} inputs, but the layer before outputs "
                f"{shape.c} x {shape.h} x {shape.w}: set filters={expected} in the "
                f"[convolutional] layer before it (filters = (classes + 5) * anchors in mask)")
        self.set_output_shape(expected, shape.h, shape.w)
        self.cost = 0.0
        self.objective = 0.0
        self.loss_delta = None
        self.allocate(shape.batch)

    # ------------------------------------------------------------------ cfg
    def _read_anchors(self, s):
        biases = np.full(2 * self.total, 0.5, F32)   # Darknet's default for missing anchors
        anchors = s.floats("anchors") or []
        beyond = self.n and self.mask.max() >= self.total
        if beyond:
            biases = self._anchors_beyond_num(s, anchors)
        elif len(anchors) > biases.size:
            warn(f"{s.where('anchors')}: {len(anchors)} anchor values for num={self.total} "
                 f"({2 * self.total} used; AlexeyAB ignores the rest, pjreddie overruns)")
        used = anchors[:biases.size]
        biases[:len(used)] = used
        return biases

    def _anchors_beyond_num(self, s, anchors):
        """A mask naming anchors >= num (AlexeyAB's cspx-p7-mish.cfg: mask=16,17,18,19 with
        num=16 and 40 anchor values).  Both forks allocate 2*num anchor values and read the
        masked ones past that array (AlexeyAB: undefined memory; pjreddie first writes every
        listed value there, overrunning the array).  When the cfg lists them, use the listed
        values (what the file means) and say so; the training loss still matches truths
        against the first num anchors only, as Darknet's best-anchor search does."""
        top = int(self.mask.max())
        if len(anchors) < 2 * (top + 1):
            raise s.error(f"[yolo] mask={s.raw('mask')} names anchor {top}, but num={self.total}"
                          f" and anchors= lists {len(anchors) // 2} (Darknet would read past its "
                          f"anchor array)", "mask")
        warn(f"{s.where('mask')}: mask={s.raw('mask')} names anchors beyond num={self.total}; "
             f"AlexeyAB keeps {2 * self.total} anchor values and reads these past them "
             f"(undefined memory; pjreddie writes the extra values there, overrunning its "
             f"array), minidarknet uses the values anchors= lists (training still matches "
             f"truths against the first {self.total} anchors only)")
        if len(anchors) > 2 * (top + 1):
            warn(f"{s.where('anchors')}: {len(anchors)} anchor values; {2 * (top + 1)} used")
        return np.full(2 * (top + 1), 0.5, F32)

    def _read_nms(self, s):
        self.nms_kind = s.str("nms_kind", "default")
        if self.nms_kind not in NMS_KINDS:
            warn(f"{s.where('nms_kind')}: nms_kind={self.nms_kind} is not known; using the "
                 f"default NMS (as AlexeyAB does)")
            self.nms_kind = "default"
        self.beta_nms = s.float("beta_nms", 0.6)

    @staticmethod
    def _read_tracker_keys(s):
        """embedding_layer only tells AB's tracker ([contrastive]) where the embeddings are;
        it does not change this loss."""
        s.str("embedding_layer")

    def _read_ab_loss_keys(self, s):
        """[(key, message)] for AB loss keys whose value would change pjreddie's loss."""
        problems = []
        for key, neutral, kind in AB_LOSS_KEYS:
            if not s.has(key):
                continue
            value = read_key(s, key, kind)
            if key == "iou_loss" and value not in IOU_LOSSES:
                value = "iou"   # AlexeyAB reads any other name as plain IoU loss
            if key == "iou_thresh":
                changes = value < 1.0
            elif neutral is None:
                changes = True
            else:
                changes = value != neutral
            if changes:
                problems.append((key, f"{key}={s.raw(key)}"))
        return problems

    # ------------------------------------------------------------------ views
    @property
    def entries(self):
        return self.classes + 5

    def _planes(self, a):
        """(batch, n, 5 + classes, h*w) view."""
        return a.reshape(self.batch, self.n, self.entries, self.out_h * self.out_w)

    # ------------------------------------------------------------------ forward
    def forward(self, net):
        out = self._planes(self.output)
        out[...] = self._planes(net.input)
        if not self.new_coords:
            LOGISTIC.forward(out[:, :, 0:2], out[:, :, 0:2])
            LOGISTIC.forward(out[:, :, 4:], out[:, :, 4:])
        s = F32(self.scale_x_y)
        if s != 1:
            xy = out[:, :, 0:2]
            xy *= s
            xy += F32(-0.5 * (self.scale_x_y - 1))
        self.loss_delta = None
        if net.truth is None:
            return
        self._check_trainable()
        truth = check_truth_size(self, net)
        if self.ab_loss is not None:
            self._ab_forward(net, out, truth)
            return
        target, weight = self._targets(truth, net.w, net.h)
        delta = (weight * (target - out)).astype(F32)
        self.cost = float(np.square(delta, dtype=F64).sum())
        self.objective = self._objective(self._planes(net.input), target, weight)
        if self.exact:
            self.loss_delta = delta
        else:
            self.allocate_delta()
            self._planes(self.delta)[...] = delta

    def _ab_forward(self, net, out, truth):
        """AlexeyAB's loss (yolo_loss_ab.py): Darknet's delta, cost, and the objective."""
        delta, self.cost, self.objective, exact = self.ab_loss.compute(
            out, self._planes(net.input), truth, net.w, net.h, self.exact)
        if self.exact:
            self.loss_delta = exact
        else:
            self.allocate_delta()
            self._planes(self.delta)[...] = delta

    def _check_trainable(self):
        if self.loss_problems:
            key, shown = self.loss_problems[0]
            others = ", ".join(p[1] for p in self.loss_problems[1:])
            raise self.section.error(
                f"[yolo] {shown}: an AlexeyAB loss option, and the network follows pjreddie's "
                f"Darknet" + (f" (also: {others})" if others else "")
                + "; load it with fork='alexeyab' (--fork alexeyab) to train with AlexeyAB's "
                "loss, or remove the key(s) to train with pjreddie's", key)

    # ------------------------------------------------------------------ loss
    def _pred_boxes(self, out_b, net_w, net_h):
        """Darknet's get_yolo_box for every (anchor slot, cell): (n, h*w, 4) float32."""
        h, w = self.out_h, self.out_w
        cell = np.arange(h * w)
        col, row = (cell % w).astype(F32), (cell // w).astype(F32)
        anchors = self.biases.reshape(-1, 2)[self.mask]           # (n, 2)
        x = (col + out_b[:, 0]) / F32(w)
        y = (row + out_b[:, 1]) / F32(h)
        with np.errstate(over="ignore"):
            if self.new_coords:
                bw = out_b[:, 2] * out_b[:, 2] * F32(4) * anchors[:, :1] / F32(net_w)
                bh = out_b[:, 3] * out_b[:, 3] * F32(4) * anchors[:, 1:] / F32(net_h)
            else:
                bw = (np.exp(out_b[:, 2].astype(F64)) * anchors[:, :1] / net_w).astype(F32)
                bh = (np.exp(out_b[:, 3].astype(F64)) * anchors[:, 1:] / net_h).astype(F32)
        return np.stack([x, y, bw, bh], axis=-1).astype(F32)

    def _box_targets(self, box, anchor, col, row, net_w, net_h):
        """(targets[4], scale) of delta_yolo_box for a truth box on an anchor at a cell."""
        tx = F32(box[0]) * F32(self.out_w) - F32(col)
        ty = F32(box[1]) * F32(self.out_h) - F32(row)
        aw, ah = self.biases[2 * anchor], self.biases[2 * anchor + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            tw = F32(np.log(F64(F32(box[2]) * F32(net_w) / aw)))
            th = F32(np.log(F64(F32(box[3]) * F32(net_h) / ah)))
        scale = F32(2) - F32(box[2]) * F32(box[3])
        return (tx, ty, tw, th), scale

    def _targets(self, truth, net_w, net_h):
        """Per-element (target, weight) with delta = weight*(target - output), filled in
        Darknet's order."""
        out = self._planes(self.output)
        target = np.zeros_like(out)
        weight = np.zeros_like(out)
        boxes_all = truth[:, :5 * self.max_boxes].reshape(self.batch, self.max_boxes, 5)
        anchors_rel = np.zeros((self.total, 4), F32)
        anchors_rel[:, 2] = self.biases[0:2 * self.total:2] / F32(net_w)
        anchors_rel[:, 3] = self.biases[1:2 * self.total:2] / F32(net_h)
        for b in range(self.batch):
            boxes = boxes_all[b, :valid_truth_count(boxes_all[b])]
            ids = class_ids(boxes[:, 4], self.classes, self) if len(boxes) else boxes[:, 4]
            self._negatives(b, out[b], boxes, ids, target[b], weight[b], net_w, net_h)
            self._positives(out[b], boxes, ids, target[b], weight[b], anchors_rel, net_w, net_h)
        return target, weight

    def _negatives(self, b, out_b, boxes, ids, target_b, weight_b, net_w, net_h):
        """Darknet's first loop: objectness for every prediction (ignore / truth_thresh)."""
        weight_b[:, 4] = 1
        if not len(boxes):
            return
        pred = self._pred_boxes(out_b, net_w, net_h)                     # (n, hw, 4)
        best, best_t = first_best(box_iou_f32(pred[:, :, None, :], boxes[None, None, :, :4]))
        weight_b[:, 4][best > F32(self.ignore_thresh)] = 0
        slots, cells = np.nonzero(best > F32(self.truth_thresh))
        w = self.out_w
        for a, cell in zip(slots, cells):
            t = best_t[a, cell]
            target_b[a, 4, cell], weight_b[a, 4, cell] = 1, 1
            if self.classes:
                weight_b[a, 5:, cell] = 1
                target_b[a, 5:, cell] = 0
                target_b[a, 5 + ids[t], cell] = 1
            self._set_box(target_b, weight_b, a, cell, boxes[t], self.mask[a], cell % w,
                          cell // w, net_w, net_h)

    def _set_box(self, target_b, weight_b, slot, cell, box, anchor, col, row, net_w, net_h):
        targets, scale = self._box_targets(box, anchor, col, row, net_w, net_h)
        target_b[slot, 0:4, cell] = targets
        weight_b[slot, 0:4, cell] = scale

    def _positives(self, out_b, boxes, ids, target_b, weight_b, anchors_rel, net_w, net_h):
        """Darknet's second loop: each truth on its best anchor (if masked here), in order."""
        if not len(boxes):
            return
        shifted = np.zeros((len(boxes), 4), F32)
        shifted[:, 2:] = boxes[:, 2:4]
        _, best_n = first_best(box_iou_f32(anchors_rel[None, :, :], shifted[:, None, :]))
        slot_of = {int(m): k for k, m in reversed(list(enumerate(self.mask)))}
        for t, box in enumerate(boxes):
            slot = slot_of.get(int(best_n[t]), -1)
            if slot < 0:
                continue
            i, j, cell = cell_location(box[0], box[1], self.out_w, self.out_h, self)
            self._set_box(target_b, weight_b, slot, cell, box, best_n[t], i, j, net_w, net_h)
            target_b[slot, 4, cell], weight_b[slot, 4, cell] = 1, 1
            if self.classes:
                self._set_class(out_b, target_b, weight_b, slot, cell, ids[t])

    @staticmethod
    def _set_class(out_b, target_b, weight_b, slot, cell, class_id):
        """pjreddie's delta_yolo_class: if the class-0 delta is already non-zero, only the
        given class's entry is set; otherwise every class gets onehot - p."""
        first = weight_b[slot, 5, cell] * (target_b[slot, 5, cell] - out_b[slot, 5, cell])
        if first != 0:
            target_b[slot, 5 + class_id, cell], weight_b[slot, 5 + class_id, cell] = 1, 1
            return
        target_b[slot, 5:, cell] = 0
        target_b[slot, 5 + class_id, cell] = 1
        weight_b[slot, 5:, cell] = 1

    def _objective(self, z, target, weight):
        """The sum whose negative gradient w.r.t. the input z is the delta (module docstring)."""
        if self.new_coords:
            return float("nan")
        z = z.astype(F64)
        t = target.astype(F64)
        w = weight.astype(F64)
        s = F64(self.scale_x_y)
        total = 0.0
        xy = (t[:, :, 0:2] + 0.5 * (s - 1)) / s
        total += (w[:, :, 0:2] * s * (softplus(z[:, :, 0:2]) - xy * z[:, :, 0:2])).sum()
        total += (w[:, :, 4:] * (softplus(z[:, :, 4:]) - t[:, :, 4:] * z[:, :, 4:])).sum()
        total += (w[:, :, 2:4] * 0.5 * np.square(t[:, :, 2:4] - z[:, :, 2:4])).sum()
        return float(total)

    # ------------------------------------------------------------------ backward
    def backward(self, net):
        if net.delta is None:
            return
        prev = self._planes(net.delta)
        if not self.exact:
            prev += self._planes(self.delta)
            return
        prev += self._input_delta(self._planes(self.delta))
        if self.loss_delta is not None:
            prev += self.loss_delta

    def _input_delta(self, g):
        """Deltas w.r.t. the output taken back through the activations (exact mode)."""
        out = self._planes(self.output)
        dz = g.copy()
        s = F32(self.scale_x_y)
        if self.new_coords:
            dz[:, :, 0:2] *= s
            return dz
        sig_xy = (out[:, :, 0:2] + F32(0.5 * (self.scale_x_y - 1))) / s
        dz[:, :, 0:2] *= s * logistic_grad(sig_xy)
        dz[:, :, 4:] *= logistic_grad(out[:, :, 4:])
        return dz

    # ------------------------------------------------------------------ decoding
    def boxes(self, index, thresh, hier, net_w, net_h):
        """Darknet's get_yolo_detections for batch item `index` (boxes relative to the
        network input, before any letterbox correction)."""
        from ..boxes import yolo_boxes
        return yolo_boxes(self.output[index], self.mask, self.biases, self.classes, net_w,
                          net_h, thresh, scale_x_y=1.0, new_coords=bool(self.new_coords))
