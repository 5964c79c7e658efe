"""``casprobe export STORE --format jsonl|csv [--output FILE]``: a run store for tools that do not read SQLite.

The formats are described in :mod:`casprobe.exporters.runexport`. With ``--output`` the file is written
atomically (a reader never sees half of it); without, the export streams to stdout. The store is opened
read-only, so exporting while ``casprobe watch`` is still writing is fine (it shows what was committed so far).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from casprobe.errors import ConfigError
from casprobe.exporters.runexport import FORMATS, export_store, export_store_to_file
from casprobe.store import RunStore

__all__ = ["export"]


@click.command("export")
@click.argument("store", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file (atomically), not stdout."
)
def export(store: Path, fmt: str, output: Path | None) -> None:
    """Export the run store STORE: jsonl (run, results, markers, lab events) or csv (one row per result)."""
    with RunStore.open(store) as run_store:
        if output is None:
            try:
                stream = sys.stdout
                export_store(run_store, fmt, stream)
                stream.flush()
            except BrokenPipeError:
                # the reader went away (| head): stop quietly, as the Python docs' SIGPIPE note advises
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                sys.exit(1)
            return
        count = run_store.result_count()
        try:
            export_store_to_file(run_store, fmt, output)
        except OSError as exc:
            raise ConfigError(f"{output}: cannot write the export: {exc.strerror or exc}") from None
    click.echo(f"exported {count} results of {store} to {output} ({fmt})", err=True)
