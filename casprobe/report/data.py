"""Everything a report shows, collected once from a run store into one frozen :class:`ReportData` (issue 6).

The figures come from the analysis library and nowhere else: :func:`casprobe.analysis.analyze_run` (outages,
phases, error rates and percentiles, namespace vs names, backends) and
:func:`casprobe.analysis_load.cohort_figures` (each load run's cohorts). The report adds only what the analysis
does not hold: the timeline spans (:mod:`casprobe.report.timeline`), the verdict sentences
(:mod:`casprobe.report.verdict`), certificates, authentication and settings (:mod:`casprobe.report.facts`) and
the baseline figures (:mod:`casprobe.report.baseline`).

Times: every ``*_t`` is seconds from the run's start (the first result's start, on the analysis clock); walls are
``time.time()`` values, shown in UTC. A run that did not finish (``ended_at`` None: killed, or still running) is
reported up to its last stored result, and says so. Stores are opened read-only: an older schema is read through
an upgraded in-memory copy (:meth:`casprobe.store.RunStore.open`) and the file is never changed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from casprobe.analysis import RunAnalysis, analyze_run
from casprobe.analysis_load import CohortFigures, cohort_figures
from casprobe.analysis_phases import event_fields
from casprobe.errors import CasprobeError
from casprobe.model import LabEventRecord, LoadDisconnect, LoadRun, Marker, ProbeResult, RunInfo
from casprobe.report.baseline import Baseline, deltas
from casprobe.report.facts import AuthSeen, Certificate, auth_seen, certificates, settings_pairs
from casprobe.report.timeline import TimelineRow, on_clock, timeline
from casprobe.report.verdict import Verdict, verdicts
from casprobe.store import RunStore, StoreError

__all__ = ["LoadSection", "Mark", "ReportData", "ReportError", "collect", "load_report"]

_MAX_MARK_TEXT = 120


class ReportError(CasprobeError):
    """A report cannot be made (its message names the file and why)."""


@dataclass(frozen=True, slots=True)
class Mark:
    """A marker or a lab event, drawn as a labelled vertical line on the timeline.

    Attributes: t (seconds from the run's start), wall, text, source (``marker`` or ``lab``).
    """

    t: float
    wall: float
    text: str
    source: str


@dataclass(frozen=True, slots=True)
class LoadSection:
    """One load run of the store with its cohorts' figures (:mod:`casprobe.analysis_load`).

    Attributes: run (the LoadRun, with Locust's request stats), cohorts, disconnects (records), start_t / end_t
    (seconds from the run's start).
    """

    run: LoadRun
    cohorts: tuple[CohortFigures, ...]
    disconnects: int
    start_t: float
    end_t: float


@dataclass(frozen=True, slots=True)
class ReportData:
    """What one report shows.

    Attributes:
        source: the store's path. analysis: the analysis of its run. finished: the run recorded its end.
        start_wall / end_wall: the run's span in wall time (the first result's start; the recorded end, else the
        end of the last result). timeline: per name × probe. marks: markers and lab events. verdicts: one per
        name. certificates, auth: as seen. settings: the run's settings as (key, value) lines. load: the load
        runs. baseline: the comparison with ``--baseline`` (None without one). notes: what is missing or assumed.
        generated_at: when the report was made.
    """

    source: str
    analysis: RunAnalysis
    finished: bool
    start_wall: float
    end_wall: float
    timeline: tuple[TimelineRow, ...]
    marks: tuple[Mark, ...]
    verdicts: tuple[Verdict, ...]
    certificates: tuple[Certificate, ...]
    auth: tuple[AuthSeen, ...]
    settings: tuple[tuple[str, str], ...]
    load: tuple[LoadSection, ...]
    baseline: Baseline | None
    notes: tuple[str, ...]
    generated_at: float

    @property
    def run(self) -> RunInfo:
        return self.analysis.run

    @property
    def empty(self) -> bool:
        """The store holds no result: there is nothing to show."""
        return self.analysis.result_count == 0

    def wall(self, t: float) -> float:
        """Wall time of a moment given in seconds from the run's start."""
        return self.analysis.start + self.analysis.wall_offset + t


def _text(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MARK_TEXT else text[: _MAX_MARK_TEXT - 1] + "…"


def _marks(a: RunAnalysis, markers: Iterable[Marker], events: Iterable[LabEventRecord]) -> tuple[Mark, ...]:
    wall = a.clock == "wall"
    out = [Mark((m.wall if wall else m.mono) - a.start, m.wall, _text(m.text), "marker") for m in markers]
    for e in events:
        out.append(Mark((e.wall if wall else e.mono) - a.start, e.wall, _text(f"{e.kind} {_event_subject(e)}"), "lab"))
    return tuple(sorted((m for m in out if math.isfinite(m.t)), key=lambda m: (m.t, m.source)))


def _event_subject(event: LabEventRecord) -> str:
    fields = event_fields(event)
    bits = [str(fields[k]) for k in ("server", "backend", "component", "state", "db") if k in fields]
    return " ".join(bits)


def collect(
    run: RunInfo,
    results: Iterable[ProbeResult],
    markers: Sequence[Marker] = (),
    lab_events: Sequence[LabEventRecord] = (),
    load: Sequence[tuple[LoadRun, Sequence[LoadDisconnect]]] = (),
    *,
    source: str = "",
    baseline: tuple[str, RunAnalysis] | None = None,
    generated_at: float | None = None,
) -> ReportData:
    """The report of one run from what its store holds (pure: no I/O)."""
    kept = list(results)
    a = analyze_run(run, kept, markers, lab_events)
    on = on_clock(kept, a.clock)
    notes = list(a.notes)
    start_wall = a.start + a.wall_offset if kept else run.started_at
    last_wall = a.end + a.wall_offset if kept else run.started_at
    if run.ended_at is None:
        end_wall = last_wall
        notes.insert(
            0,
            "this run has no recorded end (the watch was killed or is still running): "
            "the report ends with the last stored result",
        )
    else:
        end_wall = run.ended_at
    sections = []
    offset = a.start + a.wall_offset
    for load_run, records in load:
        figures = cohort_figures(load_run, records)
        sections.append(
            LoadSection(load_run, figures, len(records), load_run.started_at - offset, load_run.ended_at - offset)
        )
    other = None
    if baseline is not None:
        path, theirs = baseline
        other = Baseline(path, theirs.run, theirs.result_count, deltas(a, theirs))
    return ReportData(
        source=source,
        analysis=a,
        finished=run.ended_at is not None,
        start_wall=start_wall,
        end_wall=end_wall,
        timeline=timeline(on, a.rows, origin=a.start, run_end=a.end),
        marks=_marks(a, markers, lab_events),
        verdicts=verdicts(a),
        certificates=certificates(kept),
        auth=auth_seen(kept),
        settings=settings_pairs(run.settings),
        load=tuple(sections),
        baseline=other,
        notes=tuple(notes),
        generated_at=time.time() if generated_at is None else generated_at,
    )


def _read(store: RunStore) -> tuple[RunInfo, list[ProbeResult], list[Marker], list[LabEventRecord]]:
    return store.run_info(), list(store.results()), store.markers(), store.lab_events()


def load_report(path: Path, *, baseline: Path | None = None) -> ReportData:
    """Open ``path`` (and ``baseline``) read-only and collect the report; :class:`StoreError` /
    :class:`ReportError` with a one-line message for a file that is missing, unreadable or not a run store."""
    other: tuple[str, RunAnalysis] | None = None
    if baseline is not None:
        try:
            with RunStore.open(baseline) as store:
                run, results, markers, events = _read(store)
        except StoreError as exc:
            raise ReportError(f"baseline: {exc}") from None
        other = (str(baseline), analyze_run(run, results, markers, events))
    with RunStore.open(path) as store:
        run, results, markers, events = _read(store)
        load = [(lr, store.load_disconnects(lr.id)) for lr in store.load_runs()]
    return collect(run, results, markers, events, load, source=str(path), baseline=other)
