"""``mapi-session``: one long-lived MAPI/HTTP session per name, kept the way an Outlook that is already connected
keeps it, so that a watch can tell whether such an Outlook *stays* connected through a maintenance.

Follows [MS-OXCMAPIHTTP] v20181211 (protocols.md §2.5, §2.9, §6) through :class:`~casprobe.probes.mapisession.
MapiSession`:

- **Autodiscover** POX through the target once at start, and again after a connectivity failure (as Outlook does,
  protocols.md §6 "Outlook reaction"): ``User/LegacyDN`` and the mapiHttp MailStore path
  (:func:`casprobe.probes.mapi.mailbox_from_pox`; the path is used on the target's own host).
- **Connect** once (2.2.4.1); then at every slot an **Execute** with a RopLogon (2.2.4.2, [MS-OXCROPS] 2.2.3.1: the
  cheapest request MapiSession offers that proves the mailbox answers) and a **PING** (2.2.6). A slot succeeds
  when both worked on the live context.
- A **NotificationWait** (2.2.4.4) is kept parked in the background, held up to :data:`WAIT_HOLD_S` (beyond the
  server's own 5-minute limit, 3.2.2, so the server ends it) and parked again each time it returns. A wait that
  comes back with X-ResponseCode 10 marks the context lost; the next slot records it.
- **Context lost** (X-ResponseCode 10, from any request) or a **transport error** (dns, connect, tls, timeout):
  reconnect at once with a new Connect that carries the old cookies (3.1.5.7, 3.2.5.6; 3.1.7.2 for a failure while
  reading), on a fresh connection after a transport error, with a fresh Autodiscover after a failed Connect of
  that kind. The slot that found the loss fails with the reason ("context lost: …"), and so does every slot until
  an Execute works on a new context; the first one that does says how many slots it was down and whether the
  mailbox moved (X-CalculatedBETarget / X-BEServer before and after).
- Other failures (HTTP 503 from a front end whose back end is powered off, an RopLogon error) fail the slot and
  keep the context, as Outlook retries; ecWrongServer also triggers Autodiscover and a reconnect.

**Threads.** MapiSession and ProbeClient are not thread-safe. The slots of one name run one at a time (the
scheduler never overlaps a job, and a lock guards against the final Disconnect). The parked NotificationWait runs
in its own thread on its **own** ProbeClient and auth flow with its own MapiSession *view*, which gets a copy of
the session's mailbox and cookies before each park (3.2.5.1 lets a NotificationWait overlap other requests of the
context, and it does not check the sequence cookie); it only reports back through a small locked state, and only
the slot thread ever reconnects. On close, a Disconnect ends the context, which ends the parked wait at the server.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid

from casprobe.errors import ConfigError
from casprobe.model import ErrorClass, ProbeResult, Target
from casprobe.net.resolve import Resolver
from casprobe.net.transport import Exchange, ProbeClient
from casprobe.probes.authflow import auth_for, note_auth
from casprobe.probes.base import ProbeContext, ProbeSettings, Recorder
from casprobe.probes.discovery import POX_PATH, Session, pox_lookup
from casprobe.probes.mapi import mailbox_from_pox
from casprobe.probes.mapireply import MapiOutcome
from casprobe.probes.mapisession import MapiMailbox, MapiSession, WaitResult
from casprobe.protocols.rops import LogonRedirect

__all__ = ["PROBE", "WAIT_HOLD_S", "SessionProbe"]

_log = logging.getLogger(__name__)

PROBE = "mapi-session"
WAIT_HOLD_S = 330.0
_TRANSPORT = frozenset({ErrorClass.DNS, ErrorClass.CONNECT, ErrorClass.TLS, ErrorClass.TIMEOUT})
_Failure = tuple[ErrorClass, str]


class SessionProbe:
    """The long-lived session of one name; calling it runs one slot (see the module docstring)."""

    def __init__(
        self,
        target: Target,
        settings: ProbeSettings,
        resolver: Resolver,
        *,
        notification_wait: bool = True,
        hold_s: float = WAIT_HOLD_S,
    ) -> None:
        if not settings.mailbox or "@" not in settings.mailbox:
            raise ConfigError("the mapi-session probe needs a mailbox SMTP address (user@domain)")
        self.target, self.settings, self.resolver, self.hold_s = target, settings, resolver, hold_s
        self.client_info = uuid.uuid4()  # one client instance: X-ClientInfo keeps its GUID across reconnects
        self._slot_lock = threading.Lock()
        self._state = threading.Lock()  # what the waiter thread reads and writes
        self._mailbox: MapiMailbox | None = None
        self._rediscover = True
        self._client: ProbeClient | None = None
        self._session: MapiSession | None = None
        self._generation = 0  # successful Connects so far
        self._cookies: dict[str, str] = {}
        self._connected = False
        self._wait_lost: tuple[int, str] | None = None
        self._lost: str | None = None  # why the session is down, until an Execute works on a new context
        self._down_slots = 0
        self._backend: str | None = None
        self.reconnects = 0
        self.wait_state = "not parked"
        self._waiter = _Waiter(self) if notification_wait else None
        self._closed = False

    # ------------------------------------------------------------------------------------------------ a slot

    def __call__(self, deadline: float) -> ProbeResult:
        ctx = ProbeContext(self.target, self.settings, self.resolver, deadline)
        rec = Recorder(ctx, PROBE)
        with self._slot_lock:
            if self._closed:
                return rec.failure(ErrorClass.INTERNAL, "the session was already closed")
            try:
                result = self._slot(ctx, rec)
            except Exception as exc:  # a bug: an internal result, and the session starts over
                self._connected = False
                result = rec.from_exception(exc, PROBE)
            self._publish()
        if self._waiter is not None and self._connected:
            self._waiter.start()
        return result

    def _slot(self, ctx: ProbeContext, rec: Recorder) -> ProbeResult:
        if self._client is not None:
            self._client.deadline = ctx.deadline
        with self._state:
            wait_lost, self._wait_lost = self._wait_lost, None
        if wait_lost is not None and self._connected and wait_lost[0] == self._generation:
            return self._lose(ctx, rec, ErrorClass.PROTOCOL, f"context lost (seen by NotificationWait): {wait_lost[1]}")
        if not self._connected:
            failure = self._connect(ctx, rec)
            if failure is not None:
                self._down_slots += 1
                what = "connect failed" if self._lost is None else f"{self._lost}; reconnect failed"
                return rec.failure(failure[0], f"{what}: {failure[1]}")
        session = self._session
        assert session is not None
        execute = session.execute_logon()
        main = self._record(rec, execute)
        if not execute.ok:
            return self._failed(ctx, rec, execute)
        ping = session.ping()
        self._record(rec, ping)
        if not ping.ok:
            return self._failed(ctx, rec, ping)
        rec.main = main or rec.main  # the Execute decides the slot: its timings and servers are the result's
        return self._succeeded(rec, execute)

    def _failed(self, ctx: ProbeContext, rec: Recorder, outcome: MapiOutcome[object]) -> ProbeResult:
        error_class = outcome.error_class or ErrorClass.PROTOCOL
        if outcome.context_lost:
            return self._lose(ctx, rec, error_class, f"context lost: {outcome.request_type} got {outcome.detail}")
        if error_class in _TRANSPORT:
            self._client_broken()
            return self._lose(ctx, rec, error_class, f"connection lost: {outcome.request_type}: {outcome.detail}")
        if isinstance(outcome.value, LogonRedirect):
            self._rediscover = True
            return self._lose(ctx, rec, error_class, f"mailbox moved: {outcome.detail}")
        self._down_slots += 1
        prefix = f"{self._lost}; " if self._lost else ""
        return rec.failure(error_class, f"{prefix}{outcome.request_type}: {outcome.detail}")

    def _lose(self, ctx: ProbeContext, rec: Recorder, error_class: ErrorClass, reason: str) -> ProbeResult:
        """The context is gone: fail this slot with ``reason`` and reconnect at once (the next slot may work)."""
        self._connected = False
        if self._session is not None:
            self._session.connected = False
        self._lost = self._lost or reason
        self._down_slots += 1
        failure = self._connect(ctx, rec)
        after = "reconnected" if failure is None else f"reconnect failed: {failure[1]}"
        return rec.failure(error_class, f"{reason}; {after}")

    def _succeeded(self, rec: Recorder, execute: MapiOutcome[object]) -> ProbeResult:
        exchange = execute.exchange
        fe, be = (exchange.fe_server, exchange.be_server) if exchange is not None else (None, None)
        where = (f" via {fe}" if fe else "") + (f", mailbox on {be}" if be else "")
        detail = f"Execute (RopLogon) and PING on the live context{where}"
        if self._lost is not None:
            moved = (
                f"; mailbox moved from {self._backend} to {be}" if be and self._backend and be != self._backend else ""
            )
            detail += f"; back after {self._down_slots} failed slot(s) ({self._lost}){moved}"
            rec.fact("mapi.session.recovered_after_slots", self._down_slots)
        self._lost, self._down_slots = None, 0
        self._backend = be or self._backend
        rec.fact("mapi.session.generation", self._generation)
        rec.fact("mapi.session.reconnects", self.reconnects)
        rec.fact("mapi.session.notification_wait", self.wait_state)
        return rec.success(detail)

    # ------------------------------------------------------------------------------------------ connecting

    def _connect(self, ctx: ProbeContext, rec: Recorder) -> _Failure | None:
        """Autodiscover (when needed) and Connect, carrying the old cookies if there are any (a reconnect)."""
        if self._mailbox is None or self._rediscover:
            found = self._autodiscover(ctx, rec)
            if not isinstance(found, MapiMailbox):
                return found
            self._mailbox, self._rediscover = found, False
        if self._client is None:
            self._client = ctx.client()
        session = self._session
        if session is None:
            session = self._session = MapiSession(
                self._client, self._mailbox, auth=auth_for(self.settings), client_info=self.client_info
            )
        elif session.client is not self._client:
            session.client, session.auth = self._client, auth_for(self.settings)
        session.mailbox = self._mailbox
        reconnect = self._generation > 0
        connect = session.connect()
        self._record(rec, connect)
        if not connect.ok:
            if (connect.error_class or ErrorClass.PROTOCOL) in _TRANSPORT:
                self._client_broken()
                self._rediscover = True
            return connect.error_class or ErrorClass.PROTOCOL, f"Connect: {connect.detail}"
        self._connected = True
        self._generation += 1
        self.reconnects += int(reconnect)
        return None

    def _autodiscover(self, ctx: ProbeContext, rec: Recorder) -> MapiMailbox | _Failure:
        mailbox = self.settings.mailbox or ""
        origin = ctx.target.origin()
        with Session(ctx, rec, ctx.deadline) as discovery:
            found = pox_lookup(discovery, origin + POX_PATH, mailbox, label="Autodiscover: ")
        if found.response is None:
            return found.error_class or ErrorClass.PROTOCOL, f"Autodiscover: {found.detail}"
        usable = mailbox_from_pox(found.response, origin)
        if isinstance(usable, str):
            return ErrorClass.CONTENT, f"Autodiscover: {usable}"
        return usable[0]

    def _client_broken(self) -> None:
        """After a transport error: the next request gets a new client (new connections, new auth flow)."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = None

    def _record(self, rec: Recorder, outcome: MapiOutcome[object]) -> Exchange | None:
        path = self._mailbox.path.partition("?")[0] if self._mailbox is not None else "/mapi/emsmdb/"
        name = f"POST {path} ({outcome.request_type})"
        detail = outcome.detail or "ok"
        exchange = note_auth(rec, outcome.auth, outcome.exchange)
        if exchange is None:
            rec.note(name, ok=outcome.ok, detail=detail, error_class=outcome.error_class)
            return None
        extra = {"response_code": outcome.response_code} if outcome.response_code is not None else {}
        rec.exchange(name, exchange, ok=outcome.ok, detail=detail, error_class=outcome.error_class, **extra)
        return exchange

    # ----------------------------------------------------------------------------- shared with the waiter

    def _publish(self) -> None:
        session = self._session
        with self._state:
            self._cookies = dict(session.cookies) if session is not None and self._connected else {}

    def wait_snapshot(self) -> tuple[int, MapiMailbox, dict[str, str], int | None] | None:
        """What the waiter parks on: (generation, mailbox, cookies, X-PendingPeriod), None while disconnected."""
        with self._state:
            if not self._cookies or self._mailbox is None or self._closed:
                return None
            period = self._session.pending_period_ms if self._session is not None else None
            return self._generation, self._mailbox, dict(self._cookies), period

    def wait_ended(self, generation: int, outcome: MapiOutcome[object]) -> None:
        with self._state:
            if outcome.ok:
                value = outcome.value
                self.wait_state = "answered" if isinstance(value, WaitResult) and not value.parked else "parked"
            elif outcome.context_lost:
                self.wait_state = "context lost"
                if generation == self._generation:
                    self._wait_lost = (generation, outcome.detail)
            else:
                self.wait_state = f"failed ({(outcome.error_class or ErrorClass.PROTOCOL).value})"

    # ------------------------------------------------------------------------------------------------ close

    def close(self, timeout_s: float = 3.0) -> None:
        """Disconnect (which ends the parked wait at the server), stop the waiter, close the clients."""
        got = self._slot_lock.acquire(timeout=timeout_s)
        try:
            with self._state:
                self._closed = True
            session, client = self._session, self._client
            if got and session is not None and client is not None and self._connected:
                client.deadline = time.monotonic() + timeout_s
                with contextlib.suppress(Exception):
                    session.disconnect()
            if got and client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        finally:
            if got:
                self._slot_lock.release()
        if self._waiter is not None:
            self._waiter.stop(timeout_s)


class _Waiter:
    """The parked NotificationWait of one session, in its own thread, on its own client (see the module docstring)."""

    def __init__(self, owner: SessionProbe) -> None:
        self.owner = owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"casprobe-wait-{owner.target.display}", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        if self._started:
            self._thread.join(timeout=timeout_s)  # past that it is abandoned (a daemon); its request ends anyway

    def _run(self) -> None:
        owner = self.owner
        client: ProbeClient | None = None
        view: MapiSession | None = None
        try:
            while not self._stop.is_set():
                snapshot = owner.wait_snapshot()
                if snapshot is None:
                    self._stop.wait(0.2)
                    continue
                generation, mailbox, cookies, period = snapshot
                if client is None or view is None:
                    client = ProbeClient(
                        owner.target,
                        resolver=owner.resolver,
                        options=owner.settings.transport,
                        deadline=time.monotonic(),
                    )
                    view = MapiSession(client, mailbox, auth=auth_for(owner.settings), client_info=owner.client_info)
                view.mailbox, view.cookies, view.pending_period_ms = mailbox, cookies, period
                client.deadline = time.monotonic() + owner.hold_s + 30.0
                started = time.monotonic()
                outcome = view.notification_wait(owner.hold_s)
                if self._stop.is_set():
                    break
                owner.wait_ended(generation, outcome)
                if not outcome.ok and (outcome.error_class or ErrorClass.PROTOCOL) in _TRANSPORT:
                    client.close()
                    client = view = None
                if not outcome.ok or time.monotonic() - started < 0.5:
                    self._stop.wait(1.0 if not outcome.ok else 0.5)  # never hammer a server that answers at once
        except Exception as exc:  # a bug: the waiter ends, the slots go on
            _log.warning("the NotificationWait of %s ended: %s", owner.target.display, type(exc).__name__)
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
