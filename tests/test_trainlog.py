"""`minidarknet train --map-every N`: mAP during training, chart.png and train.csv."""
import csv
import subprocess
import sys

import pytest
from PIL import Image

from minidarknet.valid import validate
from tests.conftest import ROOT
from tests.squares import square_detector, squares_set


def run_cli(args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_map_every_logs_the_map_of_the_weights_at_that_iteration(tmp_path):
    cfg, weights = square_detector(tmp_path)
    data = squares_set(tmp_path, 8)
    common = ["train", str(cfg), str(data), "-w", str(weights), "--max-batches", "4",
              "--backup-every", "2", "-q"]
    done = run_cli(common + ["--out", "a", "--map-every", "2"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "mAP@0.5 at iteration 2:" in done.stderr and "mAP@0.5 at iteration 4:" in done.stderr
    with open(tmp_path / "a" / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert list(rows[0]) == ["iteration", "loss", "avg_loss", "lr", "map"]
    assert rows[0]["map"] == "" and rows[2]["map"] == ""
    # the mAP logged is `valid`'s mAP of the weights saved at that iteration
    for row, name in ((rows[1], "squares_2"), (rows[3], "squares_final")):
        report = validate(cfg, data, weights=tmp_path / "a" / f"{name}.weights")
        assert float(row["map"]) == pytest.approx(report.detail.map, abs=1e-6)
    maps = [float(rows[1]["map"]), float(rows[3]["map"])]
    assert 0.5 < max(maps) <= 1
    best = (tmp_path / "a" / "squares_best.weights").read_bytes()
    which = "squares_2" if maps[0] >= maps[1] else "squares_final"
    assert best == (tmp_path / "a" / f"{which}.weights").read_bytes()
    chart = Image.open(tmp_path / "a" / "chart.png")
    assert chart.format == "PNG" and chart.height == 400 + 400
    # validating on the side leaves training alone: same weights as a run without it
    plain = run_cli(common + ["--out", "b"], tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert (tmp_path / "b" / "squares_final.weights").read_bytes() == \
        (tmp_path / "a" / "squares_final.weights").read_bytes()
    assert not (tmp_path / "b" / "chart.png").exists()


def test_map_every_is_for_detectors(tmp_path):
    (tmp_path / "c.cfg").write_text("[net]\nbatch=2\ninputs=3\nmax_batches=2\n\n"
                                    "[connected]\noutput=2\nactivation=linear\n\n[softmax]\n")
    import numpy as np
    np.savez(tmp_path / "c.npz", x=np.eye(3, dtype=np.float32)[:2], y=np.array([0, 1]))
    done = run_cli(["train", "c.cfg", "c.npz", "--map-every", "1", "--out", "o"], tmp_path)
    assert done.returncode == 2 and "--map-every" in done.stderr and "detectors" in done.stderr
