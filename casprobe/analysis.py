"""The analysis of a watched run (issue 4): how long were users disconnected, on which name, for which protocol, why.

Pure library over what a run store holds (no I/O): :func:`analyze_run` takes the run's settings, results, markers
and lab events and returns one frozen :class:`RunAnalysis`; ``RunAnalysis.to_json()`` is its versioned JSON form
(:data:`JSON_FORMAT`, :data:`JSON_VERSION`). The parts, each in its own module:

- outage windows per name × probe (:mod:`casprobe.analysis_outages`: first failure → first success after it);
- before / during / after the maintenance (:mod:`casprobe.analysis_phases`: markers, else the lab's log);
- time to detect and to recover against the lab's event log (:mod:`casprobe.analysis_truth`);
- error rates and nearest-rank latency percentiles per phase (:mod:`casprobe.analysis_stats`);
- namespace vs server names, and the backend distribution through the namespace (:mod:`casprobe.analysis_compare`).

The clock: every window is on ``time.monotonic()`` (``started_mono``, the markers' and lab events' ``mono``), the
clock the lab's log shares on Linux. If any result lacks a monotonic start (0.0: written by a casprobe that did
not record one), the whole analysis runs on the wall clock instead (``started_at`` and the ``wall`` fields), and a
note says so. The run spans from the first result's start to the end of the last result (the last thing known):
an outage still open at the end counts until then. Times in the JSON are given on the analysis clock and as ``t``,
seconds since the run's start.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from casprobe.analysis_compare import (
    BackendDistribution,
    Disconnection,
    backend_distribution,
    compare,
    default_bucket,
    outage_span,
)
from casprobe.analysis_outages import AnalysisError, Row, check_interval, group_rows, outages, row_outages
from casprobe.analysis_phases import Phases, Window, phases_from_lab_events, phases_from_markers
from casprobe.analysis_stats import Percentiles, RowStats, row_stats
from casprobe.analysis_truth import DEFAULT_SLACK_S, OutageReport, TruthEvent, TruthLog, short_server
from casprobe.exporters.json import run_object
from casprobe.model import LabEventRecord, Marker, ProbeResult, RunInfo, TargetKind

__all__ = [
    "JSON_FORMAT",
    "JSON_VERSION",
    "AnalysisError",
    "OutageReport",
    "Phases",
    "RunAnalysis",
    "Window",
    "analyze_run",
    "outages",
    "phases_from_lab_events",
    "phases_from_markers",
]

JSON_FORMAT = "casprobe.analysis"
JSON_VERSION = 1


@dataclass(frozen=True, slots=True)
class RunAnalysis:
    """Everything the analysis found in one run.

    Attributes:
        run: the run's settings. clock: ``mono`` or ``wall`` (see the module docstring). start / end: the run's
        span on that clock. wall_offset: wall time − analysis clock (median over the results), to date things.
        result_count: results analysed. rows: every name × probe, namespace first. phases: the maintenance
        windows. outages: every outage (with at least ``min_failures`` failures) with its cause and restore.
        stats: per row × phase. comparison: namespace vs names. backends: who answered through the namespace.
        markers / lab_events: how many there were. notes: what is missing or was assumed, for people.
    """

    run: RunInfo
    clock: str
    start: float
    end: float
    wall_offset: float
    result_count: int
    rows: tuple[Row, ...]
    phases: Phases
    outages: tuple[OutageReport, ...]
    stats: tuple[RowStats, ...]
    comparison: tuple[Disconnection, ...]
    backends: BackendDistribution
    markers: int = 0
    lab_events: int = 0
    min_failures: int = 1
    notes: tuple[str, ...] = ()

    @property
    def length_s(self) -> float:
        return max(self.end - self.start, 0.0)

    def to_json(self) -> dict[str, Any]:
        """The analysis as plain JSON data (versioned: ``format`` and ``version``)."""
        return _to_json(self)


def _normalise_clock(
    results: list[ProbeResult], markers: list[Marker], events: list[LabEventRecord]
) -> tuple[str, list[ProbeResult], list[Marker], list[LabEventRecord]]:
    if all(r.started_mono > 0 for r in results):
        return "mono", results, markers, events
    return (
        "wall",
        [replace(r, started_mono=r.started_at) for r in results],
        [replace(m, mono=m.wall) for m in markers],
        [replace(e, mono=e.wall) for e in events],
    )


def _home_server(ordered: list[ProbeResult], starts: list[float], before: float) -> str:
    """The mailbox's server as the row's last success before ``before`` reported it (X-CalculatedBETarget)."""
    for result in reversed(ordered[: bisect.bisect_left(starts, before)]):
        if result.success and result.be_server:
            return short_server(result.be_server)
    return ""


def analyze_run(
    run: RunInfo,
    results: Iterable[ProbeResult],
    markers: Iterable[Marker] = (),
    lab_events: Iterable[LabEventRecord] = (),
    *,
    phases: Phases | None = None,
    database: str | None = None,
    min_failures: int = 1,
    bucket_s: float | None = None,
    slack_s: float = DEFAULT_SLACK_S,
) -> RunAnalysis:
    """Analyse one run.

    Args:
        run: the run's settings (``interval_s`` is the schedule).
        results, markers, lab_events: what the store holds, in any order.
        phases: the maintenance windows, on the analysis clock (the monotonic one unless results lack it);
            default: from the markers, else from the lab's log, else none.
        database: the mailbox's database (``DB01``), to pick the copy moves that explain namespace outages.
        min_failures: report only outages with at least this many failed results (1: every outage).
        bucket_s: width of the backend distribution's buckets (default: see analysis_compare).
        slack_s: how far after an outage's start or end a lab event may be recorded and still match.
    """
    interval = check_interval(run.interval_s)
    if not math.isfinite(slack_s) or slack_s < 0:
        raise AnalysisError(f"the slack must be a non-negative number of seconds, got {slack_s!r}")
    clock, kept, marks, events = _normalise_clock(list(results), list(markers), list(lab_events))
    notes: list[str] = []
    if clock == "wall":
        notes.append("some results have no monotonic start time: the analysis uses the wall clock")
    usable = [r for r in kept if math.isfinite(r.started_mono) and math.isfinite(r.duration)]
    if len(usable) < len(kept):
        notes.append(f"{len(kept) - len(usable)} results without a usable start time or duration were skipped")
    rows = group_rows(usable)
    rows = dict(sorted(rows.items(), key=lambda item: item[0].kind is not TargetKind.NAMESPACE))
    start = min((r.started_mono for r in usable), default=0.0)
    end = max((r.started_mono + max(r.duration, 0.0) for r in usable), default=start)
    offsets = [r.started_at - r.started_mono for r in usable if math.isfinite(r.started_at)]
    wall_offset = statistics.median(offsets) if offsets else 0.0
    if not usable:
        notes.append("the store holds no results: nothing to analyse")
    if run.ended_at is None:
        notes.append("the run did not finish (still running, or killed): analysed up to its last stored result")

    if phases is None:
        phases = phases_from_markers(marks)
        if not phases.windows:
            phases = phases_from_lab_events(events)
    if not phases.windows:
        notes.append("no maintenance window (no start/end markers, no maintenance or power events): no phases")
    if not events:
        notes.append("no lab event log: outages are not matched against a ground truth")

    truth = TruthLog(events, slack_s=slack_s)
    reports: list[OutageReport] = []
    dropped = 0
    for row, ordered in rows.items():
        starts = [r.started_mono for r in ordered]
        for outage in row_outages(row, ordered):
            if outage.failures < min_failures:
                dropped += 1
                continue
            home = _home_server(ordered, starts, outage.start_mono) if row.kind is TargetKind.NAMESPACE else ""
            reports.append(truth.match(outage, row, home=home, database=database))
    reports.sort(key=lambda rep: (rep.outage.start_mono, rep.outage.target, rep.outage.probe))
    if dropped:
        notes.append(f"{dropped} outages with fewer than {min_failures} failed results are not listed or counted")

    bucket = bucket_s if bucket_s is not None else default_bucket(interval, end - start)
    return RunAnalysis(
        run=run,
        clock=clock,
        start=start,
        end=end,
        wall_offset=wall_offset,
        result_count=len(usable),
        rows=tuple(rows),
        phases=phases,
        outages=tuple(reports),
        stats=row_stats(rows, phases),
        comparison=compare(rows, [rep.outage for rep in reports], phases, end),
        backends=backend_distribution(usable, start=start, end=end, bucket_s=bucket),
        markers=len(marks),
        lab_events=len(events),
        min_failures=min_failures,
        notes=tuple(notes),
    )


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _event_json(event: TruthEvent | None, analysis: RunAnalysis) -> dict[str, Any] | None:
    if event is None:
        return None
    return {"seq": event.seq, "kind": event.kind, "text": event.text, "t": _num(event.mono - analysis.start)}


def _percentiles_json(p: Percentiles) -> dict[str, Any]:
    return {"n": p.n, "p50": _num(p.p50), "p90": _num(p.p90), "p99": _num(p.p99), "max": _num(p.max)}


def _to_json(a: RunAnalysis) -> dict[str, Any]:
    def t(mono: float | None) -> float | None:
        return None if mono is None else _num(mono - a.start)

    return {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "run": run_object(a.run),
        "clock": a.clock,
        "start": _num(a.start),
        "end": _num(a.end),
        "length_s": _num(a.length_s),
        "wall_offset": _num(a.wall_offset),
        "results": a.result_count,
        "markers": a.markers,
        "lab_events": a.lab_events,
        "min_failures": a.min_failures,
        "notes": list(a.notes),
        "phases": {
            "source": a.phases.source,
            "windows": [
                {"label": w.label, "source": w.source, "start_t": t(w.start), "end_t": t(w.end)}
                for w in a.phases.windows
            ],
        },
        "comparison": [
            {
                "target": d.target,
                "kind": d.kind.value,
                "probe_class": d.probe_class,
                "probes": list(d.probes),
                "scope": d.scope,
                "results": d.count,
                "failures": d.failures,
                "error_rate": _num(d.error_rate),
                "disconnect_s": _num(d.disconnect_s),
                "outages": d.outages,
            }
            for d in a.comparison
        ],
        "outages": [
            {
                "target": rep.outage.target,
                "kind": rep.kind.value,
                "probe": rep.outage.probe,
                "start_t": t(rep.outage.start_mono),
                "end_t": t(rep.outage.end_mono),
                "start_wall": rep.outage.start_wall,
                "end_wall": rep.outage.end_wall,
                "duration_s": _num(rep.outage.duration),
                "counted_s": _num(outage_span(rep.outage, a.end)[1] - rep.outage.start_mono),
                "open": rep.outage.end_mono is None,
                "failures": rep.outage.failures,
                "error_classes": list(rep.outage.error_classes),
                "first_detail": rep.outage.first_detail,
                "cause": _event_json(rep.cause, a),
                "detect_s": _num(rep.detect_s),
                "restore": _event_json(rep.restore, a),
                "recover_s": _num(rep.recover_s),
            }
            for rep in a.outages
        ],
        "stats": [
            {
                "target": s.row.target,
                "kind": s.row.kind.value,
                "probe": s.row.probe,
                "phase": s.phase,
                "results": s.count,
                "failures": s.failures,
                "error_rate": _num(s.error_rate),
                "latency": {name: _percentiles_json(p) for name, p in s.latency},
            }
            for s in a.stats
        ],
        "backends": {
            "bucket_s": _num(a.backends.bucket_s),
            "seen": [
                {"server": s.server, "count": s.count, "first_t": t(s.first_mono), "last_t": t(s.last_mono)}
                for s in a.backends.seen
            ],
            "buckets": [
                {"start_t": t(b.start), "counts": dict(b.counts), "without": b.without} for b in a.backends.buckets
            ],
        },
    }
