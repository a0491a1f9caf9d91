"""Anchors for a detector from its training labels: AlexeyAB's `detector calc_anchors`, made
reproducible, and a cfg rewritten with them.

    sizes = label_sizes("data/x.data", 416, 416)        # (n, 2) box width, height in pixels
    fit = kmeans_anchors(sizes, 9, seed=0)              # best of `restarts` k-means runs
    fit.anchors, fit.avg_iou, fit.assignment
    plan = plan_heads(net, fit.anchors)                 # which anchors each [yolo] head gets
    text = rewrite_cfg(cfg_text, net, plan)             # anchors/mask/num/filters updated

What AlexeyAB's calc_anchors does (src/detector.c, do_kmeans in src/matrix.c), and what is
kept here:

* every box of every image of the ``train=`` list (labels found as the loaders find them) is
  a point (w * width, h * height): its size in pixels of the network input;
* k-means with the distance 1 - IoU(box, centre), both boxes centred on the same point
  (so the IoU is min(w)*min(h) / union); initial centres are k distinct boxes drawn at
  random (random_centers); each round assigns every box to the nearest centre (the first
  one on ties), then moves each centre to the mean width and height of its boxes (a centre
  without boxes stays where it is); it stops when no assignment changes (at most 1000
  rounds);
* the centres are sorted by area, smallest first, and printed rounded to whole pixels when
  the width is above 32 (else with 4 decimals, the grid units of a YOLOv2 [region]).

Different from Darknet: Darknet seeds with the clock, so every run gives other anchors.
Here the generator is seeded (``seed``) and k-means is run ``restarts`` times from different
random starts; the run with the highest average IoU wins (the first one on ties), so the
same labels and seed give the same anchors.  The average IoU reported is that of every box
with its best anchor, computed with the anchors as they are written (rounded), which is
what the network will use.

Heads: the anchors are split over the [yolo] (and [Gaussian_yolo]) heads by their grid: the
head with the finest grid (smallest stride) gets the smallest anchors, in contiguous groups
of near-equal size (the extra ones go to the coarser heads), AlexeyAB's advice for custom
anchors.  Every head lists all the anchors, with ``mask`` its own group, ``num`` the total,
and the [convolutional] just before it gets ``filters = (classes + 5) * len(mask)``
(``+ 9`` for [Gaussian_yolo]).  A [region] head (YOLOv2) takes all the anchors in grid
cells and ``filters = num * (classes + coords + 1)``; its anchors are computed in those
units (the boxes scaled to the grid size, as `darknet detector calc_anchors -width 13
-height 13` is used for YOLOv2), printed and written with 4 decimals.
"""
import math
import os
from dataclasses import dataclass, field

import numpy as np

from .data import (BadData, labelled_images, read_data_file,
                   read_list, resolve, _classes)
from .errors import CfgError, DataError, MiniDarknetError

F32 = np.float32
MAX_ROUNDS = 1000                       # do_kmeans' limit
HEAD_TYPES = ("yolo", "Gaussian_yolo", "region")


# --------------------------------------------------------------------------- the boxes

def label_sizes(data_path, width, height, split="train", on_bad_data="skip"):
    """(n, 2) float32 widths and heights in pixels of a width x height network input of every
    label box of the `split` list of the .data file, and the number of images read."""
    data_path = os.fspath(data_path)
    options = read_data_file(data_path)
    base = os.path.dirname(os.path.abspath(data_path))
    classes = _classes(options, data_path)
    if split not in options:
        raise DataError(f"{data_path}: missing '{split}=' line")
    list_path = resolve(options[split][0], base)
    list_base = os.path.dirname(os.path.abspath(list_path))
    bad = BadData(on_bad_data)
    sizes, images = [], 0
    numbered = ((number, resolve(text, list_base))
                for number, text in read_list(list_path, "image list"))
    for _, boxes in labelled_images(numbered, list_path, classes, bad):
        images += 1
        sizes.append(boxes[:, 3:5])
    if not sizes or not sum(len(s) for s in sizes):
        raise DataError(f"{list_path}: no label boxes to compute anchors from")
    sizes = np.concatenate(sizes).astype(F32) * np.array([width, height], F32)
    return sizes, images


# --------------------------------------------------------------------------- k-means

def centred_iou(boxes, centres):
    """(n, k) IoU of (n, 2) boxes with (k, 2) boxes, all centred on the same point."""
    inter = np.minimum(boxes[:, None, 0], centres[None, :, 0]) * \
        np.minimum(boxes[:, None, 1], centres[None, :, 1])
    union = (boxes[:, 0] * boxes[:, 1])[:, None] + (centres[:, 0] * centres[:, 1])[None, :] \
        - inter
    return inter / union


@dataclass
class AnchorFit:
    anchors: np.ndarray            # (k, 2) sorted by area, as written (rounded)
    avg_iou: float                 # mean over the boxes of the IoU with their best anchor
    assignment: np.ndarray         # (n,) index into anchors of each box's best anchor
    rounds: int                    # k-means rounds of the winning run
    restart: int                   # which run won
    run_ious: list = field(default_factory=list)   # avg IoU of every run (unrounded)


def _kmeans_once(sizes, k, rng):
    """One k-means run (AlexeyAB's do_kmeans with random_centers) -> (centres, rounds)."""
    n = len(sizes)
    centres = sizes[rng.choice(n, k, replace=False)].astype(np.float64)
    assignment = np.zeros(n, np.int64)           # Darknet's calloc'ed assignments
    data = sizes.astype(np.float64)
    for rounds in range(1, MAX_ROUNDS + 1):
        new = np.argmax(centred_iou(data, centres), axis=1)
        if rounds > 1 and np.array_equal(new, assignment):
            return centres, rounds
        assignment = new
        counts = np.bincount(assignment, minlength=k)
        sums = np.stack([np.bincount(assignment, data[:, 0], k),
                         np.bincount(assignment, data[:, 1], k)], axis=1)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres, MAX_ROUNDS


def round_anchors(centres, width):
    """Darknet prints anchors with %3.0f when width > 32 (pixels) and %2.4f otherwise."""
    if width > 32:
        return np.maximum(np.rint(centres), 1.0)
    return np.maximum(np.round(centres, 4), 1e-4)


def kmeans_anchors(sizes, k, *, seed=0, restarts=10, width=None):
    """Best of `restarts` seeded k-means runs on (n, 2) box sizes (module docstring)."""
    sizes = np.asarray(sizes, F32).reshape(-1, 2)
    k = int(k)
    if k < 1:
        raise MiniDarknetError(f"the number of anchors must be at least 1, not {k}")
    unique = len(np.unique(sizes, axis=0))
    if unique < k:
        raise DataError(f"{len(sizes)} label boxes of {unique} different sizes cannot make "
                        f"{k} anchors; use --num {unique} or fewer")
    if restarts < 1:
        raise MiniDarknetError(f"restarts must be at least 1, not {restarts}")
    rng = np.random.default_rng(int(seed))
    best = None
    run_ious = []
    for run in range(int(restarts)):
        centres, rounds = _kmeans_once(sizes, k, rng)
        score = float(centred_iou(sizes.astype(np.float64), centres).max(axis=1).mean())
        run_ious.append(score)
        if best is None or score > best[0]:
            best = (score, centres, rounds, run)
    _, centres, rounds, run = best
    order = np.argsort(centres[:, 0] * centres[:, 1], kind="stable")
    anchors = round_anchors(centres[order], width if width is not None else math.inf)
    ious = centred_iou(sizes.astype(np.float64), anchors)
    return AnchorFit(anchors=anchors, avg_iou=float(ious.max(axis=1).mean()),
                     assignment=np.argmax(ious, axis=1), rounds=rounds, restart=run,
                     run_ious=run_ious)


def format_anchors(anchors, width):
    if width > 32:
        return ", ".join(f"{int(w)},{int(h)}" for w, h in anchors)
    return ", ".join(f"{w:.4f},{h:.4f}" for w, h in anchors)


# --------------------------------------------------------------------------- heads

@dataclass
class HeadPlan:
    layer: object                  # the head layer (built network)
    conv: object                   # the [convolutional] layer before it
    stride: float                  # network width / grid width
    mask: list                     # anchor indexes of this head (all of them for [region])
    filters: int                   # the conv's new filters
    anchors: np.ndarray            # what is written in anchors= (pixels, or grid cells)


def detection_heads(net):
    heads = [l for l in net.layers if l.type in HEAD_TYPES]
    if not heads:
        raise CfgError(net.layers[0].section.path if net.layers else "<cfg>", 0,
                       "no [yolo], [Gaussian_yolo] or [region] layer to compute anchors for")
    return heads


def region_grid(net):
    """(w, h) of the grid of a [region] network (its anchors are in grid cells), else None."""
    heads = detection_heads(net)
    if all(l.type == "region" for l in heads):
        return heads[-1].out_w, heads[-1].out_h
    return None


def plan_heads(net, anchors):
    """How `anchors` (k, 2, sorted by area; pixels, or grid cells for [region] heads) go to
    the detection heads of `net`."""
    anchors = np.asarray(anchors, np.float64)
    heads = detection_heads(net)
    plans = []
    yolo = [l for l in heads if l.type != "region"]
    if yolo and len(yolo) != len(heads):
        raise CfgError(heads[0].section.path, heads[0].section.line,
                       "a cfg mixing [region] and [yolo] heads is not supported")
    for layer in heads:
        conv = net.layers[layer.index - 1] if layer.index > 0 else None
        if conv is None or conv.type != "convolutional":
            raise CfgError(layer.section.path, layer.section.line,
                           f"{layer.section.header} (layer {layer.index}) does not follow a "
                           f"[convolutional] layer whose filters could be set")
    if not yolo:        # [region]: the anchors are already in grid cells (region_grid)
        for layer in heads:
            plans.append(HeadPlan(layer, net.layers[layer.index - 1], net.w / layer.out_w,
                                  list(range(len(anchors))),
                                  len(anchors) * (layer.classes + layer.coords + 1),
                                  anchors))
        return plans
    if len(anchors) < len(yolo):
        raise MiniDarknetError(f"{len(anchors)} anchors cannot be split over {len(yolo)} "
                               f"heads; use --num {len(yolo)} or more")
    # the finest grid gets the smallest anchors (stable: cfg order among equal grids)
    by_grid = sorted(yolo, key=lambda l: net.w / l.out_w)
    base, extra = divmod(len(anchors), len(yolo))
    sizes = [base + (1 if i >= len(yolo) - extra else 0) for i in range(len(yolo))]
    starts = np.cumsum([0] + sizes)
    masks = {id(l): list(range(starts[i], starts[i + 1])) for i, l in enumerate(by_grid)}
    for layer in yolo:
        mask = masks[id(layer)]
        per_anchor = layer.classes + (9 if layer.type == "Gaussian_yolo" else 5)
        plans.append(HeadPlan(layer, net.layers[layer.index - 1], net.w / layer.out_w, mask,
                              per_anchor * len(mask), anchors))
    return plans


# --------------------------------------------------------------------------- the new cfg

def _number(value):
    return f"{int(value)}" if float(value).is_integer() else f"{value:.4f}".rstrip("0")


def _anchor_text(anchors):
    return ", ".join(f"{_number(w)},{_number(h)}" for w, h in anchors)


def _replaced(original, key, value):
    """`key=value` keeping the indentation and an inline comment of the original line."""
    indent = original[:len(original) - len(original.lstrip())]
    cut = original.find("#", original.find("=") + 1)
    comment = "  " + original[cut:].rstrip("\r\n") if cut >= 0 else ""
    return f"{indent}{key}={value}{comment}"


def rewrite_cfg(text, plans):
    """The cfg text with anchors, mask, num (heads) and filters (convolutions before them)
    replaced; every other line, comment and blank line is kept as it was.  A missing key is
    added after the section's last option."""
    lines = text.split("\n")
    replace, insert = {}, {}

    def put(section, key, value):
        option = section._first.get(key)
        if option is not None:
            replace[option.line - 1] = _replaced(lines[option.line - 1], key, value)
            return
        last = max([o.line for o in section.options] + [section.line])
        insert.setdefault(last - 1, []).append(f"{key}={value}")

    for plan in plans:
        head = plan.layer.section
        put(plan.conv.section, "filters", str(plan.filters))
        if plan.layer.type != "region":
            put(head, "mask", ",".join(str(i) for i in plan.mask))
        put(head, "anchors", _anchor_text(plan.anchors))
        put(head, "num", str(len(plan.anchors)))
    out = []
    for index, line in enumerate(lines):
        if index in replace:
            ending = "\r" if line.endswith("\r") else ""
            out.append(replace[index] + ending)
        else:
            out.append(line)
        ending = "\r" if line.endswith("\r") else ""      # keep CRLF files CRLF
        out.extend(added + ending for added in insert.get(index, []))
    return "\n".join(out)


def write_cfg(original_path, new_path, text):
    """Write the new cfg atomically; never over the original."""
    from .atomic import write_atomic
    if os.path.exists(new_path) and os.path.samefile(original_path, new_path):
        raise MiniDarknetError(f"{new_path}: is the cfg being read; give another file name "
                               f"(the original is never changed)")
    write_atomic(new_path, text.encode("utf-8"))


# --------------------------------------------------------------------------- the picture

def plot_anchors(path, sizes, fit, width, height, title=None, limit=20000):
    """A PNG of the label boxes (points: width x height in pixels, coloured by their best
    anchor) and the anchors (large rings), like AlexeyAB's show_anchors window."""
    from PIL import Image, ImageDraw
    from .plot import PALETTE, INK, GRID, BACKGROUND, _font, _text_size, nice_ticks, _pale
    size, margin = 640, 70
    image = Image.new("RGB", (size + margin + 30, size + margin + 40), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(14)
    top = 40
    high = float(max(sizes.max(), fit.anchors.max())) * 1.05
    ticks = nice_ticks(0, high)

    def px(x):
        return margin + x / high * size

    def py(y):
        return top + size - y / high * size

    for t in ticks:
        if t <= high:
            draw.line([(px(t), top), (px(t), top + size)], fill=GRID)
            draw.line([(margin, py(t)), (margin + size, py(t))], fill=GRID)
            label = f"{t:g}"
            w, h = _text_size(draw, label, font)
            draw.text((px(t) - w / 2, top + size + 6), label, fill=INK, font=font)
            draw.text((margin - 8 - w, py(t) - h / 2 - 2), label, fill=INK, font=font)
    draw.rectangle([margin, top, margin + size, top + size], outline=INK)
    step = max(1, len(sizes) // limit)          # at most `limit` points drawn
    for (w, h), a in zip(sizes[::step], fit.assignment[::step]):
        colour = _pale(PALETTE[a % len(PALETTE)], 0.45)
        draw.ellipse([px(w) - 2, py(h) - 2, px(w) + 2, py(h) + 2], fill=colour)
    for a, (w, h) in enumerate(fit.anchors):
        colour = PALETTE[a % len(PALETTE)]
        draw.ellipse([px(w) - 8, py(h) - 8, px(w) + 8, py(h) + 8], outline=INK, width=3)
        draw.ellipse([px(w) - 5, py(h) - 5, px(w) + 5, py(h) + 5], fill=colour)
    text = title or f"{len(sizes)} boxes, {len(fit.anchors)} anchors, avg IoU " \
                    f"{fit.avg_iou * 100:.2f} % (network {width}x{height})"
    draw.text((margin, 12), text, fill=INK, font=font)
    xlabel = "box width (pixels)"
    w, _ = _text_size(draw, xlabel, font)
    draw.text((margin + size / 2 - w / 2, top + size + 24), xlabel, fill=INK, font=font)
    draw.text((4, top - 22), "height", fill=INK, font=font)
    from .image import save_pil
    save_pil(path, image)
    return path
