"""The network's memory budget: what its arrays take, checked before they are used.

numpy hands out zeroed buffers lazily, so a network far too large for the machine builds
without complaint and is killed later, in the middle of a forward pass.  Instead the network
adds up, layer by layer while it is built, the bytes its arrays hold (outputs, parameters and
their updates, caches), and for training the deltas and the convolutions' column workspace,
and refuses -- one line naming the total and the largest layers -- when that exceeds the limit:

* `max_memory=` (bytes) given to minidarknet.load / loads / Network, else
* the environment variable MINIDARKNET_MAX_MEMORY (bytes, or with a K/M/G/T suffix), else
* the memory available on this machine (MemAvailable, or the physical memory).
"""
import os

import numpy as np

LIMIT_VARIABLE = "MINIDARKNET_MAX_MEMORY"
_SUFFIXES = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class MemoryBudgetError(ValueError):
    """A malformed limit (the network's own refusal is a CfgError naming the cfg)."""


def parse_size(text):
    """'8G', '512M', '1.5G', '1000000' -> bytes."""
    raw = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    number, suffix = (raw[:-1], raw[-1]) if raw and raw[-1] in _SUFFIXES else (raw, "")
    try:
        value = float(number) * _SUFFIXES[suffix]
    except ValueError:
        raise MemoryBudgetError(f"{text!r} is not a size (e.g. 8G, 512M or bytes)") from None
    if not value > 0:
        raise MemoryBudgetError(f"{text!r}: a memory limit must be positive")
    return int(value)


def available_memory():
    """Bytes the system could give this process now (None where it does not say)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def memory_limit(explicit=None):
    """(bytes, where the limit comes from) -- see the module docstring; (None, ...) when
    nothing is known."""
    if explicit is not None:
        return parse_size(explicit), "max_memory"
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if text:
        try:
            return parse_size(text), LIMIT_VARIABLE
        except MemoryBudgetError as e:
            raise MemoryBudgetError(f"{LIMIT_VARIABLE}={e}") from None
    return available_memory(), "the memory available"


def _root(array):
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def held_bytes(obj, seen):
    """Bytes of the numpy arrays reachable from obj's attributes (layers, their blocks and
    sub-layers), each underlying buffer counted once across calls sharing `seen`."""
    total = 0
    pending = [obj]
    visited = set()
    while pending:
        item = pending.pop()
        if id(item) in visited:
            continue
        visited.add(id(item))
        values = vars(item).values() if hasattr(item, "__dict__") else item
        for value in values:
            if isinstance(value, np.ndarray):
                root = _root(value)
                if id(root) not in seen:
                    seen.add(id(root))
                    total += root.nbytes
            elif isinstance(value, (list, tuple)):
                pending.append(value)
            elif type(value).__module__.startswith("minidarknet.layers") and \
                    hasattr(value, "__dict__") and not hasattr(value, "layers"):
                pending.append(value)
    return total


def training_extra_bytes(layer):
    """What training adds to a layer: its delta (as large as its output) and, for a
    convolution, the column matrix of the whole batch its weight gradient is built from."""
    extra = 0 if layer.delta is not None or layer.output is None else layer.output.nbytes
    if layer.type == "convolutional" and getattr(layer, "size", 0):
        extra += 4 * layer.batch * layer.in_c * layer.size ** 2 * layer.out_h * layer.out_w
    return extra


def gib(count):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def refusal(net, per_layer, limit, source, doing):
    """The one-line message for a network over its budget."""
    total = sum(per_layer.values())
    largest = sorted(per_layer.items(), key=lambda item: -item[1])[:3]
    names = ", ".join(f"layer {i} ({net.layers[i].type if i < len(net.layers) else '?'}) "
                      f"{gib(b)}" for i, b in largest)
    how = ("lower batch/width/height, or raise the limit with max_memory= or "
           f"{LIMIT_VARIABLE}" if source != "max_memory" else "lower batch/width/height or "
           "raise max_memory=")
    return (f"{doing} needs {'at least ' if doing.startswith('building') else ''}{gib(total)} "
            f"with batch {net.batch}, more than {source} ({gib(limit)}); largest: {names}; "
            f"{how}")
