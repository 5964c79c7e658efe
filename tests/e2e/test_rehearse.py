"""``casprobe rehearse --quick``: from nothing to the HTML report, and the report's outages against the lab's log.

The rehearsal runs as a user runs it (a subprocess). Its run store keeps the lab's event log (``watch`` copies it),
so the test can hold the outages the report shows against the ground truth: for each of mb1's new-connection
probes, the outage of the maintenance starts within one watch interval of mb1's protocols going inactive and ends
within one interval of their coming back (a probe already under way at either moment may straddle it). MAPI and
EWS through mb1 may fail earlier, from the start of the maintenance: the probe's mailbox database moves off mb1.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from casprobe.analysis_outages import outages
from casprobe.store import RunStore
from tests.labkit import next_subnet

pytestmark = [pytest.mark.lab, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
INTERVAL_S = 0.5  # rehearse --quick watches every 0.5 s
PROBE_S = 1.0  # the longest a new-connection probe of the lab takes on a loaded machine


def test_quick_rehearsal_writes_a_report_whose_outages_match_the_event_log(tmp_path: Path) -> None:
    """The rehearsal prints a three-line summary and the report's path; mb1's outages match the lab's log."""
    report = tmp_path / "reports" / "rehearsal.html"
    base = f"127.0.{next_subnet()}.10"
    done = subprocess.run(
        [sys.executable, "-m", "casprobe", "rehearse", "--quick", "-o", str(report), "--base-address", base],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=200,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("Through outlook.lab.test"), lines
    assert "mb1.lab.test" in lines[1]
    assert lines[2].startswith("Load clients cut off on average: namespace"), lines
    assert lines[3] == f"Report: {report}"
    page = report.read_text(encoding="utf-8")
    assert 'id="chart-timeline"' in page
    assert "<script" not in page.lower()
    for phase in ("mb1 maintenance start", "mb1 maintenance end", "next:", "writing the report"):
        assert phase in done.stderr

    found = re.search(r"\(run store, load and logs: (.+)\)", done.stderr)
    assert found is not None, done.stderr
    with RunStore.open(Path(found.group(1)) / "run.db") as store:
        events = store.lab_events()
        results = list(store.results(target="mb1.lab.test"))
        assert store.load_runs(), "the load run was not added to the store"
    began = next(e for e in events if e.kind == "maintenance.start")
    inactive = next(e for e in events if e.kind == "component.state" and '"Inactive"' in e.data and "mb1" in e.data)
    active = next(e for e in events if e.kind == "component.state" and '"Active"' in e.data and "mb1" in e.data)
    windows = outages(results, interval_s=INTERVAL_S)
    for probe in ("health", "mapi", "ews"):
        mine = [o for o in windows if o.probe == probe and o.duration is not None]
        assert mine, f"mb1 {probe}: no outage at all"
        main = max(mine, key=lambda o: o.duration or 0.0)
        # health fails when mb1's components go inactive; MAPI and EWS already while mb1's databases move away
        earliest = inactive.mono if probe == "health" else began.mono
        assert earliest - PROBE_S <= main.start_mono <= inactive.mono + INTERVAL_S + 0.1, (probe, main, inactive)
        assert main.end_mono is not None
        assert -PROBE_S <= main.end_mono - active.mono <= INTERVAL_S + PROBE_S, (probe, main, active)
