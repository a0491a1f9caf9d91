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


def need_shared(path=SHARED):
    if not Path(path).exists():
        pytest.skip(f"reference data not found at {path} (the ../shared folder beside the "
                    f"checkout; set MINIDARKNET_SHARED to point elsewhere)")
    return Path(path)


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
