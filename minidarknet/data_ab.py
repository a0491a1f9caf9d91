"""AlexeyAB's detector data loader: mosaic, letter_box, jitter with resize=, blur, noise, mixup.

AlexeyAB's ``load_data_detection`` (OpenCV build, src/data.c) and ``image_data_augmentation``
(src/image_opencv.cpp) rebuilt in numpy, seeded.  pjreddie's loader (augment.py) is unchanged;
`uses_ab_loader` says which one a network trains with.  For every training picture:

* **Crop** (jitter): the picture (ow x oh) loses ``pleft, pright, ptop, pbot`` pixels on its
  sides, each ``(int)(r * 2 dw) - dw`` with ``dw = (int)(ow * jitter)`` (negative: padding),
  plus, with the [yolo] key ``resize=s``, a common zoom: ``pleft`` and ``ptop`` share one
  random number in ``[ow(1 - s)/2, ow(1 - 1/s)/2]``, ``pright`` and ``pbot`` another (for
  ``s < 1`` only the zoom-out half).  ``letter_box=1`` then widens the crop on one axis by
  the difference of aspect ratios, so the picture keeps its shape inside the network input.
  The crop (padding filled with the picture's mean colour, OpenCV's ``cv::mean``) is resized
  to the network size with OpenCV's bilinear rule (pixel centres, edges clamped); a crop that
  would be empty falls back to the whole picture, with AB's warning.
* **Flip** (``flip=1``, half of the time), then **hue/saturation/exposure** as AB applies them
  to its 8-bit HSV picture: S and V multiplied by ``rand_scale(saturation)``,
  ``rand_scale(exposure)`` and saturated at 255, the hue (0..180) shifted by ``179 * dhue``,
  ``dhue`` uniform in ``[-hue, hue]``, *saturated* to 0..255 and read back modulo 180 (so a
  red pushed below 0 stays red, as in AB).
* **Blur** (``blur=N``): a third of the pictures are left alone, a third get the background
  blurred (17x17 Gaussian, the boxes' rectangles copied back sharp), a third get
  ``blur=N``'s whole-picture Gaussian blur of ``(N/2)*2+1`` pixels (N=1: background only),
  limited to an eighth of the smallest box's side; OpenCV's kernel (sigma from the size) with
  reflected borders.
* **Gaussian noise** (``gaussian_noise=S``): half of the pictures get noise of standard
  deviation S (in 0..255 units, at most 127) added.  AB draws it into an 8-bit picture,
  which clips every negative draw to 0: the noise only brightens, and that is what is done.
* **Boxes** (AB's fill_truth_detection): shuffled, cut to ``max`` boxes, moved with the crop,
  mirrored, clipped to the picture; boxes narrower or lower than one network pixel are
  dropped, as are boxes that lay wholly outside the picture.  Rows are
  ``x y w h class track_id`` (track_id: the box's line in its file plus a hash of the
  picture's path, AB's id for its tracker).
* **Mosaic** (``mosaic=1``; half of the samples): a cut point ``(cut_x, cut_y)`` drawn in the
  middle 60 % of the input; four pictures, each augmented as above to the full input size
  (half of them first have their crop moved so that their corner next to the cut point is
  visible), fill the four quadrants: the top-left quadrant shows the bottom-right part of
  picture 0 (left of any right-hand padding), and so on.  Boxes are shifted with their
  pictures; those sticking out of the input are cut to it (``mosaic_bound=1``: to their own
  quadrant), and only boxes wholly inside, not spanning the whole input, and at least a
  pixel wide and high are kept.  ``letter_box=1`` with ``mosaic=1`` is refused, as AB does.
  One change: AB (without ``mosaic_bound``) also keeps boxes that lie wholly outside their
  picture's quadrant -- parts of the picture the mosaic does not show, since it skips
  ``-pbot * h / oh`` rows of padding where the crop has ``-pbot * h / sheight`` -- labels
  with nothing under them; here a box must show at least 2 pixels each way in its quadrant.
* **Mixup** (``mixup=1``; half of the samples): two pictures, each augmented, averaged
  0.5/0.5; the second one's boxes follow the first's.

Random input sizes (``random=1`` in the last [yolo]/[region] layer): every 10 iterations the
network trains at a new size, AB's rule: ``r = rand_scale(1.4)`` (or ``random=`` itself when
it is not 1), ``side = round(r * init / resize_step + 1) * resize_step`` (``resize_step=``,
default 32; the ``+ 1`` is AB's), the initial size when ``r < 1`` would enlarge the net, the
largest size (``round(1.4 * init / step + 1) * step``) for the first block and the last 100
iterations of ``max_batches``, never below ``resize_step``.

Other differences from AB, all deliberate: random numbers come from numpy (same distributions, not
C's rand() sequence); the mosaic/mixup coin is tossed per sample (AB tosses it once per
loading thread's share of the batch, a scheduling accident); pictures are float32 in [0, 1]
and not rounded to 8 bits between the steps; the size schedule follows the iteration number
(AB counts the iterations of the current process, so a resumed AB run starts a new block)
and the first block's largest size is iterations 0-9 of the training.  Every sample's random
numbers are drawn in one fixed order whatever the options say, so two cfgs that differ only
in their colour, blur or noise settings see the same crops, flips and boxes.
"""
import math
import warnings
from dataclasses import dataclass

import numpy as np

from .augment import AugmentOptions, corrected_boxes, flip_image, hsv_to_rgb, rand_scale, \
    rand_uniform, rgb_to_hsv
from .errors import DarknetWarning, DataError
from .image import to_channels

F32 = np.float32

# [net] keys only AlexeyAB's detector loader reads; a cfg using one trains with this loader.
AB_LOADER_KEYS = ("mosaic", "mosaic_bound", "letter_box", "blur", "gaussian_noise", "mixup",
                  "resize_step")
MOSAIC_MIN_OFFSET = 0.2        # AB: the cut point stays in the middle 60 %
BACKGROUND_BLUR = 17           # AB's kernel for blur=1 (background only)
RESIZE_EVERY = 10              # AB's train_detector: a new input size every 10 iterations
RESIZE_KEEP_MAX_LAST = 100     # ... and the largest one for the last 100 iterations
SIZE_STREAM = 3                # the data stream's sub-stream for the size schedule


# --------------------------------------------------------------------------- options

@dataclass
class ABOptions:
    jitter: float
    resize: float
    random: float
    flip: int
    hue: float
    saturation: float
    exposure: float
    letter_box: int
    mosaic: int
    mosaic_bound: int
    mixup: int
    blur: int
    gaussian_noise: int
    resize_step: int


def uses_ab_loader(net, layer):
    """AlexeyAB's loader for the alexeyab fork (fork.py's detector_loader), for AlexeyAB's
    [Gaussian_yolo] head, or for a cfg that uses one of the [net] keys only it reads."""
    if net.fork.detector_loader == "alexeyab" or layer.type == "Gaussian_yolo":
        return True
    section = net.options.section
    return any(section.has(key) for key in AB_LOADER_KEYS)


def read_ab_options(net, layer):
    """The loader's keys from [net] and the last detection layer (errors name FILE:LINE)."""
    s = net.options.section
    base = AugmentOptions.from_network(net, jitter=layer.section.float("jitter", 0.2))
    mosaic = s.int("mosaic", 0)
    options = ABOptions(
        jitter=base.jitter, resize=layer.section.float("resize", 1.0),
        random=layer.section.float("random", 0.0), flip=base.flip, hue=base.hue,
        saturation=base.saturation, exposure=base.exposure,
        letter_box=s.int("letter_box", 0), mosaic=mosaic,
        mosaic_bound=s.int("mosaic_bound", 0), mixup=s.int("mixup", 0),
        blur=s.int("blur", 0), gaussian_noise=s.int("gaussian_noise", 0),
        resize_step=_resize_step(s))
    if options.mosaic and options.letter_box:
        raise s.error("[net] letter_box=1 with mosaic=1: AlexeyAB's loader refuses this "
                      "combination (\"use only 1 of these parameters\"); set one of them to 0",
                      "letter_box")
    if options.mixup not in (0, 1):
        raise s.error(f"[net] mixup={options.mixup}: detector training takes mixup=0 or 1",
                      "mixup")
    if options.mosaic and options.mixup:
        raise s.error("[net] mixup=1 with mosaic=1: AlexeyAB's detector loader then does "
                      "mosaic only; keep one of them", "mixup")
    if options.resize <= 0:
        raise layer.section.error(f"{layer.section.header} resize={options.resize}: must be "
                                  f"positive", "resize")
    if options.random < 0:
        raise layer.section.error(f"{layer.section.header} random={options.random}: must not "
                                  f"be negative", "random")
    if options.blur < 0 or options.gaussian_noise < 0:
        raise s.error("[net] blur and gaussian_noise must not be negative", "blur")
    return options


def _resize_step(s):
    value = s.float("resize_step", 32)
    if value < 1 or value != int(value):
        raise s.error(f"[net] resize_step={s.raw('resize_step')}: must be a whole number of "
                      f"pixels, at least 1", "resize_step")
    return int(value)


# --------------------------------------------------------------------------- random sizes

def c_round(x):
    """C's roundl: halves away from zero."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def random_input_size(rng, block_start, init_w, init_h, options, max_batches):
    """AB's train_detector size for the block of iterations starting at `block_start`."""
    coef = 1.4 if options.random == 1 else options.random
    step = options.resize_step
    value = rand_scale(rng, coef)
    w = c_round(value * init_w / step + 1) * step
    h = c_round(value * init_h / step + 1) * step
    if value < 1 and (w > init_w or h > init_h):
        w, h = init_w, init_h
    if block_start < RESIZE_EVERY or block_start > max_batches - RESIZE_KEEP_MAX_LAST:
        w = c_round(coef * init_w / step + 1) * step
        h = c_round(coef * init_h / step + 1) * step
    return max(w, step), max(h, step)


# --------------------------------------------------------------------------- pixels

def cv_resize(im, w, h):
    """OpenCV's INTER_LINEAR resize of (c, ih, iw) to (c, h, w): source position
    ``(x + 0.5) * iw/w - 0.5`` clamped to the picture, separable, float32."""
    c, ih, iw = im.shape
    if (iw, ih) == (w, h):
        return im.astype(F32, copy=True)

    def axis(n_in, n_out):
        pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(F32)

    x0, x1, fx = axis(iw, w)
    y0, y1, fy = axis(ih, h)
    rows = im[:, :, x0] * (F32(1) - fx) + im[:, :, x1] * fx
    out = rows[:, y0, :] * (F32(1) - fy)[:, None] + rows[:, y1, :] * fy[:, None]
    return np.ascontiguousarray(out, F32)


def crop_resize(im, pleft, ptop, swidth, sheight, w, h):
    """AB's crop: the swidth x sheight window at (pleft, ptop) (outside the picture: its mean
    colour), resized to w x h."""
    c, ih, iw = im.shape
    if pleft == 0 and ptop == 0 and (swidth, sheight) == (iw, ih):
        return cv_resize(im, w, h)
    cropped = np.empty((c, sheight, swidth), F32)
    cropped[...] = im.mean(axis=(1, 2), dtype=np.float64).astype(F32)[:, None, None]
    x0, x1 = max(pleft, 0), min(pleft + swidth, iw)
    y0, y1 = max(ptop, 0), min(ptop + sheight, ih)
    if x1 > x0 and y1 > y0:
        cropped[:, y0 - ptop:y1 - ptop, x0 - pleft:x1 - pleft] = im[:, y0:y1, x0:x1]
    return cv_resize(cropped, w, h)


def ab_distort(im, dhue, dsat, dexp):
    """AB's HSV change on its 8-bit picture (see the module docstring)."""
    if dsat == 1 and dexp == 1 and dhue == 0:
        return im
    if im.shape[0] < 3:
        return np.clip(im * F32(dexp), 0, 1).astype(F32)
    hsv = rgb_to_hsv(im)
    hue = np.clip(hsv[0] * F32(180) + F32(179 * dhue), 0, 255)   # saturating 8-bit add
    hsv[0] = np.mod(hue, F32(180)) / F32(180)                    # HSV2RGB wraps the hue
    hsv[1] = np.minimum(hsv[1] * F32(dsat), F32(1))
    hsv[2] = np.minimum(hsv[2] * F32(dexp), F32(1))
    return np.clip(hsv_to_rgb(hsv), 0, 1).astype(F32)


# OpenCV's getGaussianKernel uses fixed kernels up to 7 taps when sigma is not given.
_SMALL_KERNELS = {1: [1.0], 3: [0.25, 0.5, 0.25], 5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
                  7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125]}


def gaussian_kernel(size):
    if size in _SMALL_KERNELS:
        return np.array(_SMALL_KERNELS[size], F32)
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = np.arange(size) - (size - 1) / 2
    k = np.exp(-x * x / (2 * sigma * sigma))
    return (k / k.sum()).astype(F32)


def gaussian_blur(im, size):
    """cv::GaussianBlur(size x size, sigma from the size), borders reflected without
    repeating the edge pixel (BORDER_REFLECT_101); separable, one pass per tap."""
    kernel = gaussian_kernel(size)
    r = size // 2
    _, h, w = im.shape
    padded = np.pad(im, ((0, 0), (0, 0), (r, r)), mode="reflect") if w > 1 else \
        np.pad(im, ((0, 0), (0, 0), (r, r)), mode="edge")
    rows = sum(kernel[i] * padded[:, :, i:i + w] for i in range(size))
    padded = np.pad(rows, ((0, 0), (r, r), (0, 0)), mode="reflect") if h > 1 else \
        np.pad(rows, ((0, 0), (r, r), (0, 0)), mode="edge")
    return np.ascontiguousarray(sum(kernel[i] * padded[:, i:i + h, :] for i in range(size)),
                                F32)


def blur_picture(im, blur, truth):
    """AB's blur step: blur=1 blurs the background (17x17) and copies each box's rectangle
    back; blur>1 blurs everything with a (blur/2)*2+1 kernel."""
    if blur == 1:
        out = gaussian_blur(im, BACKGROUND_BLUR)
        _, h, w = im.shape
        for x, y, bw, bh in truth[:, :4]:
            left, top = int((x - bw / 2) * w), int((y - bh / 2) * h)
            right, bottom = left + int(bw * w), top + int(bh * h)
            l, t = max(left, 0), max(top, 0)
            r, b = min(right, w), min(bottom, h)
            if r > l and b > t:
                out[:, t:b, l:r] = im[:, t:b, l:r]
        return out
    return gaussian_blur(im, (blur // 2) * 2 + 1)


def add_gaussian_noise(im, sigma, rng):
    """AB's noise: N(0, sigma) in 0..255 units drawn into an 8-bit picture (rounded, negative
    values clipped to 0), added with saturation."""
    sigma = min(max(int(sigma), 0), 127)
    noise = np.clip(np.rint(rng.normal(0.0, sigma, im.shape)), 0, 255).astype(F32)
    return np.minimum(im + noise / F32(255), F32(1))


# --------------------------------------------------------------------------- boxes

def path_hash(text):
    """AB's custom_hash (djb2 on 64-bit unsigned)."""
    h = 5381
    for byte in text.encode("utf-8", "surrogateescape"):
        h = (h * 33 + byte) & 0xFFFFFFFFFFFFFFFF
    return h


def fill_truth(boxes, order, flip, dx, dy, sx, sy, net_w, net_h, max_boxes, track_base=0):
    """AB's fill_truth_detection on (k, 5) boxes (class, x, y, w, h) in `order` (the shuffle):
    -> ((n, 6) rows x, y, w, h, class, track_id; the smallest kept side in network pixels)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 5)[order]
    track = np.asarray(order, np.float64) + track_base
    cls, x, y, bw, bh = boxes.T
    # correct_boxes: a box at (0, 0) or wholly outside the picture is marked unusable
    bad = ((x == 0) & (y == 0)) | (x + bw / 2 < 0) | (y + bh / 2 < 0) | \
        (x - bw / 2 > 1) | (y - bh / 2 > 1)
    rows = np.stack([*corrected_boxes(x, y, bw, bh, flip, dx, dy, sx, sy), cls, track],
                    axis=1)
    rows, bad = rows[:max_boxes], bad[:max_boxes]       # AB cuts before it filters
    keep = ~bad & (rows[:, 2] >= 1.0 / net_w) & (rows[:, 3] >= 1.0 / net_h) & \
        (rows[:, 0] > 0) & (rows[:, 0] <= 1) & (rows[:, 1] > 0) & (rows[:, 1] <= 1)
    rows = rows[keep]
    smallest = 0
    if len(rows):
        smallest = int(min(np.trunc(rows[:, 2] * net_w).min(),
                           np.trunc(rows[:, 3] * net_h).min()))
    return rows.astype(F32), smallest


def mosaic_boxes(rows, k, cut_x, cut_y, shifts, w, h, bound):
    """AB's blend_truth_mosaic for the boxes of picture k (0 top-left, 1 top-right,
    2 bottom-left, 3 bottom-right): shift, cut to the input (or the quadrant), filter."""
    left_shift, right_shift, top_shift, bot_shift = shifts
    rows = np.asarray(rows, np.float64)
    if not len(rows):
        return np.zeros((0, 6), F32)
    xb, yb, wb, hb = (rows[:, i].copy() for i in range(4))
    xb += (cut_x - left_shift) / w if k in (1, 3) else -(w - cut_x - right_shift) / w
    yb += (cut_y - top_shift) / h if k in (2, 3) else -(h - cut_y - bot_shift) / h

    def edges():
        return (np.trunc((xb - wb / 2) * w), np.trunc((xb + wb / 2) * w),
                np.trunc((yb - hb / 2) * h), np.trunc((yb + hb / 2) * h))

    left, right, top, bot = edges()
    lo_x, hi_x = (cut_x, w) if k in (1, 3) else (0, cut_x)
    lo_y, hi_y = (cut_y, h) if k in (2, 3) else (0, cut_y)
    # What the quadrant shows of the box.  AB keeps (without mosaic_bound) boxes lying
    # wholly outside their quadrant -- parts of the picture the mosaic does not show, so
    # labels with nothing under them; they are dropped here (the one deliberate change).
    shown = (np.minimum(right, hi_x) - np.maximum(left, lo_x) > 1) & \
        (np.minimum(bot, hi_y) - np.maximum(top, lo_y) > 1)
    if bound:
        left, right = np.maximum(left, lo_x), np.minimum(right, hi_x)
        top, bot = np.maximum(top, lo_y), np.minimum(bot, hi_y)
        xb, wb = (right + left) / 2 / w, (right - left) / w
        yb, hb = (bot + top) / 2 / h, (bot - top) / h
    else:
        for lo, hi, centre, size, n in ((left, right, xb, wb, w), (top, bot, yb, hb, h)):
            under = lo < 0
            centre[under] -= lo[under] / n / 2
            size[under] += lo[under] / n
            over = hi > n
            centre[over] -= (hi[over] - n) / n / 2
            size[over] -= (hi[over] - n) / n
        left, right, top, bot = edges()
    keep = shown & (left >= 0) & (right <= w) & (top >= 0) & (bot <= h) & \
        (wb > 0) & (wb < 1) & (hb > 0) & (hb < 1) & (xb > 0) & (xb < 1) & \
        (yb > 0) & (yb < 1) & (wb > 1.0 / w) & (hb > 1.0 / h)
    out = np.zeros((int(keep.sum()), 6), F32)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = xb[keep], yb[keep], wb[keep], hb[keep]
    out[:, 4] = rows[keep, 4]          # AB copies 5 values: the track id is left at 0
    return out


# --------------------------------------------------------------------------- one picture

@dataclass
class Draws:
    """One picture's random numbers, drawn in a fixed order (see the module docstring)."""
    r: tuple            # r1..r4: the jitter of the four sides
    resize_r: tuple     # the two zoom numbers
    flip: bool
    dhue: float
    dsat: float
    dexp: float
    blur_choice: int    # 0 none, 1 background, 2 the cfg's blur
    noise: bool
    corner: bool        # mosaic: move the crop so that the corner at the cut is visible
    noise_seed: int

    @classmethod
    def draw(cls, rng, options):
        r = tuple(float(v) for v in rng.random(4))
        resize_r = tuple(float(v) for v in rng.random(2))
        flip = bool(rng.integers(2))
        dhue = rand_uniform(rng, -options.hue, options.hue)
        dsat = rand_scale(rng, options.saturation)
        dexp = rand_scale(rng, options.exposure)
        blur_choice = int(rng.integers(3))
        noise = bool(rng.integers(2))
        corner = bool(rng.integers(2))
        noise_seed = int(rng.integers(2 ** 63))
        return cls(r, resize_r, flip and bool(options.flip), dhue, dsat, dexp, blur_choice,
                   noise, corner, noise_seed)


def _precalc(lo, hi, r):
    """AB's rand_precalc_random, then C's (int) conversion."""
    if hi < lo:
        lo, hi = hi, lo
    return int(r * (hi - lo) + lo)


# AB's "move each 2nd picture to the corner" table: for (flipped, k) the sides whose crop
# moves to the other side ((from, to) pairs).
_CORNER_MOVES = {
    (True, 0): (("pright", "pleft"), ("ptop", "pbot")),
    (True, 1): (("pleft", "pright"), ("ptop", "pbot")),
    (True, 2): (("pright", "pleft"), ("pbot", "ptop")),
    (True, 3): (("pleft", "pright"), ("pbot", "ptop")),
    (False, 0): (("pleft", "pright"), ("ptop", "pbot")),
    (False, 1): (("pright", "pleft"), ("ptop", "pbot")),
    (False, 2): (("pleft", "pright"), ("pbot", "ptop")),
    (False, 3): (("pright", "pleft"), ("pbot", "ptop")),
}


def crop_geometry(ow, oh, w, h, options, draws, mosaic_k=None):
    """AB's pleft, pright, ptop, pbot for an ow x oh picture (jitter, resize=, letter_box,
    the mosaic corner move); falls back to the whole picture when the crop is empty."""
    dw, dh = int(ow * options.jitter), int(oh * options.jitter)
    down = options.resize if options.resize <= 1 else 1 / options.resize
    up = options.resize if options.resize >= 1 else 1 / options.resize
    min_rdw, min_rdh = int(ow * (1 - 1 / down) / 2), int(oh * (1 - 1 / down) / 2)
    max_rdw, max_rdh = int(ow * (1 - 1 / up) / 2), int(oh * (1 - 1 / up) / 2)
    r1, r2, r3, r4 = draws.r
    z1, z2 = draws.resize_r
    p = {"pleft": _precalc(-dw, dw, r1), "pright": _precalc(-dw, dw, r2),
         "ptop": _precalc(-dh, dh, r3), "pbot": _precalc(-dh, dh, r4)}
    top_w, top_h = (0, 0) if options.resize < 1 else (max_rdw, max_rdh)
    p["pleft"] += _precalc(min_rdw, top_w, z1)
    p["pright"] += _precalc(min_rdw, top_w, z2)
    p["ptop"] += _precalc(min_rdh, top_h, z1)
    p["pbot"] += _precalc(min_rdh, top_h, z2)
    if options.letter_box:
        net_ar = F32(w) / F32(h)
        if F32(ow) / F32(oh) / net_ar > 1:
            delta = (float(F32(ow) / net_ar) - oh) / 2
            p["ptop"], p["pbot"] = int(p["ptop"] - delta), int(p["pbot"] - delta)
        else:
            delta = (float(F32(oh) * net_ar) - ow) / 2
            p["pleft"], p["pright"] = int(p["pleft"] - delta), int(p["pright"] - delta)
    if mosaic_k is not None and draws.corner:
        for source, target in _CORNER_MOVES[(draws.flip, mosaic_k)]:
            p[target] += p[source]
            p[source] = 0
    swidth = ow - p["pleft"] - p["pright"]
    sheight = oh - p["ptop"] - p["pbot"]
    if swidth <= 0 or sheight <= 0 or ow - p["pleft"] <= 0 or oh - p["ptop"] <= 0:
        warnings.warn(f"invalid crop of a {ow}x{oh} picture (jitter={options.jitter}, "
                      f"resize={options.resize}); using the whole picture, as AlexeyAB does",
                      DarknetWarning, stacklevel=4)
        swidth, sheight, p["pleft"], p["ptop"] = ow, oh, 0, 0
    return p["pleft"], p["pright"], p["ptop"], p["pbot"], swidth, sheight


@dataclass
class Picture:
    """One augmented picture at the network size and what the mosaic needs of its crop."""
    image: np.ndarray
    truth: np.ndarray            # (n, 6)
    pleft: int
    pright: int
    ptop: int
    pbot: int
    ow: int
    oh: int
    flip: bool


def augment_picture(im, boxes, rng, options, w, h, max_boxes, mosaic_k=None, track_base=0):
    """One picture through AB's load_data_detection + image_data_augmentation."""
    draws = Draws.draw(rng, options)
    order = rng.permutation(len(boxes))
    _, oh, ow = im.shape
    pleft, pright, ptop, pbot, swidth, sheight = crop_geometry(ow, oh, w, h, options, draws,
                                                               mosaic_k)
    sx, sy = swidth / ow, sheight / oh
    truth, smallest = fill_truth(boxes, order, draws.flip, pleft / ow / sx, ptop / oh / sy,
                                 1 / sx, 1 / sy, w, h, max_boxes, track_base)
    out = crop_resize(im, pleft, ptop, swidth, sheight, w, h)
    if draws.flip:
        out = flip_image(out)
    out = ab_distort(out, draws.dhue, draws.dsat, draws.dexp)
    blur = (0, 1, options.blur)[draws.blur_choice] if options.blur else 0
    if blur > 1 and smallest // 8 < blur:
        blur = smallest // 8          # AB: no strong blur when a box is small
    if blur:
        out = blur_picture(out, blur, truth)
    if options.gaussian_noise and draws.noise:
        out = add_gaussian_noise(out, options.gaussian_noise,
                                 np.random.default_rng(draws.noise_seed))
    np.clip(out, 0, 1, out=out)       # float32 rounding of the resize weights
    return Picture(out, truth, pleft, pright, ptop, pbot, ow, oh, draws.flip)


def mosaic_shifts(picture, cut_x, cut_y, w, h):
    """The padding (in network pixels) the mosaic skips on each side of a picture."""
    pleft, pright = picture.pleft, picture.pright
    if picture.flip:
        pleft, pright = pright, pleft
    ow, oh = picture.ow, picture.oh
    return (min(cut_x, max(0, (-pleft * w) // ow)), min(w - cut_x, max(0, (-pright * w) // ow)),
            min(cut_y, max(0, (-picture.ptop * h) // oh)),
            min(h - cut_y, max(0, (-picture.pbot * h) // oh)))


def paste_quadrant(out, image, k, cut_x, cut_y, shifts):
    """Copy picture k's part into its quadrant of `out` (AB's row copies, as slices)."""
    left_shift, right_shift, top_shift, bot_shift = shifts
    _, h, w = out.shape
    src_x = slice(w - cut_x - right_shift, w - right_shift) if k in (0, 2) else \
        slice(left_shift, left_shift + w - cut_x)
    src_y = slice(h - cut_y - bot_shift, h - bot_shift) if k in (0, 1) else \
        slice(top_shift, top_shift + h - cut_y)
    dst_x = slice(0, cut_x) if k in (0, 2) else slice(cut_x, w)
    dst_y = slice(0, cut_y) if k in (0, 1) else slice(cut_y, h)
    out[:, dst_y, dst_x] = image[:, src_y, src_x]


@dataclass
class Sample:
    image: np.ndarray            # (c, h, w) float32
    truth: np.ndarray            # (n, 6) rows x, y, w, h, class, track_id
    kind: str                    # "single", "mosaic" or "mixup"
    cut: tuple = None            # the mosaic's (cut_x, cut_y)
    paths: tuple = ()


def make_sample(draw_picture, rng, options, w, h, max_boxes):
    """One training input: draw_picture(rng) -> (path, image, boxes) picks a picture."""
    combine = bool(rng.integers(2))
    cut_x = int(rng.integers(int(w * MOSAIC_MIN_OFFSET), int(w * (1 - MOSAIC_MIN_OFFSET)) + 1))
    cut_y = int(rng.integers(int(h * MOSAIC_MIN_OFFSET), int(h * (1 - MOSAIC_MIN_OFFSET)) + 1))

    def picture(k=None):
        path, im, boxes = draw_picture(rng)
        base = (path_hash(path) % 4000) * 4000
        return path, augment_picture(im, boxes, rng, options, w, h, max_boxes, k, base)

    if options.mosaic and combine:
        out, truths, paths = None, [], []
        for k in range(4):
            path, p = picture(k)
            if k == 0:
                out = np.zeros((p.image.shape[0], h, w), F32)
            shifts = mosaic_shifts(p, cut_x, cut_y, w, h)
            paste_quadrant(out, p.image, k, cut_x, cut_y, shifts)
            room = max_boxes - sum(len(t) for t in truths)
            truths.append(mosaic_boxes(p.truth[:room], k, cut_x, cut_y, shifts, w, h,
                                       options.mosaic_bound))
            paths.append(path)
        return Sample(out, np.concatenate(truths), "mosaic", (cut_x, cut_y), tuple(paths))
    path, first = picture()
    if options.mixup and combine:
        path2, second = picture()
        image = (F32(0.5) * first.image + F32(0.5) * second.image).astype(F32)
        extra = second.truth[:max_boxes - len(first.truth)].copy()
        extra[:, 5] = 0                 # AB's blend_truth copies 5 values
        return Sample(image, np.concatenate([first.truth, extra]), "mixup",
                      paths=(path, path2))
    return Sample(first.image, first.truth, "single", paths=(path,))


# --------------------------------------------------------------------------- the data set side

def truth_layout(net, layer):
    """(values per box, boxes) of the network's truth rows for its last detection `layer` --
    the one place that decides it: the layer's truth_floats (pjreddie's [yolo]/[region]:
    x y w h class; AlexeyAB's [yolo] and [Gaussian_yolo]: x y w h class track_id)."""
    floats = getattr(layer, "truth_floats", 5)
    return floats, min(getattr(layer, "max_boxes", net.truths // floats), net.truths // floats)


class ABDetectorLoader:
    """Training batches of an ImageData detector set with AlexeyAB's augmentation."""

    def __init__(self, data, net, layer):
        self.data = data
        self.options = read_ab_options(net, layer)
        self.floats, self.max_boxes = truth_layout(net, layer)
        self.truths = net.truths
        self.init_w, self.init_h = net.w, net.h
        self.max_batches = net.options.max_batches

    def input_size(self, iteration, seed):
        """The (w, h) iteration `iteration` trains at (random=1: AB's schedule)."""
        if not self.options.random:
            return self.init_w, self.init_h
        start = iteration - iteration % RESIZE_EVERY
        rng = np.random.default_rng([int(seed), int(start), 2, SIZE_STREAM])
        return random_input_size(rng, start, self.init_w, self.init_h, self.options,
                                 self.max_batches)

    def draw_picture(self, rng):
        (path, boxes), im = self.data._draw(rng)
        return path, im, boxes

    def sample(self, rng, w, h):
        return make_sample(self.draw_picture, rng, self.options, w, h, self.max_boxes)

    def train_batch(self, iteration, count, seed):
        w, h = self.input_size(iteration, seed)
        rng = self.data.iteration_rng(seed, iteration)
        x = np.empty((count, self.data.c, h, w), F32)
        truth = np.zeros((count, self.truths), F32)
        for i in range(count):
            s = self.sample(rng, w, h)
            x[i] = to_channels(s.image, self.data.c, s.paths[0], DataError)
            rows = s.truth[:self.max_boxes, :self.floats]
            truth[i, :rows.size] = rows.reshape(-1)
        return x, truth


def detector_only_keys(net):
    """[net] keys of AB's detector loader that a classifier's training does not apply."""
    section = net.options.section
    return [key for key in AB_LOADER_KEYS if section.has(key)]
