"""Checkpoint I/O (issue 9): --out checked and locked before training, I/O errors as one
line naming the file with the previous checkpoint intact, a sidecar never paired with weights
it was not written for, temporary files of killed runs cleaned up."""
import errno
import os
import warnings

import numpy as np
import pytest

import minidarknet
import importlib
train_module = importlib.import_module("minidarknet.train")
from minidarknet.cli import main
from minidarknet.train import Trainer, load_state, state_path

CFG = """[net]
batch=4
subdivisions=1
width=8
height=8
channels=1
learning_rate=0.1
momentum=0.9
decay=0.0005
max_batches=3

[connected]
output=3
activation=linear

[softmax]
"""


@pytest.fixture
def small(tmp_path):
    cfg = tmp_path / "small.cfg"
    cfg.write_text(CFG)
    rng = np.random.default_rng(1)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.random((12, 1, 8, 8), np.float32), y=rng.integers(0, 3, 12))
    return cfg, data


def cli(*args):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def test_out_that_cannot_be_a_folder_is_refused_before_training(small, tmp_path, capsys):
    cfg, data = small
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli("train", cfg, data, "--out", blocker / "sub", "-q") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {blocker / 'sub'}: cannot write checkpoints there") and \
        "\n" not in err


def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(small, tmp_path, capsys,
                                                                 monkeypatch):
    cfg, data = small
    out = tmp_path / "out"
    assert cli("train", cfg, data, "--out", out, "--max-batches", 1, "-q") == 0
    final = out / "small_final.weights"
    before = final.read_bytes(), (out / "small_final.state.npz").read_bytes()
    real_write = train_module.write_atomic

    def full(path, data_):
        if os.path.basename(path).startswith("small_final"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data_)

    monkeypatch.setattr(train_module, "write_atomic", full)
    capsys.readouterr()
    assert cli("train", cfg, data, "--out", out, "--weights", final, "--max-batches", 2,
               "-q") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {out / 'small_final.state.npz'}: cannot write the checkpoint: "
                   f"No space left on device")
    assert (final.read_bytes(), (out / "small_final.state.npz").read_bytes()) == before


def test_a_second_run_on_the_same_out_is_refused(small, tmp_path, capsys):
    cfg, data = small
    out = tmp_path / "out"
    first = Trainer(cfg, data, out=out)           # holds the folder until its run ends
    assert cli("train", cfg, data, "--out", out, "-q") == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out}: another training run is writing checkpoints there " \
                  f"(give each run its own --out)"
    first.run()
    assert cli("train", cfg, data, "--out", out, "-q", "--max-batches", 1) == 0   # free again


def test_sidecar_of_other_weights_is_never_used(small, tmp_path):
    cfg, data = small
    out = tmp_path / "out"
    result = minidarknet.train(cfg, data, out=out, max_batches=2)
    weights = result.weights
    net = minidarknet.load(cfg, weights)
    assert load_state(net, weights) is not None          # the pair as written
    # a run killed between the two renames: the new sidecar beside the old weights
    older = minidarknet.train(cfg, data, max_batches=2, seed=7).net
    older.seen = net.seen                                 # same `seen`: only the hash differs
    older.save_weights(weights)
    net = minidarknet.load(cfg, weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_state(net, weights) is None
    assert any("written for another version of" in str(w.message) for w in caught)
    assert all(not (a != 0).any() for _, a in train_module.momentum_arrays(net))


def test_orphan_temporary_files_are_removed(small, tmp_path):
    cfg, data = small
    out = tmp_path / "out"
    out.mkdir()
    orphans = [out / ".tmp-abc123small_last.weights", out / ".tmp-x9small_last.state.npz"]
    for path in orphans:
        path.write_bytes(b"\0" * 1000)
    keep = out / ".tmp-notes.txt"
    keep.write_text("not ours")
    Trainer(cfg, data, out=out)._close_out()
    assert not any(p.exists() for p in orphans) and keep.exists()
