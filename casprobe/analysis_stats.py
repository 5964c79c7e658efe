"""Error rates and latency percentiles per name × probe, over the whole run and per phase (before/during/after).

Percentiles use the **nearest-rank** method: for n sorted values, the p-th percentile is the value of rank
⌈p/100 · n⌉ (1-based), so it is always a latency that was actually measured, and p100 is the maximum. Latencies
are taken from **successful results only** (a failed probe's time is how long it took to fail, often a deadline,
and would mix two different things); the error rate counts every result.

Metrics: ``duration`` (the whole probe), and the phases of the probe's main request (model.PhaseTimings):
``resolve``, ``connect``, ``tls``, ``auth`` (the sum of the authentication legs), ``first_byte``, ``total``. A phase
that did not happen (a reused connection has no connect) is left out of that phase's sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from casprobe.analysis_outages import Row
from casprobe.analysis_phases import Phases
from casprobe.model import ProbeResult

__all__ = ["ALL", "METRICS", "Percentiles", "RowStats", "nearest_rank", "percentiles", "row_stats"]

#: The pseudo-phase of the whole run.
ALL = "all"
#: The latency metrics, in report order.
METRICS = ("duration", "resolve", "connect", "tls", "auth", "first_byte", "total")


def nearest_rank(ordered: Sequence[float], p: float) -> float:
    """The p-th percentile (0 < p ≤ 100) of an ascending, non-empty sequence by the nearest-rank method."""
    if not ordered:
        raise ValueError("no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile out of range: {p!r}")
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class Percentiles:
    """A latency sample summarised, in seconds.

    Attributes:
        n: how many values. p50, p90, p99: nearest-rank percentiles. max: the largest value.
    """

    n: int
    p50: float
    p90: float
    p99: float
    max: float


def percentiles(values: Iterable[float]) -> Percentiles | None:
    """Summarise a sample (non-finite values dropped); None when it is empty."""
    ordered = sorted(v for v in values if math.isfinite(v))
    if not ordered:
        return None
    return Percentiles(
        len(ordered), nearest_rank(ordered, 50), nearest_rank(ordered, 90), nearest_rank(ordered, 99), ordered[-1]
    )


@dataclass(frozen=True, slots=True)
class RowStats:
    """Counts and latencies of one name × probe over one phase of the run.

    Attributes:
        row: the name × probe. phase: ``all``, ``before``, ``during`` or ``after``.
        count: results whose start lies in the phase. failures: how many of them failed.
        latency: metric name → percentiles of the successful results (metrics without values left out).
    """

    row: Row
    phase: str
    count: int
    failures: int
    latency: tuple[tuple[str, Percentiles], ...] = ()

    @property
    def error_rate(self) -> float | None:
        """failures / count; None when the phase holds no result."""
        return self.failures / self.count if self.count else None

    def metric(self, name: str) -> Percentiles | None:
        return next((p for key, p in self.latency if key == name), None)


def _metric_values(result: ProbeResult) -> dict[str, float]:
    phases = result.phases
    values: dict[str, float | None] = {
        "duration": result.duration,
        "resolve": phases.resolve,
        "connect": phases.connect,
        "tls": phases.tls,
        "auth": sum(phases.auth) if phases.auth else None,
        "first_byte": phases.first_byte,
        "total": phases.total,
    }
    return {k: v for k, v in values.items() if v is not None}


def _stats(row: Row, phase: str, results: Sequence[ProbeResult]) -> RowStats:
    samples: dict[str, list[float]] = {name: [] for name in METRICS}
    failures = 0
    for result in results:
        if not result.success:
            failures += 1
            continue
        for name, value in _metric_values(result).items():
            samples[name].append(value)
    latency = tuple((name, p) for name in METRICS if (p := percentiles(samples[name])) is not None)
    return RowStats(row, phase, len(results), failures, latency)


def row_stats(rows: dict[Row, list[ProbeResult]], phases: Phases) -> tuple[RowStats, ...]:
    """For each row: the whole run (``all``), then each phase (``before``, ``during``, ``after``) when there are any."""
    out: list[RowStats] = []
    for row, results in rows.items():
        out.append(_stats(row, ALL, results))
        if not phases.windows:
            continue
        split: dict[str, list[ProbeResult]] = {"before": [], "during": [], "after": []}
        for result in results:
            phase = phases.phase_of(result.started_mono)
            if phase is not None:
                split[phase].append(result)
        out.extend(_stats(row, phase, split[phase]) for phase in ("before", "during", "after"))
    return tuple(out)
