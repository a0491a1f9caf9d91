"""Subcommands of the minidarknet CLI, one module each (see minidarknet/cli.py)."""
import click

# --fork on every command that builds a network (minidarknet/fork.py has the default rule).
fork_option = click.option(
    "--fork", type=click.Choice(["alexeyab", "pjreddie"]), default=None,
    help="Whose Darknet numbers to compute (default: AlexeyAB's for weights it wrote or a cfg "
         "using AlexeyAB-only sections, keys or activations, else pjreddie's).")
