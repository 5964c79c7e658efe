"""A run beside a baseline run (``casprobe report --baseline``): the same key figures side by side.

Both sides come from :func:`casprobe.analysis.analyze_run` of their own store, so each figure is the one the
analysis gives for that run; the difference is this run − the baseline. Figures (issue 6 / report brief):

- **disconnect**: per name × probe class (new connections, sessions), the disconnect time over the whole run
  (:class:`casprobe.analysis_compare.Disconnection`, scope ``overall``);
- **error rate**: per name × probe over the whole run (:class:`casprobe.analysis_stats.RowStats`, phase ``all``);
- **p50 / p99**: the nearest-rank latency percentiles of the successful probes' ``duration``, same rows. (The
  analysis computes p50, p90 and p99; the report shows the analysis' figures rather than computing others.)

Rows are matched by display name and probe; a row present on one side only shows None on the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from casprobe.analysis import RunAnalysis
from casprobe.analysis_stats import ALL
from casprobe.model import RunInfo

__all__ = ["Baseline", "Delta", "deltas"]


@dataclass(frozen=True, slots=True)
class Delta:
    """One figure of this run and of the baseline.

    Attributes:
        figure: ``disconnect``, ``error rate``, ``p50`` or ``p99``. label: the row (``namespace · sessions``).
        unit: ``s`` (seconds) or ``rate`` (0..1). current / baseline: the values (None: not in that run).
    """

    figure: str
    label: str
    unit: str
    current: float | None
    baseline: float | None

    @property
    def diff(self) -> float | None:
        """This run − the baseline (None when either is missing)."""
        if self.current is None or self.baseline is None:
            return None
        return self.current - self.baseline


@dataclass(frozen=True, slots=True)
class Baseline:
    """The baseline run and the figures compared with it.

    Attributes:
        source: the baseline store's path. run: its settings. results: results it holds. deltas: the figures.
    """

    source: str
    run: RunInfo
    results: int
    deltas: tuple[Delta, ...]


def _disconnects(a: RunAnalysis) -> dict[str, float]:
    return {f"{d.target} · {d.probe_class}": d.disconnect_s for d in a.comparison if d.scope == "overall"}


def _row_figures(a: RunAnalysis) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for s in a.stats:
        if s.phase != ALL:
            continue
        duration = s.metric("duration")
        out[f"{s.row.target} · {s.row.probe}"] = {
            "error rate": s.error_rate,
            "p50": None if duration is None else duration.p50,
            "p99": None if duration is None else duration.p99,
        }
    return out


def _union(first: list[str], second: list[str]) -> list[str]:
    return first + [k for k in second if k not in first]


def deltas(current: RunAnalysis, baseline: RunAnalysis) -> tuple[Delta, ...]:
    """The key figures of both runs, disconnect times first, then error rates, p50 and p99 per row."""
    out: list[Delta] = []
    mine, theirs = _disconnects(current), _disconnects(baseline)
    for label in _union(list(mine), list(theirs)):
        out.append(Delta("disconnect", label, "s", mine.get(label), theirs.get(label)))
    rows_mine, rows_theirs = _row_figures(current), _row_figures(baseline)
    for figure, unit in (("error rate", "rate"), ("p50", "s"), ("p99", "s")):
        for label in _union(list(rows_mine), list(rows_theirs)):
            a, b = rows_mine.get(label, {}).get(figure), rows_theirs.get(label, {}).get(figure)
            out.append(Delta(figure, label, unit, a, b))
    return tuple(out)
