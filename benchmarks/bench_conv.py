#!/usr/bin/env python3
"""Forward time of representative yolov3-tiny layers (416x416, batch 1, inference):
minidarknet's [convolutional] (BN folded to a per-channel affine map, leaky) and [maxpool]
against a plain numpy reference measured in the same run.

    python benchmarks/bench_conv.py [--threads N] [--size 416] [--runs 15] [--rounds 3]

The reference is the textbook numpy convolution: np.pad, im2col with fancy indexing, one
matmul, then batch norm, bias and leaky as separate numpy expressions (maxpool: the max of
reshaped windows after np.pad with -inf).  Each layer is timed as the median of --runs calls,
the two implementations alternate for --rounds rounds, and the medians of the round medians
are printed with GFLOP/s and the speed-up (reference time / minidarknet time).  --threads N
re-runs the script with OPENBLAS_NUM_THREADS=N (BLAS reads it at import).  Absolute times
depend on the machine and its BLAS kernels (see docs/perf-anchors.md); compare the ratios.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, input size divisor, c, filters, size, activation) of yolov3-tiny's layers at 416.
CONV_LAYERS = [
    ("conv 0", 1, 3, 16, 3, "leaky"),
    ("conv 2", 2, 16, 32, 3, "leaky"),
    ("conv 4", 4, 32, 64, 3, "leaky"),
    ("conv 6", 8, 64, 128, 3, "leaky"),
    ("conv 8", 16, 128, 256, 3, "leaky"),
    ("conv 10", 32, 256, 512, 3, "leaky"),
    ("conv 12", 32, 512, 1024, 3, "leaky"),
    ("conv 13", 32, 1024, 256, 1, "leaky"),
    ("conv 15", 32, 512, 255, 1, "linear"),
    ("conv 21", 16, 384, 256, 3, "leaky"),
    ("conv 22", 16, 256, 255, 1, "linear"),
]
POOL_LAYERS = [("max 1", 1, 16, 2, 2), ("max 3", 2, 32, 2, 2), ("max 11", 32, 512, 2, 1)]


def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return "; ".join(f"{d.get('internal_api')} {d.get('version')} "
                         f"{d.get('architecture')} threads={d.get('num_threads')}"
                         for d in threadpool_info())
    except ImportError:
        env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP", "MKL"))}
        return f"threadpoolctl not installed; BLAS environment {env or '{}'}"


class Stub:
    """What a layer's forward reads from the network."""
    def __init__(self, x):
        self.input, self.train, self.truth = x, False, None


def build_conv(size, c, filters, k, activation, rng):
    import minidarknet
    cfg = (f"[net]\nbatch=1\nwidth={size}\nheight={size}\nchannels={c}\n\n[convolutional]\n"
           f"batch_normalize=1\nfilters={filters}\nsize={k}\nstride=1\npad=1\n"
           f"activation={activation}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = minidarknet.loads(cfg).layers[0]
    layer.weights[...] = rng.normal(0, 1 / k / c ** .5, layer.weights.shape)
    layer.biases[...] = rng.normal(0, .1, layer.biases.shape)
    layer.scales[...] = rng.uniform(.5, 1.5, layer.scales.shape)
    layer.rolling_mean[...] = rng.normal(0, .1, layer.rolling_mean.shape)
    layer.rolling_variance[...] = rng.uniform(.5, 1.5, layer.rolling_variance.shape)
    return layer


def reference_conv(layer, x):
    import numpy as np
    k, p = layer.size, layer.padding
    _, c, h, w = x.shape
    xp = np.pad(x[0], ((0, 0), (p, p), (p, p)))
    ys = np.arange(h)[:, None] + np.arange(k)[None, :]          # (h, k)
    xs = np.arange(w)[:, None] + np.arange(k)[None, :]          # (w, k)
    col = xp[:, ys[None, :, None, :, None], xs[None, None, :, None, :]]   # c,h,w,k,k
    col = col[:, 0].transpose(0, 3, 4, 1, 2).reshape(c * k * k, h * w)
    out = layer.weights.reshape(layer.filters, -1) @ col
    std = np.sqrt(layer.rolling_variance) + np.float32(1e-6)
    out = ((out - layer.rolling_mean[:, None]) / std[:, None] * layer.scales[:, None]
           + layer.biases[:, None])
    if layer.activation.name == "leaky":
        out = np.where(out > 0, out, np.float32(.1) * out)
    return out.reshape(1, layer.filters, h, w)


def build_pool(size, c, k, stride):
    import minidarknet
    cfg = (f"[net]\nbatch=1\nwidth={size}\nheight={size}\nchannels={c}\n\n[maxpool]\n"
           f"size={k}\nstride={stride}\n")
    return minidarknet.loads(cfg).layers[0]


def reference_pool(layer, x):
    import numpy as np
    k, s = layer.size, layer.stride
    _, c, h, w = x.shape
    oh, ow = layer.out_h, layer.out_w
    extra_h, extra_w = (oh - 1) * s + k - h, (ow - 1) * s + k - w
    xp = np.pad(x[0], ((0, 0), (0, max(extra_h, 0)), (0, max(extra_w, 0))),
                constant_values=-np.inf)
    if s == k:
        return xp[:, :oh * k, :ow * k].reshape(c, oh, k, ow, k).max(axis=(2, 4))[None]
    ys = np.arange(oh)[:, None] * s + np.arange(k)
    xs = np.arange(ow)[:, None] * s + np.arange(k)
    return xp[:, ys[:, None, :, None], xs[None, :, None, :]].max(axis=(3, 4))[None]


def median_time(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.threads and os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads),
                   OMP_NUM_THREADS=str(args.threads))
        return subprocess.call([sys.executable, __file__] + sys.argv[1:], env=env)
    sys.path.insert(0, str(ROOT))
    import numpy as np

    print(f"numpy {np.__version__}; {blas_info()}")
    rng = np.random.default_rng(0)
    rows = []
    for name, div, c, n, k, act in CONV_LAYERS:
        size = args.size // div
        layer = build_conv(size, c, n, k, act, rng)
        x = rng.uniform(0, 1, (1, c, size, size)).astype(np.float32)
        stub = Stub(x)
        np.testing.assert_allclose(layer_forward(layer, stub), reference_conv(layer, x),
                                   rtol=1e-3, atol=1e-3 * float(np.abs(layer.output).max()))
        rows.append((f"{name} {c}->{n} k{k} {size}x{size}", layer.flops(),
                     lambda l=layer, s=stub: l.forward(s),
                     lambda l=layer, x=x: reference_conv(l, x)))
    for name, div, c, k, stride in POOL_LAYERS:
        size = args.size // div
        layer = build_pool(size, c, k, stride)
        x = rng.normal(size=(1, c, size, size)).astype(np.float32)
        stub = Stub(x)
        np.testing.assert_array_equal(layer_forward(layer, stub), reference_pool(layer, x))
        rows.append((f"{name} {k}x{k}/{stride} {c}x{size}x{size}", 0.0,
                     lambda l=layer, s=stub: l.forward(s),
                     lambda l=layer, x=x: reference_pool(l, x)))

    ours = {r[0]: [] for r in rows}
    plain = {r[0]: [] for r in rows}
    for _ in range(args.rounds):
        for label, _, mine, ref in rows:
            ours[label].append(median_time(mine, args.runs))
            plain[label].append(median_time(ref, args.runs))
    print(f"{'layer':<34} {'minidarknet':>11} {'GFLOP/s':>8} {'reference':>10} {'GFLOP/s':>8}"
          f" {'speed-up':>8}")
    total_ours = total_ref = total_flops = 0.0
    for label, flops, _, _ in rows:
        t_ours, t_ref = statistics.median(ours[label]), statistics.median(plain[label])
        total_ours, total_ref, total_flops = total_ours + t_ours, total_ref + t_ref, \
            total_flops + flops
        rate = lambda t: f"{flops / t / 1e9:8.1f}" if flops else f"{'':8}"   # noqa: E731
        print(f"{label:<34} {t_ours * 1e3:8.2f} ms {rate(t_ours)} {t_ref * 1e3:7.2f} ms "
              f"{rate(t_ref)} {t_ref / t_ours:7.2f}x")
    print(f"{'total':<34} {total_ours * 1e3:8.2f} ms {total_flops / total_ours / 1e9:8.1f} "
          f"{total_ref * 1e3:7.2f} ms {total_flops / total_ref / 1e9:8.1f} "
          f"{total_ref / total_ours:7.2f}x")
    return 0


def layer_forward(layer, stub):
    layer.forward(stub)
    return layer.output


if __name__ == "__main__":
    sys.exit(main())
