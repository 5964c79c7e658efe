"""`casprobe watch` through a rehearsal, checked against the lab's event log (the ground truth).

Timeline: baseline → mb1 graceful maintenance (DB01 moves to mb2, ServerWideOffline) → end of maintenance →
DB01 moved back to mb1 (as an admin's rebalance would) → mb2 powered off → powered on. Watched at 0.5 s with the
lab's fast timings (HAProxy inter 300 ms × fall 2, switchover 0.5 s).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from casprobe.analysis import outages
from casprobe.model import Outage, TargetKind
from casprobe.store import RunStore
from tests.labkit import LabHandle, start_lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 0.5
SLACK = INTERVAL + 0.2
MAILBOX_PROBES = {"mapi", "ews", "mapi-session"}


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    why: str


def _merge(windows: list[Window]) -> list[Window]:
    merged: list[Window] = []
    for w in sorted(windows, key=lambda w: w.start):
        if merged and w.start <= merged[-1].end + 0.05:
            last = merged[-1]
            merged[-1] = Window(last.start, max(last.end, w.end), f"{last.why} + {w.why}")
        else:
            merged.append(w)
    return merged


def _truth(lab: LabHandle) -> tuple[dict[str, list[Window]], list[Window]]:
    """Per server: when it could not serve anything; and when alice's database (DB01) had no mounted copy."""
    events = lab.events()
    servers: dict[str, list[Window]] = {s.name: [] for s in lab.org.servers}
    opened: dict[tuple[str, str], float] = {}
    mailbox: list[Window] = []
    for e in events:
        server = e.get("server")
        if e.kind == "component.state" and e.get("component") == "ServerWideOffline":
            if e.get("state") == "Inactive":
                opened[(server, "maintenance")] = e.mono
            else:
                servers[server].append(Window(opened.pop((server, "maintenance")), e.mono, f"{server} maintenance"))
        elif e.kind == "power.off":
            opened[(server, "power")] = e.mono
        elif e.kind == "power.on":
            servers[server].append(Window(opened.pop((server, "power")), e.mono, f"{server} powered off"))
        elif e.kind == "copy.move.start" and e.get("db") == "DB01":
            opened[("DB01", "move")] = e.mono
        elif e.kind == "copy.move.end" and e.get("db") == "DB01":
            mailbox.append(Window(opened.pop(("DB01", "move")), e.mono, "DB01 moving"))
    return servers, mailbox


def _watch(lab: LabHandle, store: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "casprobe",
            "watch",
            "--lab",
            str(lab.folder),
            "--interval",
            "0.5",
            "--store",
            str(store),
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
    )


def test_watch_measures_what_the_event_log_says_happened(tmp_path: Path) -> None:
    """Server-name outages start and end within one interval + 0.2 s of the ground truth; the namespace's
    new-connection outages last no longer than HAProxy's detection window + one interval; the long-lived session
    through the namespace is interrupted exactly by the copy moves and reconnects."""
    lab = start_lab(tmp_path / "lab")
    store = tmp_path / "run.db"
    try:
        proc = _watch(lab, store)
        try:
            time.sleep(4.0)
            with lab.control() as control:
                control.maintenance("mb1", "start")
                time.sleep(4.0)
                control.maintenance("mb1", "stop")
                time.sleep(2.5)
                control.switchover("DB01", "mb1")
                time.sleep(3.0)
                control.power("mb2", "off", "refuse")
                time.sleep(4.0)
                control.power("mb2", "on")
            time.sleep(3.0)
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-2000:]
        assert str(store) in out + err
        servers, mailbox = _truth(lab)
        config = lab.org.config
        with RunStore.open(store) as run:
            results = list(run.results())
            stored_events = run.lab_events()
        assert {json.loads(e.data).get("server") for e in stored_events if e.kind == "power.off"} == {"mb2"}
        assert len(results) > 200
        found = outages(results, interval_s=INTERVAL)
        by_kind = {key: r.target.kind for r in results for key in (r.target.name, r.target.display)}
        namespace_budget = config.check_inter_ms * config.check_fall / 1000 + INTERVAL
        problems: list[str] = []
        matched: set[tuple[str, str, str]] = set()
        for outage in found:
            kind = by_kind[outage.target]
            if kind is TargetKind.NAMESPACE:
                if outage.probe == "mapi-session":
                    _check_against(outage, mailbox, problems, matched)
                elif outage.duration is None or outage.duration > namespace_budget + 0.2:
                    problems.append(f"namespace {outage.probe} outage of {outage.duration} s > {namespace_budget} s")
                continue
            server = outage.target.split(".")[0]
            relevant = list(servers[server])
            if outage.probe in MAILBOX_PROBES:
                relevant += mailbox
            _check_against(outage, _merge(relevant), problems, matched)
        assert problems == [], "\n".join(problems)
        # every ground-truth window on a server name was seen by every probe through that name
        for server in ("mb1", "mb2"):
            for window in servers[server]:
                for probe in ("health", "ews", "mapi", "mapi-session"):
                    seen = {why for target, p, why in matched if target.split(".")[0] == server and p == probe}
                    assert any(window.why in why for why in seen), f"no {probe} outage on {server} for {window.why}"
        sessions = [o for o in found if o.probe == "mapi-session" and by_kind[o.target] is TargetKind.NAMESPACE]
        assert len(sessions) == len(mailbox), "the namespace session is interrupted once per DB01 move, no more"
    finally:
        lab.down()


def _check_against(
    outage: Outage, windows: list[Window], problems: list[str], matched: set[tuple[str, str, str]]
) -> None:
    end = outage.end_mono
    overlapping = [
        w
        for w in windows
        if w.start - SLACK <= (end if end is not None else float("inf")) and outage.start_mono <= w.end + SLACK
    ]
    label = f"{outage.target} {outage.probe} outage {outage.start_mono:.2f}→{end}"
    if not overlapping:
        problems.append(f"{label}: no ground-truth window explains it ({outage.error_classes}, {outage.first_detail})")
        return
    window = overlapping[0]
    matched.add((outage.target, outage.probe, window.why))
    if abs(outage.start_mono - window.start) > SLACK:
        problems.append(f"{label}: starts {outage.start_mono - window.start:+.2f} s from {window.why}")
    if end is None or abs(end - window.end) > SLACK:
        problems.append(f"{label}: ends {(end or 0) - window.end:+.2f} s from the end of {window.why}")


def test_a_watch_killed_with_sigkill_leaves_a_store_that_opens_and_analyses(tmp_path: Path) -> None:
    """kill -9 mid-run: the store passes SQLite's integrity check, holds the results so far, says the run did not
    finish, and `casprobe analyze` reads it without a traceback."""
    lab = start_lab(tmp_path / "lab", servers=2)
    store = tmp_path / "run.db"
    try:
        proc = _watch(lab, store)
        try:
            deadline = time.monotonic() + 30
            count = 0
            while time.monotonic() < deadline and count < 40:
                time.sleep(0.5)
                if store.exists():
                    with RunStore.open(store) as run:
                        count = run.result_count()
            assert count >= 40, "watch stored results while running"
        finally:
            proc.kill()
            proc.communicate(timeout=30)
        with RunStore.open(store, readonly=False) as run:
            assert run.integrity_check() == ["ok"]
            assert run.run_info().ended_at is None
            assert run.result_count() >= count
        analysed = subprocess.run(
            [sys.executable, "-m", "casprobe", "analyze", str(store), "--format", "json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert analysed.returncode == 0, analysed.stderr
        assert "Traceback" not in analysed.stderr
        assert json.loads(analysed.stdout)["format"] == "casprobe.analysis"
    finally:
        lab.down()
