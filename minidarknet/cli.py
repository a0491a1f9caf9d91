"""The `minidarknet` command.  Each subcommand lives in minidarknet/commands/<name>.py and
defines a click command called `command`; this module only wires them up and turns the
project's errors into one-line messages with exit status 2."""
import importlib
import sys
import warnings

import click

from .errors import DarknetWarning, MiniDarknetError

SUBCOMMANDS = ("run", "info", "train", "valid", "experiment", "export", "anchors",
               "partial")


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name in SUBCOMMANDS if _load(name) is not None]

    def get_command(self, ctx, name):
        return _load(name)


def _load(name):
    if name not in SUBCOMMANDS:
        return None
    try:
        module = importlib.import_module(f"minidarknet.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"minidarknet.commands.{name}":
            return None
        raise
    return module.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="minidarknet")
def cli():
    """Run, inspect and train Darknet networks with numpy."""


def _show_warning(message, category, filename, lineno, file=None, line=None):
    prefix = "warning: " if issubclass(category, DarknetWarning) else \
        f"warning ({category.__name__}): "
    click.echo(prefix + str(message), err=True)


def main(argv=None):
    warnings.showwarning = _show_warning
    warnings.simplefilter("default", DarknetWarning)
    try:
        cli.main(args=argv, prog_name="minidarknet", standalone_mode=False)
    except MiniDarknetError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(0)


if __name__ == "__main__":
    main()
