"""`minidarknet train CFG DATA`: Darknet's training loop with a progress line and checkpoints.

Checkpoints go to --out (default: the .data file's backup= folder, else ./backup):
<cfg stem>_<i>.weights on Darknet's detector schedule (100, 200, ... 900, then every 10000;
--backup-every N: every N), <stem>_last.weights every 100 iterations and when the run is
stopped (Ctrl-C, SIGTERM, an error, a NaN loss), <stem>_final.weights at the end; each with a
.state.npz sidecar (momentum) so that `--weights <checkpoint>` resumes exactly.

Exit status: 0 done, 1 the loss became NaN/infinite, 2 bad input, 130 SIGINT, 143 SIGTERM.
"""
import os
import sys

import click

from . import fork_option


@click.command(name="train")
@click.argument("cfg", type=click.Path(dir_okay=False))
@click.argument("data", type=click.Path())
@click.option("-w", "--weights", type=click.Path(dir_okay=False),
              help="Start from these weights; a checkpoint resumes at its iteration.")
@click.option("--max-batches", type=click.IntRange(min=1),
              help="Stop at this iteration (default: [net] max_batches; the lr schedule "
                   "keeps the cfg's value).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Checkpoint folder (default: backup= of the .data file, else ./backup).")
@click.option("--backup-every", type=click.IntRange(min=0),
              help="Numbered checkpoint every N iterations (0: none) instead of Darknet's "
                   "schedule.")
@click.option("--gradients", type=click.Choice(["darknet", "exact"]), default="darknet",
              show_default=True, help="Darknet's CPU numbers or the exact gradient.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the initial weights, the data order and augmentation, dropout.")
@click.option("--on-bad-data", type=click.Choice(["skip", "fail"]), default="skip",
              show_default=True, help="Warn and skip bad images/labels, or stop.")
@click.option("--clear", is_flag=True, help="Start counting iterations from 0 even when the "
              "weights have a 'seen' count (Darknet's -clear).")
@click.option("-q", "--quiet", is_flag=True, help="No progress line.")
@fork_option
def command(cfg, data, weights, max_batches, out, backup_every, gradients, seed, on_bad_data,
            clear, quiet, fork):
    """Train the network CFG on DATA (.data file, folder per class, or .npz)."""
    from minidarknet.train import Trainer, TrainingInterrupted, TrainingTerminated

    out = out or _default_out(data)
    trainer = Trainer(cfg, data, weights=weights, max_batches=max_batches, out=out,
                      backup_every=backup_every, gradients=gradients, seed=seed,
                      progress=not quiet, on_bad_data=on_bad_data, clear=clear, fork=fork)
    try:
        result = trainer.run()
    except TrainingInterrupted as e:
        click.echo(f"interrupted: {e.message}", err=True)
        sys.exit(130)
    except TrainingTerminated as e:
        click.echo(f"terminated: {e.message}", err=True)
        sys.exit(e.code)
    if result.status == "diverged":
        click.echo(f"error: {result.message}", err=True)
        sys.exit(1)
    done = len(result.losses)
    summary = (f"{done} iterations ({result.start_iteration} -> {result.iterations}) in "
               f"{result.seconds:.1f} s")
    if result.losses:
        summary += f", final loss {result.losses[-1]:.4f} (avg {result.avg_losses[-1]:.4f})"
    click.echo(summary)
    if result.weights:
        click.echo(f"weights: {result.weights}")


def _default_out(data):
    """Darknet's backup= from a .data file, else ./backup."""
    if os.path.isfile(data) and not data.lower().endswith(".npz"):
        from minidarknet.data import read_data_file, resolve
        options = read_data_file(data)
        if "backup" in options:
            return resolve(options["backup"][0], os.path.dirname(os.path.abspath(data)))
    return "backup"
