"""Writing files so that nothing is lost: the data goes to a temporary file in the same folder,
is flushed to disk, and replaces the target in one rename.  A crash or Ctrl-C leaves either
the old file or the new one, never half of either."""
import contextlib
import os
import tempfile


def _mode_for(path):
    """The permissions a plain open() would give (or the existing file's): mkstemp's 0600
    would make saved weights and pictures private."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def open_atomic(path, mode="wb", **options):
    """A file to write `path` through: a temporary file in the same folder (with the
    permissions a plain open() would give), flushed to disk and renamed over `path` when the
    block ends normally, removed when it raises."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, mode, **options) as f:
            os.fchmod(f.fileno(), _mode_for(path))
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_atomic(path, data):
    with open_atomic(path) as f:
        f.write(data)
