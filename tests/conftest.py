"""Shared fixtures: where ../shared lives (reference data from Darknet), tiny cfg writers."""
import os
import sys
from pathlib import Path

import importlib
import pkgutil

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MINIDARKNET_SHARED", ROOT.parent / "shared"))
GOLDEN = SHARED / "golden"
CFG_CORPUS = SHARED / "darknet-cfg"
GOLDEN_CHECK = SHARED / "tools" / "golden_check.py"

sys.path.insert(0, str(ROOT))


def in_ci():
    """True when the CI variable says so (CI=true, as GitHub Actions, GitLab and most others
    set it): there the reference data must be present, and its absence is a failure."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_shared(path=SHARED):
    """Skip (or, under CI=true, fail) the current test because `path` is absent."""
    reason = (f"reference data not found at {path} (the ../shared folder beside the "
              f"checkout; set MINIDARKNET_SHARED to point elsewhere)")
    if in_ci():
        pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def need_shared(path=SHARED):
    if not Path(path).exists():
        missing_shared(path)
    return Path(path)


_EMPTY_FOR_LACK_OF_SHARED = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config, items):
    """A test parametrized over files in ../shared has an empty parameter set when the folder
    is absent, which pytest turns into a skip at collection.  Under CI=true that skip becomes
    a failure (the test then fails in set-up through need_shared)."""
    if not in_ci() or SHARED.exists():
        return
    for item in items:
        empty = [m for m in item.own_markers if m.name == "skip"
                 and "empty parameter set" in str(m.kwargs.get("reason", ""))]
        if empty:
            item.own_markers[:] = [m for m in item.own_markers if m not in empty]
            item.stash[_EMPTY_FOR_LACK_OF_SHARED] = True


def pytest_runtest_setup(item):
    if item.stash.get(_EMPTY_FOR_LACK_OF_SHARED, False):
        missing_shared(SHARED)


def central_difference(objective, array, index, eps=1e-6):
    """(objective() with array[index] + eps - objective() with array[index] - eps) / (2 eps).
    `array` is changed in place for the two calls and restored (bit for bit) afterwards; index
    is a flat index or a tuple.  The one finite-difference helper of the suite."""
    flat = array.reshape(-1) if np.ndim(index) == 0 else array
    if np.ndim(index) == 0:
        assert np.shares_memory(flat, array), "central_difference needs a contiguous array"
    keep = flat[index]
    try:
        flat[index] = keep + eps
        plus = objective()
        flat[index] = keep - eps
        minus = objective()
    finally:
        flat[index] = keep
    return (plus - minus) / (2 * eps)


def numeric_gradient(objective, array, indices=None, eps=1e-6):
    """Central differences of objective() w.r.t. array at the given flat indices (all when
    None), as a float64 array (see central_difference)."""
    if indices is None:
        indices = range(array.size)
    return np.array([central_difference(objective, array, int(i), eps) for i in indices],
                    np.float64)


@pytest.fixture
def golden():
    return need_shared(GOLDEN)


@pytest.fixture
def write_cfg(tmp_path):
    """write_cfg(text, name="net.cfg") -> path of a cfg file in a temporary folder."""
    def write(text, name="net.cfg"):
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


def use_float64(monkeypatch):
    """Make every layer allocate float64 buffers (layers take their dtype from their module's
    F32 name) and the network keep float64 inputs and truths, so that central differences are
    accurate to ~1e-9 in the gradient checks."""
    import minidarknet.layers as layers_package
    from minidarknet.network import Network
    for info in pkgutil.iter_modules(layers_package.__path__):
        module = importlib.import_module(f"minidarknet.layers.{info.name}")
        if hasattr(module, "F32"):
            monkeypatch.setattr(module, "F32", np.float64)

    def as_input(self, x):
        image = (self.c, self.h, self.w) if self.c * self.h * self.w == self.inputs else None
        x = np.asarray(x, np.float64)
        return np.ascontiguousarray(x.reshape((-1,) + (image or (self.inputs,))))

    def as_truth(self, truth, rows):
        return np.ascontiguousarray(truth, np.float64).reshape(rows, self.truths)

    monkeypatch.setattr(Network, "_as_input", as_input)
    monkeypatch.setattr(Network, "_as_truth", as_truth)


@pytest.fixture
def f64(monkeypatch):
    use_float64(monkeypatch)
    return np.float64
