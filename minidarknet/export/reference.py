"""minidarknet's own decoding of every box (no threshold, no NMS) in the layout of the graph's
`boxes` / `scores` outputs, built from minidarknet.boxes' decoders: what --verify compares the
decoded graph against."""
import numpy as np

from ..boxes import correct_boxes

F32 = np.float32


def decoded_reference(net, image_size=None):
    """(boxes (batch, K, 4), scores (batch, K, C)) after net.forward(); image_size: None or
    (batch, 2) picture sizes for the letterbox correction."""
    heads = [layer for layer in net.layers if hasattr(layer, "boxes")]
    batch = heads[0].output.shape[0]
    all_boxes, all_scores = [], []
    for b in range(batch):
        rows_b, scores_b = [], []
        for layer in heads:
            # thresh -1: keep every box and every class probability (> -1 always)
            dets = layer.boxes(b, -1.0, 0.5, net.w, net.h)
            if image_size is not None and layer.letterbox_corrected:
                correct_boxes(dets, int(image_size[b][0]), int(image_size[b][1]), net.w, net.h)
            rows_b += [[d.x, d.y, d.w, d.h] for d in dets]
            scores_b += [_scores(layer, d) for d in dets]
        all_boxes.append(rows_b)
        all_scores.append(scores_b)
    return np.asarray(all_boxes, F32), np.asarray(all_scores, F32)


def _scores(layer, det):
    # Region: Darknet zeroes prob where the objectness is not above thresh; with thresh -1
    # nothing is zeroed, so prob is objectness * class as in the graph.
    return np.asarray(det.prob, F32)
