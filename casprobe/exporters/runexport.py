"""``casprobe export``: a run store as JSON Lines or CSV, for tools that do not read SQLite.

``jsonl`` (jsonlines.org: UTF-8, one JSON value per line, ``\\n`` separated): one object per line, each with a
``type`` field, in this order::

    {"type": "run", "store_schema_version", "store_created_by", "run_id", "started_at", "ended_at" (null for a
     run that did not end cleanly), "casprobe_version", "interval_s", "targets", "probes", "tls_verification",
     "settings" {…}, "host"}
    {"type": "result", …}      one per result, ordered by started_mono: every field of the ProbeResult as in
                               ``--format json`` of ``casprobe check`` (casprobe.exporters.json.result_object)
    {"type": "marker", "wall", "mono", "text", "source"}
    {"type": "lab_event", "seq", "wall", "mono", "kind", "data" {…}}   ("data" as text if it is not JSON)
    {"type": "load_run", "id", "started_at", "ended_at", "source", "cohorts" {cohort: clients}, "stats" […],
     "settings" {…}}                                    one per Locust load run (casprobe load, rehearse)
    {"type": "load_disconnect", "load_run", "cohort", "user", "client", "name", "started_at", "ended_at",
     "failures", "error_classes", "detail"}             each interval a simulated client could not work

``csv`` (RFC 4180, header row first): one row per result, ordered by started_mono, with the columns of
:data:`CSV_COLUMNS`::

    started          ISO 8601 UTC of started_at        started_at, started_mono   seconds (time / monotonic)
    target, label, kind, port, address                 the name probed, how reports name it, namespace|server,
                                                       its port, the address the probe connected to
    probe, success (1|0), severity (OK|WARNING|CRITICAL|UNKNOWN), error_class (empty on success)
    duration         the whole probe, seconds
    resolve, connect, tls, auth, first_byte, total     phase timings of the main request, seconds; empty when
                                                       the phase did not happen; auth: the auth legs' sum (to 1 ns)
    auth_legs        how many auth legs there were
    fe_server, be_server, detail                       who answered, who holds the mailbox, why it failed

Numbers are written with full precision (``repr``). Markers and lab events are not in the CSV (use jsonl). The
store never holds a secret (RunStore refuses settings that look like one), so neither does an export.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any, TextIO

from casprobe.exporters.json import result_object, run_object
from casprobe.load.records import disconnect_record
from casprobe.model import LoadRun, ProbeResult
from casprobe.store import RunStore

__all__ = ["CSV_COLUMNS", "FORMATS", "export_store", "export_store_to_file"]

FORMATS = ("jsonl", "csv")

CSV_COLUMNS = (
    "started",
    "started_at",
    "started_mono",
    "target",
    "label",
    "kind",
    "port",
    "address",
    "probe",
    "success",
    "severity",
    "error_class",
    "duration",
    "resolve",
    "connect",
    "tls",
    "auth",
    "first_byte",
    "total",
    "auth_legs",
    "fe_server",
    "be_server",
    "detail",
)


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True) + "\n"


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _jsonl(store: RunStore, out: TextIO) -> None:
    run = store.run_info()
    out.write(
        _line(
            {
                "type": "run",
                "store_schema_version": int(store.meta.get("schema_version", store.SCHEMA_VERSION)),
                "store_created_by": store.meta.get("created_by"),
                **run_object(run),
            }
        )
    )
    for result in store.results():
        out.write(_line({"type": "result", **result_object(result)}))
    for marker in store.markers():
        out.write(
            _line(
                {
                    "type": "marker",
                    "wall": marker.wall,
                    "mono": marker.mono,
                    "text": marker.text,
                    "source": marker.source,
                }
            )
        )
    for event in store.lab_events():
        record = {"type": "lab_event", "seq": event.seq, "wall": event.wall, "mono": event.mono, "kind": event.kind}
        out.write(_line({**record, "data": _json_or_text(event.data)}))
    for load in store.load_runs():
        out.write(_line(_load_run(load)))
        for interval in store.load_disconnects(load.id):
            out.write(_line({**disconnect_record(interval), "type": "load_disconnect", "load_run": load.id}))


def _load_run(load: LoadRun) -> dict[str, Any]:
    return {
        "type": "load_run",
        "id": load.id,
        "started_at": load.started_at,
        "ended_at": load.ended_at,
        "source": load.source,
        "cohorts": dict(load.cohorts),
        "stats": [dataclasses.asdict(stat) for stat in load.stats],
        "settings": _json_or_text(load.settings),
    }


def _num(value: float | int | None) -> str:
    return "" if value is None else repr(value)


def _csv_row(result: ProbeResult) -> list[str]:
    target, phases = result.target, result.phases
    started = dt.datetime.fromtimestamp(result.started_at, dt.UTC).isoformat(timespec="milliseconds")
    return [
        started if result.started_at else "",
        _num(result.started_at),
        _num(result.started_mono),
        target.name,
        target.display,
        str(target.kind.value),
        str(target.port),
        result.address or "",
        result.probe,
        "1" if result.success else "0",
        result.severity.name,
        "" if result.error_class is None else str(result.error_class.value),
        _num(result.duration),
        _num(phases.resolve),
        _num(phases.connect),
        _num(phases.tls),
        _num(round(sum(phases.auth), 9) if phases.auth else None),
        _num(phases.first_byte),
        _num(phases.total),
        str(len(phases.auth)),
        result.fe_server or "",
        result.be_server or "",
        result.detail,
    ]


def _csv(store: RunStore, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for result in store.results():
        writer.writerow(_csv_row(result))


def export_store(store: RunStore, fmt: str, out: TextIO) -> None:
    """Write ``store`` to ``out`` in format ``fmt`` (one of :data:`FORMATS`), streaming: a long run is never held
    in memory."""
    if fmt == "jsonl":
        _jsonl(store, out)
    elif fmt == "csv":
        _csv(store, out)
    else:
        raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")


def export_store_to_file(store: RunStore, fmt: str, path: Path) -> None:
    """:func:`export_store` into ``path`` atomically: a temporary file in the same folder, fsync, rename.

    The same steps as :func:`casprobe.exporters.write_atomic`, streamed rather than from one string, so that the
    export of a long run does not have to fit in memory; a failure leaves no file behind.
    """
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:  # line ends as written
            export_store(store, fmt, handle)
            handle.flush()
            os.fsync(handle.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
