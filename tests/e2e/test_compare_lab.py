"""`casprobe compare` on real checks of the lab: two checks in a row compare clean, mb1 in maintenance is flagged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.labkit import start_lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
# One sample per row on a shared 2-core machine: back-to-back checks of the lab have shown first_byte 21 → 111 ms.
# The thresholds of a single check are the user's call; this test is about failures, not about latency noise.
QUIET = ("--latency-min-ms", "1000")


def _casprobe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casprobe", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ),
        check=False,
    )


def test_two_checks_compare_clean_and_maintenance_on_mb1_is_flagged(tmp_path: Path) -> None:
    """Two checks of a healthy lab compare with exit 0; after mb1 enters DAG maintenance, comparing the first check
    with a new one exits 2 with a failure finding for every probe of mb1 and none for any other name."""
    lab = start_lab(tmp_path / "lab")
    try:
        checks = []
        for name in ("pre.json", "again.json"):
            path = tmp_path / name
            out = _casprobe("check", "--lab", str(lab.folder), "--format", "json", "--output", str(path))
            assert out.returncode == 0, out.stdout + out.stderr
            checks.append(path)
        same = _casprobe("compare", *map(str, checks), *QUIET)
        assert same.returncode == 0, same.stdout + same.stderr
        assert "OK: no differences" in same.stdout
        with lab.control() as control:
            control.maintenance("mb1", "start")
        lab.wait_lb("mb1", up=False)
        post = tmp_path / "post.json"
        out = _casprobe("check", "--lab", str(lab.folder), "--format", "json", "--timeout", "10", "--output", str(post))
        assert out.returncode == 2, out.stderr
        diff = _casprobe("compare", str(checks[0]), str(post), "--format", "json", *QUIET)
        assert diff.returncode == 2, diff.stdout + diff.stderr
        doc = json.loads(diff.stdout)
        failures = {(f["target"], f["probe"]) for f in doc["findings"] if f["kind"] == "failure"}
        mb1_probes = {r["probe"] for r in json.loads(checks[0].read_text())["results"] if r["target"]["label"] == "mb1"}
        assert failures == {("mb1.lab.test", probe) for probe in mb1_probes}
        assert all("http_status" in f["message"] for f in doc["findings"] if f["kind"] == "failure")
    finally:
        lab.down()
