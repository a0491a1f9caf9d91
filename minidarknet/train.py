"""Darknet's training loop (train_classifier / train_detector around train_network).

    result = minidarknet.train("cfg/net.cfg", "data/net.data", out="backup", max_batches=500)
    result.losses, result.avg_losses, result.rates, result.weights  # the _final.weights path

Each iteration loads ``batch * subdivisions`` inputs (the cfg's batch) and calls
``net.train_step``, which runs the ``subdivisions`` sub-batches and makes one update.  The
iteration number is Darknet's ``get_current_batch`` = ``seen / (batch * subdivisions)``;
``seen`` is saved in every weights file, so a run started with ``weights=`` a checkpoint
continues where that run stopped (``clear=True`` starts again from 0, Darknet's -clear).
Training stops when the iteration number reaches ``max_batches`` (the cfg's, unless given;
giving it moves the stop only: the learning-rate schedule still uses the cfg's value, so
stopping early and resuming follows the same schedule).

Checkpoints in ``out`` (Darknet's train_detector schedule; ``backup_every=N`` replaces it by
every N iterations, 0 turns the numbered files off):
``<stem>_<i>.weights`` at i = 100, 200, ... 900 and every 10000; ``<stem>_last.weights``
every 100 iterations (Darknet's ``.backup``); ``<stem>_final.weights`` at the end.
Every file is written atomically, with a sidecar ``<name>.state.npz`` holding what the
weights format leaves out: Darknet's momentum buffers (every layer's ``*_updates``) and the
running average loss.  Loading a checkpoint with ``weights=`` restores them when the sidecar
is there and its ``seen`` matches, which makes a resumed run end with exactly the weights of
an uninterrupted one (without the sidecar the momentum restarts from zero, as in Darknet).

Randomness is a function of (seed, iteration): the network's generator (dropout, the random
lr policy) is re-seeded from ``[seed, iteration, 1]`` before every step and the data set
draws batch ``i`` from ``[seed, i, 2]``, so runs are reproducible and resumable.

Stopping: SIGINT (Ctrl-C) and SIGTERM interrupt the step in progress, put back the state
after the last completed iteration and save it as ``<stem>_last.weights`` before raising
TrainingInterrupted (a KeyboardInterrupt) or TrainingTerminated (SystemExit 143).  Any other
exception saves the same checkpoint and propagates.  A loss (or a parameter) that becomes NaN
or infinite stops the run: the state before that step is put back and saved, and the result
has ``status="diverged"`` and a one-line ``message``.
"""
import copy
import io
import math
import os
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from .data import DataSet, open_data
from .errors import DarknetWarning, MiniDarknetError
from .atomic import write_atomic
from .weights import weights_bytes

NET_STREAM = 1
LAST_EVERY = 100          # Darknet's "<base>.backup" period


@dataclass
class IterationInfo:
    iteration: int            # Darknet's get_current_batch after the step (1 for the first)
    loss: float               # what train_network returned
    avg_loss: float           # Darknet's running average: avg*.9 + loss*.1
    rate: float               # the learning rate of this step's update
    images_per_second: float
    seen: int
    seconds: float            # wall time of the iteration, data loading included


@dataclass
class TrainResult:
    weights: Optional[str]    # _final.weights (or, when diverged, the last good checkpoint)
    iterations: int           # the iteration number reached (start_iteration + len(losses))
    losses: List[float] = field(default_factory=list)
    avg_losses: List[float] = field(default_factory=list)
    rates: List[float] = field(default_factory=list)
    seconds: float = 0.0
    net: object = None
    status: str = "finished"  # "finished", "stopped" (by a callback) or "diverged"
    message: str = ""
    start_iteration: int = 0
    checkpoints: List[str] = field(default_factory=list)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT during training; the checkpoint (or None) holds the last completed iteration."""

    def __init__(self, message, signum, checkpoint, iteration):
        super().__init__(message)
        self.message, self.signum, self.checkpoint, self.iteration = \
            message, signum, checkpoint, iteration


class TrainingTerminated(SystemExit):
    """SIGTERM during training: exits with status 143 unless caught."""

    def __init__(self, message, signum, checkpoint, iteration):
        super().__init__(128 + signum)
        self.message, self.signum, self.checkpoint, self.iteration = \
            message, signum, checkpoint, iteration


class _Signal(BaseException):
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


# --------------------------------------------------------------------------- state helpers

def state_arrays(net):
    """[(key, array)] of everything a step changes: parameters (weights, biases, batch-norm
    scales and rolling statistics) and the momentum buffers (*_updates)."""
    out, ids = [], set()
    for layer in net.layers:
        arrays = [(f"{layer.index}.{name}", a) for name, a in layer.parameters()]
        arrays += [(f"{layer.index}.{name}", a) for name, a in sorted(vars(layer).items())
                   if name.endswith("_updates") and isinstance(a, np.ndarray)]
        for key, a in arrays:
            if id(a) not in ids:
                ids.add(id(a))
                out.append((key, a))
    return out


def momentum_arrays(net):
    return [(k, a) for k, a in state_arrays(net) if k.endswith("_updates")]


def state_path(weights_path):
    """The sidecar of a weights file: x.weights -> x.state.npz (else x.<ext>.state.npz)."""
    p = Path(weights_path)
    if p.suffix == ".weights":
        return str(p.with_suffix(".state.npz"))
    return str(p.with_name(p.name + ".state.npz"))


def state_bytes(net, avg_loss):
    arrays = {k: a for k, a in momentum_arrays(net)}
    buffer = io.BytesIO()
    np.savez(buffer, __seen__=np.array(net.seen, np.int64),
             __avg_loss__=np.array(avg_loss, np.float64), **arrays)
    return buffer.getvalue()


def load_state(net, weights_path):
    """Restore the momentum buffers saved beside `weights_path`; returns the running average
    loss it holds, or None when there is no usable sidecar (with a warning if it does not
    fit)."""
    path = state_path(weights_path)
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            stored = {k: saved[k] for k in saved.files}
    except (OSError, ValueError) as e:
        warnings.warn(f"{path}: cannot read the training state ({e}); momentum starts from "
                      f"zero", DarknetWarning, stacklevel=2)
        return None
    seen = int(stored.pop("__seen__", -1))
    avg = float(stored.pop("__avg_loss__", -1.0))
    if seen != net.seen:
        warnings.warn(f"{path}: saved at seen={seen} but the weights have seen={net.seen}; "
                      f"ignored (momentum starts from zero)", DarknetWarning, stacklevel=2)
        return None
    arrays = dict(momentum_arrays(net))
    if set(stored) != set(arrays) or any(stored[k].shape != arrays[k].shape for k in arrays):
        warnings.warn(f"{path}: the training state does not fit this network; ignored "
                      f"(momentum starts from zero)", DarknetWarning, stacklevel=2)
        return None
    for key, array in arrays.items():
        np.copyto(array, stored[key])
    return avg


class _Snapshot:
    """A copy of the training state taken before each step, to go back to when the step is
    interrupted or makes the loss non-finite.  The arrays are looked up again each time, so
    a layer that replaces an array instead of updating it in place is still restored."""

    def __init__(self, net):
        self.net = net
        self.copies = {}
        self.seen = net.seen

    def take(self):
        for key, a in state_arrays(self.net):
            buffer = self.copies.get(key)
            if buffer is None or buffer.shape != a.shape:
                buffer = self.copies[key] = np.empty_like(a)
            np.copyto(buffer, a)
        self.seen = self.net.seen

    def restore(self):
        for key, a in state_arrays(self.net):
            np.copyto(a, self.copies[key])
        self.net.seen = self.seen


def _parameters_finite(net):
    return all(np.isfinite(a).all() for layer in net.layers for _, a in layer.parameters())


def checkpoint_names(iteration, backup_every=None):
    """Checkpoints due after `iteration`: Darknet's train_detector saves <base>_<i>.weights
    when i % 10000 == 0 or (i < 1000 and i % 100 == 0) and <base>.backup (here "last") when
    i % 100 == 0; backup_every=N saves both every N iterations (0: never)."""
    i = int(iteration)
    if backup_every is None:
        names = [str(i)] if i % 10000 == 0 or (i < 1000 and i % 100 == 0) else []
        return names + (["last"] if i % LAST_EVERY == 0 else [])
    return [str(i), "last"] if backup_every and i % backup_every == 0 else []


# --------------------------------------------------------------------------- progress

class Progress:
    """One line on stderr: rewritten in place on a terminal, printed every few seconds in a
    log."""

    def __init__(self, start, stop, stream=None, interval=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.start, self.stop = start, stop
        self.begun = time.perf_counter()
        self.last = -math.inf
        self.width = 0

    def say(self, text):
        if self.tty and self.width:
            self.stream.write("\n")        # keep the last progress line on the screen
            self.width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, info, force=False):
        now = time.perf_counter()
        if not force and now - self.last < self.interval and info.iteration < self.stop:
            return
        self.last = now
        done = info.iteration - self.start
        total = max(self.stop - self.start, 1)
        filled = int(20 * done / total)
        elapsed = now - self.begun
        eta = elapsed / done * (total - done) if done else 0.0
        line = (f"{info.iteration:>{len(str(self.stop))}}/{self.stop} "
                f"[{'#' * filled}{'.' * (20 - filled)}] loss {info.loss:.4f} avg "
                f"{info.avg_loss:.4f} rate {info.rate:.6g} {info.images_per_second:.1f} img/s "
                f"eta {_clock(eta)}")
        if self.tty:
            pad = max(self.width - len(line), 0)
            self.stream.write("\r" + line + " " * pad)
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


def _clock(seconds):
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# --------------------------------------------------------------------------- the trainer

class Trainer:
    """Darknet's training loop with checkpoints, signals, NaN stop and callbacks.

    cfg: a .cfg path; data: a .data file, a class folder, a .npz, or a data.DataSet;
    weights: start from (and resume) this file; callbacks: called as cb(trainer, info) after
    every iteration (returning False stops the run, as does trainer.request_stop()).
    """

    def __init__(self, cfg, data, *, weights=None, max_batches=None, out=None,
                 backup_every=None, callbacks=(), gradients="darknet", overrides=None,
                 seed=0, progress=False, on_bad_data="skip", clear=False, shuffle=True,
                 cache_mb=512, prefetch=True, fork=None):
        from . import load
        self.cfg = os.fspath(cfg)
        self.seed = int(seed)
        # The weights load with the network (the default fork rule reads their header).
        self.net = net = load(self.cfg, weights, gradients=gradients, overrides=overrides,
                              seed=self.seed, fork=fork)
        self.avg_loss = -1.0
        if weights is not None:
            if clear:
                net.seen = net.iteration = 0
            else:
                avg = load_state(net, weights)
                if avg is not None:
                    self.avg_loss = avg
        if isinstance(data, DataSet):
            self.data = data
        else:
            self.data = open_data(data, net, split="train", on_bad_data=on_bad_data,
                                  cache_mb=cache_mb, shuffle=shuffle)
        self.max_batches = net.options.max_batches if max_batches is None else int(max_batches)
        if self.max_batches <= 0:
            raise MiniDarknetError(f"{self.cfg}: no max_batches in [net]; give max_batches "
                                   f"(--max-batches) to say when to stop")
        if backup_every is not None and int(backup_every) < 0:
            raise ValueError(f"backup_every must be >= 0, not {backup_every}")
        self.backup_every = None if backup_every is None else int(backup_every)
        self.out = None if out is None else os.fspath(out)
        self.stem = Path(self.cfg).stem
        self.callbacks = list(callbacks)
        self.progress = progress
        self.prefetch = prefetch
        self.imgs = net.batch * net.subdivisions
        self.result = None
        self._stop = False
        self._in_step = False
        self._deferring = False
        self._pending = None
        self._snapshot = None
        self._bar = None

    # ---------------------------------------------------------------- public helpers
    @property
    def iteration(self):
        return self.net.current_batch()

    def request_stop(self):
        """Finish the current iteration, save _final and return."""
        self._stop = True

    def checkpoint_path(self, name):
        return os.path.join(self.out, f"{self.stem}_{name}.weights")

    def save_checkpoint(self, *names):
        """Write the current state as <stem>_<name>.weights (+ sidecar) for each name."""
        if self.out is None:
            return []
        os.makedirs(self.out, exist_ok=True)
        deferring, self._deferring = self._deferring, True
        try:
            data = weights_bytes(self.net)
            state = state_bytes(self.net, self.avg_loss)
            paths = []
            for name in names:
                path = self.checkpoint_path(name)
                write_atomic(state_path(path), state)
                write_atomic(path, data)
                paths.append(path)
                self.result.checkpoints.append(path)
            return paths
        finally:
            self._deferring = deferring

    # ---------------------------------------------------------------- the loop
    def run(self):
        net = self.net
        start = net.current_batch()
        self.result = result = TrainResult(weights=None, iterations=start, net=net,
                                           start_iteration=start)
        self._snapshot = _Snapshot(net)
        began = time.perf_counter()
        if self.progress:
            self._bar = Progress(start, self.max_batches)
            self._say(f"{self.stem}: learning rate {net.learning_rate:g}, momentum "
                      f"{net.momentum:g}, decay {net.decay:g}; {self.imgs} images per "
                      f"iteration; " + (f"resuming at iteration {start}" if start else
                                        "starting at iteration 0") +
                      f", stopping at {self.max_batches}")
        handlers = self._install_signals()
        pool = ThreadPoolExecutor(1, thread_name_prefix="minidarknet-data") \
            if self.prefetch else None
        try:
            self._loop(pool)
            if result.status != "diverged":
                final = self.save_checkpoint("final")
                result.weights = final[0] if final else None
                if self.progress and final:
                    self._say(f"saved {final[0]}")
            return result
        except _Signal as s:
            raise self._interrupted(s.signum) from None
        except KeyboardInterrupt:      # SIGINT when our handler is not installed
            raise self._interrupted(signal.SIGINT) from None
        except Exception as e:
            self._recover()
            paths = self._save_progress()
            if paths:
                e.checkpoint = paths[0]
                if self.progress:
                    self._say(f"error at iteration {net.current_batch() + 1}; the weights of "
                              f"iteration {net.current_batch()} are in {paths[0]}")
            raise
        finally:
            result.seconds = time.perf_counter() - began
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            self._restore_signals(handlers)
            if self._bar is not None:
                self._bar.close()

    def _loop(self, pool):
        net, result = self.net, self.result
        pending = None
        while net.current_batch() < self.max_batches and not self._stop:
            index = net.current_batch()          # 0-based index of this step
            begun = time.perf_counter()
            if pending is not None:
                x, truth = pending.result()
            else:
                x, truth = self._batch(index)
            pending = None
            if pool is not None and index + 1 < self.max_batches:
                pending = pool.submit(self._batch, index + 1)
            self._snapshot.take()
            net.rng = np.random.default_rng([self.seed, index, NET_STREAM])
            self._in_step = True
            # Non-finite values are caught below with one clear message; numpy's own
            # overflow/invalid warnings on the way there would only be noise.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss = float(net.train_step(x, truth))
            self._in_step = False
            if not math.isfinite(loss) or not _parameters_finite(net):
                self._diverged(loss)
                return
            iteration = net.current_batch()
            self.avg_loss = loss if self.avg_loss < 0 else self.avg_loss
            self.avg_loss = self.avg_loss * .9 + loss * .1
            rate = net.options.rate(iteration, copy.deepcopy(net.rng))
            seconds = time.perf_counter() - begun
            info = IterationInfo(iteration=iteration, loss=loss, avg_loss=self.avg_loss,
                                 rate=rate, images_per_second=self.imgs / max(seconds, 1e-9),
                                 seen=net.seen, seconds=seconds)
            result.iterations = iteration
            result.losses.append(loss)
            result.avg_losses.append(self.avg_loss)
            result.rates.append(rate)
            self._scheduled_checkpoints(iteration)
            if self._bar is not None:
                self._bar.update(info)
            for callback in self.callbacks:
                if callback(self, info) is False:
                    self._stop = True
            if self._pending is not None:
                raise _Signal(self._pending)
        if self._stop and net.current_batch() < self.max_batches:
            result.status = "stopped"

    def _batch(self, index):
        return self.data.train_batch(index, self.imgs, self.seed)

    def _scheduled_checkpoints(self, i):
        names = checkpoint_names(i, self.backup_every)
        if names:
            self.save_checkpoint(*names)

    # ---------------------------------------------------------------- stopping
    def _recover(self):
        """Back to the state after the last completed iteration."""
        if self._in_step:
            self._snapshot.restore()
            self._in_step = False

    def _save_progress(self):
        """Save <stem>_last.weights if this run completed any iteration."""
        if not self.result.losses:
            return []
        return self.save_checkpoint("last")

    def _diverged(self, loss):
        net, result = self.net, self.result
        bad = net.current_batch()
        self._snapshot.restore()
        self._in_step = False
        good = net.current_batch()
        what = f"the loss became {loss}" if not math.isfinite(loss) else \
            "a parameter became NaN or infinite"
        paths = self._save_progress()
        if paths:
            where = f"the last good weights (iteration {good}) are in {paths[0]}"
        elif self.out is not None:
            where = "no iteration had completed, nothing was saved"
        else:
            where = f"the network holds the last good weights (iteration {good})"
        result.status = "diverged"
        result.weights = paths[0] if paths else None
        result.message = (f"{what} at iteration {bad} (learning rate "
                          f"{net.current_rate():g}); training stopped, {where}")
        warnings.warn(result.message, DarknetWarning, stacklevel=3)
        if self._bar is not None:
            self._say(result.message)

    def _interrupted(self, signum):
        self._recover()
        self._deferring = True          # a second signal must not cut the save short
        paths = self._save_progress()
        iteration = self.net.current_batch()
        name = signal.Signals(signum).name
        if paths:
            message = f"{name} at iteration {iteration + 1}: saved iteration {iteration} to " \
                      f"{paths[0]}"
        else:
            message = f"{name} before any iteration completed: nothing saved"
        if self.progress:
            self._say(message)
        cls = TrainingInterrupted if signum == signal.SIGINT else TrainingTerminated
        return cls(message, int(signum), paths[0] if paths else None, iteration)

    # ---------------------------------------------------------------- signals
    def _handle(self, signum, frame):
        if self._deferring:
            self._pending = signum
            return
        raise _Signal(signum)

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None
        old = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                old[signum] = signal.signal(signum, self._handle)
            except (ValueError, OSError):
                pass
        return old

    def _restore_signals(self, old):
        for signum, handler in (old or {}).items():
            signal.signal(signum, handler)

    def _say(self, text):
        if self._bar is not None:
            self._bar.say(text)
        else:
            print(text, file=sys.stderr, flush=True)


def train(cfg, data, *, weights=None, max_batches=None, out=None, backup_every=None,
          callbacks=(), gradients="darknet", overrides=None, seed=0, progress=False,
          on_bad_data="skip", **options):
    """Train `cfg` on `data` with Darknet's loop; returns a TrainResult (see Trainer)."""
    return Trainer(cfg, data, weights=weights, max_batches=max_batches, out=out,
                   backup_every=backup_every, callbacks=callbacks, gradients=gradients,
                   overrides=overrides, seed=seed, progress=progress,
                   on_bad_data=on_bad_data, **options).run()
