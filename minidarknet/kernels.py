"""Compiled loops for the work numpy can only do in several strided passes.

They are compiled by numba (the optional `fast` extra: pip install 'minidarknet[fast]') and
give exactly the numbers of the numpy code they replace; without numba, or with the
environment variable MINIDARKNET_KERNELS=numpy, that numpy code runs.  `status()` says which
(minidarknet info prints it).  The first use compiles them (a few seconds, then cached on
disk by numba).

Measured on the project machine, one thread, yolov3-tiny's layers:
* max-pooling, where numpy needs a pass over the window rows and a pass with a stride-2 inner
  loop (no SIMD): 16 x 416 x 416 2.9 -> 0.4 ms (0.27 ms with the 2x2/2 loop), 32 x 208 x 208
  1.0 -> 0.14 ms;
* the Winograd F(2x2, 3x3) input and output transforms (numpy: eight strided adds each over
  rows of 13-26 values): 2.5-3x and 1.6-2x faster;
* the convolution epilogue (scale, bias, leaky or linear) in one pass instead of two or
  three: 2-5x faster.
The kernels release the GIL, so the threads of a parallel region (parallel.py) run them side
by side.
"""
import os
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

_compiled = None        # None: not tried yet; False: unavailable; else the namespace
_reason = ""
_one_off = 0.0          # seconds spent importing numba and compiling / loading kernels
_skipping = None        # why the kernels are off for a short command (skipped_for_short_run)

# Importing numba and loading the kernels from numba's disk cache costs about 0.5-0.8 s in a
# fresh process (measured on the project machine) and saves about 10-30 ms per yolov3-tiny
# forward at 416x416: a command that runs fewer pictures than this is faster without them.
KERNELS_PAY_AFTER_IMAGES = 32


_lock = threading.Lock()


def _load():
    global _compiled, _reason
    if _compiled is not None:
        return _compiled
    with _lock:                     # threads of a parallel region may ask at the same time
        if _compiled is None:
            _compiled, _reason = _try_compile()
    return _compiled


def _try_compile():
    global _one_off
    if os.environ.get("MINIDARKNET_KERNELS", "").lower() == "numpy":
        return False, "off (MINIDARKNET_KERNELS=numpy)"
    start = time.perf_counter()
    try:
        import numba
    except ImportError:
        return False, "off (numba not installed: pip install 'minidarknet[fast]')"
    compiled = _compile(numba)
    _one_off += time.perf_counter() - start
    return compiled, f"numba {numba.__version__}"


def enabled():
    """True when the compiled kernels are in use."""
    return not _skipping and bool(_load())


def status():
    """One line: which kernels run (for `minidarknet info`)."""
    if _skipping:
        return _skipping
    _load()
    return _reason


@contextmanager
def skipped_for_short_run(images):
    """For the body, a command that runs `images` pictures: the kernels are off when loading
    them would cost more than they save (KERNELS_PAY_AFTER_IMAGES), unless they are loaded
    already, numba is imported already or MINIDARKNET_KERNELS asks for something.  The
    numbers are the same either way; status() says why they are off."""
    global _skipping
    previous = _skipping
    if _compiled is None and not os.environ.get("MINIDARKNET_KERNELS") and \
            "numba" not in sys.modules and images < KERNELS_PAY_AFTER_IMAGES:
        _skipping = (f"off for {images} picture{'s' if images > 1 else ''} (loading them "
                     f"takes longer than they save; MINIDARKNET_KERNELS=numba uses them)")
    try:
        yield
    finally:
        _skipping = previous


def one_off_seconds():
    """Seconds this process has spent importing numba and compiling or loading kernels."""
    return _one_off


class _Timed:
    """A compiled kernel whose first calls (numba compiles it or loads it from its disk cache
    for each new argument type) add their time to one_off_seconds()."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher

    def __call__(self, *args):
        known = len(self.dispatcher.overloads)
        start = time.perf_counter()
        result = self.dispatcher(*args)
        if len(self.dispatcher.overloads) > known:
            global _one_off
            _one_off += time.perf_counter() - start
        return result


def max_pool(x, out, size, stride_y, stride_x, top, c0, c1):
    """out[:, c0:c1] = Darknet's max over size x size windows of x (B, C, H, W), strides
    (y, x), window origin -top: cells outside x count as -FLT_MAX, NaN never wins (a strict
    `>` from -FLT_MAX, as maxpool_layer.c).  Requires enabled()."""
    compiled = _load()
    out_h, out_w = out.shape[2:]
    if (size, stride_y, stride_x, top) == (2, 2, 2, 0) and \
            2 * out_h <= x.shape[2] and 2 * out_w <= x.shape[3]:
        compiled.max_pool_2x2(x, out, c0, c1)        # the common case, ~3x faster
    else:
        compiled.max_pool(x, out, size, stride_y, stride_x, top, c0, c1)


def max_pool_argmax(x, out, arg, size, stride_y, stride_x, top, c0, c1):
    """Channels [c0, c1) of PoolOp.max_argmax: out = the maximum of each window (as
    max_pool) and arg = the row-major window offset of its FIRST maximum, -1 where no cell
    beats -FLT_MAX.  Requires enabled()."""
    compiled = _load()
    out_h, out_w = out.shape[2:]
    if (size, stride_y, stride_x, top) == (2, 2, 2, 0) and \
            2 * out_h <= x.shape[2] and 2 * out_w <= x.shape[3]:
        compiled.max_pool_argmax_2x2(x, out, arg, c0, c1)
    else:
        compiled.max_pool_argmax(x, out, arg, size, stride_y, stride_x, top, c0, c1)


def max_pool_backward(arg, dy, dx, scratch, size, stride_y, stride_x, top, c0, c1):
    """Channels [c0, c1) of PoolOp.max_backward: dx[argmax] += dy, with the numpy code's
    order of additions (offset by offset; through a zeroed padded plane when windows reach
    outside the input, `scratch` (hp, wp) per thread, else straight into dx), so the numbers
    are the same.  Requires enabled()."""
    _load().max_pool_backward(arg, dy, dx, scratch, size, stride_y, stride_x, top, c0, c1)


def winograd_input(x, v, c0, c1):
    """Input channels [c0, c1) of the Winograd F(2x2, 3x3) input transform: for every 4x4 tile
    d of x (B, C, H, W) zero-padded by 1 (and to whole tiles), V = B^T d B into v
    (16, B, C, tiles_h, tiles_w), the 16 values row-major.  Requires enabled()."""
    _load().winograd_input(x, v, c0, c1)


def winograd_output(m, out, f0, f1):
    """Filters [f0, f1) of the Winograd F(2x2, 3x3) output transform: Y = A^T M A of every
    tile M of m (16, B, n, tiles_h, tiles_w) into out (B, n, H, W) (tiles past an odd edge
    cropped).  Requires enabled()."""
    _load().winograd_output(m, out, f0, f1)


def conv_epilogue(product, scale, shift, slope, out, b0, f0, c0):
    """out[b0+b, f0+i, c0:c0+L] = act(product[b, i] * scale[f0+i] + shift[f0+i]) for product
    (nb, f, L), out (B, n, positions); act(v) = v if v > 0 else slope*v (leaky: 0.1, linear:
    1); an empty scale or shift is skipped.  One pass instead of numpy's two or three.
    Requires enabled()."""
    _load().conv_epilogue(product, scale, shift, slope, out, b0, f0, c0)


def _compile(numba):
    njit = numba.njit(nogil=True, cache=True)
    lowest = np.float32(-np.finfo(np.float32).max)

    @njit
    def max_pool(x, out, size, stride_y, stride_x, top, c0, c1):
        height, width = x.shape[2], x.shape[3]
        out_h, out_w = out.shape[2], out.shape[3]
        low = x.dtype.type(lowest)
        # Separable: the maxima of the window rows over every column the windows cover
        # (padded coordinates), then over each window's columns.
        span = (out_w - 1) * stride_x + size
        row_max = np.empty(span, x.dtype)
        first, stop = top, min(span, width + top)      # padded columns inside the image
        for b in range(x.shape[0]):
            for c in range(c0, c1):
                for i in range(out_h):
                    row_max[:] = low
                    for ky in range(size):
                        y = i * stride_y - top + ky
                        if 0 <= y < height:
                            row = x[b, c, y]
                            for j in range(first, stop):
                                v, r = row[j - top], row_max[j]
                                row_max[j] = v if v > r else r
                    o = out[b, c, i]
                    o[:] = low
                    for kx in range(size):
                        for j in range(out_w):
                            v, m = row_max[j * stride_x + kx], o[j]
                            o[j] = v if v > m else m

    @njit
    def max_pool_2x2(x, out, c0, c1):
        low = x.dtype.type(lowest)
        for b in range(x.shape[0]):
            for c in range(c0, c1):
                for i in range(out.shape[2]):
                    top_row, bottom_row, o = x[b, c, 2 * i], x[b, c, 2 * i + 1], out[b, c, i]
                    for j in range(out.shape[3]):
                        m = low
                        for v in (top_row[2 * j], top_row[2 * j + 1],
                                  bottom_row[2 * j], bottom_row[2 * j + 1]):
                            m = v if v > m else m
                        o[j] = m

    @njit
    def max_pool_argmax(x, out, arg, size, stride_y, stride_x, top, c0, c1):
        height, width = x.shape[2], x.shape[3]
        out_w = out.shape[3]
        low = x.dtype.type(lowest)
        # Window rows in order, and within each row the columns in order, over a whole
        # output row at a time (a strict `>` keeps the first maximum).
        for b in range(x.shape[0]):
            for c in range(c0, c1):
                for i in range(out.shape[2]):
                    best, where = out[b, c, i], arg[b, c, i]
                    best[:] = low
                    where[:] = -1
                    for ky in range(size):
                        y = i * stride_y - top + ky
                        if y < 0 or y >= height:
                            continue
                        row = x[b, c, y]
                        for kx in range(size):
                            o = ky * size + kx
                            for j in range(out_w):
                                xx = j * stride_x - top + kx
                                if 0 <= xx < width:
                                    v = row[xx]
                                    if v > best[j]:
                                        best[j] = v
                                        where[j] = o

    @njit
    def max_pool_argmax_2x2(x, out, arg, c0, c1):
        low = x.dtype.type(lowest)
        for b in range(x.shape[0]):
            for c in range(c0, c1):
                for i in range(out.shape[2]):
                    r0, r1 = x[b, c, 2 * i], x[b, c, 2 * i + 1]
                    best, where = out[b, c, i], arg[b, c, i]
                    for j in range(out.shape[3]):
                        m, w = low, -1
                        v = r0[2 * j]
                        if v > m:
                            m, w = v, 0
                        v = r0[2 * j + 1]
                        if v > m:
                            m, w = v, 1
                        v = r1[2 * j]
                        if v > m:
                            m, w = v, 2
                        v = r1[2 * j + 1]
                        if v > m:
                            m, w = v, 3
                        best[j] = m
                        where[j] = w

    @njit
    def max_pool_backward(arg, dy, dx, scratch, size, stride_y, stride_x, top, c0, c1):
        height, width = dx.shape[2], dx.shape[3]
        out_h, out_w = dy.shape[2], dy.shape[3]
        inside = scratch.size == 0
        if size == 2 and stride_y == 2 and stride_x == 2 and top == 0:
            # The common 2x2/2 pool, no divisions: row 2i + o // 2, column 2j + o % 2.
            for b in range(dy.shape[0]):
                for c in range(c0, c1):
                    for i in range(out_h):
                        d, a = dy[b, c, i], arg[b, c, i]
                        for j in range(out_w):
                            o = a[j]
                            if o >= 0:
                                dx[b, c, 2 * i + (o >> 1), 2 * j + (o & 1)] += d[j]
            return
        if stride_y >= size and stride_x >= size:
            # Windows do not overlap: every cell gets at most one delta, so adding straight
            # into dx in one pass gives the same numbers (the argmax is never a padding cell).
            for b in range(dy.shape[0]):
                for c in range(c0, c1):
                    for i in range(out_h):
                        for j in range(out_w):
                            o = arg[b, c, i, j]
                            if o >= 0:
                                dx[b, c, i * stride_y - top + o // size,
                                   j * stride_x - top + o % size] += dy[b, c, i, j]
            return
        for b in range(dy.shape[0]):
            for c in range(c0, c1):
                plane = dx[b, c] if inside else scratch
                if not inside:
                    plane[:, :] = 0
                for o in range(size * size):
                    ky, kx = o // size, o % size
                    for i in range(out_h):
                        for j in range(out_w):
                            if arg[b, c, i, j] == o:
                                plane[i * stride_y + ky, j * stride_x + kx] += dy[b, c, i, j]
                if not inside:
                    for y in range(height):
                        for xx in range(width):
                            dx[b, c, y, xx] += scratch[top + y, top + xx]

    @njit
    def winograd_input(x, v, c0, c1):
        height, width = x.shape[2], x.shape[3]
        tiles_h, tiles_w = v.shape[3], v.shape[4]
        padded_w = 2 * tiles_w + 2
        rows = np.zeros((4, padded_w), x.dtype)        # padded input rows 2ty-1 .. 2ty+2
        t = np.empty((4, padded_w), x.dtype)           # B^T along the rows
        for b in range(x.shape[0]):
            for c in range(c0, c1):
                for ty in range(tiles_h):
                    for i in range(4):
                        y = 2 * ty - 1 + i
                        r = rows[i]
                        r[:] = 0
                        if 0 <= y < height:
                            r[1:1 + width] = x[b, c, y]
                    for j in range(padded_w):
                        d0, d1, d2, d3 = rows[0, j], rows[1, j], rows[2, j], rows[3, j]
                        t[0, j], t[1, j], t[2, j], t[3, j] = d0 - d2, d1 + d2, d2 - d1, d1 - d3
                    for i in range(4):
                        ti = t[i]
                        o0, o1 = v[4 * i, b, c, ty], v[4 * i + 1, b, c, ty]
                        o2, o3 = v[4 * i + 2, b, c, ty], v[4 * i + 3, b, c, ty]
                        for tx in range(tiles_w):
                            d0, d1 = ti[2 * tx], ti[2 * tx + 1]
                            d2, d3 = ti[2 * tx + 2], ti[2 * tx + 3]
                            o0[tx], o1[tx], o2[tx], o3[tx] = d0 - d2, d1 + d2, d2 - d1, d1 - d3

    @njit
    def winograd_output(m, out, f0, f1):
        height, width = out.shape[2], out.shape[3]
        tiles_h, tiles_w = m.shape[3], m.shape[4]
        r = np.empty((2, 4, tiles_w), m.dtype)         # A^T along the tile rows
        half = width // 2
        for b in range(out.shape[0]):
            for f in range(f0, f1):
                for ty in range(tiles_h):
                    for j in range(4):
                        a0, a1 = m[j, b, f, ty], m[4 + j, b, f, ty]
                        a2, a3 = m[8 + j, b, f, ty], m[12 + j, b, f, ty]
                        r0, r1 = r[0, j], r[1, j]
                        for tx in range(tiles_w):
                            r0[tx] = a0[tx] + a1[tx] + a2[tx]
                            r1[tx] = a1[tx] - a2[tx] - a3[tx]
                    for i in range(min(2, height - 2 * ty)):
                        o = out[b, f, 2 * ty + i]
                        q0, q1, q2, q3 = r[i, 0], r[i, 1], r[i, 2], r[i, 3]
                        for tx in range(half):
                            o[2 * tx] = q0[tx] + q1[tx] + q2[tx]
                            o[2 * tx + 1] = q1[tx] - q2[tx] - q3[tx]
                        if width % 2:
                            o[width - 1] = q0[half] + q1[half] + q2[half]

    @njit
    def conv_epilogue(product, scale, shift, slope, out, b0, f0, c0):
        slope = product.dtype.type(slope)
        size = product.shape[2]
        for b in range(product.shape[0]):
            for i in range(product.shape[1]):
                src, dst = product[b, i], out[b0 + b, f0 + i, c0:c0 + size]
                if scale.size:
                    s = scale[f0 + i]
                    for j in range(size):
                        src[j] *= s
                if shift.size:
                    t = shift[f0 + i]
                    for j in range(size):
                        src[j] += t
                for j in range(size):
                    v = src[j]
                    dst[j] = v if v > 0 else slope * v

    class Compiled:
        pass

    compiled = Compiled()
    kernels = dict(max_pool=max_pool, max_pool_2x2=max_pool_2x2,
                   max_pool_argmax=max_pool_argmax, max_pool_argmax_2x2=max_pool_argmax_2x2,
                   max_pool_backward=max_pool_backward, winograd_input=winograd_input,
                   winograd_output=winograd_output, conv_epilogue=conv_epilogue)
    for name, kernel in kernels.items():
        setattr(compiled, name, _Timed(kernel))
    return compiled
