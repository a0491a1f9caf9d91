"""Detections of a network after forward(): Darknet's get_network_boxes + NMS.

    net.forward(x)
    dets = network_detections(net, thresh=.5, nms=.45, image_size=(im_w, im_h))

For batch item `index`, every [yolo], [region] and [detection] layer is decoded in network
order (yolo: the boxes whose objectness is > thresh; region and detection: every cell x
anchor), boxes relative to the network input.  With image_size=(w, h) the yolo and region boxes
are mapped back to the original image (still relative to it): letterbox=True undoes
letterbox_image (pjreddie, AlexeyAB -letter_box), letterbox=False assumes the image was
stretched (AlexeyAB's default), which leaves relative boxes unchanged.  YOLOv1 [detection]
boxes are never corrected (Darknet does not correct them).  Then NMS unless nms is 0 or None:
pjreddie's do_nms_sort, or, with fork alexeyab (net.fork.nms_from_last_layer), AlexeyAB's
diounms_sort when the network's LAST layer is a [yolo] with nms_kind=greedynms (DIoU with the
fixed beta 0.6 > nms) or diounms (DIoU with beta_nms > nms); pjreddie's Darknet has no
nms_kind and always runs do_nms_sort.

Not reproduced: when a layer's batch is exactly 2, Darknet's decoders first average sample 0
with the horizontally mirrored sample 1 (a test-time flip trick that assumes the caller put a
flipped copy of the image in slot 1).  Here every sample is decoded on its own, whatever the
batch size, so batch_detections gives each image its own boxes.
"""
import numpy as np

from .boxes import box_iou, correct_boxes, do_nms_sort
from .errors import ShapeError

F32 = np.float32


def detection_heads(net):
    """The layers that produce boxes, in network order."""
    return [layer for layer in net.layers if hasattr(layer, "boxes")]


def network_detections(net, thresh=0.5, hier=0.5, nms=0.45, image_size=None, letterbox=True,
                       index=0):
    """Darknet's get_network_boxes + NMS for batch item `index` (module docstring)."""
    heads = detection_heads(net)
    if not heads:
        raise ShapeError("the network has no [yolo], [region] or [detection] layer to take "
                         "detections from")
    if heads[0].output is None or net.x is None:
        raise ShapeError("detections need a forward() first")
    batch = heads[0].output.shape[0]
    if not -batch <= index < batch:
        raise ShapeError(f"index {index} is outside the last forward's batch of {batch}")
    index %= batch
    dets = []
    for layer in heads:
        found = layer.boxes(index, thresh, hier, net.w, net.h)
        if image_size is not None and layer.letterbox_corrected:
            im_w, im_h = _image_size(image_size)
            correct_boxes(found, im_w, im_h, net.w, net.h, letterbox=letterbox)
        dets.extend(found)
    if nms:
        classes = heads[-1].classes
        last = net.layers[-1]
        kind = getattr(last, "nms_kind", "default") if net.fork.nms_from_last_layer \
            else "default"
        if kind == "default":
            do_nms_sort(dets, classes, nms)
        else:
            diou_nms_sort(dets, classes, nms, kind, getattr(last, "beta_nms", 0.6),
                          greedy_beta=net.fork.greedy_diou_beta)
    return dets


def batch_detections(net, thresh=0.5, hier=0.5, nms=0.45, image_sizes=None, letterbox=True):
    """network_detections for every sample of the last forward: a list per sample.
    image_sizes: None, or one (w, h) per sample."""
    heads = detection_heads(net)
    if not heads or heads[0].output is None:
        return network_detections(net, thresh, hier, nms)   # raises the explanatory error
    batch = heads[0].output.shape[0]
    if image_sizes is not None and len(image_sizes) != batch:
        raise ShapeError(f"{len(image_sizes)} image sizes for a batch of {batch}")
    return [network_detections(net, thresh, hier, nms,
                               None if image_sizes is None else image_sizes[i], letterbox, i)
            for i in range(batch)]


def _image_size(size):
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ShapeError(f"image_size must be (width, height), not {size!r}") from None
    if w < 1 or h < 1:
        raise ShapeError(f"image_size {size!r}: width and height must be positive")
    return w, h


# ----------------------------------------------------------------------------- DIoU-NMS

def box_diou(a, b, beta):
    """AlexeyAB's box_diou / box_diounms for centre boxes (..., 4), float32:
    IoU - (d/c)**beta with d the squared centre distance and c the squared diagonal of the
    enclosing box (IoU alone when c is 0)."""
    a = np.asarray(a, F32)
    b = np.asarray(b, F32)
    two = F32(2)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        top = np.minimum(a[..., 1] - a[..., 3] / two, b[..., 1] - b[..., 3] / two)
        bot = np.maximum(a[..., 1] + a[..., 3] / two, b[..., 1] + b[..., 3] / two)
        left = np.minimum(a[..., 0] - a[..., 2] / two, b[..., 0] - b[..., 2] / two)
        right = np.maximum(a[..., 0] + a[..., 2] / two, b[..., 0] + b[..., 2] / two)
        w, h = right - left, bot - top
        c = w * w + h * h
        iou = np.asarray(box_iou(a, b), F32)
        iou = np.where(np.isfinite(iou), iou, F32(0))   # AlexeyAB's box_iou: 0 if U == 0
        d = (a[..., 0] - b[..., 0]) ** 2 + (a[..., 1] - b[..., 1]) ** 2
        u = np.power((d / c).astype(np.float64), float(beta)).astype(F32)
        return np.where(c == 0, iou, iou - u).astype(F32)


def diou_nms_sort(dets, classes, thresh, kind="diounms", beta=0.6, greedy_beta=0.6):
    """AlexeyAB's diounms_sort, in place; returns dets.  kind "greedynms" suppresses when
    DIoU (beta 0.6) > thresh, "diounms" when DIoU with `beta` > thresh.  Order handling as
    do_nms_sort: objectness-0 boxes to the end, then per class a stable descending sort
    (glibc's qsort is a merge sort) and greedy suppression."""
    if kind not in ("greedynms", "diounms"):
        raise ValueError(f"unknown NMS kind {kind!r}")
    power = greedy_beta if kind == "greedynms" else beta
    if not isinstance(dets, list):
        dets = list(dets)
    return do_nms_sort(dets, classes, thresh, overlap=lambda a, b: box_diou(a, b, power))
