"""The lab event log: every state change, with wall-clock and monotonic timestamps. It is the ground truth.

One JSON object per line in ``events.jsonl`` in the lab folder, appended and flushed as each change happens, so
that another process (a test, ``casprobe watch``) can read it while the lab runs. ``mono`` is
``time.monotonic()`` of the lab process: on Linux that clock is system-wide, so any process on the machine can
compare it with its own monotonic readings.

Kinds (``kind``) and their fields:

- ``lab.up`` / ``lab.down``
- ``maintenance.start`` / ``maintenance.step`` (step, detail) / ``maintenance.end`` — server
- ``component.state`` — server, component, state, requester
- ``copy.activation`` — server, blocked (bool)
- ``copy.move.start`` / ``copy.move.end`` — db, source, target, reason (switchover|maintenance|failover|…)
- ``power.off`` (mode) / ``power.on`` — server
- ``haproxy.server`` — backend, server, state (UP/DOWN/MAINT/DRAIN…), previous
- ``haproxy.start`` / ``haproxy.stop``
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EventLog", "LabEvent", "read_events"]


@dataclass(frozen=True, slots=True)
class LabEvent:
    """One line of the event log.

    Attributes:
        seq: 1, 2, … in the order the lab recorded them.
        wall: ``time.time()`` when it happened.
        mono: ``time.monotonic()`` when it happened (system-wide clock on Linux).
        kind: what happened (see the module docstring).
        data: the kind's fields.
    """

    seq: int
    wall: float
    mono: float
    kind: str
    data: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "wall": self.wall, "mono": self.mono, "kind": self.kind, **self.data}


class EventLog:
    """Append-only event log, safe to call from the lab's event loop and its threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seq = sum(1 for _ in read_events(path)) if path.exists() else 0
        self._recent: list[LabEvent] = []

    def record(self, kind: str, *, at: float | None = None, **data: Any) -> LabEvent:
        """Append an event; ``at`` is the wall-clock time it happened when that was before now (HAProxy's log)."""
        with self._lock:
            self._seq += 1
            wall, mono = time.time(), time.monotonic()
            if at is not None and at < wall:
                mono -= wall - at
                wall = at
            event = LabEvent(self._seq, wall, mono, kind, dict(data))
            # opened per event: events are rare, and nothing stays open if the lab dies
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(event.to_json(), separators=(",", ":")) + "\n")
            self._recent.append(event)
            del self._recent[:-1000]
            return event

    def since(self, seq: int) -> list[LabEvent]:
        """Events recorded after ``seq`` (from memory while they are recent, else from the file)."""
        with self._lock:
            if self._recent and self._recent[0].seq <= seq + 1:
                return [e for e in self._recent if e.seq > seq]
        return [e for e in read_events(self.path) if e.seq > seq]

    def close(self) -> None:
        """Nothing to release (kept so callers need not know)."""


def read_events(path: Path) -> Iterator[LabEvent]:
    """Read an event log; a torn last line (the lab was killed mid-write) is skipped."""
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            try:
                raw = json.loads(line)
                data = {k: v for k, v in raw.items() if k not in ("seq", "wall", "mono", "kind")}
                yield LabEvent(int(raw["seq"]), float(raw["wall"]), float(raw["mono"]), str(raw["kind"]), data)
            except (ValueError, KeyError, TypeError):
                continue
