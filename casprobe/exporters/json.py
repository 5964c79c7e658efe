"""``--format json``: one versioned document with the run's facts and every field of every result.

Schema (``schema_version`` 1)::

    {"schema_version": 1,
     "run": {"casprobe_version", "started", "finished" (ISO 8601 UTC), "duration_s",
             "tls_verification" (bool), "settings" {… no secrets …}, "notes" [str]},
     "summary": {"status": "OK|WARNING|CRITICAL|UNKNOWN", "exit_code", "results", "failed", "warnings"},
     "results": [ProbeResult as an object: every dataclass field, nested dataclasses as objects,
                 enums as their value (severity as its name), facts as [name, value] pairs,
                 plus "started" (ISO 8601) next to "started_at"]}

A consumer must ignore keys it does not know; a change that removes or redefines a key raises the version.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from typing import Any

from casprobe.exporters import CheckReport
from casprobe.model import ProbeResult, RunInfo, Severity

__all__ = ["SCHEMA_VERSION", "document", "render", "result_object", "run_object"]

SCHEMA_VERSION = 1


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="milliseconds")


def _plain(value: Any) -> Any:
    if isinstance(value, Severity):
        return value.name
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def run_object(run: RunInfo) -> dict[str, Any]:
    """Every field of a run's RunInfo as JSON-ready data; its settings as the JSON object they hold (the raw text
    if they somehow are not one, so that nothing is lost)."""
    try:
        settings: Any = json.loads(run.settings) if len(run.settings) < 1_000_000 else run.settings
    except (ValueError, RecursionError):
        settings = run.settings
    return {
        "run_id": run.run_id,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "casprobe_version": run.casprobe_version,
        "interval_s": run.interval_s,
        "targets": list(run.targets),
        "probes": list(run.probes),
        "tls_verification": run.tls_verification,
        "settings": settings if isinstance(settings, dict) else run.settings,
        "host": run.host,
    }


def result_object(result: ProbeResult) -> dict[str, Any]:
    """Every field of ``result`` as JSON-ready data."""
    out: dict[str, Any] = _plain(result)
    out["started"] = _iso(result.started_at) if result.started_at else None
    return out


def document(report: CheckReport) -> dict[str, Any]:
    results = report.results
    status = report.status
    return {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "casprobe_version": report.version,
            "started": _iso(report.started_at),
            "finished": _iso(report.finished_at),
            "duration_s": round(report.finished_at - report.started_at, 6),
            "tls_verification": report.tls_verification,
            "settings": _plain(dict(report.settings)),
            "notes": list(report.notes),
        },
        "summary": {
            "status": status.name,
            "exit_code": int(status),
            "results": len(results),
            "failed": sum(1 for r in results if not r.success),
            "warnings": sum(1 for r in results if r.severity is Severity.WARNING),
        },
        "results": [result_object(result) for result in results],
    }


def render(report: CheckReport) -> str:
    return json.dumps(document(report), indent=2, ensure_ascii=False) + "\n"
