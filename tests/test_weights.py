"""Darknet .weights files (spec section 6): header versions, per-layer order, cutoff, truncated
and over-long files, atomic saving, byte-identical load/save round trips."""
import os
import warnings

import numpy as np
import pytest

import minidarknet
from minidarknet import DarknetWarning, WeightsError
from minidarknet import weights as weights_module
from conftest import GOLDEN, need_shared

CFG = """[net]
batch=2
width=3
height=1
channels=1

[connected]
output=2
activation=linear

[connected]
output=3
batch_normalize=1
activation=linear

[softmax]
"""
# layer 0: biases[2], weights[2][3]; layer 1: biases[3], weights[3][2], scales[3],
# rolling_mean[3], rolling_variance[3]
COUNTS = [(("biases", 2), ("weights", 6)),
          (("biases", 3), ("weights", 6), ("scales", 3), ("rolling_mean", 3),
           ("rolling_variance", 3))]
TOTAL = sum(n for layer in COUNTS for _, n in layer)      # 26


def header(major=0, minor=2, revision=0, seen=0, wide=True):
    return (np.array([major, minor, revision], "<i4").tobytes() +
            np.array([seen], "<u8" if wide else "<u4").tobytes())


def body(count=TOTAL, start=1):
    return np.arange(start, start + count, dtype="<f4").tobytes()


def make_net(text=CFG, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minidarknet.loads(text, **options)


def load(tmp_path, data, text=CFG, cutoff=None, name="w.weights", seed=None):
    path = tmp_path / name
    path.write_bytes(data)
    net = make_net(text, seed=seed)
    net.load_weights(path, cutoff=cutoff)
    return net, path


def collect_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught if issubclass(w.category, DarknetWarning)]


def check_layer_order(net, start=1):
    """Values 1, 2, 3, ... were written in file order: check where each landed."""
    value = start
    for layer, arrays in zip(net.layers, COUNTS):
        for name, count in arrays:
            expected = np.arange(value, value + count, dtype=np.float32)
            np.testing.assert_array_equal(getattr(layer, name).ravel(), expected, err_msg=name)
            value += count


# ------------------------------------------------------------------ header versions

@pytest.mark.parametrize("version,wide", [((0, 2, 0), True), ((0, 2, 5), True), ((1, 0, 0), True),
                                          ((0, 1, 0), False), ((0, 0, 0), False)])
def test_header_width_follows_the_version(tmp_path, version, wide):
    seen = 123456 if not wide else 2**33 + 5
    net, _ = load(tmp_path, header(*version, seen=seen, wide=wide) + body())
    assert net.seen == seen
    assert net.weights_version == version
    check_layer_order(net)


def test_version_0_1_has_a_16_byte_header(tmp_path):
    data = header(0, 1, 0, seen=64, wide=False) + body()
    assert len(data) == 16 + 4 * TOTAL
    net, path = load(tmp_path, data)
    check_layer_order(net)
    out = tmp_path / "out.weights"
    net.save_weights(out)
    assert out.read_bytes() == data


@pytest.mark.parametrize("version", [(1001, 0, 0), (0, 1001, 0)])
def test_major_or_minor_above_1000_transposes_connected_weights(tmp_path, version):
    # pjreddie: the 1000 rule also makes `seen` 4 bytes; the file holds weights as [in][out].
    stored = np.arange(1, 7, dtype="<f4")              # layer 0 weights, [in=3][out=2]
    data = (header(*version, seen=8, wide=False) + np.array([.5, -.5], "<f4").tobytes() +
            stored.tobytes() + body(TOTAL - 8, start=100))
    net, path = load(tmp_path, data)
    np.testing.assert_array_equal(net.layers[0].weights, stored.reshape(3, 2).T)
    np.testing.assert_array_equal(net.layers[0].biases, [.5, -.5])
    # the second layer's weights [3][2] are transposed too: stored [2][3]
    w1 = np.arange(103, 109, dtype=np.float32)
    np.testing.assert_array_equal(net.layers[1].weights, w1.reshape(2, 3).T)
    assert net.seen == 8
    out = tmp_path / "out.weights"
    net.save_weights(out)
    assert out.read_bytes() == data


def test_new_network_saves_version_0_2_0(tmp_path):
    net = make_net()
    net.seen = 40
    path = tmp_path / "new.weights"
    net.save_weights(path)
    data = path.read_bytes()
    assert data[:20] == header(0, 2, 0, seen=40)
    assert len(data) == 20 + 4 * TOTAL


@pytest.mark.parametrize("data,words", [
    (b"", ["0 bytes", "header"]),
    (np.array([0, 2], "<i4").tobytes(), ["8 bytes", "header"]),
    (np.array([0, 2, 0], "<i4").tobytes() + b"\0\0\0\0", ["seen", "byte offset 12"]),
    (header(-1, 2, 0) + body(), ["-1.2.0", "not a Darknet"]),
])
def test_bad_header(tmp_path, data, words):
    path = tmp_path / "bad.weights"
    path.write_bytes(data)
    with pytest.raises(WeightsError) as info:
        make_net().load_weights(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    for word in words:
        assert word in message


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="cannot read"):
        make_net().load_weights(tmp_path / "nothing.weights")


# ------------------------------------------------------------------ per-layer order

def test_connected_order_biases_weights_then_bn(tmp_path):
    net, _ = load(tmp_path, header() + body())
    check_layer_order(net)
    # weights are [out][in] row-major: y = x @ W.T + b
    np.testing.assert_array_equal(net.layers[0].weights, [[3, 4, 5], [6, 7, 8]])


def test_loaded_weights_are_used_in_forward(tmp_path):
    text = CFG.split("[connected]\noutput=3")[0]          # only the first connected layer
    data = header() + np.array([.5, -1, 1, 2, 3, -1, 0, 1], "<f4").tobytes()
    net, _ = load(tmp_path, data, text=text)
    out = net.forward(np.array([[1, 2, 3], [0, 0, 1]], np.float32))
    np.testing.assert_allclose(out.reshape(2, 2), [[14.5, 1], [3.5, 0]])


def test_parameter_free_layers_read_nothing(tmp_path):
    text = CFG.replace("[softmax]", "[dropout]\n[l2norm]\n[softmax]\n[cost]\n")
    net, _ = load(tmp_path, header() + body(), text=text)
    check_layer_order(net)


def test_dontload_skips_the_layer_in_the_file(tmp_path):
    # Darknet does not read a dontload layer at all: the file is taken not to contain it.
    text = CFG.replace("output=2\n", "output=2\ndontload=1\n")
    data = header() + body(18, start=100)
    net, _ = load(tmp_path, data, text=text, seed=5)
    fresh = make_net(text, seed=5)
    np.testing.assert_array_equal(net.layers[0].weights, fresh.layers[0].weights)
    np.testing.assert_array_equal(net.layers[0].biases, fresh.layers[0].biases)
    np.testing.assert_array_equal(net.layers[1].biases, [100, 101, 102])
    np.testing.assert_array_equal(net.layers[1].rolling_variance, [115, 116, 117])


def test_dontloadscales_reads_no_bn_arrays(tmp_path):
    text = CFG.replace("batch_normalize=1\n", "batch_normalize=1\ndontloadscales=1\n")
    net, _ = load(tmp_path, header() + body(8 + 9), text=text)
    np.testing.assert_array_equal(net.layers[1].weights.ravel(), np.arange(12, 18))
    np.testing.assert_array_equal(net.layers[1].scales, [1, 1, 1])


def test_dontsave_leaves_the_layer_out(tmp_path):
    text = CFG.replace("output=2\n", "output=2\ndontsave=1\n")
    net, _ = load(tmp_path, header() + body())
    saved = make_net(text)
    for src, dst in zip(net.layers, saved.layers):
        for (_, a), (_, b) in zip(src.parameters(), dst.parameters()):
            b[...] = a
    path = tmp_path / "saved.weights"
    saved.save_weights(path)
    assert path.read_bytes() == header() + body(18, start=9)


# ------------------------------------------------------------------ cutoff

def test_cutoff_loads_only_the_first_layers(tmp_path):
    # A file holding only layer 0 (as `darknet partial` writes), loaded with cutoff=1:
    data = header(seen=16) + body(8)
    (net, _), messages = collect_warnings(lambda: load(tmp_path, data, cutoff=1, seed=3))
    assert messages == []
    np.testing.assert_array_equal(net.layers[0].weights.ravel(), np.arange(3, 9))
    np.testing.assert_array_equal(net.layers[1].weights, make_net(seed=3).layers[1].weights)
    np.testing.assert_array_equal(net.layers[1].scales, [1, 1, 1])   # initial values
    assert net.seen == 16


def test_cutoff_with_a_full_file_ignores_the_rest_quietly(tmp_path):
    (net, _), messages = collect_warnings(lambda: load(tmp_path, header() + body(), cutoff=1))
    assert messages == []
    assert not net.layers[1].biases.any()      # biases start at 0 (Darknet's calloc)


def test_cutoff_through_load(tmp_path):
    cfg = tmp_path / "n.cfg"
    cfg.write_text(CFG)
    path = tmp_path / "w.weights"
    path.write_bytes(header() + body())
    net = minidarknet.load(cfg, path, cutoff=1)
    np.testing.assert_array_equal(net.layers[0].biases, [1, 2])
    assert not net.layers[1].biases.any()


def test_save_with_cutoff(tmp_path):
    net, _ = load(tmp_path, header(seen=4) + body())
    path = tmp_path / "partial.weights"
    net.save_weights(path, cutoff=1)
    assert path.read_bytes() == header(seen=4) + body(8)


# ------------------------------------------------------------------ short and long files

@pytest.mark.parametrize("floats,layer,array,missing", [
    (1, 0, "biases", 1), (2 + 5, 0, "weights", 1), (8 + 2, 1, "biases", 1),
    (8 + 3 + 6 + 3 + 1, 1, "rolling_mean", 2), (TOTAL - 1, 1, "rolling_variance", 1)])
def test_truncated_file_names_layer_array_and_missing_count(tmp_path, floats, layer, array,
                                                           missing):
    with pytest.raises(WeightsError) as info:
        load(tmp_path, header() + body(floats))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "w.weights"))
    assert f"layer {layer} (connected) {array}" in message
    assert f"({missing} missing)" in message


def test_truncated_inside_a_float(tmp_path):
    with pytest.raises(WeightsError, match=r"layer 1 \(connected\) rolling_variance.*1 missing"):
        load(tmp_path, header() + body()[:-2])


@pytest.mark.parametrize("floats,layer", [(0, 0), (8, 1)])
def test_file_ending_between_layers_warns(tmp_path, floats, layer):
    (net, path), messages = collect_warnings(
        lambda: load(tmp_path, header() + body(floats), seed=1))
    [message] = messages
    assert message.startswith(f"{path}: the file ends before layer {layer} (connected)")
    if layer == 1:
        np.testing.assert_array_equal(net.layers[0].biases, [1, 2])
    np.testing.assert_array_equal(net.layers[1].weights, make_net(seed=1).layers[1].weights)


def test_leftover_floats_are_an_error_unless_a_partial_load_is_asked_for(tmp_path):
    # a file for another network: an error naming both sizes (issue 9; it was a warning)
    path = tmp_path / "w.weights"
    path.write_bytes(header() + body(TOTAL + 3))
    with pytest.raises(WeightsError) as caught:
        make_net().load_weights(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert f"{20 + 4 * TOTAL + 12} bytes" in message and "partial" in message
    # partial=True: loads the layers and warns about what is left over
    net = make_net()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.load_weights(path, partial=True)
    [message] = [str(w.message) for w in caught]
    assert message.startswith(f"{path}: 3 floats (12 bytes) left over")
    assert f"byte offset {20 + 4 * TOTAL}" in message
    assert f"the file has {20 + 4 * TOTAL + 12} bytes, the network reads {20 + 4 * TOTAL}" \
        in message
    check_layer_order(net)


def test_exact_file_gives_no_warning(tmp_path):
    _, messages = collect_warnings(lambda: load(tmp_path, header() + body()))
    assert messages == []


# ------------------------------------------------------------------ atomic save

def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    net, _ = load(tmp_path, header() + body())
    path = tmp_path / "model.weights"
    path.write_bytes(b"old contents")

    def fail_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(weights_module.os, "fsync", fail_fsync)
    with pytest.raises(OSError):
        net.save_weights(path)
    assert path.read_bytes() == b"old contents"
    assert sorted(os.listdir(tmp_path)) == ["model.weights", "w.weights"]


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    net, _ = load(tmp_path, header() + body())
    path = tmp_path / "model.weights"
    path.write_bytes(b"old contents")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(weights_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        net.save_weights(path)
    assert path.read_bytes() == b"old contents"
    assert sorted(os.listdir(tmp_path)) == ["model.weights", "w.weights"]


def test_save_replaces_the_old_file(tmp_path):
    net, _ = load(tmp_path, header() + body())
    path = tmp_path / "model.weights"
    path.write_bytes(b"old contents")
    net.save_weights(str(path))
    assert path.read_bytes() == header() + body()
    assert sorted(os.listdir(tmp_path)) == ["model.weights", "w.weights"]


def test_save_into_missing_folder_is_an_error(tmp_path):
    with pytest.raises(OSError):
        make_net().save_weights(tmp_path / "no" / "such" / "dir.weights")


# ------------------------------------------------------------------ round trips

def test_round_trip_is_byte_identical(tmp_path):
    rng = np.random.default_rng(0)
    data = header(0, 2, 5, seen=2**40 + 3) + rng.standard_normal(TOTAL).astype("<f4").tobytes()
    net, _ = load(tmp_path, data)
    out = tmp_path / "again.weights"
    net.save_weights(out)
    assert out.read_bytes() == data


def test_round_trip_keeps_nan_and_inf_bits(tmp_path):
    values = np.arange(TOTAL, dtype="<f4")
    values[[0, 5, 20]] = [np.nan, np.inf, -0.0]
    data = header() + values.tobytes()
    net, _ = load(tmp_path, data)
    out = tmp_path / "again.weights"
    net.save_weights(out)
    assert out.read_bytes() == data


def _golden_cases():
    if not GOLDEN.exists():
        return ["(no golden data)"]
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "net.weights").exists())


@pytest.mark.parametrize("case", _golden_cases())
def test_golden_weights_round_trip(tmp_path, case):
    folder = need_shared(GOLDEN / case)
    net = make_net((folder / "net.cfg").read_text())
    for name in ("net.weights", "updated.weights", "iter3.weights"):
        source = folder / name
        if not source.exists():
            continue
        net.load_weights(source)
        out = tmp_path / name
        net.save_weights(out)
        assert out.read_bytes() == source.read_bytes(), name


def test_seen_wraps_in_a_4_byte_counter(tmp_path):
    net, _ = load(tmp_path, header(0, 1, 0, seen=7, wide=False) + body())
    net.seen = 2**32 + 9
    out = tmp_path / "wrapped.weights"
    net.save_weights(out)
    assert out.read_bytes()[:16] == header(0, 1, 0, seen=9, wide=False)


def test_saved_files_get_ordinary_permissions(tmp_path):
    # mkstemp's private 0600 must not leak into saved weights and pictures
    import os
    import stat
    from minidarknet.atomic import write_atomic
    old = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.weights"
        write_atomic(fresh, b"abc")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        kept = tmp_path / "kept.weights"
        kept.write_bytes(b"old")
        kept.chmod(0o640)
        write_atomic(kept, b"new")
        assert kept.read_bytes() == b"new"
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    finally:
        os.umask(old)
