"""Bounded per-connection records for the lab's connection-oriented authentication.

ASGI does not signal the end of a TCP connection (the ASGI HTTP spec has no connection object; uvicorn puts only
``scope["client"]`` and ``scope["server"]`` in the scope), so records keyed by that pair must expire on their own.
This table gives each record a sliding idle TTL (a record is renewed each time it is read or written, like an idle
keep-alive timer) and an LRU bound on the number of records, so memory cannot grow without bound whatever the
clients do. Fact sheet: /work/shared/docs/field-notes.md §1 "Per-connection identity".
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

__all__ = ["ConnectionTable"]


class ConnectionTable(Generic[V]):
    """A mapping from connection key to record with a sliding TTL and a maximum size (oldest evicted first).

    Not thread-safe: it is meant to live on one event loop, as the lab's servers do.
    """

    __slots__ = ("_clock", "_entries", "evictions", "max_entries", "ttl_s")

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.evictions = 0
        self._clock = clock
        # Ordered by last touch, oldest first: expired records are always at the front.
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        """Return the live record for ``key`` and renew its TTL, or None (an expired record is dropped)."""
        now = self._clock()
        self._purge(now)
        entry = self._entries.get(key)
        if entry is None:
            return None
        value = entry[1]
        self._entries[key] = (now, value)
        self._entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> None:
        """Store ``value`` for ``key`` (replacing any record), evicting the least recently used beyond the bound."""
        now = self._clock()
        self._purge(now)
        self._entries[key] = (now, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1

    def pop(self, key: Hashable) -> V | None:
        """Remove and return the live record for ``key``, or None."""
        now = self._clock()
        self._purge(now)
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[1]

    def _purge(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, (touched, _) = next(iter(entries.items()))
            if now - touched <= self.ttl_s:
                return
            del entries[key]
