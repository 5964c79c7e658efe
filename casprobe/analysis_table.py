"""The terminal summary of a :class:`~casprobe.analysis.RunAnalysis` (``casprobe analyze``'s default format).

In this order, in plain words: what the run was and what is missing; the comparison (namespace vs each server
name, new connections vs sessions, overall and during the maintenance); the outages (start, end, duration, error
classes, what the lab's log says caused and ended each, time to detect and to recover); error rates and p50/p99
latency before, during and after; the backend distribution through the namespace as a compact timeline.
Rendered with rich at :data:`WIDTH` columns; text from servers (details) is never read as rich markup.
Times are given as ``+S s`` from the start of the run, with the wall clock (local time) where it helps.
"""

from __future__ import annotations

import math
import time

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from casprobe.analysis import RunAnalysis
from casprobe.analysis_compare import NEW_CONNECTIONS, SESSIONS, BackendDistribution, Disconnection
from casprobe.analysis_stats import ALL, RowStats
from casprobe.analysis_truth import OutageReport
from casprobe.exporters.console import render_to_text
from casprobe.model import TargetKind

__all__ = ["WIDTH", "render", "seconds"]

WIDTH = 100
_TIMELINE_COLUMNS = 60
_BARS = " ▁▂▃▄▅▆▇█"
_CLASSES = (NEW_CONNECTIONS, SESSIONS)
_MAX_BACKENDS = 12
_MAX_NAME = 20


def _offset(seconds: float) -> str:
    """A time relative to the run's start: ``+3.8 s``, or ``17.9 s before`` for what happened earlier."""
    return f"+{seconds:.1f} s" if seconds >= 0 else f"{-seconds:.1f} s before"


def seconds(value: float | None) -> str:
    """A duration for people: ``0 s``, ``0.25 s``, ``63.0 s``, ``12 min 5 s``; ``-`` for None."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return "0 s"
    if abs(value) < 1:
        return f"{value:.2f} s"
    if abs(value) < 120:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(abs(value)), 60)
    return f"{'-' if value < 0 else ''}{minutes} min {rest} s"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _at(a: RunAnalysis, mono: float | None) -> str:
    if mono is None:
        return "-"
    clock = time.strftime("%H:%M:%S", time.localtime(mono + a.wall_offset))
    return f"{_offset(mono - a.start)} ({clock})"


def _where(target: str, kind: TargetKind) -> str:
    return "the namespace" if kind is TargetKind.NAMESPACE and target == "namespace" else target


def _headline(a: RunAnalysis) -> list[RenderableType]:
    run = a.run
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started_at)) if run.started_at else "?"
    head = Text("casprobe analyze: ", style="bold")
    head.append(f"run {run.run_id} from {started}, {seconds(a.length_s)} of results every {run.interval_s:g} s")
    head.append(
        f"\n{_count(a.result_count, 'result')}, {_count(len(a.outages), 'outage')}, "
        f"{_count(a.markers, 'marker')}, {_count(a.lab_events, 'lab event')}"
    )
    out: list[RenderableType] = [head]
    if not run.tls_verification:
        out.append(Text("TLS verification was OFF during this run: certificates were not checked.", "bold red"))
    out.extend(Text(f"note: {note}", style="yellow") for note in a.notes)
    for window in a.phases.windows:
        end = "the end of the run" if window.end is None else _at(a, window.end)
        out.append(Text(f"maintenance window ({window.source}): {window.label}, {_at(a, window.start)} → {end}"))
    return out


def _sentence(target: str, rows: list[Disconnection]) -> Text:
    found = {(d.probe_class, d.scope): d for d in rows}
    overall = [f"{seconds(found[c, 'overall'].disconnect_s)} ({c})" for c in _CLASSES if (c, "overall") in found]
    text = Text(f"through {_where(target, rows[0].kind)}: ", style="bold")
    text.append(", ".join(overall) + " disconnected")
    during = [seconds(found[c, "during"].disconnect_s) for c in _CLASSES if (c, "during") in found]
    if during:
        text.append(f" (during the maintenance: {', '.join(during)})")
    return text


def _comparison(a: RunAnalysis) -> list[RenderableType]:
    if not a.comparison:
        return []
    targets = list(dict.fromkeys(d.target for d in a.comparison))
    out: list[RenderableType] = [Text("\nDisconnection: namespace vs server names", style="bold underline")]
    out.extend(_sentence(t, [d for d in a.comparison if d.target == t]) for t in targets)
    during = bool(a.phases.windows)
    table = Table(expand=False)
    table.add_column("name", no_wrap=True)
    table.add_column("probes", no_wrap=True)
    for column in ("disconnected", "errors", "outages") + (("during: disc.", "during: errors") if during else ()):
        table.add_column(column, justify="right", no_wrap=True)
    by_key = {(d.target, d.probe_class, d.scope): d for d in a.comparison}
    for target in targets:
        for klass in _CLASSES:
            overall = by_key.get((target, klass, "overall"))
            if overall is None:
                continue
            cells: list[RenderableType] = [
                Text(seconds(overall.disconnect_s), style="red" if overall.disconnect_s > 0 else "green"),
                _rate(overall.error_rate),
                str(overall.outages),
            ]
            inside = by_key.get((target, klass, "during"))
            if inside is not None:
                style = "red" if inside.disconnect_s > 0 else ""
                cells += [Text(seconds(inside.disconnect_s), style=style), _rate(inside.error_rate)]
            elif during:
                cells += ["-", "-"]
            table.add_row(target, klass, *cells)
    out.append(table)
    return out


def _relative(delta: float | None) -> str:
    if delta is None:
        return "-"
    return f"{seconds(delta)} after" if delta >= 0 else f"{seconds(-delta)} before"


def _causes(a: RunAnalysis) -> list[RenderableType]:
    """What the lab's log says, grouped: the outages that share a cause and a restore are listed together."""
    groups: dict[tuple[int | None, int | None], list[OutageReport]] = {}
    for rep in a.outages:
        key = (None if rep.cause is None else rep.cause.seq, None if rep.restore is None else rep.restore.seq)
        groups.setdefault(key, []).append(rep)
    out: list[RenderableType] = []
    for reps in groups.values():
        first = reps[0]
        if first.cause is None and first.restore is None:
            continue
        names = ", ".join(f"{r.outage.target} · {r.outage.probe}" for r in reps)
        line = Text(f"{names}: ", style="bold")
        bits = []
        if first.cause is not None:
            bits.append(f"began after {first.cause.text} (+{first.cause.mono - a.start:.2f} s)")
        if first.restore is not None:
            bits.append(f"ended after {first.restore.text} (+{first.restore.mono - a.start:.2f} s)")
        line.append("; ".join(bits), style="")
        out.append(line)
    unexplained = [r for r in a.outages if r.cause is None and r.restore is None]
    if unexplained and a.lab_events:
        names = ", ".join(f"{r.outage.target} · {r.outage.probe}" for r in unexplained[:10])
        more = f" and {len(unexplained) - 10} more" if len(unexplained) > 10 else ""
        out.append(Text(f"no lab event explains: {names}{more}", style="dim"))
    return out


def _outages(a: RunAnalysis) -> list[RenderableType]:
    title = Text("\nOutages (detect: start − cause; recover: end − restore, per the lab's log)", style="bold underline")
    if not a.outages:
        return [title, Text("none: every probe of every name worked throughout the run.")]
    table = Table(expand=False)
    for column in ("name · probe", "from", "to", "lasted", "failed", "why", "detect", "recover"):
        table.add_column(column, no_wrap=column != "why", justify="right" if column in ("failed",) else "left")
    for rep in a.outages:
        o = rep.outage
        lasted = seconds(o.duration) if o.end_mono is not None else f"≥ {seconds(a.end - o.start_mono)}"
        table.add_row(
            f"{o.target} · {o.probe}",
            _offset(o.start_mono - a.start),
            _offset(o.end_mono - a.start) if o.end_mono is not None else Text("still failing", style="red"),
            lasted,
            str(o.failures),
            ", ".join(o.error_classes),
            seconds(rep.detect_s),
            seconds(rep.recover_s),
        )
    return [title, table, *_causes(a)]


def _cell(stats: RowStats | None) -> Text:
    if stats is None or not stats.count:
        return Text("-", style="dim")
    duration = stats.metric("duration")
    text = Text(_rate(stats.error_rate), style="red" if stats.failures else "green")
    if duration is not None:
        text.append(f"\n{_ms(duration.p50)} / {_ms(duration.p99)}", style="dim")
    return text


def _stats(a: RunAnalysis) -> list[RenderableType]:
    if not a.stats:
        return []
    phases = [ALL, "before", "during", "after"] if a.phases.windows else [ALL]
    out: list[RenderableType] = [
        Text("\nError rate, and p50 / p99 latency of successful probes", style="bold underline")
    ]
    table = Table(expand=False)
    table.add_column("name · probe")
    for phase in phases:
        table.add_column("whole run" if phase == ALL else phase, justify="right")
    by_key = {(s.row, s.phase): s for s in a.stats}
    for row in a.rows:
        table.add_row(f"{row.target} · {row.probe}", *(_cell(by_key.get((row, phase))) for phase in phases))
    out.append(table)
    return out


def _timeline(a: RunAnalysis, dist: BackendDistribution) -> list[RenderableType]:
    title = Text("\nWho answered through the namespace (X-FEServer)", style="bold underline")
    if not dist.seen:
        return [title, Text("no answer through the namespace carried an X-FEServer header.", style="dim")]
    buckets = dist.buckets
    per = max(1, math.ceil(len(buckets) / _TIMELINE_COLUMNS))
    columns = [buckets[i : i + per] for i in range(0, len(buckets), per)]
    step = dist.bucket_s * per
    out: list[RenderableType] = [title, Text(f"one column = {seconds(step)}; bar height = share of the answers")]
    shown = sorted(sorted(dist.seen, key=lambda s: -s.count)[:_MAX_BACKENDS], key=lambda s: s.server)
    name_width = min(max(len(s.server) for s in shown), _MAX_NAME)
    for seen in shown:
        line = Text(f"{seen.server[:_MAX_NAME]:<{name_width}} ")
        for column in columns:
            total = sum(sum(n for _, n in b.counts) for b in column)
            mine = sum(b.count(seen.server) for b in column)
            level = 0 if not total else max(1, round(mine / total * (len(_BARS) - 1))) if mine else 0
            line.append(_BARS[level], style="cyan" if level else "")
        line.append(f"  {seen.count} answers, last +{seen.last_mono - a.start:.1f} s", style="dim")
        out.append(line)
    if len(dist.seen) > len(shown):
        out.append(Text(f"… and {len(dist.seen) - len(shown)} more backends (see --format json)", style="dim"))
    right = f"+{a.length_s:.0f} s"
    out.append(Text(f"{'':<{name_width}} +0 s{'':{max(len(columns) - 4 - len(right), 1)}}{right}", style="dim"))
    return out


def render(analysis: RunAnalysis, *, color: bool = False, width: int = WIDTH) -> str:
    """The summary as text (ANSI colours only with ``color``)."""
    parts = _headline(analysis)
    if analysis.result_count:
        parts += _comparison(analysis) + _outages(analysis) + _stats(analysis)
        parts += _timeline(analysis, analysis.backends)
    return render_to_text([Group(*parts)], width=width, color=color)
