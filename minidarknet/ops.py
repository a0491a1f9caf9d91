"""Numeric kernels for the convolution family: im2col / col2im built from strided views, grouped
GEMMs, pooling windows and a few in-place helpers.

Every function works in the dtype of the arrays it is given (float32 in the network, float64 in
the gradient tests) and writes into caller-owned or cached buffers, so a forward pass allocates
nothing once the buffers exist.

Layout conventions (NCHW, as Darknet):
    input x        (B, C, H, W)
    weights        (n, C/groups, k, k)          viewed as (groups, n/groups, kdim)
    columns        (B, C, k, k, rows, out_w)    viewed as (B, groups, kdim, rows*out_w)
with kdim = (C/groups)*k*k, so one np.matmul call multiplies every group of every sample.
"""
import ctypes

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import kernels, parallel

NEG_FLT_MAX = np.float32(-np.finfo(np.float32).max)

# Column matrices are built in chunks of output rows so that each chunk (and the GEMM reading
# it) stays in the L2 cache; a chunk keeps at least MIN_CHUNK_COLS columns so that the GEMM
# stays efficient on small feature maps.  Measured on the project machine (1 BLAS thread, CPU
# time): 2 MiB chunks make the 416x416 / 208x208 / 104x104 / 52x52 layers of yolov3-tiny
# about 1.5x / 1.2x / 1.05x / 1.1x faster than one whole column matrix, and beat 0.25-1 MiB;
# below ~1000 columns the GEMM loses more than the cache gains (13x13 and 26x26 layers).
CHUNK_BYTES = 2 << 20
MIN_CHUNK_COLS = 1024


# Work is split over the threads of a parallel region (parallel.py) only when it is large
# enough: handing work to a pool thread and waiting for it costs ~70-150 us on the project
# machine (a KVM guest, where waking a thread is slow).  Element-wise work: arrays of at least
# PARALLEL_MIN_BYTES; convolutions: at least PARALLEL_MIN_FLOPS multiply-adds x 2 (~0.3 ms
# on one core).
PARALLEL_MIN_BYTES = 2 << 20
PARALLEL_MIN_FLOPS = 30e6

# The backward pass multiplies all the samples a thread handles at once while their column
# matrix stays below this size (one weight-gradient product with a long inner dimension
# instead of one per sample); larger maps go by the forward's cache-sized chunks.
BACKWARD_CHUNK_BYTES = 24 << 20


def split_channels(work, channels, nbytes):
    """work(c0, c1) over [0, channels), in parallel slices inside a parallel region when the
    data is large enough."""
    threads = parallel.workers() if nbytes >= PARALLEL_MIN_BYTES else 1
    parallel.run([lambda a=a, b=b: work(a, b) for a, b in parallel.bounds(channels, threads)])


def c_div(a, b):
    """C integer division (truncates toward zero, unlike Python's //)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def aligned_empty(shape, dtype, align=64):
    """np.empty starting on a cache-line boundary, so that threads writing neighbouring
    blocks of a scratch buffer (multiples of 16 values) never share a cache line."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


class Scratch:
    """Named buffers allocated on first use and reused while shape and dtype stay the same."""

    def __init__(self):
        self._buffers = {}

    def get(self, name, shape, dtype, fill=None):
        shape = tuple(int(s) for s in shape)
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = aligned_empty(shape, dtype)
            if fill is not None:
                buf.fill(fill)
            self._buffers[name] = buf
        return buf

    def clear(self):
        self._buffers.clear()


def window_view(xp, k, stride_y, stride_x, dilation, rows, cols, row0=0, writeable=False):
    """A (..., C, k, k, rows, cols) strided view of xp (..., C, Hp, Wp):
    element [..., c, ky, kx, oy, ox] is xp[..., c, (row0 + oy)*stride_y + ky*dilation,
    ox*stride_x + kx*dilation].  No copy; the caller guarantees the windows fit in xp."""
    *lead, row_stride, col_stride = xp.strides
    base = xp[..., row0 * stride_y:, :]
    shape = xp.shape[:-2] + (k, k, rows, cols)
    strides = tuple(lead) + (row_stride * dilation, col_stride * dilation,
                             row_stride * stride_y, col_stride * stride_x)
    return as_strided(base, shape, strides, writeable=writeable)


def im2col(xp, col, k, stride_y, stride_x, dilation, row0=0):
    """Copy the windows of padded input xp (B, C, Hp, Wp) into col (B, C, k, k, rows, cols).
    One 6-d copy: faster than one copy per kernel offset with numpy 2 (measured 1.2-1.4x on
    the yolov3-tiny shapes), and a single call lets threads run it without GIL hand-offs."""
    rows, cols = col.shape[-2:]
    np.copyto(col, window_view(xp, k, stride_y, stride_x, dilation, rows, cols, row0))


def col2im_add(col, xp, k, stride_y, stride_x, dilation, row0=0):
    """Adjoint of im2col: add col (B, C, k, k, rows, cols) into padded xp (B, C, Hp, Wp).
    Positions of one kernel offset never overlap, so each offset is one strided add."""
    rows, cols = col.shape[-2:]
    view = window_view(xp, k, stride_y, stride_x, dilation, rows, cols, row0, writeable=True)
    for ky in range(k):
        for kx in range(k):
            target = view[..., ky, kx, :, :]
            np.add(target, col[..., ky, kx, :, :], out=target)


class ConvOp:
    """Grouped 2-d cross-correlation with zero padding, stride (y, x) and dilation, as
    Darknet's im2col + GEMM computes it (no kernel flip).  Holds the geometry and the
    scratch buffers; forward / backward read and write caller-owned arrays.

    `pad` is the number of zero pixels on every side (already multiplied by the dilation,
    as AlexeyAB passes it to im2col_cpu_ext)."""

    def __init__(self, c, h, w, n, k, stride_y, stride_x, pad, dilation, groups, out_h, out_w):
        self.c, self.h, self.w, self.n, self.k = c, h, w, n, k
        self.stride_y, self.stride_x, self.pad, self.dilation = stride_y, stride_x, pad, dilation
        self.groups = groups
        self.out_h, self.out_w = out_h, out_w
        self.cg, self.m = c // groups, n // groups
        self.kdim = self.cg * k * k
        self.spatial = out_h * out_w
        # A 1x1 stride-1 unpadded convolution is a plain matrix product with the input.
        self.direct = (k == 1 and stride_y == 1 and stride_x == 1 and pad == 0
                       and out_h == h and out_w == w)
        self.scratch = Scratch()
        self._plans = {}
        # Darknet's im2col reads zeros wherever a window leaves the image, also past the
        # bottom/right padding (e.g. height 2, size 3, stride 2, pad 0 gives one output row):
        # pad the far sides as far as the windows reach.
        reach_y = (out_h - 1) * stride_y + (k - 1) * dilation + 1
        reach_x = (out_w - 1) * stride_x + (k - 1) * dilation + 1
        self.padded_h = max(h + 2 * pad, reach_y)
        self.padded_w = max(w + 2 * pad, reach_x)
        self.needs_padding = (self.padded_h, self.padded_w) != (h, w)

    # ------------------------------------------------------------------ helpers
    def weights3(self, weights):
        return weights.reshape(self.groups, self.m, self.kdim)

    def _padded(self, x, name="xp"):
        """x itself when there is no padding, else a cached zero-bordered copy."""
        if not self.needs_padding:
            return x
        xp = self._padded_buffer(x.shape[0], x.dtype, name, fill=0)
        self._inside(xp)[...] = x
        return xp

    def _padded_buffer(self, batch, dtype, name, fill=None):
        return self.scratch.get(name, (batch, self.c, self.padded_h, self.padded_w), dtype,
                                fill=fill)

    def _inside(self, xp):
        """The image part of a padded buffer."""
        p = self.pad
        return xp[:, :, p:p + self.h, p:p + self.w]

    def chunks(self, batch, itemsize, parts=1):
        """(b0, b1, r0, r1): samples [b0, b1) and output rows [r0, r1) per column chunk; with
        parts > 1 the count is a multiple of `parts` (unless everything fits one chunk), so
        that `parts` threads get equal shares."""
        key = (batch, itemsize, parts)
        if key not in self._plans:
            self._plans[key] = self._plan(batch, itemsize, parts)
        return self._plans[key]

    def _plan(self, batch, itemsize, parts):
        row_bytes = self.kdim * self.out_w * itemsize
        sample_bytes = row_bytes * self.out_h
        if sample_bytes <= CHUNK_BYTES or self.spatial <= MIN_CHUNK_COLS:
            per = max(1, CHUNK_BYTES // max(sample_bytes, 1))
            count = -(-batch // per)
            if count > 1:
                count = min(batch, -(-count // parts) * parts)
            return [(b0, b1, 0, self.out_h) for b0, b1 in parallel.bounds(batch, count)]
        rows = max(CHUNK_BYTES // row_bytes, -(-MIN_CHUNK_COLS // self.out_w), 1)
        per_sample = -(-self.out_h // min(rows, self.out_h))
        while (batch * per_sample) % parts and per_sample < self.out_h:
            per_sample += 1
        return [(b, b + 1, r0, r1) for b in range(batch)
                for r0, r1 in parallel.bounds(self.out_h, per_sample)]

    def chunk_extents(self, plan):
        """(samples, output rows, input rows) of the largest chunks of a plan: what the
        per-chunk buffers must hold."""
        return (max(b1 - b0 for b0, b1, _, _ in plan), max(r1 - r0 for _, _, r0, r1 in plan),
                max(self._strip_rows(r0, r1)[1] for _, _, r0, r1 in plan))

    def largest_chunk(self, batch, itemsize, parts=1):
        """Samples x output rows of the largest chunk (what the chunk buffers must hold)."""
        return max((b1 - b0) * (r1 - r0)
                   for b0, b1, r0, r1 in self.chunks(batch, itemsize, parts))

    def _chunk_buffer(self, name, per_row, shape, dtype, most):
        flat = self.scratch.get(name, (most * per_row,), dtype)
        return flat[:int(np.prod(shape))].reshape(shape)

    # ------------------------------------------------------------------ forward
    def forward(self, x, weights, out, epilogue=None, threads=1, bias=None):
        """out (B, n, out_h, out_w) = conv(x, weights) (+ bias), split over `threads` threads.

        Without `epilogue` the result is written into `out`.  With it, each piece of the
        product goes to a contiguous scratch buffer and epilogue(product, region, worker) must
        write the final values of region = (b0, b1, f0, f1, c0, c1) -- samples, output
        channels, flat output positions -- into `out` while they are in cache (batch norm,
        activation); product is (b1-b0, f1-f0, c1-c0) and may be overwritten.  `worker` is
        the index of the calling thread.  `bias` (n values), if given, is in the product:
        for row chunks it is one more weight column against a row of ones in the column
        matrix, which saves the GEMM output a pass.

        The pieces are the column chunks (each thread pads, builds and multiplies its own)
        when there are at least `threads` of them, else blocks of filters sharing one chunk."""
        batch, dtype = x.shape[0], x.dtype
        if self.flops(batch) < PARALLEL_MIN_FLOPS:
            threads = 1
        out4 = out.reshape(batch, self.groups, self.m, self.spatial)
        plan = self.chunks(batch, dtype.itemsize, threads)
        most = self.largest_chunk(batch, dtype.itemsize, threads)
        if threads > 1 and len(plan) < threads and self.groups == 1 and self.n >= 2 * threads:
            xp = self._padded(x)
            for chunk in plan:
                self._filter_blocks(xp, self.weights3(weights), out4, chunk, epilogue, threads,
                                    most, bias)
            return out
        ones = bias is not None and not self.direct and self.groups == 1
        w3 = self._weights_and_bias(weights, bias) if ones else self.weights3(weights)
        extra_bias = None if ones else bias

        extents = self.chunk_extents(plan)

        def rows_of(worker, share):
            for chunk in share:
                col4 = self._chunk_columns(x, extents, chunk, most, worker, ones)
                self._multiply(w3, col4, out4, chunk, (0, self.n), epilogue, worker, most,
                               extra_bias)

        shares = [plan[a:b] for a, b in parallel.bounds(len(plan), threads)]
        parallel.run([lambda w=w, s=s: rows_of(w, s) for w, s in enumerate(shares)])
        return out

    def flops(self, batch):
        return 2.0 * batch * self.n * self.kdim * self.spatial

    def _weights_and_bias(self, weights, bias):
        """(1, n, 1 + kdim): the bias, then the weights of each filter."""
        wb = self.scratch.get("weights_bias", (1, self.n, 1 + self.kdim), weights.dtype)
        wb[0, :, 0] = bias
        wb[0, :, 1:] = weights.reshape(self.n, self.kdim)
        return wb

    def _chunk_columns(self, x, extents, chunk, most, worker, ones):
        """The column matrix of a chunk, (nb, groups, [1 +] kdim, positions): a view of the
        input for direct 1x1 convolutions, else built by im2col in the worker's buffer from
        the chunk's padded input rows (with a first row of ones if `ones`)."""
        if self.direct:
            return self._direct_columns(x, chunk)
        b0, b1, r0, r1 = chunk
        nb, rows = b1 - b0, r1 - r0
        most_nb, most_rows, _ = extents
        cols = rows * self.out_w
        if ones:
            # Allocated as ones; im2col never writes row 0, so it stays ones.  The row
            # stride is fixed (the largest chunk's) so that smaller chunks keep it in place;
            # im2col's target is a view of the other rows.
            buf = self.scratch.get(f"col_ones{worker}",
                                   (most_nb, 1 + self.kdim, most_rows * self.out_w), x.dtype,
                                   fill=1)
            matrix = buf[:nb, :, :cols]
            target = matrix[:, 1:].reshape(nb, self.c, self.k, self.k, rows, self.out_w)
            columns = matrix.reshape(nb, 1, 1 + self.kdim, cols)
        else:
            target = self._col_buffer(chunk, x.dtype, most, worker)
            columns = self._col4(target)
        source, row0 = self._input_rows(x, extents, chunk, worker)
        im2col(source, target, self.k, self.stride_y, self.stride_x, self.dilation, row0)
        return columns

    def _direct_columns(self, x, chunk):
        """A direct 1x1 convolution's column matrix of a chunk: a view of the input."""
        b0, b1, r0, r1 = chunk
        flat = x.reshape(x.shape[0], self.groups, self.cg, self.spatial)
        return flat[b0:b1, :, :, r0 * self.out_w:r1 * self.out_w]

    def _input_rows(self, x, extents, chunk, worker, name="strip"):
        """(padded input holding the chunk's windows, index of the chunk's first output row
        in it): x itself without padding, else the rows the chunk reads, copied into the
        worker's zero-bordered strip."""
        b0, b1, r0, r1 = chunk
        if not self.needs_padding:
            return x[b0:b1], r0
        first, height = self._strip_rows(r0, r1)
        most_nb, _, tallest = extents
        strip = self.scratch.get(f"{name}{worker}", (most_nb, self.c, tallest, self.padded_w),
                                 x.dtype, fill=0)[:b1 - b0, :, :height]
        inside = strip[:, :, :, self.pad:self.pad + self.w]   # the other columns stay 0
        lo, hi = max(0, first), min(self.h, first + height)
        inside[:, :, :lo - first] = 0                        # rows above the image
        inside[:, :, hi - first:] = 0                        # rows below it
        inside[:, :, lo - first:hi - first] = x[b0:b1, :, lo:hi]
        return strip, 0

    def _strip_rows(self, r0, r1):
        """(first input row, number of rows) that output rows [r0, r1) read."""
        first = r0 * self.stride_y - self.pad
        last = (r1 - 1) * self.stride_y - self.pad + (self.k - 1) * self.dilation
        return first, last - first + 1

    def _col_buffer(self, chunk, dtype, most, worker):
        b0, b1, r0, r1 = chunk
        return self._chunk_buffer(f"col{worker}", self.c * self.k * self.k * self.out_w,
                                  (b1 - b0, self.c, self.k, self.k, r1 - r0, self.out_w),
                                  dtype, most)

    def _col4(self, col):
        nb, rows = col.shape[0], col.shape[-2]
        return col.reshape(nb, self.groups, self.kdim, rows * self.out_w)

    def _im2col(self, xp, col, chunk, channels):
        b0, b1, r0, _ = chunk
        c0, c1 = channels
        im2col(xp[b0:b1, c0:c1], col[:, c0:c1], self.k, self.stride_y, self.stride_x,
               self.dilation, r0)

    def _multiply(self, w3, col4, out4, chunk, filters, epilogue, worker, most, bias):
        """Filters [f0, f1) of a chunk: the product (+ bias) into `out`, or through the
        epilogue."""
        b0, b1, r0, r1 = chunk
        f0, f1 = filters
        c0, c1 = r0 * self.out_w, r1 * self.out_w
        bias3 = None if bias is None else bias.reshape(self.groups, self.m, 1)[:, f0:f1]
        if epilogue is None:
            target = out4[b0:b1, :, f0:f1, c0:c1]
            np.matmul(w3[:, f0:f1], col4, out=target)
            if bias3 is not None:
                target += bias3
            return
        # A contiguous product buffer: writing the GEMM result straight into the strided
        # output region is slower when the row stride is a multiple of 4 KiB (416x416).
        nb = b1 - b0
        product = self._chunk_buffer(f"product{worker}", self.n * self.out_w,
                                     (nb, self.groups, f1 - f0 if self.groups == 1 else self.m,
                                      c1 - c0), out4.dtype, most)
        np.matmul(w3[:, f0:f1], col4, out=product)
        if bias3 is not None:
            product += bias3
        epilogue(product.reshape(nb, -1, c1 - c0), (b0, b1, f0, f1, c0, c1), worker)

    def _filter_blocks(self, xp, w3, out4, chunk, epilogue, threads, most, bias):
        """One chunk, shared by `threads` threads: im2col split by input channels, then the
        product (and epilogue) split by blocks of filters."""
        if self.direct:
            col4 = self._direct_columns(xp, chunk)
        else:
            col = self._col_buffer(chunk, xp.dtype, most, 0)
            parallel.run([lambda cb=cb: self._im2col(xp, col, chunk, cb)
                          for cb in parallel.bounds(self.c, threads)])
            col4 = self._col4(col)
        blocks = parallel.bounds(self.n, threads, align=16)
        parallel.run([lambda w=w, fb=fb: self._multiply(w3, col4, out4, chunk, fb, epilogue,
                                                        w, most, bias)
                      for w, fb in enumerate(blocks)])

    # ------------------------------------------------------------------ backward
    def backward(self, x, dy, weights, weight_updates, dx, overwrite=False, threads=1):
        """Accumulate the products of a backward pass, split over `threads` threads.

        weight_updates += dy . columns(x)^T    (skipped when weight_updates is None)
        dx            += col2im(W^T . dy)      (skipped when dx is None; with overwrite=True,
                                                allowed only for direct 1x1 convolutions,
                                                dx is replaced instead: Darknet's gemm beta=0)

        The work is cut into chunks of whole samples (or of output rows on large maps, as
        the forward) and each thread takes a contiguous share of them, with its own column,
        padded-input and product buffers.  Each chunk's weight gradient is ONE product over
        all of its samples (its columns side by side), not one per sample.  Thread 0
        accumulates into weight_updates directly, the others into private sums that are
        added afterwards in thread order: the result is deterministic for a given thread
        count.  dx: threads own disjoint samples of it, unless a sample's rows are shared
        (batch smaller than the threads), when the later threads write into private
        zeroed copies added afterwards in thread order.  With threads=1 this is one
        serial pass."""
        if overwrite and not self.direct:
            raise ValueError("overwrite applies only to direct 1x1 convolutions")
        if weight_updates is None and dx is None:
            return
        batch, dtype = dy.shape[0], dy.dtype
        if self.flops(batch) < PARALLEL_MIN_FLOPS:
            threads = 1
        plan = self._backward_plan(batch, dtype.itemsize, threads)
        shares = [plan[a:b] for a, b in parallel.bounds(len(plan), threads)]
        samples = [{b for b0, b1, _, _ in share for b in range(b0, b1)} for share in shares]
        shared_samples = any(samples[i] & samples[j] for i in range(len(shares))
                             for j in range(i))
        w3 = self.weights3(weights)
        wu3 = None if weight_updates is None else weight_updates.reshape(w3.shape)
        sums = [wu3] + [None if wu3 is None else self.scratch.get(f"wsum{w}", w3.shape, dtype)
                        for w in range(1, len(shares))]
        padded = dx is not None and self.needs_padding and not self.direct
        base = self._padded_buffer(batch, dtype, "dxp") if padded else dx
        private = dx is not None and shared_samples and not (self.direct and overwrite)
        if private:
            targets = [base] + [self.scratch.get(f"dxpart{w}", base.shape, dtype)
                                for w in range(1, len(shares))]
            for target in targets[int(not padded):]:
                target.fill(0)
        else:
            targets = [base] * len(shares)
        extents = self.chunk_extents(plan)

        def work(worker, share):
            lo, hi = min(samples[worker]), max(samples[worker]) + 1
            if padded and not private:
                base[lo:hi].fill(0)            # this thread's samples only
            for i, chunk in enumerate(share):
                self._backward_chunk(x, dy, w3, sums[worker], i == 0 and worker > 0,
                                     targets[worker], overwrite, chunk, extents, worker)
            if padded and not private:
                dx[lo:hi] += self._inside(base[lo:hi])

        parallel.run([lambda w=w, s=s: work(w, s) for w, s in enumerate(shares)])
        # Fixed-order reductions of the private parts (thread 1, 2, ...).
        for part in sums[1:] if wu3 is not None else ():
            wu3 += part
        if private:
            for part in targets[1:]:
                base += part
            if padded:
                dx += self._inside(base)

    def _backward_plan(self, batch, itemsize, threads):
        """Chunks of the backward pass: whole samples split evenly over the threads when each
        thread's columns stay under BACKWARD_CHUNK_BYTES (one weight-gradient product per
        thread), else the forward's chunks."""
        key = ("backward", batch, itemsize, threads)
        if key not in self._plans:
            per_thread = -(-batch // max(threads, 1))
            columns = self.c * self.k * self.k * self.spatial * itemsize * per_thread
            if columns <= BACKWARD_CHUNK_BYTES:
                plan = [(b0, b1, 0, self.out_h) for b0, b1 in parallel.bounds(batch, threads)]
            else:
                plan = self._plan(batch, itemsize, threads)
            self._plans[key] = plan
        return self._plans[key]

    def _backward_chunk(self, x, dy, w3, wsum, fresh, target, overwrite, chunk, extents,
                        worker):
        """One chunk of the backward pass: wsum += dy . columns^T (wsum = ... when `fresh`),
        target += col2im(W^T dy) (or the 1x1 product into target).  The chunk's columns are
        laid out (C, k, k, samples, rows, out_w), so that all its samples make one matrix
        (groups, kdim, L) and the weight gradient is one product."""
        b0, b1, r0, r1 = chunk
        nb, rows = b1 - b0, r1 - r0
        cols = rows * self.out_w
        length = nb * cols
        dtype = dy.dtype
        most_nb, most_rows, _ = extents
        capacity = most_nb * most_rows * self.out_w
        dy4 = dy.reshape(dy.shape[0], self.groups, self.m, self.spatial)
        dyc = dy4[b0:b1, :, :, r0 * self.out_w:r1 * self.out_w]
        if nb == 1:
            dyg = dyc[0]
        else:
            dyg = self._chunk_buffer(f"bdy{worker}", self.n, (self.groups, self.m, nb, cols),
                                     dtype, capacity)
            np.copyto(dyg, dyc.transpose(1, 2, 0, 3))
            dyg = dyg.reshape(self.groups, self.m, length)
        # The chunk's columns, (groups, kdim, L).
        colg = self._chunk_buffer(f"bcol{worker}", self.c * self.k * self.k,
                                  (self.c, self.k, self.k, nb, rows, self.out_w), dtype,
                                  capacity)
        if wsum is not None:
            if self.direct:
                source = x.reshape(x.shape[0], self.c, self.spatial)[
                    b0:b1, :, r0 * self.out_w:r1 * self.out_w]
                np.copyto(colg.reshape(self.c, nb, cols), source.transpose(1, 0, 2))
            else:
                source, row0 = self._input_rows(x, extents, chunk, worker, name="bstrip")
                im2col(source, colg.transpose(3, 0, 1, 2, 4, 5), self.k, self.stride_y,
                       self.stride_x, self.dilation, row0)
            matrix = colg.reshape(self.groups, self.kdim, length).transpose(0, 2, 1)
            # A private sum starts as its first product; the others are added to it.
            product = np.matmul(dyg, matrix, out=wsum if fresh else
                                self.scratch.get(f"wprod{worker}", wsum.shape, dtype))
            if not fresh:
                wsum += product
        if target is None:
            return
        # The column gradient W^T . dy, in the same buffer.
        w3t = w3.transpose(0, 2, 1)
        dcol = colg.reshape(self.groups, self.kdim, length)
        np.matmul(w3t, dyg, out=dcol)
        if self.direct:
            dx3 = target.reshape(target.shape[0], self.c, self.spatial)[
                b0:b1, :, r0 * self.out_w:r1 * self.out_w]
            grad = dcol.reshape(self.c, nb, cols).transpose(1, 0, 2)
            if overwrite:
                np.copyto(dx3, grad)
            else:
                np.add(dx3, grad, out=dx3)
            return
        col2im_add(colg.transpose(3, 0, 1, 2, 4, 5), target[b0:b1], self.k, self.stride_y,
                   self.stride_x, self.dilation, r0)

    # ------------------------------------------------------------------ whole column matrices
    def columns(self, x):
        """All columns of x at once: (B, C, k, k, out_h, out_w) (a cached buffer)."""
        batch = x.shape[0]
        col = self.scratch.get("allcol", (batch, self.c, self.k, self.k, self.out_h,
                                          self.out_w), x.dtype)
        im2col(self._padded(x), col, self.k, self.stride_y, self.stride_x, self.dilation)
        return col

    def add_columns(self, col, dx):
        """dx (B, C, H, W) += col2im(col) for col (B, C, k, k, out_h, out_w)."""
        if not self.needs_padding:
            col2im_add(col, dx, self.k, self.stride_y, self.stride_x, self.dilation)
            return
        dxp = self._padded_buffer(dx.shape[0], dx.dtype, "dxp")
        dxp.fill(0)
        col2im_add(col, dxp, self.k, self.stride_y, self.stride_x, self.dilation)
        dx += self._inside(dxp)


# ---------------------------------------------------------------------- Winograd F(2x2, 3x3)
# Output tile 2x2 from input tile 4x4: Y = A^T [ (G g G^T) * (B^T d B) ] A (Lavin & Gray).
# The weight transform G g G^T of all filters is one product with the 16 x 9 matrix
# kron(G, G); the input and output transforms are a few adds over strided views.
WINOGRAD_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
WINOGRAD_KRON = np.einsum("ia,jb->ijab", WINOGRAD_G, WINOGRAD_G).reshape(16, 9)

# Used only where it measured faster than im2col + GEMM (yolov3-tiny shapes, 1 and 2 threads,
# including the cache check): 64+ input channels on 26x26 to 52x52 maps (layer 6/8/21: 1.1x /
# 1.25x / 1.5x on 1 thread, 1.0x / 1.13x / 1.14x on 2), and on 13x13 maps only with the
# compiled transforms (kernels.py; layers 10/12/14 about 1.15-1.35x on 2 threads), the numpy
# ones being too slow there.  With fewer channels (the 416..104 layers: 0.67x) the
# transforms cost more than the GEMM saves.
WINOGRAD_MIN_CHANNELS = 64
WINOGRAD_MIN_SPATIAL = 13 * 13
WINOGRAD_MIN_SPATIAL_NUMPY = 20 * 20
WINOGRAD_MAX_SPATIAL = 52 * 52


def winograd_applies(c, h, w, n, k, stride_y, stride_x, pad, dilation, groups):
    """True for the 3x3 / stride 1 / padding 1 / ungrouped convolutions worth Winograd."""
    return (k == 3 and stride_y == 1 and stride_x == 1 and pad == 1 and dilation == 1
            and groups == 1 and c >= WINOGRAD_MIN_CHANNELS
            and WINOGRAD_MIN_SPATIAL <= h * w <= WINOGRAD_MAX_SPATIAL)


def same_bits(a, b):
    """Bitwise equality of two arrays (also tells -0.0 from 0.0 and NaN payloads apart)."""
    if b is None or a.shape != b.shape or a.dtype != b.dtype:
        return False
    if _memcmp is not None and a.flags.c_contiguous and b.flags.c_contiguous:
        # One pass at memory speed, no temporary: 2x faster than comparing uint views
        # (measured 0.95 against 1.85 ms for the 1024 x 512 x 3 x 3 weights of yolov3-tiny).
        return _memcmp(a.ctypes.data, b.ctypes.data, a.nbytes) == 0
    uint = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(np.ascontiguousarray(a).view(uint), b.view(uint)))


def _libc_memcmp():
    try:
        function = ctypes.CDLL(None).memcmp      # POSIX: the C library of this process
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_int
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return function


_memcmp = _libc_memcmp()


class WinogradConv:
    """Inference forward of a 3x3, stride 1, padding 1, ungrouped convolution by Winograd
    F(2x2, 3x3): 16 GEMMs (n x C) @ (C x tiles), tiles = batch * ceil(h/2) * ceil(w/2).

    The transformed weights are cached.  The cache can never be stale: it keeps a private copy
    of the raw weights it was built from and, before every use, compares it bit for bit with
    the weights it is given (same_bits: memcmp, split over the threads), rebuilding on any
    difference.  So update(), load_weights, share_index, and users writing into
    layer.weights[...] in place all take effect at the next forward.  The comparison reads
    the weights twice (measured ~1 ms on one thread for 1024 x 512 x 3 x 3 on the project
    machine; included in the timings that chose WINOGRAD_*), and the cache holds a copy of
    the weights plus 16/9 of them.  Batch-norm scales are not folded into the weights here:
    the caller applies them to the output."""

    def __init__(self, c, h, w, n):
        self.c, self.h, self.w, self.n = c, h, w, n
        self.tiles_h, self.tiles_w = -(-h // 2), -(-w // 2)
        # Small maps pay off only with the compiled transforms (WINOGRAD_* above).
        self.needs_kernels = h * w < WINOGRAD_MIN_SPATIAL_NUMPY
        self.scratch = Scratch()
        self._source = None            # private copy of the raw weights behind _transformed
        self._transformed = None       # (16, n, C)

    def transformed_weights(self, weights, checked=False):
        """U = G g G^T of every filter, (16, n, C), from the cache when `weights` are bit for
        bit those it was built from (`checked`: the caller has compared them already)."""
        if not checked and not self.cache_matches(weights, (0, weights.size)):
            self._source = None
        if self._source is None:
            self._source = np.array(weights, copy=True, order="C")
            kron = WINOGRAD_KRON.astype(weights.dtype)
            flat = self._source.reshape(self.n * self.c, 9)
            self._transformed = np.matmul(kron, flat.T).reshape(16, self.n, self.c)
        return self._transformed

    def cache_matches(self, weights, span):
        """True when the flat values [a, b) of weights equal the cached copy bit for bit."""
        source = self._source
        if source is None or source.shape != weights.shape or source.dtype != weights.dtype:
            return False
        a, b = span
        return same_bits(weights.reshape(-1)[a:b], source.reshape(-1)[a:b])

    def _input_tiles(self, x, xp, t, v, channels):
        """V = B^T d B for every 4x4 input tile d of input channels [c0, c1), into v
        (4, 4, B, C, tiles_h, tiles_w); xp and t are scratch (padded input, row transform)."""
        c0, c1 = channels
        th, tw = self.tiles_h, self.tiles_w
        # Zero border: 1 pixel top/left (padding 1), enough bottom/right for whole tiles.
        xp = xp[:, c0:c1]
        xp[:, :, 1:1 + self.h, 1:1 + self.w] = x[:, c0:c1]
        t = t[:, :, c0:c1]
        v = v[:, :, :, c0:c1]
        self._bt([xp[:, :, i:i + 2 * th:2, :] for i in range(4)], t[0], t[1], t[2], t[3])
        self._bt([t[..., j:j + 2 * tw:2] for j in range(4)], v[:, 0], v[:, 1], v[:, 2], v[:, 3])

    @staticmethod
    def _bt(d, o0, o1, o2, o3):
        """B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]] along one axis."""
        np.subtract(d[0], d[2], out=o0)
        np.add(d[1], d[2], out=o1)
        np.subtract(d[2], d[1], out=o2)
        np.subtract(d[1], d[3], out=o3)

    def forward(self, x, weights, out, epilogue=None, threads=1):
        """out (B, n, h, w) = conv(x, weights), as ConvOp.forward: the input transform split
        over `threads` threads by input channels, the products and the output transform by
        blocks of filters; with `epilogue`, it is called once per block of filters with the
        region (0, B, f0, f1, 0, h*w)."""
        batch, dtype = x.shape[0], x.dtype
        th, tw = self.tiles_h, self.tiles_w
        v = self.scratch.get("tiles", (4, 4, batch, self.c, th, tw), dtype)
        xp = t = None
        if not kernels.enabled():
            xp = self.scratch.get("xp", (batch, self.c, 2 * th + 2, 2 * tw + 2), dtype, fill=0)
            t = self.scratch.get("rows", (4, batch, self.c, th, 2 * tw + 2), dtype)
        # Each thread transforms some input channels and checks part of the weight cache.
        channel_blocks = parallel.bounds(self.c, threads)
        spans = parallel.bounds(weights.size, len(channel_blocks))
        matches = [False] * len(spans)

        def prepare(i):
            if kernels.enabled():
                kernels.winograd_input(x, v.reshape(16, batch, self.c, th, tw),
                                       *channel_blocks[i])
            else:
                self._input_tiles(x, xp, t, v, channel_blocks[i])
            matches[i] = self.cache_matches(weights, spans[i])

        parallel.run([lambda i=i: prepare(i) for i in range(len(spans))])
        if not all(matches):
            self._source = None
        u = self.transformed_weights(weights, checked=True)
        v = v.reshape(16, batch, self.c, th * tw)
        m = self.scratch.get("m", (16, batch, self.n, th * tw), dtype)
        s = None if kernels.enabled() else self.scratch.get(
            "half", (2, 4, batch, self.n, th, tw), dtype)
        target = out if epilogue is None else self.scratch.get(
            "product", (batch, self.n, self.h, self.w), dtype)

        def filters(worker, f0, f1):
            np.matmul(u[:, None, f0:f1], v, out=m[:, :, f0:f1])
            if kernels.enabled():
                kernels.winograd_output(m.reshape(16, batch, self.n, th, tw), target, f0, f1)
            else:
                self._output_tiles(m.reshape(4, 4, batch, self.n, th, tw)[:, :, :, f0:f1],
                                   s[:, :, :, f0:f1], target[:, f0:f1])
            if epilogue is not None:
                product = target[:, f0:f1].reshape(batch, f1 - f0, self.h * self.w)
                epilogue(product, (0, batch, f0, f1, 0, self.h * self.w), worker)

        parallel.run([lambda w=w, fb=fb: filters(w, *fb)
                      for w, fb in enumerate(parallel.bounds(self.n, threads, align=16))])
        return out

    def _output_tiles(self, m, s, target):
        """Y = A^T M A for every tile: A^T = [[1,1,1,0],[0,1,-1,-1]] along the first tile
        axis into s, then along the second, writing each of the 4 output phases straight
        into its strided place in target."""
        np.add(m[0], m[1], out=s[0])
        s[0] += m[2]
        np.subtract(m[1], m[2], out=s[1])
        s[1] -= m[3]
        for i in range(2):
            rows = (self.h - i + 1) // 2
            for j in range(2):
                cols = (self.w - j + 1) // 2
                dst = target[:, :, i::2, j::2]
                a = s[i, :, :, :, :rows, :cols]
                if j == 0:
                    np.add(a[0], a[1], out=dst)
                    dst += a[2]
                else:
                    np.subtract(a[1], a[2], out=dst)
                    dst -= a[3]


class PoolOp:
    """Darknet's pooling windows: `size` x `size`, strides (y, x), `pad` TOTAL padding with the
    window origin at -(pad/2) (so odd padding goes to the bottom/right), as maxpool_layer.c."""

    def __init__(self, c, h, w, size, stride_y, stride_x, pad, out_h, out_w):
        self.c, self.h, self.w, self.size = c, h, w, size
        self.stride_y, self.stride_x, self.pad = stride_y, stride_x, pad
        self.out_h, self.out_w = out_h, out_w
        self.top = pad // 2                     # pad >= 0, so C's pad/2
        self.hp = max((out_h - 1) * stride_y + size, self.top + h)
        self.wp = max((out_w - 1) * stride_x + size, self.top + w)
        # Without padding cells inside the windows the input can be read directly.
        self.inside = self.top == 0 and self.hp == h and self.wp == w
        self.scratch = Scratch()

    def padded(self, x, fill, name="xp"):
        if self.inside:
            return x
        t = self.top
        xp = self.scratch.get(name + str(fill), (x.shape[0], self.c, self.hp, self.wp),
                              x.dtype, fill=fill)
        xp[:, :, t:t + self.h, t:t + self.w] = x
        return xp

    def windows(self, xp, writeable=False):
        """(B, C, size, size, out_h, out_w) view of the windows of a padded array."""
        return window_view(xp, self.size, self.stride_y, self.stride_x, 1, self.out_h,
                           self.out_w, writeable=writeable)

    def offsets(self):
        return [(o, *divmod(o, self.size)) for o in range(self.size * self.size)]

    def max_forward(self, x, out):
        """out = max over each window; cells outside the input and NaNs never win and the
        result is at least -FLT_MAX (Darknet starts from -FLT_MAX and keeps val > max).

        The maximum is separable: first over the window rows (contiguous rows of the input,
        read once), then over the columns of that smaller array (in kernels.py when compiled
        kernels are available, else in numpy)."""
        if kernels.enabled():
            # One thread: at ~30 GB/s, splitting even the 11 MB input of yolov3-tiny's first
            # max-pool over threads measured no faster.
            kernels.max_pool(x, out, self.size, self.stride_y, self.stride_x, self.top, 0,
                             self.c)
            return out
        xp = self.padded(x, NEG_FLT_MAX)
        k, sy, sx = self.size, self.stride_y, self.stride_x
        rows = self.scratch.get("rowmax", (x.shape[0], self.c, self.out_h, xp.shape[-1]),
                                x.dtype)
        span_y = sy * (self.out_h - 1) + 1
        span_x = sx * (self.out_w - 1) + 1

        def max_of(views, target):
            if len(views) == 1:
                np.copyto(target, views[0])
            else:
                np.fmax(views[0], views[1], out=target)
            for view in views[2:]:
                np.fmax(target, view, out=target)

        def channels(c0, c1):
            part, r, o = xp[:, c0:c1], rows[:, c0:c1], out[:, c0:c1]
            max_of([part[:, :, ky:ky + span_y:sy, :] for ky in range(k)], r)
            max_of([r[..., kx:kx + span_x:sx] for kx in range(k)], o)
            # fmax skips NaN unless every cell is NaN; the floor turns those (and -inf) into
            # -FLT_MAX, Darknet's starting value.
            np.fmax(o, NEG_FLT_MAX, out=o)

        split_channels(channels, self.c, xp.nbytes)
        return out

    def max_argmax(self, x, out, arg):
        """max_forward plus arg = the window offset (row-major) of the FIRST maximum, -1 where
        no cell beats -FLT_MAX.  Split over channels on the threads of a parallel region;
        compiled (kernels.py) when available, with the same numbers."""
        if kernels.enabled():
            split_channels(lambda c0, c1: kernels.max_pool_argmax(
                x, out, arg, self.size, self.stride_y, self.stride_x, self.top, c0, c1),
                self.c, x.nbytes)
            return out, arg
        view = self.windows(self.padded(x, NEG_FLT_MAX))

        def channels(c0, c1):
            part, o_part, a_part = view[:, c0:c1], out[:, c0:c1], arg[:, c0:c1]
            first = part[:, :, 0, 0]
            np.fmax(first, NEG_FLT_MAX, out=o_part)
            np.copyto(a_part, np.where(first > NEG_FLT_MAX, 0, -1))
            for o, ky, kx in self.offsets()[1:]:
                cand = part[:, :, ky, kx]
                better = cand > o_part
                np.copyto(o_part, cand, where=better)
                np.copyto(a_part, o, where=better)

        split_channels(channels, self.c, x.nbytes)
        return out, arg

    def _add_through_windows(self, dx, add):
        """Call add(window_cells, offset) for every window offset on a view of dx (through
        a zeroed padded copy when windows reach outside the image), so dx += what was added."""
        if self.inside:
            dxp = dx
        else:
            dxp = self.scratch.get("dxp", (dx.shape[0], self.c, self.hp, self.wp), dx.dtype)
            dxp.fill(0)
        view = self.windows(dxp, writeable=True)
        for o, ky, kx in self.offsets():
            add(view[:, :, ky, kx], o)
        if not self.inside:
            t = self.top
            dx += dxp[:, :, t:t + self.h, t:t + self.w]

    def max_backward(self, arg, dy, dx):
        """dx[argmax] += dy (several windows may pick the same input cell).  Compiled
        (kernels.py) when available, split over channels, with the same numbers."""
        if kernels.enabled():
            threads = parallel.workers() if dx.nbytes >= PARALLEL_MIN_BYTES else 1
            blocks = parallel.bounds(self.c, threads)
            planes = [np.empty((0, 0), dx.dtype) if self.inside else
                      self.scratch.get(f"plane{w}", (self.hp, self.wp), dx.dtype)
                      for w in range(len(blocks))]
            parallel.run([lambda w=w, c0=c0, c1=c1: kernels.max_pool_backward(
                arg, dy, dx, planes[w], self.size, self.stride_y, self.stride_x, self.top,
                c0, c1) for w, (c0, c1) in enumerate(blocks)])
            return
        self._add_through_windows(
            dx, lambda target, o: np.add(target, dy, out=target, where=(arg == o)))

    def valid_counts(self, dtype):
        """Number of in-image cells of each window, (out_h, out_w)."""
        def axis(n_out, stride, n_in):
            start = np.arange(n_out) * stride - self.top
            return (np.minimum(start + self.size, n_in) - np.maximum(start, 0)).clip(0)
        return np.outer(axis(self.out_h, self.stride_y, self.h),
                        axis(self.out_w, self.stride_x, self.w)).astype(dtype)

    def sum_forward(self, x, out):
        """out = sum of the in-image cells of each window."""
        view = self.windows(self.padded(x, 0))
        np.copyto(out, view[:, :, 0, 0])
        for o, ky, kx in self.offsets()[1:]:
            out += view[:, :, ky, kx]
        return out

    def spread_backward(self, dy_scaled, dx):
        """dx += dy_scaled at every in-image cell of each window."""
        self._add_through_windows(
            dx, lambda target, o: np.add(target, dy_scaled, out=target))


# ---------------------------------------------------------------------- activations in place
def leaky_inplace(v, scratch, slope=0.1):
    """v = leaky(v) as Darknet's (v > 0 ? v : slope*v), computed as max(v, slope*v) with a
    scratch buffer of v's size: the same values (slope < 1), two passes, no temporaries."""
    tmp = scratch[:v.size].reshape(v.shape)
    np.multiply(v, slope, out=tmp)
    np.maximum(v, tmp, out=v)
    return v


def leaky_pieces(v, scratch, threads=1, slope=0.1):
    """leaky_inplace over a whole array of any size, in pieces that fit `scratch`, split over
    `threads` threads (each with its own part of scratch) when the array is large enough."""
    flat = v.reshape(-1)
    threads = threads if v.nbytes >= PARALLEL_MIN_BYTES and scratch.size >= 2 * threads else 1
    part = scratch.size // threads

    def pieces(worker, a, b):
        mine = scratch[worker * part:(worker + 1) * part]
        for start in range(a, b, part):
            leaky_inplace(flat[start:min(b, start + part)], mine, slope)

    parallel.run([lambda w=w, a=a, b=b: pieces(w, a, b)
                  for w, (a, b) in enumerate(parallel.bounds(flat.size, threads, 16))])
    return v


def leaky_backprop_inplace(delta, y, scratch, slope=0.1, threads=1):
    """delta *= leaky'(y) = (y > 0 ? 1 : slope) as Darknet, in cache-sized pieces of the
    flat arrays.  The factor is built as mask*(1 - slope) + slope in a scratch buffer: masked
    ufuncs (where=) and np.where's fresh temporaries are several times slower.  With
    threads > 1 (and enough data) the flat arrays are split over the threads, each with its
    own part of the scratch buffer."""
    if threads > 1 and delta.nbytes >= PARALLEL_MIN_BYTES and scratch.size >= 2 * threads:
        flat_delta, flat_y = delta.reshape(-1), y.reshape(-1)
        part = scratch.size // threads
        parallel.run([lambda w=w, a=a, b=b: leaky_backprop_inplace(
                          flat_delta[a:b], flat_y[a:b], scratch[w * part:(w + 1) * part], slope)
                      for w, (a, b) in enumerate(parallel.bounds(delta.size, threads, 16))])
        return delta
    flat_delta, flat_y = delta.reshape(-1), y.reshape(-1)
    step = scratch.size
    one_minus = delta.dtype.type(1 - slope)
    for start in range(0, flat_delta.size, step):
        d = flat_delta[start:start + step]
        factor = scratch[:d.size]
        np.greater(flat_y[start:start + step], 0, out=factor)
        factor *= one_minus
        factor += delta.dtype.type(slope)
        d *= factor
    return delta
