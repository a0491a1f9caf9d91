"""The reference cases produced by AlexeyAB/darknet's C code (../shared/golden-ab), through the
public API with the checker that ships beside the data (it passes fork="alexeyab")."""
import importlib.util

import pytest

import minidarknet
from conftest import GOLDEN_CHECK, SHARED, need_shared

GOLDEN_AB = SHARED / "golden-ab"

# Cases that need work outside the fork core.
PENDING = {
    "ab_yolo_ciou_train": "needs AlexeyAB's [yolo] training loss (CIoU, 6-float truths)",
}


def _cases():
    if not GOLDEN_AB.exists():
        return ["(no golden-ab data)"]
    names = sorted(p.name for p in GOLDEN_AB.iterdir() if (p / "case.json").exists())
    return [pytest.param(n, marks=pytest.mark.xfail(reason=PENDING[n], strict=False))
            if n in PENDING else n for n in names]


def _checker():
    need_shared(GOLDEN_CHECK)
    spec = importlib.util.spec_from_file_location("golden_check", GOLDEN_CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore::minidarknet.DarknetWarning")
@pytest.mark.parametrize("case", _cases())
def test_golden_ab_case(case):
    need_shared(GOLDEN_AB / case)
    checker = _checker()
    run = checker.Case(str(GOLDEN_AB / case))
    run.run(minidarknet)
    assert not run.failures, "\n".join(run.failures)
    assert run.checked > 0


@pytest.mark.filterwarnings("ignore::minidarknet.DarknetWarning")
def test_yolo_ciou_case_everything_but_the_yolo_loss():
    """ab_yolo_ciou_train's first iteration with the [yolo] layers' deltas taken from the data:
    AlexeyAB's batch norm, route groups, maxpool, upsample and convolution backward (which
    overwrites the previous delta for every kernel size) give every stored delta, update and
    the input delta."""
    import re

    import numpy as np
    case = need_shared(GOLDEN_AB / "ab_yolo_ciou_train")
    exp = np.load(case / "expected.npz")
    net = minidarknet.load(case / "net.cfg", weights=case / "net.weights", fork="alexeyab")
    x = np.fromfile(case / "input.f32", "<f4").reshape(2, 3, 96, 96)
    net.forward(x, train=True)
    for i, layer in enumerate(net.layers):
        if layer.type == "yolo":
            layer.delta[...] = exp[f"layer{i:02d}_delta"].reshape(layer.delta.shape)
    net.backward()
    checked = 0
    for key in sorted(exp.files):
        m = re.fullmatch(r"layer(\d+)_(output|delta|weight_updates|bias_updates|scale_updates)",
                         key)
        if not m:
            continue
        got = getattr(net.layers[int(m.group(1))], m.group(2))
        want = exp[key]
        bound = 1e-4 * np.abs(want).max() + 1e-6
        assert np.abs(got.reshape(want.shape) - want).max() <= bound, key
        checked += 1
    want = exp["input_delta"]
    assert np.abs(net.input_delta - want).max() <= 1e-4 * np.abs(want).max()
    assert checked > 100
