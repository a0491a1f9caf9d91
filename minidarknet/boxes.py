"""Detection post-processing as Darknet does it: decoding, letterbox correction, NMS, drawing.

Nothing here needs a network: the decoders take one layer's output array for one image.

Typical use (what Darknet's get_network_boxes + do_nms_sort do)::

    dets = []
    for each [yolo] layer in network order:
        dets += yolo_boxes(layer_output[0], mask, anchors, classes, net_w, net_h, thresh)
    correct_boxes(dets, im_w, im_h, net_w, net_h, letterbox=True)
    do_nms_sort(dets, classes, 0.45)
    print("\\n".join(format_detections(dets, names, thresh, im_w, im_h)))

The arithmetic follows Darknet's C types (float32 where Darknet uses float, float64 where it
calls exp/pow or mixes in a double constant), so thresholds and NMS decisions come out the same.
Hierarchical (tree / 9000) region models are not supported: ``region_boxes`` handles the
plain softmax/logistic class head only.
"""
import numpy as np

from minidarknet.errors import ShapeError
from minidarknet.image import letterbox_geometry

__all__ = [
    "Detection", "yolo_boxes", "region_boxes", "detection_layer_boxes", "correct_boxes",
    "box_iou", "do_nms_sort", "draw_detections", "format_detections", "class_color",
    "detections_to_array", "detections_from_array",
]

F32 = np.float32


def _c_int(value):
    """C's (int) cast of a pixel coordinate, saturating: an exp() that overflowed to inf in a
    box's width (random weights) gives a box over the whole image, not an OverflowError."""
    return int(min(max(value, -2.0 ** 31), 2.0 ** 31 - 1))


class Detection:
    """One box: centre ``x, y`` and size ``w, h`` relative to the image (floats), Darknet's
    ``objectness`` and per-class probabilities ``prob`` (float32 array, one per class; 0 where
    the class is below the threshold or was suppressed by NMS)."""

    __slots__ = ("x", "y", "w", "h", "objectness", "prob")

    def __init__(self, x, y, w, h, objectness, prob):
        self.x, self.y, self.w, self.h = float(x), float(y), float(w), float(h)
        self.objectness = float(objectness)
        self.prob = np.array(prob, dtype=np.float32).reshape(-1)

    @property
    def classes(self):
        return int(self.prob.shape[0])

    @classmethod
    def from_row(cls, row):
        """From a row ``x, y, w, h, objectness, prob...`` (the golden-data layout)."""
        row = np.asarray(row, dtype=np.float32).reshape(-1)
        return cls(row[0], row[1], row[2], row[3], row[4], row[5:])

    def to_row(self):
        return np.concatenate([np.array([self.x, self.y, self.w, self.h, self.objectness],
                                        dtype=np.float32), self.prob])

    def to_pixels(self, im_w, im_h):
        """(left, top, right, bottom) in pixels, as Darknet's draw_detections computes them:
        ``(int)((x - w/2.)*im_w)`` etc. (truncation toward zero), then left/top clamped at 0
        and right/bottom at ``im_w-1``/``im_h-1`` (Darknet clamps only those four sides)."""
        im_w, im_h = int(im_w), int(im_h)
        x, y = float(F32(self.x)), float(F32(self.y))
        w, h = float(F32(self.w)), float(F32(self.h))
        left = _c_int((x - w / 2.0) * im_w)
        right = _c_int((x + w / 2.0) * im_w)
        top = _c_int((y - h / 2.0) * im_h)
        bot = _c_int((y + h / 2.0) * im_h)
        left = max(left, 0)
        right = min(right, im_w - 1)
        top = max(top, 0)
        bot = min(bot, im_h - 1)
        return left, top, right, bot

    def to_dict(self, names=None, im_w=None, im_h=None):
        """JSON-ready dict: relative box, objectness, the non-zero classes (in class order,
        with names when given) and, with ``im_w``/``im_h``, the pixel box of to_pixels."""
        classes = []
        for j in np.flatnonzero(self.prob):
            entry = {"id": int(j), "prob": float(self.prob[j])}
            if names is not None:
                entry["name"] = _name(names, j)
            classes.append(entry)
        out = {"x": self.x, "y": self.y, "w": self.w, "h": self.h,
               "objectness": self.objectness, "classes": classes}
        if im_w is not None and im_h is not None:
            left, top, right, bottom = self.to_pixels(im_w, im_h)
            out.update(left=left, top=top, right=right, bottom=bottom)
        return out

    def __repr__(self):
        nz = np.flatnonzero(self.prob)
        return (f"Detection(x={self.x:.4f}, y={self.y:.4f}, w={self.w:.4f}, h={self.h:.4f}, "
                f"objectness={self.objectness:.4f}, classes={self.classes}, nonzero={nz.tolist()})")


def detections_to_array(dets, classes=None):
    """(n, 5 + classes) float32 rows ``x, y, w, h, objectness, prob...``."""
    if not dets:
        return np.zeros((0, 5 + (classes or 0)), dtype=np.float32)
    return np.stack([d.to_row() for d in dets]).astype(np.float32)


def detections_from_array(rows):
    return [Detection.from_row(r) for r in np.asarray(rows, dtype=np.float32)]


def _name(names, j):
    if names is None:
        return str(j)
    try:
        return str(names[j])
    except (IndexError, KeyError):
        return str(j)


def _anchor_pairs(anchors):
    a = np.asarray(anchors, dtype=np.float32).reshape(-1)
    if a.size % 2:
        raise ShapeError(f"anchors: need width,height pairs, got {a.size} numbers")
    return a.reshape(-1, 2)


def _single_image(output, what):
    out = np.asarray(output, dtype=np.float32)
    if out.ndim == 4 and out.shape[0] == 1:
        out = out[0]
    if out.ndim != 3:
        raise ShapeError(f"{what}: expected one image's output of shape (channels, h, w), "
                         f"got {np.shape(output)}")
    return out


# --------------------------------------------------------------------------- decoding

def yolo_boxes(output, mask, anchors, classes, net_w, net_h, thresh, scale_x_y=1.0,
               new_coords=False):
    """Decode one [yolo] layer's output for one image (Darknet's get_yolo_detections).

    ``output``: the layer's output, shape ``(n*(5+classes), h, w)`` with ``n = len(mask)``,
    anchor-major, entries ``x, y, w, h, obj, class...`` -- already activated as Darknet's
    forward leaves it (logistic on x, y, obj and classes; nothing on w, h; with
    ``new_coords`` no activation at all).  ``anchors`` are all the layer's anchors in network
    pixels (flat or pairs); ``mask`` picks this layer's.

    ``scale_x_y``: AB's x/y scaling ``x*s - (s-1)/2``, applied here to x and y.  AB's forward
    already applies it to ``l.output``; pass 1.0 (the default, a no-op) when the array already
    has it.  ``new_coords`` (AB): ``w = tw*tw*4*anchor/net_w`` instead of ``exp(tw)*anchor/net_w``.

    Order is Darknet's: for each cell ``row*w + col``, for each anchor slot; a box is kept when
    ``objectness > thresh`` (PJ tests ``<= thresh`` to skip, so it would keep a NaN; AB and
    this code drop it); ``prob[j] = objectness*class_j`` if that is ``> thresh``, else 0.
    Boxes are relative to the network input; apply correct_boxes for the image.
    """
    out = _single_image(output, "yolo output")
    mask = [int(m) for m in np.asarray(mask).reshape(-1)]
    pairs = _anchor_pairs(anchors)
    n, classes = len(mask), int(classes)
    c, lh, lw = out.shape
    if c != n * (5 + classes):
        raise ShapeError(f"yolo output: {c} channels, but {n} anchors x (5 + {classes} classes) "
                         f"= {n * (5 + classes)}")
    if mask and (min(mask) < 0 or max(mask) >= len(pairs)):
        raise ShapeError(f"yolo mask {mask} indexes past the {len(pairs)} anchors")
    o = out.reshape(n, 5 + classes, lh, lw)
    t = F32(thresh)

    obj_cells = o[:, 4].transpose(1, 2, 0).reshape(-1)  # index = cell*n + anchor
    keep = np.flatnonzero(obj_cells > t)
    cell, a = keep // n, keep % n
    row, col = cell // lw, cell % lw
    tx, ty = o[a, 0, row, col], o[a, 1, row, col]
    tw, th = o[a, 2, row, col], o[a, 3, row, col]
    obj = o[a, 4, row, col]
    cls = o[a, 5:, row, col] if classes else np.zeros((len(keep), 0), F32)  # (k, classes)

    s = float(scale_x_y)
    if s != 1.0:
        tx = tx * F32(s) + F32(-0.5 * (s - 1))
        ty = ty * F32(s) + F32(-0.5 * (s - 1))
    x = (col.astype(F32) + tx) / F32(lw)
    y = (row.astype(F32) + ty) / F32(lh)
    slot = np.asarray(mask, dtype=np.int64)[a]
    aw, ah = pairs[slot, 0], pairs[slot, 1]
    with np.errstate(over="ignore"):
        if new_coords:
            w = tw * tw * F32(4) * aw / F32(net_w)
            h = th * th * F32(4) * ah / F32(net_h)
        else:  # C: exp() in double, times the float anchor, / int, stored as float
            w = (np.exp(tw.astype(np.float64)) * aw.astype(np.float64) / int(net_w)).astype(F32)
            h = (np.exp(th.astype(np.float64)) * ah.astype(np.float64) / int(net_h)).astype(F32)
    prob = obj[:, None] * cls
    prob = np.where(prob > t, prob, F32(0)).astype(F32)
    return [Detection(x[i], y[i], w[i], h[i], obj[i], prob[i]) for i in range(len(keep))]


def region_boxes(output, anchors, classes, coords=4, thresh=0.5, hier_thresh=0.5,
                 background=False):
    """Decode one [region] layer's output for one image (Darknet's get_region_detections).

    ``output``: the layer's output after its forward, shape ``(n*(coords+1+classes), h, w)``,
    anchor-major, entries ``x, y, w, h, (extra coords), obj, class...`` (logistic on x, y,
    obj; softmax or logistic on the classes).  ``anchors`` are in grid-cell units.

    Every cell x anchor yields a detection, ``w*h*n`` in all, in Darknet's array order
    ``anchor*h*w + row*w + col`` (anchor-major, although Darknet loops cell-major).
    ``objectness = obj if obj > thresh else 0``; when it is non-zero,
    ``prob[j] = obj*class_j`` if that is ``> thresh``, else 0.  With ``background`` the
    objectness is 1.  ``hier_thresh`` is only used by tree models, which are not supported.
    Boxes are relative to the network input; apply correct_boxes for the image.
    """
    del hier_thresh  # tree (hierarchical softmax) decoding is not supported
    out = _single_image(output, "region output")
    pairs = _anchor_pairs(anchors)
    n, classes, coords = len(pairs), int(classes), int(coords)
    c, lh, lw = out.shape
    if c != n * (coords + 1 + classes):
        raise ShapeError(f"region output: {c} channels, but {n} anchors x ({coords} coords + 1 "
                         f"+ {classes} classes) = {n * (coords + 1 + classes)}")
    o = out.reshape(n, coords + 1 + classes, lh * lw)  # flattened index = a*h*w + cell
    t = F32(thresh)
    cell = np.arange(lh * lw)
    col = np.broadcast_to((cell % lw).astype(F32), (n, lh * lw)).reshape(-1)
    row = np.broadcast_to((cell // lw).astype(F32), (n, lh * lw)).reshape(-1)
    tx, ty = o[:, 0].reshape(-1), o[:, 1].reshape(-1)
    tw, th = o[:, 2].reshape(-1), o[:, 3].reshape(-1)
    scale = np.ones(n * lh * lw, F32) if background else o[:, coords].reshape(-1)
    aw = np.repeat(pairs[:, 0], lh * lw).astype(np.float64)
    ah = np.repeat(pairs[:, 1], lh * lw).astype(np.float64)
    x = (col + tx) / F32(lw)
    y = (row + ty) / F32(lh)
    with np.errstate(over="ignore"):
        w = (np.exp(tw.astype(np.float64)) * aw / lw).astype(F32)
        h = (np.exp(th.astype(np.float64)) * ah / lh).astype(F32)
    objectness = np.where(scale > t, scale, F32(0)).astype(F32)
    cls = o[:, coords + 1:].transpose(0, 2, 1).reshape(-1, classes)
    prob = scale[:, None] * cls
    prob = np.where((prob > t) & (objectness != 0)[:, None], prob, F32(0)).astype(F32)
    return [Detection(x[i], y[i], w[i], h[i], objectness[i], prob[i]) for i in range(len(x))]


def detection_layer_boxes(output, side, num, classes, thresh, coords=4, sqrt=False, w=1, h=1):
    """Decode a YOLOv1 [detection] layer's output for one image (get_detection_detections).

    ``output``: the layer's flat output of ``side*side*(classes + num*(1+coords))`` floats:
    class probabilities per cell, then a confidence per cell x box, then the boxes (Darknet
    steps through the boxes 4 floats at a time whatever ``coords`` is).
    Order: ``cell*num + box``.  ``x = (bx + col)/side*w``, ``w = bw**(2 if sqrt else 1)*w``;
    ``objectness`` is the raw confidence (never zeroed); ``prob[j] = conf*class_j`` if
    ``> thresh``.  ``w``/``h`` are what Darknet is handed: 1 for relative boxes (the ``yolo``
    program).  Darknet applies no letterbox correction to this layer.
    """
    side, num, classes, coords = int(side), int(num), int(classes), int(coords)
    out = np.asarray(output, dtype=np.float32).reshape(-1)
    cells = side * side
    need = cells * (classes + num * (1 + coords))
    if out.size != need:
        raise ShapeError(f"detection output: {out.size} values, but side {side}, num {num}, "
                         f"classes {classes}, coords {coords} need {need}")
    t = F32(thresh)
    probs = out[:cells * classes].reshape(cells, classes)
    conf = out[cells * classes:cells * (classes + num)]            # index = cell*num + n
    box_base = cells * (classes + num)
    idx = np.arange(cells * num)
    b = box_base + idx * 4
    cell = idx // num
    col, row = (cell % side).astype(F32), (cell // side).astype(F32)
    x = (out[b] + col) / F32(side) * F32(w)
    y = (out[b + 1] + row) / F32(side) * F32(h)
    p = 2.0 if sqrt else 1.0
    bw = (np.power(out[b + 2].astype(np.float64), p) * w).astype(F32)
    bh = (np.power(out[b + 3].astype(np.float64), p) * h).astype(F32)
    prob = conf[:, None] * probs[cell]
    prob = np.where(prob > t, prob, F32(0)).astype(F32)
    return [Detection(x[i], y[i], bw[i], bh[i], conf[i], prob[i]) for i in range(len(idx))]


# --------------------------------------------------------------------------- correction

def correct_boxes(dets, im_w, im_h, net_w, net_h, letterbox=True, relative=True):
    """Map boxes from network-input coordinates to image coordinates (in place; returns dets).

    PJ's correct_yolo_boxes / correct_region_boxes with ``new_w, new_h`` from
    image.letterbox_geometry (``letterbox=False``: the image was stretched, new = net, which
    leaves relative boxes unchanged):
    ``x = (x - (net_w-new_w)/2./net_w) / ((float)new_w/net_w)``, ``w *= (float)net_w/new_w``,
    likewise for y/h.  ``relative=False`` then multiplies by the image size (pixels).
    """
    im_w, im_h, net_w, net_h = int(im_w), int(im_h), int(net_w), int(net_h)
    if letterbox:
        new_w, new_h = letterbox_geometry(im_w, im_h, net_w, net_h)
    else:
        new_w, new_h = net_w, net_h
    off_x = (net_w - new_w) / 2.0 / net_w
    off_y = (net_h - new_h) / 2.0 / net_h
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_x = float(F32(new_w) / F32(net_w))
        ratio_y = float(F32(new_h) / F32(net_h))
        grow_x = F32(net_w) / F32(new_w)
        grow_y = F32(net_h) / F32(new_h)
        for d in dets:
            x = F32((float(F32(d.x)) - off_x) / ratio_x) if ratio_x else F32(np.inf)
            y = F32((float(F32(d.y)) - off_y) / ratio_y) if ratio_y else F32(np.inf)
            w = F32(d.w) * grow_x
            h = F32(d.h) * grow_y
            if not relative:
                x, w = x * F32(im_w), w * F32(im_w)
                y, h = y * F32(im_h), h * F32(im_h)
            d.x, d.y, d.w, d.h = float(x), float(y), float(w), float(h)
    return dets


# --------------------------------------------------------------------------- NMS

def _as_boxes(b):
    if isinstance(b, Detection):
        return np.array([b.x, b.y, b.w, b.h], dtype=F32)
    return np.asarray(b, dtype=F32)


def box_iou(a, b):
    """Darknet's box_iou for centre-format boxes ``(x, y, w, h)``, in float32.

    ``a``/``b``: Detections, 4-sequences or arrays ``(..., 4)`` (broadcast).  Overlap per axis
    is ``min(right edges) - max(left edges)``; the intersection is 0 if either is negative;
    union = ``a.w*a.h + b.w*b.h - intersection``.  Returns a float for single boxes.
    """
    A, B = _as_boxes(a), _as_boxes(b)
    iou = _iou(A[..., 0], A[..., 1], A[..., 2], A[..., 3], B[..., 0], B[..., 1], B[..., 2], B[..., 3])
    return float(iou) if np.ndim(iou) == 0 else iou


def _overlap(x1, w1, x2, w2):
    two = F32(2)
    l1, l2 = x1 - w1 / two, x2 - w2 / two
    left = np.where(l1 > l2, l1, l2)
    r1, r2 = x1 + w1 / two, x2 + w2 / two
    right = np.where(r1 < r2, r1, r2)
    return right - left


def _iou(ax, ay, aw, ah, bx, by, bw, bh):
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ow = _overlap(ax, aw, bx, bw)
        oh = _overlap(ay, ah, by, bh)
        inter = np.where((ow < 0) | (oh < 0), F32(0), ow * oh).astype(F32)
        union = (aw * ah + bw * bh) - inter
        return (inter / union).astype(F32)


_FULL_MATRIX_MAX = 1024  # boxes; above this the IoUs are computed one row at a time


def box_iou_arrays(a, b):
    """IoU of centre-format boxes given as float32 arrays (..., 4), broadcasting."""
    return _iou(a[..., 0], a[..., 1], a[..., 2], a[..., 3],
                b[..., 0], b[..., 1], b[..., 2], b[..., 3])


def do_nms_sort(dets, classes, nms_thresh, overlap=box_iou_arrays):
    """Darknet's do_nms_sort, in place (the list is reordered, probs zeroed); returns dets
    (the same list; any other sequence is copied into a new list first).

    1. Detections with ``objectness == 0`` go to the end by Darknet's swap loop
       (``if obj == 0: swap(i, k); k--; i--``) and take no further part.
    2. For each class k in turn: a stable sort of the rest by ``prob[k]`` descending (glibc's
       qsort is a merge sort, so Darknet's order is the stable one), then greedy suppression:
       for each box i with ``prob[k] != 0``, every later box j with ``box_iou > nms_thresh``
       gets ``prob[k] = 0``.
    ``overlap(a, b)`` measures two broadcast (..., 4) box arrays (AlexeyAB's DIoU-NMS passes
    its DIoU here); suppression is ``overlap > nms_thresh``.
    """
    if not isinstance(dets, list):
        dets = list(dets)
    total = len(dets)
    k = total - 1
    i = 0
    while i <= k:
        if dets[i].objectness == 0:
            dets[i], dets[k] = dets[k], dets[i]
            k -= 1
        else:
            i += 1
    total = k + 1
    if total <= 0:
        return dets
    active = dets[:total]
    classes = int(classes)
    prob = np.zeros((total, classes), dtype=F32)
    for r, d in enumerate(active):
        m = min(classes, d.prob.shape[0])
        prob[r, :m] = d.prob[:m]
    bx = np.array([[d.x, d.y, d.w, d.h] for d in active], dtype=F32)
    t = F32(nms_thresh)

    def over_matrix(idx):
        b = bx[idx]
        return overlap(b[:, None, :], b[None, :, :]) > t

    full = over_matrix(np.arange(total)) if total <= _FULL_MATRIX_MAX else None
    order = np.arange(total)
    for kc in range(classes):
        order = order[np.argsort(-prob[order, kc], kind="stable")]
        p = prob[order, kc]
        cand = order[p != 0]
        m = cand.size
        if m < 2:
            continue
        alive = np.ones(m, dtype=bool)
        if full is not None:
            sup = full[np.ix_(cand, cand)]
        elif m <= _FULL_MATRIX_MAX:
            sup = over_matrix(cand)
        else:
            sup = None
        for a in range(m - 1):
            if not alive[a]:
                continue
            if sup is not None:
                over = sup[a, a + 1:]
            else:
                over = overlap(bx[cand[a]], bx[cand[a + 1:]]) > t
            alive[a + 1:] &= ~over
        prob[cand[~alive], kc] = 0

    for r, d in enumerate(active):
        m = min(classes, d.prob.shape[0])
        d.prob[:m] = prob[r, :m]
    dets[:total] = [active[r] for r in order]
    return dets


# --------------------------------------------------------------------------- output

_COLORS = np.array([[1, 0, 1], [0, 0, 1], [0, 1, 1], [0, 1, 0], [1, 1, 0], [1, 0, 0]], F32)


def _get_color(c, x, maximum):
    ratio = F32(x) / F32(maximum) * F32(5)
    i, j = int(np.floor(ratio)), int(np.ceil(ratio))
    ratio = ratio - F32(i)
    return (F32(1) - ratio) * _COLORS[i][c] + ratio * _COLORS[j][c]


def class_color(class_id, classes):
    """Darknet's box colour for a class: ``offset = class*123457 % classes`` on its 6-colour
    ramp, as 0..255 bytes (``(unsigned char)(255*v)``, as Darknet saves images)."""
    classes = max(int(classes), 1)
    offset = (int(class_id) * 123457) % classes
    rgb = [_get_color(2, offset, classes), _get_color(1, offset, classes),
           _get_color(0, offset, classes)]
    return tuple(int(F32(255) * F32(v)) for v in rgb)


def _labels(det, thresh):
    t = F32(thresh)
    return [j for j in range(det.classes) if det.prob[j] > t]


def _draw_box(arr, x1, y1, x2, y2, rgb):
    H, W = arr.shape[:2]
    x1, x2 = min(max(x1, 0), W - 1), min(max(x2, 0), W - 1)
    y1, y2 = min(max(y1, 0), H - 1), min(max(y2, 0), H - 1)
    arr[y1, x1:x2 + 1] = rgb
    arr[y2, x1:x2 + 1] = rgb
    arr[y1:y2 + 1, x1] = rgb
    arr[y1:y2 + 1, x2] = rgb


def _font(size):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # old Pillow or no FreeType: the bitmap font
        return ImageFont.load_default()


def draw_detections(image, dets, names, thresh):
    """Draw boxes and labels the way Darknet's draw_detections decides them; returns a new
    RGB Pillow image (the input is not modified).

    ``image``: a Pillow image or a float (1 or 3, h, w) array in [0, 1].  A detection is drawn
    when any class has ``prob > thresh``; its colour is that of the first such class
    (class_color), its label all such class names joined by ", ".  Boxes are
    ``int(h*.006)`` pixels thick (at least 1 here; Darknet draws no box on images under 167
    pixels high), at to_pixels, drawn as nested 1-pixel rectangles like Darknet.  Labels use
    Pillow's default font: black text on the class colour above the box's top-left corner
    (inside it when there is no room above).
    """
    from PIL import Image, ImageDraw

    from minidarknet.image import _rgb_bytes, from_chw

    if isinstance(image, Image.Image):
        arr = np.array(_rgb_bytes(image), dtype=np.uint8)
    else:
        pil = from_chw(image)
        arr = np.array(pil.convert("RGB"), dtype=np.uint8)
    H, W = arr.shape[:2]
    width = max(1, int(H * .006))
    labels = []
    for d in dets:
        found = _labels(d, thresh)
        if not found:
            continue
        rgb = class_color(found[0], d.classes)
        left, top, right, bot = d.to_pixels(W, H)
        for i in range(width):
            _draw_box(arr, left + i, top + i, right - i, bot - i, rgb)
        labels.append((", ".join(_name(names, j) for j in found), left, top + width, rgb))
    out = Image.fromarray(arr, "RGB")
    if labels:
        draw = ImageDraw.Draw(out)
        font = _font(max(10, int(H * .03)))
        for text, left, r, rgb in labels:
            x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
            pad = max(1, int((y1 - y0) * .25))
            lw, lh = (x1 - x0) + 2 * pad, (y1 - y0) + 2 * pad
            if r - lh >= 0:
                r -= lh
            left = max(0, min(left, W - 1))
            draw.rectangle([left, r, left + lw - 1, r + lh - 1], fill=rgb)
            draw.text((left + pad - x0, r + pad - y0), text, fill=(0, 0, 0), font=font)
    return out


def format_detections(dets, names, thresh, im_w, im_h):
    """Darknet's printout: for each detection, for each class with ``prob > thresh``, a line
    ``name: NN%`` (``%.0f`` of the float32 product ``prob*100``), followed here by a tab and
    the pixel box ``(left: L, top: T, right: R, bottom: B)`` of Detection.to_pixels."""
    lines = []
    for d in dets:
        found = _labels(d, thresh)
        if not found:
            continue
        left, top, right, bot = d.to_pixels(im_w, im_h)
        box = f"(left: {left}, top: {top}, right: {right}, bottom: {bot})"
        for j in found:
            pct = float(F32(d.prob[j]) * F32(100))
            lines.append("%s: %.0f%%\t%s" % (_name(names, j), pct, box))
    return lines
