"""Darknet .weights files: header, then every layer's parameters in layer order (float32 LE).

Header: int32 major, minor, revision; then `seen` as uint64 when major*10+minor >= 2 (and both
are below 1000, pjreddie's rule), else uint32.  major or minor above 1000 means connected
weights are stored transposed.  We save with the version the weights were loaded with
(0.2.0 for a new network), so a load/save round trip gives back the same bytes.
"""
import os

import numpy as np

from .atomic import write_atomic
from .errors import WeightsError, warn

HEADER_INTS = 12


def _header_layout(major, minor):
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    transpose = major > 1000 or minor > 1000
    return (8 if wide else 4), transpose


class Reader:
    def __init__(self, path, data, offset):
        self.path, self.data, self.offset = path, data, offset

    def remaining(self):
        return (len(self.data) - self.offset) // 4

    def read(self, count, layer, name):
        available = self.remaining()
        if available < count:
            raise WeightsError(
                f"{self.path}: layer {layer.index} ({layer.type}) {name}: needs {count} floats "
                f"at byte offset {self.offset}, only {available} left ({count - available} "
                f"missing); does the cfg match these weights?")
        values = np.frombuffer(self.data, "<f4", count, self.offset).astype(np.float32)
        self.offset += 4 * count
        return values


def read_header(path, data):
    if len(data) < HEADER_INTS:
        raise WeightsError(f"{path}: {len(data)} bytes is too short for a Darknet weights header")
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    seen_bytes, transpose = _header_layout(major, minor)
    if len(data) < HEADER_INTS + seen_bytes:
        raise WeightsError(f"{path}: header ends inside the 'seen' counter at byte offset "
                           f"{HEADER_INTS}")
    seen = int(np.frombuffer(data, "<u8" if seen_bytes == 8 else "<u4", 1, HEADER_INTS)[0])
    if major < 0 or minor < 0 or revision < 0:
        raise WeightsError(f"{path}: header version {major}.{minor}.{revision} is not a Darknet "
                           f"weights file")
    return (major, minor, revision), seen, HEADER_INTS + seen_bytes, transpose


def peek_version(path):
    """(major, minor, revision) from a weights file's header, or None when it cannot be read
    (load_weights then reports the problem)."""
    try:
        with open(os.fspath(path), "rb") as f:
            head = f.read(HEADER_INTS)
    except (OSError, TypeError, ValueError):
        return None
    if len(head) < HEADER_INTS:
        return None
    return tuple(int(v) for v in np.frombuffer(head, "<i4", 3))


def load_weights(net, path, cutoff=None):
    """Load layers [0, cutoff) from `path` (all layers when cutoff is None).

    A file that ends exactly between two layers (e.g. darknet53.conv.74 used for transfer
    learning) loads the layers it covers, with a warning; a file that ends inside a layer's
    arrays is an error naming the layer; floats left over at the end are a warning."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise WeightsError(f"{path}: cannot read: {e.strerror}") from None
    version, seen, offset, transpose = read_header(path, data)
    reader = Reader(path, data, offset)
    layers = net.layers if cutoff is None else net.layers[:cutoff]
    for layer in layers:
        if layer.dontload or not layer.weight_count():
            continue
        if reader.remaining() == 0 and reader.offset == len(data):
            warn(f"{path}: the file ends before layer {layer.index} ({layer.type}); layers "
                 f"from {layer.index} on keep their initial values")
            break
        layer.read_weights(reader, transpose)
    else:
        leftover = len(data) - reader.offset
        if leftover and cutoff is None:
            warn(f"{path}: {leftover // 4} floats ({leftover} bytes) left over after the last "
                 f"layer at byte offset {reader.offset}; does the cfg match these weights?")
    net.seen = seen
    net.iteration = seen // max(net.batch * net.subdivisions, 1)
    net.weights_version = version
    for layer in net.layers:
        if hasattr(layer, "weights_loaded"):
            layer.weights_loaded()


def weights_bytes(net, cutoff=None):
    fork = net.fork
    major, minor, revision = fork.weights_header or net.weights_version
    seen_bytes, transpose = _header_layout(major, minor)
    seen = fork.saved_seen(net.seen, net.iteration, net.batch * net.subdivisions)
    chunks = [np.array([major, minor, revision], "<i4").tobytes(),
              # a 4-byte counter wraps as Darknet's C cast does
              np.array([seen % 2 ** (8 * seen_bytes)],
                       "<u8" if seen_bytes == 8 else "<u4").tobytes()]
    layers = net.layers if cutoff is None else net.layers[:cutoff]
    for layer in layers:
        if not layer.dontsave:
            layer.write_weights(chunks, transpose)
    return b"".join(chunks)


def save_weights(net, path, cutoff=None):
    """Write the weights atomically: a temporary file in the same folder, then a rename."""
    write_atomic(os.fspath(path), weights_bytes(net, cutoff))
