"""The run store: one SQLite file per ``casprobe watch`` run, written as results arrive, read by analysis/report.

Built on the standard library's :mod:`sqlite3` and SQLite's write-ahead log (sqlite.org/wal.html):

- **Durability.** ``journal_mode=WAL`` with ``synchronous=NORMAL`` (sqlite.org/pragma.html#pragma_synchronous):
  each write is committed before its method returns, so a killed process (kill -9, a crash) loses nothing that
  was committed; only the writes in flight are lost. WAL at NORMAL does not fsync on each commit, so a power loss
  or an OS crash may lose the last commits (never the integrity of the file). That trade is what lets a watch
  commit every result on its own at thousands per second.
- **Concurrency.** One connection per :class:`RunStore`, used under a lock (``check_same_thread=False``), so
  several threads may write through one store. Other processes may read while a watch writes (WAL readers do not
  block the writer) and may add a marker (``casprobe mark``): writers wait for each other up to
  :data:`BUSY_TIMEOUT_S`.
- **Versions.** The layout, its version and the migrations live in :mod:`casprobe.store_schema`; rows ↔ model in
  :mod:`casprobe.store_codec`. An older store is upgraded in place when opened for writing and read through an
  upgraded in-memory copy when opened read-only; a newer store is refused, naming the version needed.

Every failure reaches the caller as :class:`StoreError` with a message for people: a missing file, a file that is
not SQLite, a SQLite file that is not a casprobe store, a newer schema, a damaged store.
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from casprobe import __version__
from casprobe.errors import CasprobeError
from casprobe.model import LabEventRecord, LoadDisconnect, LoadRun, Marker, ProbeResult, RunInfo
from casprobe.store_codec import (
    RESULT_COLUMNS,
    RUN_COLUMNS,
    StoreDataError,
    clean_text,
    decode_result,
    decode_run,
    encode_result,
    encode_run,
)
from casprobe.store_load import (
    DISCONNECT_COLUMNS,
    LOAD_RUN_COLUMNS,
    decode_disconnect,
    decode_load_run,
    encode_disconnect,
    encode_load_run,
)
from casprobe.store_schema import FORMAT, MIGRATIONS, SCHEMA, SCHEMA_VERSION

__all__ = ["BUSY_TIMEOUT_S", "RunStore", "StoreError"]

_log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 10.0
_PAGE = 500

_INSERT_RESULT = f"INSERT INTO results ({', '.join(RESULT_COLUMNS)}) VALUES ({', '.join('?' * len(RESULT_COLUMNS))})"
_SELECT_RESULTS = f"SELECT id, started_mono, {', '.join(RESULT_COLUMNS)} FROM results"
_INSERT_RUN = f"INSERT INTO run (id, {', '.join(RUN_COLUMNS)}) VALUES (1, {', '.join('?' * len(RUN_COLUMNS))})"


class StoreError(CasprobeError):
    """A run store cannot be created, opened, read or written; the message says which file and why."""


def _connect(target: str, *, uri: bool) -> sqlite3.Connection:
    return sqlite3.connect(target, uri=uri, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)


def _explain(path: Path, exc: sqlite3.Error, doing: str) -> StoreError:
    text = str(exc)
    if "not a database" in text:
        return StoreError(f"{path}: not a SQLite database, so not a casprobe run store")
    if "malformed" in text or (isinstance(exc, sqlite3.DatabaseError) and "corrupt" in text):
        return StoreError(f"{path}: the run store is damaged ({text}) while trying to {doing}")
    if "locked" in text or "busy" in text:
        return StoreError(f"{path}: another process held the store's lock for over {BUSY_TIMEOUT_S:g} s ({doing})")
    if "readonly" in text:
        return StoreError(f"{path}: cannot {doing}: the file or its folder is read-only")
    if "unable to open" in text:
        return StoreError(f"{path}: cannot open the file ({text})")
    return StoreError(f"{path}: cannot {doing}: {text}")


def _read_meta(conn: sqlite3.Connection, path: Path) -> dict[str, str]:
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            what = "an empty SQLite database" if not tables else "a SQLite database"
            raise StoreError(f"{path}: {what}, but not a casprobe run store (no meta table)")
        meta = {str(key): str(value) for key, value in conn.execute("SELECT key, value FROM meta")}
    except sqlite3.Error as exc:
        raise _explain(path, exc, "read its meta table") from None
    if meta.get("format") != FORMAT:
        raise StoreError(f"{path}: a SQLite database, but not a casprobe run store (meta format is not {FORMAT})")
    try:
        int(meta["schema_version"])
    except (KeyError, ValueError):
        raise StoreError(f"{path}: damaged run store: no valid schema_version in its meta table") from None
    return meta


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Upgrade the store behind ``conn`` to :data:`SCHEMA_VERSION` in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = start = int(_read_meta(conn, path)["schema_version"])  # again, under the write lock
        while version < SCHEMA_VERSION:
            if version not in MIGRATIONS:
                raise StoreError(f"{path}: schema version {version} is too old to upgrade")
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            version += 1
        if version != start:
            conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("schema_version", str(version)), ("migrated_from", str(start)), ("migrated_by", __version__)],
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if version != start:
        _log.info("%s: run store upgraded from schema version %d to %d", path, start, version)


class RunStore:
    """One run's store. Use :meth:`create` (a new run) or :meth:`open` (an existing one), then close it."""

    SCHEMA_VERSION: ClassVar[int] = SCHEMA_VERSION

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool, meta: dict[str, str]) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()
        self.path = path
        self.readonly = readonly
        self.meta: dict[str, str] = dict(meta)

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r}, readonly={self.readonly})"

    # --- opening ---------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, run: RunInfo) -> RunStore:
        """Create a store for ``run`` at ``path``; refuses a file that exists and is not empty."""
        path = Path(path)
        try:
            row = encode_run(run)
        except StoreDataError as exc:
            raise StoreError(f"{path}: {exc}") from None
        if path.is_dir():
            raise StoreError(f"{path}: is a folder, not a run store file")
        if path.exists() and path.stat().st_size > 0:
            raise StoreError(f"{path}: exists and is not empty: refusing to overwrite it (choose another file)")
        if not path.parent.is_dir():
            raise StoreError(f"{path.parent}: no such folder")
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise StoreError(f"{wal}: a write-ahead log of an earlier store is in the way: move it away first")
        meta = {
            "format": FORMAT,
            "schema_version": str(SCHEMA_VERSION),
            "created_by": __version__,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        try:
            conn = _connect(str(path), uri=False)
        except sqlite3.Error as exc:
            raise _explain(path, exc, "create the store") from None
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: this filesystem does not support SQLite's write-ahead log ({mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN EXCLUSIVE")
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(f"{path}: another process created a database there meanwhile")
            for statement in SCHEMA:
                conn.execute(statement)
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(meta.items()))
            conn.execute(_INSERT_RUN, row)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise _explain(path, exc, "create the store") from None
            raise
        return cls(conn, path, readonly=False, meta=meta)

    @classmethod
    def open(cls, path: Path, *, readonly: bool = True) -> RunStore:
        """Open an existing store; with ``readonly=False`` an older schema is upgraded in place."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"{path}: no such file (a run store is made by casprobe watch --store)")
        if path.is_dir():
            raise StoreError(f"{path}: is a folder, not a run store file")
        uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rw'}"
        try:
            conn = _connect(uri, uri=True)
        except sqlite3.Error as exc:
            raise _explain(path, exc, "open the store") from None
        try:
            meta = _read_meta(conn, path)
            version = int(meta["schema_version"])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: run store schema version {version} is newer than this casprobe ({__version__}) "
                    f"reads (version {SCHEMA_VERSION}); it was created by casprobe {meta.get('created_by', '?')}: "
                    f"use that casprobe version or later"
                )
            if version < SCHEMA_VERSION:
                if readonly:
                    conn = cls._upgraded_copy(conn, path)
                else:
                    _migrate(conn, path)
                meta = _read_meta(conn, path)
            if not readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise _explain(path, exc, "open the store") from None
            raise
        return cls(conn, path, readonly=readonly, meta=meta)

    @staticmethod
    def _upgraded_copy(conn: sqlite3.Connection, path: Path) -> sqlite3.Connection:
        """An in-memory copy of an older read-only store, upgraded: the file is left as it is."""
        memory = _connect(":memory:", uri=False)
        try:
            conn.backup(memory)
            conn.close()
            _migrate(memory, path)
        except BaseException:
            memory.close()
            raise
        return memory

    # --- plumbing --------------------------------------------------------------------------------------------

    @contextmanager
    def _use(self, doing: str, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with sqlite3 errors turned into StoreError."""
        if write and self.readonly:
            raise StoreError(f"{self.path}: cannot {doing}: the store was opened read-only")
        with self._lock:
            if self._conn is None:
                raise StoreError(f"{self.path}: cannot {doing}: the store is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise _explain(self.path, exc, doing) from None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------------------------

    def add_result(self, result: ProbeResult) -> None:
        """Store ``result``; it is committed when this returns."""
        try:
            row = encode_result(result)
        except StoreDataError as exc:
            raise StoreError(f"{self.path}: cannot store a {result.probe} result: {exc}") from None
        with self._use("write a result", write=True) as conn:
            conn.execute(_INSERT_RESULT, row)

    def add_marker(self, marker: Marker) -> None:
        """Store ``marker``; it is committed when this returns."""
        with self._use("write a marker", write=True) as conn:
            conn.execute(
                "INSERT INTO markers (wall, mono, text, source) VALUES (?, ?, ?, ?)",
                (marker.wall, marker.mono, clean_text(marker.text), clean_text(marker.source)),
            )

    def add_lab_events(self, events: Iterable[LabEventRecord]) -> int:
        """Store the events whose ``seq`` is not stored yet (one transaction); returns how many were new."""
        rows = [(e.seq, e.wall, e.mono, clean_text(e.kind), clean_text(e.data)) for e in events]
        if not rows:
            return 0
        with self._use("write lab events", write=True) as conn:
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT OR IGNORE INTO lab_events (seq, wall, mono, kind, data) VALUES (?, ?, ?, ?, ?)", rows
            )
            conn.execute("COMMIT")
            return conn.total_changes - before

    def add_load_run(self, run: LoadRun, disconnects: Iterable[LoadDisconnect]) -> int:
        """Store a load run and its disconnect records in one transaction; returns the run's id."""
        try:
            row = encode_load_run(run)
            rows = [encode_disconnect(d) for d in disconnects]
        except StoreDataError as exc:
            raise StoreError(f"{self.path}: cannot store the load run: {exc}") from None
        with self._use("write a load run", write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            cursor = conn.execute(
                f"INSERT INTO load_runs ({', '.join(LOAD_RUN_COLUMNS[1:])}) VALUES (?,?,?,?,?,?)", row
            )
            ident = int(cursor.lastrowid or 0)
            columns = ", ".join(("load_run", *DISCONNECT_COLUMNS))
            marks = ", ".join("?" * (len(DISCONNECT_COLUMNS) + 1))
            conn.executemany(f"INSERT INTO load_disconnects ({columns}) VALUES ({marks})", [(ident, *r) for r in rows])
            conn.execute("COMMIT")
        return ident

    def finish(self, ended_at: float) -> None:
        """Record the end of the run (``time.time()``)."""
        with self._use("record the end of the run", write=True) as conn:
            conn.execute("UPDATE run SET ended_at = ? WHERE id = 1", (ended_at,))

    # --- reading ---------------------------------------------------------------------------------------------

    def run_info(self) -> RunInfo:
        """The run as it was recorded (``ended_at`` None for a run that did not end cleanly)."""
        with self._use("read the run") as conn:
            row = conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM run WHERE id = 1").fetchone()
        if row is None:
            raise StoreError(f"{self.path}: damaged run store: no run row")
        try:
            return decode_run(row)
        except StoreDataError as exc:
            raise StoreError(f"{self.path}: damaged run row: {exc}") from None

    def results(self, *, target: str | None = None, probe: str | None = None) -> Iterator[ProbeResult]:
        """The results, ordered by ``started_mono`` (then by insertion), optionally of one target name / probe.

        Read page by page, so a long run is never held in memory and writers are not held up; results written
        while iterating may or may not be seen.
        """
        conditions, params = ["(started_mono, id) > (?, ?)"], []
        if target is not None:
            conditions.append("target_name = ?")
            params.append(target)
        if probe is not None:
            conditions.append("probe = ?")
            params.append(probe)
        query = f"{_SELECT_RESULTS} WHERE {' AND '.join(conditions)} ORDER BY started_mono, id LIMIT {_PAGE}"
        after: tuple[float, int] = (float("-inf"), 0)
        while True:
            with self._use("read results") as conn:
                rows = conn.execute(query, (*after, *params)).fetchall()
            for row in rows:
                yield self._decode(row)
            if len(rows) < _PAGE:
                return
            after = (rows[-1][1], rows[-1][0])

    def _decode(self, row: Sequence[Any]) -> ProbeResult:
        try:
            return decode_result(row[2:])
        except StoreDataError as exc:
            raise StoreError(f"{self.path}: damaged result row {row[0]}: {exc}") from None

    def result_count(self) -> int:
        """How many results the store holds."""
        with self._use("count results") as conn:
            return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])

    def markers(self) -> list[Marker]:
        """The markers, in monotonic order."""
        with self._use("read markers") as conn:
            rows = conn.execute("SELECT wall, mono, text, source FROM markers ORDER BY mono, id").fetchall()
        return [Marker(wall=r[0], mono=r[1], text=r[2], source=r[3]) for r in rows]

    def lab_events(self) -> list[LabEventRecord]:
        """The lab's events, in their sequence order."""
        with self._use("read lab events") as conn:
            rows = conn.execute("SELECT seq, wall, mono, kind, data FROM lab_events ORDER BY seq").fetchall()
        return [LabEventRecord(seq=r[0], wall=r[1], mono=r[2], kind=r[3], data=r[4]) for r in rows]

    def load_runs(self) -> list[LoadRun]:
        """The load runs, oldest first."""
        with self._use("read load runs") as conn:
            rows = conn.execute(f"SELECT {', '.join(LOAD_RUN_COLUMNS)} FROM load_runs ORDER BY id").fetchall()
        try:
            return [decode_load_run(r) for r in rows]
        except StoreDataError as exc:
            raise StoreError(f"{self.path}: damaged load run: {exc}") from None

    def load_disconnects(self, load_run: int | None = None) -> list[LoadDisconnect]:
        """The disconnect records of one load run (every run's when None), by cohort then start."""
        query = f"SELECT {', '.join(DISCONNECT_COLUMNS)} FROM load_disconnects"
        params: tuple[int, ...] = ()
        if load_run is not None:
            query, params = query + " WHERE load_run = ?", (load_run,)
        with self._use("read load disconnects") as conn:
            rows = conn.execute(query + " ORDER BY load_run, cohort, started_at, id", params).fetchall()
        try:
            return [decode_disconnect(r) for r in rows]
        except StoreDataError as exc:
            raise StoreError(f"{self.path}: damaged disconnect record: {exc}") from None

    def integrity_check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check``: ``["ok"]`` for a sound file, else what is wrong."""
        with self._use("check the store's integrity") as conn:
            return [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
