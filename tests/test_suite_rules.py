"""The suite's own rules: without the reference data the shared-dependent tests skip, but under
CI=true they fail (a CI run must not turn into a green run of skips)."""
import os
import subprocess
import sys

import pytest

import conftest
from conftest import ROOT


def test_need_shared_skips_locally_and_fails_under_ci(tmp_path, monkeypatch):
    missing = tmp_path / "missing"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="reference data not found"):
        conftest.need_shared(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        conftest.need_shared(missing)
    assert conftest.need_shared(tmp_path) == tmp_path          # present: no skip, no failure


def test_an_empty_parameter_set_fails_under_ci(tmp_path):
    # test_corpus parametrizes over the cfg files in ../shared: with the folder absent the
    # parameter set is empty, which pytest skips at collection time (conftest makes that a
    # failure under CI=true)
    env = dict(os.environ, CI="true", MINIDARKNET_SHARED=str(tmp_path / "missing"))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_corpus.py", "-k", "every_cfg_builds"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "CI=true, so this is a failure" in run.stdout
    assert "skipped" not in run.stdout
