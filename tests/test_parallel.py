"""Threaded forward passes (minidarknet/parallel.py): the same numbers as the serial pass for
every way a convolution is split (row chunks, filter blocks, direct 1x1, groups, Winograd),
BLAS's thread count restored afterwards (also after an error and with concurrent networks), and
layers that rely on BLAS's own threads getting them back."""
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from minidarknet import ops, parallel
from minidarknet.layers.connected import Connected

from test_conv import build, net_cfg, randomize


def blas_threads():
    return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]


LAYERS = {
    "row-chunks": ("[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\npad=1\n"
                   "activation=leaky\n", dict(w=40, h=36, c=3)),
    "filter-blocks": ("[convolutional]\nfilters=40\nsize=3\nstride=2\npad=1\n"
                      "activation=logistic\n", dict(w=9, h=8, c=6)),
    "direct-1x1": ("[convolutional]\nbatch_normalize=1\nfilters=36\nsize=1\n"
                   "activation=linear\n", dict(w=7, h=7, c=20)),
    "groups": ("[convolutional]\nfilters=12\nsize=3\npad=1\ngroups=3\nactivation=mish\n",
               dict(w=30, h=30, c=6)),
    "winograd": ("[convolutional]\nbatch_normalize=1\nfilters=24\nsize=3\npad=1\n"
                 "activation=leaky\n", dict(w=21, h=20, c=64)),
    "maxpool": ("[maxpool]\nsize=2\nstride=2\n", dict(w=64, h=64, c=16)),
}


def forward(text, x, threads, monkeypatch, train=False):
    monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
    net = build(text, gradients="darknet")
    randomize(net, np.random.default_rng(1))
    out = net.forward(x, train=train).copy()
    return out, net


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("threads", [2, 3])
def test_threaded_forward_equals_the_serial_one(name, threads, monkeypatch):
    body, shape = LAYERS[name]
    monkeypatch.setattr(ops, "CHUNK_BYTES", 20000)      # several row chunks on small maps
    monkeypatch.setattr(ops, "MIN_CHUNK_COLS", 32)
    monkeypatch.setattr(ops, "PARALLEL_MIN_BYTES", 0)
    text = net_cfg(body, batch=2, **shape)
    x = np.random.default_rng(2).normal(size=(2, shape["c"], shape["h"], shape["w"]))
    x = x.astype(np.float32)
    serial, net = forward(text, x, 1, monkeypatch)
    if name == "winograd":
        assert net.layers[0].winograd is not None
    threaded, _ = forward(text, x, threads, monkeypatch)
    # A product split into blocks of filters may round differently in BLAS (~1e-6); a wrong
    # block or chunk would be off by the size of the values.
    np.testing.assert_allclose(threaded, serial, rtol=1e-5, atol=1e-5)


def test_threaded_training_forward_equals_the_serial_one(monkeypatch):
    body, shape = LAYERS["row-chunks"]
    monkeypatch.setattr(ops, "CHUNK_BYTES", 20000)
    monkeypatch.setattr(ops, "MIN_CHUNK_COLS", 32)
    text = net_cfg(body, batch=2, **shape)
    x = np.random.default_rng(3).normal(size=(2, 3, 36, 40)).astype(np.float32)
    serial, _ = forward(text, x, 1, monkeypatch, train=True)
    threaded, _ = forward(text, x, 2, monkeypatch, train=True)
    np.testing.assert_allclose(threaded, serial, rtol=1e-5, atol=1e-6)


def test_blas_threads_are_restored_after_a_forward(monkeypatch):
    before = blas_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    inside = []
    original = ops.ConvOp.forward

    def spy(self, *args, **kwargs):
        inside.append((blas_threads(), parallel.workers()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ops.ConvOp, "forward", spy)
    net = build(net_cfg("[convolutional]\nfilters=4\nsize=3\npad=1\n"))
    net.forward(np.zeros((2, 4, 5, 6), np.float32))
    assert inside and all(t == [1] * len(t) and w == 2 for t, w in inside)
    assert blas_threads() == before
    assert parallel.workers() == 1


def test_an_error_inside_a_threaded_task_propagates_and_restores_blas(monkeypatch):
    before = blas_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")

    def second_fails():
        raise RuntimeError("boom in a worker")

    with pytest.raises(RuntimeError, match="boom in a worker"):
        with parallel.region():
            parallel.run([lambda: None, second_fails])
    assert blas_threads() == before
    assert parallel.workers() == 1


def test_layers_relying_on_blas_threads_get_them_back(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    seen = []
    original = Connected.forward

    def spy(self, net):
        seen.append((blas_threads(), parallel.workers()))
        return original(self, net)

    monkeypatch.setattr(Connected, "forward", spy)
    net = build(net_cfg("[convolutional]\nfilters=4\nsize=3\npad=1\n\n"
                        "[connected]\noutput=3\n"))
    before = blas_threads()
    net.forward(np.zeros((2, 4, 5, 6), np.float32))
    assert seen == [(before, 1)]
    assert blas_threads() == before


def test_concurrent_networks_give_their_serial_results(monkeypatch):
    """Two threads running networks at once share the BLAS limit (the last to leave restores
    it) and each gets the numbers it gets alone."""
    body, shape = LAYERS["row-chunks"]
    text = net_cfg(body, batch=2, **shape)
    x = np.random.default_rng(4).normal(size=(2, 3, 36, 40)).astype(np.float32)
    expected, _ = forward(text, x, 1, monkeypatch)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    before = blas_threads()
    results, errors = [], []

    def worker():
        try:
            net = build(text, gradients="darknet")
            randomize(net, np.random.default_rng(1))
            for _ in range(5):
                results.append(net.forward(x).copy())
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 15
    for out in results:
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert blas_threads() == before


@pytest.mark.parametrize("total,parts,align", [(10, 3, 1), (7, 2, 8), (100, 4, 8), (1, 5, 1),
                                               (33, 2, 8), (5, 8, 1)])
def test_bounds_cover_the_range_in_aligned_nonempty_parts(total, parts, align):
    ranges = parallel.bounds(total, parts, align)
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(b > a for a, b in ranges)
    assert all(a2 == b1 for (_, b1), (a2, _) in zip(ranges, ranges[1:]))
    assert len(ranges) <= parts
    assert all(b % align == 0 for _, b in ranges[:-1])
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= align
