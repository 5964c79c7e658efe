"""``casprobe mark STORE TEXT``: put a note on a run's timeline, from another shell while ``watch`` writes it.

The marker carries the wall clock and the monotonic clock of the moment the command starts (the monotonic clock
is system-wide on Linux, so it compares with the watch's results and the lab's event log), and source ``user``.
A missing or invalid store is a StoreError: one line on stderr, exit 3 (``casprobe.cli.main``).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import click

from casprobe.errors import ConfigError
from casprobe.model import Marker
from casprobe.store import RunStore

__all__ = ["MAX_TEXT", "mark"]

MAX_TEXT = 1000


@click.command("mark")
@click.argument("store", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("text")
def mark(store: Path, text: str) -> None:
    """Add a marker with TEXT to the run store STORE (e.g. "mb1 maintenance start")."""
    wall, mono = time.time(), time.monotonic()
    if not text.strip():
        raise ConfigError("the marker text is empty")
    if len(text) > MAX_TEXT:
        raise ConfigError(f"the marker text is longer than {MAX_TEXT} characters")
    with RunStore.open(store, readonly=False) as run_store:
        run_store.add_marker(Marker(wall=wall, mono=mono, text=text, source="user"))
    when = dt.datetime.fromtimestamp(wall, dt.UTC).isoformat(timespec="milliseconds")
    shown = text if text.isprintable() else repr(text)
    click.echo(f"marked {store} at {when} (monotonic {mono:.3f}): {shown}")
