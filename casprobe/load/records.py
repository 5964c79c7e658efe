"""A load run's records as a JSON Lines file, and their way into the run store.

The load tool's coordinating process (Locust's master, or its only process) appends one JSON object per line as
things happen, so a killed run keeps what it had::

    {"type": "run", "started_at": …, "source": "locust 2.47.0", "settings": {…}}        once, first
    {"type": "user", "cohort": "mb1", "user": "w1-outlook-3", "client": "outlook", "name": "mb1.lab.test"}
    {"type": "disconnect", "cohort": …, "user": …, "client": …, "name": …, "started_at": …, "ended_at": …|null,
     "failures": n, "error_classes": […], "detail": "…"}
    {"type": "tally", "cohort": …, "user": …, "requests": n, "failures": n}                 when a user stops
    {"type": "end", "ended_at": …}                                                           once, last

:func:`read_records` turns a file back into a :class:`~casprobe.model.LoadRun` (cohort sizes from the ``user``
lines) and its :class:`~casprobe.model.LoadDisconnect` records; a line it cannot read is counted and skipped, never
fatal. :func:`read_locust_json` reads the request figures from Locust's ``--json-file`` (complete: written when
Locust stops), :func:`read_locust_stats` from its ``<prefix>_stats.csv`` (written every second, so the last
second, and the disconnects closed when the load stops, can be missing from it).
"""

from __future__ import annotations

import csv
import json
import math
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from casprobe.errors import ConfigError
from casprobe.model import LoadDisconnect, LoadRun, RequestStat

__all__ = [
    "LoadRecords",
    "RecordWriter",
    "collect",
    "disconnect_record",
    "parse_disconnect",
    "read_locust_json",
    "read_locust_stats",
    "read_records",
]

_MAX_LINE = 64 * 1024


def disconnect_record(record: LoadDisconnect) -> dict[str, Any]:
    """The JSON object of a disconnect line."""
    return {
        "type": "disconnect",
        "cohort": record.cohort,
        "user": record.user,
        "client": record.client,
        "name": record.name,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "failures": record.failures,
        "error_classes": list(record.error_classes),
        "detail": record.detail,
    }


class RecordWriter:
    """Appends record lines to a file, flushed line by line (thread- and greenlet-safe: one writer, one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._file: IO[str] | None = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot write the load records to {path}: {exc.strerror or exc}") from None

    def write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False)
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


@dataclass(frozen=True, slots=True)
class LoadRecords:
    """What a records file held: the run, its disconnects, per-cohort request tallies, lines skipped."""

    run: LoadRun
    disconnects: tuple[LoadDisconnect, ...]
    requests: Mapping[str, int]
    failures: Mapping[str, int]
    skipped: int


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("not a finite number")
    return float(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not text")
    return value[:4096]


def parse_disconnect(obj: Mapping[str, Any]) -> LoadDisconnect:
    """A disconnect line's object back as a record (ValueError/KeyError/TypeError when it is not one)."""
    ended = obj.get("ended_at")
    classes = obj.get("error_classes", [])
    if not isinstance(classes, list):
        raise ValueError("error_classes is not a list")
    failures = obj.get("failures", 0)
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        raise ValueError("failures is not a count")
    started = _number(obj["started_at"])
    end = None if ended is None else max(started, _number(ended))
    return LoadDisconnect(
        cohort=_text(obj["cohort"]),
        user=_text(obj["user"]),
        client=_text(obj.get("client", "outlook")),
        name=_text(obj.get("name", "")),
        started_at=started,
        ended_at=end,
        failures=failures,
        error_classes=tuple(_text(c) for c in classes[:32]),
        detail=_text(obj.get("detail", "")),
    )


def collect(objects: Iterable[Any], *, stats: tuple[RequestStat, ...] = (), skipped: int = 0) -> LoadRecords:
    """Turn record objects (decoded lines) into a :class:`LoadRecords`; objects it cannot read are skipped."""
    started: float | None = None
    ended: float | None = None
    last_seen: float | None = None
    source, settings = "load", "{}"
    users: dict[str, set[str]] = {}
    disconnects: list[LoadDisconnect] = []
    requests: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for obj in objects:
        try:
            if not isinstance(obj, dict):
                raise ValueError("not an object")
            kind = obj.get("type")
            if kind == "run":
                started = _number(obj["started_at"])
                source = _text(obj.get("source", source))
                settings = json.dumps(obj.get("settings", {}), allow_nan=False)
            elif kind == "end":
                ended = _number(obj["ended_at"])
            elif kind == "user":
                users.setdefault(_text(obj["cohort"]), set()).add(_text(obj["user"]))
            elif kind == "disconnect":
                record = parse_disconnect(obj)
                disconnects.append(record)
                last_seen = max(last_seen or 0.0, record.ended_at or record.started_at)
            elif kind == "tally":
                cohort = _text(obj["cohort"])
                requests[cohort] += int(_number(obj.get("requests", 0)))
                failures[cohort] += int(_number(obj.get("failures", 0)))
            else:
                raise ValueError(f"unknown type {kind!r}")
        except (ValueError, KeyError, TypeError):
            skipped += 1
    if started is None:
        raise ConfigError("not a casprobe load records file (no run line)")
    if ended is None:  # a run that was killed: its last record is the best end there is
        ended = max(started, last_seen or started)
    cohorts = tuple(sorted(((c, len(u)) for c, u in users.items()), key=lambda p: (p[0] != "namespace", p[0])))
    run = LoadRun(started, max(started, ended), source, cohorts, stats, settings)
    return LoadRecords(run, tuple(disconnects), dict(requests), dict(failures), skipped)


def read_records(path: Path, *, stats: tuple[RequestStat, ...] = ()) -> LoadRecords:
    """Read a records file (see the module docstring); a :class:`ConfigError` when it is unusable as a whole."""
    objects: list[Any] = []
    skipped = 0
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if len(line) > _MAX_LINE:
                    skipped += 1
                    continue
                try:
                    objects.append(json.loads(line))
                except ValueError:
                    skipped += 1
    except OSError as exc:
        raise ConfigError(f"cannot read the load records {path}: {exc.strerror or exc}") from None
    try:
        return collect(objects, stats=stats, skipped=skipped)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _ms(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "", "N/A") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _histogram_rank(histogram: Mapping[str, Any], share: float) -> float | None:
    """The response time (ms) at ``share`` of Locust's histogram {rounded ms: count} (nearest rank)."""
    points = sorted((float(k), int(v)) for k, v in histogram.items() if int(v) > 0)
    total = sum(n for _, n in points)
    if not total:
        return None
    rank = max(1, math.ceil(share * total))
    seen = 0
    for value, count in points:
        seen += count
        if seen >= rank:
            return value
    return points[-1][0]


def read_locust_json(path: Path) -> tuple[RequestStat, ...]:
    """The per-request-type figures of Locust's ``--json-file`` (written once, complete, when Locust stops)."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read Locust's statistics {path}: {exc}") from None
    rows = []
    for entry in entries if isinstance(entries, list) else []:
        try:
            histogram = entry.get("response_times") or {}
            top = entry.get("max_response_time")
            rows.append(
                RequestStat(
                    kind=_text(entry.get("method") or ""),
                    name=_text(entry["name"]),
                    count=int(entry.get("num_requests", 0)),
                    failures=int(entry.get("num_failures", 0)),
                    median_ms=_histogram_rank(histogram, 0.5),
                    p95_ms=_histogram_rank(histogram, 0.95),
                    max_ms=None if top is None else _number(top),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return tuple(rows)


def read_locust_stats(path: Path) -> tuple[RequestStat, ...]:
    """The per-request-type rows of Locust's ``<prefix>_stats.csv`` (the Aggregated row left out)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"cannot read Locust's statistics {path}: {exc.strerror or exc}") from None
    rows = []
    for row in csv.DictReader(text.splitlines()):
        name = (row.get("Name") or "").strip()
        if not name or name == "Aggregated":
            continue
        try:
            count, failed = int(row.get("Request Count") or 0), int(row.get("Failure Count") or 0)
        except ValueError:
            continue
        rows.append(
            RequestStat(
                kind=(row.get("Type") or "").strip(),
                name=name,
                count=count,
                failures=failed,
                median_ms=_ms(row.get("Median Response Time")),
                p95_ms=_ms(row.get("95%")),
                max_ms=_ms(row.get("Max Response Time")),
            )
        )
    return tuple(rows)
