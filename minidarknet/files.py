"""Reading the user's files with bounds: only regular files, never more than a limit.

A path given as a cfg, weights file, tree, list or experiment may be a FIFO (reading blocks
forever), a device such as /dev/zero (reading never ends) or a huge file: each of those is a
one-line error before anything is read.  Opening uses O_NONBLOCK so that a FIFO with no writer
cannot block the open itself; the check is made on the opened file (fstat), so a path swapped
between the check and the read cannot slip through.

Text files (cfg, tree, map, names, .data, experiment YAML) may have at most TEXT_LIMIT bytes
and list files (`train=` / `valid=` image lists) LIST_LIMIT; both can be raised with the
environment variable MINIDARKNET_MAX_FILE_MB.  Weights files are bounded by the network that
reads them (minidarknet.weights).
"""
import os
import stat

TEXT_LIMIT = 16 << 20
LIST_LIMIT = 512 << 20
LIMIT_VARIABLE = "MINIDARKNET_MAX_FILE_MB"


def limit_for(default):
    """`default`, or the limit MINIDARKNET_MAX_FILE_MB sets (when larger, as it is meant to
    raise the limits; a value that is not a positive number is ignored with the default)."""
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    try:
        megabytes = float(text)
    except ValueError:
        return default
    return max(default, int(megabytes * (1 << 20))) if megabytes > 0 else default


def _kind(mode):
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def size_text(count):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def open_regular(path, error):
    """(file object opened for binary reading, size in bytes) of the regular file `path`.

    error(reason) builds the exception to raise; reason says why the file cannot be read (the
    system's reason, or what `path` is instead: a FIFO, a device, ...), without the path."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise error(e.strerror) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"it is {_kind(info.st_mode)}, not a regular file")
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise


def read_regular(path, error, limit=None):
    """The bytes of the regular file `path`, refused when larger than `limit` (see
    limit_for) -- the size is checked before reading and the read never goes past it."""
    limit = limit_for(TEXT_LIMIT if limit is None else limit)
    f, size = open_regular(path, error)
    with f:
        if size > limit:
            raise error(f"{size_text(size)} is more than the {size_text(limit)} allowed "
                        f"(set {LIMIT_VARIABLE} to raise it)")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise error(e.strerror) from None
    if len(data) > limit:       # the file grew while it was read
        raise error(f"more than the {size_text(limit)} allowed (set {LIMIT_VARIABLE} to "
                    f"raise it)")
    return data
