"""``casprobe analyze``: a run store in, a summary or versioned JSON out; broken stores give a message and exit 3."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from casprobe.cli import cli
from casprobe.model import ErrorClass, LabEventRecord, Marker, ProbeResult, RunInfo, Severity, Target, TargetKind
from casprobe.store import RunStore

MONO = 5000.0  # the monotonic clock at the start of the hand-made run
WALL = 1_700_000_000.0
NS = Target("outlook.lab.test", TargetKind.NAMESPACE, label="namespace")
MB1 = Target("mb1.lab.test", TargetKind.SERVER, label="mb1")


def _result(target: Target, probe: str, t: float, ok: bool, fe: str | None = None) -> ProbeResult:
    return ProbeResult(
        target,
        probe,
        ok,
        Severity.OK if ok else Severity.CRITICAL,
        None if ok else ErrorClass.HTTP_STATUS,
        "" if ok else "HTTP 503",
        started_at=WALL + t,
        duration=0.04,
        started_mono=MONO + t,
        fe_server=fe,
    )


def _run() -> RunInfo:
    return RunInfo("run-cli", WALL, "0.1.0", 0.5, ("namespace=outlook.lab.test", "mb1=mb1.lab.test"), ("mapi",))


def _store(path: Path, *, results: bool = True, finish: bool = True) -> Path:
    """mb1 fails 10.0–42.5 s (65 probes at 0.5 s); the namespace never fails; a maintenance window 9–43 s."""
    with RunStore.create(path, _run()) as store:
        if results:
            for i in range(120):
                t = i * 0.5
                store.add_result(_result(MB1, "mapi", t, not 10.0 <= t < 42.5))
                store.add_result(_result(NS, "mapi", t, True, fe="MB1" if t < 10.0 else "MB2"))
            store.add_marker(Marker(WALL + 9.0, MONO + 9.0, "mb1 maintenance start"))
            store.add_marker(Marker(WALL + 43.0, MONO + 43.0, "mb1 maintenance end"))
            events = [
                LabEventRecord(1, WALL + 9.9, MONO + 9.9, "component.state", _state("Inactive")),
                LabEventRecord(2, WALL + 42.3, MONO + 42.3, "component.state", _state("Active")),
            ]
            store.add_lab_events(events)
        if finish:
            store.finish(WALL + 60.0)
    return path


def _state(state: str) -> str:
    return json.dumps({"server": "mb1", "component": "ServerWideOffline", "state": state})


def test_the_summary_compares_the_namespace_with_the_server_name(tmp_path: Path) -> None:
    """A finished run: exit 0, the comparison in words, the outage with its cause, the backend timeline."""
    result = CliRunner().invoke(cli, ["analyze", str(_store(tmp_path / "run.db"))])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "through the namespace: 0 s (new connections) disconnected" in out
    assert "through mb1: 32.5 s (new connections) disconnected (during the maintenance: 32.5 s)" in out
    assert "mb1 · mapi" in out
    assert "began after mb1 ServerWideOffline Inactive" in out
    assert "MB2" in out
    assert "did not finish" not in out


def test_json_format_is_the_versioned_analysis(tmp_path: Path) -> None:
    """--format json prints RunAnalysis.to_json(): format, version, the outage 10.0 → 42.5 s with its detect time."""
    result = CliRunner().invoke(cli, ["analyze", str(_store(tmp_path / "run.db")), "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert (doc["format"], doc["version"], doc["run"]["run_id"]) == ("casprobe.analysis", 1, "run-cli")
    (outage,) = doc["outages"]
    assert (outage["target"], outage["start_t"], outage["end_t"], outage["failures"]) == ("mb1", 10.0, 42.5, 65)
    assert outage["detect_s"] == pytest.approx(0.1)
    assert doc["phases"]["source"] == "markers"


def test_output_writes_the_file_and_prints_nothing(tmp_path: Path) -> None:
    """--output FILE writes the report there (atomically) and leaves stdout empty."""
    target = tmp_path / "analysis.json"
    result = CliRunner().invoke(
        cli, ["analyze", str(_store(tmp_path / "run.db")), "--format", "json", "--output", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert json.loads(target.read_text())["format"] == "casprobe.analysis"


def test_min_failures_option_reaches_the_analysis(tmp_path: Path) -> None:
    """--min-failures 100 hides mb1's 65-probe outage and the summary says why."""
    result = CliRunner().invoke(cli, ["analyze", str(_store(tmp_path / "run.db")), "--min-failures", "100"])
    assert result.exit_code == 0, result.output
    assert "through mb1: 0 s" in result.stdout
    assert "fewer than 100 failed results" in result.stdout


def test_a_killed_run_is_analysed_up_to_its_last_result(tmp_path: Path) -> None:
    """A store whose run never finished: exit 0 and a note saying the run did not finish."""
    result = CliRunner().invoke(cli, ["analyze", str(_store(tmp_path / "run.db", finish=False))])
    assert result.exit_code == 0, result.output
    assert "did not finish" in result.stdout


def test_an_empty_store_says_so_and_exits_3(tmp_path: Path) -> None:
    """A store with no results: the summary says there is nothing to analyse, exit 3."""
    result = CliRunner().invoke(cli, ["analyze", str(_store(tmp_path / "run.db", results=False))])
    assert result.exit_code == 3
    assert "no results" in result.stdout
    assert "holds no results" in result.stderr


@pytest.mark.parametrize("kind", ["missing", "folder", "not sqlite", "other sqlite"])
def test_an_unusable_store_is_a_message_and_exit_3(tmp_path: Path, kind: str) -> None:
    """A missing file, a folder, a non-SQLite file or a SQLite file that is not a store: one line, exit 3."""
    path = tmp_path / "run.db"
    if kind == "folder":
        path.mkdir()
    elif kind == "not sqlite":
        path.write_bytes(b"this is not a database\n" * 100)
    elif kind == "other sqlite":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x)")
        conn.close()
    result = CliRunner().invoke(cli, ["analyze", str(path)])
    assert result.exit_code == 3
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("casprobe analyze: ")
    assert str(path) in result.stderr
    assert result.stdout == ""


def test_an_unwritable_output_is_a_message_and_exit_3(tmp_path: Path) -> None:
    """--output into a folder that does not exist: a message naming it, exit 3, no traceback."""
    target = tmp_path / "nowhere" / "a.json"
    result = CliRunner().invoke(cli, ["analyze", str(_store(tmp_path / "run.db")), "--output", str(target)])
    assert result.exit_code == 3
    assert "cannot write" in result.stderr


def test_the_installed_command_never_shows_a_traceback(tmp_path: Path) -> None:
    """`python -m casprobe analyze missing.db` prints one line on stderr and exits 3."""
    proc = subprocess.run(
        [sys.executable, "-m", "casprobe", "analyze", str(tmp_path / "missing.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert "no such file" in proc.stderr
