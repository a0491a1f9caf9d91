"""AlexeyAB's [yolo] training loss (CPU forward_yolo_layer / process_batch, box.c's dx_box_iou).

Used by the [yolo] layer when the network's fork is AlexeyAB's (`fork.yolo_loss`).  Truth: per
sample `max=` boxes (default 200) of 6 floats (x, y, w, h, class_id, track_id), relative to
the network input, the list ending at the first box with x == 0.

gradients="darknet" computes AB's deltas on the layer's OUTPUT, in AB's order:
  1. every (anchor slot, cell): objectness delta obj_normalizer*(0 - obj); 0 when its best IoU
     with a truth is > ignore_thresh, counting only cells with any class prob > .25
     (objectness_smooth=1: max(that, obj_normalizer*(IoU - obj))); a best IoU > truth_thresh
     makes the cell a positive (objectness, classes and box, as below, not counted).
  2. every truth, in order: its cell and the best of all anchors by shape IoU; if that anchor
     is in the mask: box delta (accumulated), objectness class_multiplier*obj_normalizer*
     (1 - obj) (objectness_smooth: only where it is still 0), class deltas (delta_yolo_class);
     with iou_thresh < 1 every other masked anchor whose anchor IoU (iou_thresh_kind) is >
     iou_thresh too; then (iou_thresh < 1) each cell with a non-zero objectness delta has its
     box deltas divided by its number of positive class deltas.
  Box deltas: mse: scale*(t - out)*iou_normalizer with scale = 2 - w*h (targets as pjreddie's,
  new_coords: tw = sqrt(w*net_w/(4*anchor_w))); giou/diou/ciou/iou: dx_box_iou, the derivative
  of the IoU kind with respect to the relative box (x, y, w, h) as box.c writes it (dw, dh not
  halved, CIoU's alpha held constant and its atan derivative without 1/(w^2+h^2)), then
  dw, dh *= exp(tw), exp(th) (not with new_coords), *= iou_normalizer*class_multiplier,
  NaN/inf -> 0, clipped to +-max_delta.
  Classes (delta_yolo_class): if the class entry is already non-zero only it is rewritten
  (y - p)*class_multiplier; otherwise every class gets y - p with y label-smoothed as
  y*(1 - eps) + eps/2, the class_id entry times class_multiplier*cls_normalizer (only with
  counters_per_class); focal_loss: (onehot - p)*0.5*(-(1 - pt)*(2*pt*log(pt) + pt - 1)).
  Cost: mse: sum(delta^2); otherwise iou_normalizer*sum(1 - IoU)/count (GIoU for giou) +
  obj_normalizer*sum(delta^2 over every entry but the 4 box entries); show_details=0:
  sum(delta^2).  class_multiplier = min(max_count/count_c, max_delta) from counters_per_class.

gradients="exact" reports `objective` and its exact negative gradient with respect to the
layer's INPUT z.  The assignment of truths to anchors and cells, the ignore mask, the class
match, which of two candidate targets AB's max() picks and the iou_thresh averaging counts
are held fixed (they are piecewise constant in z).  With p = logistic(z) (p = z with
new_coords) and W, T the weight and target of each AB objectness/class delta W*(T - p):
    objective = sum W*BCE(T, p)                  objectness and classes (new_coords:
                                                 W/2*(T - p)^2); an objectness_smooth or
                                                 truth_thresh target T = IoU (or IoU^2) is a
                                                 function of the cell's box, differentiated
              + sum 0.5*FL(onehot_c, p_c)        focal_loss rows, FL(1, p) = -(1-p)^2 log p,
                                                 FL(0, p) = -p^2 log(1 - p)
              + sum w*(1 - K(box(z), truth))     iou losses; K = IoU, GIoU, IoU - rho^2/c^2
                                                 (diou) or that - alpha*v with alpha a
                                                 function of the box too (ciou), w =
                                                 iou_normalizer*class_multiplier/(averaging
                                                 count)
              + sum w*(s*BCE(t', sigmoid(z)) on x, y + (t - z)^2/2 on w, h)   mse, w =
                                                 scale*iou_normalizer*class_multiplier,
                                                 t' = (t + (s-1)/2)/s (new_coords:
                                                 w/(2s)*(t - out)^2 on x, y)
Darknet's objectness/class and mse deltas are exactly these gradients; the iou-loss box
deltas, focal's negative-class deltas and the smooth targets' box terms differ and are
computed exactly.  max_delta clipping is a clip of Darknet's deltas, not part of any
objective: exact mode does not clip (a warning says so once).
"""
import math

import numpy as np

from ..errors import warn
from .base import F32

F64 = np.float64
IOU_KINDS = ("mse", "giou", "diou", "ciou", "iou")
FOCAL_ALPHA = 0.5          # AB's delta_yolo_class: alpha = 0.5, gamma = 2 in its formula
CLASS_MATCH = 0.25         # compare_yolo_class's threshold
_warned_exact_clip = []


def iou_kind_of(name):
    """AB reads any iou_loss / iou_thresh_kind name it does not know as plain IoU."""
    return name if name in IOU_KINDS else "iou"


def class_multipliers(section, classes, max_delta):
    """AB's get_classes_multipliers: max_count / count_c capped at max_delta (counts < 1 -> 1)."""
    if not section.has("counters_per_class"):
        return None
    counts = section.ints("counters_per_class")
    if counts is None or len(counts) != classes:
        got = 0 if counts is None else len(counts)
        raise section.error(f"{section.header} counters_per_class has {got} values, classes="
                            f"{classes} (AlexeyAB exits: they must match)", "counters_per_class")
    counts = np.maximum(np.array(counts, F64), 1).astype(F32)
    mult = (np.max(counts) / counts).astype(F32)
    return np.minimum(mult, F32(max_delta)).astype(F32)


# ----------------------------------------------------------------------------- box geometry

def _tblr(box):
    x, y, w, h = box[..., 0], box[..., 1], box[..., 2], box[..., 3]
    return y - h / 2, y + h / 2, x - w / 2, x + w / 2


def box_iou_kinds(a, b):
    """AB's box_iou, box_giou, box_diou (rho^2/c^2 to the power .6) and box_ciou of centre
    boxes (..., 4), broadcast, in float32 as AB computes them (pow and atan in double), so
    that threshold decisions agree with Darknet's.  Returns a dict kind -> array."""
    a = np.asarray(a, F32)
    b = np.asarray(b, F32)
    at, ab, al, ar = _tblr(a)
    bt, bb, bl, br = _tblr(b)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        iw = np.minimum(ar, br) - np.maximum(al, bl)
        ih = np.minimum(ab, bb) - np.maximum(at, bt)
        inter = np.where((iw < 0) | (ih < 0), 0.0, iw * ih)
        union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
        iou = np.where((inter == 0) | (union == 0), 0.0, inter / union)
        cw = np.maximum(ar, br) - np.minimum(al, bl)
        ch = np.maximum(ab, bb) - np.minimum(at, bt)
        c_area = cw * ch
        giou = np.where(c_area == 0, iou, iou - (c_area - union) / c_area)
        c2 = cw * cw + ch * ch
        rho2 = (a[..., 0] - b[..., 0]) ** 2 + (a[..., 1] - b[..., 1]) ** 2
        diou = np.where(c2 == 0, iou, iou - np.power((rho2 / c2).astype(F64), 0.6))
        v = (4 / math.pi ** 2 * (np.arctan((b[..., 2] / b[..., 3]).astype(F64))
                                 - np.arctan((a[..., 2] / a[..., 3]).astype(F64))) ** 2)
        v = v.astype(F32)
        alpha = (v / ((1 - iou + v).astype(F64) + 0.000001)).astype(F32)
        ciou = np.where(c2 == 0, iou, iou - (rho2 / c2 + alpha * v))
    return {"iou": iou, "giou": giou, "diou": diou, "ciou": ciou, "mse": iou}


def dx_box_iou(pred, truth, kind):
    """box.c's dx_box_iou for (k, 4) boxes: (dx, dy, dw, dh) as AB computes them (in float32,
    so that its edge comparisons agree with Darknet's; atan in double)."""
    pred = np.asarray(pred, F32)
    truth = np.asarray(truth, F32)
    px, py, pw, ph = pred.T
    tx, ty, tw, th = truth.T
    top, bot, left, right = _tblr(pred)
    pt, pb = np.minimum(top, bot), np.maximum(top, bot)
    pl, pr = np.minimum(left, right), np.maximum(left, right)
    tt, tb, tl, tr = _tblr(truth)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        area = (pb - pt) * (pr - pl)
        area_t = (tb - tt) * (tr - tl)
        ih = np.minimum(pb, tb) - np.maximum(pt, tt)
        iw = np.minimum(pr, tr) - np.maximum(pl, tl)
        inter = iw * ih
        union = area + area_t - inter
        dist2 = (px - tx) ** 2 + (py - ty) ** 2
        gcw = np.maximum(pr, tr) - np.minimum(pl, tl)
        gch = np.maximum(pb, tb) - np.minimum(pt, tt)
        g_area = gcw * gch
        # d area / d (t, b, l, r); d inter; d union; d enclosing area
        d_area = (-(pr - pl), pr - pl, -(pb - pt), pb - pt)
        d_inter = (np.where(pt > tt, -iw, 0.0), np.where(pb < tb, iw, 0.0),
                   np.where(pl > tl, -ih, 0.0), np.where(pr < tr, ih, 0.0))
        d_union = tuple(a - i for a, i in zip(d_area, d_inter))
        d_c = (np.where(pt < tt, -gcw, 0.0), np.where(pb > tb, gcw, 0.0),
               np.where(pl < tl, -gch, 0.0), np.where(pr > tr, gch, 0.0))
        p = [np.where(union > 0, (union * di - inter * du) / (union * union), 0.0)
             for di, du in zip(d_inter, d_union)]
        # "correct corner selection": sequential in C, so both become the second one
        tb_ok = top < bot
        lr_ok = left < right
        p[0] = np.where(tb_ok, p[0], p[1])
        p[1] = np.where(tb_ok, p[1], p[0])
        p[2] = np.where(lr_ok, p[2], p[3])
        p[3] = np.where(lr_ok, p[3], p[2])
        apart = (iw <= 0) | (ih <= 0)
        if kind == "giou":
            g = [(g_area * du - union * dc) / (g_area * g_area) for du, dc in zip(d_union, d_c)]
            p = [np.where(g_area > 0, pi + gi, pi) for pi, gi in zip(p, g)]
            p = [np.where(apart, gi, pi) for pi, gi in zip(p, g)]
        d_t, d_b, d_l, d_r = p
        dx, dy, dw, dh = d_l + d_r, d_t + d_b, d_r - d_l, d_b - d_t
        if kind in ("diou", "ciou"):
            cw = np.maximum(px + pw / 2, tx + tw / 2) - np.minimum(px - pw / 2, tx - tw / 2)
            ch = np.maximum(py + ph / 2, ty + th / 2) - np.minimum(py - ph / 2, ty - th / 2)
            c2 = cw * cw + ch * ch
            half = F32(0.5)
            dcw_dx = (pr > tr).astype(F32) - (pl < tl)
            dcw_dw = half * (pr > tr) + half * (pl < tl)
            dch_dy = (pb > tb).astype(F32) - (pt < tt)
            dch_dh = half * (pb > tb) + half * (pt < tt)
            ex = (2 * (tx - px) * c2 - 2 * cw * dcw_dx * dist2) / (c2 * c2)
            ey = (2 * (ty - py) * c2 - 2 * ch * dch_dy * dist2) / (c2 * c2)
            ew = 2 * cw * dcw_dw * dist2 / (c2 * c2)
            eh = 2 * ch * dch_dh * dist2 / (c2 * c2)
            if kind == "ciou":
                gap = np.arctan((tw / th).astype(F64)) - np.arctan((pw / ph).astype(F64))
                v = (4 / math.pi ** 2 * gap * gap).astype(F32)
                alpha = (v / ((1 - inter / union + v).astype(F64) + 0.000001)).astype(F32)
                ew = ew + alpha * (8 / math.pi ** 2 * gap * ph).astype(F32)
                eh = eh + alpha * (-8 / math.pi ** 2 * gap * pw).astype(F32)
            near = c2 > 0
            dx, dy = np.where(near, dx + ex, dx), np.where(near, dy + ey, dy)
            dw, dh = np.where(near, dw + ew, dw), np.where(near, dh + eh, dh)
            dx, dy = np.where(apart, ex, dx), np.where(apart, ey, dy)
            dw, dh = np.where(apart, ew, dw), np.where(apart, eh, dh)
    return np.stack([dx, dy, dw, dh], axis=-1)


def iou_kind_gradient(pred, truth, kind):
    """K(pred, truth) and dK/dpred (k, 4) in float64, exactly (a.e.), for K = IoU, GIoU,
    DIoU = IoU - rho^2/c^2, CIoU = DIoU - alpha*v (alpha = v/(1 - IoU + v + 1e-6), a
    function of pred).  Reverse mode written out by hand."""
    pred = np.asarray(pred, F64)
    truth = np.asarray(truth, F64)
    x, y, w, h = pred.T
    tx, ty, tw, th = truth.T
    t, b, l, r = _tblr(pred)
    tt, tb, tl, tr = _tblr(truth)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        iw = np.minimum(r, tr) - np.maximum(l, tl)
        ih = np.minimum(b, tb) - np.maximum(t, tt)
        hit = (iw > 0) & (ih > 0)
        inter = np.where(hit, iw * ih, 0.0)
        union = w * h + tw * th - inter
        iou = inter / union
        cw = np.maximum(r, tr) - np.minimum(l, tl)
        ch = np.maximum(b, tb) - np.minimum(t, tt)
        g_iou = np.ones_like(iou)
        g_union = np.zeros_like(iou)
        g_cw = np.zeros_like(iou)
        g_ch = np.zeros_like(iou)
        gx = np.zeros_like(iou)
        gy = np.zeros_like(iou)
        gw = np.zeros_like(iou)
        gh = np.zeros_like(iou)
        value = iou
        if kind == "giou":
            c_area = cw * ch
            value = iou - 1 + union / c_area
            g_union += 1 / c_area
            g_c = -union / (c_area * c_area)
            g_cw += g_c * ch
            g_ch += g_c * cw
        elif kind in ("diou", "ciou"):
            c2 = cw * cw + ch * ch
            rho2 = (x - tx) ** 2 + (y - ty) ** 2
            value = iou - rho2 / c2
            g_rho2 = -1 / c2
            g_c2 = rho2 / (c2 * c2)
            gx += g_rho2 * 2 * (x - tx)
            gy += g_rho2 * 2 * (y - ty)
            g_cw += g_c2 * 2 * cw
            g_ch += g_c2 * 2 * ch
            if kind == "ciou":
                k = 4 / math.pi ** 2
                gap = np.arctan(tw / th) - np.arctan(w / h)
                v = k * gap * gap
                denom = 1 - iou + v + 0.000001
                value = value - v * v / denom
                g_iou = g_iou - v * v / (denom * denom)
                g_v = -(2 * v / denom - v * v / (denom * denom))
                g_atan = g_v * (-2 * k * gap)         # d/d atan(w/h)
                q = w * w + h * h
                gw += g_atan * h / q
                gh += g_atan * (-w) / q
        g_inter = g_iou / union
        g_union = g_union - g_iou * inter / (union * union)
        gw += g_union * h
        gh += g_union * w
        g_inter = g_inter - g_union
        g_iw = np.where(hit, g_inter * ih, 0.0)
        g_ih = np.where(hit, g_inter * iw, 0.0)
        gr = g_iw * (r < tr) + g_cw * (r > tr)
        gl = -g_iw * (l > tl) - g_cw * (l < tl)
        gb = g_ih * (b < tb) + g_ch * (b > tb)
        gt = -g_ih * (t > tt) - g_ch * (t < tt)
        gx += gl + gr
        gy += gt + gb
        gw += (gr - gl) / 2
        gh += (gb - gt) / 2
    return value, np.stack([gx, gy, gw, gh], axis=-1)


def softplus(z):
    z = np.asarray(z, F64)
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


def logistic64(z):
    return 0.5 * (1 + np.tanh(0.5 * np.asarray(z, F64)))


def truth_cells(tbox, layer):
    """Flat cell j*w + i of each truth centre, i = (int)(x*w), j = (int)(y*h) in float32;
    a centre outside the grid is the DataError cell_location raises."""
    from .yolo import cell_location
    with np.errstate(invalid="ignore"):
        fi = tbox[:, 0].astype(F32) * F32(layer.out_w)
        fj = tbox[:, 1].astype(F32) * F32(layer.out_h)
    ok = np.isfinite(fi) & np.isfinite(fj) & (fi > -1) & (fj > -1) & (fi < layer.out_w) & \
        (fj < layer.out_h)
    cells = np.zeros(len(tbox), np.int64)
    for bad in np.flatnonzero(~ok):       # rare: raises, or Darknet's wrap to the next row
        cells[bad] = cell_location(tbox[bad, 0], tbox[bad, 1], layer.out_w, layer.out_h,
                                   layer)[2]
    i = np.trunc(np.where(ok, fi, 0)).astype(np.int64)
    j = np.trunc(np.where(ok, fj, 0)).astype(np.int64)
    return np.where(ok, j * layer.out_w + i, cells)


# ----------------------------------------------------------------------------- the loss

class AlexeyABYoloLoss:
    """The loss keys of one [yolo] section and AB's process_batch over a batch."""

    smooth_positives = True       # objectness_smooth also applies to step 2's positives
    class_check_first = False     # delta_yolo_class checks the class_id entry (not class 0)
    reads_focal = True            # focal_loss and show_details are [yolo] keys

    def __init__(self, layer, section):
        s = section
        self.layer = layer
        self.iou_loss = iou_kind_of(s.str("iou_loss", "mse"))
        self.iou_normalizer = s.float("iou_normalizer", 0.75)
        self.obj_normalizer = s.float("obj_normalizer", 1.0)
        self.cls_normalizer = s.float("cls_normalizer", 1.0)
        s.float("delta_normalizer", 1.0)      # AB applies it in the GPU backward only
        self.max_delta = s.float("max_delta", math.inf)
        self.multipliers = class_multipliers(s, layer.classes, self.max_delta)
        self.label_smooth_eps = s.float("label_smooth_eps", 0.0)
        self.focal_loss = s.int("focal_loss", 0) if self.reads_focal else 0
        self.objectness_smooth = s.int("objectness_smooth", 0)
        self.iou_thresh = s.float("iou_thresh", 1.0)
        kind = s.str("iou_thresh_kind", "iou")
        if kind not in ("iou", "giou", "diou", "ciou"):
            warn(f"{s.where('iou_thresh_kind')}: iou_thresh_kind={kind} is not known; using iou "
                 f"(as AlexeyAB does)")
            kind = "iou"
        self.iou_thresh_kind = kind
        self.show_details = s.int("show_details", 1) if self.reads_focal else 1

    # ------------------------------------------------------------------ helpers
    def _mult(self, class_id):
        if self.multipliers is None:
            return np.ones(np.shape(class_id), F32)
        return self.multipliers[class_id]

    def _smoothed(self, y):
        eps = self.label_smooth_eps
        if not eps:
            return np.asarray(y, F32)
        return (np.asarray(y, F32) * F32(1 - eps) + 0.5 * F32(eps)).astype(F32)

    def _rel_boxes(self, out_b, slots, cells, anchors, net_w, net_h):
        """get_yolo_box for (slot, cell) pairs with the given anchor indices: (k, 4) float32."""
        layer = self.layer
        lw, lh = layer.out_w, layer.out_h
        v = out_b[slots, 0:4, cells]                              # (k, 4)
        col, row = (cells % lw).astype(F32), (cells // lw).astype(F32)
        aw = layer.biases[2 * anchors]
        ah = layer.biases[2 * anchors + 1]
        x = (col + v[:, 0]) / F32(lw)
        y = (row + v[:, 1]) / F32(lh)
        with np.errstate(over="ignore"):
            if layer.new_coords:
                bw = v[:, 2] * v[:, 2] * F32(4) * aw / F32(net_w)
                bh = v[:, 3] * v[:, 3] * F32(4) * ah / F32(net_h)
            else:
                bw = (np.exp(v[:, 2].astype(F64)) * aw / net_w).astype(F32)
                bh = (np.exp(v[:, 3].astype(F64)) * ah / net_h).astype(F32)
        return np.stack([x, y, bw, bh], axis=-1).astype(F32)

    # ------------------------------------------------------------------ the batch
    def compute(self, out, z, truth, net_w, net_h, exact):
        """out, z: (batch, n, entries, h*w) output and input; truth (batch, truths).
        Returns (darknet delta, cost, objective, exact delta or None)."""
        layer = self.layer
        batch = out.shape[0]
        per_box = layer.truth_floats
        boxes_all = truth[:, :per_box * layer.max_boxes].reshape(batch, layer.max_boxes, per_box)
        delta = np.zeros_like(out)
        exact_delta = np.zeros_like(out) if exact else None
        totals = {"iou": 0.0, "giou": 0.0, "count": 0, "objective": 0.0}
        for b in range(batch):
            self._image(out[b], z[b], boxes_all[b], delta[b], net_w, net_h, totals,
                        None if exact_delta is None else exact_delta[b])
        cost = self._cost(delta, totals)
        return delta, cost, totals["objective"], exact_delta

    def _cost(self, delta, totals):
        total = float(np.square(delta, dtype=F64).sum())
        if self.show_details == 0 or self.iou_loss == "mse":
            return total
        rest = float(np.square(delta[:, :, 4:], dtype=F64).sum())
        classification = self.obj_normalizer * rest
        count = max(totals["count"], 1)
        box = totals["giou"] if self.iou_loss == "giou" else totals["iou"]
        return self.iou_normalizer * box / count + classification

    def _image(self, out_b, z_b, boxes_all, delta_b, net_w, net_h, totals, exact_b):
        from .yolo import class_ids, valid_truth_count
        layer = self.layer
        n, hw = layer.n, layer.out_h * layer.out_w
        entries = out_b.shape[1]
        boxes = boxes_all[:valid_truth_count(boxes_all)]
        ids = class_ids(boxes[:, 4], layer.classes, layer) if len(boxes) else np.zeros(0, int)
        tbox = boxes[:, :4].astype(F32)
        # AB zeroes a NaN/inf objectness in its output before using it
        obj = out_b[:, 4]
        obj[~np.isfinite(obj)] = 0
        state = _ImageState(n, entries, hw)
        slots_all = np.repeat(np.arange(n), hw)
        cells_all = np.tile(np.arange(hw), n)
        pred = self._rel_boxes(out_b, slots_all, cells_all, layer.mask[slots_all], net_w,
                               net_h).reshape(n, hw, 4)
        # 1. objectness of every prediction
        on = F32(self.obj_normalizer)
        state.W[:, 4] = on
        state.T[:, 4] = 0
        if len(boxes):
            iou = box_iou_kinds(pred[:, :, None, :], tbox[None, None, :, :])["iou"].astype(F32)
            match = (out_b[:, 5:] > F32(CLASS_MATCH)).any(axis=1) if layer.classes else \
                np.zeros((n, hw), bool)
            match_iou = np.where(match[:, :, None], iou, F32(0))
            best_match_t = np.argmax(match_iou, axis=-1)
            best_match = np.maximum(np.max(match_iou, axis=-1), F32(0))
            best_t = np.argmax(iou, axis=-1)
            best_iou = np.maximum(np.max(iou, axis=-1), F32(0))
            ignored = best_match > F32(layer.ignore_thresh)
            self._ignored_objectness(out_b, state, ignored, best_match, best_match_t, ids)
            positive = best_iou > F32(layer.truth_thresh)
            if positive.any():
                self._truth_thresh_cells(out_b, pred, positive, best_t, best_iou, tbox, ids,
                                         state, delta_b, net_w, net_h, exact_b, totals)
            self._assigned(out_b, pred, tbox, ids, state, delta_b, net_w, net_h, totals,
                           exact_b)
        # objectness and class deltas: W*(T - p) as AB writes them
        p = out_b[:, 4:]
        delta_b[:, 4:] = state.W[:, 4:] * (state.T[:, 4:] - p)
        if len(boxes):
            self._average_box_deltas(delta_b, exact_b, state)
        totals["objective"] += self._entries_objective(z_b, out_b, state, exact_b, pred, tbox,
                                                        net_w, net_h)

    # ------------------------------------------------------------------ step 1
    def _ignored_objectness(self, out_b, state, ignored, best_match, best_match_t, ids):
        """Predictions whose best class-matching IoU is > ignore_thresh."""
        on = F32(self.obj_normalizer)
        obj = out_b[:, 4]
        if self.objectness_smooth:
            # max(obj_norm*(0 - obj), obj_norm*(iou - obj)): the IoU target when iou > 0
            take = ignored & (on * (best_match - obj) > on * (F32(0) - obj))
            state.set_iou_target(take, 4, best_match, best_match_t, 1)
        else:
            state.W[:, 4][ignored] = 0

    def _truth_thresh_cells(self, out_b, pred, positive, best_t, best_iou, tbox, ids, state,
                            delta_b, net_w, net_h, exact_b, totals):
        layer = self.layer
        slots, cells = np.nonzero(positive)
        t = best_t[slots, cells]
        cls = ids[t]
        mult = self._mult(cls)
        on = F32(self.obj_normalizer)
        if self.objectness_smooth:
            state.set_iou_target((slots, cells), 4, best_iou[slots, cells], t, 2, weight=on)
        else:
            state.W[slots, 4, cells] = on
            state.T[slots, 4, cells] = 1
            state.iou_src[slots, 4, cells] = -1
        self._classes(out_b, state, slots, cells, cls)
        if self.objectness_smooth:
            state.set_iou_target((slots, cells), 5 + cls, best_iou[slots, cells], t, 2,
                                 weight=mult)
        anchors = layer.mask[slots]
        self._box(out_b, state, slots, cells, anchors, tbox[t], mult, delta_b, net_w, net_h,
                  exact_b, totals, counted=False)

    # ------------------------------------------------------------------ step 2: each truth
    def _truth_cells(self, tbox):
        return truth_cells(tbox, self.layer)

    def _assignments(self, tbox, net_w, net_h):
        """(truth index, slot, anchor, cell) of every box delta step 2 makes, in AB's order."""
        layer = self.layer
        count = len(tbox)
        anchors_rel = np.zeros((layer.total, 4), F32)
        anchors_rel[:, 2] = layer.biases[0:2 * layer.total:2] / F32(net_w)
        anchors_rel[:, 3] = layer.biases[1:2 * layer.total:2] / F32(net_h)
        shifted = np.zeros((count, 4), F32)
        shifted[:, 2:] = tbox[:, 2:4]
        kinds = box_iou_kinds(anchors_rel[None, :, :], shifted[:, None, :])
        shape_iou = kinds["iou"].astype(F32)                        # (count, total)
        best_n = np.where(shape_iou.max(axis=1) > 0, np.argmax(shape_iou, axis=1), 0)
        slot_of = np.full(layer.total, -1, np.int64)
        for k in range(len(layer.mask) - 1, -1, -1):                # int_index: first match
            if layer.mask[k] < layer.total:
                slot_of[layer.mask[k]] = k
        thresh_iou = kinds[self.iou_thresh_kind].astype(F32)
        cells = self._truth_cells(tbox)
        rows = []
        for anchor in range(layer.total):
            slot = slot_of[anchor]
            if slot < 0:
                continue
            primary = best_n == anchor
            extra = (~primary) & (thresh_iou[:, anchor] > F32(self.iou_thresh)) \
                if self.iou_thresh < 1 else np.zeros(count, bool)
            for chosen, rank in ((primary, 0), (extra, 1 + anchor)):
                t = np.flatnonzero(chosen)
                rows.append(np.stack([t, np.full_like(t, rank), np.full_like(t, slot),
                                      np.full_like(t, anchor), cells[t]], axis=1))
        table = np.concatenate(rows) if rows else np.zeros((0, 5), np.int64)
        table = table[np.lexsort((table[:, 1], table[:, 0]))]       # by truth, then rank
        return table[:, 0], table[:, 2], table[:, 3], table[:, 4]

    def _assigned(self, out_b, pred, tbox, ids, state, delta_b, net_w, net_h, totals, exact_b):
        t, slots, anchors, cells = self._assignments(tbox, net_w, net_h)
        if not len(t):
            return
        cls = ids[t]
        mult = self._mult(cls)
        self._box(out_b, state, slots, cells, anchors, tbox[t], mult, delta_b, net_w, net_h,
                  exact_b, totals, counted=True)
        # objectness and classes in AB's order: a cell/slot hit again sees the earlier writes
        group = slots * out_b.shape[-1] + cells
        order = np.argsort(group, kind="stable")
        sorted_group = group[order]
        start = np.r_[True, sorted_group[1:] != sorted_group[:-1]]
        rank = np.arange(len(order)) - np.maximum.accumulate(np.where(start,
                                                                      np.arange(len(order)), 0))
        rounds = np.empty(len(order), np.int64)
        rounds[order] = rank
        on = F32(self.obj_normalizer)
        for r in range(int(rounds.max()) + 1):
            k = np.flatnonzero(rounds == r)
            s, c, m = slots[k], cells[k], mult[k]
            weight = (m * on).astype(F32)
            if self.objectness_smooth and self.smooth_positives:
                still_zero = state.current(out_b, s, 4, c) == 0
                s0, c0 = s[still_zero], c[still_zero]
                state.W[s0, 4, c0] = weight[still_zero]
                state.T[s0, 4, c0] = 1
                state.iou_src[s0, 4, c0] = -1
            else:
                state.W[s, 4, c] = weight
                state.T[s, 4, c] = 1
                state.iou_src[s, 4, c] = -1
            self._classes(out_b, state, s, c, cls[k])

    # ------------------------------------------------------------------ classes
    def _classes(self, out_b, state, slots, cells, cls):
        """delta_yolo_class for distinct (slot, cell) pairs at once."""
        if not self.layer.classes:
            return
        mult = self._mult(cls)
        check = 5 if self.class_check_first else 5 + cls
        set_already = state.current(out_b, slots, check, cells) != 0
        # the class entry already has a delta: only it is rewritten
        s1, c1, k1 = slots[set_already], cells[set_already], cls[set_already]
        state.W[s1, 5 + k1, c1] = mult[set_already] if self.multipliers is not None else 1
        state.T[s1, 5 + k1, c1] = self._smoothed(1)
        state.iou_src[s1, 5 + k1, c1] = -1
        state.focal[s1, 5 + k1, c1] = False
        fresh = ~set_already
        s2, c2, k2 = slots[fresh], cells[fresh], cls[fresh]
        classes = self.layer.classes
        onehot = (np.arange(classes)[None, :] == k2[:, None]).astype(F32)   # (k, C)
        state.iou_src[s2, 5:, c2] = -1
        if self.focal_loss:
            pt = out_b[s2, 5 + k2, c2] + F32(0.000000000000001)
            grad = -(F32(1) - pt) * (F32(2) * pt * np.log(pt) + pt - F32(1))
            state.W[s2, 5:, c2] = (F32(FOCAL_ALPHA) * grad.astype(F32))[:, None]
            state.T[s2, 5:, c2] = onehot
            state.focal[s2, 5:, c2] = True
            return
        state.W[s2, 5:, c2] = 1
        state.T[s2, 5:, c2] = self._smoothed(onehot)
        state.focal[s2, 5:, c2] = False
        if self.multipliers is not None:
            state.W[s2, 5 + k2, c2] = (mult[fresh] * F32(self.cls_normalizer)).astype(F32)

    # ------------------------------------------------------------------ boxes
    def _box(self, out_b, state, slots, cells, anchors, truths, mult, delta_b, net_w, net_h,
             exact_b, totals, counted):
        """delta_yolo_box for k (slot, cell, anchor, truth) rows, accumulated in order."""
        layer = self.layer
        box_pred = self._rel_boxes(out_b, slots, cells, anchors, net_w, net_h)
        norm = (F32(self.iou_normalizer) * mult).astype(F32)
        scale = (F32(2) - truths[:, 2] * truths[:, 3]).astype(F32)
        if counted:
            kinds = box_iou_kinds(box_pred, truths)
            totals["iou"] += float(np.sum(1 - kinds["iou"].astype(F32), dtype=F64))
            totals["giou"] += float(np.sum(1 - kinds["giou"].astype(F32), dtype=F64))
            totals["count"] += len(slots)
        v = out_b[slots, 0:4, cells]
        targets = None
        if self.iou_loss == "mse":
            targets = self._mse_targets(truths, anchors, cells, net_w, net_h)
            d = (scale[:, None] * (targets - v)) * norm[:, None]
        else:
            safe = box_pred.copy()
            safe[:, 2][safe[:, 2] == 0] = 1          # AB: avoid NaN in dx_box_iou
            safe[:, 3][safe[:, 3] == 0] = 1
            d = dx_box_iou(safe, truths, self.iou_loss)
            if not layer.new_coords:
                d[:, 2] *= np.exp(v[:, 2].astype(F64))
                d[:, 3] *= np.exp(v[:, 3].astype(F64))
            d = d.astype(F32) * norm[:, None]
            d[~np.isfinite(d)] = 0
            if math.isfinite(self.max_delta):
                d = np.clip(d, -F32(self.max_delta), F32(self.max_delta))
        d = d.astype(F32)
        state.box_terms.append((slots, cells, anchors, truths, norm, scale, targets))
        box_view = delta_b[:, 0:4, :]                # (n, 4, hw)
        for e in range(4):
            np.add.at(box_view[:, e, :], (slots, cells), d[:, e])
        if exact_b is not None:
            self._exact_box(out_b, slots, cells, anchors, truths, norm, scale, d, exact_b,
                            net_w, net_h)

    def _mse_targets(self, truths, anchors, cells, net_w, net_h):
        layer = self.layer
        lw, lh = layer.out_w, layer.out_h
        col, row = (cells % lw).astype(F32), (cells // lw).astype(F32)
        aw = layer.biases[2 * anchors]
        ah = layer.biases[2 * anchors + 1]
        tx = truths[:, 0] * F32(lw) - col
        ty = truths[:, 1] * F32(lh) - row
        rw = truths[:, 2] * F32(net_w) / aw
        rh = truths[:, 3] * F32(net_h) / ah
        with np.errstate(divide="ignore", invalid="ignore"):
            if layer.new_coords:
                tw = np.sqrt(truths[:, 2] * F32(net_w) / (F32(4) * aw))
                th = np.sqrt(truths[:, 3] * F32(net_h) / (F32(4) * ah))
            else:
                tw = np.log(rw.astype(F64)).astype(F32)
                th = np.log(rh.astype(F64)).astype(F32)
        return np.stack([tx, ty, tw, th], axis=-1).astype(F32)

    # ------------------------------------------------------------------ iou_thresh averaging
    def _average_box_deltas(self, delta_b, exact_b, state):
        """averages_yolo_deltas: a cell with a non-zero objectness delta divides its box
        deltas by its number of positive class deltas."""
        if self.iou_thresh >= 1:
            return
        positive = (delta_b[:, 5:] > 0).sum(axis=1)                  # (n, hw)
        divide = (delta_b[:, 4] != 0) & (positive > 0)
        count = np.where(divide, positive, 1).astype(F32)
        delta_b[:, 0:4] /= count[:, None, :]
        state.box_divisor = count
        if exact_b is not None:
            exact_b[:, 0:4] /= count[:, None, :]

    # ------------------------------------------------------------------ exact mode
    def _exact_box(self, out_b, slots, cells, anchors, truths, norm, scale, d_darknet,
                   exact_b, net_w, net_h):
        """Exact negative gradient of the box terms w.r.t. z, accumulated into exact_b."""
        if self.iou_loss == "mse":
            g = d_darknet.astype(F64)   # Darknet's mse deltas are the exact gradient (unclipped)
        else:
            self._warn_clip()
            box = self._rel_boxes(out_b, slots, cells, anchors, net_w, net_h)
            _, grad = iou_kind_gradient(box, truths, self.iou_loss)
            g = norm[:, None].astype(F64) * grad * self._box_jacobian(out_b, slots, cells,
                                                                      anchors, net_w, net_h)
        view = exact_b[:, 0:4, :]
        for e in range(4):
            np.add.at(view[:, e, :], (slots, cells), g[:, e].astype(exact_b.dtype))

    def _warn_clip(self):
        if math.isfinite(self.max_delta) and not _warned_exact_clip:
            _warned_exact_clip.append(True)
            warn("gradients='exact': [yolo] max_delta clips Darknet's box deltas, not an "
                 "objective; exact mode uses the unclipped gradient")

    def _box_jacobian(self, out_b, slots, cells, anchors, net_w, net_h):
        """d (relative box x, y, w, h) / d z (diagonal), (k, 4) float64."""
        layer = self.layer
        s = float(layer.scale_x_y)
        v = out_b[slots, 0:4, cells].astype(F64)
        aw = layer.biases[2 * anchors].astype(F64)
        ah = layer.biases[2 * anchors + 1].astype(F64)
        if layer.new_coords:
            jx = np.full(len(slots), s / layer.out_w)
            jy = np.full(len(slots), s / layer.out_h)
            jw = 8 * v[:, 2] * aw / net_w
            jh = 8 * v[:, 3] * ah / net_h
        else:
            sig = (v[:, 0:2] + 0.5 * (s - 1)) / s
            jx = s * sig[:, 0] * (1 - sig[:, 0]) / layer.out_w
            jy = s * sig[:, 1] * (1 - sig[:, 1]) / layer.out_h
            jw = np.exp(v[:, 2]) * aw / net_w
            jh = np.exp(v[:, 3]) * ah / net_h
        return np.stack([jx, jy, jw, jh], axis=-1)

    def _entries_objective(self, z_b, out_b, state, exact_b, pred, tbox, net_w, net_h):
        """The objective's objectness/class and box terms for one image; in exact mode the
        entries' gradient too (box terms were accumulated by _exact_box)."""
        layer = self.layer
        z = z_b[:, 4:].astype(F64)
        W = state.W[:, 4:].astype(F64)
        T = state.T[:, 4:].astype(F64)
        focal = state.focal[:, 4:]
        if layer.new_coords:
            p = z
            term = 0.5 * W * (T - p) ** 2
            d_dT = W * (T - p)
        else:
            p = logistic64(z)
            term = W * (softplus(z) - T * z)
            d_dT = -W * z
        term = np.where(focal, 0.0, term)
        total = float(term.sum())
        focal_grad = None
        if focal.any():
            fl, focal_grad = self._focal(p, T, layer.new_coords)
            total += float(FOCAL_ALPHA * np.where(focal, fl, 0.0).sum())
        total += self._box_objective(z_b, out_b, state, tbox, net_w, net_h)
        if exact_b is None:
            return total
        exact_b[:, 4:] = (state.W[:, 4:] * (state.T[:, 4:] - out_b[:, 4:])).astype(exact_b.dtype)
        if focal_grad is not None:
            exact_b[:, 4:] = np.where(focal, FOCAL_ALPHA * focal_grad, exact_b[:, 4:])
        # targets that are an IoU: their dependence on the cell's box
        src = state.iou_src[:, 4:]
        slots, entries, cells = np.nonzero(src >= 0)
        if len(slots):
            t = src[slots, entries, cells]
            power = state.iou_power[:, 4:][slots, entries, cells]
            anchors = layer.mask[slots]
            box = self._rel_boxes(out_b, slots, cells, anchors, net_w, net_h)
            iou, grad = iou_kind_gradient(box, tbox[t], "iou")
            d_target = (power * np.power(iou, power - 1))[:, None] * grad
            jac = self._box_jacobian(out_b, slots, cells, anchors, net_w, net_h)
            g = -d_dT[slots, entries, cells][:, None] * d_target * jac
            view = exact_b[:, 0:4, :]
            for e in range(4):
                np.add.at(view[:, e, :], (slots, cells), g[:, e].astype(exact_b.dtype))
        return total

    @staticmethod
    def _focal(p, onehot, new_coords):
        """FL(onehot, p) and -d FL / d z."""
        with np.errstate(divide="ignore", invalid="ignore"):
            pt = np.where(onehot > 0, p, 1 - p)
            fl = -(1 - pt) ** 2 * np.log(pt)
            d_pt = 2 * (1 - pt) * np.log(pt) - (1 - pt) ** 2 / pt    # d FL / d pt
            d_p = np.where(onehot > 0, d_pt, -d_pt)
            dp_dz = 1.0 if new_coords else p * (1 - p)
        return fl, np.nan_to_num(-d_p * dp_dz)

    def _box_objective(self, z_b, out_b, state, tbox, net_w, net_h):
        """Sum of the box terms recorded by _box (see the module docstring)."""
        total = 0.0
        for slots, cells, anchors, truths, norm, scale, targets in state.box_terms:
            divisor = state.box_divisor[slots, cells].astype(F64)
            if self.iou_loss == "mse":
                w = scale.astype(F64) * norm.astype(F64) / divisor
                total += float((w * self._mse_objective(z_b, slots, cells, targets)).sum())
            else:
                box = self._rel_boxes(out_b, slots, cells, anchors, net_w, net_h)
                value, _ = iou_kind_gradient(box, truths, self.iou_loss)
                total += float((norm.astype(F64) / divisor * (1 - value)).sum())
        return total

    def _mse_objective(self, z_b, slots, cells, targets):
        layer = self.layer
        s = float(layer.scale_x_y)
        zv = z_b[slots, 0:4, cells].astype(F64)
        t = targets.astype(F64)
        if layer.new_coords:
            out_xy = s * zv[:, 0:2] - 0.5 * (s - 1)
            xy = ((t[:, 0:2] - out_xy) ** 2).sum(axis=1) / (2 * s)
        else:
            t_xy = (t[:, 0:2] + 0.5 * (s - 1)) / s
            xy = s * (softplus(zv[:, 0:2]) - t_xy * zv[:, 0:2]).sum(axis=1)
        wh = 0.5 * ((t[:, 2:4] - zv[:, 2:4]) ** 2).sum(axis=1)
        return xy + wh


class _ImageState:
    """Weights and targets of one image's objectness/class deltas as AB writes them."""

    def __init__(self, n, entries, hw):
        self.W = np.zeros((n, entries, hw), F32)
        self.T = np.zeros((n, entries, hw), F32)
        self.focal = np.zeros((n, entries, hw), bool)
        self.iou_src = np.full((n, entries, hw), -1, np.int64)    # truth of an IoU target
        self.iou_power = np.ones((n, entries, hw), np.int64)
        self.box_terms = []
        self.box_divisor = np.ones((n, hw), F32)

    def current(self, out_b, slots, entries, cells):
        """The delta AB's buffer holds now at (slot, entry, cell)."""
        return self.W[slots, entries, cells] * (self.T[slots, entries, cells]
                                                - out_b[slots, entries, cells])

    def set_iou_target(self, where, entries, iou, truth, power, weight=None):
        """A target that is the cell's IoU (power 1) or its square (power 2)."""
        if isinstance(where, tuple):
            slots, cells = where
            value = iou if power == 1 else (iou * iou).astype(F32)
        else:
            slots, cells = np.nonzero(where)
            value = iou[slots, cells] if power == 1 else \
                (iou[slots, cells] * iou[slots, cells]).astype(F32)
            truth = truth[slots, cells]
        if weight is not None:
            self.W[slots, entries, cells] = weight
        self.T[slots, entries, cells] = value
        self.iou_src[slots, entries, cells] = truth
        self.iou_power[slots, entries, cells] = power
        self.focal[slots, entries, cells] = False


# ----------------------------------------------------------------------------- [Gaussian_yolo]

GAUSS_MEANS = [0, 2, 4, 6]          # x, y, w, h in AB's Gaussian layout
GAUSS_SIGMAS = [1, 3, 5, 7]         # their uncertainties (after the logistic)
SIGMA_CONST = 0.3                    # delta_gaussian_yolo_box's sigma_const
NORMAL_EPS = 1e-9                    # its epsi


class AlexeyABGaussianYoloLoss(AlexeyABYoloLoss):
    """AB's forward_gaussian_yolo_layer loss.  The objectness/class logic is the [yolo] one run
    on the layer's output reordered as x, y, w, h, objectness, classes, with the Gaussian
    differences: objectness_smooth makes an ignored prediction's target IoU^2 and gives it
    class deltas (step 2 has no smooth variant); delta_gaussian_yolo_class checks the class-0
    entry (pjreddie's check); the box deltas are the Gaussian ones (below) for the 4 means and
    4 uncertainties; every cell's 8 box deltas are divided by its number of positive class
    deltas (always, not only with iou_thresh < 1); cost = sum(delta^2); no focal loss.
    Box (mse): with d = t - mu, s = sigma (the uncertainty output), g = d/s and
    N = exp(-g^2/2)/(sqrt(2 pi)(s + .3)): temp = .5*N/(N + 1e-9)*scale,
    delta_mu = temp*g/s*iou_normalizer, delta_sigma = temp*(g^2/s - 1/(s + .3))*uc_normalizer;
    iou losses replace delta_mu by dx_box_iou's (dw, dh times exp(tw), exp(th)).  NaN/inf
    -> 0, clipped to +-max_delta (the uncertainty deltas too)."""

    smooth_positives = False
    class_check_first = True
    reads_focal = False

    def __init__(self, layer, section):
        super().__init__(layer, section)
        self.uc_normalizer = section.float("uc_normalizer", 1.0)
        self._sigma = self._sigma_delta = None
        self._b = 0

    def compute(self, out, z, truth, net_w, net_h, exact):
        classes_at = list(range(BOX_GAUSS_ENTRIES, out.shape[2]))
        order = GAUSS_MEANS + classes_at
        self._sigma = out[:, :, GAUSS_SIGMAS]
        self._sigma_delta = np.zeros_like(self._sigma)
        as_yolo = np.ascontiguousarray(out[:, :, order])
        delta_yolo, _, _, _ = super().compute(as_yolo, as_yolo, truth, net_w, net_h, False)
        delta = np.zeros_like(out)
        delta[:, :, order] = delta_yolo
        delta[:, :, GAUSS_SIGMAS] = self._sigma_delta
        cost = float(np.square(delta, dtype=F64).sum())
        return delta, cost, float("nan"), None

    def _image(self, out_b, z_b, boxes_all, delta_b, net_w, net_h, totals, exact_b):
        self._b = len(totals.setdefault("images", []))
        totals["images"].append(None)
        super()._image(out_b, z_b, boxes_all, delta_b, net_w, net_h, totals, exact_b)

    def _entries_objective(self, *args):
        return 0.0

    def _ignored_objectness(self, out_b, state, ignored, best_match, best_match_t, ids):
        if not self.objectness_smooth:
            state.W[:, 4][ignored] = 0
            return
        slots, cells = np.nonzero(ignored)
        t = best_match_t[slots, cells]
        state.set_iou_target((slots, cells), 4, best_match[slots, cells], t, 2)
        self._classes(out_b, state, slots, cells, ids[t])

    def _average_box_deltas(self, delta_b, exact_b, state):
        positive = (delta_b[:, 5:] > 0).sum(axis=1)
        count = np.maximum(positive, 1).astype(F32)
        delta_b[:, 0:4] /= count[:, None, :]
        self._sigma_delta[self._b] /= count[:, None, :]

    def _rel_boxes(self, out_b, slots, cells, anchors, net_w, net_h):
        box = super()._rel_boxes(out_b, slots, cells, anchors, net_w, net_h)
        point = self.layer.yolo_point
        if point != "center":
            sign = F32(1) if point == "left_top" else F32(-1)
            box[:, 0] = box[:, 0] + sign * box[:, 2] / F32(2)
            box[:, 1] = box[:, 1] + sign * box[:, 3] / F32(2)
        return box

    def _truth_cells(self, tbox):
        layer = self.layer
        point = layer.yolo_point
        if point == "center":
            return truth_cells(tbox, layer)
        sign = F32(-1) if point == "left_top" else F32(1)
        x = (tbox[:, 0] + sign * tbox[:, 2] / F32(2)) * F32(layer.out_w)
        y = (tbox[:, 1] + sign * tbox[:, 3] / F32(2)) * F32(layer.out_h)
        i = np.trunc(np.minimum(layer.out_w - 1, np.maximum(0, x))).astype(np.int64)
        j = np.trunc(np.minimum(layer.out_h - 1, np.maximum(0, y))).astype(np.int64)
        return j * layer.out_w + i

    def _box(self, out_b, state, slots, cells, anchors, truths, mult, delta_b, net_w, net_h,
             exact_b, totals, counted):
        layer = self.layer
        lw, lh = layer.out_w, layer.out_h
        norm = (F32(self.iou_normalizer) * mult).astype(F32)
        scale = (F32(2) - truths[:, 2] * truths[:, 3]).astype(F64)
        v = out_b[slots, 0:4, cells]
        sigma = self._sigma[self._b][slots, :, cells].astype(F64)
        col, row = (cells % lw).astype(F32), (cells // lw).astype(F32)
        aw = layer.biases[2 * anchors]
        ah = layer.biases[2 * anchors + 1]
        cx, cy = truths[:, 0], truths[:, 1]
        if layer.yolo_point != "center":
            sign = F32(-1) if layer.yolo_point == "left_top" else F32(1)
            cx = cx + sign * truths[:, 2] / F32(2)
            cy = cy + sign * truths[:, 3] / F32(2)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            tx = cx * F32(lw) - col
            ty = cy * F32(lh) - row
            tw = np.log((truths[:, 2] * F32(net_w) / aw).astype(F64)).astype(F32)
            th = np.log((truths[:, 3] * F32(net_h) / ah).astype(F64)).astype(F32)
            d = (np.stack([tx, ty, tw, th], axis=-1) - v).astype(F64)
            g = (d / sigma).astype(F32).astype(F64)
            g2 = (g * g).astype(F32).astype(F64)
            normal = (np.exp(g2 * -0.5) / (math.sqrt(math.pi * 2.0) * (sigma + SIGMA_CONST))
                      ).astype(F32).astype(F64)
            temp = (0.5 * (1.0 / (normal + NORMAL_EPS)) * normal * scale[:, None]
                    ).astype(F32).astype(F64)
            d_mean = (temp * g * (1.0 / sigma)).astype(F32)
            d_sigma = (temp * (g2 / sigma - 1.0 / (sigma + SIGMA_CONST))).astype(F32)
            if self.iou_loss != "mse":
                pred = self._rel_boxes(out_b, slots, cells, anchors, net_w, net_h)
                pred[:, 2][pred[:, 2] == 0] = 1
                pred[:, 3][pred[:, 3] == 0] = 1
                dx = dx_box_iou(pred, truths, self.iou_loss).astype(F32)
                if layer.yolo_point == "left_top":
                    dx[:, 0] -= dx[:, 2] / F32(2)
                    dx[:, 1] -= dx[:, 3] / F32(2)
                elif layer.yolo_point == "right_bottom":
                    dx[:, 0] += dx[:, 2] / F32(2)
                    dx[:, 1] += dx[:, 3] / F32(2)
                dx[:, 2] = (dx[:, 2] * np.exp(v[:, 2].astype(F64))).astype(F32)
                dx[:, 3] = (dx[:, 3] * np.exp(v[:, 3].astype(F64))).astype(F32)
                d_mean = dx
            d_mean = (d_mean * norm[:, None]).astype(F32)
            d_sigma = (d_sigma * F32(self.uc_normalizer)).astype(F32)
        for arr in (d_mean, d_sigma):
            arr[~np.isfinite(arr)] = 0
            if math.isfinite(self.max_delta):
                np.clip(arr, -F32(self.max_delta), F32(self.max_delta), out=arr)
        if counted:
            totals["count"] += len(slots)
        sigma_delta = self._sigma_delta[self._b]
        for e in range(4):
            np.add.at(delta_b[:, e, :], (slots, cells), d_mean[:, e])
            np.add.at(sigma_delta[:, e, :], (slots, cells), d_sigma[:, e])


BOX_GAUSS_ENTRIES = 8
