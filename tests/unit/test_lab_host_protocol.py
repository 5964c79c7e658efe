"""The lab's uvicorn protocol subclass (casprobe.lab.host.tracking_protocol): connection hooks and keep-alive timers."""

from __future__ import annotations

from typing import Any

from casprobe.lab.host import tracking_protocol


class _Uvicorn:
    """Stands in for uvicorn 0.54's HTTP protocol: the keep-alive timer is cancelled on a clean close only."""

    def __init__(self) -> None:
        self.client, self.server = ("127.0.0.1", 40000), ("127.0.0.11", 443)
        self.timer_cancelled = False

    def connection_made(self, transport: Any) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._unset_keepalive_if_required()

    def _unset_keepalive_if_required(self) -> None:
        self.timer_cancelled = True


def test_a_reset_connection_cancels_its_keep_alive_timer_and_reaches_the_hook() -> None:
    """Lost with an error (a reset) or cleanly: the timer is cancelled; the hook hears the open and the close."""
    seen: list[object] = []
    cls = tracking_protocol(_Uvicorn, seen.append)
    for error in (ConnectionResetError("reset by peer"), None):
        protocol = cls()
        protocol.connection_made(object())
        protocol.connection_lost(error)
        assert protocol.timer_cancelled
    key = (("127.0.0.1", 40000), ("127.0.0.11", 443))
    assert seen == [key] * 4


def test_without_a_hook_the_timer_is_still_cancelled_and_a_failing_hook_is_contained() -> None:
    """No hook: only the timer fix; a hook that raises never takes the connection down."""
    protocol = tracking_protocol(_Uvicorn, None)()
    protocol.connection_lost(OSError("gone"))
    assert protocol.timer_cancelled

    def broken(_key: object) -> None:
        raise RuntimeError("bookkeeping bug")

    other = tracking_protocol(_Uvicorn, broken)()
    other.connection_made(object())
    other.connection_lost(None)
    assert other.timer_cancelled
