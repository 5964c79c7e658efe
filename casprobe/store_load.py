"""Load runs in the run store: Locust's per-cohort disconnect records and request figures (schema version 2).

Layout (added by version 2, see :mod:`casprobe.store_schema`)::

    load_runs(id, started_at, ended_at, source, cohorts JSON [[cohort, users]…], stats JSON [RequestStat…],
              settings JSON)
    load_disconnects(id, load_run → load_runs.id, cohort, user, client, name, started_at, ended_at NULL,
                     failures, error_classes JSON, detail)

A store holds any number of load runs (a rehearsal has one; an imported re-run adds another). Values are checked
on the way in and on the way out, like the results' (:class:`~casprobe.store_codec.StoreDataError`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from casprobe.model import LoadDisconnect, LoadRun, RequestStat
from casprobe.store_codec import StoreDataError, clean_text

__all__ = [
    "DISCONNECT_COLUMNS",
    "LOAD_RUN_COLUMNS",
    "LOAD_TABLES",
    "decode_disconnect",
    "decode_load_run",
    "encode_disconnect",
    "encode_load_run",
]

LOAD_TABLES: tuple[str, ...] = (
    """CREATE TABLE load_runs (
        id INTEGER PRIMARY KEY,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        source TEXT NOT NULL,
        cohorts TEXT NOT NULL,
        stats TEXT NOT NULL,
        settings TEXT NOT NULL
    )""",
    """CREATE TABLE load_disconnects (
        id INTEGER PRIMARY KEY,
        load_run INTEGER NOT NULL REFERENCES load_runs (id),
        cohort TEXT NOT NULL,
        user TEXT NOT NULL,
        client TEXT NOT NULL,
        name TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        failures INTEGER NOT NULL,
        error_classes TEXT NOT NULL,
        detail TEXT NOT NULL
    )""",
    "CREATE INDEX load_disconnects_run_cohort ON load_disconnects (load_run, cohort, started_at)",
)

LOAD_RUN_COLUMNS = ("id", "started_at", "ended_at", "source", "cohorts", "stats", "settings")
DISCONNECT_COLUMNS = (
    "cohort",
    "user",
    "client",
    "name",
    "started_at",
    "ended_at",
    "failures",
    "error_classes",
    "detail",
)
_MAX_TEXT = 4096


def _time(value: Any, what: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StoreDataError(f"{what} must be a finite number, got {value!r:.40}")
    return float(value)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise StoreDataError(f"{what} must be text, got {type(value).__name__}")
    return clean_text(value[:_MAX_TEXT]) or ""


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise StoreDataError(f"{what} must be a count, got {value!r:.40}")
    return value


def _ms(value: Any, what: str) -> float | None:
    return None if value is None else _time(value, what)


def _json(text: Any, what: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StoreDataError(f"{what} is not JSON ({exc})") from None


def encode_load_run(run: LoadRun) -> tuple[Any, ...]:
    """The row of ``run`` (without its id), checked."""
    started, ended = _time(run.started_at, "started_at"), _time(run.ended_at, "ended_at")
    cohorts = [[_text(c, "cohort"), _count(n, "cohort users")] for c, n in run.cohorts]
    stats = [
        [
            _text(s.kind, "request type"),
            _text(s.name, "request name"),
            _count(s.count, "request count"),
            _count(s.failures, "failure count"),
            _ms(s.median_ms, "median"),
            _ms(s.p95_ms, "p95"),
            _ms(s.max_ms, "max"),
        ]
        for s in run.stats
    ]
    _json(run.settings, "settings")
    return (started, ended, _text(run.source, "source"), json.dumps(cohorts), json.dumps(stats), run.settings)


def decode_load_run(row: Sequence[Any]) -> LoadRun:
    """A :class:`LoadRun` from a row of :data:`LOAD_RUN_COLUMNS`."""
    ident, started, ended, source, cohorts_text, stats_text, settings = row
    cohorts = _json(cohorts_text, "cohorts")
    stats = _json(stats_text, "stats")
    if not isinstance(cohorts, list) or not isinstance(stats, list):
        raise StoreDataError("cohorts and stats must be lists")
    try:
        pairs = tuple((_text(c, "cohort"), _count(n, "cohort users")) for c, n in cohorts)
        figures = tuple(
            RequestStat(
                _text(k, "request type"),
                _text(n, "request name"),
                _count(c, "request count"),
                _count(f, "failure count"),
                _ms(med, "median"),
                _ms(p95, "p95"),
                _ms(top, "max"),
            )
            for k, n, c, f, med, p95, top in stats
        )
    except (TypeError, ValueError) as exc:
        raise StoreDataError(f"malformed cohorts or stats ({exc})") from None
    return LoadRun(
        started_at=_time(started, "started_at") or 0.0,
        ended_at=_time(ended, "ended_at") or 0.0,
        source=_text(source, "source"),
        cohorts=pairs,
        stats=figures,
        settings=_text(settings, "settings"),
        id=_count(ident, "id"),
    )


def encode_disconnect(record: LoadDisconnect) -> tuple[Any, ...]:
    """The row of ``record`` (in :data:`DISCONNECT_COLUMNS` order), checked."""
    started = _time(record.started_at, "started_at")
    ended = _time(record.ended_at, "ended_at", optional=True)
    if started is not None and ended is not None and ended < started:
        raise StoreDataError("a disconnect cannot end before it starts")
    classes = [_text(c, "error class") for c in record.error_classes]
    return (
        _text(record.cohort, "cohort"),
        _text(record.user, "user"),
        _text(record.client, "client"),
        _text(record.name, "name"),
        started,
        ended,
        _count(record.failures, "failures"),
        json.dumps(classes),
        _text(record.detail, "detail"),
    )


def decode_disconnect(row: Sequence[Any]) -> LoadDisconnect:
    """A :class:`LoadDisconnect` from a row of :data:`DISCONNECT_COLUMNS`."""
    cohort, user, client, name, started, ended, failures, classes_text, detail = row
    classes = _json(classes_text, "error_classes")
    if not isinstance(classes, list):
        raise StoreDataError("error_classes must be a list")
    return LoadDisconnect(
        cohort=_text(cohort, "cohort"),
        user=_text(user, "user"),
        client=_text(client, "client"),
        name=_text(name, "name"),
        started_at=_time(started, "started_at") or 0.0,
        ended_at=_time(ended, "ended_at", optional=True),
        failures=_count(failures, "failures"),
        error_classes=tuple(_text(c, "error class") for c in classes),
        detail=_text(detail, "detail"),
    )
