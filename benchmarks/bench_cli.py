#!/usr/bin/env python3
"""One picture from the shell, whole process: `minidarknet run` against a one-picture OpenCV DNN
script on the same cfg, weights and photo.

    python benchmarks/bench_cli.py [--runs 10] [--warmup 2] [--threads N]
                                   [--cfg cfg/yolov3-tiny.cfg] [--weights W] [--image I]

The defaults are yolov3-tiny with the real COCO weights and dog.jpg from ../shared/real.
The OpenCV script does what a user's minimal script does: import cv2, readNetFromDarknet,
imread, blobFromImage (416x416, 1/255, RGB), forward to the output layers, keep the boxes
whose best class score is above .5 (no drawing, no NMS).  minidarknet runs its command as a
user types it: `minidarknet run CFG IMAGE --weights W`, which also draws predictions.png.
Both run as subprocesses, alternating (hyperfine-style), after --warmup runs of each (file
caches warm, minidarknet's bytecode compiled as an installed package has it); the wall
time of every process is measured from outside, and its CPU time
(user + system) from the kernel's accounting.  Prints the medians and the median of the
per-round ratios (minidarknet / OpenCV; < 1: minidarknet faster).  Needs OpenCV < 5
(pip install 'minidarknet[opencv]'); OMP_NUM_THREADS (--threads) is set for both.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real"

OPENCV_SCRIPT = """
import sys
import cv2
import numpy as np
cfg, weights, image = sys.argv[1:4]
net = cv2.dnn.readNetFromDarknet(cfg, weights)
picture = cv2.imread(image)
blob = cv2.dnn.blobFromImage(picture, 1 / 255.0, (416, 416), swapRB=True, crop=False)
net.setInput(blob)
outputs = net.forward(net.getUnconnectedOutLayersNames())
rows = np.concatenate(outputs)
boxes = rows[rows[:, 5:].max(axis=1) > 0.5]
print(len(boxes), "boxes above .5")
"""


def timed(command, cwd, env):
    """(wall seconds, CPU seconds) of one subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cfg", default=str(ROOT / "cfg" / "yolov3-tiny.cfg"))
    parser.add_argument("--weights", default=str(REAL / "yolov3-tiny.weights"))
    parser.add_argument("--image", default=str(REAL / "dog.jpg"))
    args = parser.parse_args()
    for path in (args.weights, args.image):
        if not Path(path).is_file():
            raise SystemExit(f"bench_cli: {path} not found")
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(args.threads)
    # An installed package has its bytecode compiled (pip does it); an editable checkout gets
    # it on first import -- unless PYTHONDONTWRITEBYTECODE is set, as in some shells, when
    # every run would compile all of minidarknet's sources again.  Compile it once here.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "minidarknet")],
                   check=True)
    exe = Path(sys.executable).with_name("minidarknet")
    minidarknet = ([str(exe)] if exe.exists() else [sys.executable, "-m", "minidarknet"]) + \
        ["run", args.cfg, args.image, "--weights", args.weights]
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "opencv_one_picture.py"
        script.write_text(OPENCV_SCRIPT)
        opencv = [sys.executable, str(script), args.cfg, args.weights, args.image]
        commands = {"minidarknet": minidarknet, "opencv": opencv}
        for _ in range(args.warmup):
            for command in commands.values():
                timed(command, folder, env)
        walls = {name: [] for name in commands}
        cpus = {name: [] for name in commands}
        ratios, last = [], None
        for r in range(args.runs):
            order = list(commands) if r % 2 == 0 else list(commands)[::-1]
            for name in order:
                wall, cpu, result = timed(commands[name], folder, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
                if name == "minidarknet":
                    last = result
            ratios.append(walls["minidarknet"][-1] / walls["opencv"][-1])
    print(f"load average {os.getloadavg()[0]:.2f}, threads "
          f"{env.get('OMP_NUM_THREADS', '(default)')}, {args.runs} alternating runs")
    for name in commands:
        print(f"{name:12s} wall median {1000 * statistics.median(walls[name]):7.0f} ms "
              f"(min {1000 * min(walls[name]):5.0f})  cpu median "
              f"{1000 * statistics.median(cpus[name]):7.0f} ms")
    cpu_ratio = statistics.median(cpus["minidarknet"]) / statistics.median(cpus["opencv"])
    print(f"ratio minidarknet / opencv: wall {statistics.median(ratios):.2f}x (per-round "
          f"median), cpu {cpu_ratio:.2f}x")
    print("minidarknet's own report (last run):")
    for line in (last.stdout + last.stderr).splitlines():
        if "predicted in" in line or "one-off" in line:
            print("   ", line)


if __name__ == "__main__":
    main()
