"""``casprobe report RUN.db``: the run as one self-contained HTML file (or its JSON form), issue 6.

Thin by design (style.md rule 13): open the store (and ``--baseline``) read-only through
:func:`casprobe.report.load_report`, render with :mod:`casprobe.report.render` or :mod:`casprobe.report.jsonform`,
write atomically (:func:`casprobe.exporters.write_atomic`) and print the path written.

Default path: ``reports/<run start, UTC: YYYY-MM-DD>-<HHMM>-<first 8 of the run id>.html`` under the current
folder (``reports/`` is created). ``--format json`` writes to ``-o`` or, without it, to stdout.

Exit codes: 0 the report was written (also for a store without results: the report says there is nothing to
show, and a warning goes to stderr); 3 a store or the baseline is missing, unreadable or not a run store, or the
output cannot be written: one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from casprobe.analysis import AnalysisError
from casprobe.exporters import write_atomic
from casprobe.report.data import ReportData, ReportError, load_report
from casprobe.store import StoreError

__all__ = ["default_path", "report"]

_FILE = click.Path(dir_okay=False, path_type=Path)


def default_path(data: ReportData, folder: Path = Path("reports")) -> Path:
    """``reports/2025-05-04-1302-0b5c9a3e.html`` from the run's start (UTC) and id."""
    stamp = time.strftime("%Y-%m-%d-%H%M", time.gmtime(data.run.started_at))
    ident = "".join(c for c in data.run.run_id[:8] if c.isalnum() or c in "-_") or "run"
    return folder / f"{stamp}-{ident}.html"


def _fail(message: str) -> None:
    click.secho(f"casprobe report: {message}", err=True, fg="red")
    sys.exit(3)


@click.command("report")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), help="Another run store to compare the key figures with.")
@click.option("-o", "--output", type=_FILE, help="Where to write (default: reports/<date>-<time>-<run>.html).")
@click.option("--format", "fmt", type=click.Choice(["html", "json"]), default="html", show_default=True)
def report(store: Path, baseline: Path | None, output: Path | None, fmt: str) -> None:
    """Write the report of the run store STORE (written by casprobe watch --store) as one HTML file."""
    try:
        data = load_report(store, baseline=baseline)
    except (StoreError, ReportError, AnalysisError) as exc:
        _fail(str(exc))
        return
    if fmt == "json":
        from casprobe.report.jsonform import report_json

        text = json.dumps(report_json(data), indent=2, ensure_ascii=False) + "\n"
        if output is None:
            click.echo(text, nl=False)
            return
    else:
        from casprobe.report.render import render_html

        text = render_html(data)
        if output is None:
            output = default_path(data)
            try:
                output.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                _fail(f"cannot create {output.parent}: {exc.strerror or exc}")
    try:
        write_atomic(output, text)
    except OSError as exc:
        _fail(f"cannot write {output}: {exc.strerror or exc}")
    click.echo(str(output))
    if data.empty:
        click.secho(f"casprobe report: {store} holds no results: the report says so", err=True, fg="yellow")
