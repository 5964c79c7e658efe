"""``casprobe compare PRE POST``: what changed between two checks or two runs, with an exit code to gate a change.

Thin (style.md rule 13): :func:`casprobe.compare_sources.load` reads each input (check JSON or run store, told apart
by content), :func:`casprobe.compare.compare` makes the findings, and this module renders them: a rich terminal
summary (regressions first), the versioned JSON of :meth:`~casprobe.compare.Comparison.to_json`, and, with
``--html``, one self-contained HTML page (``casprobe/report/templates/compare.html.j2``: inline CSS, no script, no
external resource; jinja2 autoescaping on, so text from servers is never read as HTML).

Exit codes (Nagios, architecture.md): 0 no regression and no change to review, 1 changes to review, 2 a regression,
3 an input cannot be used (missing, neither JSON nor a run store, JSON of another shape, a store without results,
a check and a run mixed) or the HTML file cannot be written; always one line on stderr, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import sys
from importlib import resources
from pathlib import Path
from typing import NoReturn

import click
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from casprobe import __version__
from casprobe.compare import Comparison, Finding, Thresholds
from casprobe.compare import compare as compare_snapshots
from casprobe.compare_sources import CompareInputError, SourceInfo, detect, load
from casprobe.errors import CasprobeError
from casprobe.exporters import write_atomic
from casprobe.exporters.console import render_to_text

__all__ = ["TEMPLATE", "WIDTH", "compare", "render_html", "render_text"]

WIDTH = 100
#: The HTML template, relative to the casprobe package.
TEMPLATE = "report/templates/compare.html.j2"
_FILE = click.Path(dir_okay=False, path_type=Path)
_KIND = {"check": "check JSON", "run": "run store"}


def _groups(c: Comparison) -> list[tuple[str, str, tuple[Finding, ...]]]:
    return [
        ("Regressions", "regression", c.regressions),
        ("Changes to review", "change", c.changes),
        ("Improvements and notes", "note", c.informational),
    ]


def _source(word: str, s: SourceInfo) -> str:
    when = f" from {s.started}" if s.started else ""
    return f"{word}: {_KIND[s.kind]} {s.path}{when}, {s.results} result{'s' if s.results != 1 else ''}"


def render_text(c: Comparison, *, color: bool = False, width: int = WIDTH) -> str:
    """The comparison for a terminal, regressions first (ANSI colours only with ``color``)."""
    style = {"regression": "bold red", "change": "bold yellow", "note": "bold green"}
    mark = {"regression": "✗", "change": "!", "note": "·"}
    parts: list[RenderableType] = [
        Text("casprobe compare", style="bold"),
        Text(_source("before", c.before)),
        Text(_source("after ", c.after)),
    ]
    parts += [Text(f"note: {note}", style="yellow") for note in c.notes]
    for title, group, findings in _groups(c):
        if not findings:
            continue
        parts.append(Text(f"\n{title} ({len(findings)})", style=f"{style[group]} underline"))
        table = Table(show_header=False, box=None, padding=(0, 1, 0, 0), expand=False)
        table.add_column("mark", style=style[group], no_wrap=True)
        table.add_column("finding", overflow="fold")
        for f in findings:
            cell = Text(f.message)
            for word, value in (("before", f.before), ("after ", f.after)):
                if f.before or f.after:
                    cell.append(f"\n  {word}: " + (value or "-").replace("\n", "\n" + " " * 10), style="dim")
            table.add_row(mark[group], cell)
        parts.append(table)
    verdict = Text("\n")
    if c.regressions or c.changes:
        verdict.append(f"{c.status.name}: {c.verdict}", style="bold red" if c.regressions else "bold yellow")
    else:
        verdict.append(f"OK: {c.verdict} across {c.rows} name × probe rows", style="bold green")
    verdict.append(f" (exit {int(c.status)})")
    parts.append(verdict)
    return render_to_text(parts, width=width, color=color)


def render_html(c: Comparison) -> str:
    """One self-contained HTML page of the comparison (autoescaped; no script, no external resource)."""
    import jinja2

    source = resources.files("casprobe").joinpath(TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = env.from_string(source)
    return template.render(
        c=c,
        groups=_groups(c),
        sources=[("Before", c.before), ("After", c.after)],
        kinds=_KIND,
        version=__version__,
        generated=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _fail(message: str) -> NoReturn:
    click.secho(f"casprobe compare: {message}", err=True, fg="red")
    sys.exit(3)


@click.command("compare")
@click.argument("pre", type=click.Path(path_type=Path))
@click.argument("post", type=click.Path(path_type=Path))
@click.option(
    "--latency-factor",
    type=click.FloatRange(1.0, 1000.0),
    default=2.0,
    show_default=True,
    help="A latency is a regression when it is at least this many times the one before …",
)
@click.option(
    "--latency-min-ms",
    type=click.FloatRange(0.0, 3_600_000.0),
    default=20.0,
    show_default=True,
    help="… and at least this many milliseconds more (both must hold).",
)
@click.option("--html", "html_path", type=_FILE, help="Also write the comparison as one self-contained HTML file.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def compare(
    pre: Path, post: Path, latency_factor: float, latency_min_ms: float, html_path: Path | None, fmt: str
) -> None:
    """Compare PRE and POST (two `check --format json` outputs or two run stores): exit 0 same, 1 changes to
    review, 2 a regression, 3 unusable input."""
    try:
        kinds = detect(pre), detect(post)
        if kinds[0] != kinds[1]:
            raise CompareInputError(
                f"{pre} is a {_KIND[kinds[0]]} and {post} a {_KIND[kinds[1]]}: compare two checks or two runs"
            )
        before, after = load(pre), load(post)
    except CasprobeError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot read {exc.filename or 'an input'}: {exc.strerror or exc}")
    result = compare_snapshots(before, after, Thresholds(latency_factor, latency_min_ms))
    if html_path is not None:
        try:
            write_atomic(html_path, render_html(result))
        except OSError as exc:
            _fail(f"cannot write {html_path}: {exc.strerror or exc}")
    if fmt == "json":
        click.echo(result.render_json(), nl=False)
    else:
        click.echo(render_text(result, color=sys.stdout.isatty()), nl=False)
    sys.stdout.flush()
    sys.exit(int(result.status))  # click.exceptions.Exit would be swallowed by cli.main(standalone_mode=False)
