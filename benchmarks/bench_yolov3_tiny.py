#!/usr/bin/env python3
"""Whole-network forward time of yolov3-tiny: minidarknet against OpenCV DNN's Darknet importer.

    python benchmarks/bench_yolov3_tiny.py [--size 416] [--threads 1 2] [--rounds 3] [--runs 15]

Random weights (a generated Darknet .weights file) and one random input; both runners get the
same cfg, weights and input and the same thread count.  Every measurement runs in its own
process (numpy's BLAS threads and OpenCV's must not share 2 cores), the two runners alternate
for --rounds rounds, and each process reports the median of --runs forward passes after 2
warm-up passes.  Prints the medians, minidarknet's time as a ratio of OpenCV's, and whether
the two agree on the outputs of the layers in front of the yolo heads.  OpenCV is optional
(pip install 'minidarknet[opencv]'); without it only minidarknet is timed.  minidarknet runs
its compiled kernels when numba is installed (pip install 'minidarknet[fast]'); the first line
says whether it is, and MINIDARKNET_KERNELS=numpy times the numpy-only code instead.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "cfg" / "yolov3-tiny.cfg"
HEAD_LAYERS = (15, 22)   # the linear 1x1 convolutions that feed the two [yolo] layers


def make_inputs(folder, size):
    """Write net.weights and input.npy into folder (fixed seeds)."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import minidarknet
    net = minidarknet.load(CFG, batch=1, width=size, height=size)
    rng = np.random.default_rng(1)
    for layer in net.layers:
        for name, array in layer.parameters():
            if name == "weights":
                fan_in = array[0].size
                values = rng.normal(0, 1 / np.sqrt(fan_in), array.shape)
            elif name in ("scales", "rolling_variance"):
                values = rng.uniform(0.5, 1.5, array.shape)
            else:
                values = rng.normal(0, 0.1, array.shape)
            array[...] = values.astype(np.float32)
    net.save_weights(folder / "net.weights")
    np.save(folder / "input.npy", rng.uniform(0, 1, (1, 3, size, size)).astype(np.float32))


def child(impl, threads, folder, size, runs):
    """Runs in a fresh process: time `runs` forward passes, save the head outputs."""
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    import time

    import numpy as np
    x = np.load(folder / "input.npy")
    if impl == "minidarknet":
        sys.path.insert(0, str(ROOT))
        import minidarknet
        net = minidarknet.load(CFG, folder / "net.weights", batch=1, width=size, height=size)

        def forward():
            net.forward(x)
            return [net.layers[i].output.copy() for i in HEAD_LAYERS]
    else:
        import cv2
        cv2.setNumThreads(threads)
        net = cv2.dnn.readNetFromDarknet(str(CFG), str(folder / "net.weights"))
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        names = [f"conv_{i}" for i in HEAD_LAYERS]

        def forward():
            net.setInput(x)
            return net.forward(names)
    for _ in range(2):
        outputs = forward()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    for i, out in zip(HEAD_LAYERS, outputs):
        np.save(folder / f"{impl}-{i}.npy", np.asarray(out))
    print(json.dumps({"median_ms": 1000 * statistics.median(times)}))


def measure(impl, threads, folder, size, runs):
    result = subprocess.run([sys.executable, __file__, "--child", impl, str(threads),
                             str(folder), "--size", str(size), "--runs", str(runs)],
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{impl} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])["median_ms"]


def blas_info():
    import numpy as np
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--child", nargs=3, metavar=("IMPL", "THREADS", "FOLDER"))
    args = parser.parse_args()
    if args.child:
        impl, threads, folder = args.child
        return child(impl, int(threads), Path(folder), args.size, args.runs)

    try:
        import cv2
        have_cv = hasattr(cv2, "dnn") and hasattr(cv2.dnn, "readNetFromDarknet")
        cv_version = cv2.__version__
    except ImportError:
        have_cv, cv_version = False, None
    import numpy as np
    sys.path.insert(0, str(ROOT))
    from minidarknet import kernels
    print(f"yolov3-tiny {args.size}x{args.size}, batch 1; numpy {np.__version__} "
          f"({blas_info()}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}); "
          f"minidarknet kernels: {kernels.status()}; "
          f"OpenCV {cv_version or 'not installed'}; {os.cpu_count()} CPUs")
    if not have_cv:
        print("OpenCV DNN with readNetFromDarknet is not available "
              "(pip install 'minidarknet[opencv]'): timing minidarknet alone")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_inputs(folder, args.size)
        impls = ["minidarknet"] + (["opencv"] if have_cv else [])
        print(f"{'threads':>7} {'minidarknet ms':>15} {'OpenCV ms':>10} {'ratio':>7}")
        for threads in args.threads:
            times = {impl: [] for impl in impls}
            for _ in range(args.rounds):
                for impl in impls:
                    times[impl].append(measure(impl, threads, folder, args.size, args.runs))
            ours = statistics.median(times["minidarknet"])
            if have_cv:
                theirs = statistics.median(times["opencv"])
                print(f"{threads:7d} {ours:15.1f} {theirs:10.1f} {ours / theirs:6.2f}x")
            else:
                print(f"{threads:7d} {ours:15.1f} {'-':>10} {'-':>7}")
        if have_cv:
            for i in HEAD_LAYERS:
                a = np.load(folder / f"minidarknet-{i}.npy").ravel()
                b = np.load(folder / f"opencv-{i}.npy").ravel()
                err = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
                verdict = "agree" if err < 1e-4 else "DISAGREE"
                print(f"layer {i} output: max|diff|/max|opencv| = {err:.2e} ({verdict})")


if __name__ == "__main__":
    main()
