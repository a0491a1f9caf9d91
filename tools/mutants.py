"""Hand-made mutation check: apply one small deliberate bug at a time to minidarknet/, run the
test files that should notice it, record which test kills it, restore the file.

    .venv/bin/python tools/mutants.py               # all mutants, table on stdout
    .venv/bin/python tools/mutants.py 3 7           # only mutants 3 and 7
    .venv/bin/python tools/mutants.py --md docs/mutants.md

Each mutant replaces one exact snippet (which must occur once in its file) by another.  The
file is always restored (try/finally) and the run checks that it is byte-identical afterwards.
Tests run with `pytest -x -q`, so the first failing test is the one named as the killer.
"""
import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

B = ["tests/test_boundaries.py"]
K = ["tests/test_cfg_keys.py"]
BOX = B + ["tests/test_boxes.py", "tests/test_detect.py"]
YOLO = B + ["tests/test_yolo.py"]
REGION = B + K + ["tests/test_region.py"]
TRAIN = K + ["tests/test_train.py", "tests/test_network.py"]
BN = K + ["tests/test_conv.py", "tests/test_golden.py"]
LR = B + ["tests/test_train.py", "tests/test_network.py"]

# (what, file, old, new, test files)
MUTANTS = [
    ("NMS: IoU > nms  ->  >=", "minidarknet/boxes.py",
     "return overlap(b[:, None, :], b[None, :, :]) > t", "return overlap(b[:, None, :], b[None, :, :]) >= t", BOX),
    ("NMS row-at-a-time path: > -> >=", "minidarknet/boxes.py",
     "over = overlap(bx[cand[a]], bx[cand[a + 1:]]) > t", "over = overlap(bx[cand[a]], bx[cand[a + 1:]]) >= t", BOX),
    ("NMS: skip boxes with objectness 0 -> keep them", "minidarknet/boxes.py",
     "if dets[i].objectness == 0:", "if dets[i].objectness < 0:", BOX),
    ("DIoU-NMS: greedynms uses beta_nms instead of .6", "minidarknet/detect.py",
     'power = 0.6 if kind == "greedynms" else beta', "power = beta", BOX),
    ("DIoU: penalty (d/c)**beta -> d/c", "minidarknet/detect.py",
     "u = np.power((d / c).astype(np.float64), float(beta)).astype(F32)", "u = (d / c).astype(F32)", BOX),
    ("yolo_boxes: objectness > thresh -> >=", "minidarknet/boxes.py",
     "keep = np.flatnonzero(obj_cells > t)", "keep = np.flatnonzero(obj_cells >= t)", BOX),
    ("yolo_boxes: prob > thresh -> >=", "minidarknet/boxes.py",
     "prob = np.where(prob > t, prob, F32(0)).astype(F32)\n    return [Detection(x[i], y[i], w[i], h[i], obj[i]",
     "prob = np.where(prob >= t, prob, F32(0)).astype(F32)\n    return [Detection(x[i], y[i], w[i], h[i], obj[i]", BOX),
    ("region_boxes: objectness > thresh -> >=", "minidarknet/boxes.py",
     "objectness = np.where(scale > t, scale, F32(0))", "objectness = np.where(scale >= t, scale, F32(0))", BOX),
    ("region_boxes: prob > thresh -> >=", "minidarknet/boxes.py",
     "prob = np.where((prob > t) & (objectness != 0)", "prob = np.where((prob >= t) & (objectness != 0)", BOX),
    ("detection_layer_boxes: prob > thresh -> >=", "minidarknet/boxes.py",
     "prob = np.where(prob > t, prob, F32(0)).astype(F32)\n    return [Detection(x[i], y[i], bw[i]",
     "prob = np.where(prob >= t, prob, F32(0)).astype(F32)\n    return [Detection(x[i], y[i], bw[i]", BOX),
    ("printout/draw: prob > thresh -> >=", "minidarknet/boxes.py",
     "if det.prob[j] > t]", "if det.prob[j] >= t]", BOX),
    ("letterbox: C integer division -> true division", "minidarknet/image.py",
     "return net_w, (im_h * net_w) // im_w\n    return (im_w * net_h) // im_h, net_h",
     "return net_w, (im_h * net_w) / im_w\n    return (im_w * net_h) / im_h, net_h", BOX),
    ("hierarchy_top_prediction: p*max > hier -> >=", "minidarknet/tree.py",
     "go_on = product > F32(thresh)", "go_on = product >= F32(thresh)", B + ["tests/test_tree.py"]),
    ("tree region boxes: objectness > thresh -> >=", "minidarknet/tree.py",
     "det.prob[j] = s if s > F32(thresh) else F32(0)", "det.prob[j] = s if s >= F32(thresh) else F32(0)", B + ["tests/test_tree.py"]),
    ("yolo loss: best IoU > ignore_thresh -> >=", "minidarknet/layers/yolo.py",
     "[best > F32(self.ignore_thresh)] = 0", "[best >= F32(self.ignore_thresh)] = 0", YOLO),
    ("yolo loss: best IoU > truth_thresh -> >=", "minidarknet/layers/yolo.py",
     "np.nonzero(best > F32(self.truth_thresh))", "np.nonzero(best >= F32(self.truth_thresh))", YOLO),
    ("yolo loss: ignore_thresh read as fixed .5", "minidarknet/layers/yolo.py",
     'self.ignore_thresh = s.float("ignore_thresh", 0.5)', 'self.ignore_thresh = 0.5; s.float("ignore_thresh", 0.5)', YOLO),
    ("region loss: best IoU > thresh -> >=", "minidarknet/layers/region.py",
     "[best > F32(self.thresh)] = 0", "[best >= F32(self.thresh)] = 0", REGION),
    ("region loss: seen < 12800 -> <=", "minidarknet/layers/region.py",
     "if seen < PRIOR_SEEN:", "if seen <= PRIOR_SEEN:", REGION),
    ("region loss: prior for 12000 images, not 12800", "minidarknet/layers/region.py",
     "PRIOR_SEEN = 12800", "PRIOR_SEEN = 12000", REGION),
    ("region loss: coord scale (2 - w*h) -> (2 - w)", "minidarknet/layers/region.py",
     "self.coord_scale * (F32(2) - F32(box[2]) * F32(box[3]))", "self.coord_scale * (F32(2) - F32(box[2]))", REGION),
    ("region loss: noobject_scale ignored", "minidarknet/layers/region.py",
     "weight_b[:, obj] = self.noobject_scale", "weight_b[:, obj] = 1", REGION),
    ("region loss: object_scale ignored", "minidarknet/layers/region.py",
     "weight_b[a, obj, cell] = self.object_scale", "weight_b[a, obj, cell] = 1", REGION),
    ("lr: batch_num < burn_in -> <=", "minidarknet/netoptions.py",
     "if n < o.burn_in:", "if n <= o.burn_in:", LR),
    ("lr steps: steps[i] > batch_num -> >=", "minidarknet/netoptions.py",
     "if step > n:", "if step >= n:", LR),
    ("lr step: floor division -> ceiling", "minidarknet/netoptions.py",
     "rate = lr * o.scale ** (n // o.step)", "rate = lr * o.scale ** (-(-n // o.step))", LR),
    ("lr poly: batch_num + 1", "minidarknet/netoptions.py",
     "1 - float(np.float32(n) / np.float32(o.max_batches))", "1 - float(np.float32(n + 1) / np.float32(o.max_batches))", LR),
    ("lr sigmoid: exp(gamma*(n - step + 1))", "minidarknet/netoptions.py",
     "o.gamma * (n - o.step)", "o.gamma * (n - o.step + 1)", LR),
    ("lr sgdr: start + cycle < n -> <=", "minidarknet/netoptions.py",
     "while start + cycle < n:", "while start + cycle <= n:", LR),
    ("lr exp: gamma ignored (1.0)", "minidarknet/netoptions.py",
     "rate = lr * o.gamma ** n", "rate = lr * 1.0 ** n", LR),
    ("update: cfg momentum ignored (fixed .9)", "minidarknet/network.py",
     "layer.update(rate, self.momentum, self.decay, batch)", "layer.update(rate, 0.9, self.decay, batch)", TRAIN),
    ("update: cfg decay ignored (fixed .0005)", "minidarknet/network.py",
     "layer.update(rate, self.momentum, self.decay, batch)", "layer.update(rate, self.momentum, 0.0005, batch)", TRAIN),
    ("update: B = batch, not batch*subdivisions", "minidarknet/network.py",
     "batch = self.batch * self.subdivisions\n        for layer", "batch = self.batch\n        for layer", TRAIN),
    ("update: decay*B -> decay", "minidarknet/layers/base.py",
     "self.weight_updates -= np.float32(decay * batch) * self.weights", "self.weight_updates -= np.float32(decay) * self.weights", TRAIN),
    ("update: scales get no momentum", "minidarknet/layers/base.py",
     "            self.scale_updates *= np.float32(momentum)\n", "            self.scale_updates *= 0\n", TRAIN),
    ("batch norm forward epsilon 1e-6 -> 1e-5", "minidarknet/layers/batchnorm.py",
     "EPS_FORWARD = F32(1e-6)", "EPS_FORWARD = F32(1e-5)", BN),
    ("batch norm backward epsilon 1e-5 -> 1e-6", "minidarknet/layers/batchnorm.py",
     "EPS_BACKWARD = F32(1e-5)", "EPS_BACKWARD = F32(1e-6)", BN),
    ("batch norm rolling average .99 -> .9 (mean)", "minidarknet/layers/batchnorm.py",
     "layer.rolling_mean *= F32(.99)\n        layer.rolling_mean += F32(.01) * layer.mean",
     "layer.rolling_mean *= F32(.9)\n        layer.rolling_mean += F32(.1) * layer.mean", BN),
    ("batch norm variance N-1 -> N", "minidarknet/layers/batchnorm.py",
     "squares.sum(axis=(0, 2)) / F32(max(n - 1, 1))", "squares.sum(axis=(0, 2)) / F32(max(n, 1))", BN),
    ("route: group_id ignored in the source slice", "minidarknet/layers/route.py",
     "slice(part * self.group_id, part * (self.group_id + 1))", "slice(0, part)", ["tests/test_corpus_values.py", "tests/test_wiring_layers.py"]),
    ("route backward: delta not added to sources", "minidarknet/layers/route.py",
     "src.delta.reshape(self.batch, -1)[:, theirs] += delta[:, mine]", "src.delta.reshape(self.batch, -1)[:, theirs] = delta[:, mine] * 0", ["tests/test_corpus_values.py", "tests/test_wiring_layers.py"]),
    ("leaky slope .1 -> .01 (forward)", "minidarknet/activations.py",
     'Activation("leaky", _leaky_like(0.1)', 'Activation("leaky", _leaky_like(0.01)', ["tests/test_activations.py", "tests/test_corpus_values.py"]),
    ("shortcut weights_normalization eps 1e-4 -> 1e-3", "minidarknet/layers/shortcut.py",
     "EPS = F32(1e-4)", "EPS = F32(1e-3)", ["tests/test_ab_layers.py", "tests/test_wiring_layers.py"]),
    ("shortcut: beta ignored", "minidarknet/layers/shortcut.py",
     'self.beta = F32(section.float("beta", 1.0))', 'self.beta = F32(1); section.float("beta", 1.0)', ["tests/test_wiring_layers.py", "tests/test_ab_layers.py"]),
    ("l2norm eps added after the square root", "minidarknet/layers/l2norm.py",
     "        if self.eps:\n            norm += self.eps\n        np.sqrt(norm, out=norm)\n",
     "        np.sqrt(norm, out=norm)\n        if self.eps:\n            norm += self.eps\n", ["tests/test_l2norm.py"]),
    ("softmax temperature ignored", "minidarknet/layers/softmax.py",
     "t = F32(self.temperature)", "t = F32(1)", ["tests/test_wiring_layers.py", "tests/test_tree.py", "tests/test_gradients.py"]),
    ("cost scale ignored", "minidarknet/layers/cost.py",
     'self.scale = F32(section.float("scale", 1.0))', 'self.scale = F32(1); section.float("scale", 1.0)', ["tests/test_wiring_layers.py", "tests/test_gradients.py", "tests/test_train.py"]),
    ("LRN kappa ignored", "minidarknet/layers/normalization.py",
     'section.float("kappa", 1', 'section.float("kappa_", 1', ["tests/test_pool.py", "tests/test_wiring_layers.py"]),
    ("default momentum .9 -> .95", "minidarknet/netoptions.py",
     'momentum=s.float("momentum", 0.9)', 'momentum=s.float("momentum", 0.95)', K),
    ("default decay .0001 -> .0005", "minidarknet/netoptions.py",
     'decay=s.float("decay", 0.0001)', 'decay=s.float("decay", 0.0005)', K),
    ("default learning_rate .001 -> .01", "minidarknet/netoptions.py",
     'learning_rate=s.float("learning_rate", 0.001)', 'learning_rate=s.float("learning_rate", 0.01)', K),
    ("default burn-in power 4 -> 2", "minidarknet/netoptions.py",
     'o.power = s.float("power", 4.0)', 'o.power = s.float("power", 2.0)', K + LR),
    ("default truth_thresh 1 -> .9", "minidarknet/layers/yolo.py",
     'self.truth_thresh = s.float("truth_thresh", 1.0)', 'self.truth_thresh = s.float("truth_thresh", 0.9)', K + YOLO),
    ("per-layer learning_rate ignored", "minidarknet/layers/base.py",
     "lr = np.float32(rate * self.learning_rate_scale / batch)", "lr = np.float32(rate / batch)", TRAIN),
    ("yolo forward: scale_x_y ignored", "minidarknet/layers/yolo.py",
     "s = F32(self.scale_x_y)\n        if s != 1:", "s = F32(1)\n        if s != 1:", ["tests/test_corpus_values.py", "tests/test_yolo.py"]),
    ("region loss: class_scale ignored", "minidarknet/layers/region.py",
     "weight_b[a, first:, cell] = self.class_scale", "weight_b[a, first:, cell] = 1", REGION),
    ("region loss: coord_scale ignored", "minidarknet/layers/region.py",
     "self.coord_scale * (F32(2) - F32(box[2]) * F32(box[3]))", "(F32(2) - F32(box[2]) * F32(box[3]))", REGION),
    ("relie slope .01 -> .1", "minidarknet/activations.py",
     'Activation("relie", _leaky_like(0.01)', 'Activation("relie", _leaky_like(0.1)', ["tests/test_activations.py"]),
    ("selu: x >= 0 -> x > 0 (forward)", "minidarknet/activations.py",
     "return np.where(x >= 0, _SELU_L * x, neg)", "return np.where(x > 0, _SELU_L * x, neg)", ["tests/test_activations.py"]),
    ("plse: x < -4 -> x <= -4 (forward)", "minidarknet/activations.py",
     "r = np.where(x < -4, 0.01 * (x + 4.0),", "r = np.where(x <= -4, 0.01 * (x + 4.0),", ["tests/test_activations.py"]),
    ("lhtan slope .001 -> .01 below 0", "minidarknet/activations.py",
     "r = np.where(x < 0, 0.001 * x,", "r = np.where(x < 0, 0.01 * x,", ["tests/test_activations.py"]),
    ("l2norm cfg eps ignored", "minidarknet/layers/l2norm.py",
     'self.eps = F32(section.float("eps", 0.0))', 'self.eps = F32(0); section.float("eps", 0.0)', ["tests/test_l2norm.py", "tests/test_cfg.py"]),
    ("LRN alpha ignored", "minidarknet/layers/normalization.py",
     'self.alpha = F32(section.float("alpha", 1e-4))', 'self.alpha = F32(1e-4); section.float("alpha", 1e-4)', ["tests/test_pool.py", "tests/test_wiring_layers.py"]),
    ("LRN beta ignored", "minidarknet/layers/normalization.py",
     'self.beta = F32(section.float("beta", 0.75))', 'self.beta = F32(0.75); section.float("beta", 0.75)', ["tests/test_pool.py", "tests/test_wiring_layers.py"]),
    ("dropout scale 1/(1-p) -> 1/p", "minidarknet/layers/dropout.py",
     "self.scale = F32(1 / (1 - self.probability))", "self.scale = F32(1 / self.probability)", K + ["tests/test_wiring_layers.py", "tests/test_network.py", "tests/test_gradients.py"]),
    ("shortcut: alpha ignored", "minidarknet/layers/shortcut.py",
     'self.alpha = F32(section.float("alpha", 1.0))', 'self.alpha = F32(1); section.float("alpha", 1.0)', ["tests/test_wiring_layers.py", "tests/test_ab_layers.py"]),
    ("augment: center=1 ignored", "minidarknet/augment.py",
     "    if options.center:\n", "    if False:\n", K + ["tests/test_data.py"]),
    ("augment: aspect ignored", "minidarknet/augment.py",
     "aspect = rand_scale(rng, aspect)", "aspect = rand_scale(rng, 1.0)", K + ["tests/test_data.py"]),
]


def run(indices, timeout):
    rows = []
    for k in indices:
        what, rel, old, new, tests = MUTANTS[k]
        path = ROOT / rel
        original = path.read_bytes()
        text = original.decode()
        count = text.count(old)
        if count != 1:
            rows.append((k, what, rel, "-", f"NOT APPLIED (snippet found {count} times)", 0))
            continue
        line = text[:text.index(old)].count("\n") + 1
        start = time.time()
        try:
            path.write_text(text.replace(old, new))
            proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p",
                                   "no:cacheprovider", *tests], cwd=ROOT, capture_output=True,
                                  text=True, timeout=timeout,
                                  env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
            failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M)
            if proc.returncode == 0:
                verdict = "SURVIVED"
            elif failed:
                verdict = "killed by " + failed[0]
            else:
                verdict = f"killed (pytest exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            verdict = "killed (timeout)"
        finally:
            path.write_bytes(original)
        assert path.read_bytes() == original
        rows.append((k, what, f"{rel}:{line}", " ".join(tests), verdict, time.time() - start))
        print(f"{k:3d} {what:50s} {verdict}", flush=True)
    return rows


def markdown(rows):
    lines = ["| # | mutant | file:line | result |", "|---|---|---|---|"]
    for k, what, where, _, verdict, _ in rows:
        lines.append(f"| {k} | {what} | `{where}` | {verdict} |")
    killed = sum(r[4].startswith("killed") for r in rows)
    lines.append("")
    lines.append(f"{killed} of {len(rows)} mutants killed.")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("only", nargs="*", type=int, help="mutant numbers (default: all)")
    ap.add_argument("--md", help="write the table as markdown to this file")
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    rows = run(args.only or range(len(MUTANTS)), args.timeout)
    table = markdown(rows)
    print(table)
    if args.md:
        Path(args.md).write_text(table + "\n")


if __name__ == "__main__":
    main()
