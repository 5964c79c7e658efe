"""Outlook-shaped load through a maintenance (issue 5): ``casprobe load run`` as a user runs it, against a lab.

Locust runs in child processes (never in the pytest process: gevent's monkey-patching). The test drives the lab
meanwhile and compares each cohort's disconnect records with the lab's event log:

- graceful maintenance of mb1, in one Locust process and over a master with two workers: the clients given mb1's
  own name are cut off from the moment mb1's protocols go inactive until they come back; the clients given the
  namespace only see short reconnects around the start of the maintenance (their connection was on mb1, or their
  database moved), never an outage;
- bad conditions (a server refusing, a database switching over, HAProxy restarting, a server black-holed): Locust
  keeps running, no user crashes, every failure is named by its error class, and every client works again at the
  end.
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from casprobe.analysis_load import cohort_figures
from casprobe.load.records import LoadRecords
from casprobe.loadrun import read_result
from casprobe.model import ErrorClass, LoadDisconnect
from tests.labkit import LabHandle, start_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
IDLE_MAX_S = 2.0  # --idle 1-2: the longest a client can be parked before it notices a change
BACKOFF_MAX_S = 2.0  # the client's back-off after a failure (OutlookBehaviour default 1-2 s)
SLACK_S = 1.5  # a request, a reconnect and an NTLM handshake on a loaded 2-core machine


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabHandle]:
    handle = start_lab(tmp_path / "lab")
    try:
        yield handle
    finally:
        handle.down()


def _load(lab: LabHandle, out: Path, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "casprobe", "load", "run", "--lab", str(lab.folder), "--out", str(out)]
    return subprocess.Popen(
        [*command, "--idle", "1-2", "--timeout", "4", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _at(start: float, offset: float) -> None:
    time.sleep(max(0.0, start + offset - time.monotonic()))


def _finish(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _event_wall(lab: LabHandle, kind: str, **match: object) -> float:
    for event in lab.events():
        if event.kind == kind and all(event.get(k) == v for k, v in match.items()):
            return float(event.wall)
    raise AssertionError(f"no {kind} {match} in the lab's event log")


def _by_user(records: LoadRecords, cohort: str) -> dict[str, list[LoadDisconnect]]:
    users: dict[str, list[LoadDisconnect]] = {}
    for record in records.disconnects:
        if record.cohort == cohort:
            users.setdefault(record.user, []).append(record)
    return users


def _maintenance_run(lab: LabHandle, out: Path, *extra: str) -> tuple[int, str, LoadRecords]:
    args = ("--users", "24", "--spawn-rate", "24", "--run-time", "24s", "--cohorts", "namespace=2,mb1=1", *extra)
    proc = _load(lab, out, *args)
    start = time.monotonic()
    try:
        _at(start, 7.0)
        with lab.control() as control:
            control.maintenance("mb1", "start")
            _at(start, 15.0)
            control.maintenance("mb1", "stop")
        code, output = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, output, read_result(out)


def _assert_maintenance_story(lab: LabHandle, records: LoadRecords, output: str) -> None:
    inactive = _event_wall(lab, "component.state", server="mb1", component="ServerWideOffline", state="Inactive")
    active = _event_wall(lab, "component.state", server="mb1", component="ServerWideOffline", state="Active")
    began = _event_wall(lab, "maintenance.start", server="mb1")
    window = active - inactive
    sizes = dict(records.run.cohorts)
    assert sizes == {"namespace": 16, "mb1": 8}, output
    assert records.skipped == 0

    # the mb1 cohort: cut off from mb1's protocols going inactive until they are active again
    mb1 = _by_user(records, "mb1")
    assert len(mb1) == 8, f"every mb1 client is cut off: {sorted(mb1)}"
    starts, ends = [], []
    for user, intervals in mb1.items():
        main = max(intervals, key=lambda d: d.duration(records.run.ended_at))
        assert main.ended_at is not None, f"{user} never came back"
        assert began - 0.5 <= main.started_at <= inactive + IDLE_MAX_S + SLACK_S, (user, main)
        assert active - 0.5 <= main.ended_at <= active + BACKOFF_MAX_S + SLACK_S, (user, main)
        assert main.duration(records.run.ended_at) >= window - IDLE_MAX_S - SLACK_S, (user, main)
        assert set(main.error_classes) <= {c.value for c in ErrorClass}
        starts.append(main.started_at)
        ends.append(main.ended_at)
    # the cohort's figures agree with the event log: the median client is cut off from (about) inactive to active
    assert abs(statistics.median(ends) - active) <= BACKOFF_MAX_S + SLACK_S
    assert -1.0 <= statistics.median(starts) - inactive <= IDLE_MAX_S + SLACK_S

    # the namespace cohort: short reconnects around the start of the maintenance, never an outage
    downs = [e for e in lab.events() if e.kind == "haproxy.server" and e.get("server") == "mb1"]
    lb_down = max(e.wall for e in downs if e.get("state") == "DOWN")
    for record in records.disconnects:
        if record.cohort != "namespace":
            continue
        assert record.ended_at is not None, record
        assert began - 0.5 <= record.started_at <= lb_down + SLACK_S, record
        assert record.ended_at - record.started_at <= 4.0 + BACKOFF_MAX_S, record
    figures = {f.cohort: f for f in cohort_figures(records.run, records.disconnects)}
    assert figures["namespace"].mean_per_user_s < 0.25 * figures["mb1"].mean_per_user_s
    assert figures["namespace"].still_open == 0
    assert figures["mb1"].longest_s >= window - IDLE_MAX_S - SLACK_S
    # what the command printed is the same story
    assert f"mb1: 8 clients, 8 cut off, {figures['mb1'].disconnects} disconnects" in output


def test_graceful_maintenance_cuts_off_the_mb1_cohort_only(lab: LabHandle, tmp_path: Path) -> None:
    """One Locust process: mb1's cohort is cut off for the maintenance window, the namespace only reconnects."""
    code, output, records = _maintenance_run(lab, tmp_path / "load")
    assert code == 2, output  # failures were counted (Locust exit 1 → casprobe 2)
    _assert_maintenance_story(lab, records, output)
    stats = {(s.kind, s.name): s for s in records.run.stats}
    assert stats[("MAPI", "Execute")].count > 200
    assert stats[("DISCONNECT", "cohort mb1")].count >= 8
    assert stats[("DISCONNECT", "cohort mb1")].max_ms is not None


def test_distributed_over_a_master_and_two_workers_gives_the_same_story(lab: LabHandle, tmp_path: Path) -> None:
    """A master and two workers on loopback: the same per-cohort figures, clients from both workers."""
    code, output, records = _maintenance_run(lab, tmp_path / "load", "--workers", "2")
    assert code == 2, output
    _assert_maintenance_story(lab, records, output)
    workers = {d.user.split("-", 1)[0] for d in records.disconnects}
    assert len(workers) == 2, workers
    assert "2 workers" in records.run.source


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def test_bad_conditions_do_not_break_the_load(lab: LabHandle, tmp_path: Path) -> None:
    """Refused connections, a switchover, an HAProxy restart and a black hole: every failure is named, no user
    crashes, Locust keeps running and every client works again at the end."""
    out = tmp_path / "load"
    proc = _load(lab, out, "--users", "18", "--spawn-rate", "18", "--run-time", "28s", "--cohorts", "namespace=2,mb2=1")
    start = time.monotonic()
    steps: list[tuple[float, Callable[..., object], tuple[str, ...]]] = []
    try:
        with lab.control() as control:
            steps = [
                (5.0, control.power, ("mb2", "off")),
                (8.0, control.power, ("mb2", "on")),
                (10.0, control.switchover, ("DB03", "mb1")),
                (12.0, control.restart_lb, ()),
                (14.0, lambda: control.power("mb3", "off", "blackhole"), ()),
                (17.0, control.power, ("mb3", "on")),
            ]
            for offset, action, args in steps:
                _at(start, offset)
                action(*args)
        code, output = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 2, output
    records = read_result(out)
    assert not [r for r in _rows(out / "locust_exceptions.csv")], "a user raised instead of counting a failure"
    failures = _rows(out / "locust_failures.csv")
    assert failures, "the bad conditions caused no failure at all"
    classes = {c.value for c in ErrorClass}
    for row in failures:
        assert row["Error"].split(":", 1)[0] in classes, row
    named = {row["Error"].split(":", 1)[0] for row in failures}
    assert "connect" in named, named  # mb2 refused its cohort
    assert records.disconnects, "nobody was cut off"
    still = [d for d in records.disconnects if d.ended_at is None]
    assert still == [], f"clients still cut off at the end: {still}"
    tally = records.requests
    assert tally.get("namespace", 0) > 100
    assert tally.get("mb2", 0) > 30
