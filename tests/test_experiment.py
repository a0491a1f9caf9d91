"""Experiments: reading the YAML, expanding the sweep, running, and what is written."""
import csv
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from minidarknet import experiment as ex
from minidarknet.cli import main as cli_main
from minidarknet.errors import MiniDarknetError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "l2norm-backward.yaml"
MLP = ROOT / "cfg" / "mlp.cfg"


def write_yaml(tmp_path, text, name="exp.yaml"):
    (tmp_path / "mlp.cfg").write_text(MLP.read_text())
    path = tmp_path / name
    path.write_text(text)
    return path


BASIC = """
cfg: mlp.cfg
data: {generate: arrays, classes: 3, shape: [1, 8, 8], train: 20, valid: 10}
train:
  max_batches: 5
  seed: [0, 1]
overrides:
  l2norm.backward: [darknet, exact]
  net.learning_rate: 0.05
"""


def fake_train(calls):
    """A stand-in for minidarknet.train: a loss curve that depends on the settings."""
    def train(cfg, data, *, out=None, overrides=None, progress=False, max_batches=10, seed=0,
              **other):
        calls.append(dict(cfg=cfg, data=data, out=out, overrides=overrides,
                          max_batches=max_batches, seed=seed, other=other))
        rate = float((overrides or {}).get("net.learning_rate", 0.1))
        bonus = 0.5 if (overrides or {}).get("l2norm.backward") == "exact" else 0.0
        losses = [2.0 / (1 + (rate + bonus) * i) + 0.01 * seed for i in range(max_batches)]
        avg = list(np.cumsum(losses) / np.arange(1, max_batches + 1))
        weights = Path(out) / "mlp_final.weights"
        weights.write_bytes(b"w")
        return SimpleNamespace(weights=str(weights), iterations=max_batches, losses=losses,
                               avg_losses=avg, rates=[rate] * max_batches, seconds=0.25,
                               net=None)
    return train


@pytest.fixture
def stub_train(monkeypatch):
    calls = []
    monkeypatch.setattr(ex, "_train_function", lambda: fake_train(calls))
    return calls


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------- reading
def test_load_experiment_reads_fixed_and_swept_values(tmp_path):
    spec = ex.load_experiment(write_yaml(tmp_path, BASIC))
    assert spec.name == "exp"
    assert spec.cfg == str(tmp_path / "mlp.cfg")
    assert spec.train == {"max_batches": 5}
    assert spec.overrides == {"net.learning_rate": 0.05}
    assert [(a.key, a.values, a.group) for a in spec.axes] == [
        ("seed", [0, 1], "train"), ("l2norm.backward", ["darknet", "exact"], "overrides")]


def test_expand_runs_is_every_combination_last_axis_fastest(tmp_path):
    spec = ex.load_experiment(write_yaml(tmp_path, BASIC))
    runs = ex.expand_runs(spec)
    assert [r["name"] for r in runs] == ["run01", "run02", "run03", "run04"]
    assert [r["params"] for r in runs] == [
        {"seed": 0, "l2norm.backward": "darknet"}, {"seed": 0, "l2norm.backward": "exact"},
        {"seed": 1, "l2norm.backward": "darknet"}, {"seed": 1, "l2norm.backward": "exact"}]
    assert runs[3]["train"] == {"max_batches": 5, "seed": 1}
    assert runs[3]["overrides"] == {"net.learning_rate": 0.05, "l2norm.backward": "exact"}


def test_a_list_inside_the_sweep_list_is_one_list_value(tmp_path):
    spec = ex.experiment_from_dict({"cfg": str(MLP), "data": str(MLP),
                                    "overrides": {"net.steps": [[100, 200], [50, 60]]}})
    runs = ex.expand_runs(spec)
    assert [r["overrides"]["net.steps"] for r in runs] == [[100, 200], [50, 60]]


@pytest.mark.parametrize("text, message", [
    ("cfg: mlp.cfg\n", "'data' is missing"),
    ("data: x.npz\n", "'cfg' is missing"),
    ("cfg: nope.cfg\ndata: mlp.cfg\n", "nope.cfg does not exist"),
    ("cfg: mlp.cfg\ndata: nope.npz\n", "nope.npz does not exist"),
    ("cfg: mlp.cfg\ndata: mlp.cfg\nepochs: 3\n", "unknown key 'epochs'"),
    ("cfg: mlp.cfg\ndata: mlp.cfg\ntrain: {lr: 1}\n", "train: unknown setting 'lr'"),
    ("cfg: mlp.cfg\ndata: mlp.cfg\noverrides: {learning_rate: 1}\n",
     "overrides: override 'learning_rate': expected net.KEY"),
    ("cfg: mlp.cfg\ndata: mlp.cfg\noverrides: {net.batch: []}\n", "empty list sweeps nothing"),
    ("cfg: mlp.cfg\ndata: {generate: digits}\n", "'digits' is not one of shapes"),
    ("cfg: mlp.cfg\ndata: mlp.cfg\ntrain: [1]\n", "'train' must be a mapping"),
    ("cfg: [mlp.cfg\n", "exp.yaml:2: not valid YAML"),
    ("- 1\n", "expected a mapping"),
])
def test_bad_experiment_files_name_the_problem(tmp_path, text, message):
    with pytest.raises(ex.ExperimentError) as info:
        ex.load_experiment(write_yaml(tmp_path, text))
    assert message in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "exp.yaml"))


def test_an_override_that_matches_no_section_fails_before_training(tmp_path, stub_train):
    path = write_yaml(tmp_path, BASIC.replace("l2norm.backward", "convolutional.size"))
    with pytest.raises(MiniDarknetError, match="'convolutional.size' matches no section"):
        ex.run_experiment(path, tmp_path / "out", echo=lambda line: None)
    assert stub_train == []


# ---------------------------------------------------------------------------------- running
def test_run_writes_table_curves_and_plot(tmp_path, stub_train):
    lines = []
    records = ex.run_experiment(write_yaml(tmp_path, BASIC), tmp_path / "out",
                                echo=lines.append)
    out = tmp_path / "out"
    assert len(stub_train) == 4
    first = stub_train[0]
    assert first["max_batches"] == 5 and first["seed"] == 0
    assert first["overrides"] == {"net.learning_rate": 0.05, "l2norm.backward": "darknet"}
    assert first["data"].endswith("train.npz") and Path(first["data"]).exists()
    assert first["out"] == str((out / "runs" / "run01").resolve())

    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == ["run", "seed", "l2norm.backward", "status", "final_loss",
                             "final_avg_loss", "iterations", "seconds", "weights", "curve"]
    assert [(r["run"], r["seed"], r["l2norm.backward"], r["status"]) for r in rows] == [
        ("run01", "0", "darknet", "ok"), ("run02", "0", "exact", "ok"),
        ("run03", "1", "darknet", "ok"), ("run04", "1", "exact", "ok")]
    expected_last = 2.0 / (1 + 0.55 * 4)
    assert float(rows[1]["final_loss"]) == pytest.approx(expected_last)
    assert rows[1]["iterations"] == "5"
    assert float(rows[1]["final_avg_loss"]) == pytest.approx(records[1]["final_avg_loss"])

    curve = read_csv(out / rows[1]["curve"])
    assert [int(r["iteration"]) for r in curve] == [1, 2, 3, 4, 5]
    assert float(curve[-1]["loss"]) == pytest.approx(expected_last)
    assert float(curve[0]["rate"]) == pytest.approx(0.05)
    assert set(curve[0]) == {"iteration", "loss", "avg_loss", "rate"}

    with Image.open(out / "loss.png") as im:
        assert im.size[0] > 900 and im.size[1] >= 500
        colours = {c for _, c in im.convert("RGB").getcolors(1 << 20)}
    for colour in [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]:
        assert colour in colours        # one line per run, in the palette's colours
    text = "\n".join(lines)
    assert "exp: 4 runs one after the other" in text
    assert "run04" in text and "l2norm.backward" in text
    assert (out / "experiment.json").exists()


def test_generated_data_is_reused_by_a_second_run(tmp_path, stub_train):
    path = write_yaml(tmp_path, BASIC)
    ex.run_experiment(path, tmp_path / "out", echo=lambda line: None)
    data = Path(stub_train[0]["data"])
    stamp = data.stat().st_mtime_ns
    ex.run_experiment(path, tmp_path / "out", echo=lambda line: None)
    assert Path(stub_train[-1]["data"]) == data and data.stat().st_mtime_ns == stamp


def test_a_failing_run_is_reported_and_the_others_go_on(tmp_path, monkeypatch):
    def train(cfg, data, *, overrides=None, **settings):
        if overrides.get("l2norm.backward") == "exact":
            raise MiniDarknetError("loss is NaN at iteration 3")
        return fake_train([])(cfg, data, overrides=overrides, **settings)
    monkeypatch.setattr(ex, "_train_function", lambda: train)
    lines = []
    records = ex.run_experiment(write_yaml(tmp_path, BASIC), tmp_path / "out",
                                echo=lines.append)
    assert [r["status"] for r in records] == ["ok", "error: loss is NaN at iteration 3"] * 2
    rows = read_csv(tmp_path / "out" / "results.csv")
    assert rows[1]["status"] == "error: loss is NaN at iteration 3"
    assert rows[1]["final_loss"] == ""
    assert "error: loss is NaN" in "\n".join(lines)


def test_cli_runs_the_experiment_and_exits_1_when_a_run_failed(tmp_path, stub_train, capsys):
    path = write_yaml(tmp_path, BASIC)
    with pytest.raises(SystemExit) as info:
        cli_main(["experiment", str(path), "--out", str(tmp_path / "o")])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "run01" in out and "final_loss" in out
    assert (tmp_path / "o" / "results.csv").exists()
    with pytest.raises(SystemExit) as info:
        cli_main(["experiment", str(tmp_path / "missing.yaml")])
    assert info.value.code == 2
    assert "missing.yaml: cannot read" in capsys.readouterr().err


def test_scheduler_without_dask_is_a_one_line_error(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_dask(name, *args, **kwargs):
        if name.startswith("dask"):
            raise ImportError("No module named 'dask'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_dask)
    with pytest.raises(MiniDarknetError, match=r"pip install 'minidarknet\[dask\]'"):
        ex.dask_client("tcp://127.0.0.1:8786")


def test_dask_gives_the_same_results_as_a_local_run(tmp_path, stub_train):
    if importlib.util.find_spec("distributed") is None:
        pytest.skip("dask[distributed] is not installed (pip install 'minidarknet[dask]')")
    from dask.distributed import LocalCluster
    path = write_yaml(tmp_path, BASIC)
    local = ex.run_experiment(path, tmp_path / "local", echo=lambda line: None)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        remote = ex.run_experiment(path, tmp_path / "dask", scheduler=cluster.scheduler_address,
                                   echo=lambda line: None)
    assert [r["curve"] for r in remote] == [r["curve"] for r in local]
    a, b = read_csv(tmp_path / "local" / "results.csv"), read_csv(tmp_path / "dask" / "results.csv")
    for row in a + b:
        del row["seconds"], row["weights"]
    assert a == b


# ---------------------------------------------------------------------------------- real runs
def test_shipped_example_produces_the_table_curves_and_plot(tmp_path, capsys):
    out = tmp_path / "example"
    with pytest.raises(SystemExit) as info:
        cli_main(["experiment", str(EXAMPLE), "--out", str(out), "--jobs", "2"])
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert "l2norm-backward: 6 runs in 2 processes" in printed
    rows = read_csv(out / "results.csv")
    assert [(r["run"], r["l2norm.backward"], r["net.learning_rate"]) for r in rows] == [
        (f"run{i + 1:02d}", mode, rate)
        for i, (mode, rate) in enumerate((m, r) for m in ("darknet", "scales", "exact")
                                         for r in ("0.1", "0.02"))]
    for row in rows:
        curve = read_csv(out / row["curve"])
        assert len(curve) == int(row["iterations"]) > 0
        assert float(curve[-1]["loss"]) == pytest.approx(float(row["final_loss"]), rel=1e-6)
        assert row["run"] in printed
    exact = [r for r in rows if r["l2norm.backward"] == "exact"]
    for row in exact:
        assert row["status"] == "ok" and row["iterations"] == "500"
        assert float(row["top1"]) > 0.9             # it learns the synthetic classes
        assert float(row["final_avg_loss"]) < 0.5 * float(read_csv(out / row["curve"])[0]["loss"])
        assert Path(row["weights"]).exists()
    with Image.open(out / "loss.png") as im:
        assert im.format == "PNG" and im.size[0] > 900


def test_processes_and_dask_give_the_same_results_as_one_after_the_other(tmp_path):
    text = EXAMPLE.read_text().replace("cfg: ../cfg/mlp.cfg", f"cfg: {MLP}")
    text = text.replace("max_batches: 500", "max_batches: 40")
    path = tmp_path / "small.yaml"
    path.write_text(text)
    quiet = dict(echo=lambda line: None)
    serial = ex.run_experiment(path, tmp_path / "serial", **quiet)
    parallel = ex.run_experiment(path, tmp_path / "parallel", jobs=2, **quiet)
    assert [r["curve"] for r in parallel] == [r["curve"] for r in serial]
    assert [r["metrics"] for r in parallel] == [r["metrics"] for r in serial]
    if importlib.util.find_spec("distributed") is None:
        pytest.skip("dask[distributed] is not installed (pip install 'minidarknet[dask]')")
    from dask.distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        remote = ex.run_experiment(path, tmp_path / "dask", scheduler=cluster.scheduler_address,
                                   **quiet)
    assert [r["curve"] for r in remote] == [r["curve"] for r in serial]
    assert [r["metrics"] for r in remote] == [r["metrics"] for r in serial]


def test_valid_true_needs_data_with_a_validation_part(tmp_path, stub_train):
    np.savez(tmp_path / "plain.npz", x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    np.savez(tmp_path / "split.npz", x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64),
             x_valid=np.zeros((2, 64), np.float32), y_valid=np.zeros(2, np.int64))
    base = "cfg: mlp.cfg\nvalid: true\ntrain: {max_batches: 2}\n"
    with pytest.raises(ex.ExperimentError, match="valid: true needs data with a validation"):
        ex.run_experiment(write_yaml(tmp_path, base + "data: plain.npz\n"), tmp_path / "a",
                          echo=lambda line: None)
    spec = ex.load_experiment(write_yaml(tmp_path, base + "data: split.npz\n"))
    assert ex.prepare_data(spec, tmp_path / "b") == (str(tmp_path / "split.npz"),) * 2


# ---------------------------------------------------------------------------------- the plot
def test_ticks_are_round_numbers_covering_the_range():
    from minidarknet.plot import format_tick, log_ticks, nice_ticks
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(1, 500, 8) == [100, 200, 300, 400, 500]
    assert nice_ticks(0.013, 0.0171) == [0.013, 0.014, 0.015, 0.016, 0.017]
    assert nice_ticks(3, 3) == [3]
    assert log_ticks(0.01, 100) == [0.01, 0.1, 1, 10, 100]
    assert log_ticks(0.013, 1.6) == [0.02, 0.05, 0.1, 0.2, 0.5, 1]
    assert format_tick(0.30000000000000004, 0.1) == "0.3"
    assert format_tick(2000, 500) == "2000"
    assert format_tick(0, 0.1) == "0"


def test_plot_draws_every_curve_with_nan_values(tmp_path):
    from minidarknet.plot import PALETTE, plot_curves
    x = np.arange(1, 101)
    curves = [("falls", x, 10.0 ** (-x / 25)), ("nan in the middle", x,
                                                np.where((x > 40) & (x < 50), np.nan, 0.5))]
    path = plot_curves(str(tmp_path / "p.png"), curves, title="t")
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))
    for colour in PALETTE[:2]:
        assert (pixels == colour).all(axis=2).sum() > 50
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_curves(str(tmp_path / "q.png"), [])
