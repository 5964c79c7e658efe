"""`casprobe mark` and `casprobe export`: what they write and print, their exit codes, and no secret in an export."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from casprobe.cli import main
from casprobe.exporters.json import result_object
from casprobe.exporters.runexport import CSV_COLUMNS
from casprobe.model import (
    ErrorClass,
    LabEventRecord,
    Marker,
    PhaseTimings,
    ProbeResult,
    RunInfo,
    Severity,
    Step,
    Target,
    TargetKind,
)
from casprobe.runner import available_probes
from casprobe.store import RunStore
from casprobe.targets import CheckOptions, build_plan

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "S3cret-Pa55word!"


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``casprobe ARGS`` in this process through main(): exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["casprobe", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _info(settings: str = "{}") -> RunInfo:
    return RunInfo(
        "run-1", 1_700_000_000.0, "0.1.0", 1.0, ("namespace=outlook.lab.test",), ("mapi",), settings=settings
    )


def _result(mono: float, *, success: bool = True) -> ProbeResult:
    return ProbeResult(
        Target("outlook.lab.test", TargetKind.NAMESPACE, address="127.0.0.10", label="namespace"),
        "mapi",
        success,
        Severity.OK if success else Severity.CRITICAL,
        None if success else ErrorClass.HTTP_STATUS,
        detail="" if success else 'HTTP 503, "draining", naïve',
        started_at=1_700_000_000.0 + mono,
        duration=0.25,
        phases=PhaseTimings(resolve=None, connect=0.001, tls=0.01, auth=(0.02, 0.03), first_byte=0.1, total=0.25),
        fe_server="MB1",
        be_server="mb2.lab.test",
        steps=(Step("POST /mapi/emsmdb (Connect)", success, status_code=200 if success else 503),),
        started_mono=mono,
    )


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A finished store with two results, a marker and two lab events."""
    path = tmp_path / "run.db"
    with RunStore.create(path, _info('{"namespace": "outlook.lab.test"}')) as store:
        store.add_result(_result(20.0, success=False))
        store.add_result(_result(10.0))
        store.add_marker(Marker(1_700_000_015.0, 15.0, "mb1 maintenance start"))
        store.add_lab_events([LabEventRecord(1, 1_700_000_012.0, 12.0, "power.off", '{"server": "mb1"}'),
                              LabEventRecord(2, 1_700_000_013.0, 13.0, "odd", "not json")])  # fmt: skip
        store.finish(1_700_000_030.0)
    return path


# --- casprobe mark -------------------------------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from casprobe.model import ProbeResult, RunInfo, Severity, Target
    from casprobe.store import RunStore
    store = RunStore.create(Path(sys.argv[1]), RunInfo("w", time.time(), "0", 0.25, ("mb1",), ("health",)))
    while True:
        store.add_result(ProbeResult(Target("mb1"), "health", True, Severity.OK, started_at=time.time(),
                                     started_mono=time.monotonic()))
        print("ok", flush=True)
        time.sleep(0.005)
    """
)


def test_mark_adds_a_marker_to_a_store_another_process_is_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`casprobe mark` appends a user marker whose clocks fall between the writer's results, and prints one line."""
    path = tmp_path / "run.db"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        for _ in range(5):
            writer.stdout.readline()
        code, out, err = _run(monkeypatch, capsys, "mark", str(path), "mb1 maintenance start")
        for _ in range(5):
            writer.stdout.readline()
    finally:
        writer.kill()
        writer.communicate(timeout=10)
    assert (code, err) == (0, "")
    assert out.count("\n") == 1
    assert out.startswith(f"marked {path} at ")
    assert out.rstrip().endswith(": mb1 maintenance start")
    with RunStore.open(path) as store:
        (marker,) = store.markers()
        monos = [r.started_mono for r in store.results()]
        walls = [r.started_at for r in store.results()]
    assert (marker.text, marker.source) == ("mb1 maintenance start", "user")
    assert monos[0] < marker.mono < monos[-1]
    assert walls[0] < marker.wall < walls[-1]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("hello\n" * 1000), "not a SQLite database"),
    ],
    ids=["missing", "not-sqlite"],
)
def test_mark_on_a_bad_store_exits_3_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], make: object, message: str
) -> None:
    """A missing or invalid store makes `casprobe mark` exit 3 with one line on stderr and no traceback."""
    path = tmp_path / "run.db"
    assert callable(make)
    make(path)
    code, out, err = _run(monkeypatch, capsys, "mark", str(path), "text")
    assert code == 3
    assert out == ""
    assert err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


def test_mark_refuses_an_empty_text(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A blank marker text exits 3 and adds nothing."""
    code, _, err = _run(monkeypatch, capsys, "mark", str(store_path), "  ")
    assert code == 3
    assert "empty" in err
    with RunStore.open(store_path) as store:
        assert len(store.markers()) == 1


# --- casprobe export -----------------------------------------------------------------------------------------------


def test_export_jsonl_has_the_run_then_results_markers_and_lab_events(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each line is one object with a type: the run first, then results in monotonic order, markers, lab events."""
    code, out, _ = _run(monkeypatch, capsys, "export", str(store_path), "--format", "jsonl")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["type"] for line in lines] == ["run", "result", "result", "marker", "lab_event", "lab_event"]
    run = lines[0]
    assert (run["run_id"], run["ended_at"], run["store_schema_version"]) == ("run-1", 1_700_000_030.0, 2)
    assert run["settings"] == {"namespace": "outlook.lab.test"}
    assert lines[1] == {"type": "result", **json.loads(json.dumps(result_object(_result(10.0))))}
    assert lines[2]["detail"] == 'HTTP 503, "draining", naïve'
    assert lines[3]["text"] == "mb1 maintenance start"
    assert lines[4]["data"] == {"server": "mb1"}
    assert lines[5]["data"] == "not json"


def test_export_csv_has_the_documented_header_and_phase_columns(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CSV: the header of CSV_COLUMNS, one row per result in order, phases as seconds, auth as the sum of legs."""
    code, out, _ = _run(monkeypatch, capsys, "export", str(store_path), "--format", "csv")
    assert code == 0
    reader = csv.DictReader(io.StringIO(out, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    first, second = list(reader)
    assert (first["started_mono"], first["success"], first["severity"], first["error_class"]) == ("10.0", "1", "OK", "")
    assert (second["success"], second["severity"], second["error_class"]) == ("0", "CRITICAL", "http_status")
    assert (first["resolve"], first["connect"], first["tls"], first["first_byte"], first["total"]) == (
        "",
        "0.001",
        "0.01",
        "0.1",
        "0.25",
    )
    assert float(first["auth"]) == pytest.approx(0.05)
    assert first["auth_legs"] == "2"
    assert (first["target"], first["label"], first["kind"], first["fe_server"]) == (
        "outlook.lab.test",
        "namespace",
        "namespace",
        "MB1",
    )
    assert first["started"] == "2023-11-14T22:13:30.000+00:00"
    assert second["detail"] == 'HTTP 503, "draining", naïve'


def test_export_of_an_empty_store_is_the_run_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store without results exports its run line (jsonl) or just the header (csv)."""
    path = tmp_path / "run.db"
    RunStore.create(path, _info()).close()
    _, out, _ = _run(monkeypatch, capsys, "export", str(path))
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["run"]
    assert json.loads(out)["ended_at"] is None
    _, out, _ = _run(monkeypatch, capsys, "export", str(path), "--format", "csv")
    assert out.splitlines() == [",".join(CSV_COLUMNS)]


def test_export_to_a_file_replaces_it_atomically(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--output replaces the file whole and leaves no temporary file; a failed export leaves the old file intact."""
    target = tmp_path / "out" / "run.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    code, out, err = _run(monkeypatch, capsys, "export", str(store_path), "--format", "csv", "--output", str(target))
    assert (code, out) == (0, "")
    assert f"exported 2 results of {store_path} to {target}" in err
    assert target.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    assert len(target.read_text().splitlines()) == 3
    assert [p.name for p in target.parent.iterdir()] == ["run.csv"]

    conn = sqlite3.connect(store_path)
    conn.execute("UPDATE results SET phases = 'not json' WHERE started_mono = 20.0")
    conn.commit()
    conn.close()
    target.write_text("old\n")
    code, _, err = _run(monkeypatch, capsys, "export", str(store_path), "--output", str(target))
    assert code == 3
    assert "damaged result row" in err
    assert "Traceback" not in err
    assert target.read_text() == "old\n"
    assert [p.name for p in target.parent.iterdir()] == ["run.csv"]


def test_export_of_a_missing_store_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`casprobe export` of a path that does not exist exits 3 with one line and writes no output file."""
    code, out, err = _run(monkeypatch, capsys, "export", str(tmp_path / "nope.db"), "--output", str(tmp_path / "x"))
    assert (code, out) == (3, "")
    assert err.count("\n") == 1
    assert "no such file" in err
    assert not (tmp_path / "x").exists()


def test_no_password_given_to_a_run_reaches_the_store_or_an_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run whose settings come from a plan with a password (CheckPlan.summary()) keeps no trace of it."""
    monkeypatch.setenv("CASPROBE_TEST_PASSWORD", PASSWORD)
    options = CheckOptions(namespace="outlook.lab.test", user="LAB\\alice", password_env="CASPROBE_TEST_PASSWORD")
    plan = build_plan(options, available=available_probes(), interactive=False)
    assert plan.settings.credentials is not None  # the plan did read the password
    path = tmp_path / "run.db"
    with RunStore.create(path, _info(json.dumps(plan.summary()))) as store:
        store.add_result(_result(1.0, success=False))
        store.add_marker(Marker(time.time(), time.monotonic(), "start"))
    exports = [_run(monkeypatch, capsys, "export", str(path), "--format", fmt)[1] for fmt in ("jsonl", "csv")]
    assert "LAB\\\\alice" in exports[0]  # the settings are there, only the secret is not
    for text in exports:
        assert PASSWORD not in text
    for stored in tmp_path.iterdir():
        assert PASSWORD.encode() not in stored.read_bytes()


def test_the_cli_lists_mark_and_export(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`casprobe --help` names the two commands, which load lazily from their modules."""
    code, out, _ = _run(monkeypatch, capsys, "--help")
    assert code == 0
    assert "mark" in out
    assert "export" in out


def test_export_jsonl_carries_load_runs_and_their_disconnects(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store with a Locust load run exports it and each disconnect interval after the lab events."""
    from casprobe.model import LoadDisconnect, LoadRun, RequestStat

    with RunStore.open(store_path, readonly=False) as store:
        run = LoadRun(5.0, 65.0, "locust", (("namespace", 2), ("mb1", 1)), (RequestStat("MAPI", "Execute", 9, 1),))
        store.add_load_run(run, [LoadDisconnect("mb1", "l-outlook-1", "outlook", "mb1.lab.test", 20.0, 40.0, 3, ())])
    code, out, _ = _run(monkeypatch, capsys, "export", str(store_path), "--format", "jsonl")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    load, interval = lines[-2:]
    assert (load["type"], load["cohorts"], load["stats"][0]["count"]) == ("load_run", {"namespace": 2, "mb1": 1}, 9)
    assert (interval["type"], interval["load_run"], interval["user"]) == ("load_disconnect", 1, "l-outlook-1")
    assert (interval["started_at"], interval["ended_at"], interval["failures"]) == (20.0, 40.0, 3)
