"""Detector post-processing inside the graph (`--decode`): Darknet's box decoding of every
[yolo], [Gaussian_yolo], [region] and [detection] head, as minidarknet.boxes decodes them,
before any threshold or NMS.

Outputs
  boxes   (batch, K, 4)  x, y, w, h (centre and size), relative to the network input, or with
                         an `image_size` input (batch, 2) = (width, height) in pixels, to the
                         original picture: Darknet's letterbox correction (correct_yolo_boxes;
                         YOLOv1 [detection] boxes are never corrected, as in Darknet)
  scores  (batch, K, C)  objectness * class probability per box and class (Gaussian YOLO:
                         times 1 - the mean box uncertainty), Darknet's `prob` before its
                         threshold: Darknet keeps exactly the boxes and classes whose score is
                         above `thresh` (a score above it implies objectness above it)
  selected_indices (S, 3) with nms: ONNX NonMaxSuppression's (batch, class, box) triples with
                         score > thresh, per class greedy suppression at IoU > nms, as
                         Darknet's do_nms_sort

K counts every head's boxes in Darknet's order: yolo cell-major (cell*n + anchor), region
anchor-major (anchor*h*w + cell), detection cell*num + box.
"""
import numpy as np
from onnx import TensorProto

from .registry import ExportError

F32 = np.float32
IMAGE_SIZE = "image_size"


def add_decoding(g, net, tensors, batch_dim, image_size_input, nms, thresh):
    """Add the decoding nodes; returns (extra graph inputs, graph outputs)."""
    heads = [layer for layer in net.layers if hasattr(layer, "boxes")]
    if not heads:
        raise ExportError(f"{net.path}: --decode needs a detector (a [yolo], [Gaussian_yolo], "
                          f"[region] or [detection] layer)")
    classes = {layer.classes for layer in heads}
    if len(classes) != 1:
        raise ExportError(f"{net.path}: the detection heads have different class counts "
                          f"{sorted(classes)}; one scores output cannot hold them")
    inputs = []
    image_size = None
    if image_size_input:
        inputs.append(g.value_info(IMAGE_SIZE, (batch_dim, 2), TensorProto.INT64))
        image_size = IMAGE_SIZE
    all_boxes, all_scores, count = [], [], 0
    for layer in heads:
        if getattr(layer, "tree", None) is not None:
            raise ExportError(f"layer {layer.index} [region] tree=: --decode does not do "
                              f"Darknet's hierarchical (tree) decoding; export without it")
        g.prefix = f"decode/layer_{layer.index}_{layer.type}"
        boxes, scores, k = DECODERS[layer.type](g, layer, tensors[layer.index], net)
        if image_size is not None and layer.letterbox_corrected:
            boxes = _letterbox(g, boxes, image_size, net.w, net.h)
        all_boxes.append(boxes)
        all_scores.append(scores)
        count += k
    g.prefix = "decode"
    boxes = g.op("Identity", [g.concat(all_boxes, axis=1)], "boxes")
    scores = g.op("Identity", [g.concat(all_scores, axis=1)], "scores")
    g.rename(boxes, "boxes", 0)
    g.rename(scores, "scores", 0)
    c = classes.pop()
    outputs = [g.value_info("boxes", (batch_dim, count, 4)),
               g.value_info("scores", (batch_dim, count, c))]
    if nms:
        kind = getattr(net.layers[-1], "nms_kind", "default")
        if kind != "default":
            raise ExportError(f"{net.path}: the cfg asks for AlexeyAB's {kind} (DIoU) NMS; "
                              f"ONNX's NonMaxSuppression does plain IoU, which would keep "
                              f"other boxes; export without --nms and run DIoU-NMS outside")
        per_class = g.transpose("scores", (0, 2, 1))
        selected = g.op("NonMaxSuppression",
                        ["boxes", per_class, g.ints([count], "max_boxes"),
                         g.const(np.array([nms], F32), "iou_threshold"),
                         g.const(np.array([thresh], F32), "score_threshold")],
                        "nms", center_point_box=1)
        g.rename(selected, "selected_indices", 0)
        outputs.append(g.value_info("selected_indices", ("selected", 3), TensorProto.INT64))
    return inputs, outputs


def _grid(h, w, shape):
    col = np.tile(np.arange(w, dtype=F32), h).reshape(shape)
    row = np.repeat(np.arange(h, dtype=F32), w).reshape(shape)
    return col, row


def _entry(g, planes, index, axis=2):
    return g.slice(planes, axis, index, index + 1, hint=f"entry{index}")


def _yolo_like(g, layer, tensor, net, ix, iy, iw, ih, iobj, icls):
    """(boxes, scores, K) of a [yolo] / [Gaussian_yolo] head: planes (batch, n, E, h, w)."""
    n, h, w = layer.n, layer.out_h, layer.out_w
    planes = g.reshape(tensor, (n, layer.entries, h, w))
    col, row = _grid(h, w, (1, 1, 1, h, w))
    anchors = layer.biases.reshape(-1, 2)[np.asarray(layer.mask, np.int64)].astype(F32)
    aw = anchors[:, 0].reshape(1, n, 1, 1, 1)
    ah = anchors[:, 1].reshape(1, n, 1, 1, 1)
    x = g.op("Div", [g.add(_entry(g, planes, ix), col), g.const(F32(w))], "x")
    y = g.op("Div", [g.add(_entry(g, planes, iy), row), g.const(F32(h))], "y")
    tw, th = _entry(g, planes, iw), _entry(g, planes, ih)
    if getattr(layer, "new_coords", 0):
        bw = g.mul(g.mul(g.op("Mul", [tw, tw]), 4.0), aw / F32(net.w), "w")
        bh = g.mul(g.mul(g.op("Mul", [th, th]), 4.0), ah / F32(net.h), "h")
    else:
        bw = g.mul(g.op("Exp", [tw]), aw / F32(net.w), "w")
        bh = g.mul(g.op("Exp", [th]), ah / F32(net.h), "h")
    point = getattr(layer, "yolo_point", "center")
    if point != "center":
        sign = 1.0 if point == "left_top" else -1.0
        x = g.op("Add", [x, g.mul(bw, sign * 0.5)], "x")
        y = g.op("Add", [y, g.mul(bh, sign * 0.5)], "y")
    obj = _entry(g, planes, iobj)
    classes = g.slice(planes, 2, icls, layer.entries, hint="classes")
    scores = g.op("Mul", [obj, classes], "scores")
    if layer.type == "Gaussian_yolo":
        # AlexeyAB: prob *= 1 - mean of the four box uncertainties
        uc = g.op("Add", [g.op("Add", [g.op("Add", [_entry(g, planes, 1), _entry(g, planes, 3)]),
                                       _entry(g, planes, 5)]), _entry(g, planes, 7)])
        keep = g.op("Sub", [g.const(1.0), g.mul(uc, 0.25)])
        scores = g.op("Mul", [scores, keep], "scores")
    boxes = g.concat([x, y, bw, bh], axis=2, hint="boxes")          # (batch, n, 4, h, w)
    k = h * w * n
    boxes = g.reshape(g.transpose(boxes, (0, 3, 4, 1, 2)), (k, 4))
    scores = g.reshape(g.transpose(scores, (0, 3, 4, 1, 2)), (k, layer.classes))
    return boxes, scores, k


def _decode_yolo(g, layer, tensor, net):
    return _yolo_like(g, layer, tensor, net, 0, 1, 2, 3, 4, 5)


def _decode_gaussian_yolo(g, layer, tensor, net):
    return _yolo_like(g, layer, tensor, net, 0, 2, 4, 6, 8, 9)


def _decode_region(g, layer, tensor, net):
    n, h, w, hw = layer.n, layer.out_h, layer.out_w, layer.out_h * layer.out_w
    planes = g.reshape(tensor, (n, layer.entries, hw))
    col, row = _grid(h, w, (1, 1, 1, hw))
    anchors = layer.biases.reshape(-1, 2).astype(F32)
    aw = anchors[:, 0].reshape(1, n, 1, 1)
    ah = anchors[:, 1].reshape(1, n, 1, 1)
    x = g.op("Div", [g.add(_entry(g, planes, 0), col), g.const(F32(w))], "x")
    y = g.op("Div", [g.add(_entry(g, planes, 1), row), g.const(F32(h))], "y")
    bw = g.mul(g.op("Exp", [_entry(g, planes, 2)]), aw / F32(w), "w")
    bh = g.mul(g.op("Exp", [_entry(g, planes, 3)]), ah / F32(h), "h")
    classes = g.slice(planes, 2, layer.coords + 1, layer.entries, hint="classes")
    if layer.background:
        scores = g.op("Identity", [classes], "scores")
    else:
        scores = g.op("Mul", [_entry(g, planes, layer.coords), classes], "scores")
    k = n * hw
    boxes = g.concat([x, y, bw, bh], axis=2, hint="boxes")          # (batch, n, 4, hw)
    boxes = g.reshape(g.transpose(boxes, (0, 1, 3, 2)), (k, 4))
    scores = g.reshape(g.transpose(scores, (0, 1, 3, 2)), (k, layer.classes))
    return boxes, scores, k


def _decode_detection(g, layer, tensor, net):
    side, num, c = layer.side, layer.n, layer.classes
    cells = side * side
    flat = g.op("Flatten", [tensor], "flatten", axis=1)
    probs = g.reshape(g.slice(flat, 1, 0, cells * c), (cells, 1, c))
    conf = g.reshape(g.slice(flat, 1, cells * c, cells * (c + num)), (cells, num, 1))
    base = cells * (c + num)
    raw = g.reshape(g.slice(flat, 1, base, base + cells * num * 4), (cells, num, 4))
    col, row = _grid(side, side, (1, cells, 1, 1))
    x = g.op("Div", [g.add(_entry(g, raw, 0, 3), col), g.const(F32(side))], "x")
    y = g.op("Div", [g.add(_entry(g, raw, 1, 3), row), g.const(F32(side))], "y")
    bw, bh = _entry(g, raw, 2, 3), _entry(g, raw, 3, 3)
    if layer.sqrt:
        bw, bh = g.op("Mul", [bw, bw], "w"), g.op("Mul", [bh, bh], "h")
    k = cells * num
    boxes = g.reshape(g.concat([x, y, bw, bh], axis=3, hint="boxes"), (k, 4))
    scores = g.reshape(g.op("Mul", [conf, probs], "scores"), (k, c))
    return boxes, scores, k


DECODERS = {"yolo": _decode_yolo, "Gaussian_yolo": _decode_gaussian_yolo,
            "region": _decode_region, "detection": _decode_detection}


def _letterbox(g, boxes, image_size, net_w, net_h):
    """Darknet's correct_yolo_boxes for a letterboxed picture of image_size (w, h)."""
    size = g.op("Cast", [image_size], "size_f", to=TensorProto.FLOAT)
    im_w = g.reshape(g.slice(image_size, 1, 0, 1), (1, 1), "im_w")
    im_h = g.reshape(g.slice(image_size, 1, 1, 2), (1, 1), "im_h")
    fw = g.reshape(g.slice(size, 1, 0, 1), (1, 1))
    fh = g.reshape(g.slice(size, 1, 1, 2), (1, 1))
    # letterbox_geometry: wider than the net -> full width, else full height (C int division)
    wide = g.op("Less", [g.op("Div", [g.const(F32(net_w)), fw]),
                         g.op("Div", [g.const(F32(net_h)), fh])], "wide")
    scaled_h = g.op("Div", [g.op("Mul", [im_h, g.ints(net_w, "net_w")]), im_w])
    scaled_w = g.op("Div", [g.op("Mul", [im_w, g.ints(net_h, "net_h")]), im_h])
    new_w = g.where(wide, g.ints(net_w, "net_w"), scaled_w, "new_w")
    new_h = g.where(wide, scaled_h, g.ints(net_h, "net_h"), "new_h")
    new_w = g.op("Cast", [new_w], to=TensorProto.FLOAT)
    new_h = g.op("Cast", [new_h], to=TensorProto.FLOAT)
    parts = []
    for k, new, net_size in ((0, new_w, net_w), (1, new_h, net_h)):
        ratio = g.op("Div", [new, g.const(F32(net_size))])
        offset = g.op("Div", [g.op("Sub", [g.const(F32(net_size)), new]),
                              g.const(F32(2 * net_size))])
        centre = g.op("Div", [g.op("Sub", [g.slice(boxes, 2, k, k + 1), offset]), ratio])
        parts.append((k, centre))
    grow_w = g.op("Div", [g.const(F32(net_w)), new_w])
    grow_h = g.op("Div", [g.const(F32(net_h)), new_h])
    w = g.op("Mul", [g.slice(boxes, 2, 2, 3), grow_w])
    h = g.op("Mul", [g.slice(boxes, 2, 3, 4), grow_h])
    return g.concat([parts[0][1], parts[1][1], w, h], axis=2, hint="corrected")
