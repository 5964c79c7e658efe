"""The availability timeline of a run: each name × probe as spans of working / failing time (issue 6, report).

Pure functions over the analysis clock (the one :func:`casprobe.analysis.analyze_run` chose: monotonic, else wall).
Rules, so that the chart tells the same story as the outage table (:mod:`casprobe.analysis_outages`):

- Within a row, results are taken in :func:`casprobe.analysis_outages.order_key` order and **consecutive results of
  the same state are merged into one span**. A span starts at the start of its first result and ends at the start
  of the next span; so a failing span is exactly an outage window (first failure → first success after it).
- The row's last span ends at the end of its last result; a row still failing at the end runs to the run's end
  (the end of the last stored result), as the analysis counts an open outage.
- A row with more than :data:`MAX_SPANS` spans (a flapping probe over a long run) is coarsened into bins of
  ``length / MAX_SPANS`` seconds; a bin holding any failure is a failing bin, so no outage disappears from the
  picture (it may look longer by less than one bin). The row says it was coarsened.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from casprobe.analysis_outages import Row, group_rows
from casprobe.model import ProbeResult, TargetKind

__all__ = ["MAX_SPANS", "Span", "TimelineRow", "coarsen", "on_clock", "state_spans", "timeline"]

#: Spans drawn per row at most before the row is coarsened into bins.
MAX_SPANS = 1000


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of one row in one state, in seconds from the run's start.

    Attributes:
        start_t, end_t: the span. ok: the probes worked. results: how many results it merges.
    """

    start_t: float
    end_t: float
    ok: bool
    results: int


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One name × probe on the timeline.

    Attributes:
        target: display name (``namespace``, ``mb1``). probe. kind: namespace or server. name: the DNS name.
        spans: in time order. results: results in the row. coarsened: spans were binned (see the module docstring).
    """

    target: str
    probe: str
    kind: TargetKind
    name: str
    spans: tuple[Span, ...]
    results: int
    coarsened: bool = False

    @property
    def label(self) -> str:
        return f"{self.target} · {self.probe}"


def on_clock(results: Iterable[ProbeResult], clock: str) -> list[ProbeResult]:
    """The results as the analysis saw them: on the wall clock (``started_mono`` := ``started_at``) if it used it."""
    if clock == "wall":
        return [replace(r, started_mono=r.started_at) for r in results]
    return list(results)


def state_spans(ordered: Sequence[ProbeResult], *, origin: float, run_end: float) -> list[Span]:
    """Merge one row's ordered results into spans of equal state (times relative to ``origin``)."""
    spans: list[Span] = []
    usable = [r for r in ordered if math.isfinite(r.started_mono) and math.isfinite(r.duration)]
    if not usable:
        return spans
    first = usable[0]
    start, state, count = first.started_mono, first.success, 0
    for result in usable:
        if result.success != state:
            spans.append(Span(start - origin, result.started_mono - origin, state, count))
            start, state, count = result.started_mono, result.success, 0
        count += 1
    last = usable[-1]
    end = last.started_mono + max(last.duration, 0.0)
    if not state:
        end = max(end, run_end)
    spans.append(Span(start - origin, max(end, start) - origin, state, count))
    return spans


def coarsen(spans: Sequence[Span], max_spans: int = MAX_SPANS) -> tuple[list[Span], bool]:
    """At most about ``max_spans`` spans: bins where any failure makes the bin failing; (spans, coarsened?)."""
    if len(spans) <= max_spans:
        return list(spans), False
    low, high = spans[0].start_t, spans[-1].end_t
    width = max((high - low) / max_spans, 1e-9)
    bins: list[Span] = []
    for span in spans:
        index = min(math.floor((span.start_t - low) / width), max_spans - 1)
        bin_start = low + index * width
        if bins and bins[-1].start_t == bin_start:
            prev = bins[-1]
            bins[-1] = Span(bin_start, max(prev.end_t, span.end_t), prev.ok and span.ok, prev.results + span.results)
        else:
            bins.append(Span(bin_start, span.end_t, span.ok, span.results))
    merged: list[Span] = []
    for item in bins:
        if merged and merged[-1].ok == item.ok:
            prev = merged[-1]
            merged[-1] = Span(prev.start_t, max(prev.end_t, item.end_t), prev.ok, prev.results + item.results)
        else:
            if merged:  # bins are contiguous: close the previous one where this one starts
                prev = merged[-1]
                merged[-1] = Span(prev.start_t, min(prev.end_t, item.start_t), prev.ok, prev.results)
            merged.append(item)
    return merged, True


def timeline(
    results: Sequence[ProbeResult], rows: Sequence[Row], *, origin: float, run_end: float
) -> tuple[TimelineRow, ...]:
    """The timeline of ``rows`` (in that order) from results already on the analysis clock."""
    grouped = {(row.target, row.probe): ordered for row, ordered in group_rows(results).items()}
    out = []
    for row in rows:
        ordered = grouped.get((row.target, row.probe), [])
        spans, coarsened = coarsen(state_spans(ordered, origin=origin, run_end=run_end))
        out.append(TimelineRow(row.target, row.probe, row.kind, row.name, tuple(spans), len(ordered), coarsened))
    return tuple(out)
