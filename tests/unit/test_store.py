"""The run store: lossless round trips, ordering, concurrency, durability against kill -9, versions, bad files."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import casprobe.store
from casprobe import __version__
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
    TlsFacts,
)
from casprobe.store import RunStore, StoreError
from casprobe.store_codec import RESULT_COLUMNS, encode_result
from casprobe.store_schema import FORMAT, SCHEMA_V0

ROOT = Path(__file__).resolve().parents[2]

NAMESPACE = Target("outlook.lab.test", TargetKind.NAMESPACE, 443, "127.0.0.10", "namespace")
MB1 = Target("mb1.lab.test", TargetKind.SERVER, 8443, None, "")


def run_info(**changes: object) -> RunInfo:
    fields: dict[str, object] = {
        "run_id": "0b5c9a3e-2f1d-4c1e-9d0a-6f7e8a9b0c1d",
        "started_at": 1_700_000_000.125,
        "casprobe_version": __version__,
        "interval_s": 0.5,
        "targets": ("namespace=outlook.lab.test", "mb1=mb1.lab.test"),
        "probes": ("mapi", "mapi-session", "ews"),
        "tls_verification": False,
        "settings": json.dumps({"password_source": "env", "bearer_token": False, "user": "LAB\\alice"}),
        "host": "probe-host",
    }
    fields.update(changes)
    return RunInfo(**fields)  # type: ignore[arg-type]


def rich_result(mono: float = 1234.5, *, target: Target = NAMESPACE, probe: str = "mapi") -> ProbeResult:
    """A failed MAPI probe with every nested part filled in, awkward text included."""
    return ProbeResult(
        target=target,
        probe=probe,
        success=False,
        severity=Severity.CRITICAL,
        error_class=ErrorClass.PROTOCOL,
        detail="X-ResponseCode 10 (context lost) — zurück; NUL\x00 and a tab\t",
        started_at=1_700_000_001.000_000_1,
        duration=0.123_456_789_012_345_67,
        phases=PhaseTimings(
            resolve=None, connect=0.000_5, tls=0.012, auth=(0.01, 0.02, 1e-9), first_byte=0.3, total=1.0
        ),
        address="127.0.0.11",
        fe_server="MB1",
        be_server=None,
        tls=TlsFacts(
            version="TLSv1.3",
            cipher="TLS_AES_256_GCM_SHA384",
            verified=True,
            name_match=None,
            not_after="2030-01-01T00:00:00+00:00",
            days_left=-3,
            subject="CN=outlook.lab.test",
            issuer="CN=Lab CA",
            san=("outlook.lab.test", "autodiscover.lab.test"),
            verification_disabled=False,
        ),
        auth_offered=("Negotiate", "NTLM"),
        auth_used="NTLM",
        steps=(
            Step("POST /mapi/emsmdb (Connect)", True, status_code=200, duration=0.2, fe_server="MB1", response_code=0),
            Step(
                "POST /mapi/emsmdb (Execute)",
                False,
                detail="context lost",
                error_class=ErrorClass.PROTOCOL,
                status_code=200,
                duration=0.1,
                address="127.0.0.11",
                be_server="mb2.lab.test",
                response_code=10,
            ),
        ),
        facts=(("mapi.mailstore_url", "https://outlook.lab.test/mapi/emsmdb/?MailboxId=x"), ("dup", "1"), ("dup", "2")),
        started_mono=mono,
    )


def plain_result(mono: float, *, target: Target = MB1, probe: str = "health", success: bool = True) -> ProbeResult:
    return ProbeResult(target, probe, success, Severity.OK if success else Severity.CRITICAL, started_mono=mono)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunStore]:
    with RunStore.create(tmp_path / "run.db", run_info()) as created:
        yield created


# --- round trips and reading ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        rich_result(),
        plain_result(0.0),
        ProbeResult(MB1, "ews", True, Severity.WARNING, detail="certificate expires in 3 days", duration=2),
        ProbeResult(NAMESPACE, "autodiscover", False, Severity.UNKNOWN, ErrorClass.INTERNAL, tls=TlsFacts()),
        ProbeResult(MB1, "health", False, Severity.CRITICAL, ErrorClass.TIMEOUT, started_at=math.inf),
    ],
    ids=["rich", "minimal", "warning-int-duration", "empty-tls", "infinite-start"],
)
def test_a_result_reads_back_equal_to_what_was_written(store: RunStore, result: ProbeResult) -> None:
    """Every field of a ProbeResult (nested dataclasses, None fields, enums, float bits, odd text) survives."""
    store.add_result(result)
    (back,) = store.results()
    assert back == result
    assert back.phases.auth == result.phases.auth
    assert back.duration.hex() == float(result.duration).hex()


def test_a_result_survives_closing_and_reopening_read_only(tmp_path: Path) -> None:
    """What one process wrote, a later read-only open of the file reads back equal."""
    path = tmp_path / "run.db"
    written = [rich_result(1.0), plain_result(2.0), rich_result(3.0, target=MB1, probe="mapi-session")]
    with RunStore.create(path, run_info()) as store:
        for result in written:
            store.add_result(result)
    with RunStore.open(path) as reader:
        assert list(reader.results()) == written
        assert reader.run_info() == run_info()


def test_scalar_columns_hold_what_analysis_filters_on(store: RunStore) -> None:
    """Target name, label, kind, probe, success, severity, error class, times and servers are plain columns."""
    store.add_result(rich_result(42.0))
    conn = sqlite3.connect(store.path)
    row = conn.execute(
        "SELECT target_name, target_label, target_kind, probe, success, severity, error_class, started_mono,"
        " fe_server, be_server, address, json_extract(phases, '$.auth[1]') FROM results"
    ).fetchone()
    conn.close()
    assert row == ("outlook.lab.test", "namespace", "namespace", "mapi", 0, 2, "protocol", 42.0, "MB1", None,
                   "127.0.0.11", 0.02)  # fmt: skip


def test_results_come_ordered_by_monotonic_start_and_filter_by_target_and_probe(store: RunStore) -> None:
    """Results written out of order read back by started_mono (ties in insertion order), filtered on request."""
    written = [
        plain_result(5.0, probe="health"),
        plain_result(1.0, probe="ews"),
        plain_result(3.0, target=NAMESPACE, probe="health"),
        plain_result(3.0, probe="health", success=False),
        plain_result(2.0, probe="health"),
    ]
    for result in written:
        store.add_result(result)
    assert [r.started_mono for r in store.results()] == [1.0, 2.0, 3.0, 3.0, 5.0]
    assert [r.target.name for r in store.results() if r.started_mono == 3.0] == ["outlook.lab.test", "mb1.lab.test"]
    assert [r.started_mono for r in store.results(target="mb1.lab.test", probe="health")] == [2.0, 3.0, 5.0]
    assert [r.probe for r in store.results(probe="ews")] == ["ews"]
    assert list(store.results(target="nobody.lab.test")) == []
    assert store.result_count() == 5


def test_results_are_read_page_by_page_without_losing_or_repeating_ties(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paging on (started_mono, id) returns every result once, in order, even when a page ends inside a tie."""
    monkeypatch.setattr(casprobe.store, "_PAGE", 4)
    monos = [float(i // 3) for i in range(23)]  # runs of three equal starts across page boundaries
    for i, mono in enumerate(monos):
        store.add_result(plain_result(mono, probe=f"p{i}"))
    assert [r.probe for r in store.results()] == [f"p{i}" for i in range(23)]


def test_an_empty_store_reads_as_a_run_with_nothing_in_it(tmp_path: Path) -> None:
    """A store without results, markers or lab events opens and reads fine; a run never finished has no end."""
    path = tmp_path / "run.db"
    RunStore.create(path, run_info()).close()
    with RunStore.open(path) as store:
        assert list(store.results()) == []
        assert store.markers() == []
        assert store.lab_events() == []
        assert store.run_info().ended_at is None


def test_finish_records_the_end_of_the_run(store: RunStore) -> None:
    """finish() sets run_info().ended_at, which stays None until then (a killed run)."""
    assert store.run_info().ended_at is None
    store.finish(1_700_000_900.5)
    assert store.run_info().ended_at == 1_700_000_900.5


def test_markers_read_back_in_monotonic_order(store: RunStore) -> None:
    """Markers keep wall, mono, text and source, and come back ordered by the monotonic clock."""
    late = Marker(wall=1_700_000_010.0, mono=110.0, text="mb1 maintenance end", source="user")
    early = Marker(wall=1_700_000_005.0, mono=105.0, text="mb1 maintenance start — jetzt", source="watch")
    store.add_marker(late)
    store.add_marker(early)
    assert store.markers() == [early, late]


def test_lab_events_already_stored_are_ignored_and_counted_out(store: RunStore) -> None:
    """add_lab_events stores new seqs only and says how many were new; the data text is kept verbatim."""
    first = [LabEventRecord(1, 1.0, 101.0, "maintenance.start", '{"server": "mb1"}'),
             LabEventRecord(2, 2.0, 102.0, "haproxy.server", '{"server":"mb1","state":"DOWN"}')]  # fmt: skip
    assert store.add_lab_events(first) == 2
    again = [*first, LabEventRecord(3, 3.0, 103.0, "power.off", "{}")]
    assert store.add_lab_events(iter(again)) == 1
    assert store.add_lab_events([]) == 0
    assert store.lab_events() == again


def test_the_file_is_a_wal_store_with_meta_and_the_lookup_index(store: RunStore) -> None:
    """The store uses WAL, synchronous=NORMAL, a meta table naming its versions, and a (target, probe, mono) index."""
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    index = [row[2] for row in conn.execute("PRAGMA index_info(results_target_probe_mono)")]
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert store._conn is not None
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert meta["format"] == FORMAT
    assert meta["schema_version"] == str(RunStore.SCHEMA_VERSION) == "2"
    assert meta["created_by"] == __version__
    assert index == ["target_name", "probe", "started_mono"]
    assert {"meta", "run", "results", "markers", "lab_events"} <= tables


# --- concurrency and durability --------------------------------------------------------------------------------


def test_writes_from_many_threads_all_arrive(store: RunStore) -> None:
    """Eight threads writing through one store lose and corrupt nothing."""

    def write(thread: int) -> None:
        for i in range(100):
            store.add_result(plain_result(thread * 1000.0 + i, probe=f"t{thread}"))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.result_count() == 800
    for n in range(8):
        assert [r.started_mono for r in store.results(probe=f"t{n}")] == [n * 1000.0 + i for i in range(100)]


def test_a_reader_reads_while_a_writer_writes(tmp_path: Path) -> None:
    """A read-only store opened beside a writing one sees committed results grow, never an error or a torn row."""
    path = tmp_path / "run.db"
    writer = RunStore.create(path, run_info())
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(400):
                writer.add_result(rich_result(float(i)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=write)
    with RunStore.open(path) as reader:
        thread.start()
        seen: list[int] = []
        while not done.is_set():
            results = list(reader.results())
            assert all(r == rich_result(r.started_mono) for r in results)
            seen.append(len(results))
        thread.join()
        seen.append(reader.result_count())
    writer.close()
    assert errors == []
    assert seen == sorted(seen)
    assert seen[-1] == 400
    assert len(seen) > 2  # the reader really read in between


_KILL_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from casprobe.model import ProbeResult, RunInfo, Severity, Target
    from casprobe.store import RunStore
    store = RunStore.create(Path(sys.argv[1]), RunInfo("kill", time.time(), "0", 0.25, ("mb1",), ("health",)))
    i = 0
    while True:
        store.add_result(ProbeResult(Target("mb1"), "health", True, Severity.OK, facts=(("n", str(i)),),
                                     started_mono=float(i)))
        print(i, flush=True)
        i += 1
    """
)


def test_kill_9_loses_no_committed_result(tmp_path: Path) -> None:
    """Every result whose add_result returned before SIGKILL is in the store afterwards, and the file is sound."""
    path = tmp_path / "run.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    printed = [int(proc.stdout.readline()) for _ in range(300)]
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=10)
    printed += [int(line) for line in rest.splitlines() if line.strip()]
    assert proc.returncode == -signal.SIGKILL
    assert Path(f"{path}-wal").exists()  # killed before any clean close
    with RunStore.open(path) as store:
        assert store.integrity_check() == ["ok"]
        stored = {int(r.fact("n") or -1) for r in store.results()}
        assert store.run_info().ended_at is None
    assert set(printed) <= stored
    assert len(printed) >= 300


# --- versions and bad files ------------------------------------------------------------------------------------


def _make_v0_store(path: Path, results: list[ProbeResult]) -> None:
    """A hand-made version 0 store: no started_mono column, no lab_events table, created by a 0.0.x casprobe."""
    conn = sqlite3.connect(path)
    for statement in SCHEMA_V0:
        conn.execute(statement)
    meta = {"format": FORMAT, "schema_version": "0", "created_by": "0.0.9", "created_at": "2025-01-01T00:00:00+00:00"}
    conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
    info = run_info()
    conn.execute(
        "INSERT INTO run VALUES (1, ?, ?, NULL, '0.0.9', ?, ?, ?, 1, '{}', '')",
        (info.run_id, info.started_at, info.interval_s, json.dumps(list(info.targets)), json.dumps(list(info.probes))),
    )
    columns = [c for c in RESULT_COLUMNS if c != "started_mono"]
    for result in results:
        row = dict(zip(RESULT_COLUMNS, encode_result(result), strict=True))
        conn.execute(
            f"INSERT INTO results ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [row[c] for c in columns],
        )
    conn.commit()
    conn.close()


def _meta(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT key, value FROM meta"))
    finally:
        conn.close()


def test_a_version_0_store_reads_compatibly_without_being_changed(tmp_path: Path) -> None:
    """Opened read-only, an older store reads through an upgraded copy (started_mono 0.0, no lab events) and the
    file keeps its version."""
    path = tmp_path / "old.db"
    written = [rich_result(0.0), plain_result(0.0)]
    _make_v0_store(path, written)
    with RunStore.open(path) as store:
        assert list(store.results()) == written
        assert store.lab_events() == []
        assert store.run_info().casprobe_version == "0.0.9"
        with pytest.raises(StoreError, match="read-only"):
            store.add_marker(Marker(1.0, 1.0, "x"))
    assert _meta(path)["schema_version"] == "0"


def test_a_version_0_store_is_upgraded_when_opened_for_writing(tmp_path: Path) -> None:
    """open(readonly=False) migrates a version 0 store in place, records it in meta, and the store then works."""
    path = tmp_path / "old.db"
    _make_v0_store(path, [rich_result(0.0)])
    with RunStore.open(path, readonly=False) as store:
        assert store.add_lab_events([LabEventRecord(1, 1.0, 2.0, "power.off")]) == 1
        store.add_result(rich_result(7.0))
        assert [r.started_mono for r in store.results()] == [0.0, 7.0]
    meta = _meta(path)
    assert (meta["schema_version"], meta["migrated_from"], meta["migrated_by"]) == ("2", "0", __version__)
    with RunStore.open(path) as again:
        assert again.integrity_check() == ["ok"]
        assert len(again.lab_events()) == 1


def test_a_store_of_a_newer_schema_is_refused_naming_the_version(tmp_path: Path) -> None:
    """A store written by a later casprobe is refused with the version it has, the one we read and its creator."""
    path = tmp_path / "new.db"
    RunStore.create(path, run_info()).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.execute("UPDATE meta SET value = '9.9.0' WHERE key = 'created_by'")
    conn.commit()
    conn.close()
    for readonly in (True, False):
        with pytest.raises(StoreError, match=r"schema version 3 is newer .*version 2.*casprobe 9\.9\.0"):
            RunStore.open(path, readonly=readonly)


def _not_casprobe(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE things (x)")
    conn.commit()
    conn.close()


def _foreign_meta(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('format', 'someone-else')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: p.write_bytes(b"this is a text file, not a database\n" * 200), "not a SQLite database"),
        (lambda p: p.write_bytes(b""), "empty SQLite database, but not a casprobe run store"),
        (_not_casprobe, "a SQLite database, but not a casprobe run store"),
        (_foreign_meta, "not a casprobe run store"),
    ],
    ids=["missing", "folder", "text-file", "empty-file", "other-sqlite", "other-meta"],
)
@pytest.mark.parametrize("readonly", [True, False])
def test_a_path_that_is_not_a_store_gives_one_clear_store_error(
    tmp_path: Path, make: object, message: str, readonly: bool
) -> None:
    """Each kind of wrong file is refused with a StoreError that names the file and what is wrong with it."""
    path = tmp_path / "run.db"
    assert callable(make)
    make(path)
    with pytest.raises(StoreError, match=message) as info:
        RunStore.open(path, readonly=readonly)
    assert str(path) in str(info.value)


def test_a_damaged_result_row_is_reported_with_its_id(store: RunStore) -> None:
    """A row whose JSON was mangled raises StoreError naming the row, not a KeyError or JSONDecodeError."""
    store.add_result(rich_result(1.0))
    store.add_result(rich_result(2.0))
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE results SET steps = '[{\"ok\": true}]' WHERE id = 2")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="damaged result row 2: step"):
        list(store.results())


def test_a_file_with_damaged_pages_is_reported_as_damaged(tmp_path: Path) -> None:
    """Garbage written over the store's pages surfaces as a StoreError, never a raw sqlite3 error."""
    path = tmp_path / "run.db"
    with RunStore.create(path, run_info()) as store:
        for i in range(300):
            store.add_result(rich_result(float(i)))
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.seek(4096 * 2)
        handle.write(b"\xa5" * (size - 4096 * 3))
    with pytest.raises(StoreError, match="damaged"), RunStore.open(path) as broken:
        list(broken.results())


def test_create_refuses_an_existing_store_but_takes_an_empty_file(tmp_path: Path) -> None:
    """create() never overwrites a file with content, and creates into an existing empty file."""
    path = tmp_path / "run.db"
    RunStore.create(path, run_info()).close()
    with pytest.raises(StoreError, match="exists and is not empty"):
        RunStore.create(path, run_info())
    empty = tmp_path / "empty.db"
    empty.touch()
    RunStore.create(empty, run_info()).close()
    with pytest.raises(StoreError, match="no such folder"):
        RunStore.create(tmp_path / "missing" / "run.db", run_info())


def test_a_closed_store_refuses_use(tmp_path: Path) -> None:
    """After close() (which may be repeated) every method raises StoreError instead of a sqlite3 error."""
    store = RunStore.create(tmp_path / "run.db", run_info())
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.add_result(plain_result(1.0))
    with pytest.raises(StoreError, match="closed"):
        store.run_info()


def test_a_nan_start_is_refused_clearly(store: RunStore) -> None:
    """A NaN timestamp (SQLite would turn it into NULL) is refused with a StoreError saying which field."""
    with pytest.raises(StoreError, match="started_mono is NaN"):
        store.add_result(plain_result(math.nan))


# --- secrets ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"password": "hunter2"},
        {"user": "alice", "Password": ""},
        {"auth": {"client_secret": "hunter2"}},
        {"targets": [{"name": "mb1", "bearer_token": "hunter2"}]},
        {"api_token": 12345},
        {"passwd_file": ["hunter2"]},
    ],
    ids=["password", "case", "nested-secret", "token-in-list", "number", "reference-not-a-string"],
)
def test_settings_that_look_like_they_hold_a_secret_are_refused(tmp_path: Path, settings: dict[str, object]) -> None:
    """create() refuses settings with a secret-looking key holding a value, naming the key but never the value."""
    with pytest.raises(StoreError, match="looks like a secret") as info:
        RunStore.create(tmp_path / "run.db", run_info(settings=json.dumps(settings)))
    assert "hunter2" not in str(info.value)
    assert not (tmp_path / "run.db").exists()


@pytest.mark.parametrize(
    "settings",
    [
        {"password_source": "env", "bearer_token": True, "user": "LAB\\alice"},
        {"password_env": "CASPROBE_PASSWORD", "password_file": "/etc/casprobe/pw", "token": None},
        {},
    ],
    ids=["summary", "references", "empty"],
)
def test_settings_that_only_describe_secrets_are_accepted(tmp_path: Path, settings: dict[str, object]) -> None:
    """Saying where a secret comes from, or whether there is one, is allowed (what CheckPlan.summary() holds)."""
    text = json.dumps(settings)
    with RunStore.create(tmp_path / "run.db", run_info(settings=text)) as store:
        assert store.run_info().settings == text


@pytest.mark.parametrize("settings", ["[]", "not json", '"text"'], ids=["list", "invalid", "string"])
def test_settings_must_be_a_json_object(tmp_path: Path, settings: str) -> None:
    """Run settings that are not a JSON object are refused with a StoreError."""
    with pytest.raises(StoreError, match="settings"):
        RunStore.create(tmp_path / "run.db", run_info(settings=settings))


def test_a_writable_open_of_a_store_being_written_adds_a_marker_it_sees(tmp_path: Path) -> None:
    """A second writer (casprobe mark) adds a marker to a store another connection keeps writing."""
    path = tmp_path / "run.db"
    with RunStore.create(path, run_info()) as watch:
        watch.add_result(plain_result(1.0))
        with RunStore.open(path, readonly=False) as marker:
            marker.add_marker(Marker(time.time(), time.monotonic(), "mb1 maintenance start"))
        watch.add_result(plain_result(2.0))
        assert [m.text for m in watch.markers()] == ["mb1 maintenance start"]
        assert watch.result_count() == 2


def test_load_runs_and_disconnects_round_trip_and_a_v1_store_gains_the_tables(tmp_path: Path) -> None:
    """A load run and its disconnect records come back as stored; a version-1 store is migrated to hold them."""
    from casprobe.model import LoadDisconnect, LoadRun, RequestStat

    path = tmp_path / "run.db"
    with RunStore.create(path, run_info()) as store:
        run = LoadRun(
            10.0,
            70.0,
            "locust 2.47.0",
            (("namespace", 7), ("mb1", 3)),
            (RequestStat("MAPI", "Execute", 900, 12, 4.5, 20.0, 310.0), RequestStat("MAPI", "PING", 5, 0)),
            '{"users": 10}',
        )
        records = [
            LoadDisconnect("mb1", "outlook-3", "outlook", "mb1.lab.test", 20.0, None, 40, ("connect", "timeout")),
            LoadDisconnect("namespace", "outlook-1", "outlook", "outlook.lab.test", 21.0, 23.5, 2, ("protocol",), "x"),
        ]
        ident = store.add_load_run(run, records)
        assert ident == 1
    with RunStore.open(path) as store:
        (back,) = store.load_runs()
        assert back == LoadRun(run.started_at, run.ended_at, run.source, run.cohorts, run.stats, run.settings, id=1)
        got = store.load_disconnects(ident)
        assert got == sorted(records, key=lambda d: (d.cohort, d.started_at))
        assert (got[0].duration(70.0), got[1].duration(70.0)) == (50.0, 2.5)
        assert store.load_disconnects(2) == []
    bad = LoadDisconnect("mb1", "u", "outlook", "n", 5.0, 4.0, 1, ())
    with RunStore.create(tmp_path / "b.db", run_info()) as store, pytest.raises(StoreError, match="end before"):
        store.add_load_run(run, [bad])
    old = tmp_path / "v1.db"
    RunStore.create(old, run_info()).close()
    conn = sqlite3.connect(old)
    conn.execute("DROP TABLE load_disconnects")
    conn.execute("DROP TABLE load_runs")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with RunStore.open(old) as store:  # read-only: upgraded in memory
        assert store.load_runs() == []
    with RunStore.open(old, readonly=False) as store:
        store.add_load_run(run, records)
        assert len(store.load_disconnects()) == 2
