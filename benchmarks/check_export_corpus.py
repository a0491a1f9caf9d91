"""Export every cfg of ../shared/darknet-cfg (without byte-identical duplicates) at a small
size with random weights and compare onnxruntime with minidarknet, layer by layer.

    .venv/bin/python benchmarks/check_export_corpus.py [PATTERN]

Prints one line per cfg (size, parameters, seconds, worst layer difference, or why it cannot
export) and a summary.  tests/test_export.py runs the same check on the cfgs within its time
budget; this script covers the whole corpus (a few minutes)."""
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from export_check import build_small, compare_with_onnxruntime, unique_cfgs  # noqa: E402
from minidarknet.export import ExportError, build_model  # noqa: E402

CORPUS = ROOT.parent / "shared" / "darknet-cfg"


def main(pattern=""):
    bad, refused, ok = [], [], 0
    for path in unique_cfgs(CORPUS):
        name = path.relative_to(CORPUS).as_posix()
        if pattern not in name:
            continue
        start = time.perf_counter()
        net, error = build_small(path)
        if net is None:
            print(f"{name}: {error}", flush=True)
            continue
        try:
            model = build_model(net, outputs="all")
        except ExportError as e:
            refused.append(name)
            print(f"{name}: refused: {e}", flush=True)
            continue
        diffs = compare_with_onnxruntime(net, model)
        worst = max(diffs, key=diffs.get)
        seconds = time.perf_counter() - start
        status = "ok" if diffs[worst] <= 1e-4 else "DIFFERS"
        ok += status == "ok"
        if status != "ok":
            bad.append(name)
        print(f"{name}: {status} {net.w}x{net.h} {net.parameter_count() / 1e6:.1f}M params "
              f"{seconds:.1f} s, worst layer {worst} ({net.layers[worst].type}) "
              f"{diffs[worst]:.1e}", flush=True)
    print(f"{ok} agree, {len(bad)} differ {bad}, {len(refused)} refused {refused}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
