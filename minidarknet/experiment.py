"""Experiments: train every combination of cfg overrides and compare the runs.

An experiment file (YAML) names a cfg, the data, training settings and cfg overrides:

    name: l2norm-backward             # optional (default: the file name)
    cfg: ../cfg/mlp.cfg               # paths are relative to the experiment file
    data: ../data/arrays/train.npz    # a .data file, a folder per class, a .npz ...
    # data: {generate: arrays, classes: 10, shape: [1, 8, 8]}   # ... or a synthetic set
    valid: true                       # the data's validation part, or a path; optional
    train:                            # passed to minidarknet.train
      max_batches: 200
      seed: [0, 1]                    # a list is swept
    overrides:                        # cfg keys, see minidarknet.overrides
      l2norm.backward: [darknet, scales, exact]   # swept
      net.learning_rate: [0.1, 0.02]              # swept
      net.policy: constant                        # fixed
      net.steps: [[100, 150]]                     # a list value: a list inside the sweep list

Every list under `train` or `overrides` is an axis of the sweep; every combination is one run
(the last axis changes fastest).  A run trains with minidarknet.train and gives a row of
results.csv (the swept values, status, final loss and average loss, iterations, seconds and,
with `valid`, the validation metrics), a loss curve curves/<run>.csv (iteration, loss,
avg_loss, rate) and its weights under runs/<run>/; loss.png plots every run's curve.

Runs go one after the other, in parallel processes (jobs > 1), or to a Dask distributed
cluster (scheduler="tcp://host:8786" or a distributed.Client): each run is a plain function
of plain data, so all three give the same numbers.  With a cluster, the cfg, the data and the
output folder must be reachable by the workers at the same paths (a shared file system).
"""
import copy
import csv
import hashlib
import io
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import MiniDarknetError

TOP_KEYS = ("name", "description", "cfg", "data", "valid", "train", "overrides")
TRAIN_KEYS = ("max_batches", "seed", "gradients", "weights", "clear", "on_bad_data",
              "backup_every", "fork")
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
CURVE_COLUMNS = ("iteration", "loss", "avg_loss", "rate")


class ExperimentError(MiniDarknetError):
    """A malformed experiment file: the message names the file and the key."""


@dataclass
class Axis:
    key: str          # as written: "net.learning_rate", or "seed" for a training setting
    values: list
    group: str        # "overrides" or "train"


@dataclass
class Experiment:
    name: str
    path: str                       # the experiment file ("<dict>" when built from a dict)
    cfg: str
    data: object                    # a path, or {"generate": kind, ...options}
    valid: object = None            # None, True (the data's validation part) or a path
    train: dict = field(default_factory=dict)       # fixed training settings
    overrides: dict = field(default_factory=dict)   # fixed overrides
    axes: list = field(default_factory=list)
    description: str = ""


# ---------------------------------------------------------------------------------- reading
def load_experiment(path):
    """Read and check an experiment YAML file."""
    import yaml
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ExperimentError(f"{path}: cannot read: {e.strerror}") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ExperimentError(f"{where}: not valid YAML: {problem}") from None
    return experiment_from_dict(spec, str(path), base=path.parent)


def experiment_from_dict(spec, path="<dict>", base="."):
    """Check an experiment given as a dict (the YAML's content); relative paths are taken
    from `base`."""
    def fail(message):
        return ExperimentError(f"{path}: {message}")

    if not isinstance(spec, dict):
        raise fail("expected a mapping with cfg, data, train and overrides")
    unknown = [k for k in spec if k not in TOP_KEYS]
    if unknown:
        raise fail(f"unknown key '{unknown[0]}' (known: {', '.join(TOP_KEYS)})")
    for key in ("cfg", "data"):
        if spec.get(key) in (None, ""):
            raise fail(f"'{key}' is missing")
    base = Path(base)
    if not isinstance(spec["cfg"], str):
        raise fail("'cfg' must be the path of a .cfg file")
    cfg = _resolve(base, spec["cfg"])
    if not os.path.isfile(cfg):
        raise fail(f"cfg: {cfg} does not exist")
    data = spec["data"]
    if isinstance(data, dict):
        if "generate" not in data:
            raise fail("'data' as a mapping needs 'generate: shapes|detection|arrays'")
        from .synthetic import GENERATORS
        if data["generate"] not in GENERATORS:
            raise fail(f"data: generate: {data['generate']!r} is not one of "
                       f"{', '.join(GENERATORS)}")
        data = dict(data)
    elif isinstance(data, str):
        data = _resolve(base, data)
        if not os.path.exists(data):
            raise fail(f"data: {data} does not exist")
    else:
        raise fail("'data' must be a path or {generate: ...}")
    valid = spec.get("valid")
    if valid is False:
        valid = None
    if valid is not None and valid is not True:
        if not isinstance(valid, str):
            raise fail("'valid' must be true (the data's validation part) or a path")
        valid = _resolve(base, valid)
        if not os.path.exists(valid):
            raise fail(f"valid: {valid} does not exist")
    experiment = Experiment(name=str(spec.get("name") or Path(path).stem), path=path, cfg=cfg,
                            data=data, valid=valid,
                            description=str(spec.get("description") or ""))
    for group in ("train", "overrides"):
        settings = spec.get(group) or {}
        if not isinstance(settings, dict):
            raise fail(f"'{group}' must be a mapping of key: value")
        for key, value in settings.items():
            key = str(key)
            if group == "train" and key not in TRAIN_KEYS:
                raise fail(f"train: unknown setting '{key}' (known: {', '.join(TRAIN_KEYS)})")
            if group == "overrides":
                _check_override_key(key, fail)
            if group == "train" and key == "fork":
                _check_fork(value, fail)
            if group == "train" and key == "weights":
                value = [_resolve(base, v) for v in value] if isinstance(value, list) \
                    else _resolve(base, value)
            if isinstance(value, list):
                if not value:
                    raise fail(f"{group}: {key}: an empty list sweeps nothing")
                experiment.axes.append(Axis(key, list(value), group))
            elif value is None:
                raise fail(f"{group}: {key} has no value")
            else:
                getattr(experiment, group)[key] = value
    keys = [a.key for a in experiment.axes]
    if len(set(keys)) != len(keys):
        raise fail("the same key is swept twice")
    return experiment


def _check_fork(value, fail):
    from .fork import FORKS
    for v in value if isinstance(value, list) else [value]:
        if v is not None and str(v).lower() not in FORKS:
            raise fail(f"train: fork: '{v}' is not one of {', '.join(sorted(FORKS))}")


def _resolve(base, value):
    value = os.path.expanduser(str(value))
    return value if os.path.isabs(value) else str((Path(base) / value).resolve())


def _check_override_key(key, fail):
    from .overrides import parse_override_key
    try:
        parse_override_key(key)
    except ValueError as e:
        raise fail(f"overrides: {e}") from None


# ---------------------------------------------------------------------------------- runs
def expand_runs(experiment):
    """One dict per combination of the swept values: name, params (the swept values), and
    everything run_one needs (all plain data, so it can go to another process)."""
    combos = list(itertools.product(*[axis.values for axis in experiment.axes]))
    width = max(2, len(str(len(combos))))
    runs = []
    for number, values in enumerate(combos, start=1):
        overrides = dict(experiment.overrides)
        train = dict(experiment.train)
        params = {}
        for axis, value in zip(experiment.axes, values):
            params[axis.key] = value
            (overrides if axis.group == "overrides" else train)[axis.key] = value
        runs.append({"index": number - 1, "name": f"run{number:0{width}d}", "params": params,
                     "cfg": experiment.cfg, "data": experiment.data, "valid": experiment.valid,
                     "overrides": overrides, "train": train})
    return runs


def check_runs(runs):
    """Apply every run's overrides to the cfg before anything trains, so that a typo in a key
    fails at once instead of in every run."""
    from .cfg import read_cfg
    from .overrides import apply_overrides
    for run in runs:
        apply_overrides(read_cfg(run["cfg"]), run["overrides"])


def _train_function():
    """minidarknet.train (looked up at run time, in the process that runs the run)."""
    from .train import train
    return train


def run_one(run):
    """Train one run (a dict from expand_runs, with "out" set); returns a plain dict with the
    loss curve and final figures.  Errors of the run are reported in "status", not raised."""
    record = {"index": run["index"], "name": run["name"], "params": run["params"],
              "status": "ok", "final_loss": None, "final_avg_loss": None, "iterations": 0,
              "seconds": 0.0, "metrics": {}, "weights": None,
              "curve": {"iteration": [], "loss": [], "avg_loss": [], "rate": []}}
    start = time.perf_counter()
    try:
        settings = dict(run["train"])
        result = _train_function()(run["cfg"], run["data"], out=run["out"],
                                   overrides=run["overrides"] or None, progress=False,
                                   **settings)
        losses = [float(v) for v in result.losses]
        count = len(losses)
        first = int(result.iterations) - count + 1
        record["curve"] = {"iteration": list(range(first, first + count)), "loss": losses,
                           "avg_loss": [float(v) for v in result.avg_losses],
                           "rate": [float(v) for v in result.rates]}
        status = getattr(result, "status", "finished")
        if status != "finished":     # "diverged" (a NaN loss) or "stopped": still a result
            message = getattr(result, "message", "")
            record["status"] = f"{status}: {message}" if message else status
        record.update(iterations=int(result.iterations), seconds=float(result.seconds),
                      weights=result.weights,
                      final_loss=losses[-1] if losses else None,
                      final_avg_loss=float(result.avg_losses[-1]) if count else None)
        if run.get("valid") and status != "diverged":
            record["metrics"] = validate_run(run, result)
    except (MiniDarknetError, ArithmeticError, ValueError, OSError) as e:
        record["status"] = f"error: {e}"
        record["seconds"] = record["seconds"] or time.perf_counter() - start
    return record


def validate_run(run, result):
    """Validation metrics of a trained run: {"top1": ..., "top5": ...} or {"mAP@0.5": ...}."""
    from .valid import validate
    report = validate(run["cfg"], run["valid"], net=result.net, weights=result.weights,
                      overrides=run["overrides"] or None)
    return {str(k): float(v) for k, v in report.metrics.items()}


# ---------------------------------------------------------------------------------- running
def prepare_data(experiment, out):
    """Generate synthetic data (data: {generate: ...}) into OUT/data, once: a later run of the
    same experiment with the same options reuses it.  Returns (data, valid) paths."""
    data, valid = experiment.data, experiment.valid
    if not isinstance(data, dict):
        if valid is True:
            if not _has_valid_split(data):
                raise ExperimentError(f"{experiment.path}: valid: true needs data with a "
                                      f"validation part (a .data file's valid= list, a "
                                      f"folder with train/ and valid/, a .npz with x_valid "
                                      f"and y_valid) or generated data; give the validation "
                                      f"data's path instead")
            valid = data     # the data names its own validation part
        return data, valid
    from .synthetic import generate
    options = {k: v for k, v in data.items() if k != "generate"}
    tag = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]
    folder = Path(out) / "data" / f"{data['generate']}-{tag}"
    stamp = folder / "generated.json"
    if stamp.exists():
        made = json.loads(stamp.read_text())
    else:
        try:
            result = generate(data["generate"], folder, **options)
        except TypeError as e:
            raise ExperimentError(f"{experiment.path}: data: {e}") from None
        except ValueError as e:
            raise ExperimentError(f"{experiment.path}: data: {e}") from None
        made = {"data": result.data, "valid": result.valid, "options": data}
        stamp.write_text(json.dumps(made, indent=1, default=str))
    return made["data"], (made["valid"] if valid is True else valid)


def _has_valid_split(data):
    path = Path(data)
    if path.is_dir():
        return (path / "train").is_dir() and any((path / n).is_dir() for n in ("valid", "val"))
    if path.suffix.lower() == ".npz":
        import numpy as np
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return {"x_valid", "y_valid"} <= set(arrays.files)
        except (OSError, ValueError):
            return False
    return True      # a .data file (its valid= line is checked when it is read)


def run_experiment(experiment, out, *, jobs=1, scheduler=None, echo=print):
    """Run every combination; writes results.csv, curves/*.csv and loss.png into `out`.
    Returns the run records (in run order)."""
    if isinstance(experiment, (str, os.PathLike)):
        experiment = load_experiment(experiment)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data, valid = prepare_data(experiment, out)
    runs = expand_runs(experiment)
    check_runs(runs)
    for run in runs:
        run.update(data=data, valid=valid, out=str((out / "runs" / run["name"]).resolve()))
        os.makedirs(run["out"], exist_ok=True)
    _write_plan(experiment, runs, out)
    where = ("on " + _scheduler_name(scheduler)) if scheduler is not None else \
        (f"in {jobs} processes" if jobs > 1 else "one after the other")
    echo(f"{experiment.name}: {len(runs)} run{'s' if len(runs) != 1 else ''} {where} -> {out}")
    records = [None] * len(runs)

    def finished(record):
        records[record["index"]] = record
        _report_one(record, len(runs), echo)
        write_curve(out / "curves" / f"{record['name']}.csv", record["curve"])
        write_results_csv(out / "results.csv", experiment, [r for r in records if r])

    if scheduler is not None:
        _run_on_dask(runs, scheduler, finished)
    elif jobs > 1:
        _run_in_processes(runs, jobs, finished)
    else:
        for run in runs:
            finished(run_one(run))
    curves = [(label_of(r, experiment), r["curve"]["iteration"], r["curve"]["avg_loss"],
               r["curve"]["loss"]) for r in records if r["curve"]["iteration"]]
    if curves:
        from .plot import plot_curves
        plot_curves(str(out / "loss.png"), curves, title=f"{experiment.name}: average loss "
                    f"(faint: loss per iteration)", ylabel="loss")
    echo("")
    echo(format_table(experiment, records))
    echo(f"\nresults: {out / 'results.csv'}; curves: {out / 'curves'}"
         + (f"; plot: {out / 'loss.png'}" if curves else ""))
    return records


def _report_one(record, total, echo):
    params = " ".join(f"{k}={_text(v)}" for k, v in record["params"].items())
    if record["status"] == "ok":
        metrics = "".join(f", {k} {v:.4f}" for k, v in record["metrics"].items())
        what = (f"loss {_number(record['final_loss'])} (avg {_number(record['final_avg_loss'])})"
                f" after {record['iterations']} iterations{metrics} in {record['seconds']:.1f} s")
    else:
        what = record["status"]
    name = f"{record['name']} {params}" if params else record["name"]
    echo(f"[{record['index'] + 1}/{total}] {name}: {what}")


def _threads_per_worker(jobs):
    return max(1, (os.cpu_count() or 1) // jobs)


def _run_in_processes(runs, jobs, finished):
    """A pool of fresh (spawned) processes whose BLAS/OpenMP libraries start with
    cpu_count // jobs threads each, so that the workers do not oversubscribe the cores."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    threads = str(_threads_per_worker(jobs))
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: threads for name in THREAD_VARIABLES})
    try:   # (spawned children copy the environment when they start)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(runs)), mp_context=context) as pool:
            futures = [pool.submit(run_one, run) for run in runs]
            try:
                for future in as_completed(futures):
                    finished(future.result())
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _scheduler_name(scheduler):
    return scheduler if isinstance(scheduler, str) else \
        getattr(scheduler, "scheduler_info", lambda: {})().get("address", "a Dask cluster")


def dask_client(scheduler):
    """A distributed.Client for an address (or the Client given); a clear error without Dask."""
    if not isinstance(scheduler, str):
        return scheduler, False
    try:
        from dask.distributed import Client
    except ImportError:
        raise MiniDarknetError("--scheduler needs Dask's distributed scheduler: "
                               "pip install 'minidarknet[dask]'") from None
    try:
        return Client(scheduler, timeout="20s"), True
    except (OSError, TimeoutError) as e:
        raise MiniDarknetError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None


def _run_on_dask(runs, scheduler, finished):
    client, owned = dask_client(scheduler)
    try:
        from dask.distributed import as_completed
        futures = [client.submit(run_one, run, pure=False, key=f"minidarknet-{run['name']}-"
                                 f"{os.getpid()}-{time.time_ns()}") for run in runs]
        for future in as_completed(futures):
            finished(future.result())
    finally:
        if owned:
            client.close()


# ---------------------------------------------------------------------------------- output
def _text(value):
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


def _number(value, digits=6):
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}"


def label_of(record, experiment):
    """The legend text of a run: its swept values (its name when nothing is swept)."""
    if not record["params"]:
        return record["name"]
    short = len(experiment.axes) > 1
    return ", ".join(f"{_short_key(k) if short else k}={_text(v)}"
                     for k, v in record["params"].items())


def _short_key(key):
    """'net.learning_rate' -> 'learning_rate' (when unambiguous enough for a legend)."""
    return key.split(".", 1)[1] if key.startswith("net.") else key


def result_columns(experiment, records):
    metrics = []
    for record in records:
        for name in record["metrics"]:
            if name not in metrics:
                metrics.append(name)
    return (["run"] + [a.key for a in experiment.axes] +
            ["status", "final_loss", "final_avg_loss", "iterations", "seconds"] + metrics +
            ["weights", "curve"]), metrics


def result_rows(experiment, records):
    columns, metrics = result_columns(experiment, records)
    rows = []
    for record in sorted(records, key=lambda r: r["index"]):
        row = {"run": record["name"], "status": record["status"],
               "final_loss": _number(record["final_loss"], 8),
               "final_avg_loss": _number(record["final_avg_loss"], 8),
               "iterations": record["iterations"], "seconds": f"{record['seconds']:.2f}",
               "weights": record["weights"] or "",
               "curve": f"curves/{record['name']}.csv"}
        row.update({k: _text(v) for k, v in record["params"].items()})
        row.update({m: _number(record["metrics"].get(m), 6) for m in metrics})
        rows.append([row[c] for c in columns])
    return columns, rows


def write_results_csv(path, experiment, records):
    from .atomic import write_atomic
    columns, rows = result_rows(experiment, records)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    write_atomic(str(path), buffer.getvalue().encode())


def write_curve(path, curve):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CURVE_COLUMNS)
        for values in zip(*(curve[c] for c in CURVE_COLUMNS)):
            writer.writerow([values[0]] + [repr(float(v)) for v in values[1:]])


def format_table(experiment, records):
    """The results as an aligned text table (no paths)."""
    columns, rows = result_rows(experiment, records)
    keep = [i for i, c in enumerate(columns) if c not in ("weights", "curve")]
    columns = [columns[i] for i in keep]
    rows = [[str(row[i]) for i in keep] for row in rows]
    status = columns.index("status")
    for row in rows:                    # a long error message goes last, uncut
        if len(row[status]) > 40:
            row[status] = row[status][:37] + "..."
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    failed = [r for r in sorted(records, key=lambda r: r["index"]) if r["status"] != "ok"]
    lines += [f"{r['name']}: {r['status']}" for r in failed if len(r["status"]) > 40]
    return "\n".join(lines)


def _write_plan(experiment, runs, out):
    plan = {"name": experiment.name, "experiment": experiment.path, "cfg": experiment.cfg,
            "fixed": {"train": experiment.train, "overrides": experiment.overrides},
            "axes": {a.key: a.values for a in experiment.axes},
            "runs": [{"name": r["name"], "params": r["params"], "out": r["out"]} for r in runs]}
    (Path(out) / "experiment.json").write_text(json.dumps(copy.deepcopy(plan), indent=1,
                                                          default=str))
