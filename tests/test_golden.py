"""Every reference case produced by Darknet's C code (../shared/golden) through the public API,
with the checker that ships beside the data (../shared/tools/golden_check.py)."""
import importlib.util

import pytest

import minidarknet
from conftest import GOLDEN, GOLDEN_CHECK, need_shared


def _cases():
    if not GOLDEN.exists():
        return ["(no golden data)"]
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "case.json").exists())


def _checker():
    need_shared(GOLDEN_CHECK)
    spec = importlib.util.spec_from_file_location("golden_check", GOLDEN_CHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", _cases())
def test_golden_case(case):
    need_shared(GOLDEN / case)
    checker = _checker()
    run = checker.Case(str(GOLDEN / case))
    run.run(minidarknet)
    assert not run.failures, "\n".join(run.failures)
    assert run.checked > 0
