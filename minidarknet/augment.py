"""Darknet's training-time image augmentation, vectorised with numpy and seeded.

Images are float32 arrays (c, h, w) in [0, 1], as minidarknet.image.load_image returns them.
Random numbers come from a numpy Generator instead of C's rand(), so the draws differ from
Darknet's but follow the same distributions:

* ``rand_uniform(lo, hi)``: uniform in [lo, hi] (the bounds are swapped when hi < lo);
  ``rand_scale(s)``: uniform in [1, s], inverted half of the time; ``rand_int(lo, hi)``:
  an integer in [lo, hi], both ends included.
* Classifier path (Darknet's load_image_augment_paths): ``random_augment_image`` picks an
  aspect ``rand_scale(aspect)``, a size ``r = rand_int(min_crop, max_crop)`` for the shorter
  side, an angle in [-angle, angle] degrees and an offset, and samples a w x h crop with
  bilinear interpolation (pixels outside the image are 0); then a random horizontal flip
  (unless ``flip=0``) and ``random_distort_image``.  With ``center=1``, a centre square crop
  resized to the net size replaces the random crop.
* Detector path (Darknet's load_data_detection, pjreddie): the image is resized to a random
  aspect ratio (``jitter``) that fits the net size, placed at a random offset on a 0.5 grey
  canvas, distorted in HSV and flipped half of the time; the boxes follow (``place_boxes``).
* ``random_distort_image``: RGB -> HSV, saturation and value scaled by ``rand_scale``, hue
  shifted by ``rand_uniform(-hue, hue)`` (wrapping around), back to RGB, clipped to [0, 1].
  When hue = 0 and saturation = exposure = 1 the round trip is skipped (it is the identity up
  to float rounding).
"""
import math
from dataclasses import dataclass

import numpy as np

from .image import resize_image

F32 = np.float32


# --------------------------------------------------------------------------- Darknet's random helpers

def rand_uniform(rng, lo, hi):
    lo, hi = float(lo), float(hi)
    if hi < lo:
        lo, hi = hi, lo
    return lo + (hi - lo) * float(rng.random())


def rand_scale(rng, s):
    scale = rand_uniform(rng, 1.0, s)
    return scale if rng.integers(2) else 1.0 / scale


def rand_int(rng, lo, hi):
    lo, hi = int(lo), int(hi)
    if hi < lo:
        lo, hi = hi, lo
    return int(rng.integers(lo, hi + 1))


# --------------------------------------------------------------------------- options

@dataclass
class AugmentOptions:
    """The [net] augmentation keys (Darknet's defaults) plus the detector's jitter."""
    angle: float = 0.0
    aspect: float = 1.0
    saturation: float = 1.0
    exposure: float = 1.0
    hue: float = 0.0
    min_crop: int = 0
    max_crop: int = 0
    center: int = 0
    flip: int = 1
    jitter: float = 0.2

    @classmethod
    def from_network(cls, net, jitter=None):
        """Read the keys from the network's [net] section (errors name FILE:LINE)."""
        s = net.options.section
        min_crop = s.int("min_crop", net.w)
        max_crop = s.int("max_crop", net.w * 2)
        options = cls(angle=s.float("angle", 0.0), aspect=s.float("aspect", 1.0),
                      saturation=s.float("saturation", 1.0),
                      exposure=s.float("exposure", 1.0), hue=s.float("hue", 0.0),
                      min_crop=min_crop, max_crop=max_crop, center=s.int("center", 0),
                      flip=s.int("flip", 1),
                      jitter=s.float("jitter", 0.2) if jitter is None else float(jitter))
        for key in ("saturation", "exposure", "aspect"):
            if getattr(options, key) <= 0:
                raise s.error(f"[net] {key}={getattr(options, key)}: must be positive", key)
        if min_crop < 1 or max_crop < 1:
            raise s.error("[net] min_crop and max_crop must be at least 1", "min_crop")
        return options


# --------------------------------------------------------------------------- sampling

def bilinear_sample(im, rx, ry):
    """Darknet's bilinear_interpolate at float positions rx, ry (arrays of one shape S):
    returns (c,) + S.  Neighbours outside the image count as 0 (get_pixel_extend)."""
    c, h, w = im.shape
    rx = np.asarray(rx, F32)
    ry = np.asarray(ry, F32)
    ix = np.floor(rx).astype(np.int64)
    iy = np.floor(ry).astype(np.int64)
    dx = rx - ix.astype(F32)
    dy = ry - iy.astype(F32)

    def pixel(xx, yy):
        inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        values = im[:, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
        return values * inside

    one = F32(1)
    return ((one - dy) * (one - dx) * pixel(ix, iy) + dy * (one - dx) * pixel(ix, iy + 1)
            + (one - dy) * dx * pixel(ix + 1, iy) + dy * dx * pixel(ix + 1, iy + 1)
            ).astype(F32)


def flip_image(im):
    """Horizontal mirror (Darknet's flip_image), as a new array."""
    return np.ascontiguousarray(im[:, :, ::-1])


def place_image(im, nw, nh, dx, dy, canvas):
    """Darknet's place_image: resample `im` to nw x nh (pixel x reads ``x/nw * im.w``, no
    align-corners) and write it into `canvas` at (dx, dy); parts outside are dropped.
    nw, nh, dx, dy are truncated to integers as the C call does."""
    nw, nh, dx, dy = int(nw), int(nh), int(dx), int(dy)
    _, ch, cw = canvas.shape
    x0, x1 = max(0, -dx), min(nw, cw - dx)
    y0, y1 = max(0, -dy), min(nh, ch - dy)
    if x1 <= x0 or y1 <= y0:
        return canvas
    xs = np.arange(x0, x1, dtype=F32) / F32(nw) * F32(im.shape[2])
    ys = np.arange(y0, y1, dtype=F32) / F32(nh) * F32(im.shape[1])
    rx, ry = np.meshgrid(xs, ys)
    canvas[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx] = bilinear_sample(im, rx, ry)
    return canvas


def rotate_crop_image(im, rad, scale, w, h, dx, dy, aspect):
    """Darknet's rotate_crop_image: a w x h view of `im` rotated by `rad` around its centre,
    scaled by `scale`, shifted by (dx, dy) and stretched by `aspect`; bilinear sampling."""
    _, ih, iw = im.shape
    if rad == 0 and scale == 1 and aspect == 1 and (iw, ih) == (w, h) and dx == 0 and dy == 0:
        return im.astype(F32, copy=True)   # exactly what the sampling below gives
    cx, cy = iw / 2.0, ih / 2.0
    xs = (np.arange(w, dtype=np.float64) - w / 2.0) / scale * aspect + dx / scale * aspect
    ys = (np.arange(h, dtype=np.float64) - h / 2.0) / scale + dy / scale
    gx, gy = np.meshgrid(xs, ys)
    cos, sin = math.cos(rad), math.sin(rad)
    rx = cos * gx - sin * gy + cx
    ry = sin * gx + cos * gy + cy
    return bilinear_sample(im, rx.astype(F32), ry.astype(F32))


def random_augment_image(im, rng, angle, aspect, low, high, w, h):
    """Darknet's random_augment_image (random_augment_args + rotate_crop_image).

    Darknet computes the vertical offset range with the crop *width* (it assumes square
    nets); here the crop height is used, which is the same for square nets."""
    _, ih, iw = im.shape
    aspect = rand_scale(rng, aspect)
    r = rand_int(rng, low, high)
    shorter = int(ih if ih < iw * aspect else iw * aspect)
    scale = r / max(shorter, 1)
    rad = rand_uniform(rng, -angle, angle) * 2 * math.pi / 360.0
    dx = (iw * scale / aspect - w) / 2.0
    dy = (ih * scale - h) / 2.0
    dx = rand_uniform(rng, -dx, dx)
    dy = rand_uniform(rng, -dy, dy)
    return rotate_crop_image(im, rad, scale, w, h, dx, dy, aspect)


def center_crop_image(im, w, h):
    """Darknet's center_crop_image: the centre square of the shorter side, resized to w x h."""
    _, ih, iw = im.shape
    m = min(iw, ih)
    x0, y0 = (iw - m) // 2, (ih - m) // 2
    return resize_image(im[:, y0:y0 + m, x0:x0 + m], w, h)


# --------------------------------------------------------------------------- colour

def rgb_to_hsv(im):
    """(3, h, w) RGB -> HSV with h, s, v in [0, 1] (Darknet's rgb_to_hsv).  Grey pixels get
    hue 0 (Darknet computes 0/0 there, which its hsv_to_rgb never reads since s = 0)."""
    r, g, b = im[0], im[1], im[2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    delta = mx - mn
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(mx == 0, F32(0), delta / mx)
        safe = np.where(delta == 0, F32(1), delta)
        hue = np.where(r == mx, (g - b) / safe,
                       np.where(g == mx, F32(2) + (b - r) / safe, F32(4) + (r - g) / safe))
    hue = np.where((mx == 0) | (delta == 0), F32(0), hue)
    hue = np.where(hue < 0, hue + F32(6), hue) / F32(6)
    return np.stack([hue, s, mx]).astype(F32)


def hsv_to_rgb(hsv):
    """Darknet's hsv_to_rgb (sector 5 also takes any index >= 5)."""
    h6 = hsv[0] * F32(6)
    s, v = hsv[1], hsv[2]
    index = np.floor(h6)
    f = h6 - index
    one = F32(1)
    p = v * (one - s)
    q = v * (one - s * f)
    t = v * (one - s * (one - f))
    index = index.astype(np.int64)
    conditions = [index == 0, index == 1, index == 2, index == 3, index == 4]
    r = np.select(conditions, [v, q, p, p, t], v)
    g = np.select(conditions, [t, v, v, q, p], p)
    b = np.select(conditions, [p, p, t, v, v], q)
    grey = s == 0
    out = np.stack([np.where(grey, v, r), np.where(grey, v, g), np.where(grey, v, b)])
    return out.astype(F32)


def distort_image(im, dhue, dsat, dexp):
    """Darknet's distort_image on a 3-channel image: returns a new array."""
    if im.shape[0] != 3:
        return np.clip(im * F32(dexp), 0, 1).astype(F32)   # no hue/saturation without colour
    hsv = rgb_to_hsv(im)
    hsv[1] *= F32(dsat)
    hsv[2] *= F32(dexp)
    hue = hsv[0] + F32(dhue)
    hue = np.where(hue > 1, hue - F32(1), hue)
    hsv[0] = np.where(hue < 0, hue + F32(1), hue)
    return np.clip(hsv_to_rgb(hsv), 0, 1).astype(F32)


def random_distort_image(im, rng, hue, saturation, exposure):
    dhue = rand_uniform(rng, -hue, hue)
    dsat = rand_scale(rng, saturation)
    dexp = rand_scale(rng, exposure)
    if hue == 0 and saturation == 1 and exposure == 1:
        return im
    return distort_image(im, dhue, dsat, dexp)


# --------------------------------------------------------------------------- the two paths

def augment_classifier_image(im, rng, options, w, h):
    """One training input for a classifier (Darknet's load_image_augment_paths)."""
    if options.center:
        crop = center_crop_image(im, w, h)
    else:
        crop = random_augment_image(im, rng, options.angle, options.aspect, options.min_crop,
                                    options.max_crop, w, h)
    if options.flip and rng.integers(2):
        crop = flip_image(crop)
    return random_distort_image(crop, rng, options.hue, options.saturation, options.exposure)


def augment_detector_image(im, boxes, rng, options, w, h, max_boxes):
    """One training input and its truth row for a detector (pjreddie's load_data_detection).

    boxes: (k, 5) float array of (class, x, y, w, h) relative to the image.  Returns the
    (c, h, w) input and the boxes after the same transform, as (n, 5) rows of
    (x, y, w, h, class) — Darknet's truth layout — at most max_boxes."""
    _, ih, iw = im.shape
    dw, dh = options.jitter * iw, options.jitter * ih
    new_ar = (iw + rand_uniform(rng, -dw, dw)) / (ih + rand_uniform(rng, -dh, dh))
    if new_ar < 1:
        nh = float(h)
        nw = nh * new_ar
    else:
        nw = float(w)
        nh = nw / new_ar
    dx = rand_uniform(rng, 0, w - nw)
    dy = rand_uniform(rng, 0, h - nh)
    sized = np.full((im.shape[0], h, w), 0.5, F32)
    place_image(im, nw, nh, dx, dy, sized)
    sized = random_distort_image(sized, rng, options.hue, options.saturation, options.exposure)
    flip = bool(options.flip) and bool(rng.integers(2))
    if flip:
        sized = flip_image(sized)
    truth = place_boxes(boxes, rng, flip, -dx / w, -dy / h, nw / w, nh / h, max_boxes)
    return sized, truth


def corrected_boxes(x, y, bw, bh, flip, dx, dy, sx, sy):
    """Darknet's correct_boxes (both forks' fill_truth_detection): box edges mapped with
    ``edge*s - d``, mirrored when flipped, clipped to [0, 1]; returns the boxes' (x, y, w, h)
    relative to the network input."""
    left, right = (x - bw / 2) * sx - dx, (x + bw / 2) * sx - dx
    top, bottom = (y - bh / 2) * sy - dy, (y + bh / 2) * sy - dy
    if flip:
        left, right = 1.0 - right, 1.0 - left
    left, right = np.clip(left, 0, 1), np.clip(right, 0, 1)
    top, bottom = np.clip(top, 0, 1), np.clip(bottom, 0, 1)
    return ((left + right) / 2, (top + bottom) / 2, np.clip(right - left, 0, 1),
            np.clip(bottom - top, 0, 1))


def place_boxes(boxes, rng, flip, dx, dy, sx, sy, max_boxes):
    """Darknet's fill_truth_detection: shuffle the boxes (randomize_boxes), map their edges
    with ``edge*s - d`` (correct_boxes), mirror when flipped, clip to [0, 1], keep the first
    max_boxes and then drop those narrower or lower than 0.001.  Returns (n, 5) float32 rows
    (x, y, w, h, class)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 5)
    if len(boxes) == 0:
        return np.zeros((0, 5), F32)
    boxes = boxes[rng.permutation(len(boxes))]
    cls, x, y, bw, bh = boxes.T
    rows = np.stack([*corrected_boxes(x, y, bw, bh, flip, dx, dy, sx, sy), cls],
                    axis=1)[:max_boxes]
    keep = (rows[:, 2] >= .001) & (rows[:, 3] >= .001)
    return rows[keep].astype(F32)

