"""Per-cohort figures of a load run: how long the simulated clients of each cohort were cut off.

A cohort is ``namespace`` (clients given the load-balanced name) or a server label (clients given that server's own
name, as Autodiscover hands out when InternalUrl names the server). From the run's
:class:`~casprobe.model.LoadDisconnect` records, per cohort: how many clients it had, how many were ever cut off,
how many disconnects there were, their total, longest and median length (an interval still open at the end of the
load counts until the load's end), and how many were still open then. ``client_seconds`` is the sum of every
client's time cut off, the figure to compare between cohorts of different sizes once divided by ``users``
(``mean_per_user_s``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from casprobe.analysis_stats import nearest_rank
from casprobe.model import LoadDisconnect, LoadRun

__all__ = ["CohortFigures", "cohort_figures"]


@dataclass(frozen=True, slots=True)
class CohortFigures:
    """One cohort of one load run (times in seconds)."""

    cohort: str
    users: int
    users_cut_off: int
    disconnects: int
    still_open: int
    client_seconds: float
    longest_s: float
    median_s: float | None

    @property
    def mean_per_user_s(self) -> float:
        return self.client_seconds / self.users if self.users else 0.0


def cohort_figures(run: LoadRun, disconnects: Iterable[LoadDisconnect]) -> tuple[CohortFigures, ...]:
    """The figures of every cohort of ``run`` (its declared cohorts first, in order, then any other seen)."""
    by_cohort: dict[str, list[LoadDisconnect]] = defaultdict(list)
    for record in disconnects:
        by_cohort[record.cohort].append(record)
    sizes = dict(run.cohorts)
    order = [c for c, _ in run.cohorts] + sorted(set(by_cohort) - set(sizes))
    figures = []
    for cohort in order:
        records = by_cohort.get(cohort, [])
        lengths = sorted(r.duration(run.ended_at) for r in records)
        figures.append(
            CohortFigures(
                cohort=cohort,
                users=sizes.get(cohort, len({r.user for r in records})),
                users_cut_off=len({r.user for r in records}),
                disconnects=len(records),
                still_open=sum(1 for r in records if r.ended_at is None),
                client_seconds=sum(lengths),
                longest_s=lengths[-1] if lengths else 0.0,
                median_s=nearest_rank(lengths, 50) if lengths else None,
            )
        )
    return tuple(figures)
