"""Shared fixtures: where ../shared lives (reference data from Darknet), tiny cfg writers."""
import os
import sys
from pathlib import Path

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
