"""The report as one self-contained HTML file: jinja2 (autoescape on), inline CSS, the charts as inline SVG.

Nothing in the page refers to anything outside it: no ``<script>``, no external stylesheet, font, image or link
(``casprobe/report/templates/report.html.j2`` and ``casprobe/report/report.css``, both packaged). Text from the
store (names, details, marker texts, settings) goes through jinja2's autoescaping; only the CSS file and the
charts, which :mod:`casprobe.report.charts` made, are marked safe. Times are shown in UTC with the offset from the
run's start; durations with :func:`casprobe.analysis_table.seconds` (as ``casprobe analyze`` prints them).
"""

from __future__ import annotations

import math
import time
from importlib import resources

import jinja2
from markupsafe import Markup

from casprobe import __version__
from casprobe.analysis_compare import NEW_CONNECTIONS, SESSIONS
from casprobe.analysis_stats import ALL
from casprobe.analysis_table import seconds
from casprobe.report.charts import all_charts
from casprobe.report.data import ReportData

__all__ = ["render_html", "utc"]

_TEMPLATE = "report.html.j2"


def utc(wall: float | None) -> str:
    """``2025-05-04 13:02:07 UTC`` (``-`` for None or a non-finite value)."""
    if wall is None or not math.isfinite(wall):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))


def _clock(wall: float | None) -> str:
    if wall is None or not math.isfinite(wall):
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(wall))


def _offset(t: float | None) -> str:
    if t is None or not math.isfinite(t):
        return "-"
    return f"+{t:.1f} s" if t >= 0 else f"{-t:.1f} s before"


def _rate(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value * 100:.1f} %"


def _ms(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value * 1000:.0f} ms"


def _signed(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if unit == "rate":
        return f"{value * 100:+.1f} pt"
    if value == 0:
        return "0"
    return ("+" if value > 0 else "−") + seconds(abs(value))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("casprobe.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(secs=seconds, rate=_rate, ms=_ms, utc=utc, clock=_clock, offset=_offset, signed=_signed)
    return env


def render_html(data: ReportData) -> str:
    """The whole report as an HTML document."""
    css = resources.files("casprobe.report").joinpath("report.css").read_text(encoding="utf-8")
    charts = {name: Markup(svg) for name, svg in all_charts(data).items()}
    a = data.analysis
    stats = {(s.row.target, s.row.probe, s.phase): s for s in a.stats}
    comparison = {(d.target, d.probe_class, d.scope): d for d in a.comparison}
    template = _environment().get_template(_TEMPLATE)
    return template.render(
        d=data,
        a=a,
        css=Markup(css),
        charts=charts,
        stats=stats,
        comparison=comparison,
        targets=list(dict.fromkeys(d.target for d in a.comparison)),
        classes=(NEW_CONNECTIONS, SESSIONS),
        phases=["before", "during", "after"] if a.phases.windows else [],
        all_phase=ALL,
        version=__version__,
    )
