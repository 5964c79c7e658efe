"""The run store's SQLite layout, its version, and the migrations from older versions.

Follows SQLite's own rules for schema changes (sqlite.org/lang_altertable.html: ``ADD COLUMN`` appends a column
with a constant default; other changes rebuild the table) and keeps the version in a ``meta`` table rather than in
``PRAGMA user_version``, so that a file that merely happens to be SQLite is told apart from a casprobe store by its
``format`` row.

Layout (version 1)::

    meta(key PRIMARY KEY, value)          format = casprobe-run-store, schema_version, created_by (casprobe
                                          version), created_at (ISO 8601 UTC); after a migration also
                                          migrated_from and migrated_by
    run(id = 1, run_id, started_at, ended_at NULL, casprobe_version, interval_s, targets JSON, probes JSON,
        tls_verification, settings JSON, host)
    results(id, target_name, target_label, target_kind, probe, success, severity, error_class, started_at,
            started_mono, duration, fe_server, be_server, address, detail,
            phases JSON, tls JSON, steps JSON, facts JSON, auth JSON, target JSON)
    markers(id, wall, mono, text, source)
    lab_events(seq PRIMARY KEY, wall, mono, kind, data)
    load_runs, load_disconnects             (version 2: see casprobe.store_load)

Version history:

- 0: the layout before results carried a monotonic start: no ``results.started_mono`` column (results read back
  with ``started_mono`` 0.0, "unknown" in the model, and keep their insertion order), no ``lab_events`` table,
  results indexed on (target_name, probe, started_at).
- 1: adds ``results.started_mono`` with its index and the ``lab_events`` table.
- 2: adds the load tables ``load_runs`` and ``load_disconnects`` (:mod:`casprobe.store_load`).

:data:`MIGRATIONS` maps a version n to the statements that turn an n store into an n + 1 store; the store runs
them in one transaction (in place when opened for writing, on an in-memory copy when opened read-only).
"""

from __future__ import annotations

from casprobe.store_load import LOAD_TABLES

__all__ = ["FORMAT", "MIGRATIONS", "SCHEMA", "SCHEMA_V0", "SCHEMA_VERSION"]

FORMAT = "casprobe-run-store"
SCHEMA_VERSION = 2

_RESULTS_COLUMNS = """
    id INTEGER PRIMARY KEY,
    target_name TEXT NOT NULL,
    target_label TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    probe TEXT NOT NULL,
    success INTEGER NOT NULL,
    severity INTEGER NOT NULL,
    error_class TEXT,
    started_at REAL NOT NULL,
    {started_mono}
    duration REAL NOT NULL,
    fe_server TEXT,
    be_server TEXT,
    address TEXT,
    detail TEXT NOT NULL,
    phases TEXT NOT NULL,
    tls TEXT,
    steps TEXT NOT NULL,
    facts TEXT NOT NULL,
    auth TEXT NOT NULL,
    target TEXT NOT NULL
"""

_COMMON = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE run (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        run_id TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        casprobe_version TEXT NOT NULL,
        interval_s REAL NOT NULL,
        targets TEXT NOT NULL,
        probes TEXT NOT NULL,
        tls_verification INTEGER NOT NULL,
        settings TEXT NOT NULL,
        host TEXT NOT NULL
    )""",
    """CREATE TABLE markers (
        id INTEGER PRIMARY KEY,
        wall REAL NOT NULL,
        mono REAL NOT NULL,
        text TEXT NOT NULL,
        source TEXT NOT NULL
    )""",
    "CREATE INDEX markers_mono ON markers (mono)",
)

_LAB_EVENTS = (
    """CREATE TABLE lab_events (
        seq INTEGER PRIMARY KEY,
        wall REAL NOT NULL,
        mono REAL NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL
    )""",
    "CREATE INDEX lab_events_mono ON lab_events (mono)",
)

_RESULT_INDEXES = (
    "CREATE INDEX results_target_probe_mono ON results (target_name, probe, started_mono)",
    "CREATE INDEX results_mono ON results (started_mono)",
)

SCHEMA: tuple[str, ...] = (
    *_COMMON,
    f"CREATE TABLE results ({_RESULTS_COLUMNS.format(started_mono='started_mono REAL NOT NULL,')})",
    *_RESULT_INDEXES,
    *_LAB_EVENTS,
    *LOAD_TABLES,
)
"""The statements that create an empty version-:data:`SCHEMA_VERSION` store (the meta rows are added apart)."""

SCHEMA_V0: tuple[str, ...] = (
    *_COMMON,
    f"CREATE TABLE results ({_RESULTS_COLUMNS.format(started_mono='')})",
    "CREATE INDEX results_target_probe_started ON results (target_name, probe, started_at)",
)
"""Version 0's layout: what the migration starts from (and what tests build an old store with)."""

MIGRATIONS: dict[int, tuple[str, ...]] = {
    0: (
        "ALTER TABLE results ADD COLUMN started_mono REAL NOT NULL DEFAULT 0.0",
        "DROP INDEX IF EXISTS results_target_probe_started",
        *_RESULT_INDEXES,
        *_LAB_EVENTS,
    ),
    1: LOAD_TABLES,
}
"""Version n → the statements that make it version n + 1."""
