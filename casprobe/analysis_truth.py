"""Outages measured against the ground truth: the lab's event log (lab/events.py lists the kinds and fields).

For each outage, the *cause* is the lab event that took service away and the *restore* the event that gave it back
(or routed around the loss); time to detect = outage start − cause, time to recover = outage end − restore. Both
are on the monotonic clock (system-wide on Linux, so the lab's and casprobe's readings compare directly).

Events that take service away (onsets), each paired with the event that undoes it:

=========================================== ============================================ ============
onset                                       undone by                                    subject
=========================================== ============================================ ============
``power.off`` server                        ``power.on`` server                          server
``component.state`` ServerWideOffline       ``component.state`` ServerWideOffline        server
Inactive (health checks turn 503)           Active
``maintenance.start`` server                ``maintenance.end`` server                   server
``copy.move.start`` db, source, target      ``copy.move.end`` db                         db, source, target
=========================================== ============================================ ============

``haproxy.server`` (backend, server, state) changes are restores for the namespace only: DOWN means the load
balancer stopped sending to that server (it routed around the loss), UP that it sends to it again.

Which events are relevant to a row:

- a **server name** (``mb1``): the onsets and undoers whose servers include it (its power, its component
  state, its maintenance, copy moves from or to it);
- the **namespace**: power.off / ServerWideOffline of any server, and copy moves of the mailbox's database;
  restores: their undoers and HAProxy's state changes in the backend of the probe's virtual directory
  (``be_mapi`` for ``mapi`` and ``mapi-session``, ``be_ews``, ``be_autodiscover``; any backend for ``health`` or
  when the log has no backend of that name, as with the single ``l4`` backend). The mailbox's database is the
  caller's ``database`` when given; otherwise the copy moves whose source is the server that held the mailbox
  (the ``be_server`` of the row's last success before the outage); otherwise every copy move.

Matching, with ``slack_s`` (default 0.5 s) for the lab writing its line just after acting:

- cause: among the relevant onsets whose state still held at the outage start (not undone before start − slack),
  the latest one at or before the start; if there is none, the earliest one within start + slack;
- restore (closed outages only): among the relevant onsets that held at some moment of the outage (the cause and any
  that came while it lasted) and were undone by outage end + slack, the undoer of the latest one — service returns
  when the last thing that took it away is undone (in a maintenance the database move ends after seconds,
  ServerWideOffline Active after the window); else, among the relevant restores from the cause (from outage start −
  slack without one) to outage end + slack that share a subject (server or database) with the cause, the latest at
  or before the end, else the earliest after it.

Either can be None: nothing in the log explains the outage (or there is no log).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from casprobe.analysis_outages import Row
from casprobe.analysis_phases import event_fields
from casprobe.model import LabEventRecord, Outage, TargetKind

__all__ = ["DEFAULT_SLACK_S", "OutageReport", "TruthEvent", "TruthLog", "short_server"]

DEFAULT_SLACK_S = 0.5
_VDIR = {"mapi": "mapi", "mapi-session": "mapi", "ews": "ews", "autodiscover": "autodiscover"}
_DOWN_STATES = frozenset({"inactive"})
_UP_STATES = frozenset({"active"})


def short_server(name: str | None) -> str:
    """``MB1`` / ``mb1.lab.test`` / ``mb1`` → ``mb1`` (empty for None)."""
    return (name or "").strip().split(".", 1)[0].lower()


@dataclass(frozen=True, slots=True)
class TruthEvent:
    """A lab event that can explain an outage.

    Attributes:
        seq, mono, wall, kind: as in the log. role: ``onset``, ``undo`` or ``reroute`` (HAProxy).
        key: what the onset/undo pair is about (``power:mb2``, ``move:DB01``); empty for HAProxy events.
        servers: the servers involved (short names). db: the database of a copy move. backend, state: of an
        HAProxy change. text: one line for people (``power.off mb2``, ``haproxy be_mapi/mb2 DOWN``).
    """

    seq: int
    mono: float
    wall: float
    kind: str
    role: str
    key: str
    servers: tuple[str, ...]
    db: str
    backend: str
    state: str
    text: str

    def shares_subject(self, other: TruthEvent) -> bool:
        return bool((set(self.servers) & set(other.servers)) - {""}) or (bool(self.db) and self.db == other.db)


@dataclass(frozen=True, slots=True)
class OutageReport:
    """An outage with what caused it and what ended it, according to the lab's log.

    Attributes:
        outage: the window. kind: namespace or server. cause / detect_s: the onset event and outage start − its
        time (None when nothing matched). restore / recover_s: the restoring event and outage end − its time
        (None when nothing matched or the outage is still open).
    """

    outage: Outage
    kind: TargetKind
    cause: TruthEvent | None = None
    detect_s: float | None = None
    restore: TruthEvent | None = None
    recover_s: float | None = None


def _truth_event(record: LabEventRecord) -> TruthEvent | None:
    if not (math.isfinite(record.mono) and math.isfinite(record.wall)):
        return None
    fields = event_fields(record)
    server = short_server(str(fields.get("server", "")))
    kind = record.kind
    if kind in ("power.off", "power.on"):
        role, key, text = ("onset" if kind == "power.off" else "undo"), f"power:{server}", f"{kind} {server}"
        return TruthEvent(record.seq, record.mono, record.wall, kind, role, key, (server,), "", "", "", text)
    if kind in ("maintenance.start", "maintenance.end"):
        role, key = ("onset" if kind == "maintenance.start" else "undo"), f"maintenance:{server}"
        return TruthEvent(
            record.seq, record.mono, record.wall, kind, role, key, (server,), "", "", "", f"{kind} {server}"
        )
    if kind == "component.state" and str(fields.get("component", "")).lower() == "serverwideoffline":
        state = str(fields.get("state", "")).lower()
        role = "onset" if state in _DOWN_STATES else "undo" if state in _UP_STATES else ""
        if not role:
            return None
        text = f"{server} ServerWideOffline {fields.get('state')}"
        return TruthEvent(
            record.seq, record.mono, record.wall, kind, role, f"offline:{server}", (server,), "", "", state, text
        )
    if kind in ("copy.move.start", "copy.move.end"):
        db = str(fields.get("db", ""))
        source, target = short_server(str(fields.get("source", ""))), short_server(str(fields.get("target", "")))
        role = "onset" if kind == "copy.move.start" else "undo"
        servers = (source, target)  # source first, even when empty
        text = f"{kind} {db} {source}→{target}"
        return TruthEvent(record.seq, record.mono, record.wall, kind, role, f"move:{db}", servers, db, "", "", text)
    if kind == "haproxy.server":
        backend, state = str(fields.get("backend", "")), str(fields.get("state", "")).upper()
        text = f"haproxy {backend}/{server} {state}"
        return TruthEvent(
            record.seq, record.mono, record.wall, kind, "reroute", "", (server,), "", backend, state, text
        )
    return None


class TruthLog:
    """The lab's events, prepared for matching outages against them (see the module docstring)."""

    def __init__(self, events: Iterable[LabEventRecord], *, slack_s: float = DEFAULT_SLACK_S) -> None:
        parsed = (_truth_event(record) for record in events)
        self.events = sorted((e for e in parsed if e is not None), key=lambda e: (e.mono, e.seq))
        self.slack_s = slack_s
        self.backends = {e.backend for e in self.events if e.role == "reroute"}
        self.monos = [e.mono for e in self.events]
        # each onset with the first undoer of the same key after it (None: never undone)
        self.undo_of: dict[int, TruthEvent | None] = {}
        pending: dict[str, list[int]] = {}
        for i, event in enumerate(self.events):
            if event.role == "onset":
                self.undo_of[i] = None
                pending.setdefault(event.key, []).append(i)
            elif event.role == "undo":
                for j in pending.pop(event.key, []):
                    self.undo_of[j] = event

    def _relevant_onset(self, event: TruthEvent, row: Row, server: str, home: str, database: str | None) -> bool:
        if row.kind is TargetKind.SERVER:
            return server in event.servers
        if event.kind == "copy.move.start":
            if database:
                return event.db.lower() == database.lower()
            return not home or event.servers[0] == home
        return event.kind in ("power.off", "component.state")

    def _relevant_restore(self, event: TruthEvent, row: Row, server: str, cause: TruthEvent | None) -> bool:
        if event.role == "onset":
            return False
        if row.kind is TargetKind.SERVER:
            return event.role == "undo" and server in event.servers
        if event.role == "reroute":
            vdir = _VDIR.get(row.probe)
            wanted = f"be_{vdir}" if vdir else ""
            if wanted and wanted in self.backends and event.backend != wanted:
                return False
        return cause is None or event.shares_subject(cause)

    def _last_undo(
        self, row: Row, server: str, home: str, database: str | None, start: float, end: float
    ) -> TruthEvent | None:
        """The undoer of the latest relevant onset that held during the outage and was undone by its end.

        Service comes back when the last thing that took it away is undone: a maintenance whose database move
        (the cause) ends after 2 s while the server's components stay inactive for a minute is restored by
        ServerWideOffline Active, not by the end of the move.
        """
        slack = self.slack_s
        latest: tuple[float, TruthEvent] | None = None
        for i, undo in self.undo_of.items():
            event = self.events[i]
            if undo is None or event.mono > end + slack or undo.mono < start - slack or undo.mono > end + slack:
                continue
            if not self._relevant_onset(event, row, server, home, database):
                continue
            if latest is None or event.mono > latest[0]:
                latest = (event.mono, undo)
        return None if latest is None else latest[1]

    def _first(self, indices: Iterable[int], test: Callable[[int], bool]) -> int | None:
        return next((i for i in indices if test(i)), None)

    def match(self, outage: Outage, row: Row, *, home: str = "", database: str | None = None) -> OutageReport:
        """Find the cause and the restore of one outage of ``row``; ``home``: the mailbox's server, if known."""
        server, slack, start, monos = short_server(row.name), self.slack_s, outage.start_mono, self.monos

        def is_cause(i: int) -> bool:
            event, undo = self.events[i], self.undo_of.get(i)
            return (
                event.role == "onset"
                and self._relevant_onset(event, row, server, home, database)
                and (undo is None or undo.mono >= start - slack)
            )

        at = bisect.bisect_right(monos, start)
        cause_index = self._first(range(at - 1, -1, -1), is_cause)
        if cause_index is None:
            cause_index = self._first(range(at, bisect.bisect_right(monos, start + slack)), is_cause)
        cause = None if cause_index is None else self.events[cause_index]
        report = OutageReport(outage, row.kind, cause, None if cause is None else start - cause.mono)
        end = outage.end_mono
        if end is None:
            return report
        restore: TruthEvent | None = self._last_undo(row, server, home, database, start, end)
        if restore is None:

            def is_restore(i: int) -> bool:
                return self._relevant_restore(self.events[i], row, server, cause)

            low = bisect.bisect_left(monos, start - slack if cause is None else cause.mono)
            at = bisect.bisect_right(monos, end)
            index = self._first(range(at - 1, low - 1, -1), is_restore)
            if index is None:
                index = self._first(range(max(at, low), bisect.bisect_right(monos, end + slack)), is_restore)
            restore = None if index is None else self.events[index]
        if restore is None:
            return report
        return OutageReport(outage, row.kind, cause, report.detect_s, restore, end - restore.mono)
