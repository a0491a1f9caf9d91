"""Validation of a trained network: Darknet's `classifier valid` and `detector map`.

    report = minidarknet.valid.validate("cfg/net.cfg", "data/net.data", weights="net.weights")
    report.metrics   # {"top1": .., "top5": ..} or {"mAP@0.5": ..}

Classifiers: every validation image is fitted like Darknet's validate_classifier_single
(resize_min to the net width, then a centre crop), run once, and its class compared with
the top-1 and top-5 outputs.  Detectors: AlexeyAB's validate_detector_map: detections with
thresh .005, hier 0 and NMS .45 (the thresholds Darknet uses there), mapped back to the
image, scored by minidarknet.metrics.detection_map.  Images are letterboxed (as pjreddie's
training and validate_detector fit them) unless resize="stretch" (AlexeyAB without
-letter_box).  Arrays (.npz) use their integer labels, or report the mean loss when they
hold truth rows.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from .data import network_kind, open_data
from .errors import DataError
from .metrics import detection_map, topk_correct

MAP_THRESH = 0.005
MAP_NMS = 0.45


@dataclass
class ValidReport:
    kind: str                   # "classifier" or "detector"
    metrics: dict               # {"top1": ., "top5": .} / {"mAP@0.5": .} / {"loss": .}
    images: int
    seconds: float
    names: list = None
    detail: object = None       # MapResult for detectors
    per_image: list = field(default_factory=list)


def validate(cfg, data, *, net=None, weights=None, overrides=None, batch=None, top=5,
             thresh=MAP_THRESH, nms=MAP_NMS, iou_thresh=0.5, points=0, resize="letterbox",
             on_bad_data="skip", progress=None, fork=None):
    """Validate `net` (or the network of `cfg` with `weights`) on the validation split of
    `data` (see the module docstring).  progress: None or a callable(done, total)."""
    if net is None:
        from . import load
        net = load(cfg, weights, overrides=overrides, fork=fork)
    started = time.perf_counter()
    kind = network_kind(net)
    dataset = open_data(data, net, split="valid", on_bad_data=on_bad_data, shuffle=False,
                        resize=resize)
    original_batch = net.batch
    batch = batch or net.batch
    try:
        if kind == "detector":
            report = _validate_detector(net, dataset, batch, thresh, nms, iou_thresh, points,
                                        resize, progress)
        else:
            report = _validate_classifier(net, dataset, batch, top, progress)
    finally:
        net.set_batch(original_batch)
    report.seconds = time.perf_counter() - started
    report.names = getattr(dataset, "names", None)
    return report


def _validate_classifier(net, dataset, batch, top, progress):
    correct1 = correctk = count = 0
    loss_sum = 0.0
    per_image = []
    k = min(top, net.output_layer.outputs)
    for vb in dataset.valid_batches(batch):
        if vb.labels is None:
            truth = dataset.truth[count:count + len(vb.x)]
            net.forward(vb.x, truth)
            loss_sum += float(net.cost) * len(vb.x) if net.cost is not None else 0.0
            count += len(vb.x)
            continue
        scores = np.array(net.forward(vb.x)).reshape(len(vb.x), -1)
        labels = vb.labels
        correct1 += topk_correct(scores, labels, 1)
        correctk += topk_correct(scores, labels, k)
        best = np.argmax(scores, axis=1)
        per_image += [(p, int(l), int(b)) for p, l, b in zip(vb.paths, labels, best)]
        count += len(labels)
        if progress:
            progress(count, len(dataset))
    if count == 0:
        raise DataError(f"{dataset.source}: no validation images")
    if not per_image:
        return ValidReport("classifier", {"loss": loss_sum / count}, count, 0.0)
    metrics = {"top1": correct1 / count, f"top{k}": correctk / count}
    return ValidReport("classifier", metrics, count, 0.0, per_image=per_image)


def _validate_detector(net, dataset, batch, thresh, nms, iou_thresh, points, resize,
                       progress):
    from .detect import batch_detections, detection_heads
    classes = detection_heads(net)[-1].classes
    detections, truths, count = [], [], 0
    for vb in dataset.valid_batches(batch):
        net.forward(vb.x)
        found = batch_detections(net, thresh=thresh, hier=0, nms=nms, image_sizes=vb.sizes,
                                 letterbox=resize == "letterbox")
        detections += found
        truths += vb.boxes
        count += len(vb.x)
        if progress:
            progress(count, len(dataset))
    if count == 0:
        raise DataError(f"{dataset.source}: no validation images")
    result = detection_map(detections, truths, classes, iou_thresh=iou_thresh, points=points)
    key = f"mAP@{iou_thresh:g}"
    return ValidReport("detector", {key: result.map}, count, 0.0, detail=result)
