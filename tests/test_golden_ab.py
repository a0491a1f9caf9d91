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
