"""When one simulated client could not work: its disconnect intervals (:class:`~casprobe.model.LoadDisconnect`).

A client reports each request's outcome. The first failure opens an interval; the first request that *does work*
after it (for Outlook on MAPI/HTTP an Execute, for Outlook for Mac an EWS operation) closes it. Requests that
succeed without doing work (a Connect, an Autodiscover) neither open nor close one: a client that reconnects
cleanly after losing its session context shows a short interval, from the failed request to the first Execute
on the new context — a reconnect, not an outage. Wall-clock times, so records from several worker processes
line up with each other and with the lab's event log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from casprobe.model import LoadDisconnect

__all__ = ["DisconnectTracker"]

_MAX_DETAIL = 200


@dataclass(slots=True)
class _Open:
    started_at: float
    failures: int
    classes: list[str]
    detail: str


class DisconnectTracker:
    """The disconnect intervals of one client; ``on_close`` receives each interval as it closes."""

    def __init__(
        self,
        cohort: str,
        user: str,
        client: str,
        name: str,
        on_close: Callable[[LoadDisconnect], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cohort, self.user, self.client, self.name = cohort, user, client, name
        self._on_close = on_close
        self._clock = clock
        self._open: _Open | None = None
        self.closed = 0

    @property
    def cut_off(self) -> bool:
        return self._open is not None

    def since(self) -> float | None:
        """When the open interval started (None when the client is working)."""
        return None if self._open is None else self._open.started_at

    def failed(self, error_class: str, detail: str, at: float | None = None) -> None:
        """A request failed (``at``: when it was sent; now by default)."""
        when = self._clock() if at is None else at
        if self._open is None:
            self._open = _Open(when, 0, [], detail[:_MAX_DETAIL])
        self._open.failures += 1
        if error_class not in self._open.classes:
            self._open.classes.append(error_class)

    def worked(self, at: float | None = None) -> LoadDisconnect | None:
        """A request did work: the open interval (if any) closes here and is returned."""
        if self._open is None:
            return None
        return self._emit(self._clock() if at is None else at)

    def finish(self) -> LoadDisconnect | None:
        """The load stops: an interval still open is emitted with no end."""
        if self._open is None:
            return None
        return self._emit(None)

    def _emit(self, ended_at: float | None) -> LoadDisconnect:
        state, self._open = self._open, None
        assert state is not None
        if ended_at is not None:
            ended_at = max(ended_at, state.started_at)
        record = LoadDisconnect(
            cohort=self.cohort,
            user=self.user,
            client=self.client,
            name=self.name,
            started_at=state.started_at,
            ended_at=ended_at,
            failures=state.failures,
            error_classes=tuple(state.classes),
            detail=state.detail,
        )
        self.closed += 1
        self._on_close(record)
        return record
