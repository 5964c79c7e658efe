"""The report's data: every figure equals the analysis of the same store; broken stores still give a report."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from casprobe.analysis import analyze_run
from casprobe.analysis_compare import NEW_CONNECTIONS, SESSIONS, outage_span
from casprobe.analysis_load import cohort_figures
from casprobe.analysis_table import seconds
from casprobe.model import ErrorClass, Marker, ProbeResult, Severity
from casprobe.report import collect, load_report
from casprobe.report.jsonform import report_json
from casprobe.report.render import render_html
from casprobe.report.timeline import MAX_SPANS, coarsen, state_spans
from casprobe.store import RunStore
from casprobe.store_codec import RESULT_COLUMNS, encode_result
from casprobe.store_schema import FORMAT, SCHEMA_V0
from tests import reportkit as kit


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return kit.build_store(tmp_path_factory.mktemp("report") / "run.db")


def _analysis_of(path: Path):  # type: ignore[no-untyped-def]
    with RunStore.open(path) as store:
        return analyze_run(store.run_info(), store.results(), store.markers(), store.lab_events())


def test_the_report_carries_the_analysis_of_the_same_store(store_path: Path) -> None:
    """The report's analysis is exactly what analyze_run gives for the store (same JSON document)."""
    data = load_report(store_path)
    expected = _analysis_of(store_path)
    assert data.analysis.to_json() == expected.to_json()
    assert report_json(data)["analysis"] == expected.to_json()
    assert len(data.analysis.outages) == 7
    assert data.finished
    assert data.end_wall == kit.WALL + 180


def test_verdict_figures_and_sentences_come_from_the_comparison(store_path: Path) -> None:
    """Each name's verdict holds its disconnect times from the analysis and says them in words."""
    data = load_report(store_path)
    overall = {(d.target, d.probe_class): d.disconnect_s for d in data.analysis.comparison if d.scope == "overall"}
    by_target = {v.target: v for v in data.verdicts}
    assert list(by_target) == ["namespace", "mb1", "mb2", "mb3"]
    for target, verdict in by_target.items():
        assert verdict.new_s == overall[(target, NEW_CONNECTIONS)]
        assert verdict.sessions_s == overall[(target, SESSIONS)]
    ns, mb1, mb2 = by_target["namespace"], by_target["mb1"], by_target["mb2"]
    assert ns.sentence.startswith("Through outlook.lab.test Outlook lost its session for ")
    assert f"new connections were cut off {seconds(ns.new_s)}" in ns.sentence
    assert "during the maintenance of mb1" in ns.sentence
    assert mb1.sentence.startswith(f"mb1.lab.test: cut off {seconds(mb1.new_s)} (new connections)")
    assert (mb2.ok, mb2.sentence) == (True, "mb2.lab.test: no probe failed.")
    assert "after the maintenance" in by_target["mb3"].sentence


def test_the_namespace_stayed_connected_when_its_session_never_dropped() -> None:
    """Without a session failure the namespace's sentence says Outlook stayed connected, with the longest blip."""
    results = [
        replace(r, success=True, severity=Severity.OK, error_class=None, detail="") if r.probe == "mapi-session" else r
        for r in kit.results(150)
    ]
    data = collect(kit.run_info(seconds=150), results, kit.markers(), kit.lab_events())
    ns = data.verdicts[0]
    assert ns.sentence.startswith("Through outlook.lab.test Outlook stayed connected: the longest interruption was ")
    assert ns.longest_s == max(
        outage_span(rep.outage, data.analysis.end)[1] - rep.outage.start_mono
        for rep in data.analysis.outages
        if rep.outage.target == "namespace"
    )


def test_failing_spans_of_the_timeline_are_the_outage_windows(store_path: Path) -> None:
    """Every failing span of the timeline is one outage of the analysis: same row, same start and end."""
    data = load_report(store_path)
    a = data.analysis
    failing = sorted(
        (row.target, row.probe, round(s.start_t, 6), round(s.end_t, 6))
        for row in data.timeline
        for s in row.spans
        if not s.ok
    )
    outages = sorted(
        (
            rep.outage.target,
            rep.outage.probe,
            round(rep.outage.start_mono - a.start, 6),
            round(outage_span(rep.outage, a.end)[1] - a.start, 6),
        )
        for rep in a.outages
    )
    assert failing == outages
    assert sum(row.results for row in data.timeline) == a.result_count


def test_load_runs_carry_the_cohort_figures_of_the_analysis(store_path: Path) -> None:
    """The load section's cohorts are cohort_figures of the stored load run and its disconnect records."""
    data = load_report(store_path)
    (section,) = data.load
    run, records = kit.load_run()
    with RunStore.open(store_path) as store:
        stored = store.load_runs()[0]
        assert section.cohorts == cohort_figures(stored, store.load_disconnects(stored.id))
    assert [c.cohort for c in section.cohorts] == ["namespace", "mb1"]
    assert section.disconnects == len(records)
    assert section.run.stats == run.stats
    assert section.start_t == pytest.approx(10.0 - 0.001)


def test_certificates_and_authentication_as_seen(store_path: Path) -> None:
    """Certificates per name (last seen, chain checked) and the auth schemes offered and used per name × probe."""
    data = load_report(store_path)
    certs = {c.target: c for c in data.certificates}
    assert set(certs) == {"namespace", "mb1", "mb2", "mb3"}
    assert (certs["mb3"].days_left, certs["mb3"].chain_valid, certs["mb3"].distinct) == (12, True, 1)
    auth = {(s.target, s.probe): s for s in data.auth}
    assert auth[("namespace", "mapi")].offered == ("Negotiate", "NTLM")
    assert auth[("namespace", "mapi")].used == (("NTLM", 178),)
    assert ("namespace", "health") not in auth


def test_a_killed_run_is_reported_up_to_its_last_result(tmp_path: Path) -> None:
    """No recorded end: the report says so and ends with the last stored result."""
    path = kit.build_store(tmp_path / "killed.db", seconds=90, ended=False, load=False)
    data = load_report(path)
    assert not data.finished
    assert data.end_wall == data.analysis.end + data.analysis.wall_offset
    assert "no recorded end" in data.notes[0]
    page = render_html(data)
    assert 'id="unfinished"' in page


def test_an_empty_store_gives_a_report_that_says_there_is_nothing_to_show(tmp_path: Path) -> None:
    """A store without results still renders (no chart), saying there is nothing to show; JSON too."""
    path = tmp_path / "empty.db"
    RunStore.create(path, kit.run_info()).close()
    data = load_report(path)
    assert data.empty
    assert data.verdicts == ()
    assert data.timeline == ()
    page = render_html(data)
    assert 'id="nothing"' in page
    assert "<svg" not in page
    assert json.loads(json.dumps(report_json(data)))["analysis"]["results"] == 0


def test_a_version_0_store_is_reported_without_being_changed(tmp_path: Path) -> None:
    """An older store (schema 0, no monotonic times) is read through the in-memory upgrade: wall clock, file kept."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in SCHEMA_V0:
        conn.execute(statement)
    meta = {"format": FORMAT, "schema_version": "0", "created_by": "0.0.9", "created_at": "2025-01-01T00:00:00"}
    conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    conn.execute(
        "INSERT INTO run VALUES (1, 'old-run', ?, NULL, '0.0.9', 1.0, '[\"namespace=outlook.lab.test\"]', "
        "'[\"mapi\"]', 1, '{}', '')",
        (kit.WALL,),
    )
    columns = [c for c in RESULT_COLUMNS if c != "started_mono"]
    for result in kit.results(30):
        row = dict(zip(RESULT_COLUMNS, encode_result(result), strict=True))
        conn.execute(
            f"INSERT INTO results ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [row[c] for c in columns],
        )
    conn.commit()
    conn.close()
    data = load_report(path)
    assert data.analysis.clock == "wall"
    assert data.analysis.result_count == 30 * 16
    assert "<svg" in render_html(data)
    conn = sqlite3.connect(path)
    assert dict(conn.execute("SELECT key, value FROM meta"))["schema_version"] == "0"
    conn.close()


def test_baseline_figures_are_both_analyses_side_by_side(store_path: Path) -> None:
    """Each baseline figure holds this run's and the baseline's analysis value and their difference."""
    clean = [replace(r, success=True, severity=Severity.OK, error_class=None) for r in kit.results()]
    baseline = analyze_run(kit.run_info(), clean)
    data = collect(kit.run_info(), list(kit.results()), kit.markers(), kit.lab_events(), baseline=("pre.db", baseline))
    assert data.baseline is not None
    deltas = {(d.figure, d.label): d for d in data.baseline.deltas}
    mine = {f"{d.target} · {d.probe_class}": d.disconnect_s for d in data.analysis.comparison if d.scope == "overall"}
    for label, value in mine.items():
        delta = deltas[("disconnect", label)]
        assert (delta.current, delta.baseline, delta.diff) == (value, 0.0, value)
    rate = deltas[("error rate", "mb1 · mapi")]
    stats = next(s for s in data.analysis.stats if s.phase == "all" and (s.row.target, s.row.probe) == ("mb1", "mapi"))
    assert (rate.current, rate.baseline) == (stats.error_rate, 0.0)
    p99 = deltas[("p99", "mb1 · mapi")]
    assert p99.current == stats.metric("duration").p99  # type: ignore[union-attr]


def test_a_flapping_row_is_coarsened_without_losing_a_failure() -> None:
    """60 000 alternating results give at most about MAX_SPANS spans, and every failure lies in a failing span."""
    row = [
        ProbeResult(
            kit.MB1,
            "mapi",
            i % 3 != 0,
            Severity.OK,
            None if i % 3 else ErrorClass.CONNECT,
            duration=0.01,
            started_mono=float(i),
        )
        for i in range(60_000)
    ]
    spans = state_spans(row, origin=0.0, run_end=60_000.0)
    assert len(spans) == 40_000
    coarse, coarsened = coarsen(spans)
    assert coarsened
    assert len(coarse) <= MAX_SPANS + 1
    failing = [(s.start_t, s.end_t) for s in coarse if not s.ok]
    starts = [s.start_t for s in spans if not s.ok]
    assert all(any(a <= t < b for a, b in failing) for t in starts[::97])
    assert sum(s.results for s in coarse) == 60_000


def test_text_from_the_store_is_escaped_and_the_page_is_self_contained() -> None:
    """Hostile marker text and details are escaped; the page holds no script, link, image or external URL."""
    hostile = "<script>alert(1)</script> $x$ <img src=http://evil.test/a.png>"
    results = [replace(r, detail=hostile) if not r.success else r for r in kit.results(130)]
    marks = [*kit.markers(), Marker(kit.WALL + 30, kit.MONO + 30, hostile)]
    run = replace(kit.run_info(seconds=130), settings=json.dumps({"note": hostile}), tls_verification=False)
    page = render_html(collect(run, results, marks, kit.lab_events()))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert kit.external_references(page) == []
    assert 'id="tls-off"' in page
    assert set(re.findall(r'<svg id="([^"]+)"', page)) == {
        "chart-timeline",
        "chart-disconnect",
        "chart-phases",
        "chart-backends",
    }


def test_an_outage_whose_first_failure_began_just_before_the_window_is_placed_in_it() -> None:
    """mb1's first failed probe started a second before the maintenance marker (it ran into the maintenance):
    the verdict still places the outage during the maintenance, not before it."""
    early = [
        replace(r, success=False, severity=Severity.CRITICAL, error_class=ErrorClass.HTTP_STATUS, detail="503")
        if r.target is kit.MB1 and kit.MONO + 59.0 <= r.started_mono < kit.MONO + 61.0
        else r
        for r in kit.results(180)
    ]
    data = collect(kit.run_info(), early, kit.markers(), kit.lab_events())
    mb1 = next(v for v in data.verdicts if v.target == "mb1")
    assert "during the maintenance of mb1" in mb1.sentence
    assert "before the maintenance" not in mb1.sentence
