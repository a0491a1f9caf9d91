"""Darknet .weights files: header, then every layer's parameters in layer order (float32 LE).

Header: int32 major, minor, revision; then `seen` as uint64 when major*10+minor >= 2 (and both
are below 1000, pjreddie's rule), else uint32.  major or minor above 1000 means connected
weights are stored transposed.  We save with the version the weights were loaded with
(0.2.0 for a new network), so a load/save round trip gives back the same bytes.
"""
import os

import numpy as np

from .atomic import write_atomic
from .files import open_regular
from .errors import WeightsError, warn

HEADER_INTS = 12
MAX_VERSION = 2000      # above: not a version number (1000 + n flags transposed weights)


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
        # A read-only view of the file's bytes on little-endian machines (no copy: every
        # caller copies the values into its own arrays), converted elsewhere.
        values = np.frombuffer(self.data, "<f4", count, self.offset).astype(np.float32,
                                                                            copy=False)
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
    if not (0 <= major <= MAX_VERSION and 0 <= minor <= MAX_VERSION
            and 0 <= revision <= MAX_VERSION):
        # Darknet writes 0.1.0 / 0.2.0 (1000 + those flags transposed connected weights):
        # anything else is not a weights file, whatever its rule for "transposed" would say
        raise WeightsError(f"{path}: header version {major}.{minor}.{revision} is not a Darknet "
                           f"weights file (each number is at most {MAX_VERSION})")
    return (major, minor, revision), seen, HEADER_INTS + seen_bytes, transpose


def peek_version(path):
    """(major, minor, revision) from a weights file's header, or None when it cannot be read
    (load_weights then reports the problem)."""
    try:
        f, _ = open_regular(path, OSError)
        with f:
            head = f.read(HEADER_INTS)
    except (OSError, TypeError, ValueError):
        return None
    if len(head) < HEADER_INTS:
        return None
    return tuple(int(v) for v in np.frombuffer(head, "<i4", 3))


def most_bytes(layers):
    """The largest weights file these layers can read: the longest header and every
    parameter (layers read at most their weight_count)."""
    return HEADER_INTS + 8 + 4 * sum(layer.weight_count() for layer in layers
                                     if not layer.dontload)


def _read_bounded(path, layers, partial):
    """(bytes to load from, the file's size): only a regular file, and at most what `layers`
    can read -- a longer file is an error (unless partial), and never read past that."""
    f, size = open_regular(path, lambda reason: WeightsError(f"{path}: cannot read: {reason}"))
    bound = most_bytes(layers)
    with f:
        if size > bound and not partial:
            raise WeightsError(
                f"{path}: the file has {size} bytes, the network needs at most {bound} "
                f"({(size - bound) // 4} floats too many): does the cfg match these weights? "
                f"(a partial load, partial=True or cutoff=, reads only the first layers)")
        try:
            data = f.read(min(size, bound))
        except OSError as e:
            raise WeightsError(f"{path}: cannot read: {e.strerror}") from None
    return data, size


def load_weights(net, path, cutoff=None, partial=False):
    """Load layers [0, cutoff) from `path` (all layers when cutoff is None).

    Only a regular file is read, and never more bytes than the layers take.  A file that ends
    exactly between two layers (e.g. darknet53.conv.74 used for transfer learning) loads the
    layers it covers, with a warning; a file that ends inside a layer's arrays is an error
    naming the layer.  Floats left over after the last layer (a file for another network) are
    an error naming both sizes, unless a partial load is asked for (partial=True, a cutoff,
    or a cfg with dontload layers, which Darknet skips in the file): then a warning."""
    path = os.fspath(path)
    layers = net.layers if cutoff is None else net.layers[:cutoff]
    partial = partial or cutoff is not None or any(layer.dontload for layer in layers)
    data, size = _read_bounded(path, layers, partial)
    version, seen, offset, transpose = read_header(path, data)
    reader = Reader(path, data, offset)
    for layer in layers:
        if layer.dontload or not layer.weight_count():
            continue
        if reader.remaining() == 0 and reader.offset == len(data):
            warn(f"{path}: the file ends before layer {layer.index} ({layer.type}); layers "
                 f"from {layer.index} on keep their initial values")
            break
        layer.read_weights(reader, transpose)
    else:
        leftover = size - reader.offset
        message = (f"{path}: {leftover // 4} floats ({leftover} bytes) left over after the "
                   f"last layer at byte offset {reader.offset}: the file has {size} bytes, "
                   f"the network reads {reader.offset}; does the cfg match these weights?")
        if leftover and cutoff is None:
            if not partial:
                raise WeightsError(message + " (partial=True loads it anyway)")
            warn(message)
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
