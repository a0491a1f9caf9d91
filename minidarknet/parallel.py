"""Python threads for the numpy work of a forward pass, with BLAS kept single-threaded meanwhile.

numpy's ufuncs and BLAS calls release the GIL, so independent slices of a layer's work (row
chunks of a convolution, blocks of its filters, channels of a pooling) run in parallel on plain
threads.  That splits ALL of a layer's work over the cores, where BLAS's own threads only split
its products and leave im2col, bias, batch norm, activations and pooling on one core (measured
on the project machine: yolov3-tiny gains 1.4x from a second core through BLAS threads).

The two kinds of threads must not run at once: OpenBLAS's idle workers spin for a while after
each call and take the cores our threads need.  So Network.forward (and backward, update)
runs its layers inside
`region()`, which limits BLAS to one thread (threadpoolctl; restored on exit, shared by nested
and concurrent regions) and tells the layers how many threads they may use (`workers()`).
Layers whose products are large and which do not split them themselves say so
(Layer.blas_threads) and run with BLAS's own threads restored (`blas_restored()`).

Outside a region -- a layer called on its own -- `workers()` is 1 and every layer runs
serially.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager

_lock = threading.Lock()
_local = threading.local()
_pool = None
_regions = 0            # regions open in this process (all threads)
_limiter = None         # threadpoolctl's limiter while any region is open
_controller = None


def worker_threads():
    """How many threads numpy work may use: the count the user gave BLAS/OpenMP
    (OMP_NUM_THREADS / OPENBLAS_NUM_THREADS), else the CPUs this process may run on."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def workers():
    """Threads the current layer may split its work over: worker_threads() inside a region
    (on the thread that opened it), else 1."""
    return getattr(_local, "workers", 1)


def _blas_controller():
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


@contextmanager
def region():
    """Run the body with BLAS single-threaded and workers() = worker_threads()."""
    global _regions, _limiter
    threads = worker_threads()
    if threads < 2 or getattr(_local, "workers", 1) > 1:
        yield
        return
    with _lock:
        if _regions == 0:
            _limiter = _blas_controller().limit(limits=1)
        _regions += 1
    try:
        _local.workers = threads
        yield
    finally:
        _local.workers = 1
        with _lock:
            _regions -= 1
            if _regions == 0:
                _limiter.restore_original_limits()
                _limiter = None


@contextmanager
def blas_restored():
    """Inside a region: BLAS gets its own threads back for the body (a layer whose big
    products are not split by us); workers() is 1 meanwhile.  Elsewhere: nothing."""
    global _limiter
    if workers() < 2:
        yield
        return
    with _lock:
        # Another thread's open region needs BLAS single-threaded; then stay serial.
        alone = _regions == 1
        if alone:
            _limiter.restore_original_limits()
    threads, _local.workers = _local.workers, 1
    try:
        yield
    finally:
        _local.workers = threads
        if alone:
            with _lock:
                _limiter = _blas_controller().limit(limits=1)


def run(tasks):
    """Call every zero-argument callable of `tasks`, the first on this thread and the others
    on pool threads, and return when all have finished (re-raising the first error)."""
    if len(tasks) == 1:
        tasks[0]()
        return
    futures = [_get_pool(len(tasks) - 1).submit(task) for task in tasks[1:]]
    try:
        tasks[0]()
    finally:
        _wait_all(futures)
    for future in futures:
        future.result()


def _wait_all(futures):
    """Wait for every future, also when a signal handler raises meanwhile (the exception is
    re-raised afterwards): no task may still write into shared buffers once run() is left."""
    interruption = None
    while True:
        try:
            wait(futures)
            break
        except BaseException as error:  # noqa: BLE001 - re-raised below
            interruption = error
    if interruption is not None:
        raise interruption


def _get_pool(size):
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers < size:
            _pool = ThreadPoolExecutor(size, thread_name_prefix="minidarknet")
        return _pool


def bounds(total, parts, align=1):
    """[(start, stop), ...]: [0, total) in at most `parts` non-empty ranges of nearly equal
    size, every boundary but the last a multiple of `align`."""
    units = -(-total // align)
    parts = max(1, min(parts, units))
    cuts = [min(total, (units * i // parts) * align) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
