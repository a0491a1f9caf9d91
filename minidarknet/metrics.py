"""Validation metrics: top-k accuracy for classifiers, mAP for detectors.

``detection_map`` is AlexeyAB's ``detector map`` (validate_detector_map in src/detector.c):

* every detection and every class with ``prob > 0`` (after NMS) is one record; it is matched
  to the truth box of the same class and the same image with the largest IoU above
  ``iou_thresh`` (the first such box on ties).  Matching looks at each record on its own;
* all records of all classes are sorted by probability, highest first (Darknet's qsort is
  not stable; here ties keep the order of images, boxes and classes);
* going down that list, a matched record is a true positive if its truth box was not claimed
  by an earlier record, otherwise a false positive; unmatched records are false positives.
  Precision and recall of every class are taken at every rank of the common list;
* ``points=0`` (AlexeyAB's default, "area under the curve"): walking from the second-to-last
  rank r down to rank 0, each recall step ``recall[r+1] - recall[r]`` is weighted by the
  largest precision at ranks >= r.  Darknet's loop never adds the step from recall 0 to
  the recall at rank 0, so the class owning the top-ranked record loses
  ``recall[0] * precision``: a perfect detector of n boxes scores 1 - 1/n (tiny for
  real validation sets, visible on hand-made ones).  ``points=11`` (VOC2007) or ``101``
  (COCO): the mean over recall levels ``p/(points-1)`` of the largest precision at a recall
  >= that level;
* mAP = the mean of the per-class APs over all classes (a class without truth boxes counts
  as AP 0, as in Darknet).

Detections are minidarknet.boxes.Detection objects (or rows x, y, w, h, objectness,
prob...); truths are per-image arrays of rows (class, x, y, w, h).  Both relative to the
image.
"""
from dataclasses import dataclass, field

import numpy as np

from .boxes import Detection, box_iou

CONF_THRESH = 0.25     # Darknet's thresh_calc_avg_iou: precision/recall/F1/IoU are reported here


# --------------------------------------------------------------------------- classifiers

def topk_correct(scores, labels, k):
    """How many rows of `scores` (n, classes) have their label among the k largest scores
    (ties go to the lower class index, as a stable sort gives)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels).reshape(-1)
    k = min(int(k), scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return int((order == labels[:, None]).any(axis=1).sum())


def topk_accuracy(scores, labels, k):
    labels = np.asarray(labels).reshape(-1)
    return topk_correct(scores, labels, k) / len(labels) if len(labels) else 0.0


# --------------------------------------------------------------------------- detectors

@dataclass
class MapResult:
    map: float                          # mean average precision over the classes
    ap: list                            # per class
    truth_counts: list                  # truth boxes per class
    detections: int                     # records (box x class with prob > 0)
    truths: int
    iou_thresh: float
    points: int
    conf_thresh: float = CONF_THRESH
    tp: int = 0                         # at conf_thresh (Darknet's printout)
    fp: int = 0
    fn: int = 0
    precision: float = 0.0
    recall: float = 0.0
    f1: float = 0.0
    average_iou: float = 0.0
    class_tp: list = field(default_factory=list)
    class_fp: list = field(default_factory=list)


def _det_arrays(dets, classes):
    """(boxes (n, 4) float32, probs (n, classes) float32) of one image's detections."""
    if len(dets) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0, classes), np.float32)
    if isinstance(dets[0], Detection):
        boxes = np.array([[d.x, d.y, d.w, d.h] for d in dets], np.float32)
        probs = np.zeros((len(dets), classes), np.float32)
        for i, d in enumerate(dets):
            m = min(classes, d.prob.shape[0])
            probs[i, :m] = d.prob[:m]
        return boxes, probs
    rows = np.asarray(dets, np.float32).reshape(len(dets), -1)
    return rows[:, :4], rows[:, 5:5 + classes]


def detection_map(detections, truths, classes, iou_thresh=0.5, points=0,
                  conf_thresh=CONF_THRESH):
    """AlexeyAB's validate_detector_map on per-image detections and truths (module doc)."""
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} images of detections but {len(truths)} of truths")
    if points < 0 or points == 1:
        raise ValueError(f"points must be 0 (area under the curve) or at least 2, not {points}")
    classes = int(classes)
    probs_all, classes_all, flags_all, unique_all = [], [], [], []
    truth_counts = np.zeros(classes, np.int64)
    unique_truths = 0
    tp_conf = fp_conf = 0
    iou_sum = 0.0
    class_tp = np.zeros(classes, np.int64)
    class_fp = np.zeros(classes, np.int64)
    for dets, truth in zip(detections, truths):
        truth = np.asarray(truth, np.float64).reshape(-1, 5)
        truth_cls = truth[:, 0].astype(np.int64)
        np.add.at(truth_counts, truth_cls[(truth_cls >= 0) & (truth_cls < classes)], 1)
        boxes, probs = _det_arrays(dets, classes)
        image_unique = []
        for i in range(len(boxes)):
            ious = box_iou(boxes[i], truth[:, 1:5].astype(np.float32)) if len(truth) else \
                np.zeros(0, np.float32)
            ious = np.atleast_1d(ious)
            for class_id in np.flatnonzero(probs[i] > 0):
                prob = float(probs[i, class_id])
                candidates = (ious > iou_thresh) & (truth_cls == class_id)
                index, best = -1, 0.0
                if candidates.any():
                    j = int(np.argmax(np.where(candidates, ious, -1.0)))
                    index, best = unique_truths + j, float(ious[j])
                probs_all.append(prob)
                classes_all.append(class_id)
                flags_all.append(index >= 0)
                unique_all.append(index)
                if prob > conf_thresh:
                    if index >= 0 and index not in image_unique:
                        tp_conf += 1
                        iou_sum += best
                        class_tp[class_id] += 1
                    else:
                        fp_conf += 1
                        class_fp[class_id] += 1
                image_unique.append(index)
        unique_truths += len(truth)

    result = MapResult(map=0.0, ap=[0.0] * classes, truth_counts=truth_counts.tolist(),
                       detections=len(probs_all), truths=unique_truths,
                       iou_thresh=float(iou_thresh), points=int(points),
                       conf_thresh=float(conf_thresh), tp=tp_conf, fp=fp_conf,
                       fn=unique_truths - tp_conf, class_tp=class_tp.tolist(),
                       class_fp=class_fp.tolist())
    if tp_conf + fp_conf:
        result.average_iou = iou_sum / (tp_conf + fp_conf)
        result.precision = tp_conf / (tp_conf + fp_conf)
    if unique_truths:
        result.recall = tp_conf / unique_truths
    if result.precision + result.recall:
        result.f1 = 2 * result.precision * result.recall / (result.precision + result.recall)
    if not probs_all:
        return result

    order = np.argsort(-np.array(probs_all, np.float32), kind="stable")
    cls = np.array(classes_all, np.int64)[order]
    flag = np.array(flags_all, bool)[order]
    unique = np.array(unique_all, np.int64)[order]
    # A matched record is a true positive when it is the first (best-ranked) to claim its box.
    first = np.zeros(len(order), bool)
    matched = np.flatnonzero(flag)
    if matched.size:
        _, first_at = np.unique(unique[matched], return_index=True)
        first[matched[first_at]] = True
    ap = []
    for class_id in range(classes):
        mine = cls == class_id
        tp = np.cumsum(mine & first)
        fp = np.cumsum(mine & ~first)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        count = truth_counts[class_id]
        recall = tp / count if count > 0 else np.zeros(len(tp))
        ap.append(_average_precision(precision, recall, points))
    result.ap = ap
    result.map = float(np.sum(ap) / classes) if classes else 0.0
    return result


def _average_precision(precision, recall, points):
    if points == 0:
        if len(precision) < 2:
            return 0.0
        best_after = np.maximum.accumulate(precision[::-1])[::-1]
        return float(np.sum((recall[1:] - recall[:-1]) * best_after[:-1]))
    total = 0.0
    for point in range(points):
        level = point / (points - 1)
        reached = recall >= level
        total += float(precision[reached].max()) if reached.any() else 0.0
    return total / points
