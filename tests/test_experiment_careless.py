"""Experiment files written carelessly (issue 9): typos in override keys, absurd sweeps,
bad values, names that leave the output folder, too many jobs, warnings from the workers."""
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from minidarknet import experiment as ex
from minidarknet.cli import main as cli_main
from minidarknet.errors import CfgError, DarknetWarning

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "cfg" / "mlp.cfg"
DATA = "data: {generate: arrays, classes: 3, shape: [1, 8, 8], train: 20, valid: 10}\n"


def write_yaml(tmp_path, text, name="exp.yaml"):
    (tmp_path / "mlp.cfg").write_text(MLP.read_text())
    path = tmp_path / name
    path.write_text("cfg: mlp.cfg\n" + DATA + text)
    return path


def cli(*args):
    with pytest.raises(SystemExit) as exit_info:
        cli_main([str(a) for a in args])
    return exit_info.value.code


@pytest.fixture
def stub_train(monkeypatch):
    """minidarknet.train replaced by a function that records its calls and warns."""
    calls = []

    def train(cfg, data, *, out=None, overrides=None, progress=False, max_batches=3, seed=0,
              **other):
        calls.append(out)
        warnings.warn("the same warning\nover two lines", DarknetWarning)
        warnings.warn("the same warning\nover two lines", DarknetWarning)
        losses = [1.0] * max_batches
        return SimpleNamespace(weights=None, iterations=max_batches, losses=losses,
                               avg_losses=losses, rates=[0.1] * max_batches, seconds=0.0,
                               net=None)
    monkeypatch.setattr(ex, "_train_function", lambda: train)
    return calls


def test_override_key_typo_is_an_error_naming_the_nearest_key(tmp_path, stub_train, capsys):
    path = write_yaml(tmp_path, "overrides:\n  net.learnin_rate: [0.1, 0.01]\n")
    assert cli("experiment", path, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "override 'net.learnin_rate': [net] (line 4) does not read 'learnin_rate'; did " \
           "you mean 'net.learning_rate'?" in err
    assert stub_train == [] and not (tmp_path / "out" / "runs").exists()


def test_override_value_that_the_layer_cannot_take_fails_at_load(tmp_path, stub_train):
    path = write_yaml(tmp_path, "overrides:\n  net.learning_rate: [0.1, abc]\n")
    with pytest.raises(CfgError, match="learning_rate=abc: expected a number"):
        ex.run_experiment(ex.load_experiment(path), tmp_path / "out", echo=lambda line: None)
    assert stub_train == []


@pytest.mark.parametrize("setting,words", [
    ("max_batches: -5", "train: max_batches: -5 is not an integer >= 1"),
    ("seed: 1.5", "train: seed: 1.5 is not an integer >= 0"),
    ("seed: [0, x]", "train: seed: 'x' is not an integer >= 0"),
    ("gradients: exakt", "train: gradients: 'exakt' is not darknet or exact"),
])
def test_training_values_are_checked_when_the_file_is_read(tmp_path, setting, words):
    path = write_yaml(tmp_path, f"train:\n  {setting}\n")
    with pytest.raises(ex.ExperimentError, match=words.replace("[", r"\[")):
        ex.load_experiment(path)


@pytest.mark.parametrize("name", ["../../escape", "/tmp/x", "..", "a/b"])
def test_name_must_stay_inside_the_output_folder(tmp_path, name):
    path = write_yaml(tmp_path, f"name: '{name}'\n")
    with pytest.raises(ex.ExperimentError, match="must be a plain folder name"):
        ex.load_experiment(path)


def test_huge_sweep_is_refused_before_listing_runs_unless_max_runs_raises_it(
        tmp_path, stub_train, capsys):
    # 10^9 combinations: refused from the axis sizes alone, nothing listed or created
    axes = "".join(f"  layers[{i % 3}].batch_normalize{i}: [{', '.join(map(str, range(10)))}]\n"
                   for i in range(9))
    path = write_yaml(tmp_path, "train:\n  seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"
                                "overrides:\n" + axes)
    out = tmp_path / "out"
    assert cli("experiment", path, "--out", out) == 2
    err = capsys.readouterr().err
    assert "the sweep has 10000000000 runs" in err and "--max-runs" in err
    assert not out.exists()
    small = write_yaml(tmp_path, "train:\n  max_batches: 2\n  seed: [0, 1, 2, 3]\n", "s.yaml")
    assert cli("experiment", small, "--out", out, "--max-runs", 3) == 2
    assert cli("experiment", small, "--out", out, "--max-runs", 4) == 0
    assert len(stub_train) == 4


def test_run_folders_are_made_when_runs_start(tmp_path, stub_train, monkeypatch):
    path = write_yaml(tmp_path, "train:\n  max_batches: 2\n  seed: [0, 1, 2]\n")
    out = tmp_path / "out"
    existing = []
    real_run_one = ex.run_one

    def watch(run):
        existing.append(sorted(p.name for p in (out / "runs").glob("*")) if
                        (out / "runs").exists() else [])
        return real_run_one(run)

    monkeypatch.setattr(ex, "run_one", watch)
    ex.run_experiment(ex.load_experiment(path), out, echo=lambda line: None)
    assert existing == [[], ["run01"], ["run01", "run02"]]


def test_jobs_are_capped_with_a_warning_and_worker_warnings_shown_once(tmp_path, stub_train,
                                                                      capsys, monkeypatch):
    from minidarknet.commands import experiment as command_module
    monkeypatch.setattr(command_module, "_usable_cpus", lambda: 1)
    path = write_yaml(tmp_path, "train:\n  max_batches: 2\n  seed: [0, 1]\n")
    assert cli("experiment", path, "--out", tmp_path / "out", "--jobs", 500) == 0
    captured = capsys.readouterr()
    assert "warning: --jobs 500 capped at 1, the CPUs this process may use" in captured.err
    lines = captured.out.splitlines()
    assert lines.count("warning: the same warning over two lines") == 1
    assert not [l for l in lines + captured.err.splitlines() if "warnings.warn" in l]
