"""Image loading, resizing and saving the way Darknet does it.

Images are numpy arrays of shape (channels, height, width), float32, RGB, values in [0, 1]:
the layout of Darknet's ``image`` struct (planar, index ``x + w*(y + h*c)``).

Darknet behaviour reproduced here (see darknet-spec.md section 7):

* ``load_image`` decodes like stb_image forced to 3 channels: grey is replicated, alpha is
  dropped (not composited), palettes are expanded, 16-bit samples keep their high byte,
  EXIF orientation is ignored, and each byte becomes ``float32(byte / 255.)``.  Pillow's JPEG
  decoder (libjpeg) may differ from stb's by +-1/255 on some pixels.  Darknet (PJ) prints
  "Cannot load image" and calls ``exit(0)`` on an unreadable file; here it is an ImageError.
* ``resize_image`` is Darknet's separable, align-corners bilinear resize computed in float32,
  including its last-row quirk: the last output row only receives ``(1 - dy) * top``, and
  for some size pairs ``dy`` is 0.99999 there, so that row comes out almost black.
* ``letterbox_image`` (PJ ``detector test`` / ``classifier predict``), ``resize_image`` used as
  a stretch (AB ``detector test``) and ``resize_min_crop`` (AB ``classifier predict``).
"""
import io
import os
import warnings

import numpy as np
from PIL import Image

from minidarknet.atomic import write_atomic
from minidarknet.errors import ImageError, ShapeError
from minidarknet.files import open_regular

__all__ = [
    "load_image", "to_chw", "from_chw", "save_image", "save_pil",
    "resize_image", "letterbox_geometry", "letterbox_image",
    "resize_min", "crop_image", "resize_min_crop", "prepare_image", "PREPARE_MODES",
]

PREPARE_MODES = ("letterbox", "stretch", "crop")


def _one_line(text):
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- loading

def _rgb_bytes(pil):
    """A Pillow image -> uint8 array (h, w, 3), converting like stb_image with 3 channels."""
    mode = pil.mode
    if mode == "RGB":
        return np.asarray(pil, dtype=np.uint8)
    if mode in ("RGBA", "RGBX", "RGBa"):
        return np.asarray(pil, dtype=np.uint8)[:, :, :3]
    if mode in ("P", "PA"):
        # RGBA keeps the palette colours exactly; the alpha (tRNS) is then dropped like stb.
        return np.asarray(pil.convert("RGBA"), dtype=np.uint8)[:, :, :3]
    if mode.startswith("I;16"):
        grey = (np.asarray(pil).astype(np.uint32) >> 8).astype(np.uint8)
    elif mode == "I":
        # 32-bit integer mode: Pillow uses it for 16-bit sources such as PGM; keep the high byte.
        grey = (np.clip(np.asarray(pil, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
    elif mode == "F":
        grey = np.clip(np.asarray(pil, dtype=np.float64), 0, 255).astype(np.uint8)
    elif mode in ("L", "LA", "La"):
        grey = np.asarray(pil, dtype=np.uint8)
        if grey.ndim == 3:
            grey = grey[:, :, 0]
    elif mode == "1":
        grey = np.asarray(pil.convert("L"), dtype=np.uint8)
    else:  # CMYK, YCbCr, LAB, HSV, ...
        return np.asarray(pil.convert("RGB"), dtype=np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


# Darknet: (float)byte / 255. is computed in double and stored as float; a lookup table
# gives the same 256 values without a float64 copy of the whole image.
_BYTE_TO_FLOAT = (np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)


def _bytes_to_chw(hwc):
    return _BYTE_TO_FLOAT[np.ascontiguousarray(hwc.transpose(2, 0, 1))]


def to_chw(pil_image):
    """A Pillow image -> float32 (3, h, w) RGB in [0, 1], converted like ``load_image``."""
    return _bytes_to_chw(_rgb_bytes(pil_image))


_IMAGE_REASONS = {"No such file or directory": "no such file", "Is a directory": "is a directory",
                  "Permission denied": "permission denied"}


def load_image(path):
    """Read an image file as float32 (3, h, w) RGB in [0, 1] (Darknet's load_image_color).

    Any Pillow-readable file works (Darknet's stb reads JPEG, PNG, BMP, TGA, GIF, PSD, PNM).
    A missing, unreadable, truncated, oversized (decompression bomb) or corrupt file raises
    ImageError with a one-line message naming the file.
    """
    name = os.fspath(path)
    # only a regular file: a FIFO would block, a device never end
    file, _ = open_regular(name, lambda reason: ImageError(
        f"{name}: cannot read image: {_IMAGE_REASONS.get(reason, reason)}"))
    try:
        with warnings.catch_warnings(), file:
            # A decompression-bomb *warning* (between 1x and 2x Pillow's pixel limit) is fine.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as pil:
                pil.load()
                hwc = _rgb_bytes(pil)
    except FileNotFoundError:
        raise ImageError(f"{name}: cannot read image: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: cannot read image: is a directory") from None
    except PermissionError:
        raise ImageError(f"{name}: cannot read image: permission denied") from None
    except MemoryError:
        raise ImageError(f"{name}: cannot read image: too large for the memory available") \
            from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: cannot read image: too large ({_one_line(e)})") from None
    except Image.UnidentifiedImageError:
        why = "empty file" if os.path.getsize(name) == 0 else "not a picture Pillow can decode"
        raise ImageError(f"{name}: cannot read image: {why}") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for corrupt data
        why = _one_line(e) or type(e).__name__
        raise ImageError(f"{name}: cannot read image: {why}") from None
    if hwc.shape[0] == 0 or hwc.shape[1] == 0:
        raise ImageError(f"{name}: cannot read image: it has no pixels")
    try:
        return _bytes_to_chw(hwc)
    except MemoryError:
        raise ImageError(f"{name}: cannot read image: {hwc.shape[1]} x {hwc.shape[0]} pixels "
                         f"is too large for the memory available") from None


def to_channels(image, channels, path, error=ImageError):
    """RGB (3, h, w) -> what a network with `channels` inputs takes: 3 channels as they are,
    1 channel as stb_image's 1-channel grey, (77 r + 150 g + 29 b)/256, as Darknet loads gray
    images.  Other counts raise `error` naming the file."""
    if channels == 3:
        return image
    if channels == 1:
        weights = np.array([77, 150, 29], np.float32) / np.float32(256)
        return np.tensordot(weights, image, axes=1)[None].astype(np.float32)
    raise error(f"{path}: the network takes {channels}-channel input; images have 3")


# --------------------------------------------------------------------------- saving

def _check_chw(im, what="image"):
    im = np.asarray(im)
    if im.ndim != 3:
        raise ShapeError(f"{what}: expected a (channels, height, width) array, got shape {im.shape}")
    return im


def from_chw(array):
    """float (c, h, w) array in [0, 1] with 1 or 3 channels -> Pillow image ('L' or 'RGB').

    Values are clipped to [0, 1] and converted as Darknet saves images: ``(unsigned char)(255*v)``
    (truncation, not rounding), which maps ``load_image`` values back to the same bytes.
    """
    a = np.asarray(array)
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ImageError(f"cannot convert an array of shape {a.shape} to an image: "
                         "expected (1 or 3, height, width)")
    a = np.nan_to_num(a.astype(np.float32), nan=0.0)
    bytes_ = (np.float32(255) * np.clip(a, 0, 1)).astype(np.uint8)
    if a.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(bytes_[0]), "L")
    return Image.fromarray(np.ascontiguousarray(bytes_.transpose(1, 2, 0)), "RGB")


def _format_for(name):
    ext = os.path.splitext(name)[1].lower()
    # The common formats first: registered_extensions() imports every Pillow plugin
    # (about 50-100 ms, a noticeable part of a one-picture run).
    Image.preinit()
    fmt = Image.EXTENSION.get(ext) if ext else None
    if fmt is None and ext:
        fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ImageError(f"{name}: cannot save image: unknown or unsupported file extension "
                         f"{ext or '(none)'} (use .png or .jpg)")
    return fmt


def save_image(path, chw_array):
    """Write a float (c, h, w) array in [0, 1] (1 or 3 channels) as PNG/JPEG/... atomically.

    The format comes from the extension.  The file is written to a temporary file in the same
    directory and moved into place with os.replace, so a reader never sees half a file.
    """
    name = os.fspath(path)
    a = np.asarray(chw_array)
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ImageError(f"{name}: cannot save image: array of shape {a.shape} is not "
                         "(1 or 3 channels, height, width)")
    if a.shape[1] == 0 or a.shape[2] == 0:
        raise ImageError(f"{name}: cannot save image: it has no pixels")
    fmt = _format_for(name)
    pil = from_chw(a)
    save_pil(name, pil, fmt)


def save_pil(path, pil, fmt=None):
    """Save a Pillow image atomically (temp file in the same directory + os.replace)."""
    name = os.fspath(path)
    fmt = fmt or _format_for(name)
    try:
        encoded = io.BytesIO()
        # PNG at zlib level 1: several times faster to write than Pillow's default (6), for
        # files about 10-20 % larger (a visible part of a one-picture `run`).
        options = {"JPEG": {"quality": 95}, "PNG": {"compress_level": 1}}.get(fmt, {})
        pil.save(encoded, format=fmt, **options)
        write_atomic(name, encoded.getvalue())
    except Exception as e:  # noqa: BLE001 - OSError, Pillow encoder errors
        why = _one_line(e) or type(e).__name__
        raise ImageError(f"{name}: cannot save image: {why}") from None


# --------------------------------------------------------------------------- resizing

def _check_size(w, h):
    w, h = int(w), int(h)
    if w < 1 or h < 1:
        raise ValueError(f"image size must be at least 1x1, got {w}x{h}")
    return w, h


def _axis_weights(n_in, n_out):
    """Darknet's source positions for one axis, in float32: (index, fraction)."""
    if n_out == 1:
        # Darknet divides by (n_out - 1) = 0 here; see resize_image.
        return np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.float32)
    scale = np.float32(n_in - 1) / np.float32(n_out - 1)
    s = np.arange(n_out, dtype=np.float32) * scale
    i = s.astype(np.int64)  # (int) truncation; s >= 0
    d = s - i.astype(np.float32)
    return i, d


def resize_image(im, w, h):
    """Darknet's resize_image: float32 separable bilinear, align-corners, with its quirks.

    Horizontal pass: ``sx = c * ((in_w-1)/(w-1))``, ``ix = (int)sx``, ``dx = sx - ix``,
    ``(1-dx)*p[ix] + dx*p[ix+1]``; the last output column (and every column of a 1-pixel-wide
    input) copies the last input column.  Vertical pass the same with rows, except that the
    last output row (and every row of a 1-row input) is only ``(1-dy)*top``.  Where
    ``(h-1)*scale`` rounds to just below ``in_h-1`` that row gets ``dy ~ 0.99999`` and is almost
    black (e.g. height 400 -> 608, 960 -> 608).

    Not defined by Darknet: a 1-row output (it computes ``0 * inf``); here it is the first
    input row (times 1).  A 1-column output is the last input column, as in Darknet.
    Same-size input returns a copy (Darknet recomputes, which is the identity).
    """
    im = _check_chw(im)
    w, h = _check_size(w, h)
    c, in_h, in_w = im.shape
    if in_h < 1 or in_w < 1:
        raise ShapeError(f"image: cannot resize an empty image of shape {im.shape}")
    im = im.astype(np.float32, copy=False)
    if (in_w, in_h) == (w, h):
        return im.copy()

    # Horizontal pass -> part (c, in_h, w)
    ix, dx = _axis_weights(in_w, w)
    if in_w == 1:
        part = np.repeat(im[:, :, -1:], w, axis=2)
    else:
        ix1 = np.minimum(ix + 1, in_w - 1)
        part = (np.float32(1) - dx) * im[:, :, ix] + dx * im[:, :, ix1]
        part[:, :, w - 1] = im[:, :, in_w - 1]

    # Vertical pass -> (c, h, w)
    iy, dy = _axis_weights(in_h, h)
    dyc = dy[:, None]
    out = (np.float32(1) - dyc) * part[:, iy, :]
    if in_h > 1 and h > 1:
        rows = np.arange(h - 1)  # every row but the last
        iy1 = iy[rows] + 1
        out[:, rows, :] += dyc[rows] * part[:, iy1, :]
    return np.ascontiguousarray(out, dtype=np.float32)


def letterbox_geometry(im_w, im_h, net_w, net_h):
    """(new_w, new_h): the size the image is resized to inside a net_w x net_h letterbox.

    Darknet: if ``(float)net_w/im_w < (float)net_h/im_h`` then ``new_w = net_w``,
    ``new_h = (im_h*net_w)/im_w`` (C integer division), else ``new_h = net_h``,
    ``new_w = (im_w*net_h)/im_h``.  The same rule is used by correct_boxes.
    """
    im_w, im_h, net_w, net_h = int(im_w), int(im_h), int(net_w), int(net_h)
    if im_w < 1 or im_h < 1:
        raise ValueError(f"image size must be at least 1x1, got {im_w}x{im_h}")
    if np.float32(net_w) / np.float32(im_w) < np.float32(net_h) / np.float32(im_h):
        return net_w, (im_h * net_w) // im_w
    return (im_w * net_h) // im_h, net_h


def _c_div2(a):
    """C's a/2 for ints (truncates toward zero)."""
    return a // 2 if a >= 0 else -((-a) // 2)


def letterbox_image(im, w, h):
    """PJ letterbox: keep the aspect ratio, resize with resize_image, centre on 0.5 grey.

    The resized image is pasted at ``((w-new_w)/2, (h-new_h)/2)``.  When a side rounds to 0
    (extreme aspect ratios) Darknet pastes nothing and the result is all 0.5.
    """
    im = _check_chw(im)
    w, h = _check_size(w, h)
    c, in_h, in_w = im.shape
    new_w, new_h = letterbox_geometry(in_w, in_h, w, h)
    boxed = np.full((c, h, w), 0.5, dtype=np.float32)
    if new_w >= 1 and new_h >= 1:
        resized = resize_image(im, new_w, new_h)
        dx, dy = _c_div2(w - new_w), _c_div2(h - new_h)
        boxed[:, dy:dy + new_h, dx:dx + new_w] = resized
    return boxed


def resize_min(im, min_side):
    """Darknet's resize_min: the shorter side becomes ``min_side`` (integer aspect rule).

    ``w < h``: ``h = h*min/w``, ``w = min``; otherwise ``w = w*min/h``, ``h = min``.
    Returns the input unchanged (not a copy) when the size already matches, as Darknet does.
    """
    im = _check_chw(im)
    _, in_h, in_w = im.shape
    m = int(min_side)
    if in_w < in_h:
        w, h = m, (in_h * m) // in_w
    else:
        w, h = (in_w * m) // in_h, m
    if (w, h) == (in_w, in_h):
        return im
    return resize_image(im, w, h)


def crop_image(im, dx, dy, w, h):
    """Darknet's crop_image: a w x h window at (dx, dy); outside pixels repeat the border."""
    im = _check_chw(im)
    w, h = _check_size(w, h)
    _, in_h, in_w = im.shape
    cols = np.clip(np.arange(w) + int(dx), 0, in_w - 1)
    rows = np.clip(np.arange(h) + int(dy), 0, in_h - 1)
    return np.ascontiguousarray(im[:, rows[:, None], cols[None, :]], dtype=np.float32)


def resize_min_crop(im, w, h):
    """AB ``classifier predict``: resize_min(im, w), then a centre crop of w x h.

    The crop offset is ``((rw - w)/2, (rh - h)/2)`` in C integer arithmetic; when the resized
    image is smaller than the crop (h > w networks), border pixels are repeated.
    """
    im = _check_chw(im)
    w, h = _check_size(w, h)
    resized = resize_min(im, w)
    _, rh, rw = resized.shape
    return crop_image(resized, _c_div2(rw - w), _c_div2(rh - h), w, h)


def prepare_image(im, w, h, mode="letterbox"):
    """Turn a loaded image into a w x h network input.

    mode: "letterbox" (PJ detector/classifier default), "stretch" (plain resize_image, AB
    detector default) or "crop" (resize_min + centre crop, AB classifier).
    """
    if mode == "letterbox":
        return letterbox_image(im, w, h)
    if mode == "stretch":
        return resize_image(im, w, h)
    if mode == "crop":
        return resize_min_crop(im, w, h)
    raise ValueError(f"unknown image preparation mode {mode!r}: use one of {', '.join(PREPARE_MODES)}")
