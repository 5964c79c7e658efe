"""``--format table`` (the default): a table for people, name × protocol, and the trace of what failed.

One row per name (the namespace first, then each server), one column per probe; each cell says OK, WARNING or
FAILED (green, yellow, red) with the time or the error class. Under the table, every result that is not OK gets
its step tree, in the spirit of Microsoft's Remote Connectivity Analyzer: each request or decision, whether it
worked, the HTTP status, who answered (X-FEServer) and the detail. A line says so when TLS verification is OFF.
Rendered with rich at 100 columns; text from servers is never interpreted as rich markup.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from casprobe.exporters import CheckReport
from casprobe.exporters.console import render_to_text
from casprobe.model import ProbeResult, Severity, Step, Target

__all__ = ["WIDTH", "render"]

WIDTH = 100
_STYLE = {Severity.OK: "green", Severity.WARNING: "yellow", Severity.CRITICAL: "red", Severity.UNKNOWN: "magenta"}
_WORD = {Severity.OK: "OK", Severity.WARNING: "WARNING", Severity.CRITICAL: "FAILED", Severity.UNKNOWN: "UNKNOWN"}


def _cell(result: ProbeResult | None) -> Text:
    if result is None:
        return Text("-", style="dim")
    style = _STYLE[result.severity]
    if result.success:
        return Text(f"{_WORD[result.severity]} {result.duration:.2f} s", style=style)
    why = result.error_class.value if result.error_class else "failed"
    return Text(f"{_WORD[result.severity]} {why}", style=f"bold {style}")


def _name(target: Target) -> Text:
    text = Text(target.display, style="bold")
    if target.display != target.name:
        text.append(f"\n{target.name}", style="dim")
    return text


def _grid(report: CheckReport) -> Table:
    probes = list(dict.fromkeys(r.probe for r in report.results))
    targets = list(dict.fromkeys(r.target for r in report.results))
    by_key = {(r.target, r.probe): r for r in report.results}
    table = Table(expand=False)
    table.add_column("name", no_wrap=True, max_width=30)
    table.add_column("answered by", no_wrap=True, max_width=14)
    for probe in probes:
        table.add_column(probe, no_wrap=True)
    for target in targets:
        servers = {r.fe_server for r in report.results if r.target == target and r.fe_server}
        answered = Text(", ".join(sorted(servers)) or "-", style="" if servers else "dim")
        table.add_row(_name(target), answered, *(_cell(by_key.get((target, probe))) for probe in probes))
    return table


def _step_line(step: Step) -> Text:
    mark = Text("ok   ", style="green") if step.ok else Text("FAIL ", style="bold red")
    line = mark + Text(step.name)
    facts = []
    if step.status_code is not None:
        facts.append(f"HTTP {step.status_code}")
    if step.response_code is not None:
        facts.append(f"code {step.response_code}")
    if step.error_class is not None:
        facts.append(step.error_class.value)
    if step.address:
        facts.append(step.address)
    if step.fe_server:
        facts.append(f"FE {step.fe_server}")
    if step.duration:
        facts.append(f"{step.duration:.3f} s")
    if facts:
        line.append(f"  ({', '.join(facts)})", style="dim")
    if step.detail:
        line.append(f"\n{step.detail}", style="" if step.ok else "red")
    return line


def _trace(result: ProbeResult) -> Tree:
    style = _STYLE[result.severity]
    head = Text(f"{result.target.display} · {result.probe}: ", style=f"bold {style}")
    what = result.error_class.value if result.error_class else _WORD[result.severity].lower()
    head.append(f"{what} - {result.detail}", style=style)
    tree = Tree(head, guide_style="dim")
    for step in result.steps:
        tree.add(_step_line(step))
    return tree


def _headline(report: CheckReport) -> Text:
    results = report.results
    failed = sum(1 for r in results if not r.success)
    names = len({r.target for r in results})
    status = report.status
    text = Text("casprobe check: ", style="bold")
    text.append(f"{_WORD[status]}", style=f"bold {_STYLE[status]}")
    text.append(f" - {len(results)} probes of {names} names, {failed} failed, ")
    text.append(f"{report.finished_at - report.started_at:.1f} s")
    return text


def render(report: CheckReport, *, color: bool = False, width: int = WIDTH) -> str:
    parts: list[Text | Table | Tree] = [_headline(report)]
    if not report.tls_verification:
        parts.append(Text("TLS verification is OFF (--insecure): server certificates were not checked.", "bold red"))
    parts.extend(Text(note, style="dim") for note in report.notes)
    if report.results:
        parts.append(_grid(report))
    parts.extend(_trace(r) for r in report.results if r.severity is not Severity.OK)
    return render_to_text([Group(*parts)], width=width, color=color)
