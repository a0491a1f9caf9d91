"""[Gaussian_yolo]: AlexeyAB's Gaussian YOLOv3 head (boxes with an uncertainty per coordinate).

Layout like [yolo]: per sample, anchor-major; for anchor slot a (of the n anchors `mask`
picks) 9 + classes planes of h*w: x, sigma_x, y, sigma_y, w, sigma_w, h, sigma_h,
objectness, class_0..class_{C-1}.  The layer before must output exactly n*(C+9) x h x w values
(AlexeyAB exits otherwise).

Forward (AlexeyAB's CPU forward_gaussian_yolo_layer): copy the input; logistic on x, sigma_x,
y, sigma_y, sigma_w, sigma_h, objectness and the classes (not on w, h); then scale_x_y=s on x
and y only: v <- s*v - (s-1)/2.

Decoding (get_gaussian_yolo_detections), for every cell and anchor slot with objectness >
thresh (a NaN is dropped): x = (col + x)/w_grid, y = (row + y)/h_grid,
bw = exp(w)*anchor_w/net_w, bh = exp(h)*anchor_h/net_h (yolo_point=left_top / right_bottom
move the centre by +-bw/2, +-bh/2), and prob_j = obj*class_j*(1 - mean uncertainty) where the
mean is (sigma_x + sigma_y + sigma_w + sigma_h)/4, kept if > thresh.  Then the letterbox
correction, like [yolo].  The uncertainties themselves are not stored in the Detection.

Training: AlexeyAB's CPU loss (forward_gaussian_yolo_layer), in yolo_loss_ab.py
(AlexeyABGaussianYoloLoss): truth = `max=` boxes (default 200) of 6 floats (x, y, w, h,
class_id, track_id) per sample; Darknet's deltas on the outputs, cost = sum(delta^2);
backward adds the delta to the previous delta.  gradients="exact" is refused for this loss
(a CfgError): its uncertainty deltas are scaled by uc_normalizer and its mean deltas by
iou_normalizer, so they are not the gradient of one objective.  nms_kind=cornersnms
(AlexeyAB's corner-merging NMS) is refused.
"""
import numpy as np

from ..activations import get_activation
from ..errors import warn
from .base import F32, Layer
from .registry import register
from .yolo_loss_ab import AlexeyABGaussianYoloLoss

LOGISTIC = get_activation("logistic")
BOX_ENTRIES = 8                        # x, sx, y, sy, w, sw, h, sh
LOGISTIC_ENTRIES = (0, 1, 2, 3, 5, 7)  # then objectness and the classes
YOLO_POINTS = ("center", "left_top", "right_bottom")
NMS_KINDS = ("default", "greedynms", "diounms")

# Read by AlexeyAB's parse_gaussian_yolo for its data loader: (key, reader).  The loss keys
# are read by AlexeyABGaussianYoloLoss.
LOADER_KEYS = (("jitter", "float"), ("resize", "float"), ("random", "float"))
TRUTH_FLOATS = 6                       # AB's truth_size: x, y, w, h, class_id, track_id


@register("Gaussian_yolo")
class GaussianYolo(Layer):
    type = "Gaussian_yolo"
    has_cost = True
    needs_image = True
    letterbox_corrected = True

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        self.classes = s.int("classes", 20)
        self.max_boxes = s.int("max", 200)
        self.total = s.int("num", 1)
        if self.classes < 0 or self.total < 1 or self.max_boxes < 0:
            raise s.error(f"[Gaussian_yolo] classes={self.classes}, num={self.total}, "
                          f"max={self.max_boxes}: need classes >= 0, num >= 1, max >= 0")
        mask = s.ints("mask")
        self.mask = np.arange(self.total) if mask is None else np.array(mask, np.int64)
        self.n = len(self.mask)
        if self.n and (self.mask.min() < 0 or self.mask.max() >= self.total):
            raise s.error(f"[Gaussian_yolo] mask={s.raw('mask')} names an anchor outside "
                          f"0..{self.total - 1} (num={self.total})", "mask")
        self.truth_floats = TRUTH_FLOATS
        self.truths = TRUTH_FLOATS * self.max_boxes
        self.new_coords = 0
        self.ignore_thresh = s.float("ignore_thresh", 0.5)
        self.truth_thresh = s.float("truth_thresh", 1.0)
        self.scale_x_y = s.float("scale_x_y", 1.0)
        self.yolo_point = s.str("yolo_point", "center")
        if self.yolo_point not in YOLO_POINTS:
            self.yolo_point = "center"        # AlexeyAB: anything else is the centre
        self._read_nms(s)
        for key, kind in LOADER_KEYS:
            getattr(s, kind)(key)
        if s.has("map"):
            raise s.error(f"[Gaussian_yolo] map={s.raw('map')}: class-remapping files are not "
                          f"supported by minidarknet", "map")
        self.biases = self._read_anchors(s)
        self.loss = AlexeyABGaussianYoloLoss(self, s)
        self.objective = 0.0
        expected = self.n * (self.classes + BOX_ENTRIES + 1)
        if expected * shape.h * shape.w != shape.inputs:
            raise s.error(
                f"[Gaussian_yolo] with classes={self.classes} and {self.n} anchors in mask "
                f"needs {expected} x {shape.h} x {shape.w} inputs, but the layer before "
                f"outputs {shape.c} x {shape.h} x {shape.w}: set filters={expected} in the "
                f"[convolutional] layer before it (filters = (classes + 9) * anchors in mask)")
        self.set_output_shape(expected, shape.h, shape.w)
        self.cost = 0.0
        self.allocate(shape.batch)

    def _read_nms(self, s):
        self.beta_nms = s.float("beta_nms", 0.6)
        kind = s.str("nms_kind", "default")
        if kind == "cornersnms":
            raise s.error("[Gaussian_yolo] nms_kind=cornersnms: AlexeyAB's corner-merging NMS "
                          "is not supported by minidarknet (use greedynms or diounms)",
                          "nms_kind")
        self.nms_kind = kind if kind in NMS_KINDS else "default"

    def _read_anchors(self, s):
        biases = np.full(2 * self.total, 0.5, F32)    # AlexeyAB's default for missing anchors
        anchors = s.floats("anchors")
        if anchors:
            if len(anchors) > biases.size:
                warn(f"{s.where('anchors')}: {len(anchors)} anchor values for num={self.total} "
                     f"({biases.size} used; AlexeyAB's Gaussian parser writes the rest past "
                     f"its anchor array)")
            used = anchors[:biases.size]
            biases[:len(used)] = used
        return biases

    # ------------------------------------------------------------------ views
    @property
    def entries(self):
        return self.classes + BOX_ENTRIES + 1

    def _planes(self, a):
        """(batch, n, 9 + classes, h*w) view."""
        return a.reshape(self.batch, self.n, self.entries, self.out_h * self.out_w)

    # ------------------------------------------------------------------ forward
    def forward(self, net):
        out = self._planes(self.output)
        out[...] = self._planes(net.input)
        for e in LOGISTIC_ENTRIES:
            LOGISTIC.forward(out[:, :, e], out[:, :, e])
        LOGISTIC.forward(out[:, :, BOX_ENTRIES:], out[:, :, BOX_ENTRIES:])
        s = F32(self.scale_x_y)
        if s != 1:
            for e in (0, 2):
                v = out[:, :, e]
                v *= s
                v += F32(-0.5 * (self.scale_x_y - 1))
        if net.truth is None:
            return
        if self.exact:
            raise self.section.error("[Gaussian_yolo]: gradients='exact' is not available for "
                                     "AlexeyAB's Gaussian YOLO loss (its deltas are not the "
                                     "gradient of one objective); train with "
                                     "gradients='darknet'")
        from .yolo import check_truth_size
        truth = check_truth_size(self, net)
        delta, self.cost, self.objective, _ = self.loss.compute(
            out, self._planes(net.input), truth, net.w, net.h, False)
        self.allocate_delta()
        self._planes(self.delta)[...] = delta

    # ------------------------------------------------------------------ backward
    def backward(self, net):
        """No loss here, so Darknet adds its (zero) delta; exact mode takes what later layers
        sent back through the activations."""
        if net.delta is None or self.delta is None:
            return
        prev = self._planes(net.delta)
        g = self._planes(self.delta)
        if not self.exact:
            prev += g
            return
        out = self._planes(self.output)
        dz = g.copy()
        s = F32(self.scale_x_y)
        for e in LOGISTIC_ENTRIES:
            y = out[:, :, e]
            if e in (0, 2) and s != 1:
                y = (y + F32(0.5 * (self.scale_x_y - 1))) / s
                dz[:, :, e] *= s
            dz[:, :, e] *= y * (F32(1) - y)
        rest = out[:, :, BOX_ENTRIES:]
        dz[:, :, BOX_ENTRIES:] *= rest * (F32(1) - rest)
        prev += dz

    # ------------------------------------------------------------------ decoding
    def boxes(self, index, thresh, hier, net_w, net_h):
        """AlexeyAB's get_gaussian_yolo_detections for batch item `index` (boxes relative to
        the network input, before the letterbox correction)."""
        del hier
        return gaussian_yolo_boxes(self.output[index], self.mask, self.biases, self.classes,
                                   net_w, net_h, thresh, self.yolo_point)


def gaussian_yolo_boxes(output, mask, anchors, classes, net_w, net_h, thresh,
                        yolo_point="center"):
    """Decode one [Gaussian_yolo] output (n*(9+classes), h, w) for one image, in Darknet's
    order (cell-major, then anchor slot)."""
    from ..boxes import Detection
    mask = np.asarray(mask, np.int64).reshape(-1)
    pairs = np.asarray(anchors, F32).reshape(-1, 2)
    n, classes = len(mask), int(classes)
    c, lh, lw = output.shape
    o = np.asarray(output, F32).reshape(n, BOX_ENTRIES + 1 + classes, lh * lw)
    t = F32(thresh)
    obj_cells = o[:, BOX_ENTRIES].T.reshape(-1)          # index = cell*n + anchor
    keep = np.flatnonzero(obj_cells > t)
    cell, a = keep // n, keep % n
    row, col = (cell // lw).astype(F32), (cell % lw).astype(F32)
    v = o[a, :, cell]                                    # (k, entries)
    anchor = pairs[mask[a]]
    with np.errstate(over="ignore"):
        bw = (np.exp(v[:, 4].astype(np.float64)) * anchor[:, 0] / int(net_w)).astype(F32)
        bh = (np.exp(v[:, 6].astype(np.float64)) * anchor[:, 1] / int(net_h)).astype(F32)
    x = (col + v[:, 0]) / F32(lw)
    y = (row + v[:, 2]) / F32(lh)
    if yolo_point == "left_top":
        x, y = x + bw / F32(2), y + bh / F32(2)
    elif yolo_point == "right_bottom":
        x, y = x - bw / F32(2), y - bh / F32(2)
    obj = v[:, BOX_ENTRIES]
    # (uc0 + uc1 + uc2 + uc3) summed in float, / 4.0 in double, stored as float
    uc = (((v[:, 1] + v[:, 3]) + v[:, 5]) + v[:, 7]).astype(np.float64) / 4.0
    uc = uc.astype(F32)
    prob = ((obj[:, None] * v[:, BOX_ENTRIES + 1:]).astype(np.float64)
            * (1.0 - uc.astype(np.float64))[:, None]).astype(F32)
    prob = np.where(prob > t, prob, F32(0)).astype(F32)
    return [Detection(x[i], y[i], bw[i], bh[i], obj[i], prob[i]) for i in range(len(keep))]
