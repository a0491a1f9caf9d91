"""Subcommands of the minidarknet CLI, one module each (see minidarknet/cli.py)."""
