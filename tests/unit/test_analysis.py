"""The outage analysis on hand-made timelines whose answers are worked out by hand, plus invariants (hypothesis)."""

from __future__ import annotations

import itertools
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casprobe.analysis import AnalysisError, RunAnalysis, analyze_run, outages
from casprobe.analysis_compare import NEW_CONNECTIONS, SESSIONS, Disconnection, backend_distribution
from casprobe.analysis_outages import Row
from casprobe.analysis_phases import Phases, phases_from_lab_events, phases_from_markers
from casprobe.analysis_stats import nearest_rank, percentiles
from casprobe.analysis_table import render
from casprobe.analysis_truth import TruthLog
from casprobe.model import (
    ErrorClass,
    LabEventRecord,
    Marker,
    PhaseTimings,
    ProbeResult,
    RunInfo,
    Severity,
    Target,
    TargetKind,
)

WALL = 1_700_000_000.0  # wall = mono + WALL in every hand-made timeline
NS = Target("outlook.lab.test", TargetKind.NAMESPACE, label="namespace")
MB1 = Target("mb1.lab.test", TargetKind.SERVER, label="mb1")
MB2 = Target("mb2.lab.test", TargetKind.SERVER, label="mb2")


def res(
    target: Target,
    probe: str,
    t: float,
    ok: bool = True,
    klass: ErrorClass | None = None,
    *,
    duration: float = 0.05,
    fe: str | None = None,
    be: str | None = None,
    detail: str = "",
    phases: PhaseTimings | None = None,
) -> ProbeResult:
    return ProbeResult(
        target,
        probe,
        ok,
        Severity.OK if ok else Severity.CRITICAL,
        None if ok else (klass or ErrorClass.CONNECT),
        detail,
        started_at=t + WALL,
        duration=duration,
        started_mono=t,
        fe_server=fe,
        be_server=be,
        phases=phases or PhaseTimings(),
    )


def ev(seq: int, t: float, kind: str, **fields: object) -> LabEventRecord:
    return LabEventRecord(seq, t + WALL, t, kind, json.dumps(fields))


def run_info(interval: float = 0.5, *, ended: bool = True) -> RunInfo:
    return RunInfo(
        "run-1", WALL, "0.1.0", interval, ("namespace=outlook.lab.test",), ("mapi",), ended_at=WALL if ended else None
    )


def steps(start: float, stop: float, interval: float = 0.5) -> list[float]:
    """start, start + interval, … < stop (computed by index, so no float drift)."""
    n = round((stop - start) / interval)
    return [start + i * interval for i in range(n)]


def mb1_maintenance_row(probe: str = "health") -> list[ProbeResult]:
    """mb1 at 0.5 s from 0.5 to 60 s: http_status 10.0–19.5 (20 results), connect 20.0–42.0 (45 results)."""
    out = []
    for t in steps(0.5, 60.0):
        if 10.0 <= t < 20.0:
            out.append(res(MB1, probe, t, False, ErrorClass.HTTP_STATUS, detail=f"503 at {t}"))
        elif 20.0 <= t < 42.5:
            out.append(res(MB1, probe, t, False, ErrorClass.CONNECT))
        else:
            out.append(res(MB1, probe, t))
    return out


# --- outage windows -----------------------------------------------------------------------------------------


def test_one_long_outage_with_two_classes_most_frequent_first() -> None:
    """mb1 failing from 10.0 to 42.5 (20 http_status, then 45 connect) is one outage 10.0 → 42.5, connect first."""
    (outage,) = outages(mb1_maintenance_row(), interval_s=0.5)
    assert (outage.target, outage.probe) == ("mb1", "health")
    assert (outage.start_mono, outage.end_mono, outage.duration) == (10.0, 42.5, 32.5)
    assert (outage.start_wall, outage.end_wall) == (10.0 + WALL, 42.5 + WALL)
    assert outage.failures == 65
    assert outage.error_classes == ("connect", "http_status")
    assert outage.first_detail == "503 at 10.0"


def test_equal_class_counts_keep_the_order_first_seen() -> None:
    """Two classes seen equally often are listed in the order they first appeared."""
    row = [res(MB1, "ews", 0.0), res(MB1, "ews", 0.5, False, ErrorClass.TLS), res(MB1, "ews", 1.0, False)]
    row += [res(MB1, "ews", 1.5)]
    (outage,) = outages(row, interval_s=0.5)
    assert outage.error_classes == ("tls", "connect")


def test_a_single_failure_is_an_outage_unless_min_failures_says_otherwise() -> None:
    """One failed probe between successes is an outage of one failure lasting one interval; min_failures=2 drops it."""
    row = [res(MB1, "mapi", t, t != 5.0) for t in steps(0.0, 10.0)]
    (outage,) = outages(row, interval_s=0.5)
    assert (outage.start_mono, outage.end_mono, outage.failures) == (5.0, 5.5, 1)
    assert outages(row, interval_s=0.5, min_failures=2) == ()


def test_a_flapping_row_gives_one_outage_per_failing_stretch() -> None:
    """S F S F F S F S at 1 s steps: outages 1→2 (1 failure), 3→5 (2), 6→7 (1)."""
    pattern = "SFSFFSFS"
    row = [res(MB2, "ews", float(i), c == "S") for i, c in enumerate(pattern)]
    found = outages(row, interval_s=1.0)
    assert [(o.start_mono, o.end_mono, o.failures) for o in found] == [(1.0, 2.0, 1), (3.0, 5.0, 2), (6.0, 7.0, 1)]
    assert [(o.start_mono, o.failures) for o in outages(row, interval_s=1.0, min_failures=2)] == [(3.0, 2)]


def test_a_run_that_ends_failing_leaves_the_outage_open() -> None:
    """Failing from 4.0 to the last result: the outage has no end and no duration."""
    row = [res(MB1, "mapi", t, t < 4.0) for t in steps(0.0, 6.0)]
    (outage,) = outages(row, interval_s=0.5)
    assert (outage.start_mono, outage.end_mono, outage.end_wall, outage.duration) == (4.0, None, None, None)
    assert outage.failures == 4


def test_a_row_that_never_worked_is_one_open_outage_from_its_first_probe() -> None:
    """A row of failures only is one open outage starting at its first result."""
    (outage,) = outages([res(MB1, "mapi", t, False) for t in (3.0, 1.0, 2.0)], interval_s=1.0)
    assert (outage.start_mono, outage.end_mono, outage.failures) == (1.0, None, 3)


def test_out_of_order_input_gives_the_same_outages() -> None:
    """Results in any order give the same outages as results in time order."""
    row = mb1_maintenance_row() + [res(NS, "mapi", t, not 12.0 <= t < 13.0) for t in steps(0.5, 60.0)]
    shuffled = row[:]
    random.Random(4).shuffle(shuffled)
    assert outages(shuffled, interval_s=0.5) == outages(row, interval_s=0.5)
    assert [o.target for o in outages(row, interval_s=0.5)] == ["mb1", "namespace"]


@pytest.mark.parametrize("failure_first", [True, False])
def test_a_failure_and_a_success_at_the_same_instant_make_a_zero_length_outage(failure_first: bool) -> None:
    """At equal start times failures sort before successes, whatever the input order: an outage of length 0."""
    tie = [res(MB1, "mapi", 1.0, False), res(MB1, "mapi", 1.0, True)]
    row = [res(MB1, "mapi", 0.0), *(tie if failure_first else tie[::-1]), res(MB1, "mapi", 2.0)]
    (outage,) = outages(row, interval_s=1.0)
    assert (outage.start_mono, outage.end_mono, outage.duration, outage.failures) == (1.0, 1.0, 0.0, 1)


def test_rows_are_separate_per_name_and_probe() -> None:
    """Failures of the same probe on two names, or of two probes on one name, are never merged."""
    row = [res(MB1, "mapi", 1.0, False), res(MB1, "ews", 2.0, False), res(NS, "mapi", 3.0, False)]
    row += [res(t, p, 4.0) for t, p in ((MB1, "mapi"), (MB1, "ews"), (NS, "mapi"))]
    found = outages(row, interval_s=1.0)
    assert [(o.target, o.probe, o.start_mono, o.end_mono) for o in found] == [
        ("mb1", "mapi", 1.0, 4.0),
        ("mb1", "ews", 2.0, 4.0),
        ("namespace", "mapi", 3.0, 4.0),
    ]


@pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf")])
def test_a_meaningless_interval_is_refused(interval: float) -> None:
    """An interval that is not a positive finite number raises AnalysisError (a ValueError)."""
    with pytest.raises(AnalysisError, match="interval"):
        outages([], interval_s=interval)
    assert issubclass(AnalysisError, ValueError)


def test_results_without_a_usable_start_are_skipped() -> None:
    """A result whose monotonic start is NaN cannot be placed and is left out instead of breaking the order."""
    row = [res(MB1, "mapi", 0.0), res(MB1, "mapi", float("nan"), False), res(MB1, "mapi", 1.0)]
    assert outages(row, interval_s=1.0) == ()


# --- invariants ---------------------------------------------------------------------------------------------

_rows = st.lists(
    st.tuples(st.sampled_from([0.0, 0.25, 0.5, 1.0, 3.0]), st.booleans(), st.sampled_from(["mapi", "mapi-session"])),
    min_size=1,
    max_size=60,
)


def _timeline(spec: list[tuple[float, bool, str]], seed: int) -> list[ProbeResult]:
    t, out = 1.0, []
    for gap, ok, probe in spec:
        t += gap
        out.append(res(MB1 if seed % 2 else NS, probe, t, ok))
    random.Random(seed).shuffle(out)
    return out


@settings(max_examples=150, deadline=None)
@given(_rows, st.integers(0, 1000))
def test_outages_never_overlap_and_hold_every_failure_once(spec: list[tuple[float, bool, str]], seed: int) -> None:
    """Within a row, outages are disjoint and in order; each failure lies in one and is counted exactly once."""
    results = _timeline(spec, seed)
    found = outages(results, interval_s=0.5)
    for probe in ("mapi", "mapi-session"):
        mine = [o for o in found if o.probe == probe]
        failures = [r.started_mono for r in results if r.probe == probe and not r.success]
        assert sum(o.failures for o in mine) == len(failures)
        for before, after in itertools.pairwise(mine):
            assert before.end_mono is not None
            assert before.end_mono <= after.start_mono
        assert all(o.end_mono is not None for o in mine[:-1])
        for t in failures:
            assert any(o.start_mono <= t and (o.end_mono is None or t <= o.end_mono) for o in mine)
        successes = [r.started_mono for r in results if r.probe == probe and r.success]
        for o in mine:
            assert not any(
                o.start_mono < s < (o.end_mono if o.end_mono is not None else float("inf")) for s in successes
            )


@settings(max_examples=100, deadline=None)
@given(_rows, st.integers(0, 1000))
def test_disconnect_time_never_exceeds_the_run(spec: list[tuple[float, bool, str]], seed: int) -> None:
    """For every name and class, disconnect time is between 0 and the run's length, and ≤ it during the window."""
    results = _timeline(spec, seed)
    end = max(r.started_mono for r in results)
    phases = Phases.explicit((end / 3, None))
    analysis = analyze_run(run_info(), results, phases=phases)
    for d in analysis.comparison:
        assert 0.0 <= d.disconnect_s <= analysis.length_s + 1e-9
        assert d.failures <= d.count


# --- phases -------------------------------------------------------------------------------------------------


def mark(t: float, text: str) -> Marker:
    return Marker(t + WALL, t, text)


def test_start_and_end_markers_make_a_window_and_other_notes_are_ignored() -> None:
    """'mb1 maintenance start' → 'mb1 maintenance end' is one window; 'backend check' and a stray end are ignored."""
    markers = [mark(30.0, "mb1 maintenance end"), mark(5.0, "backend check"), mark(10.0, "mb1 maintenance start")]
    markers.insert(0, mark(1.0, "Stopped nothing yet"))
    phases = phases_from_markers(markers)
    assert [(w.start, w.end, w.label, w.source) for w in phases.windows] == [(10.0, 30.0, "mb1 maintenance", "markers")]
    assert phases.source == "markers"
    assert [phases.phase_of(t) for t in (9.99, 10.0, 29.99, 30.0)] == ["before", "during", "during", "after"]


def test_interleaved_windows_pair_by_subject_and_an_unclosed_one_stays_open() -> None:
    """An end closes the window with the same subject; a start without an end lasts until the end of the run."""
    markers = [
        mark(10.0, "mb1 maintenance start"),
        mark(20.0, "mb2 power off start"),
        mark(30.0, "mb1 maintenance end"),
        mark(50.0, "db move START"),
    ]
    phases = phases_from_markers(markers)
    assert [(w.start, w.end, w.label) for w in phases.windows] == [
        (10.0, 30.0, "mb1 maintenance"),
        (20.0, None, "mb2 power off"),
        (50.0, None, "db move"),
    ]
    assert phases.during(100.0) == [(10.0, 100.0)]
    assert phases.phase_of(5.0) == "before"
    assert phases.phase_of(99.0) == "during"


def test_lab_events_give_maintenance_and_power_windows() -> None:
    """maintenance.start→end and power.off→on pair per server; other kinds are ignored; an open power-off stays open."""
    events = [
        ev(1, 10.0, "maintenance.start", server="mb1"),
        ev(2, 11.0, "copy.move.start", db="DB01", source="mb1", target="mb2"),
        ev(3, 40.0, "maintenance.end", server="mb1"),
        ev(4, 70.0, "power.off", server="mb2", mode="refuse"),
        ev(5, 75.0, "power.on", server="mb3"),
    ]
    phases = phases_from_lab_events(events)
    assert [(w.start, w.end, w.label) for w in phases.windows] == [
        (10.0, 40.0, "mb1 maintenance"),
        (70.0, None, "mb2 power off"),
    ]
    assert [phases.phase_of(t) for t in (9.0, 20.0, 50.0, 80.0)] == ["before", "during", "after", "during"]


def test_hostile_lab_event_data_is_ignored() -> None:
    """Event data that is not a JSON object (garbage, a list, deep nesting) yields no window and no exception."""
    events = [
        LabEventRecord(1, WALL, 1.0, "maintenance.start", "{not json"),
        LabEventRecord(2, WALL, 2.0, "power.off", "[1, 2]"),
        LabEventRecord(3, WALL, 3.0, "power.off", "[" * 100_000),
    ]
    phases = phases_from_lab_events(events)
    assert [w.label for w in phases.windows] == ["? maintenance", "? power off"]
    assert TruthLog(events).events[0].servers == ("",)


# --- statistics ---------------------------------------------------------------------------------------------


def test_nearest_rank_percentiles() -> None:
    """Nearest rank on 1..10: p50 = 5, p90 = 9, p99 = 10; on one value every percentile is that value."""
    values = [float(v) for v in range(10, 0, -1)]
    p = percentiles(values)
    assert p is not None
    assert (p.n, p.p50, p.p90, p.p99, p.max) == (10, 5.0, 9.0, 10.0, 10.0)
    assert nearest_rank([7.0], 1) == 7.0
    assert percentiles([]) is None
    with pytest.raises(ValueError, match="percentile"):
        nearest_rank([1.0], 0)


def test_stats_per_phase_count_failures_and_take_latency_from_successes() -> None:
    """Before/during/after split by the window; latency percentiles ignore failed probes; auth is the legs' sum."""
    timing = PhaseTimings(connect=0.01, tls=0.02, auth=(0.03, 0.04), first_byte=0.05, total=0.2)
    results = [res(MB1, "mapi", t, duration=0.1 * (1 + t % 3), phases=timing) for t in range(1, 10)]
    results += [res(MB1, "mapi", t, False, duration=30.0) for t in (10.0, 11.0)]
    results += [res(MB1, "mapi", 12.0, duration=0.3, phases=timing)]
    analysis = analyze_run(run_info(1.0), results, phases=Phases.explicit((5.0, 11.5)))
    by_phase = {s.phase: s for s in analysis.stats}
    assert [(p, by_phase[p].count, by_phase[p].failures) for p in ("all", "before", "during", "after")] == [
        ("all", 12, 2),
        ("before", 4, 0),
        ("during", 7, 2),
        ("after", 1, 0),
    ]
    assert by_phase["during"].error_rate == pytest.approx(2 / 7)
    during = by_phase["during"].metric("duration")  # successes at 5..9: 0.3 0.1 0.2 0.3 0.1
    assert during is not None
    assert (during.n, during.p50, during.max) == (5, pytest.approx(0.2), pytest.approx(0.3))
    auth = by_phase["all"].metric("auth")
    assert auth is not None
    assert auth.p50 == pytest.approx(0.07)
    assert by_phase["all"].metric("resolve") is None


# --- ground truth -------------------------------------------------------------------------------------------

MAINTENANCE = [
    ev(1, 8.9, "maintenance.start", server="mb1"),
    ev(2, 9.0, "copy.move.start", db="DB01", source="mb1", target="mb2", reason="maintenance"),
    ev(3, 9.9, "copy.move.end", db="DB01", source="mb1", target="mb2", reason="maintenance"),
    ev(4, 9.95, "component.state", server="mb1", component="ServerWideOffline", state="Inactive"),
    ev(5, 10.6, "haproxy.server", backend="be_mapi", server="mb1", state="DOWN"),
    ev(6, 42.3, "component.state", server="mb1", component="ServerWideOffline", state="Active"),
    ev(7, 42.4, "maintenance.end", server="mb1"),
    ev(8, 43.0, "haproxy.server", backend="be_mapi", server="mb1", state="UP"),
]


def scenario() -> list[ProbeResult]:
    """A graceful maintenance of mb1 at 0.5 s from 0.5 s: mb1 down 10.0–42.5; the namespace session drops 9.0–10.0.

    (Timelines start after 0.0: a ``started_mono`` of 0.0 means "unknown" and would switch to the wall clock.)
    """
    out = mb1_maintenance_row("health") + mb1_maintenance_row("mapi-session")
    for t in steps(0.5, 60.0):
        fe = "MB1" if t < 10.6 and round(t * 2) % 2 == 0 else "MB2"
        out.append(res(NS, "mapi", t, fe=fe, be="mb1.lab.test" if t < 9.0 else "mb2.lab.test"))
        ok = not 9.0 <= t < 10.0
        out.append(res(NS, "mapi-session", t, ok, ErrorClass.PROTOCOL, fe=fe, be="mb1.lab.test" if ok else None))
        out.append(res(MB2, "health", t))
    return out


def test_server_outage_is_measured_against_its_own_component_state() -> None:
    """mb1's outage starts 0.05 s after ServerWideOffline Inactive and ends 0.2 s after it is Active again."""
    analysis = analyze_run(run_info(), scenario(), [], MAINTENANCE)
    rep = next(r for r in analysis.outages if r.outage.target == "mb1" and r.outage.probe == "health")
    assert rep.cause is not None
    assert rep.cause.seq == 4
    assert rep.restore is not None
    assert rep.restore.seq == 6
    assert rep.detect_s == pytest.approx(0.05)
    assert rep.recover_s == pytest.approx(0.2)


@pytest.mark.parametrize("database", [None, "DB01", "db01"])
def test_namespace_session_outage_is_matched_to_the_mailbox_database_move(database: str | None) -> None:
    """The namespace session's drop matches DB01's copy move (given, or found from X-CalculatedBETarget = mb1)."""
    analysis = analyze_run(run_info(), scenario(), [], MAINTENANCE, database=database)
    (rep,) = [r for r in analysis.outages if r.outage.target == "namespace"]
    assert rep.cause is not None
    assert rep.cause.kind == "copy.move.start"
    assert rep.restore is not None
    assert rep.restore.kind == "copy.move.end"
    assert (rep.detect_s, rep.recover_s) == (pytest.approx(0.0), pytest.approx(0.1))


def test_copy_moves_of_another_database_do_not_explain_a_namespace_outage() -> None:
    """With the mailbox on DB02, DB01's move is no cause; nothing else in the log explains the session drop."""
    analysis = analyze_run(run_info(), scenario(), [], MAINTENANCE, database="DB02")
    (rep,) = [r for r in analysis.outages if r.outage.target == "namespace"]
    assert rep.cause is None
    assert rep.detect_s is None


def test_namespace_outage_after_power_off_ends_when_haproxy_marks_the_server_down() -> None:
    """power.off mb2 at 100.0; new connections through the namespace fail 100.5–101.0; be_mapi/mb2 DOWN at 100.8."""
    events = [
        ev(1, 100.0, "power.off", server="mb2", mode="refuse"),
        ev(2, 100.7, "haproxy.server", backend="be_ews", server="mb2", state="DOWN"),
        ev(3, 100.8, "haproxy.server", backend="be_mapi", server="mb2", state="DOWN"),
        ev(4, 100.9, "haproxy.server", backend="be_mapi", server="mb1", state="DOWN"),
        ev(5, 300.0, "power.on", server="mb2"),
    ]
    results = [res(NS, "mapi", t, not 100.5 <= t < 101.0) for t in steps(90.0, 110.0)]
    (rep,) = analyze_run(run_info(), results, [], events).outages
    assert rep.cause is not None
    assert rep.cause.text == "power.off mb2"
    assert rep.restore is not None
    assert rep.restore.text == "haproxy be_mapi/mb2 DOWN"
    assert (rep.detect_s, rep.recover_s) == (pytest.approx(0.5), pytest.approx(0.2))


def test_a_state_undone_before_the_outage_is_not_its_cause() -> None:
    """A power-off that ended (power.on) long before a failure does not explain it; no log, no match either."""
    events = [ev(1, 10.0, "power.off", server="mb1"), ev(2, 20.0, "power.on", server="mb1")]
    results = [res(MB1, "mapi", t, t != 50.0) for t in steps(40.0, 60.0)]
    (rep,) = analyze_run(run_info(), results, [], events).outages
    assert rep.cause is None
    assert rep.restore is None
    (bare,) = analyze_run(run_info(), results).outages
    assert bare.cause is None
    assert bare.outage == rep.outage


@pytest.mark.parametrize(
    ("off_at", "on_at", "detect", "recover"),
    [
        (19.8, 30.0, 0.2, 0.5),  # recorded before the failure was seen and before the success
        (20.3, 30.8, -0.3, -0.3),  # the lab wrote its line just after the probes saw the change (within the slack)
        (20.7, 31.0, None, -0.5),  # power.off too late to be the cause; power.on just within the slack of the end
    ],
)
def test_events_recorded_just_after_the_change_still_match_within_the_slack(
    off_at: float, on_at: float, detect: float | None, recover: float | None
) -> None:
    """mb1 fails 20.0–30.5: power.off/on recorded within 0.5 s after start/end still match (negative times)."""
    events = [ev(1, off_at, "power.off", server="mb1"), ev(2, on_at, "power.on", server="mb1")]
    results = [res(MB1, "mapi", t, not 20.0 <= t < 30.5) for t in steps(10.0, 40.0)]
    (rep,) = analyze_run(run_info(), results, [], events).outages
    assert rep.detect_s == (None if detect is None else pytest.approx(detect))
    assert rep.recover_s == (None if recover is None else pytest.approx(recover))


# --- backends and the comparison ----------------------------------------------------------------------------


def test_backend_distribution_shows_when_the_drained_server_stopped_answering() -> None:
    """Through the namespace MB1 answers every other probe until 10.0 s and never after; 1 s buckets show it."""
    analysis = analyze_run(run_info(), scenario(), [], MAINTENANCE, bucket_s=1.0)
    dist = analysis.backends
    seen = {s.server: s for s in dist.seen}
    assert set(seen) == {"MB1", "MB2"}
    assert seen["MB1"].last_mono == 10.0
    assert seen["MB1"].count == 2 * 10
    # buckets [0.5, 1.5), [1.5, 2.5), …: the first holds t = 0.5 (MB2) and 1.0 (MB1), twice each
    assert dist.buckets[0].start == 0.5
    assert dist.buckets[0].counts == (("MB1", 2), ("MB2", 2))
    assert [b.count("MB1") for b in dist.buckets[9:12]] == [2, 0, 0]
    assert len(dist.buckets) == 60  # 0.5 … 59.55 s in 1 s buckets


def test_backend_distribution_refuses_a_bucket_that_is_not_positive() -> None:
    """A bucket of 0 s or one that would make millions of buckets raises AnalysisError."""
    with pytest.raises(AnalysisError):
        backend_distribution([], start=0.0, end=10.0, bucket_s=0.0)
    with pytest.raises(AnalysisError, match="buckets"):
        backend_distribution([], start=0.0, end=1e9, bucket_s=0.001)


def _by(analysis: RunAnalysis, target: str, klass: str, scope: str) -> Disconnection:
    return next(d for d in analysis.comparison if (d.target, d.probe_class, d.scope) == (target, klass, scope))


def test_comparison_namespace_vs_server_names() -> None:
    """Namespace: 0 s for new connections, 1.0 s for sessions; mb1: 32.5 s for both; during the window 8.9–42.4."""
    analysis = analyze_run(run_info(), scenario(), [], MAINTENANCE)
    assert analysis.phases.source == "lab"
    assert _by(analysis, "namespace", NEW_CONNECTIONS, "overall").disconnect_s == 0.0
    assert _by(analysis, "namespace", SESSIONS, "overall").disconnect_s == pytest.approx(1.0)
    assert _by(analysis, "mb1", NEW_CONNECTIONS, "overall").disconnect_s == pytest.approx(32.5)
    assert _by(analysis, "mb1", SESSIONS, "during").disconnect_s == pytest.approx(42.4 - 10.0)
    assert _by(analysis, "mb2", NEW_CONNECTIONS, "overall").disconnect_s == 0.0
    ns_sessions = _by(analysis, "namespace", SESSIONS, "overall")
    assert (ns_sessions.count, ns_sessions.failures, ns_sessions.outages) == (119, 2, 1)
    assert next(d.target for d in analysis.comparison) == "namespace"


def test_overlapping_outages_of_one_class_count_once_and_an_open_one_until_the_end() -> None:
    """health fails 10–20, mapi 15–25: 15 s disconnected; ews failing from 50 to the end (59.5 + 0.05) adds 9.55 s."""
    results = [res(MB1, "health", t, not 10.0 <= t < 20.0) for t in steps(0.5, 60.0)]
    results += [res(MB1, "mapi", t, not 15.0 <= t < 25.0) for t in steps(0.5, 60.0)]
    results += [res(MB1, "ews", t, t < 50.0) for t in steps(0.5, 60.0)]
    analysis = analyze_run(run_info(ended=False), results)
    overall = _by(analysis, "mb1", NEW_CONNECTIONS, "overall")
    assert overall.disconnect_s == pytest.approx(15.0 + 9.55)
    assert overall.outages == 3
    assert analysis.end == pytest.approx(59.55)
    assert any("did not finish" in note for note in analysis.notes)
    assert not any(d.scope == "during" for d in analysis.comparison)


# --- the whole analysis -------------------------------------------------------------------------------------


def test_to_json_is_versioned_and_serialisable() -> None:
    """The JSON form carries format and version, relative times, and survives json.dumps."""
    analysis = analyze_run(run_info(), scenario(), [mark(8.0, "mb1 maintenance start")], MAINTENANCE)
    doc = json.loads(json.dumps(analysis.to_json()))
    assert (doc["format"], doc["version"]) == ("casprobe.analysis", 1)
    assert doc["phases"]["source"] == "markers"
    assert doc["phases"]["windows"][0]["end_t"] is None
    mb1 = next(o for o in doc["outages"] if o["target"] == "mb1")
    assert doc["start"] == 0.5  # times in the JSON are relative to the run's first result: 10.0 - 0.5 = 9.5
    assert (mb1["start_t"], mb1["end_t"], mb1["duration_s"], mb1["error_classes"]) == (
        9.5,
        42.0,
        32.5,
        ["connect", "http_status"],
    )
    assert mb1["cause"]["seq"] == 4
    assert mb1["detect_s"] == pytest.approx(0.05)
    assert {s["phase"] for s in doc["stats"]} == {"all", "before", "during", "after"}


def test_results_without_a_monotonic_start_are_analysed_on_the_wall_clock() -> None:
    """When results carry started_mono 0.0, the analysis uses started_at (and the events' wall) and says so."""
    results = [ProbeResult(MB1, "mapi", t != 5.0, Severity.OK, started_at=WALL + t) for t in range(10)]
    events = [LabEventRecord(1, WALL + 4.9, 0.0, "power.off", '{"server": "mb1"}')]
    analysis = analyze_run(run_info(1.0), results, [], events)
    assert analysis.clock == "wall"
    (rep,) = analysis.outages
    assert (rep.outage.start_mono, rep.outage.end_mono) == (WALL + 5.0, WALL + 6.0)
    assert rep.detect_s == pytest.approx(0.1)
    assert any("wall clock" in note for note in analysis.notes)


def test_an_empty_run_is_analysed_into_notes_not_an_exception() -> None:
    """No results, no markers, no events: an analysis that says so, renders and serialises."""
    analysis = analyze_run(run_info(ended=False), [])
    assert analysis.result_count == 0
    assert analysis.outages == ()
    assert analysis.comparison == ()
    assert any("no results" in note for note in analysis.notes)
    assert "no results" in render(analysis)
    assert json.dumps(analysis.to_json())


def test_the_summary_leads_with_the_comparison_in_plain_words() -> None:
    """The table summary names the disconnect time through the namespace and each name, then lists the outages."""
    text = render(analyze_run(run_info(), scenario(), [], MAINTENANCE))
    assert "through the namespace: 0 s (new connections), 1.0 s (sessions) disconnected" in text
    assert "through mb1: 32.5 s (new connections), 32.5 s (sessions) disconnected" in text
    assert text.index("through the namespace") < text.index("Outages") < text.index("Who answered")
    assert "mb1 ServerWideOffline Inactive" in text
    assert "MB1" in text


def test_min_failures_hides_blips_everywhere_and_says_so() -> None:
    """With min_failures=3 the two-probe session drop is neither listed nor counted, and a note says why."""
    analysis = analyze_run(run_info(), scenario(), [], MAINTENANCE, min_failures=3)
    assert all(r.outage.failures >= 3 for r in analysis.outages)
    assert _by(analysis, "namespace", SESSIONS, "overall").disconnect_s == 0.0
    assert any("fewer than 3" in note for note in analysis.notes)


def test_rows_list_the_namespace_first() -> None:
    """Rows come namespace first, then the names in the order first seen."""
    analysis = analyze_run(run_info(), [res(MB2, "mapi", 0.5), res(NS, "mapi", 1.0), res(MB1, "mapi", 2.0)])
    assert [r.target for r in analysis.rows] == ["namespace", "mb2", "mb1"]
    assert analysis.rows[0] == Row("namespace", "mapi", TargetKind.NAMESPACE, "outlook.lab.test")
