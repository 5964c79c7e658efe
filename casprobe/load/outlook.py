"""A simulated Windows Outlook on MAPI/HTTP, driven step by step by a load tool (Locust: ``locustfiles/outlook.py``).

It is :class:`~casprobe.probes.mapisession.MapiSession` (casprobe's own codecs and NTLM logic) over a
:class:`~casprobe.net.wire.WireClient`: one TCP connection per simulated client, NTLM (or Negotiate, or Basic) with
channel binding, certificate checks as configured. What it does, as Outlook does ([MS-OXCMAPIHTTP] 3.2.5,
protocols.md §2 and §7):

1. Autodiscover (POX with ``X-MapiHttpCapability: 1``) for the mailbox's user DN and MAPI path, at start and again
   after a connectivity failure (a failed Autodiscover keeps the settings it already had);
2. Connect; then cycles of: a burst of Execute requests (each a RopLogon), a PING every few cycles to keep the
   context alive, and a NotificationWait parked until the next burst is due (the client ends the wait at its own
   limit, which drops the connection: the next request authenticates a new one);
3. on X-ResponseCode 10 (context lost, e.g. after its database moved) Connect again at once, carrying the old
   cookies (3.2.5.6); on a transport failure or an HTTP error, wait a short back-off, then Autodiscover and Connect.

The host the client connects to is its cohort's: the namespace, or one server's own name (as when Autodiscover
hands out ``https://mb1.contoso.com/mapi/...``); the MAPI path comes from Autodiscover. Each request is reported
to ``report`` (for Locust's statistics) and to a :class:`~casprobe.load.tracker.DisconnectTracker`, which turns
failures into disconnect intervals; an interval closes at the first Execute that works again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from casprobe.load.cohorts import Cohort
from casprobe.load.tracker import DisconnectTracker
from casprobe.model import ErrorClass, Target
from casprobe.net.resolve import Resolver
from casprobe.net.transport import TransportOptions, classify
from casprobe.net.wire import WireClient
from casprobe.probes.mapi import mailbox_from_pox
from casprobe.probes.mapireply import MapiOutcome
from casprobe.probes.mapisession import MapiMailbox, MapiSession
from casprobe.protocols.autodiscover import AutodiscoverError, build_pox_request, parse_pox_response

__all__ = ["OutlookBehaviour", "OutlookClient", "RequestReport"]

_POX_PATH = "/autodiscover/autodiscover.xml"
_TRANSPORT = frozenset({ErrorClass.DNS, ErrorClass.CONNECT, ErrorClass.TLS, ErrorClass.TIMEOUT})
_MAX_ERROR = 120


@dataclass(frozen=True, slots=True)
class RequestReport:
    """One request as a load tool counts it: ``kind`` (``MAPI``, ``Autodiscover``), ``name`` (``Execute``…),
    time taken, answer size, and ``error`` (``class: detail``) when it failed."""

    kind: str
    name: str
    elapsed_ms: float
    size: int
    error: str | None
    cohort: str


@dataclass(frozen=True, slots=True)
class OutlookBehaviour:
    """How busy a simulated Outlook is (seconds; ranges are drawn uniformly).

    Attributes: executes_per_burst; idle_s: how long the NotificationWait is parked between bursts; ping_every:
    cycles between PINGs (0 = never); backoff_s: wait after a failure before trying again; rediscover_after:
    consecutive transport failures after which Autodiscover runs again.
    """

    executes_per_burst: int = 3
    idle_s: tuple[float, float] = (5.0, 10.0)
    ping_every: int = 4
    backoff_s: tuple[float, float] = (1.0, 2.0)
    rediscover_after: int = 1


def _error(outcome: MapiOutcome[object]) -> tuple[ErrorClass, str]:
    error_class = outcome.error_class or ErrorClass.PROTOCOL
    return error_class, f"{error_class.value}: {outcome.detail}"[:_MAX_ERROR]


class OutlookClient:
    """One simulated Outlook; call :meth:`step` in a loop, :meth:`stop` at the end."""

    def __init__(
        self,
        *,
        smtp: str,
        auth: httpx.Auth,
        cohort: Cohort,
        autodiscover_host: str,
        port: int,
        resolver: Resolver,
        options: TransportOptions,
        tracker: DisconnectTracker,
        report: Callable[[RequestReport], None],
        behaviour: OutlookBehaviour | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.smtp = smtp
        self.auth = auth
        self.cohort = cohort
        self.behaviour = behaviour or OutlookBehaviour()
        self.tracker = tracker
        self._report = report
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._resolver = resolver
        self._options = options
        self._discovery = Target(autodiscover_host, port=port)
        self.client = WireClient(Target(cohort.host, port=port), resolver=resolver, options=options)
        self.mailbox: MapiMailbox | None = None
        self.session: MapiSession | None = None
        self.cycles = 0
        self._transport_failures = 0
        self._stopped = False

    # ------------------------------------------------------------------------------------------------ driving

    def step(self) -> None:
        """Do the next thing Outlook would: discover, connect, or one work cycle (burst, PING, parked wait)."""
        if self._stopped:
            return
        rediscover = self.mailbox is None or self._transport_failures >= self.behaviour.rediscover_after > 0
        if rediscover and not self._autodiscover() and self.mailbox is None:
            self._back_off()
            return
        session = self.session
        if session is None or not session.connected:
            if not self._connect():
                self._back_off()
                return
            session = self.session
        assert session is not None
        for _ in range(self.behaviour.executes_per_burst):
            outcome = self._timed("Execute", session.execute_logon)
            if outcome.ok:
                self.tracker.worked()
                self._transport_failures = 0
                continue
            if not self._failed(outcome):
                self._back_off()
            return  # context lost: reconnect at the next step, at once
        self.cycles += 1
        every = self.behaviour.ping_every
        if every and self.cycles % every == 0:
            ping = self._timed("PING", session.ping)
            if not ping.ok and not self._failed(ping):
                self._back_off()
                return
        wait = self._timed("NotificationWait", lambda: session.notification_wait(self._draw(self.behaviour.idle_s)))
        if not wait.ok and not self._failed(wait):
            self._back_off()

    def stop(self) -> None:
        """Disconnect (politely, if connected) and close an open disconnect interval as unfinished."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.session is not None and self.session.connected:
                self._timed("Disconnect", self.session.disconnect)
        finally:
            self.client.close()
            self.tracker.finish()

    # ------------------------------------------------------------------------------------------------ steps

    def _autodiscover(self) -> bool:
        """POX Autodiscover through the Autodiscover name; True when it gave usable mapiHttp settings."""
        headers = {"Content-Type": "text/xml; charset=utf-8", "X-MapiHttpCapability": "1", "Accept": "text/xml"}
        started = time.perf_counter()
        error: str | None = None
        size = 0
        client = WireClient(self._discovery, resolver=self._resolver, options=self._options)
        try:
            exchange = client.request(
                "POST",
                _POX_PATH,
                headers=headers,
                content=build_pox_request(self.smtp),
                auth=self.auth,
                deadline=time.monotonic() + self._options.timeout_s * 2,
            )
            size = len(exchange.body)
            if exchange.status != 200:
                error = f"{ErrorClass.HTTP_STATUS.value}: HTTP {exchange.status}"
            else:
                found = mailbox_from_pox(parse_pox_response(exchange.body), self._discovery.origin())
                if isinstance(found, str):
                    error = f"{ErrorClass.CONTENT.value}: {found}"
                else:
                    self.mailbox = found[0]
        except AutodiscoverError as exc:
            error = f"{ErrorClass.CONTENT.value}: {exc}"
        except Exception as exc:  # transport failures are data; classify() is the one map
            error_class, detail = classify(exc)
            error = f"{error_class.value}: {detail}"
        finally:
            client.close()
        self._emit("Autodiscover", "POX", started, size, error)
        if error is None:
            self._transport_failures = 0
            if self.session is not None and self.mailbox is not None:
                self.session.mailbox = self.mailbox
        return error is None

    def _connect(self) -> bool:
        assert self.mailbox is not None
        if self.session is None:
            self.session = MapiSession(self.client, self.mailbox, auth=self.auth)
        outcome = self._timed("Connect", self.session.connect)
        if outcome.ok:
            return True
        self._failed(outcome)
        return False

    def _failed(self, outcome: MapiOutcome[object]) -> bool:
        """Count a failure; True when the client should go on at once (a lost context: reconnect)."""
        error_class, text = _error(outcome)
        self.tracker.failed(error_class.value, text)
        if outcome.context_lost:
            return True
        if error_class in _TRANSPORT or error_class is ErrorClass.HTTP_STATUS:
            self._transport_failures += 1
            if self.session is not None:
                self.session.connected = False
        return False

    # ------------------------------------------------------------------------------------------------ plumbing

    def _timed(self, name: str, call: Callable[[], MapiOutcome[object]]) -> MapiOutcome[object]:
        started = time.perf_counter()
        outcome = call()
        size = len(outcome.exchange.body) if outcome.exchange is not None else 0
        error = None if outcome.ok else _error(outcome)[1]
        self._emit("MAPI", name, started, size, error)
        return outcome

    def _emit(self, kind: str, name: str, started: float, size: int, error: str | None) -> None:
        elapsed = (time.perf_counter() - started) * 1000.0
        self._report(RequestReport(kind, name, elapsed, size, error, self.cohort.label))

    def _draw(self, bounds: tuple[float, float]) -> float:
        low, high = bounds
        return low if high <= low else self._rng.uniform(low, high)

    def _back_off(self) -> None:
        self._sleep(self._draw(self.behaviour.backoff_s))
