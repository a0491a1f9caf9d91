"""[detection]: the YOLOv1 detection head (pjreddie's layer).

Input (flat, per sample): side*side*classes class scores (cell-major), then side*side*num
confidences (index cell*num + box), then side*side*num boxes of `coords` values (x, y in cell
units, w, h relative to the image, or their square roots with sqrt=1).  The layer has no image
shape (Darknet leaves out_c/h/w at 0).

Forward: copy; with softmax=1 a softmax over each cell's class scores; nothing else.

Loss (whenever a truth is given; pjreddie's forward_detection_layer).  Truth per cell:
(is_object, class one-hot[classes], x, y, w, h), side*side*(1 + coords + classes) values per
sample.  Every confidence gets noobject_scale*(0 - c); in a cell with an object the classes get
class_scale*(truth - p), the box that best fits the truth (highest IoU, or lowest RMSE while no
box overlaps it; forced=1: box 1 for small truths, else 0; random=1: a random box while
seen < 64000) gets confidence delta object_scale*(1 - c) (rescore=1: IoU - c) and box deltas
coord_scale*(truth - out) (sqrt=1: on sqrt(w), sqrt(h)).  The IoU is Darknet's, taken between
boxes whose x, y are divided by side but whose w, h are not.  cost = sum of squared deltas;
backward adds the delta to the previous delta.

gradients="exact": the deltas are the negative gradient of
    objective = sum w/2*(t - out)^2                (confidences, boxes, classes without softmax)
              + sum class_scale*CE(truth, softmax) (classes with softmax=1)
with the box assignment held fixed; with rescore=1 the IoU target's derivative through the
predicted box is added.  With softmax=1 the class delta is class_scale*(t - p*sum(t)) (Darknet:
t - p, the same for a one-hot truth), and deltas that later layers send back get the softmax
Jacobian.

Deviations: random=1 draws from the network's numpy generator, not C's rand(); if no box has
IoU > 0 and every RMSE is >= 20 (NaN or diverged outputs) Darknet indexes box -1, which reads
the previous cell's memory -- here box 0 is used.
"""
import numpy as np

from .base import F32, Layer
from .registry import register
from .yolo import F64, box_iou_f32, check_truth_size, iou_gradient

RANDOM_SEEN = 64000
NO_FIT_RMSE = F32(20)


@register("detection")
class DetectionLayer(Layer):
    type = "detection"
    has_cost = True
    letterbox_corrected = False    # Darknet's get_detection_detections applies no correction

    def __init__(self, section, shape, net):
        super().__init__(section, shape, net)
        s = section
        self.coords = s.int("coords", 1)
        self.classes = s.int("classes", 1)
        self.rescore = s.int("rescore", 0)
        self.n = s.int("num", 1)
        self.side = s.int("side", 7)
        if self.side < 1 or self.n < 1 or self.classes < 0 or self.coords < 4:
            raise s.error(f"[detection] side={self.side}, num={self.n}, classes={self.classes}, "
                          f"coords={self.coords}: need side, num >= 1, classes >= 0 and "
                          f"coords >= 4 (x, y, w, h)")
        self.softmax = s.int("softmax", 0)
        self.sqrt = s.int("sqrt", 0)
        self.max_boxes = s.int("max", 90)
        self.coord_scale = F32(s.float("coord_scale", 1.0))
        self.forced = s.int("forced", 0)
        self.object_scale = F32(s.float("object_scale", 1.0))
        self.noobject_scale = F32(s.float("noobject_scale", 1.0))
        self.class_scale = F32(s.float("class_scale", 1.0))
        s.float("jitter", 0.2)
        s.float("resize", 1.0)
        self.random = s.int("random", 0)
        self.reorg = s.int("reorg", 0)
        if self.reorg:
            raise s.error("[detection] reorg=1 is not supported (Darknet's code for it is "
                          "commented out)", "reorg")
        if self.forced and self.n < 2:
            raise s.error("[detection] forced=1 picks box 1 for small objects and needs num >= 2",
                          "forced")
        cells = self.side * self.side
        need = cells * ((1 + self.coords) * self.n + self.classes)
        if need != shape.inputs:
            raise s.error(
                f"[detection] side={self.side}, num={self.n}, coords={self.coords}, "
                f"classes={self.classes} needs side*side*((1 + coords)*num + classes) = {need} "
                f"inputs, but the layer before outputs {shape.inputs}: set output={need} in the "
                f"[connected] layer before it")
        self.truths = cells * (1 + self.coords + self.classes)
        self.set_output_shape(0, 0, 0, shape.inputs)
        self.rng = net.rng
        self.cost = 0.0
        self.objective = 0.0
        self.loss_delta = None
        self.allocate(shape.batch)

    # ------------------------------------------------------------------ views
    def _parts(self, a):
        """(classes (B, cells, C), confidences (B, cells, n), boxes (B, cells, n, coords))."""
        cells = self.side * self.side
        flat = a.reshape(self.batch, self.outputs)
        k1 = cells * self.classes
        k2 = k1 + cells * self.n
        return (flat[:, :k1].reshape(self.batch, cells, self.classes),
                flat[:, k1:k2].reshape(self.batch, cells, self.n),
                flat[:, k2:].reshape(self.batch, cells, self.n, self.coords))

    # ------------------------------------------------------------------ forward
    def forward(self, net):
        self.output.reshape(self.batch, -1)[...] = net.input.reshape(self.batch, -1)
        if self.softmax:
            p = self._parts(self.output)[0]
            e = np.exp((p - p.max(axis=2, keepdims=True)).astype(F64)).astype(F32)
            p[...] = e / e.sum(axis=2, keepdims=True, dtype=F32)
        self.loss_delta = None
        if net.truth is None:
            return
        truth = check_truth_size(self, net)
        target, weight, rescored = self._targets(truth, net.seen)
        out = self.output.reshape(self.batch, -1)
        delta = (weight * (target - out)).astype(F32)
        self.cost = float(np.square(delta, dtype=F64).sum())
        self.objective = self._objective(target, weight)
        self.allocate_delta()
        if self.exact:
            self.loss_delta = self._exact_loss_delta(delta, target, weight, rescored)
        else:
            self.delta.reshape(self.batch, -1)[...] = delta

    # ------------------------------------------------------------------ loss
    def _out_boxes(self, boxes):
        """The predicted boxes as Darknet compares them: x, y / side; w, h squared if sqrt."""
        b = boxes[..., :4].astype(F32).copy()
        b[..., 0:2] /= F32(self.side)
        if self.sqrt:
            b[..., 2:4] = b[..., 2:4] * b[..., 2:4]
        return b

    def _targets(self, truth, seen):
        out = self.output.reshape(self.batch, -1)
        target = np.zeros_like(out)
        weight = np.zeros_like(out)
        t_cls, t_conf, t_box = self._parts(target)
        w_cls, w_conf, w_box = self._parts(weight)
        _, _, o_box = self._parts(self.output)
        cells = self.side * self.side
        per_cell = 1 + self.coords + self.classes
        truth = truth.reshape(self.batch, cells, per_cell)
        w_conf[...] = self.noobject_scale
        rescored = []
        for b, cell in zip(*np.nonzero(truth[:, :, 0])):
            row = truth[b, cell]
            w_cls[b, cell] = self.class_scale
            t_cls[b, cell] = row[1:1 + self.classes]
            tbox = row[1 + self.classes:1 + self.classes + 4].astype(F32)
            truth_box = tbox.copy()
            truth_box[0:2] /= F32(self.side)
            pred = self._out_boxes(o_box[b, cell])                        # (n, 4)
            best = self._best_box(pred, truth_box, seen)
            w_conf[b, cell, best] = self.object_scale
            if self.rescore:
                t_conf[b, cell, best] = box_iou_f32(pred[best], truth_box)
                rescored.append((b, cell, best, truth_box))
            else:
                t_conf[b, cell, best] = 1
            w_box[b, cell, best, :4] = self.coord_scale
            t_box[b, cell, best, :4] = tbox
            if self.sqrt:
                with np.errstate(invalid="ignore"):
                    t_box[b, cell, best, 2:4] = np.sqrt(tbox[2:4].astype(F64)).astype(F32)
        return target, weight, rescored

    def _best_box(self, pred, truth_box, seen):
        """Darknet's choice of the responsible box (module docstring)."""
        iou = box_iou_f32(pred, truth_box)
        with np.errstate(invalid="ignore", over="ignore"):
            rmse = np.sqrt(np.square(pred.astype(F32) - truth_box).sum(axis=1, dtype=F32))
        best, best_iou, best_rmse = -1, F32(0), NO_FIT_RMSE
        for j in range(self.n):
            if best_iou > 0 or iou[j] > 0:
                if iou[j] > best_iou:
                    best, best_iou = j, iou[j]
            elif rmse[j] < best_rmse:
                best, best_rmse = j, rmse[j]
        if self.forced:
            best = 1 if truth_box[2] * truth_box[3] < F32(.1) else 0
        if self.random and seen < RANDOM_SEEN:
            best = int(self.rng.integers(self.n))
        return max(best, 0)

    # ------------------------------------------------------------------ exact mode
    def _objective(self, target, weight):
        out = self.output.reshape(self.batch, -1).astype(F64)
        t = target.astype(F64)
        w = weight.astype(F64)
        k1 = self.side * self.side * self.classes
        start = k1 if self.softmax else 0
        total = (w[:, start:] * 0.5 * (t[:, start:] - out[:, start:]) ** 2).sum()
        if self.softmax:
            with np.errstate(divide="ignore", invalid="ignore"):
                ce = np.where(w[:, :k1] * t[:, :k1] != 0,
                              -w[:, :k1] * t[:, :k1] * np.log(out[:, :k1]), 0.0)
            total += ce.sum()
        return float(total)

    def _exact_loss_delta(self, delta, target, weight, rescored):
        dz = delta.copy()
        d_cls, _, d_box = self._parts(dz)
        if self.softmax:
            p = self._parts(self.output)[0]
            t_cls = self._parts(target)[0]
            w_cls = self._parts(weight)[0]
            d_cls[...] = w_cls * (t_cls - p * t_cls.sum(axis=2, keepdims=True))
        o_cls, o_conf, o_box = self._parts(self.output)
        _, w_conf, _ = self._parts(weight)
        for b, cell, best, truth_box in rescored:
            raw = o_box[b, cell, best, :4].astype(F64)
            pred = self._out_boxes(o_box[b, cell, best])
            iou, grad = iou_gradient(pred, truth_box)
            chain = np.array([1 / self.side, 1 / self.side, 1.0, 1.0], F64)
            if self.sqrt:
                chain[2:4] = 2 * raw[2:4]
            scale = F64(w_conf[b, cell, best]) * (iou - F64(o_conf[b, cell, best]))
            d_box[b, cell, best, :4] -= (scale * grad * chain).astype(F32)
        return dz

    # ------------------------------------------------------------------ backward
    def backward(self, net):
        if net.delta is None:
            return
        prev = net.delta.reshape(self.batch, -1)
        g = self.delta.reshape(self.batch, -1)
        if not self.exact:
            prev += g
            return
        dz = g.copy()
        if self.softmax:
            d_cls = self._parts(dz)[0]
            p = self._parts(self.output)[0]
            g_cls = self._parts(g)[0]
            d_cls[...] = p * (g_cls - (g_cls * p).sum(axis=2, keepdims=True))
        prev += dz
        if self.loss_delta is not None:
            prev += self.loss_delta

    # ------------------------------------------------------------------ decoding
    def boxes(self, index, thresh, hier, net_w, net_h):
        """Darknet's get_detection_detections for batch item `index`, relative (w = h = 1):
        every cell x box, in the order cell*num + box."""
        from ..boxes import detection_layer_boxes
        return detection_layer_boxes(self.output[index], self.side, self.n, self.classes,
                                     thresh, coords=self.coords, sqrt=bool(self.sqrt), w=1, h=1)

    def describe(self):
        return "", "", f"{self.inputs}", f"{self.outputs}"
