"""Reading one MAPI/HTTP answer (status, X-ResponseCode, framing, body) into the typed outcome of a request.

Follows [MS-OXCMAPIHTTP] v20181211: 2.2.2.2 and 2.2.3.3.3 (HTTP 200 for success *and* non-exceptional failures,
the code in ``X-ResponseCode``, ``text/html`` when it is not 0), 2.2.7 / 3.1.5.6 / 3.2.5.2 (PROCESSING, PENDING
keep-alives, DONE, additional headers that may carry a late non-zero X-ResponseCode, then the body; parsed as it
arrives, independently of chunk boundaries) and 2.2.4 (success form StatusCode 0 + ErrorCode; failure form
StatusCode != 0). The checks run in the order a server can fail, each with its class: 401 → ``auth``; another
HTTP status → ``http_status``; X-ResponseCode != 0 → ``protocol`` (with the code's spec name); wrong Content-Type,
bad framing, a late X-ResponseCode, an undecodable body, StatusCode != 0, ErrorCode != 0 (with its ``ec*`` name)
→ ``protocol``. Used by :mod:`casprobe.probes.mapisession`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import httpx

from casprobe.model import ErrorClass
from casprobe.net.authreport import AuthReport
from casprobe.net.transport import Exchange
from casprobe.probes.authflow import auth_failure_detail
from casprobe.protocols.mapierrors import error_code_name
from casprobe.protocols.mapiframing import FramedResponse, FramedResponseParser
from casprobe.protocols.mapihttp import (
    MapiCodecError,
    RequestType,
    ResponseCode,
    describe_response_code,
    parse_response_code,
)

__all__ = [
    "MEDIA_TYPE",
    "Failed",
    "FrameReader",
    "MapiOutcome",
    "Parked",
    "Reply",
    "WaitResult",
    "check_reply",
    "decode_body",
    "success",
]

MEDIA_TYPE = "application/mapi-http"
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class WaitResult:
    """How a NotificationWait ended.

    Attributes:
        event_pending: the server's EventPending (None when the wait was still parked at the client's limit).
        parked: the client stopped reading at its own limit while the server was still holding the request.
        held_s: seconds from sending to the end (the answer, or the client's limit).
        keepalives: PENDING meta-tags read. max_gap_s: the longest time between two meta-tags (None if < 2).
    """

    event_pending: bool | None
    parked: bool
    held_s: float
    keepalives: int
    max_gap_s: float | None = None


@dataclass(frozen=True, slots=True)
class MapiOutcome(Generic[T_co]):
    """The result of one MAPI/HTTP request of a session.

    Attributes:
        request_type: ``Connect``, ``Execute``, ``NotificationWait``, ``PING``, ``Disconnect``.
        ok: the request did what it should.
        value: the decoded answer (ConnectResponse, the RopLogon response, WaitResult…), also on a failure
            that had one (a Connect with ErrorCode ecMdbNotInit, a LogonRedirect).
        error_class, detail: why it failed (``detail`` may note something on success too).
        exchange: the HTTP exchange (None when no answer came).
        response_code: X-ResponseCode (a non-zero one of the DONE block wins over the header's 0).
        error_code: the body's ErrorCode, or the RopLogon ReturnValue, when decoded.
        auth: the authentication flow's report for this request.
    """

    request_type: str
    ok: bool
    value: T_co | None = None
    error_class: ErrorClass | None = None
    detail: str = ""
    exchange: Exchange | None = None
    response_code: int | None = None
    error_code: int | None = None
    auth: AuthReport | None = None

    @property
    def context_lost(self) -> bool:
        """X-ResponseCode 10 (Context Not Found): reconnect (3.2.5.6)."""
        return self.response_code == ResponseCode.CONTEXT_NOT_FOUND


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer that passed :func:`check_reply`: the exchange, its inner stream, when it started."""

    exchange: Exchange
    framed: FramedResponse
    auth: AuthReport | None
    started: float
    max_gap: float | None


class Failed(Exception):
    """A failed request, carrying the fields of its outcome (control flow inside the session only)."""

    def __init__(
        self,
        error_class: ErrorClass,
        detail: str,
        reply: Reply | tuple[Exchange | None, AuthReport | None] | None = None,
        response_code: int | None = None,
        error_code: int | None = None,
        value: object = None,
    ) -> None:
        super().__init__(detail)
        self.error_class, self.detail = error_class, detail
        self.exchange, self.auth = (reply.exchange, reply.auth) if isinstance(reply, Reply) else reply or (None, None)
        self.response_code, self.error_code, self.value = response_code, error_code, value

    def outcome(self, kind: RequestType) -> MapiOutcome[Any]:
        fields = (self.error_class, self.detail, self.exchange, self.response_code, self.error_code, self.auth)
        return MapiOutcome(kind.value, False, self.value, *fields)


class Parked(Exception):
    """A NotificationWait still held by the server when the client's limit came (a success)."""

    def __init__(self, result: WaitResult, auth: AuthReport | None) -> None:
        super().__init__("parked")
        self.result, self.auth = result, auth


class FrameReader:
    """Feeds the body to the framing parser as it arrives (``ProbeClient.request(on_chunk=…)``), timing tags.

    A parse error is kept, not raised: an HTML error page lands here too, and is judged after the HTTP checks.
    """

    def __init__(self, max_body: int) -> None:
        self.parser = FramedResponseParser(max_body=max_body)
        self.error: MapiCodecError | None = None
        self.times: list[float] = []

    def feed(self, chunk: bytes) -> None:
        if self.error is not None:
            return
        try:
            tags = self.parser.feed(chunk)
        except MapiCodecError as exc:
            self.error = exc
            return
        now = time.monotonic()
        self.times.extend(now for _ in tags)

    def max_gap(self) -> float | None:
        gaps = [b - a for a, b in zip(self.times, self.times[1:], strict=False)]
        return max(gaps) if gaps else None


def success(kind: RequestType, value: T, reply: Reply, error_code: int | None = 0) -> MapiOutcome[T]:
    """The outcome of a request that did what it should."""
    return MapiOutcome(kind.value, True, value, None, "", reply.exchange, 0, error_code, reply.auth)


def check_reply(
    exchange: Exchange, reader: FrameReader, report: AuthReport | None, auth: httpx.Auth | None
) -> FramedResponse:
    """The inner stream of an answer, or :class:`Failed` at the first check it does not pass."""
    where = (exchange, report)
    status = exchange.status
    if status == 401:
        raise Failed(ErrorClass.AUTH, auth_failure_detail(report, auth), where)
    if status != 200:
        cas = exchange.headers.get("x-caserrorcode")
        raise Failed(ErrorClass.HTTP_STATUS, f"HTTP {status}" + (f" (X-CasErrorCode {cas[:80]})" if cas else ""), where)
    try:
        code = parse_response_code(exchange.headers.get("x-responsecode", ""))
    except MapiCodecError:
        raise Failed(ErrorClass.PROTOCOL, "HTTP 200 without a valid X-ResponseCode header", where) from None
    if code != 0:
        raise Failed(ErrorClass.PROTOCOL, f"X-ResponseCode {describe_response_code(code)}", where, code)
    media = exchange.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != MEDIA_TYPE:
        raise Failed(ErrorClass.PROTOCOL, f"X-ResponseCode 0 but Content-Type {media[:60] or 'missing'!r}", where, 0)
    try:
        if reader.error is not None:
            raise reader.error
        framed = reader.parser.finish()
        late = framed.header("X-ResponseCode")
        late_code = 0 if late is None else parse_response_code(late)
    except MapiCodecError as exc:
        raise Failed(ErrorClass.PROTOCOL, f"malformed response framing: {exc}", where, 0) from None
    if late_code != 0:
        detail = f"X-ResponseCode {describe_response_code(late_code)} (in the DONE block)"
        raise Failed(ErrorClass.PROTOCOL, detail, where, late_code)
    return framed


class _HasCodes(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def error_code(self) -> int: ...


R = TypeVar("R", bound=_HasCodes)


def decode_body(reply: Reply, decoder: Callable[[bytes], R]) -> R:
    """The typed body; an undecodable one, the failure form (StatusCode != 0) or ErrorCode != 0 raise Failed."""
    try:
        value = decoder(reply.framed.body)
    except MapiCodecError as exc:
        raise Failed(ErrorClass.PROTOCOL, f"malformed response body: {exc}", reply, 0) from None
    if value.status_code != 0:
        raise Failed(ErrorClass.PROTOCOL, f"StatusCode {value.status_code} (failure form)", reply, 0)
    if value.error_code != 0:
        detail = f"ErrorCode {error_code_name(value.error_code)}"
        raise Failed(ErrorClass.PROTOCOL, detail, reply, 0, value.error_code, value)
    return value
