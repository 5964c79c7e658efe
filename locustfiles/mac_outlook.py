"""Outlook for Mac on EWS as a Locust user, through exchangelib (an EWS client independent of casprobe's codecs).

    locust -f locustfiles/mac_outlook.py --headless -u 50 -r 10 -t 10m --casprobe-lab ~/.local/state/casprobe/lab \\
        --casprobe-cohorts namespace=3,mb1=1 --casprobe-records run.jsonl --csv run

Each simulated client ([MS-OXWSCORE], [MS-OXWSFOLD], [MS-OXWSSRCH]; protocols.md §3): its own mailbox account
(taken in turn from the accounts file), its cohort's host name (the namespace or one server's own name, as
Autodiscover would hand out ``https://mb1.contoso.com/EWS/Exchange.asmx``), and its own exchangelib ``Account``
and ``Protocol``, so its own session pool of one TCP connection, authenticated once (NTLM, channel binding sent
by requests-ntlm; ``--casprobe-auth basic`` for Basic; ``negotiate`` falls back to NTLM: exchangelib's Kerberos
needs requests-gssapi). Tasks, one EWS request each (the NTLM legs aside), reported as ``EWS <Operation>``:

- ``GetFolder`` (weight 3): the distinguished inbox, by ``DistinguishedFolderId`` with the mailbox; the very first
  one of a client fetches the ``root`` first (its own GetFolder, as exchangelib does);
- ``FindItem`` (weight 3): the 5 newest items of the inbox (subject and received time);
- ``CreateItem`` (weight 1): a small message to itself, ``MessageDisposition="SendAndSaveCopy"`` (the first one of
  a client fetches Sent Items first: exchangelib saves the copy there by its id).

Choices where exchangelib or the brief are silent:

- exchangelib's ``Protocol()`` returns one cached instance per (EWS URL, credentials) for the whole process
  (``CachingProtocol``), so clients sharing a mailbox and a host would silently share one session pool, i.e. one
  TCP connection. Each client therefore gets a ``Protocol`` of its own (built without the cache, the cache entry
  the ``Account`` made dropped at once) and closes its connections in ``on_stop``.
- Trust: an ``HTTPAdapter`` that always verifies against the profile's CA (or the default bundle when the profile
  names none; no verification only when the profile says ``insecure``), whatever ``REQUESTS_CA_BUNDLE`` says, and
  never goes through a proxy from the environment (as casprobe's own clients). Timeout: ``--casprobe-timeout``.
- Retry policy ``FailFast``: a 503, a refused connection or a busy server fails the request at once (never a
  sleep inside exchangelib), so every failure shows when it happens. The server version is pinned (Exchange
  2016 API), so no ConvertId version guess is sent.
- Failures are counted under ``<class>: <detail>`` with casprobe's error classes (:class:`~casprobe.model.
  ErrorClass`) and a detail of bounded variety (no URLs, ids or times), so Locust's failure table stays readable:
  the transport below exchangelib (``connect``, ``timeout``, ``tls``, ``dns``) is found by walking the exception
  chain; ``auth`` for a 401 or ``ErrorAccessDenied``; ``http_status`` for an unexpected HTTP status (503, 302,
  ``X-CasErrorCode``); ``protocol`` for EWS error responses and faults (``ErrorMailboxStoreUnavailable`` while
  a database moves) and malformed answers; ``internal`` for anything else (a bug; still counted, never raised).
- Users are numbered per client kind (``LoadState.next_index("mac")``): a Mac user's cohort and account depend
  only on how many Mac users came before it, not on how Locust's dispatcher interleaved the two classes.
- Size: the answers' ``Content-Length`` (0 when chunked); the bodies are not read early, because requests-ntlm
  reads the 401's socket for the channel binding.
- gevent's cached loop clock is refreshed at ``init`` (``_shared``): Locust imports locustfiles without running the
  loop, and exchangelib's import (1-3 s) would otherwise make ``-t`` end the run that much early.
"""

from __future__ import annotations

import functools
import logging
import random
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import requests.adapters
from _shared import report, state
from exchangelib import BASIC, DELEGATE, NTLM, Account, Build, Configuration, FailFast, Message, Version
from exchangelib import Credentials as EwsCredentials
from exchangelib.folders import Inbox
from exchangelib.protocol import CachingProtocol, Protocol
from locust import User, task

from casprobe.errors import CasprobeError
from casprobe.load.ews_errors import classify
from casprobe.load.outlook import RequestReport
from casprobe.load.tracker import DisconnectTracker
from casprobe.model import ErrorClass
from casprobe.probes.ews import EWS_PATH

log = logging.getLogger("casprobe.load")

KIND = "EWS"
CLIENT = "outlook-mac"
PINNED_VERSION = Version(build=Build(15, 1, 0, 0))  # Exchange 2016 API; the server's header updates it
FIND_ITEMS = 5
_MAX_DETAIL = 120

# ----------------------------------------------------------------------------------------------- exchangelib plumbing


class _Meter:
    """Bytes of the answers one client received during one operation (every leg, 401s included), as their
    Content-Length headers say (0 for a chunked answer)."""

    def __init__(self) -> None:
        self.received = 0


class _TrustAdapter(requests.adapters.HTTPAdapter):
    """Verifies with the profile's trust (``trust``: a CA file, True for the default bundle, False only when the
    profile says insecure) whatever ``verify`` requests derived from the environment; never a proxy."""

    trust: str | bool = True
    meter: _Meter | None = None

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        response = super().send(request, stream=stream, timeout=timeout, verify=self.trust, cert=cert, proxies={})
        if self.meter is not None:  # the header, not the body: requests-ntlm reads the 401's socket for the CBT
            length = response.headers.get("Content-Length", "")
            self.meter.received += int(length) if length.isdigit() and len(length) < 12 else 0
        return response


class _ClientProtocol(Protocol):
    """An exchangelib Protocol for one client: its adapter trusts the profile's CA and meters the answers."""

    meter: _Meter
    opened: weakref.WeakSet[requests.Session]

    def create_session(self) -> Any:
        session = super().create_session()
        adapter = session.get_adapter(self.service_endpoint)
        if isinstance(adapter, _TrustAdapter):
            adapter.meter = self.meter
        self.opened.add(session)
        return session

    def close_all(self) -> None:
        """Close the pool and any session a killed request still held (a user stopped mid-request)."""
        self.close()
        for session in list(self.opened):
            session.close()


@functools.cache
def _protocol_class(ca_file: Path | None, insecure: bool) -> type[_ClientProtocol]:
    trust: str | bool = False if insecure else (str(ca_file) if ca_file is not None else True)
    adapter = type("ProfileTrustAdapter", (_TrustAdapter,), {"trust": trust})
    return type("ClientProtocol", (_ClientProtocol,), {"HTTP_ADAPTER_CLS": adapter})


def _own_protocol(account: Account, config: Configuration, cls: type[_ClientProtocol], timeout: float) -> Any:
    """Give ``account`` a Protocol of its own (exchangelib's ``Protocol()`` is a per-process cache keyed by URL and
    credentials: clients sharing a mailbox would share one session pool) and drop the cache entry it made."""
    shared = account.protocol
    own = type.__call__(cls, config=config)  # the plain constructor, around CachingProtocol.__call__
    own.meter = _Meter()
    own.opened = weakref.WeakSet()
    own.TIMEOUT = timeout
    account.protocol = own
    with CachingProtocol._protocol_cache_lock:
        cached = CachingProtocol._protocol_cache.get(CachingProtocol._cache_key(config))
        if cached is not None and cached[0] is shared:
            del CachingProtocol._protocol_cache[CachingProtocol._cache_key(config)]
    return own


# ----------------------------------------------------------------------------------------------- the user


class MacOutlookUser(User):
    """One Outlook for Mac (EWS through exchangelib)."""

    weight = 1

    def wait_time(self) -> float:
        """Think time between EWS calls (``--casprobe-think``, 2-5 s by default)."""
        try:
            low, high = state(self.environment).get_settings().think_s
        except CasprobeError:
            low, high = 2.0, 5.0
        return random.uniform(low, high)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.account: Account | None = None
        self.protocol: Any = None
        self.tracker: DisconnectTracker | None = None
        self.cohort = ""
        self.name = ""
        self.smtp = ""
        self.root: Any = None
        self.inbox: Any = None
        self.sent_ready = False
        self.sent_count = 0

    def on_start(self) -> None:
        started = time.perf_counter()
        try:
            self._set_up()
        except Exception as exc:  # settings or exchangelib refused the configuration: counted, the user stays idle
            self.account = self.protocol = None
            self._done("Setup", started, exc)

    def _set_up(self) -> None:
        load = state(self.environment)
        settings = load.get_settings()
        index = load.next_index("mac")
        cohort = settings.cohorts.assign(index)
        account = settings.accounts[index % len(settings.accounts)]
        self.cohort, self.smtp = cohort.label, account.smtp
        self.name = f"{load.tag}-mac-{index}"
        self.tracker = load.tracker(cohort.label, self.name, CLIENT, cohort.host)
        port = settings.profile.port
        netloc = cohort.host if port in (None, 443) else f"{cohort.host}:{port}"
        config = Configuration(
            service_endpoint=f"https://{netloc}{EWS_PATH}",
            credentials=EwsCredentials(account.credentials.username, account.credentials.secret.reveal()),
            auth_type=BASIC if settings.auth == "basic" else NTLM,
            version=PINNED_VERSION,
            retry_policy=FailFast(),
            max_connections=1,
        )
        self.account = Account(self.smtp, config=config, autodiscover=False, access_type=DELEGATE)
        tls = settings.transport.tls
        self.protocol = _own_protocol(
            self.account, config, _protocol_class(tls.ca_file, tls.insecure), settings.transport.timeout_s
        )

    # ------------------------------------------------------------------------------------------- tasks

    @task(3)
    def get_folder(self) -> None:
        self._folders_ready(refresh=True)

    @task(3)
    def find_item(self) -> None:
        if not self._folders_ready(refresh=False):
            return
        inbox = self.inbox
        self._call(
            "FindItem",
            lambda: list(inbox.all().order_by("-datetime_received").only("subject", "datetime_received")[:FIND_ITEMS]),
        )

    @task(1)
    def create_item(self) -> None:
        account = self.account
        if account is None or not self._folders_ready(refresh=False):
            return
        if not self.sent_ready:  # exchangelib saves the copy in Sent Items by id: fetched once, reported alone
            if not self._call("GetFolder", lambda: account.sent):
                return
            self.sent_ready = True
        self.sent_count += 1
        subject = f"casprobe load {self.name} #{self.sent_count}"
        message = Message(account=account, subject=subject, body="casprobe load test", to_recipients=[self.smtp])
        self._call("CreateItem", message.send_and_save)

    def on_stop(self) -> None:
        protocol, self.protocol, self.account = self.protocol, None, None
        try:
            if protocol is not None:
                protocol.close_all()  # the client's own sessions: its connection
        except Exception as exc:
            log.debug("casprobe: closing %s: %s", self.name, exc.__class__.__name__)
        finally:
            if self.tracker is not None:
                self.tracker.finish()

    # ------------------------------------------------------------------------------------------- plumbing

    def _folders_ready(self, *, refresh: bool) -> bool:
        """Fetch the root once, then the inbox (again when ``refresh``); True when the inbox is known."""
        account = self.account
        if account is None:
            return False
        if self.root is None:
            root = self._value("GetFolder", lambda: account.root)
            if root is None:
                return False
            self.root = root
        if self.inbox is None or refresh:
            root = self.root
            inbox = self._value("GetFolder", lambda: Inbox.get_distinguished(root=root))
            if inbox is None:
                return False
            self.inbox = inbox
        return True

    def _value(self, name: str, call: Callable[[], Any]) -> Any:
        result: list[Any] = []
        self._call(name, lambda: result.append(call()))
        return result[0] if result else None

    def _call(self, name: str, call: Callable[[], object]) -> bool:
        """One EWS operation: timed, reported to Locust and to the tracker; True when it worked. Never raises."""
        started = time.perf_counter()
        if self.protocol is not None:
            self.protocol.meter.received = 0
        try:
            call()
        except Exception as exc:  # every failure is data: classified, counted, never raised into Locust
            self._done(name, started, exc)
            return False
        self._done(name, started, None)
        return True

    def _done(self, name: str, started: float, exc: Exception | None) -> None:
        elapsed = (time.perf_counter() - started) * 1000.0
        size = self.protocol.meter.received if self.protocol is not None else 0
        error: str | None = None
        try:
            if exc is not None:
                error_class, detail = classify(exc)
                error = f"{error_class.value}: {detail}"[:_MAX_DETAIL]
                if self.tracker is not None:
                    self.tracker.failed(error_class.value, error)
            elif self.tracker is not None:
                self.tracker.worked()
        except Exception as bug:  # a bug in the classification must not take the user down either
            error = f"{ErrorClass.INTERNAL.value}: {bug.__class__.__name__}"
        report(self.environment, RequestReport(KIND, name, elapsed, size, error, self.cohort))
