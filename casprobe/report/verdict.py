"""The report's verdict: one plain sentence per name, from the analysis (issue 6: "a verdict in one sentence per name").

Every figure in a sentence is a figure of :class:`casprobe.analysis.RunAnalysis`: the disconnect time of the name's
*new connections* and *sessions* over the whole run (:mod:`casprobe.analysis_compare`: the union of its outage
windows, an open outage counted to the run's end) and its longest outage (counted the same way), placed in the
maintenance window it overlaps (:mod:`casprobe.analysis_phases`), or before / after the maintenance.

Through the namespace the sentence speaks of Outlook: it *stayed connected* when the long-lived session
(``mapi-session``) was never cut off. A name whose probes never failed gets "no probe failed".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from casprobe.analysis import RunAnalysis
from casprobe.analysis_compare import NEW_CONNECTIONS, SESSIONS, Disconnection, outage_span
from casprobe.analysis_table import seconds
from casprobe.analysis_truth import OutageReport
from casprobe.model import TargetKind

__all__ = ["Verdict", "verdicts"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What happened to one name, in one sentence.

    Attributes:
        target: display name (``namespace``, ``mb1``). name: its DNS name. kind: namespace or server.
        ok: nothing was cut off. sentence: for people. new_s / sessions_s: disconnect time of new connections /
        sessions over the whole run (None: the run had no such probe). longest_s: the longest outage (None: none).
        outages: how many outages the name had.
    """

    target: str
    name: str
    kind: TargetKind
    ok: bool
    sentence: str
    new_s: float | None
    sessions_s: float | None
    longest_s: float | None
    outages: int


_WINDOW_PHRASES = (
    (re.compile(r"^(\S+) maintenance$"), "the maintenance of {}"),
    (re.compile(r"^(\S+) power off$"), "the power-off of {}"),
)


def _window_phrase(label: str) -> str:
    for pattern, phrase in _WINDOW_PHRASES:
        found = pattern.match(label)
        if found:
            return phrase.format(found.group(1))
    return label


def _where(a: RunAnalysis, start: float, end: float) -> str:
    """Where an outage (start → end) stands: in the maintenance window it overlaps (its first failed probe may
    have started up to an interval before the window opened), else before / after the maintenance."""
    for window in a.phases.windows:
        if start < (window.end if window.end is not None else float("inf")) and end > window.start:
            return f" during {_window_phrase(window.label)}"
    phase = a.phases.phase_of(start)
    return f" {phase} the maintenance" if phase in ("before", "after") else ""


def _longest(a: RunAnalysis, reports: list[OutageReport]) -> tuple[float, str]:
    """The longest outage's counted length and its description (probe, open or not, where)."""
    best = max(reports, key=lambda rep: outage_span(rep.outage, a.end)[1] - rep.outage.start_mono)
    o = best.outage
    length = outage_span(o, a.end)[1] - o.start_mono
    text = seconds(length) if o.end_mono is not None else f"at least {seconds(length)} (still failing at the end)"
    return length, f"{text} ({o.probe}){_where(a, o.start_mono, o.start_mono + length)}"


def _one(a: RunAnalysis, target: str, name: str, kind: TargetKind) -> Verdict:
    comp: dict[str, Disconnection] = {
        d.probe_class: d for d in a.comparison if d.target == target and d.scope == "overall"
    }
    new, ses = comp.get(NEW_CONNECTIONS), comp.get(SESSIONS)
    new_s = None if new is None else new.disconnect_s
    ses_s = None if ses is None else ses.disconnect_s
    reports = [rep for rep in a.outages if rep.outage.target == target]
    namespace = kind is TargetKind.NAMESPACE
    if not reports:
        text = (
            f"Through {name} Outlook stayed connected: no probe failed." if namespace else f"{name}: no probe failed."
        )
        return Verdict(target, name, kind, True, text, new_s, ses_s, None, 0)
    longest_s, longest = _longest(a, reports)
    cut_new = f"new connections were cut off {seconds(new_s)}" if new_s is not None else ""
    if namespace and ses_s is not None and ses_s == 0:
        text = f"Through {name} Outlook stayed connected: the longest interruption was {longest}"
        text += f"; {cut_new} in all." if cut_new else "."
    elif namespace:
        lost = f"Outlook lost its session for {seconds(ses_s)}" if ses_s is not None else ""
        head = "; ".join(p for p in (lost, cut_new) if p)
        text = f"Through {name} {head}; the longest interruption was {longest}."
    else:
        cuts = [
            f"{seconds(v)} ({label})" for v, label in ((new_s, NEW_CONNECTIONS), (ses_s, SESSIONS)) if v is not None
        ]
        text = f"{name}: cut off {', '.join(cuts)}; the longest interruption was {longest}."
    ok = not any(v for v in (new_s, ses_s) if v)
    return Verdict(target, name, kind, ok, text, new_s, ses_s, longest_s, len(reports))


def verdicts(a: RunAnalysis) -> tuple[Verdict, ...]:
    """One verdict per name, in the analysis' row order (the namespace first)."""
    seen: dict[str, tuple[str, TargetKind]] = {}
    for row in a.rows:
        seen.setdefault(row.target, (row.name, row.kind))
    return tuple(_one(a, target, name, kind) for target, (name, kind) in seen.items())
