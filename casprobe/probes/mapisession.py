"""A MAPI/HTTP client session on the mailbox endpoint (EMSMDB), as Outlook drives one: sync, small, reusable.

Follows [MS-OXCMAPIHTTP] v20181211 (protocols.md §2):

- 2.2.2 / 2.2.3.2-2.2.3.3 requests: ``POST`` with ``Content-Type: application/mapi-http``, ``X-RequestType``,
  ``X-RequestId`` (``{GUID}:n``, one GUID per session context, n + 1 per HTTP request), ``X-ClientInfo``
  (``{GUID}:n``, one GUID per client instance, n + 1 per new session context), ``X-ClientApplication``;
- 3.1.5.1 cookies: every cookie the server set is sent back on every later request of the context; a Connect
  that sets cookies replaces them all (a reconnect must not mix old and new cookies, 3.1.5.7 / 3.2.5.6);
- 2.2.2.2 / 2.2.3.3.3 responses: HTTP 200 for success *and* non-exceptional failures, the code in
  ``X-ResponseCode``; 2.2.7 / 3.2.5.2 framing (PROCESSING, PENDING keep-alives, DONE, additional headers that may
  carry a late non-zero X-ResponseCode, then the body), parsed as it arrives;
- 2.2.4 bodies (Connect, Execute, Disconnect, NotificationWait; PING has none, 2.2.6) and a RopLogon
  ([MS-OXCROPS] 2.2.3.1) in the Execute RopBuffer ([MS-OXCRPC] 2.2.2.1);
- 3.2.2 / 3.2.5.5: a NotificationWait is held by the server until an event or its own limit (5 min); the client
  reads keep-alives meanwhile, so its read timeout honours ``X-PendingPeriod`` (§7.4 of protocols.md).

Every method returns a :class:`~casprobe.probes.mapireply.MapiOutcome` and never raises for what the server or
the network does (transport failures are classified by :func:`casprobe.net.transport.classify`). An outcome with
``context_lost`` (X-ResponseCode 10) means the server no longer knows the context: call :meth:`MapiSession.connect`
again, which carries the old cookies as a reconnect should (3.2.5.6). One request at a time per session (3.2.5.1).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import httpx

from casprobe.model import ErrorClass
from casprobe.net.transport import DeadlineExceeded, Exchange, HttpClient, classify
from casprobe.probes.authflow import last_report
from casprobe.probes.mapireply import (
    MEDIA_TYPE,
    Failed,
    FrameReader,
    MapiOutcome,
    Parked,
    Reply,
    WaitResult,
    check_reply,
    decode_body,
    success,
)
from casprobe.protocols.mapierrors import error_code_name
from casprobe.protocols.mapihttp import (
    ConnectRequest,
    ConnectResponse,
    DisconnectRequest,
    DisconnectResponse,
    ExecuteRequest,
    ExecuteResponse,
    GuidCounter,
    MapiCodecError,
    NotificationWaitRequest,
    NotificationWaitResponse,
    RequestType,
    ResponseCode,
)
from casprobe.protocols.rops import (
    LogonRedirect,
    LogonResponse,
    RopLogonRequest,
    build_rop_buffer,
    decode_rop_logon_response_from,
    parse_rop_buffer,
)

__all__ = ["CLIENT_APPLICATION", "MAX_BODY", "MapiMailbox", "MapiOutcome", "MapiSession", "WaitResult"]

CLIENT_APPLICATION = "Outlook/16.0.17928.20114"
MAX_BODY = 1024 * 1024  # a RopLogon answer is ~200 bytes; Outlook asks for at most 0x10008 per Execute
_MAX_COOKIES = 32
_MAX_COOKIE = 4096
_NO_HANDLE = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class MapiMailbox:
    """What a session needs to know about the mailbox (from Autodiscover's mapiHttp MailStore, or given).

    Attributes:
        user_dn: the user's legacyExchangeDN (Connect UserDn, RopLogon Essdn).
        path: the EMSMDB path and query to POST to, e.g. ``/mapi/emsmdb/?MailboxId=<guid>@<domain>``.
        mailbox_id: the MailboxId of that query, when there is one.
    """

    user_dn: str
    path: str
    mailbox_id: str | None = None


class MapiSession:
    """One session context on the EMSMDB endpoint of one mailbox, over one HTTP client
    (:class:`~casprobe.net.transport.ProbeClient` for probes, :class:`~casprobe.net.wire.WireClient` for load).

    ``auth`` goes with every request and its report is read after each (NTLM state lives in the client's
    connections). After a Connect: ``cookies``, ``server_application``, ``expiration_ms``, ``pending_period_ms``;
    ``connected`` until Disconnect, a failed Connect or a lost context (X-ResponseCode 10).
    """

    def __init__(
        self,
        client: HttpClient,
        mailbox: MapiMailbox,
        *,
        auth: httpx.Auth | None = None,
        client_info: uuid.UUID | None = None,
        client_application: str = CLIENT_APPLICATION,
        max_body: int = MAX_BODY,
    ) -> None:
        self.client = client
        self.mailbox = mailbox
        self.auth = auth
        self.client_application = client_application
        self.max_body = max_body
        self.cookies: dict[str, str] = {}
        self.connected = False
        self.server_application: str | None = None
        self.expiration_ms: int | None = None
        self.pending_period_ms: int | None = None
        self._client_info = GuidCounter(client_info or uuid.uuid4(), 0)
        self._request_id = GuidCounter(uuid.uuid4(), 0)

    # ----------------------------------------------------------------------------------------------- requests

    def connect(self, *, code_page: int = 1252, lcid: int = 1033) -> MapiOutcome[ConnectResponse]:
        """Connect (2.2.4.1): a new session context; with cookies still held it is a reconnect (3.2.5.6)."""
        self._client_info = self._client_info.next()
        self._request_id = GuidCounter(uuid.uuid4(), 0)
        kind = RequestType.CONNECT
        try:
            reply = self._send(kind, ConnectRequest(self.mailbox.user_dn, 0, code_page, lcid, lcid).encode(), True)
            value = decode_body(reply, ConnectResponse.decode)
        except Failed as failed:
            self.connected = False
            return failed.outcome(kind)
        self.connected = True
        return success(kind, value, reply)

    def execute_logon(self) -> MapiOutcome[LogonResponse]:
        """Execute (2.2.4.2) with one private-mailbox RopLogon ([MS-OXCROPS] 2.2.3.1) for the user's mailbox."""
        kind = RequestType.EXECUTE
        rops = build_rop_buffer(RopLogonRequest(self.mailbox.user_dn).encode(), [_NO_HANDLE])
        try:
            reply = self._send(kind, ExecuteRequest(rops).encode())
            execute = decode_body(reply, ExecuteResponse.decode)
            try:
                logon, _end = decode_rop_logon_response_from(parse_rop_buffer(execute.rop_buffer).rops)
            except (MapiCodecError, ValueError) as exc:
                detail = f"malformed RopLogon response: {exc}"
                raise Failed(ErrorClass.PROTOCOL, detail, reply, 0) from None
        except Failed as failed:
            return failed.outcome(kind)
        code = logon.return_value
        if code == 0:
            return success(kind, logon, reply)
        detail = f"RopLogon ReturnValue {error_code_name(code)}"
        if isinstance(logon, LogonRedirect):
            detail += f": the mailbox is on {logon.server_name}"
        return Failed(ErrorClass.PROTOCOL, detail, reply, 0, code, logon).outcome(kind)

    def notification_wait(self, hold_s: float) -> MapiOutcome[WaitResult]:
        """NotificationWait (2.2.4.4), read for at most ``hold_s`` seconds (the server may answer earlier).

        Still held by the server at ``hold_s`` is a success (``value.parked``); the connection is then dropped,
        which ends the wait on the server's side.
        """
        kind = RequestType.NOTIFICATION_WAIT
        try:
            reply = self._send(kind, NotificationWaitRequest().encode(), hold_s=hold_s)
            value = decode_body(reply, NotificationWaitResponse.decode)
        except Parked as parked:
            detail = "still held by the server at the client's limit"
            return MapiOutcome(kind.value, True, parked.result, detail=detail, auth=parked.auth)
        except Failed as failed:
            return failed.outcome(kind)
        held = time.monotonic() - reply.started
        result = WaitResult(value.event_pending, False, held, reply.framed.pending_count, reply.max_gap)
        return success(kind, result, reply)

    def ping(self) -> MapiOutcome[None]:
        """PING (2.2.6): refreshes the context's idle timer; no body either way."""
        try:
            reply = self._send(RequestType.PING, b"")
        except Failed as failed:
            return failed.outcome(RequestType.PING)
        return success(RequestType.PING, None, reply, None)

    def disconnect(self) -> MapiOutcome[DisconnectResponse]:
        """Disconnect (2.2.4.3): the server destroys the context; the session forgets its cookies."""
        kind = RequestType.DISCONNECT
        try:
            reply = self._send(kind, DisconnectRequest().encode())
            value = decode_body(reply, DisconnectResponse.decode)
        except Failed as failed:
            return failed.outcome(kind)
        finally:
            self.connected = False
            self.cookies.clear()
        return success(kind, value, reply)

    # ----------------------------------------------------------------------------------------------- plumbing

    def _headers(self, kind: RequestType) -> dict[str, str]:
        self._request_id = self._request_id.next()
        headers = {
            "Content-Type": MEDIA_TYPE,
            "Accept": "*/*",
            "Accept-Encoding": "identity",  # the framing is read as it arrives
            "X-RequestType": kind.value,
            "X-RequestId": self._request_id.header_value(),
            "X-ClientInfo": self._client_info.header_value(),
            "X-ClientApplication": self.client_application,
        }
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        return headers

    def _send(self, kind: RequestType, body: bytes, new_cookies: bool = False, hold_s: float | None = None) -> Reply:
        """POST one request; return the answer that passed the HTTP and framing checks, or raise Failed/Parked."""
        stream = FrameReader(self.max_body)
        started = time.monotonic()
        until = timeout_s = None
        if hold_s is not None:  # keep-alives come every X-PendingPeriod: never time out between two of them
            until = started + max(hold_s, 0.0)
            timeout_s = max(self.client.options.timeout_s, (self.pending_period_ms or 30000) / 1000.0 + 5.0)
        try:
            exchange = self.client.request(
                "POST",
                self.mailbox.path,
                headers=self._headers(kind),
                content=body,
                max_body=self.max_body,
                auth=self.auth,
                timeout_s=timeout_s,
                deadline=until,
                on_chunk=stream.feed,
            )
        except Exception as exc:  # transport failures are data; classify() is the one map
            report, tags = last_report(self.auth), stream.parser.meta_tags
            timed_out = isinstance(exc, DeadlineExceeded | httpx.TimeoutException)
            if timed_out and until is not None and time.monotonic() >= until - 0.05 and tags[:1] == ("PROCESSING",):
                held = time.monotonic() - started
                raise Parked(WaitResult(None, True, held, tags.count("PENDING"), stream.max_gap()), report) from None
            raise Failed(*classify(exc), (None, report)) from None
        report = last_report(self.auth)
        self._keep_cookies(exchange, replace=new_cookies)
        self._note_headers(exchange)
        try:
            framed = check_reply(exchange, stream, report, self.auth)
        except Failed as failed:
            if failed.response_code == ResponseCode.CONTEXT_NOT_FOUND:
                self.connected = False
            raise
        return Reply(exchange, framed, report, started, stream.max_gap())

    def _keep_cookies(self, exchange: Exchange, *, replace: bool) -> None:
        """Keep each Set-Cookie's name=value, opaque (3.1.5.1: names and values are the server's business)."""
        fresh: dict[str, str] = {}
        for line in exchange.headers.get_list("set-cookie")[:_MAX_COOKIES]:
            name, sep, value = line.partition(";")[0].partition("=")
            name, value = name.strip(), value.strip()
            if sep and name and len(name) + len(value) <= _MAX_COOKIE and (name + value).isprintable():
                fresh[name] = value
        if fresh:
            self.cookies = fresh if replace else {**self.cookies, **fresh}

    def _note_headers(self, exchange: Exchange) -> None:
        headers = exchange.headers
        self.server_application = headers.get("x-serverapplication", self.server_application)
        for attr, header in (("expiration_ms", "x-expirationinfo"), ("pending_period_ms", "x-pendingperiod")):
            value = headers.get(header, "").strip()
            if value.isdigit() and len(value) <= 10:
                setattr(self, attr, int(value))
