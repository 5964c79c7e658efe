"""The run divided into before / during / after a maintenance, by markers, by the lab's event log, or by hand.

A maintenance is one or more :class:`Window` s on the monotonic clock. A moment is ``during`` when it lies in any
window (start inclusive, end exclusive; a window without an end lasts until the end of the run), ``before`` when
it comes before the first window's start, and ``after`` otherwise (after the last window, or between two windows:
a time after a maintenance that is not inside another one). A run without windows has no phases.

- :func:`phases_from_markers`: a marker whose text contains the word *start* (or *started*, *begin*, *begins*)
  opens a window; one with *end* (*ended*, *stop*, *stopped*, *done*, *finish*, *finished*) closes one. Whole
  words, case-insensitive (``backend`` does not end anything); a text with both kinds of word, or neither, is a
  plain note. An end closes the open window whose *subject* (the text without the keyword: ``mb1 maintenance``)
  is the same, else the oldest open window; an end with no open window is ignored.
- :func:`phases_from_lab_events`: ``maintenance.start`` → ``maintenance.end`` and ``power.off`` → ``power.on``,
  paired per server.
- :meth:`Phases.explicit`: windows given as (start, end) pairs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from casprobe.model import LabEventRecord, Marker

__all__ = [
    "PHASES",
    "Phases",
    "Window",
    "event_fields",
    "intersect",
    "merge_spans",
    "phases_from_lab_events",
    "phases_from_markers",
    "span_length",
]

#: The phase names, in time order.
PHASES = ("before", "during", "after")

_START = re.compile(r"\b(start|started|starting|begin|begins)\b", re.IGNORECASE)
_END = re.compile(r"\b(end|ended|stop|stopped|done|finish|finished)\b", re.IGNORECASE)
_MAX_EVENT_TEXT = 100_000


@dataclass(frozen=True, slots=True)
class Window:
    """One maintenance window on the monotonic clock.

    Attributes:
        start: when it began. end: when it ended (None = until the end of the run).
        label: what it was (``mb1 maintenance``, ``mb2 power off``). source: ``markers``, ``lab`` or ``explicit``.
    """

    start: float
    end: float | None
    label: str
    source: str


@dataclass(frozen=True, slots=True)
class Phases:
    """How a run divides into before / during / after (see the module docstring).

    Attributes:
        windows: the maintenance windows, ordered by start. source: where they came from (``markers``, ``lab``,
        ``explicit``, or ``none`` when there are none).
    """

    windows: tuple[Window, ...] = ()
    source: str = "none"

    @classmethod
    def explicit(cls, *spans: tuple[float, float | None], label: str = "maintenance") -> Phases:
        """Windows given by hand as (start, end) pairs on the monotonic clock (end None = until the run ends)."""
        windows = tuple(sorted((Window(s, e, label, "explicit") for s, e in spans), key=lambda w: w.start))
        return cls(windows, "explicit" if windows else "none")

    def phase_of(self, t: float) -> str | None:
        """``before``, ``during`` or ``after`` for a moment on the monotonic clock; None when there are no windows."""
        if not self.windows:
            return None
        if t < self.windows[0].start:
            return "before"
        if any(w.start <= t and (w.end is None or t < w.end) for w in self.windows):
            return "during"
        return "after"

    def during(self, run_end: float) -> list[tuple[float, float]]:
        """The union of the windows as disjoint (start, end) spans, open windows closed at ``run_end``."""
        return merge_spans((w.start, run_end if w.end is None else w.end) for w in self.windows)


def merge_spans(spans: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, disjoint union of half-open spans (empty or reversed spans are dropped)."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def intersect(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The intersection of two sorted, disjoint span lists."""
    out: list[tuple[float, float]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def span_length(spans: Iterable[tuple[float, float]]) -> float:
    """Total length of disjoint spans."""
    return sum(end - start for start, end in spans)


def _marker_role(text: str) -> tuple[str, str] | None:
    starts, ends = _START.search(text), _END.search(text)
    if bool(starts) == bool(ends):
        return None
    found = starts or ends
    assert found is not None
    subject = " ".join((text[: found.start()] + " " + text[found.end() :]).split()).lower()
    return ("start" if starts else "end", subject)


def phases_from_markers(markers: Iterable[Marker]) -> Phases:
    """Windows from start / end markers (see the module docstring)."""
    windows: list[Window] = []
    open_: list[tuple[str, float, str]] = []  # (subject, start, label)
    for marker in sorted(markers, key=lambda m: (m.mono, m.wall, m.text)):
        if not math.isfinite(marker.mono):
            continue
        role = _marker_role(marker.text)
        if role is None:
            continue
        kind, subject = role
        if kind == "start":
            open_.append((subject, marker.mono, subject or marker.text.strip()))
            continue
        if not open_:
            continue
        index = next((i for i, item in enumerate(open_) if item[0] == subject), 0)
        _, start, label = open_.pop(index)
        windows.append(Window(start, marker.mono, label, "markers"))
    windows.extend(Window(start, None, label, "markers") for _, start, label in open_)
    windows.sort(key=lambda w: w.start)
    return Phases(tuple(windows), "markers" if windows else "none")


def event_fields(event: LabEventRecord) -> dict[str, Any]:
    """The fields of a lab event (its ``data`` JSON object); anything that is not one gives ``{}``."""
    if len(event.data) > _MAX_EVENT_TEXT:
        return {}
    try:
        fields = json.loads(event.data)
    except (ValueError, RecursionError):
        return {}
    return fields if isinstance(fields, dict) else {}


_PAIRS = {"maintenance.start": ("maintenance.end", "maintenance"), "power.off": ("power.on", "power off")}
_CLOSERS = {closer: opener for opener, (closer, _) in _PAIRS.items()}


def phases_from_lab_events(events: Iterable[LabEventRecord]) -> Phases:
    """Windows from the lab's log: maintenance.start → maintenance.end, power.off → power.on, per server."""
    windows: list[Window] = []
    open_: dict[tuple[str, str], tuple[float, str]] = {}  # (opener kind, server) -> (start, label)
    for event in sorted(events, key=lambda e: (e.mono, e.seq)):
        if (event.kind not in _PAIRS and event.kind not in _CLOSERS) or not math.isfinite(event.mono):
            continue
        server = str(event_fields(event).get("server", "?"))
        if event.kind in _PAIRS:
            open_.setdefault((event.kind, server), (event.mono, f"{server} {_PAIRS[event.kind][1]}"))
            continue
        opened = open_.pop((_CLOSERS[event.kind], server), None)
        if opened is not None:
            windows.append(Window(opened[0], event.mono, opened[1], "lab"))
    windows.extend(Window(start, None, label, "lab") for start, label in open_.values())
    windows.sort(key=lambda w: w.start)
    return Phases(tuple(windows), "lab" if windows else "none")
