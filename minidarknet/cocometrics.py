"""COCO's detection metrics (pycocotools' COCOeval for bounding boxes), in numpy.

    records = coco_records(detections, sizes, classes)   # per image: pixel boxes, scores
    result = coco_evaluate(records, truths, sizes, classes, order=image_ids)
    result.ap50_95, result.ap50, result.ap75, result.ap_small, result.per_class

What pycocotools does (COCOeval.evaluate / evaluateImg / accumulate), and is done here:

* every (box, class) with a probability > 0 is one detection, with that probability as its
  score (Darknet's print_cocos); boxes are in pixels of the original picture, top-left x, y,
  width, height, clipped to the picture; ground truth boxes are the YOLO labels in pixels,
  their area width * height;
* per image and class, detections are sorted by score (stable) and the first ``max_dets``
  (100) kept.  For each IoU threshold t in .50, .55, ..., .95 each detection in turn takes the
  unmatched truth with the largest IoU >= t (the last one on ties), preferring truths inside
  the area range to those outside (which are "ignored": they neither count as misses nor make
  their detections false positives); an unmatched detection outside the area range is ignored
  too.  Area ranges: all, small (< 32^2), medium (32^2..96^2), large (> 96^2), in pixels;
* per class and area range, the detections of all images (in image order) are sorted by
  score (stable); precision is made non-increasing from the end, and read at the 101 recall
  levels 0, .01, ..., 1 (the first rank whose recall reaches the level; 0 beyond the last);
  AP is the mean over those levels, thresholds and the classes that have truths in the range
  (a class without any is left out, unlike Darknet's mAP, which counts it as 0).
"""
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError

IOU_THRESHOLDS = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
RECALL_LEVELS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)
AREA_RANGES = {"all": (0.0, 1e5 ** 2), "small": (0.0, 32.0 ** 2),
               "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e5 ** 2)}
MAX_DETS = 100


@dataclass
class CocoResult:
    ap50_95: float                 # AP@[.5:.95], area all, 100 detections per image
    ap50: float
    ap75: float
    ap_small: float                # None when no truth box falls in the range
    ap_medium: float
    ap_large: float
    ar100: float                   # average recall, 100 detections per image
    per_class: list = field(default_factory=list)       # AP@[.5:.95] per class (None: no truths)
    per_class_ap50: list = field(default_factory=list)
    detections: int = 0


# --------------------------------------------------------------------------- inputs

def image_id(path):
    """Darknet's get_coco_image_id: the number after the last '_' of the file name (or at its
    start when it has no '_'): COCO_val2014_000000000139.jpg -> 139, 00012.png -> 12."""
    name = Path(path).name
    tail = name.rsplit("_", 1)[-1]
    found = re.match(r"\d+", tail)
    if not found:
        raise DataError(f"{path}: no number in the file name for a COCO image_id "
                        f"(COCO_val2014_000000000139.jpg -> 139, 00012.png -> 12)")
    return int(found.group())


def image_ids(paths):
    """The COCO image_id of every path; two pictures with the same number are an error."""
    ids = [image_id(p) for p in paths]
    seen = {}
    for path, i in zip(paths, ids):
        if i in seen:
            raise DataError(f"{path}: image_id {i} is also the id of {seen[i]}")
        seen[i] = path
    return ids


def pixel_boxes(rel, width, height):
    """(n, 4) relative centre x, y, w, h -> pixel top-left x, y, width, height clipped to
    the picture (Darknet's print_cocos)."""
    rel = np.asarray(rel, np.float64).reshape(-1, 4)
    x1 = np.clip((rel[:, 0] - rel[:, 2] / 2) * width, 0, width)
    x2 = np.clip((rel[:, 0] + rel[:, 2] / 2) * width, 0, width)
    y1 = np.clip((rel[:, 1] - rel[:, 3] / 2) * height, 0, height)
    y2 = np.clip((rel[:, 1] + rel[:, 3] / 2) * height, 0, height)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)


def coco_records(detections, sizes, classes):
    """Per image: (boxes (n, 4) pixels x, y, w, h; scores (n,) float64; class ids (n,)),
    one row per detection and class with probability > 0, in detection then class order."""
    from .metrics import _det_arrays
    out = []
    for dets, (w, h) in zip(detections, sizes):
        rel, probs = _det_arrays(dets, classes)
        rows, cls = np.nonzero(probs > 0)
        boxes = pixel_boxes(rel, w, h)[rows]
        out.append((boxes, probs[rows, cls].astype(np.float64), cls.astype(np.int64)))
    return out


def truth_arrays(truth, width, height):
    """YOLO label rows (class, x, y, w, h) -> (pixel boxes (m, 4), class ids, areas)."""
    truth = np.asarray(truth, np.float64).reshape(-1, 5)
    boxes = pixel_boxes(truth[:, 1:5], width, height) if len(truth) else np.zeros((0, 4))
    area = truth[:, 3] * width * truth[:, 4] * height
    return boxes, truth[:, 0].astype(np.int64), area


def coco_json(records, ids):
    """COCO's results format: [{image_id, category_id, bbox, score}] (category_id = class)."""
    return [{"image_id": int(i), "category_id": int(c), "bbox": [float(v) for v in box],
             "score": float(s)}
            for (boxes, scores, cls), i in zip(records, ids)
            for box, s, c in zip(boxes, scores, cls)]


# --------------------------------------------------------------------------- evaluation

def _iou(dt, gt):
    """(D, G) IoU of pixel x, y, w, h boxes (pycocotools' bbox IoU, no crowd)."""
    if not len(dt) or not len(gt):
        return np.zeros((len(dt), len(gt)))
    ix = np.minimum(dt[:, None, 0] + dt[:, None, 2], gt[None, :, 0] + gt[None, :, 2]) - \
        np.maximum(dt[:, None, 0], gt[None, :, 0])
    iy = np.minimum(dt[:, None, 1] + dt[:, None, 3], gt[None, :, 1] + gt[None, :, 3]) - \
        np.maximum(dt[:, None, 1], gt[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    union = (dt[:, 2] * dt[:, 3])[:, None] + (gt[:, 2] * gt[:, 3])[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _last_best(mask, iou_row):
    """Per row of mask (T, G): the last index of the largest iou among True, -1 if none."""
    g = mask.shape[1]
    scores = np.where(mask, iou_row[None, :], -1.0)[:, ::-1]
    best = g - 1 - np.argmax(scores, axis=1)
    return np.where(mask.any(axis=1), best, -1)


def _match(ious, gt_ignore, dt_area_out):
    """pycocotools' evaluateImg for one image, class and area range, all thresholds at once.
    ious (D, G) with detections by score and truths ignored-last; returns dt matched (T, D)
    and dt ignored (T, D)."""
    t_count, d_count = len(IOU_THRESHOLDS), ious.shape[0]
    matched = np.zeros((t_count, d_count), bool)
    ignored = np.zeros((t_count, d_count), bool)
    if ious.size:
        taken = np.zeros((t_count, ious.shape[1]), bool)
        rows = np.arange(t_count)
        for d in np.flatnonzero((ious >= IOU_THRESHOLDS[0]).any(axis=1)):
            ok = ~taken & (ious[d][None, :] >= IOU_THRESHOLDS[:, None])
            m = _last_best(ok & ~gt_ignore[None, :], ious[d])
            m = np.where(m >= 0, m, _last_best(ok & gt_ignore[None, :], ious[d]))
            hit = m >= 0
            matched[hit, d] = True
            ignored[hit, d] = gt_ignore[m[hit]]
            taken[rows[hit], m[hit]] = True
    ignored |= ~matched & dt_area_out[None, :]
    return matched, ignored


def _precision_at_levels(matched, ignored, scores, truths):
    """(T, R) precision at the recall levels (pycocotools' accumulate) and (T,) recall."""
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[:, order], ignored[:, order]
    tp = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
    fp = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
    precision = np.zeros((len(IOU_THRESHOLDS), len(RECALL_LEVELS)))
    recall = np.zeros(len(IOU_THRESHOLDS))
    n = tp.shape[1]
    if n == 0:
        return precision, recall
    rc = tp / truths
    pr = tp / (fp + tp + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    recall = rc[:, -1]
    for t in range(len(IOU_THRESHOLDS)):
        at = np.searchsorted(rc[t], RECALL_LEVELS, side="left")
        inside = at < n
        precision[t, inside] = pr[t, at[inside]]
    return precision, recall


def coco_evaluate(records, truths, sizes, classes, order=None, max_dets=MAX_DETS):
    """COCOeval (bbox) on per-image records (coco_records) and YOLO truths (module doc).
    order: the images' sort keys (their COCO image_ids; default: their index)."""
    classes = int(classes)
    images = len(records)
    order = np.argsort(np.arange(images) if order is None else np.asarray(order),
                       kind="stable")
    areas = list(AREA_RANGES.values())
    # per (class, area): lists of matched / ignored / scores, and the count of truths
    parts = [[([], [], [], 0) for _ in areas] for _ in range(classes)]
    total = 0
    for i in order:
        boxes, scores, cls = records[i]
        total += len(scores)
        g_boxes, g_cls, g_area = truth_arrays(truths[i], *sizes[i])
        for c in np.union1d(np.unique(cls), np.unique(g_cls)):
            if not 0 <= c < classes:
                continue
            mine = np.flatnonzero(cls == c)
            mine = mine[np.argsort(-scores[mine], kind="mergesort")][:max_dets]
            d_boxes, d_scores = boxes[mine], scores[mine]
            d_area = d_boxes[:, 2] * d_boxes[:, 3]
            gt = g_cls == c
            ious_all = _iou(d_boxes, g_boxes[gt])
            for a, (low, high) in enumerate(areas):
                out = (g_area[gt] < low) | (g_area[gt] > high)
                by_ignore = np.argsort(out, kind="mergesort")
                matched, ignored = _match(ious_all[:, by_ignore], out[by_ignore],
                                          (d_area < low) | (d_area > high))
                m, ig, sc, n = parts[c][a]
                m.append(matched)
                ig.append(ignored)
                sc.append(d_scores)
                parts[c][a] = (m, ig, sc, n + int((~out).sum()))
    # precision[t, r, class, area] (-1: no truths in the range), recall[t, class, area]
    precision = -np.ones((len(IOU_THRESHOLDS), len(RECALL_LEVELS), classes, len(areas)))
    recall = -np.ones((len(IOU_THRESHOLDS), classes, len(areas)))
    for c in range(classes):
        for a in range(len(areas)):
            m, ig, sc, n = parts[c][a]
            if n == 0:
                continue
            t_count = len(IOU_THRESHOLDS)
            matched = np.concatenate(m, axis=1) if m else np.zeros((t_count, 0), bool)
            ignored = np.concatenate(ig, axis=1) if ig else np.zeros((t_count, 0), bool)
            scores = np.concatenate(sc) if sc else np.zeros(0)
            precision[:, :, c, a], recall[:, c, a] = _precision_at_levels(matched, ignored,
                                                                          scores, n)

    def mean(values):
        values = values[values > -1]
        return float(values.mean()) if values.size else None

    return CocoResult(
        ap50_95=mean(precision[:, :, :, 0]), ap50=mean(precision[0, :, :, 0]),
        ap75=mean(precision[5, :, :, 0]), ap_small=mean(precision[:, :, :, 1]),
        ap_medium=mean(precision[:, :, :, 2]), ap_large=mean(precision[:, :, :, 3]),
        ar100=mean(recall[:, :, 0]),
        per_class=[mean(precision[:, :, c, 0]) for c in range(classes)],
        per_class_ap50=[mean(precision[0, :, c, 0]) for c in range(classes)],
        detections=total)
