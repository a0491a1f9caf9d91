"""Darknet's training loop: golden iterations, the Trainer, resume, checkpoints, signals, NaN."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import minidarknet
from minidarknet.data import ArrayData, DataSet
from minidarknet.errors import DarknetWarning, MiniDarknetError
from minidarknet.train import (Trainer, TrainingInterrupted, checkpoint_names, momentum_arrays,
                               state_path, train)
from tests.conftest import GOLDEN, ROOT, need_shared


# --------------------------------------------------------------------------- helpers

def golden_case(name):
    folder = need_shared(GOLDEN / name)
    case = json.loads((folder / "case.json").read_text())
    x = np.fromfile(folder / "input.f32", "<f4").reshape(case["input"]["shape"])
    truth = np.fromfile(folder / "truth.f32", "<f4").reshape(case["truth"]["shape"])
    return folder, case, x, truth


def assert_params_close(net, expected):
    """golden_check's tolerance per array: max|a-b| <= 1e-4*max|expected| + 1e-6."""
    for got, want in zip(net.layers, expected.layers):
        for (name, a), (_, b) in zip(got.parameters(), want.parameters()):
            tol = 1e-4 * np.abs(b).max() + 1e-6
            assert np.abs(a - b).max() <= tol, f"layer {got.index} {name}"
    assert net.seen == expected.seen


def assert_params_equal(a_net, b_net):
    for a, b in zip(a_net.layers, b_net.layers):
        for (name, x), (_, y) in zip(a.parameters(), b.parameters()):
            assert np.array_equal(x, y), f"layer {a.index} {name}"


SMALL_CFG = """[net]
batch=4
subdivisions=2
width=8
height=8
channels=1
learning_rate=0.05
momentum=0.9
decay=0.0005
burn_in=2
policy=steps
steps=4
scales=.5
max_batches=6

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[dropout]
probability=.3

[connected]
output=3
activation=linear

[softmax]
"""


def small_npz(path, rows=12, seed=1):
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.random((rows, 1, 8, 8), np.float32),
             y=rng.integers(0, 3, rows))
    return path


@pytest.fixture
def small(tmp_path):
    cfg = tmp_path / "small.cfg"
    cfg.write_text(SMALL_CFG)
    return cfg, small_npz(tmp_path / "data.npz")


# --------------------------------------------------------------------------- golden

@pytest.mark.parametrize("name", ["connected_mlp", "small_classifier"])
def test_three_train_steps_reproduce_darknet_iter3(name):
    folder, case, x, truth = golden_case(name)
    net = minidarknet.load(folder / "net.cfg", folder / "net.weights")
    costs = [net.train_step(x, truth) for _ in range(3)]
    expected_costs = np.load(folder / "expected.npz")["cost_iters"]
    # train_network returns the summed cost / rows; *net->cost is per mini-batch.
    np.testing.assert_allclose(np.array(costs) * case["batch"], expected_costs, rtol=1e-5)
    assert_params_close(net, minidarknet.load(folder / "net.cfg", folder / "iter3.weights"))


def test_trainer_on_npz_reproduces_darknet_and_train_step(tmp_path):
    folder, case, x, truth = golden_case("connected_mlp")
    np.savez(tmp_path / "golden.npz", x=x, y=truth)
    result = train(folder / "net.cfg", tmp_path / "golden.npz", weights=folder / "net.weights",
                   max_batches=3, out=tmp_path / "out", shuffle=False)
    assert result.status == "finished" and result.iterations == 3
    expected = minidarknet.load(folder / "net.cfg", folder / "iter3.weights")
    assert_params_close(result.net, expected)
    saved = minidarknet.load(folder / "net.cfg", result.weights)
    assert_params_close(saved, expected)

    direct = minidarknet.load(folder / "net.cfg", folder / "net.weights")
    losses = [direct.train_step(x, truth) for _ in range(3)]
    assert result.losses == losses
    assert_params_equal(result.net, direct)
    # Darknet's running average: avg = loss on the first iteration, then avg*.9 + loss*.1.
    avg = losses[0]
    for got, loss in zip(result.avg_losses, losses):
        avg = avg * .9 + loss * .1
        assert got == pytest.approx(avg)
    assert result.rates == [pytest.approx(0.1)] * 3


def test_shuffled_epochs_are_the_batches_train_step_sees(small):
    cfg, data = small
    trainer = Trainer(cfg, data, max_batches=5, seed=3)
    source = trainer.data
    rows = np.concatenate([source.rows(i, 4, 3) for i in range(3)])
    assert sorted(rows[:12]) == list(range(12))          # one epoch = a permutation
    assert not np.array_equal(rows[:12], np.arange(12))
    result = trainer.run()

    net = minidarknet.load(cfg, seed=3)
    direct = []
    for i in range(5):
        x, truth = source.train_batch(i, 4, 3)
        net.rng = np.random.default_rng([3, i, 1])        # the trainer's per-step seed
        direct.append(net.train_step(x, truth))
    assert result.losses == direct
    assert_params_equal(result.net, net)


# --------------------------------------------------------------------------- resume

def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(small, tmp_path):
    cfg, data = small
    whole = train(cfg, data, out=tmp_path / "whole", seed=5)
    assert whole.iterations == 6
    first = train(cfg, data, out=tmp_path / "part", seed=5, max_batches=3, backup_every=3)
    assert first.iterations == 3
    last = tmp_path / "part" / "small_last.weights"
    assert os.path.exists(state_path(last))
    rest = train(cfg, data, out=tmp_path / "rest", seed=5, weights=last)
    assert rest.start_iteration == 3 and rest.iterations == 6
    assert first.losses + rest.losses == whole.losses
    assert first.avg_losses + rest.avg_losses == whole.avg_losses
    assert (tmp_path / "rest" / "small_final.weights").read_bytes() == \
        (tmp_path / "whole" / "small_final.weights").read_bytes()

    # Without the sidecar the momentum restarts from zero (Darknet's behaviour) and the
    # weights differ: the sidecar is what makes resuming exact.
    os.remove(state_path(last))
    cold = train(cfg, data, seed=5, weights=last)
    assert cold.losses[0] == whole.losses[3]
    assert cold.losses[1:] != whole.losses[4:]


def test_sidecar_of_another_iteration_is_ignored_with_a_warning(small, tmp_path):
    cfg, data = small
    train(cfg, data, out=tmp_path, seed=0, max_batches=4, backup_every=2)
    shutil.copy(tmp_path / "small_2.state.npz", tmp_path / "small_4.state.npz")
    with pytest.warns(DarknetWarning, match="seen=8 but the weights have seen=16"):
        Trainer(cfg, data, weights=tmp_path / "small_4.weights")


def test_clear_restarts_the_iteration_count(small, tmp_path):
    cfg, data = small
    done = train(cfg, data, out=tmp_path, max_batches=2)
    again = Trainer(cfg, data, weights=done.weights, clear=True, max_batches=2)
    assert again.iteration == 0
    finished = Trainer(cfg, data, weights=done.weights, max_batches=2).run()
    assert finished.losses == [] and finished.iterations == 2


# --------------------------------------------------------------------------- checkpoints

def test_darknet_checkpoint_schedule():
    assert checkpoint_names(100) == ["100", "last"]
    assert checkpoint_names(900) == ["900", "last"]
    assert checkpoint_names(1000) == ["last"]            # numbered again only at 10000
    assert checkpoint_names(10000) == ["10000", "last"]
    assert checkpoint_names(150) == []
    assert checkpoint_names(6, backup_every=3) == ["6", "last"]
    assert checkpoint_names(7, backup_every=3) == []
    assert checkpoint_names(100, backup_every=0) == []


def test_checkpoint_files_and_their_contents(tmp_path):
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text("[net]\nbatch=1\ninputs=4\nlearning_rate=0.01\nmax_batches=250\n\n"
                   "[connected]\noutput=2\nactivation=linear\n\n[softmax]\n")
    np.savez(tmp_path / "d.npz", x=np.eye(4, dtype=np.float32), y=np.array([0, 1, 0, 1]))
    result = train(cfg, tmp_path / "d.npz", out=tmp_path / "out")
    names = sorted(f for f in os.listdir(tmp_path / "out") if f.endswith(".weights"))
    assert names == ["tiny_100.weights", "tiny_200.weights", "tiny_final.weights",
                     "tiny_last.weights"]
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith(".tmp")]
    seen = {n: minidarknet.load(cfg, tmp_path / "out" / n).seen for n in names}
    assert seen == {"tiny_100.weights": 100, "tiny_200.weights": 200,
                    "tiny_final.weights": 250, "tiny_last.weights": 200}
    assert result.weights == str(tmp_path / "out" / "tiny_final.weights")


# --------------------------------------------------------------------------- stopping

class NanAt(DataSet):
    """Wraps a data set; the batch of one iteration holds a NaN."""
    kind = "array"

    def __init__(self, inner, bad_iteration):
        self.inner, self.bad = inner, bad_iteration

    def __len__(self):
        return len(self.inner)

    def train_batch(self, iteration, count, seed):
        x, truth = self.inner.train_batch(iteration, count, seed)
        if iteration == self.bad:
            x = x.copy()
            x[0, 0, 0, 0] = np.nan
        return x, truth


def test_nan_loss_stops_and_keeps_the_last_good_weights(small, tmp_path):
    cfg, data = small
    reference = train(cfg, data, max_batches=3, seed=2)
    net = minidarknet.load(cfg, seed=2)
    source = ArrayData(np.load(data)["x"], np.load(data)["y"], net, "data")
    with pytest.warns(DarknetWarning, match="loss became nan at iteration 4"):
        result = Trainer(cfg, NanAt(source, 3), out=tmp_path, seed=2).run()
    assert result.status == "diverged"
    assert "last good weights (iteration 3)" in result.message
    assert result.losses == reference.losses and result.iterations == 3
    assert result.weights == str(tmp_path / "small_last.weights")
    assert not os.path.exists(tmp_path / "small_final.weights")
    saved = minidarknet.load(cfg, result.weights)
    assert saved.seen == 12
    assert_params_equal(saved, reference.net)
    assert_params_equal(result.net, reference.net)       # the network was put back too


def test_nan_in_the_first_iteration_saves_nothing(small, tmp_path):
    cfg, data = small
    net = minidarknet.load(cfg)
    source = ArrayData(np.load(data)["x"], np.load(data)["y"], net, "data")
    with pytest.warns(DarknetWarning, match="no iteration had completed"):
        result = Trainer(cfg, NanAt(source, 0), out=tmp_path).run()
    assert result.status == "diverged" and result.weights is None
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".weights")]


def test_callbacks_see_every_iteration_and_can_stop(small, tmp_path):
    cfg, data = small
    seen = []

    def record(trainer, info):
        seen.append(info)
        return info.iteration < 3

    result = train(cfg, data, out=tmp_path, callbacks=[record])
    assert [i.iteration for i in seen] == [1, 2, 3]
    assert [i.seen for i in seen] == [4, 8, 12]
    assert [i.loss for i in seen] == result.losses
    assert all(i.images_per_second > 0 and i.seconds > 0 for i in seen)
    # burn_in=2, power 4: rate = lr * (batch/2)^4 for batch < 2, then lr until step 4.
    assert [i.rate for i in seen] == pytest.approx([0.05 * 0.5 ** 4, 0.05, 0.05])
    assert result.status == "stopped" and result.iterations == 3
    assert minidarknet.load(cfg, result.weights).seen == 12


def test_an_exception_saves_the_last_completed_iteration(small, tmp_path):
    cfg, data = small

    def fail(trainer, info):
        if info.iteration == 2:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom") as caught:
        train(cfg, data, out=tmp_path, callbacks=[fail])
    assert caught.value.checkpoint == str(tmp_path / "small_last.weights")
    assert minidarknet.load(cfg, caught.value.checkpoint).seen == 8


@pytest.mark.parametrize("inherited", [signal.default_int_handler, signal.SIG_IGN])
def test_keyboard_interrupt_from_python_saves_and_propagates(small, tmp_path, inherited):
    # the handler the suite inherits (SIG_IGN under nohup and some CI runners) is set here
    # explicitly, so the test does not depend on it, and both cases are covered
    cfg, data = small

    def interrupt(trainer, info):
        if info.iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)                         # the handler raises before this ends

    before = signal.signal(signal.SIGINT, inherited)
    try:
        with pytest.raises(TrainingInterrupted) as caught:
            train(cfg, data, out=tmp_path, callbacks=[interrupt])
        assert signal.getsignal(signal.SIGINT) is inherited      # put back as it was
    finally:
        signal.signal(signal.SIGINT, before)
    assert isinstance(caught.value, KeyboardInterrupt)
    assert caught.value.iteration == 2
    assert minidarknet.load(cfg, caught.value.checkpoint).seen == 8


def test_a_signal_inside_a_step_puts_back_the_previous_iteration(small, tmp_path):
    cfg, data = small
    reference = train(cfg, data, max_batches=2, seed=4)
    trainer = Trainer(cfg, data, out=tmp_path, seed=4)
    real_update, calls = trainer.net.update, []

    def update_then_sigterm():
        real_update()                  # iteration 3's weights are already changed ...
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)              # ... when the handler interrupts the step

    trainer.net.update = update_then_sigterm
    with pytest.raises(SystemExit) as caught:
        trainer.run()
    assert caught.value.code == 143 and caught.value.iteration == 2
    assert "SIGTERM at iteration 3: saved iteration 2" in caught.value.message
    saved = minidarknet.load(cfg, caught.value.checkpoint)
    assert saved.seen == 8
    assert_params_equal(saved, reference.net)
    assert_params_equal(trainer.net, reference.net)
    for (key, a), (_, b) in zip(momentum_arrays(trainer.net), momentum_arrays(reference.net)):
        assert np.array_equal(a, b), key


def test_no_max_batches_is_an_error(tmp_path):
    cfg = tmp_path / "n.cfg"
    cfg.write_text("[net]\nbatch=1\ninputs=4\n\n[connected]\noutput=2\n\n[softmax]\n")
    np.savez(tmp_path / "d.npz", x=np.eye(4, dtype=np.float32), y=np.array([0, 1, 0, 1]))
    with pytest.raises(MiniDarknetError, match="no max_batches"):
        Trainer(cfg, tmp_path / "d.npz")


# --------------------------------------------------------------------------- the command

SLOW_CFG = """[net]
batch=8
width=48
height=48
channels=3
learning_rate=0.001
max_batches=100000

[convolutional]
filters=8
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=8
size=3
stride=1
pad=1
activation=leaky

[avgpool]

[connected]
output=2
activation=linear

[softmax]
"""


def run_cli(args, cwd, **kwargs):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_train_command_finishes_and_reports(small, tmp_path):
    cfg, data = small
    done = run_cli(["train", str(cfg), str(data), "--max-batches", "2", "--out", "ck", "-q"],
                   tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 iterations (0 -> 2)" in done.stdout
    assert (tmp_path / "ck" / "small_final.weights").exists()


def test_train_command_nan_is_one_error_line_and_status_1(small, tmp_path):
    cfg, data = small
    arrays = dict(np.load(data))
    arrays["x"][:] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    done = run_cli(["train", str(cfg), "nan.npz", "--out", "ck", "-q"], tmp_path)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the loss became nan at iteration 1" in errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("signum, status, word", [(signal.SIGINT, 130, "interrupted"),
                                                  (signal.SIGTERM, 143, "terminated")])
def test_killing_a_run_leaves_a_checkpoint_of_the_last_iteration(tmp_path, signum, status,
                                                                   word):
    (tmp_path / "slow.cfg").write_text(SLOW_CFG)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((16, 3, 48, 48), np.float32),
             y=rng.integers(0, 2, 16))
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "train", "slow.cfg", "d.npz", "--out", "ck",
         "--backup-every", "1", "-q"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    out = tmp_path / "ck"

    def numbered():
        return sorted(int(f[5:-8]) for f in os.listdir(out) if f.startswith("slow_")
                      and f.endswith(".weights") and f[5:-8].isdigit()) if out.exists() else []

    try:
        deadline = time.time() + 60
        while len(numbered()) < 3 and time.time() < deadline and process.poll() is None:
            time.sleep(0.02)
        assert len(numbered()) >= 3, "training did not get going"
        completed = max(numbered())
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert f"{word}: {signal.Signals(signum).name} at iteration" in stderr
    last = out / "slow_last.weights"
    net = minidarknet.load(tmp_path / "slow.cfg", last)
    iteration = net.seen // 8
    assert iteration >= completed
    # The checkpoint is a consistent state: the same bytes as that iteration's own file.
    assert last.read_bytes() == (out / f"slow_{iteration}.weights").read_bytes()
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]
