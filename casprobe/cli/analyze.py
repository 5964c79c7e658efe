"""``casprobe analyze RUN.db``: how long users were disconnected, on which name, for which protocol, and why.

Thin by design (style.md rule 13): open the run store read-only, hand what it holds to
:func:`casprobe.analysis.analyze_run`, render the result (:mod:`casprobe.analysis_table` or the versioned JSON of
``RunAnalysis.to_json``), write it to stdout or atomically to ``--output``.

Exit codes (Nagios convention): 0 the analysis was made; 3 the store is unusable (missing, not a run store, newer
schema, damaged) or holds no result at all (the summary still says what the store holds). A run that did not
finish (killed) is analysed up to its last stored result, with a note saying so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from casprobe.analysis import AnalysisError, RunAnalysis, analyze_run
from casprobe.exporters import write_atomic
from casprobe.store import RunStore, StoreError

__all__ = ["analyze"]

_FILE = click.Path(dir_okay=False, path_type=Path)


def _load(path: Path, *, database: str | None, min_failures: int, bucket: float | None) -> RunAnalysis:
    with RunStore.open(path) as store:
        return analyze_run(
            store.run_info(),
            store.results(),
            store.markers(),
            store.lab_events(),
            database=database,
            min_failures=min_failures,
            bucket_s=bucket,
        )


@click.command("analyze")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--output", type=_FILE, help="Write the analysis to this file (atomically) instead of stdout.")
@click.option("--database", metavar="DB", help="The mailbox's database, to match copy moves to namespace outages.")
@click.option(
    "--min-failures",
    type=click.IntRange(1, 1_000_000),
    default=1,
    show_default=True,
    help="List only outages with at least this many failed probes (1: a single failed probe is an outage).",
)
@click.option(
    "--bucket",
    type=click.FloatRange(0, 86_400, min_open=True),
    help="Seconds per bucket of the backend distribution (default: about 120 buckets over the run).",
)
def analyze(
    store: Path, fmt: str, output: Path | None, database: str | None, min_failures: int, bucket: float | None
) -> None:
    """Analyse the run store STORE (written by casprobe watch --store): outages, causes, namespace vs names."""
    try:
        analysis = _load(store, database=database, min_failures=min_failures, bucket=bucket)
    except (StoreError, AnalysisError) as exc:
        click.secho(f"casprobe analyze: {exc}", err=True, fg="red")
        sys.exit(3)
    if fmt == "json":
        text = json.dumps(analysis.to_json(), indent=2, ensure_ascii=False) + "\n"
    else:
        from casprobe.analysis_table import render

        text = render(analysis, color=output is None and sys.stdout.isatty())
    if output is not None:
        try:
            write_atomic(output, text)
        except OSError as exc:
            click.secho(f"casprobe analyze: cannot write {output}: {exc.strerror or exc}", err=True, fg="red")
            sys.exit(3)
    else:
        click.echo(text, nl=False)
    sys.stdout.flush()
    if not analysis.result_count:
        click.secho(f"casprobe analyze: {store} holds no results: nothing to analyse", err=True, fg="yellow")
        sys.exit(3)
