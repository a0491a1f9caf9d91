"""`minidarknet experiment EXP.yaml`: train every combination of the cfg overrides an
experiment file sweeps, and compare the runs (results.csv, curves/*.csv, loss.png).
The file format is described in minidarknet/experiment.py and examples/*.yaml."""
import os
import sys
from pathlib import Path

import click


@click.command(name="experiment")
@click.argument("experiment", type=click.Path(dir_okay=False))
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs trained at the same time, in separate processes.")
@click.option("-o", "--out", type=click.Path(file_okay=False),
              help="Output folder (default: experiments/<experiment name>).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Send the runs to this Dask distributed scheduler (tcp://host:8786); "
                   "needs the dask extra: pip install 'minidarknet[dask]'.")
@click.option("--max-runs", type=click.IntRange(min=1), default=None,
              help="Largest sweep accepted (default 1000): a guard against a typo that "
                   "multiplies the runs.")
def command(experiment, jobs, out, scheduler, max_runs):
    """Train every combination of the values swept in EXPERIMENT (a YAML file) and write the
    results table, each run's loss curve and one plot of all curves."""
    from minidarknet.experiment import MAX_RUNS, load_experiment, run_experiment
    if scheduler and jobs > 1:
        raise click.UsageError("--jobs and --scheduler do not go together (the cluster decides "
                               "how many runs go at once)")
    cpus = _usable_cpus()
    if jobs > cpus:
        click.echo(f"warning: --jobs {jobs} capped at {cpus}, the CPUs this process may use",
                   err=True)
        jobs = cpus
    spec = load_experiment(experiment)
    out = Path(out) if out else Path("experiments") / spec.name
    records = run_experiment(spec, out, jobs=jobs, scheduler=scheduler,
                             echo=lambda line: click.echo(line),
                             max_runs=max_runs or MAX_RUNS)
    failed = [r for r in records if r["status"].startswith("error")]
    if failed:
        click.echo(f"{len(failed)} of {len(records)} runs failed", err=True)
        sys.exit(1)


def _usable_cpus():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
