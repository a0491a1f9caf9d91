"""`minidarknet run` on a few pictures (issue 11): the compiled kernels are skipped only for
the command's duration and only when loading them would not pay; the printed timings keep
reading the picture, the forward pass and the one-off costs apart."""
import json
import sys

import pytest

from minidarknet import kernels
from test_cli_run import SAMPLE, cli
from conftest import ROOT


@pytest.fixture
def fresh_kernels(monkeypatch):
    """A process that has not loaded numba or the kernels yet."""
    monkeypatch.setattr(kernels, "_compiled", None)
    monkeypatch.delenv("MINIDARKNET_KERNELS", raising=False)
    monkeypatch.delitem(sys.modules, "numba", raising=False)


def test_a_short_run_skips_the_kernels_only_while_it_runs(fresh_kernels):
    with kernels.skipped_for_short_run(1):
        assert not kernels.enabled()
        assert kernels.status().startswith("off for 1 picture (loading them")
    assert kernels._skipping is None
    with kernels.skipped_for_short_run(kernels.KERNELS_PAY_AFTER_IMAGES):
        assert kernels._skipping is None


def test_the_environment_or_loaded_kernels_keep_them(fresh_kernels, monkeypatch):
    monkeypatch.setenv("MINIDARKNET_KERNELS", "numba")
    with kernels.skipped_for_short_run(1):
        assert kernels._skipping is None
    monkeypatch.delenv("MINIDARKNET_KERNELS")
    monkeypatch.setattr(kernels, "_compiled", False)       # already decided in this process
    with kernels.skipped_for_short_run(1):
        assert kernels._skipping is None


def test_run_prints_reading_forward_and_one_off_costs_apart(capsys, tmp_path):
    assert cli("run", ROOT / "cfg" / "l2.cfg", SAMPLE) == 0
    captured = capsys.readouterr()
    line = [l for l in captured.out.splitlines() if "predicted in" in l]
    assert len(line) == 1 and "(picture read and resized in " in line[0]
    assert "one-off costs: " in captured.err and "to import numpy and minidarknet" in captured.err
    assert cli("run", ROOT / "cfg" / "l2.cfg", SAMPLE, "--json") == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["read_seconds"] >= 0 and record["seconds"] >= 0
    assert kernels._skipping is None
