"""Robustness: random and mutated cfg files, weights files and images.

The only exceptions that may ever come out are minidarknet.MiniDarknetError subclasses with a
non-empty one-line message: never IndexError, ValueError, numpy errors, ZeroDivisionError,
MemoryError (absurd sizes are refused with a clear error) or a hang.

Every example runs under a time limit and, on Linux, under a cap on the address space, so an
absurd size is a MemoryError inside the test (which the library must report as a
MiniDarknetError) rather than a swap storm on the machine running the tests.  The examples are
derandomized so the suite is repeatable; set MINIDARKNET_FUZZ_EXAMPLES=N to run N random
examples per test instead.
"""
import contextlib
import io
import os
import re
import signal
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import minidarknet
from minidarknet import CfgError, MiniDarknetError
from minidarknet.image import load_image
from minidarknet.layers import LAYER_TYPES
from minidarknet.layers import base as layers_base
from conftest import CFG_CORPUS, GOLDEN

try:
    import resource
except ImportError:          # not on Windows: no address-space cap there
    resource = None

EXAMPLES = int(os.environ.get("MINIDARKNET_FUZZ_EXAMPLES", "0"))
SECONDS_PER_EXAMPLE = 30
ADDRESS_SPACE_HEADROOM = 3 * 2**30


def fuzz_settings(examples):
    return settings(max_examples=EXAMPLES or examples, deadline=None, derandomize=not EXAMPLES,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# ------------------------------------------------------------------ the guard

class Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise Hang(f"no answer within {SECONDS_PER_EXAMPLE} s")


@contextlib.contextmanager
def limited_address_space():
    """Cap this process's address space at what it uses now plus a few GiB (Linux): an
    absurd allocation then fails at once instead of thrashing the machine."""
    if resource is None or not os.path.exists("/proc/self/status"):
        yield
        return
    with open("/proc/self/status") as f:
        used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = used + ADDRESS_SPACE_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def only_clean_errors():
    """Let through only MiniDarknetError (checked for a one-line message); fail on a hang."""
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(SECONDS_PER_EXAMPLE)
    try:
        with limited_address_space(), warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    except MiniDarknetError as e:
        message = str(e)
        assert message.strip(), f"{type(e).__name__} with an empty message"
        assert "\n" not in message, f"multi-line message: {message!r}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def small(net):
    """Small enough to run (and to make the test's own input and truth arrays)."""
    values = sum(layer.outputs for layer in net.layers) * net.batch
    rows = net.batch * net.subdivisions
    return values < 300_000 and net.parameter_count() < 2_000_000 and rows <= 64 and \
        rows * (net.inputs + net.truths) < 1_000_000


def exercise(net, rng):
    """Forward, forward with a truth, a training step and a backward with a delta."""
    rows = net.batch * net.subdivisions
    x = rng.uniform(0, 1, (rows, net.inputs)).astype(np.float32)
    truth = rng.uniform(0, 1, (rows, net.truths)).astype(np.float32)
    net.forward(x[:net.batch])
    net.forward(x[:net.batch], truth[:net.batch])
    net.train_step(x, truth)
    net.forward(x[:1], truth[:1], train=True)
    net.backward()
    net.update()
    if net.output_layer.delta is not None:
        net.forward(x[:1])
        net.backward(np.ones(net.output.size, np.float32))


def build_and_run(text, gradients="darknet", run=True):
    with only_clean_errors():
        net = minidarknet.loads(text, path="fuzz.cfg", gradients=gradients, seed=0)
        if run and small(net):
            exercise(net, np.random.default_rng(0))


# ------------------------------------------------------------------ seed cfgs

OWN_CFGS = [
    """[net]
batch=2
width=4
height=3
channels=2
learning_rate=0.1
momentum=0.9
decay=0.0005

[connected]
output=6
activation=leaky
batch_normalize=1

[dropout]
probability=0.3

[l2norm]

[connected]
output=4
activation=linear

[softmax]
groups=2
temperature=2

[cost]
type=sse
""",
    """[net]
batch=2
subdivisions=2
width=5
height=5
channels=3
policy=steps
steps=2,4
scales=.5,.5
burn_in=2

[batchnorm]

[activation]
activation=mish

[avgpool]

[connected]
output=3
activation=logistic

[logistic]
""",
    """[net]
batch=1
inputs=6
learning_rate=.01
policy=poly
max_batches=10

[conn]
output=5
activation=tanh

[l2norm]
axis=sample
eps=1e-6
backward=exact

[soft]

[cost]
type=smooth
scale=.5
""",
]


def _real_cfgs():
    texts = []
    if GOLDEN.exists():
        texts += [p.read_text() for p in sorted(GOLDEN.glob("*/net.cfg"))]
    for name in ("pjreddie/tiny.cfg", "pjreddie/writing.cfg", "pjreddie/go.test.cfg",
                 "alexeyab/yolov4-tiny.cfg"):
        if (CFG_CORPUS / name).exists():
            texts.append((CFG_CORPUS / name).read_text())
    return texts


SEED_CFGS = OWN_CFGS + _real_cfgs()

# Values that stress the reader and the layers: zero, negative, absurd, non-numeric, lists.
# (Medium-large values such as 100000 filters are legal and only slow, so they are left out.)
VALUES = ["0", "1", "2", "3", "-1", "-2", "4", "7", "16", "0.5", "-0.5", "1.5", "1e-30",
          "99999999", "2147483647", "2147483648", "-2147483648", "1e9", "1e30", "inf", "-inf",
          "nan", "abc", "leaky", "linear", "logistic", "exact", "sample", "1,2", "-1,-1", ",",
          "0,0,0", "5,-100", "-7,3,99999999", "3#comment", "#", "=", "1=2", "[net]", "."]
SECTIONS = sorted(LAYER_TYPES) + ["net", "network", "xyz", "", "conv", "Gaussian_yolo"]
KEYS = sorted({"batch", "subdivisions", "width", "height", "channels", "inputs", "output",
               "filters", "size", "stride", "pad", "padding", "groups", "activation",
               "batch_normalize", "probability", "layers", "from", "mask", "anchors", "classes",
               "num", "temperature", "type", "scale", "axis", "eps", "backward", "policy",
               "steps", "scales", "learning_rate", "burn_in", "max_batches", "truth",
               "stopbackward", "dontload", "noloss", "spatial", "coords", "side"})


BENIGN = ["0", "1", "2", "3", "4", "5", "8", "-1", "-2", "-3", "0.5", "0.1", "linear", "leaky",
          "relu", "tanh", "logistic", "1,2", "-1,-2", "-1,0"]


def values():
    """Half plausible values (to get deeper into the layers), half hostile ones."""
    return st.one_of(st.sampled_from(BENIGN), st.sampled_from(VALUES))


@st.composite
def mutations(draw):
    """(kind, where, value) edits applied line by line to a seed cfg."""
    kind = draw(st.sampled_from(["value", "value", "value", "delete", "duplicate", "swap",
                                 "insert_key", "insert_section", "bytes"]))
    return kind, draw(st.integers(0, 10_000)), draw(st.integers(0, 10_000)), \
        draw(values()), draw(st.sampled_from(KEYS)), draw(st.sampled_from(SECTIONS))


def mutate(text, edits):
    lines = text.split("\n")
    for kind, i, j, value, key, section in edits:
        if not lines:
            lines = [""]
        i %= len(lines)
        if kind == "value":
            options = [k for k, line in enumerate(lines) if "=" in line]
            if options:
                k = options[i % len(options)]
                lines[k] = lines[k].split("=")[0] + "=" + value
        elif kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(j % len(lines), lines[i])
        elif kind == "swap":
            j %= len(lines)
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "insert_key":
            lines.insert(i, f"{key}={value}")
        elif kind == "insert_section":
            lines.insert(i, f"[{section}]")
        else:   # overwrite a few characters
            flat = "\n".join(lines)
            position = i % max(len(flat), 1)
            flat = flat[:position] + value + flat[position + len(value):]
            lines = flat.split("\n")
    return "\n".join(lines)


# ------------------------------------------------------------------ cfg fuzzing

@fuzz_settings(400)
@given(seed=st.sampled_from(range(len(SEED_CFGS))), edits=st.lists(mutations(), min_size=1,
                                                                     max_size=3),
       gradients=st.sampled_from(["darknet", "exact"]))
def test_mutated_cfgs(seed, edits, gradients):
    build_and_run(mutate(SEED_CFGS[seed], edits), gradients)


@st.composite
def random_cfg(draw):
    """A [net] section (usually a sane one), then random sections with random keys and, now
    and then, a line of random characters."""
    head = draw(st.sampled_from(["[net]\nwidth=3\nheight=3\nchannels=2\n", "[network]\ninputs=5\n",
                                 "[net]\nbatch=2\nwidth=4\nheight=2\nchannels=1\n", "", "[net]\n"]))
    lines = []
    for _ in range(draw(st.integers(1, 6))):
        lines.append(f"[{draw(st.sampled_from(SECTIONS))}]")
        for _ in range(draw(st.integers(0, 4))):
            if draw(st.integers(0, 9)) == 0:
                lines.append(draw(st.text(alphabet="[]=#;, \t\r-.0123456789abcnetx", max_size=12)))
            else:
                lines.append(f"{draw(st.sampled_from(KEYS))}={draw(values())}")
    return head + "\n".join(lines)


@fuzz_settings(400)
@given(text=random_cfg(), gradients=st.sampled_from(["darknet", "exact"]))
def test_random_cfgs(text, gradients):
    build_and_run(text, gradients)


@fuzz_settings(100)
@given(data=st.binary(max_size=400))
def test_random_cfg_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "random.cfg"
    path.write_bytes(data)
    with only_clean_errors():
        minidarknet.load(path)


@fuzz_settings(100)
@given(seed=st.sampled_from(range(len(SEED_CFGS))),
       flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                      max_size=6))
def test_mutated_cfg_bytes(tmp_path_factory, seed, flips):
    data = bytearray(SEED_CFGS[seed].encode())
    for position, byte in flips:
        data[position % len(data)] = byte
    path = tmp_path_factory.mktemp("cfg") / "mutated.cfg"
    path.write_bytes(bytes(data))
    with only_clean_errors():
        net = minidarknet.load(path, seed=0)
        if small(net):
            exercise(net, np.random.default_rng(1))


# ------------------------------------------------------------------ absurd sizes

NET = "[net]\nbatch=1\nwidth={w}\nheight={h}\nchannels={c}\n"

ABSURD = [
    (NET.format(w=99999999, h=4, c=1) + "[connected]\noutput=2\n", "width=99999999"),
    (NET.format(w=4, h=99999999, c=1) + "[connected]\noutput=2\n", "height=99999999"),
    (NET.format(w=40000, h=40000, c=3) + "[connected]\noutput=2\n", "40000 x 40000 x 3"),
    ("[net]\ninputs=2000000000\nbatch=4\n[connected]\noutput=2\n", "batch 4"),
    (NET.format(w=8, h=8, c=3) + "[connected]\noutput=99999999\n", "weights 99999999 x 192"),
    (NET.format(w=8, h=8, c=3) + "[connected]\noutput=2147483647\n", "2147483647"),
    (NET.format(w=8, h=8, c=3) + "[connected]\noutput=1e30\n", "out of range"),
]


@pytest.mark.parametrize("text,words", ABSURD)
def test_absurd_sizes_are_refused(text, words):
    with pytest.raises(CfgError) as info, limited_address_space():
        minidarknet.loads(text, path="big.cfg")
    message = str(info.value)
    assert message.startswith("big.cfg:") and words in message, message
    assert "\n" not in message


def test_arrays_over_half_the_memory_are_refused(monkeypatch):
    monkeypatch.setattr(layers_base, "physical_memory", lambda: 8 * 2**20)    # 8 MiB
    with pytest.raises(CfgError, match=r"\[connected\]: weights 1000 x 3000 = 3000000 values "
                                       r"needs 0\.0 GiB, more than half"):
        minidarknet.loads("[net]\ninputs=3000\n[connected]\noutput=1000\n", path="m.cfg")
    minidarknet.loads("[net]\ninputs=300\n[connected]\noutput=1000\n")       # 1.1 MiB: fine


@pytest.mark.parametrize("error", [MemoryError("Unable to allocate 64. GiB for an array"),
                                   ValueError("array is too big; `arr.size * arr.dtype."
                                              "itemsize` is larger than the maximum")])
def test_memory_error_while_building_is_a_cfg_error(monkeypatch, error):
    class Greedy(layers_base.Layer):
        def __init__(self, section, shape, net):
            raise error
    monkeypatch.setitem(LAYER_TYPES, "connected", Greedy)
    with pytest.raises(CfgError) as info:
        minidarknet.loads("[net]\ninputs=3\n[connected]\noutput=1\n", path="m.cfg")
    assert str(info.value).startswith("m.cfg:3: [connected]: not enough memory to build this "
                                      "layer (") and str(error)[:20] in str(info.value)


def test_memory_error_while_running_is_a_cfg_error(monkeypatch):
    net = minidarknet.loads("[net]\ninputs=3\n\n[connected]\noutput=2\n", path="r.cfg")

    def no_memory(self, net):
        raise MemoryError("Unable to allocate 9. TiB")
    monkeypatch.setattr(type(net.layers[0]), "forward", no_memory)
    with pytest.raises(CfgError, match=r"^r\.cfg:4: \[connected\]: not enough memory to run "
                                       r"layer 0 with batch 1"):
        net.forward(np.zeros(3, np.float32))


def test_other_value_errors_are_not_disguised(monkeypatch):
    net = minidarknet.loads("[net]\ninputs=3\n[connected]\noutput=2\n")

    def broken(self, net):
        raise ValueError("a real bug")
    monkeypatch.setattr(type(net.layers[0]), "forward", broken)
    with pytest.raises(ValueError, match="a real bug"):
        net.forward(np.zeros(3, np.float32))


# ------------------------------------------------------------------ weights fuzzing

WEIGHTS_CFG = OWN_CFGS[0]


def _weights_seeds():
    seeds = []
    net = minidarknet.loads(WEIGHTS_CFG, seed=0)
    seeds.append((WEIGHTS_CFG, _saved(net)))
    for case in ("connected_bn_train", "small_classifier", "shortcut_route_upsample_train"):
        folder = GOLDEN / case
        if folder.exists():
            seeds.append(((folder / "net.cfg").read_text(), (folder / "net.weights").read_bytes()))
    return seeds


def _saved(net):
    from minidarknet.weights import weights_bytes
    return weights_bytes(net)


WEIGHTS_SEEDS = _weights_seeds()


def load_and_run(tmp_path_factory, text, data):
    path = tmp_path_factory.mktemp("w") / "fuzz.weights"
    path.write_bytes(data)
    with only_clean_errors():
        net = minidarknet.loads(text, seed=0)
        net.load_weights(path)
        if small(net):
            exercise(net, np.random.default_rng(2))
        net.save_weights(path)


@fuzz_settings(100)
@given(data=st.binary(max_size=600))
def test_random_weights_bytes(tmp_path_factory, data):
    load_and_run(tmp_path_factory, WEIGHTS_CFG, data)


@fuzz_settings(120)
@given(seed=st.sampled_from(range(len(WEIGHTS_SEEDS))),
       kind=st.sampled_from(["truncate", "extend", "flip_header", "flip_body", "special"]),
       where=st.integers(0, 2**31), value=st.integers(0, 255), count=st.integers(1, 8))
def test_mutated_weights(tmp_path_factory, seed, kind, where, value, count):
    text, original = WEIGHTS_SEEDS[seed]
    data = bytearray(original)
    if kind == "truncate":
        data = data[:where % len(data)]
    elif kind == "extend":
        data += bytes([value]) * count
    elif kind == "flip_header":
        for k in range(count):
            data[(where + k) % 24] = (value + 37 * k) % 256
    elif kind == "flip_body":
        for k in range(count):
            data[(where + 7919 * k) % len(data)] = value
    else:   # NaN / inf / huge floats in the body
        body = np.frombuffer(bytes(data[20:]), "<f4").copy()
        specials = np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 0], np.float32)
        for k in range(count):
            body[(where + 104729 * k) % body.size] = specials[(value + k) % specials.size]
        data = data[:20] + bytearray(body.tobytes())
    load_and_run(tmp_path_factory, text, bytes(data))


# ------------------------------------------------------------------ image fuzzing

def _image_seeds():
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    seeds = []
    for fmt, mode in (("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("PNG", "P"),
                      ("PNG", "I;16"), ("JPEG", "RGB"), ("JPEG", "L"), ("BMP", "RGB"),
                      ("GIF", "P"), ("TIFF", "RGB"), ("PPM", "RGB"), ("TGA", "RGB")):
        if mode == "I;16":
            image = Image.fromarray(rng.integers(0, 65535, (5, 7)).astype(np.uint16))
        else:
            image = Image.fromarray(pixels).convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        seeds.append((fmt.lower(), buffer.getvalue()))
    # A PNG whose header claims 100000 x 100000 pixels (a decompression bomb).
    png = seeds[0][1]
    bomb = bytearray(png)
    bomb[16:24] = (100000).to_bytes(4, "big") * 2
    bomb[29:33] = zlib.crc32(bytes(bomb[12:29])).to_bytes(4, "big")      # IHDR's CRC
    seeds.append(("png", bytes(bomb)))
    return seeds


IMAGE_SEEDS = _image_seeds()


def check_image(tmp_path_factory, suffix, data):
    path = tmp_path_factory.mktemp("img") / f"fuzz.{suffix}"
    path.write_bytes(data)
    with only_clean_errors():
        image = load_image(path)
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[0] == 3
        assert image.shape[1] > 0 and image.shape[2] > 0
        assert 0 <= image.min() and image.max() <= 1


@fuzz_settings(100)
@given(data=st.binary(max_size=300), suffix=st.sampled_from(["png", "jpg", "bmp", "gif", "xyz"]))
def test_random_image_bytes(tmp_path_factory, data, suffix):
    check_image(tmp_path_factory, suffix, data)


@fuzz_settings(200)
@given(seed=st.sampled_from(range(len(IMAGE_SEEDS))),
       kind=st.sampled_from(["truncate", "flip_header", "flip_body", "insert"]),
       where=st.integers(0, 2**31), value=st.integers(0, 255), count=st.integers(1, 6))
def test_mutated_images(tmp_path_factory, seed, kind, where, value, count):
    suffix, original = IMAGE_SEEDS[seed]
    data = bytearray(original)
    if kind == "truncate":
        data = data[:where % len(data)]
    elif kind == "flip_header":
        for k in range(count):
            data[(where + k) % min(len(data), 48)] = (value + 61 * k) % 256
    elif kind == "flip_body":
        for k in range(count):
            data[(where + 7919 * k) % len(data)] = value
    else:
        position = where % len(data)
        data[position:position] = bytes([value]) * count
    check_image(tmp_path_factory, suffix, bytes(data))


def test_the_seeds_are_valid(tmp_path):
    """The un-mutated seeds load (so the mutations start from real files)."""
    for suffix, data in IMAGE_SEEDS[:-1]:
        path = tmp_path / f"seed.{suffix}"
        path.write_bytes(data)
        assert load_image(path).shape == (3, 5, 7)
    with pytest.raises(minidarknet.ImageError, match="too large|decompression|pixels"):
        path = tmp_path / "bomb.png"
        path.write_bytes(IMAGE_SEEDS[-1][1])
        load_image(path)
    for text in SEED_CFGS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            minidarknet.loads(text)
    assert re.search(r"\[connected\]", WEIGHTS_CFG)
