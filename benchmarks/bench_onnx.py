#!/usr/bin/env python3
"""Forward time of yolov3-tiny: onnxruntime running minidarknet's ONNX export against
minidarknet itself, batch 1.

    python benchmarks/bench_onnx.py [--size 416] [--threads 1] [--rounds 3] [--runs 10]

The real weights of ../shared/real when present (else random ones), one random input.  Every
measurement runs in its own process with the same thread count (BLAS for minidarknet,
onnxruntime's intra-op pool), the two alternate for --rounds rounds, and each process reports
the median of --runs forward passes after 2 warm-up passes.  Prints the medians, the ratio,
the machine's load average (the numbers are only comparable under the same load) and the
largest relative difference of the two yolo outputs.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "cfg" / "yolov3-tiny.cfg"
WEIGHTS = ROOT.parent / "shared" / "real" / "yolov3-tiny.weights"


def load(size):
    sys.path.insert(0, str(ROOT))
    import minidarknet
    weights = WEIGHTS if WEIGHTS.exists() else None
    return minidarknet.load(CFG, weights, batch=1, width=size, height=size)


def child(impl, threads, folder, size, runs):
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    import time

    import numpy as np
    x = np.load(folder / "input.npy")
    if impl == "minidarknet":
        net = load(size)

        def run():
            last = net.forward(x).copy()
            return [net.layers[16].output.copy(), last]
    else:
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(folder / "net.onnx"), options,
                                               providers=["CPUExecutionProvider"])

        def run():
            return session.run(None, {"input": x})
    for _ in range(2):
        outs = run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        outs = run()
        times.append(time.perf_counter() - start)
    np.savez(folder / f"{impl}.npz", *outs)
    print(statistics.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.threads, Path(args.child[1]), args.size, args.runs)
        return
    import numpy as np
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        net = load(args.size)
        net.export_onnx(folder / "net.onnx")
        np.save(folder / "input.npy",
                np.random.default_rng(1).random((1, 3, args.size, args.size), dtype=np.float32))
        times = {"minidarknet": [], "onnxruntime": []}
        for _ in range(args.rounds):
            for impl in times:
                out = subprocess.run([sys.executable, __file__, "--child", impl, str(folder),
                                      "--size", str(args.size), "--threads", str(args.threads),
                                      "--runs", str(args.runs)], check=True,
                                     capture_output=True, text=True).stdout
                times[impl].append(float(out.split()[-1]))
        mine, theirs = (np.load(folder / f"{impl}.npz") for impl in times)
        diffs = [float(np.max(np.abs(theirs[k] - mine[k])) / np.max(np.abs(mine[k])))
                 for k in mine.files]
    med = {impl: statistics.median(t) for impl, t in times.items()}
    print(f"yolov3-tiny {args.size}x{args.size}, batch 1, {args.threads} thread(s), "
          f"{'real' if WEIGHTS.exists() else 'random'} weights, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    for impl, t in times.items():
        print(f"  {impl:12s} median {med[impl] * 1e3:7.1f} ms  (rounds: "
              f"{', '.join(f'{v * 1e3:.1f}' for v in t)})")
    print(f"  minidarknet / onnxruntime = {med['minidarknet'] / med['onnxruntime']:.2f}; "
          f"largest relative difference of the yolo outputs {max(diffs):.1e}")


if __name__ == "__main__":
    main()
