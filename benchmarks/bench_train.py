#!/usr/bin/env python3
"""One training step (forward + backward + SGD update): minidarknet against PyTorch on the CPU.

    python benchmarks/bench_train.py [--cases tiny shapes mlp] [--threads 2] [--rounds 3]
                                     [--steps 8] [cfg:batch[:size] ...]

The PyTorch model is BUILT FROM THE SAME CFG by the small translator below (`TorchNet`):
minidarknet parses the cfg and the translator turns every layer into the torch equivalent with
the same shapes and the same initial parameters -- convolution (+ batch norm) + activation,
Darknet's max-pool (padding cells are -inf, window origin -(padding/2), so the 2x2 stride-1
pool keeps the size), route (concatenation), upsample (nearest), shortcut (add), connected,
global average pool, l2norm, softmax, [cost] type=sse.  Any other layer type is refused.
[yolo] heads have no torch twin: on the torch side the loss is 1/2 sum of squares of the head
outputs (timing only; minidarknet runs its real YOLO loss against random boxes, which costs it
a little more).  The classifier cfgs use the same losses on both sides (softmax cross-entropy,
SSE after a softmax).

Both sides run the same number of threads (torch.set_num_threads, OMP/OPENBLAS_NUM_THREADS for
minidarknet) in SEPARATE processes (torch's OpenMP pool and OpenBLAS's threads must not share
the cores), alternating for --rounds rounds; each process does 2 warm-up steps and reports the
median of --steps steps.  The ratio is minidarknet's median / torch's (< 1: minidarknet
faster), the median over rounds of the per-round ratios.  torch is optional
(pip install 'minidarknet[bench]'); MINIDARKNET_KERNELS=numpy times the numpy-only code.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {"tiny": ("cfg/yolov3-tiny.cfg", 4, 416), "shapes": ("cfg/demo-shapes.cfg", 32, None),
         "mlp": ("cfg/mlp.cfg", 256, None)}


def build_minidarknet(cfg, batch, size):
    sys.path.insert(0, str(ROOT))
    import minidarknet
    net = minidarknet.load(ROOT / cfg if not Path(cfg).is_absolute() else cfg, batch=batch,
                           width=size, height=size, seed=3)
    net.subdivisions = 1
    return net


def random_batch(net, seed=5):
    """A random input and a random truth the network's loss accepts (one-hot classes, or a
    few boxes per picture for detection heads)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (net.batch, net.c, net.h, net.w)).astype(np.float32)
    truth = np.zeros((net.batch, net.truths), np.float32)
    if any(layer.type == "yolo" for layer in net.layers):
        for b in range(net.batch):
            for i in range(3):                        # x, y, w, h, class
                truth[b, 5 * i:5 * i + 5] = [*rng.uniform(0.2, 0.8, 2),
                                             *rng.uniform(0.05, 0.4, 2), rng.integers(0, 80)]
    else:
        truth[np.arange(net.batch), rng.integers(0, net.truths, net.batch)] = 1
    return x, truth


# ---------------------------------------------------------------------- the cfg -> torch translator
def torch_model(net):
    """A torch.nn.Module computing what `net` (a minidarknet Network) computes, with its
    initial parameters, and a loss(outputs, truth) function."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def activation(name):
        table = {"leaky": lambda v: F.leaky_relu(v, 0.1), "linear": lambda v: v,
                 "relu": F.relu, "logistic": torch.sigmoid}
        if name not in table:
            raise SystemExit(f"bench_train: activation {name} not translated")
        return table[name]

    def tensor(array):
        return torch.from_numpy(array.copy())

    class MaxPool(nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.size, self.stride = layer.size, (layer.stride_y, layer.stride_x)
            top = layer.padding // 2
            bottom = (layer.out_h - 1) * layer.stride_y + layer.size - layer.in_h - top
            right = (layer.out_w - 1) * layer.stride_x + layer.size - layer.in_w - top
            self.pad = (top, max(right, 0), top, max(bottom, 0))

        def forward(self, v):
            if any(self.pad):
                v = F.pad(v, self.pad, value=float("-inf"))
            return F.max_pool2d(v, self.size, self.stride)

    class Conv(nn.Module):
        def __init__(self, layer):
            super().__init__()
            self.conv = nn.Conv2d(layer.in_c, layer.filters, layer.size,
                                  (layer.stride_y, layer.stride_x), layer.padding,
                                  layer.dilation, layer.groups,
                                  bias=not layer.batch_normalize)
            with torch.no_grad():
                self.conv.weight.copy_(tensor(layer.weights))
                if not layer.batch_normalize:
                    self.conv.bias.copy_(tensor(layer.biases))
            self.bn = nn.BatchNorm2d(layer.filters, eps=1e-5, momentum=0.01) \
                if layer.batch_normalize else None
            self.act = activation(layer.activation.name)

        def forward(self, v):
            v = self.conv(v)
            if self.bn is not None:
                v = self.bn(v)
            return self.act(v)

    class Connected(nn.Module):
        def __init__(self, layer):
            super().__init__()
            if layer.batch_normalize:
                raise SystemExit("bench_train: [connected] batch_normalize not translated")
            self.fc = nn.Linear(layer.inputs, layer.outputs)
            with torch.no_grad():
                self.fc.weight.copy_(tensor(layer.weights.reshape(layer.outputs, -1)))
                self.fc.bias.copy_(tensor(layer.biases))
            self.act = activation(layer.activation.name)

        def forward(self, v):
            return self.act(self.fc(v.reshape(v.shape[0], -1)))

    def simple(function):
        class Simple(nn.Module):
            def forward(self, v):
                return function(v)
        return Simple()

    def l2norm(v):
        flat = v.reshape(v.shape[0], v.shape[1], -1)
        return (flat * (flat * flat).sum(1, keepdim=True).add(1e-12).rsqrt()).reshape(v.shape)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.kinds, self.links, mods = [], [], []
            for layer in net.layers:
                kind, link, mod = layer.type, None, None
                if kind == "convolutional":
                    mod = Conv(layer)
                elif kind == "maxpool":
                    mod = MaxPool(layer)
                elif kind == "connected":
                    mod = Connected(layer)
                elif kind == "avgpool":
                    mod = simple(lambda v: v.mean((2, 3), keepdim=True))
                elif kind == "upsample":
                    mod = simple(lambda v, s=layer.stride: F.interpolate(v, scale_factor=s,
                                                                        mode="nearest"))
                elif kind == "l2norm":
                    mod = simple(l2norm)
                elif kind == "softmax":
                    mod = simple(lambda v: F.log_softmax(v.reshape(v.shape[0], -1), 1))
                elif kind in ("route", "shortcut"):
                    link = list(layer.sources)
                elif kind not in ("yolo", "cost"):
                    raise SystemExit(f"bench_train: layer type {kind} is not translated")
                self.kinds.append(kind)
                self.links.append(link)
                mods.append(mod if mod is not None else nn.Identity())
            self.mods = nn.ModuleList(mods)

        def forward(self, v):
            outputs, heads = [], []
            for kind, link, mod in zip(self.kinds, self.links, self.mods):
                if kind == "route":
                    v = torch.cat([outputs[i] for i in link], 1)
                elif kind == "shortcut":
                    v = v + outputs[link[0]]
                elif kind == "yolo":
                    heads.append(v)
                elif kind != "cost":
                    v = mod(v)
                outputs.append(v)
            return heads or [v]

    kinds = [layer.type for layer in net.layers]

    def loss(outputs, truth):
        if "yolo" in kinds:          # no YOLO loss in torch: an SSE on the heads (timing only)
            return sum((h * h).sum() for h in outputs) / 2
        log_p = outputs[0]
        if "cost" in kinds:          # [softmax] + [cost] type=sse
            return ((log_p.exp() - truth) ** 2).sum() / 2
        return -(truth * log_p).sum()        # [softmax]: cross-entropy
    return Model(), loss


# ---------------------------------------------------------------------- one process per measurement
def child(impl, cfg, batch, size, threads, steps):
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import time
    net = build_minidarknet(cfg, batch, size)
    x, truth = random_batch(net)
    if impl == "minidarknet":
        def step():
            net.train_step(x, truth)
    else:
        import torch
        torch.set_num_threads(threads)
        model, loss_of = torch_model(net)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=net.momentum,
                              weight_decay=net.decay)
        tx, tt = torch.from_numpy(x), torch.from_numpy(truth)

        def step():
            opt.zero_grad(set_to_none=False)
            loss_of(model(tx), tt).backward()
            opt.step()
    for _ in range(2):
        step()
    times, cpu = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    print(json.dumps({"median": statistics.median(times), "min": min(times),
                      "cpu": statistics.median(cpu)}))


def measure(impl, case, threads, steps):
    cfg, batch, size = case
    result = subprocess.run([sys.executable, __file__, "--child", impl, cfg, str(batch),
                             str(size or 0), str(threads), str(steps)],
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{impl} {cfg} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def parse_case(text):
    if text in CASES:
        return text, CASES[text]
    parts = text.split(":")
    return text, (parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else None)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        impl, cfg, batch, size, threads, steps = sys.argv[2:8]
        child(impl, cfg, int(batch), int(size) or None, int(threads), int(steps))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=list(CASES),
                        help="tiny, shapes, mlp, or cfg:batch[:size]")
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    print(f"kernels: MINIDARKNET_KERNELS={os.environ.get('MINIDARKNET_KERNELS', '(unset)')}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"load {os.getloadavg()[0]:.2f}")
    for name, case in map(parse_case, args.cases):
        for threads in args.threads:
            runs = {"minidarknet": [], "torch": []}
            cpus = {"minidarknet": [], "torch": []}
            ratios = []
            for r in range(args.rounds):
                order = ("minidarknet", "torch") if r % 2 == 0 else ("torch", "minidarknet")
                for impl in order:
                    result = measure(impl, case, threads, args.steps)
                    runs[impl].append(result["median"])
                    cpus[impl].append(result["cpu"])
                ratios.append(runs["minidarknet"][-1] / runs["torch"][-1])
            md, tt = statistics.median(runs["minidarknet"]), statistics.median(runs["torch"])
            mc, tc = statistics.median(cpus["minidarknet"]), statistics.median(cpus["torch"])
            # CPU time per step (all threads) is less sensitive to other processes than wall
            # time, but counts threads that spin while waiting.
            print(f"{name:8s} batch {case[1]:3d} threads {threads}: minidarknet "
                  f"{md * 1e3:8.1f} ms  torch {tt * 1e3:8.1f} ms  ratio "
                  f"{statistics.median(ratios):.2f}x (rounds "
                  f"{', '.join(f'{q:.2f}' for q in ratios)}); cpu per step "
                  f"{mc * 1e3:.1f} / {tc * 1e3:.1f} ms = {mc / tc:.2f}x, load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
