"""The report's charts, each an inline ``<svg>`` string drawn with matplotlib's object API (no pyplot state).

Text stays text (``svg.fonttype: none``) in a generic font family (``'DejaVu Sans', sans-serif``), so the file
carries no glyph outlines and no font reference; nothing is rasterised. The SVG prologue (XML declaration and a
DOCTYPE naming a W3C URL) is dropped, group ids are stripped (several charts share one HTML document), clip-path
ids are salted per chart, and the root element gets ``id="chart-<name>"``, ``role="img"`` and an ``aria-label``.
Labels that come from data (names, marker texts) are shortened and have ``$`` escaped, so that matplotlib never
reads them as mathtext.

Charts (see ``matplotlib.org/stable/api/figure_api.html``, ``backend_svg``):

- ``timeline``: each name × probe as working / failing spans, the maintenance windows shaded, markers and lab
  events as labelled vertical lines; x in seconds from the run's start with the UTC wall clock under each tick.
- ``disconnect``: disconnect time per name, new connections and sessions side by side.
- ``phases``: error rate and p50 latency per name × probe, before / during / after.
- ``backends``: who answered through the namespace (X-FEServer) per time bucket, stacked.
- ``load``: per cohort of a load run, seconds cut off per simulated client (mean) and the longest disconnect.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from matplotlib.typing import RcKeyType

from casprobe.analysis_compare import NEW_CONNECTIONS, SESSIONS
from casprobe.analysis_stats import ALL
from casprobe.report.data import LoadSection, ReportData

__all__ = ["all_charts", "backends", "disconnect", "load", "phases", "timeline"]

OK, FAIL, WINDOW, MARKER, LAB, NONE = "#43a047", "#d32f2f", "#fff3c4", "#1565c0", "#757575", "#bdbdbd"
_PALETTE = ("#1e88e5", "#fb8c00", "#8e24aa", "#00897b", "#6d4c41", "#c0ca33", "#e53935", "#3949ab", "#00acc1")
_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "path.simplify": True,
}
_MAX_LABEL = 48
_MAX_MARK_TEXT = 40
_MAX_LEVELS = 6
_CHAR_FRACTION = 0.0058  # width of one 6 pt character as a fraction of the plot's width (about 8.5 in)
_WIDTH_IN = 10.0
_GROUP_ID = re.compile(r'<g id="[^"]*"')
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)


def _label(text: str, limit: int = _MAX_LABEL) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


@contextmanager
def _style(name: str) -> Iterator[None]:
    rc: dict[RcKeyType, Any] = {**_RC, "svg.hashsalt": f"casprobe-{name}"}
    with matplotlib.rc_context(rc):
        yield


def _svg(fig: Figure, name: str, title: str) -> str:
    buffer = io.StringIO()
    fig.savefig(
        buffer,
        format="svg",
        bbox_inches="tight",
        metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
    )
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = _GROUP_ID.sub("<g", text)
    text = _METADATA.sub("", text)
    return f'<svg id="chart-{name}" class="chart" role="img" aria-label="{_attr(title)}" ' + text[len("<svg ") :]


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _clock_axis(ax: Axes, data: ReportData) -> None:
    def fmt(t: float, _pos: int | None = None) -> str:
        return f"+{t:.0f} s\n{time.strftime('%H:%M:%S', time.gmtime(data.wall(t)))}"

    ax.xaxis.set_major_formatter(FuncFormatter(fmt))
    ax.set_xlabel("seconds from the start of the run · UTC")


def _label_levels(data: ReportData, length: float) -> list[int | None]:
    """A text row above the chart for each mark's label so that labels never overlap (None: no room; the table
    under the chart lists every mark)."""
    ends: list[float] = []  # per level, where its last label ends (seconds)
    per_char = max(length, 1.0) * _CHAR_FRACTION
    out: list[int | None] = []
    for mark in data.marks:
        width = (min(len(mark.text), _MAX_MARK_TEXT) + 1) * per_char
        level = next((i for i, end in enumerate(ends) if end <= mark.t), None)
        if level is None and len(ends) < _MAX_LEVELS:
            level = len(ends)
            ends.append(0.0)
        if level is not None:
            ends[level] = mark.t + width
        out.append(level)
    return out


def timeline(data: ReportData) -> str:
    """Availability per name × probe with windows, markers and lab events."""
    a = data.analysis
    rows = data.timeline
    with _style("timeline"):
        fig = Figure(figsize=(_WIDTH_IN, 1.6 + 0.28 * max(len(rows), 1)))
        ax = fig.subplots()
        for window in a.phases.windows:
            end = a.end if window.end is None else window.end
            ax.axvspan(window.start - a.start, end - a.start, color=WINDOW, zorder=0)
        for i, row in enumerate(rows):
            y = len(rows) - 1 - i
            for ok, color in ((True, OK), (False, FAIL)):
                bars = [(s.start_t, max(s.end_t - s.start_t, 1e-3)) for s in row.spans if s.ok == ok]
                if bars:
                    ax.broken_barh(bars, (y - 0.35, 0.7), facecolors=color, edgecolors="none", zorder=2)
        ax.set_yticks(range(len(rows)), [_label(r.label) for r in reversed(rows)])
        ax.set_ylim(-0.6, max(len(rows), 1) - 0.4)
        ax.set_xlim(0, max(a.length_s, 1.0))
        levels = _label_levels(data, a.length_s)
        for mark, level in zip(data.marks, levels, strict=True):
            color = MARKER if mark.source == "marker" else LAB
            ax.axvline(mark.t, color=color, lw=0.8, ls="--" if mark.source == "marker" else ":", zorder=3)
            if level is not None:
                ax.annotate(
                    _label(mark.text, _MAX_MARK_TEXT),
                    xy=(mark.t, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(1, 3 + 9 * level),
                    textcoords="offset points",
                    fontsize=6,
                    color=color,
                    va="bottom",
                    ha="left",
                    annotation_clip=False,
                )
        _clock_axis(ax, data)
        ax.set_title(
            "green: probes worked · red: failing · shaded: maintenance · dashed: markers · dotted: lab events",
            fontsize=7,
            loc="left",
            pad=8 + 9 * (max((v for v in levels if v is not None), default=-1) + 1),
        )
        return _svg(fig, "timeline", "Availability timeline per name and probe")


def disconnect(data: ReportData) -> str:
    """Disconnect time per name (new connections and sessions, over the whole run)."""
    a = data.analysis
    targets = list(dict.fromkeys(d.target for d in a.comparison))
    figures = {(d.target, d.probe_class): d.disconnect_s for d in a.comparison if d.scope == "overall"}
    with _style("disconnect"):
        fig = Figure(figsize=(_WIDTH_IN, 1.2 + 0.45 * max(len(targets), 1)))
        ax = fig.subplots()
        height = 0.38
        for j, (klass, color) in enumerate(((NEW_CONNECTIONS, FAIL), (SESSIONS, "#ef6c00"))):
            ys = [len(targets) - 1 - i + (0.2 - j * height) for i in range(len(targets))]
            values = [figures.get((t, klass), 0.0) for t in targets]
            bars = ax.barh(ys, values, height=height, color=color, label=klass)
            ax.bar_label(
                bars,
                labels=[f"{v:.1f} s" if (t, klass) in figures else "" for t, v in zip(targets, values, strict=True)],
                fontsize=7,
                padding=2,
            )
        ax.set_yticks([len(targets) - 1 - i for i in range(len(targets))], [_label(t) for t in targets])
        ax.set_xlabel("seconds disconnected (union of the outage windows)")
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(fig, "disconnect", "Disconnect time: namespace vs each server name")


def phases(data: ReportData) -> str:
    """Error rate and p50 latency per name × probe, before / during / after (or the whole run without phases)."""
    a = data.analysis
    names = ["before", "during", "after"] if a.phases.windows else [ALL]
    colors = dict(zip(["before", "during", "after", ALL], ["#90a4ae", FAIL, "#1e88e5", "#546e7a"], strict=True))
    stats = {(s.row, s.phase): s for s in a.stats}
    rows = list(a.rows)
    with _style("phases"):
        fig = Figure(figsize=(_WIDTH_IN, 1.4 + 0.32 * max(len(rows), 1)))
        left, right = fig.subplots(1, 2, sharey=True)
        height = 0.8 / len(names)
        for j, phase in enumerate(names):
            ys = [len(rows) - 1 - i + 0.4 - (j + 0.5) * height for i in range(len(rows))]
            rates, p50s = [], []
            for row in rows:
                s = stats.get((row, phase))
                rates.append(100 * (s.error_rate or 0.0) if s is not None else 0.0)
                duration = s.metric("duration") if s is not None else None
                p50s.append(1000 * duration.p50 if duration is not None else 0.0)
            label = "whole run" if phase == ALL else phase
            left.barh(ys, rates, height=height, color=colors[phase], label=label)
            right.barh(ys, p50s, height=height, color=colors[phase], label=label)
        left.set_yticks(
            [len(rows) - 1 - i for i in range(len(rows))], [_label(f"{r.target} · {r.probe}") for r in rows]
        )
        left.set_xlabel("error rate (%)")
        right.set_xlabel("p50 latency of successful probes (ms)")
        right.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(fig, "phases", "Error rate and latency before, during and after the maintenance")


def backends(data: ReportData) -> str:
    """Who answered through the namespace over time, stacked per bucket."""
    a = data.analysis
    dist = a.backends
    servers = [s.server for s in dist.seen]
    with _style("backends"):
        fig = Figure(figsize=(_WIDTH_IN, 2.6))
        ax = fig.subplots()
        xs = [b.start - a.start for b in dist.buckets]
        bottom = [0.0] * len(xs)
        series = [(server, [float(b.count(server)) for b in dist.buckets]) for server in servers]
        series.append(("no X-FEServer", [float(b.without) for b in dist.buckets]))
        for i, (name, values) in enumerate(series):
            if not any(values):
                continue
            color = NONE if name == "no X-FEServer" else _PALETTE[i % len(_PALETTE)]
            ax.bar(
                xs,
                values,
                width=dist.bucket_s,
                bottom=bottom,
                align="edge",
                color=color,
                label=_label(name),
                linewidth=0,
            )
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        for window in a.phases.windows:
            end = a.end if window.end is None else window.end
            ax.axvspan(window.start - a.start, end - a.start, color=WINDOW, zorder=0)
        ax.set_xlim(0, max(a.length_s, dist.bucket_s))
        ax.set_ylabel(f"answers per {dist.bucket_s:g} s")
        _clock_axis(ax, data)
        if servers or any(b.without for b in dist.buckets):
            ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(fig, "backends", "Backend distribution through the namespace over time")


def load(data: ReportData, section: LoadSection, index: int) -> str:
    """One load run: per cohort, mean seconds cut off per client and the longest disconnect."""
    cohorts = list(section.cohorts)
    with _style(f"load-{index}"):
        fig = Figure(figsize=(_WIDTH_IN, 1.2 + 0.45 * max(len(cohorts), 1)))
        ax = fig.subplots()
        ys = [len(cohorts) - 1 - i for i in range(len(cohorts))]
        mean = ax.barh(
            [y + 0.2 for y in ys],
            [c.mean_per_user_s for c in cohorts],
            height=0.38,
            color=FAIL,
            label="mean seconds cut off per client",
        )
        longest = ax.barh(
            [y - 0.2 for y in ys],
            [c.longest_s for c in cohorts],
            height=0.38,
            color="#ef6c00",
            label="longest disconnect (s)",
        )
        ax.bar_label(mean, fmt="%.1f s", fontsize=7, padding=2)
        ax.bar_label(longest, fmt="%.1f s", fontsize=7, padding=2)
        ax.set_yticks(ys, [_label(f"{c.cohort} ({c.users} clients)") for c in cohorts])
        ax.set_xlabel("seconds")
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(fig, f"load-{index}", f"Load run {index}: disconnects per cohort")


def all_charts(data: ReportData) -> dict[str, str]:
    """Every chart the report shows, by name (none for a store without results)."""
    if data.empty:
        return {}
    charts = {"timeline": timeline(data), "disconnect": disconnect(data), "phases": phases(data)}
    charts["backends"] = backends(data)
    for i, section in enumerate(data.load, 1):
        if section.cohorts:
            charts[f"load-{i}"] = load(data, section, i)
    return charts
