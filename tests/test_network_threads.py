"""One network shared by threads (issue 9): calls are serialised by the network's lock, so
two threads -- with different batch sizes -- get exactly the outputs they get alone."""
import threading

import numpy as np

import minidarknet
from conftest import ROOT


def test_two_threads_with_different_batch_sizes_get_correct_outputs():
    net = minidarknet.load(ROOT / "cfg" / "demo-shapes.cfg", seed=2)
    for layer in net.layers:                       # finite, varied outputs
        if getattr(layer, "rolling_variance", None) is not None:
            layer.rolling_variance[...] = 1
    rng = np.random.default_rng(0)
    inputs = {1: rng.random((1, 3, 32, 32), np.float32),
              5: rng.random((5, 3, 32, 32), np.float32)}
    expected = {b: net.predict(x) for b, x in inputs.items()}
    assert not np.allclose(expected[1][0], expected[5][0])
    wrong, errors = [], []

    def work(batch, rounds=5):
        try:
            for _ in range(rounds):
                out = net.predict(inputs[batch])
                if out.shape != expected[batch].shape or not np.array_equal(out, expected[batch]):
                    wrong.append(batch)
                with net.lock:                      # the documented way to keep the view
                    view = net.forward(inputs[batch])
                    if not np.array_equal(view, expected[batch]):
                        wrong.append(batch)
        except Exception as e:                      # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(b,)) for b in (1, 5, 1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and wrong == []


def test_train_step_and_forward_from_two_threads_do_not_interleave():
    net = minidarknet.load(ROOT / "cfg" / "mlp.cfg", seed=1)
    rng = np.random.default_rng(1)
    x = rng.random((net.batch * net.subdivisions, net.inputs), np.float32)
    truth = np.eye(net.truths, dtype=np.float32)[rng.integers(0, net.truths, len(x))]
    # (train_step trains with the current batch: the probe keeps it)
    probe = rng.random((net.batch, net.inputs), np.float32)
    inside = []
    real_forward = net.layers[0].forward

    def spy(n):
        inside.append(threading.get_ident())
        real_forward(n)
        inside.append(threading.get_ident())

    net.layers[0].forward = spy
    errors = []

    def guarded(call, rounds):
        try:
            for _ in range(rounds):
                call()
        except Exception as e:                      # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=guarded, args=(lambda: net.train_step(x, truth), 5)),
               threading.Thread(target=guarded, args=(lambda: net.predict(probe), 20))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # every layer-0 forward ran start to end without the other thread's in between
    assert all(inside[i] == inside[i + 1] for i in range(0, len(inside), 2))
    assert np.isfinite(net.predict(probe)).all()
