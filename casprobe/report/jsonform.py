"""The report as JSON (``casprobe report --format json``): the same data as the HTML, versioned.

``{"format": "casprobe.report", "version": 1, "analysis": <RunAnalysis.to_json()>, ...}``: the analysis document
exactly as ``casprobe analyze --format json`` writes it, plus what the report adds (verdicts, timeline spans,
marks, certificates, authentication, settings, load runs with their cohorts' figures, the baseline comparison).
Times named ``*_t`` are seconds from the run's start; walls are ``time.time()`` values. Non-finite numbers
become null.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from casprobe.exporters.json import run_object
from casprobe.report.data import ReportData

__all__ = ["JSON_FORMAT", "JSON_VERSION", "report_json"]

JSON_FORMAT = "casprobe.report"
JSON_VERSION = 1


def _plain(value: Any) -> Any:
    """Dataclasses, tuples, enums and floats as JSON-ready data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def report_json(data: ReportData) -> dict[str, Any]:
    """The report's data as plain JSON data."""
    baseline = None
    if data.baseline is not None:
        b = data.baseline
        baseline = {
            "source": b.source,
            "run": run_object(b.run),
            "results": b.results,
            "deltas": [{**_plain(d), "diff": _plain(d.diff)} for d in b.deltas],
        }
    return {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "source": data.source,
        "generated_at": _plain(data.generated_at),
        "finished": data.finished,
        "start_wall": _plain(data.start_wall),
        "end_wall": _plain(data.end_wall),
        "notes": list(data.notes),
        "verdicts": _plain(data.verdicts),
        "timeline": _plain(data.timeline),
        "marks": _plain(data.marks),
        "certificates": _plain(data.certificates),
        "auth": _plain(data.auth),
        "settings": [list(pair) for pair in data.settings],
        "load": [
            {
                "run": _plain(section.run),
                "disconnects": section.disconnects,
                "start_t": _plain(section.start_t),
                "end_t": _plain(section.end_t),
                "cohorts": [{**_plain(c), "mean_per_user_s": _plain(c.mean_per_user_s)} for c in section.cohorts],
            }
            for section in data.load
        ],
        "baseline": baseline,
        "analysis": data.analysis.to_json(),
    }
