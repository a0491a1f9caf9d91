"""Hostile and careless input (issue 9): only regular files are read, each with a size bound,
a weights file at most what the network reads; the network's memory is budgeted at build time.
Every refusal is one line (exit status 2 from the CLI) and comes before anything is read."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minidarknet
from conftest import ROOT
from minidarknet.cli import main
from minidarknet.errors import CfgError, DataError, ImageError, MiniDarknetError, WeightsError
from minidarknet.files import TEXT_LIMIT

MLP = ROOT / "cfg" / "mlp.cfg"
SAMPLE = ROOT / "data" / "sample.jpg"


def cli(*args):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture
def zero(tmp_path):
    """A link to /dev/zero (reading it never ends)."""
    def link(name):
        path = tmp_path / name
        path.symlink_to("/dev/zero")
        return path
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero on this system")
    return link


@pytest.fixture
def fifo(tmp_path):
    """A FIFO with no writer (reading it blocks forever)."""
    def make(name):
        path = tmp_path / name
        os.mkfifo(path)
        return path
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    return make


def test_weights_from_dev_zero_is_refused_in_one_line(zero, capsys):
    assert cli("run", MLP, SAMPLE, "--weights", zero("z.weights")) == 2
    one_line_error(capsys, "z.weights", "character device", "not a regular file")


def test_weights_fifo_does_not_block(fifo):
    # in a separate process with a timeout: reading a FIFO with no writer would hang the suite
    path = fifo("f.weights")
    done = subprocess.run([sys.executable, "-m", "minidarknet", "run", str(MLP), str(SAMPLE),
                           "--weights", str(path)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {path}: cannot read: it is a FIFO (named pipe), not a regular file"]


def test_weights_padded_far_beyond_the_network_is_refused_before_reading(tmp_path):
    net = minidarknet.load(MLP)
    path = tmp_path / "padded.weights"
    net.save_weights(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(8 << 30)             # sparse: 8 GiB on paper, nothing written
    with pytest.raises(WeightsError) as caught:
        minidarknet.load(MLP, path)
    message = str(caught.value)
    assert f"the file has {8 << 30} bytes, the network needs at most" in message
    assert "\n" not in message
    # a partial load reads only what the layers take, never the 8 GiB
    net = minidarknet.load(MLP, path, partial=True)
    assert net.seen == 0


@pytest.mark.parametrize("version", [(2 ** 30, 0, 0), (0, 5000, 0), (0, 2, 10 ** 9)])
def test_absurd_header_versions_are_refused(tmp_path, version):
    net = minidarknet.load(MLP)
    path = tmp_path / "w.weights"
    net.save_weights(path)
    data = bytearray(path.read_bytes())
    data[:12] = np.array(version, "<i4").tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="is not a Darknet weights file"):
        net.load_weights(path, partial=True)


def test_cfg_from_a_device_a_fifo_or_too_large_is_refused(zero, fifo, tmp_path):
    for path, words in ((zero("z.cfg"), "character device"), (fifo("f.cfg"), "FIFO")):
        with pytest.raises(CfgError) as caught:
            minidarknet.load(path)
        assert str(caught.value).startswith(f"{path}: cannot read: it is a") and \
            words in str(caught.value)
    big = tmp_path / "big.cfg"
    with open(big, "wb") as f:
        f.truncate(TEXT_LIMIT + 1)
    with pytest.raises(CfgError, match="MINIDARKNET_MAX_FILE_MB"):
        minidarknet.load(big)


def test_max_file_mb_raises_the_text_limit(tmp_path, monkeypatch):
    big = tmp_path / "big.cfg"
    big.write_bytes(b"[net]\ninputs=4\n[connected]\noutput=2\n" + b"#" * TEXT_LIMIT)
    with pytest.raises(CfgError, match="allowed"):
        minidarknet.load(big)
    monkeypatch.setenv("MINIDARKNET_MAX_FILE_MB", str(2 * TEXT_LIMIT >> 20))
    assert minidarknet.load(big).layers[0].outputs == 2


def test_tree_file_from_dev_zero_is_a_cfg_error_at_the_key(zero, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    zero("zero.tree")
    cfg = tmp_path / "t.cfg"
    cfg.write_text("[net]\nbatch=1\ninputs=8\n\n[softmax]\ntree=zero.tree\n")
    with pytest.raises(CfgError) as caught:
        minidarknet.load(cfg)
    assert str(caught.value).startswith(f"{cfg}:6: [softmax] tree=zero.tree: cannot open the "
                                        f"tree file") and "character device" in str(caught.value)


def test_data_train_list_from_dev_zero_is_refused(zero, tmp_path, capsys):
    zero("train.txt")
    data = tmp_path / "d.data"
    data.write_text(f"classes=2\ntrain={tmp_path / 'train.txt'}\nlabels={tmp_path / 'l.txt'}\n")
    (tmp_path / "l.txt").write_text("a\nb\n")
    assert cli("train", MLP, data, "--max-batches", 1) == 2
    one_line_error(capsys, "train.txt", "character device")


def test_experiment_weights_from_dev_zero_fails_that_run_in_one_line(zero, tmp_path):
    from minidarknet.experiment import run_one
    record = run_one({"index": 0, "name": "run01", "params": {}, "cfg": str(MLP),
                      "data": str(tmp_path / "none.npz"), "valid": None, "overrides": {},
                      "train": {"weights": str(zero("w.weights")), "max_batches": 1},
                      "out": str(tmp_path / "out")})
    assert record["status"].startswith("error: ") and "character device" in record["status"]
    assert "\n" not in record["status"]


def test_names_and_images_from_devices_are_refused(zero, fifo, capsys):
    assert cli("run", MLP, SAMPLE, "--names", zero("n.names")) == 2
    one_line_error(capsys, "n.names", "character device")
    with pytest.raises(ImageError, match="FIFO"):
        from minidarknet.image import load_image
        load_image(fifo("f.jpg"))


# ---------------------------------------------------------------------- memory budget

def test_network_over_the_memory_limit_is_refused_at_build(monkeypatch):
    monkeypatch.setenv("MINIDARKNET_MAX_MEMORY", "200K")
    with pytest.raises(CfgError) as caught:
        minidarknet.load(ROOT / "cfg" / "demo-shapes.cfg", batch=64)
    message = str(caught.value)
    assert "\n" not in message and "MINIDARKNET_MAX_MEMORY (200.0 KiB)" in message
    assert "largest: layer 0 (convolutional)" in message


def test_max_memory_argument_and_batch_changes_are_budgeted():
    net = minidarknet.load(ROOT / "cfg" / "demo-shapes.cfg", batch=1, max_memory="64M")
    inference = sum(net.memory_needed(batch=100).values())
    training = sum(net.memory_needed(batch=100, train=True).values())
    assert training > 2 * inference > 0
    # set_batch to a batch whose buffers exceed the limit: refused before allocating
    big = 64 * 2 ** 20 // (inference // 100) * 2
    with pytest.raises(MiniDarknetError, match=r"running this network needs .* with batch "
                                               rf"{big}, more than max_memory"):
        net.forward(np.zeros((big, 3, 32, 32), np.float32))
    assert net.batch == 1 and net.layers[0].output.shape[0] == 1


def test_training_batch_over_the_budget_is_refused_before_reading_data(tmp_path, capsys,
                                                                        monkeypatch):
    monkeypatch.setenv("MINIDARKNET_MAX_MEMORY", "4G")
    cfg = tmp_path / "big.cfg"
    cfg.write_text((ROOT / "cfg" / "demo-shapes.cfg").read_text().replace(
        "batch=", "batch=20000\n#", 1))
    assert cli("train", cfg, tmp_path / "missing.data", "--max-batches", 1) == 2
    one_line_error(capsys, "training this network needs", "batch 20000",
                   "MINIDARKNET_MAX_MEMORY")
