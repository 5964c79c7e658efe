"""Per-cohort figures of a load run (casprobe.analysis_load)."""

from __future__ import annotations

from casprobe.analysis_load import cohort_figures
from casprobe.model import LoadDisconnect, LoadRun


def _d(cohort: str, user: str, start: float, end: float | None) -> LoadDisconnect:
    return LoadDisconnect(cohort, user, "outlook", f"{cohort}.lab.test", start, end, 1, ("connect",))


def test_figures_count_users_disconnects_and_open_intervals_up_to_the_end() -> None:
    """Totals, longest, median and users cut off per cohort; an open interval counts to the run's end."""
    run = LoadRun(0.0, 100.0, "test", (("namespace", 8), ("mb1", 2), ("mb2", 1)))
    records = [
        _d("namespace", "u1", 10.0, 12.0),
        _d("namespace", "u2", 10.0, 11.0),
        _d("namespace", "u1", 50.0, 53.0),
        _d("mb1", "u9", 20.0, None),
        _d("mb1", "u10", 20.0, 80.0),
        _d("stray", "u99", 5.0, 6.0),
    ]
    ns, mb1, mb2, stray = cohort_figures(run, records)
    assert (ns.cohort, ns.users, ns.users_cut_off, ns.disconnects, ns.still_open) == ("namespace", 8, 2, 3, 0)
    assert (ns.client_seconds, ns.longest_s, ns.median_s) == (6.0, 3.0, 2.0)
    assert ns.mean_per_user_s == 0.75
    assert (mb1.client_seconds, mb1.longest_s, mb1.still_open, mb1.users_cut_off) == (140.0, 80.0, 1, 2)
    assert (mb2.disconnects, mb2.client_seconds, mb2.median_s, mb2.mean_per_user_s) == (0, 0.0, None, 0.0)
    assert (stray.cohort, stray.users, stray.disconnects) == ("stray", 1, 1)
