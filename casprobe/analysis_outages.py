"""Outage windows of a run: per name × probe, from the first failed result to the first success after it.

Pure functions over :class:`~casprobe.model.ProbeResult` sequences (no I/O). The rules (issue 4, watch-brief.md):

- A *row* is one name × probe: ``(target.display, probe)`` (the target's label, else its name).
- Within a row, results are ordered by ``started_mono``. Ties (two results of a row that started at the same
  monotonic instant, which the watch schedule never produces but imported data may) are broken by
  ``started_at``, then **failures before successes**, then duration, error class and detail, so the answer never
  depends on the order of the input: a failure and a success at the same instant give an outage of zero length.
- An outage opens at the start of a failed result that follows a success (or opens the row) and closes at the
  start of the first successful result after it. A run that ends while a row is failing leaves the outage open
  (``end_mono`` / ``end_wall`` None).
- **A single failed probe between two successes is an outage** of one failure: its window runs from that probe's
  start to the next success's start (about one interval). It is what a user starting Outlook at that moment saw.
  Callers that want to ignore such blips pass ``min_failures=2`` (or more): outages with fewer failed results are
  dropped from the answer (the failures in them then lie in no outage).
- ``error_classes``: the classes of the failed results, most frequent first, ties in the order first seen; a failed
  result without a class counts as ``unknown``. ``first_detail``: the detail of the first failure.
- Results whose ``started_mono`` is not a finite number are skipped (they cannot be placed on the timeline).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from casprobe.model import Outage, ProbeResult, TargetKind

__all__ = [
    "UNKNOWN_CLASS",
    "AnalysisError",
    "Row",
    "group_rows",
    "order_key",
    "outages",
    "row_outages",
]

#: The error class reported for a failed result that carries none.
UNKNOWN_CLASS = "unknown"


class AnalysisError(ValueError):
    """An argument of an analysis function is out of range (an interval that is not a positive number…)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One name × probe of a run.

    Attributes:
        target: the target's display name (its label, ``namespace`` / ``mb1``, else its DNS name).
        probe: the probe name (``mapi``, ``mapi-session``…).
        kind: namespace or server (of the first result seen for that display name).
        name: the target's DNS name.
    """

    target: str
    probe: str
    kind: TargetKind
    name: str


def order_key(result: ProbeResult) -> tuple[float, float, bool, float, str, str]:
    """The total order of results within a row (see the module docstring for the tie rules)."""
    klass = result.error_class.value if result.error_class is not None else ""
    return (result.started_mono, result.started_at, result.success, result.duration, klass, result.detail)


def check_interval(interval_s: float) -> float:
    """Return ``interval_s`` if it is a positive finite number of seconds, else raise :class:`AnalysisError`."""
    if not isinstance(interval_s, int | float) or not math.isfinite(interval_s) or interval_s <= 0:
        raise AnalysisError(f"the interval must be a positive number of seconds, got {interval_s!r}")
    return float(interval_s)


def group_rows(results: Iterable[ProbeResult]) -> dict[Row, list[ProbeResult]]:
    """Results by row, each row sorted by :func:`order_key`; rows in the order first seen; unplaceable ones skipped."""
    kinds: dict[str, tuple[TargetKind, str]] = {}
    rows: dict[tuple[str, str], list[ProbeResult]] = {}
    for result in results:
        if not math.isfinite(result.started_mono):
            continue
        display = result.target.display
        kinds.setdefault(display, (result.target.kind, result.target.name))
        rows.setdefault((display, result.probe), []).append(result)
    out: dict[Row, list[ProbeResult]] = {}
    for (display, probe), row in rows.items():
        kind, name = kinds[display]
        row.sort(key=order_key)
        out[Row(display, probe, kind, name)] = row
    return out


def _classes(failed: Sequence[ProbeResult]) -> tuple[str, ...]:
    counts = Counter(r.error_class.value if r.error_class is not None else UNKNOWN_CLASS for r in failed)
    # Counter keeps first-seen order among equal counts, and sorted() is stable
    return tuple(name for name, _ in sorted(counts.items(), key=lambda item: -item[1]))


def _close(row: Row, failed: list[ProbeResult], end: ProbeResult | None) -> Outage:
    first = failed[0]
    return Outage(
        target=row.target,
        probe=row.probe,
        start_wall=first.started_at,
        start_mono=first.started_mono,
        end_wall=None if end is None else end.started_at,
        end_mono=None if end is None else end.started_mono,
        failures=len(failed),
        error_classes=_classes(failed),
        first_detail=first.detail,
    )


def row_outages(row: Row, ordered: Sequence[ProbeResult]) -> list[Outage]:
    """The outages of one row whose results are already in :func:`order_key` order."""
    found: list[Outage] = []
    failed: list[ProbeResult] = []
    for result in ordered:
        if not result.success:
            failed.append(result)
        elif failed:
            found.append(_close(row, failed, result))
            failed = []
    if failed:
        found.append(_close(row, failed, None))
    return found


def outages(results: Iterable[ProbeResult], *, interval_s: float, min_failures: int = 1) -> tuple[Outage, ...]:
    """Every outage of every row, ordered by start (then name, probe).

    Args:
        results: the run's results, in any order.
        interval_s: the run's schedule; checked (a positive number) so that a caller cannot pass a run's
            settings that make no sense; the windows themselves come from the results' own start times.
        min_failures: drop outages with fewer failed results than this (1 keeps every outage).
    """
    check_interval(interval_s)
    if not isinstance(min_failures, int) or min_failures < 1:
        raise AnalysisError(f"min_failures must be a whole number ≥ 1, got {min_failures!r}")
    found: list[Outage] = []
    for row, ordered in group_rows(results).items():
        found.extend(o for o in row_outages(row, ordered) if o.failures >= min_failures)
    found.sort(key=lambda o: (o.start_mono, o.target, o.probe))
    return tuple(found)
