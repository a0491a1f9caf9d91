"""The README's Python examples run as written (from the project root, with a scratch folder
for the files they write)."""
import os
import re
import shutil

import pytest

from conftest import ROOT


def python_blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_python_examples():
    assert len(python_blocks()) >= 1


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(index, tmp_path, monkeypatch):
    # the examples name files relative to the project root (cfg/, data/): a copy of those in
    # a scratch folder keeps what they write (out.weights ...) out of the checkout
    for folder in ("cfg", "data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme_example"}
    exec(compile(python_blocks()[index], f"README.md python block {index}", "exec"), namespace)
    if "out" in namespace and "net" in namespace:       # the first example's claims
        net, out = namespace["net"], namespace["out"]
        assert out.shape == (32, 10, 1, 1)
        assert os.path.getsize("out.weights") == 20 + 4 * net.parameter_count()
        # train_step returns the cost per sample (one sub-batch here: net.cost / batch)
        assert namespace["cost"] == pytest.approx(net.cost / net.batch, rel=1e-6)
        assert isinstance(namespace["dets"], list)
