"""The ``casprobe`` command line: one module per command, loaded only when that command runs.

Commands are registered by import path so that, for instance, the lab (``casprobe.lab``) is never imported by the
product unless ``casprobe lab`` is what the user asked for.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from casprobe import __version__
from casprobe.errors import CasprobeError

__all__ = ["cli", "main"]

# command name -> "module:attribute" of a click command
_COMMANDS: dict[str, str] = {
    "check": "casprobe.cli.check:check",
    "lab": "casprobe.lab.cli:lab",
    "watch": "casprobe.cli.watch:watch",
    "mark": "casprobe.cli.mark:mark",
    "export": "casprobe.cli.export:export",
    "analyze": "casprobe.cli.analyze:analyze",
    "compare": "casprobe.cli.compare:compare",
    "report": "casprobe.cli.report:report",
    "load": "casprobe.cli.load:load",
    "rehearse": "casprobe.lab.rehearse:rehearse",
    "serve": "casprobe.cli.serve:serve_command",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS:
            module_name, _, attr = _COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="casprobe")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """Measure what Outlook sees through an Exchange DAG maintenance."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Entry point: run the CLI, turning CasprobeError into a message and its exit code."""
    try:
        status = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        # bad arguments are "unknown" in the Nagios convention
        sys.exit(3)
    except CasprobeError as exc:
        click.secho(f"casprobe: {exc}", err=True, fg="red")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    # without standalone mode, click hands a command's ctx.exit(code) back as the return value
    if isinstance(status, int) and status:
        sys.exit(status)
