"""The lab's MAPI/HTTP endpoints: ``/mapi/emsmdb/`` (mailbox) and ``/mapi/nspi/`` (address book).

Follows [MS-OXCMAPIHTTP] v20181211: 2.2.2 (POST only; HTTP 200 for success *and* non-exceptional failures,
the code in X-ResponseCode, Content-Type ``text/html`` on failure), 2.2.3.2-2.2.3.3 (request and response headers),
2.2.4 (EMSMDB bodies), 2.2.7 and 3.2.5.2 (PROCESSING / PENDING / DONE framing, failures after the initial 200 in
DONE's additional headers), 3.2.5.1 and 3.2.5.6 (session contexts, see :mod:`.mapi_sessions`), 3.2.2 (the
NotificationWait timer); [MS-OXCRPC] 3.1.4.1 (Connect ErrorCode values) and [MS-OXCROPS] 2.2.3.1 / 2.2.15.3
(RopLogon, RopRelease). EMSMDB handlers are in :mod:`.mapi_emsmdb`, NSPI ones in :mod:`.nspi`, contexts in
:mod:`.mapi_sessions`.

Order of checks: verb (2) → MailboxId (HTTP 404 ``X-CasErrorCode: MailboxGuidWithDomainNotFound``, what Exchange's
proxy answers) → identity (8/11) → Content-Type (missing 7, other than ``application/mapi-http`` 4) →
X-RequestType / X-RequestId / X-ClientInfo (missing 7, over-long or non-printable 4) → request type (5) → the
context (13/6/10/15, or HTTP 503) → body (9 past :data:`MAX_BODY`, never held; 12 undecodable). A context is
claimed *before* its body is read, so a request whose body is still arriving already makes the context busy.

Lab choices where the spec is silent (sources: gromox ``emsmdb_interface.cpp``, ``rop_dispatch.cpp``):

- No MailboxId: the authenticated user's own mailbox. Other paths under ``/mapi/``: X-ResponseCode 3.
- Connect: Flags with the admin bit → ecLoginPerm; a UserDn that is not the caller's legacyExchangeDN, or a
  MailboxId of another user (delegate access is not modelled) → ecAccessDenied; no reachable mounted copy →
  ecMdbNotInit (0x476; Exchange logs MapiExceptionMdbOffline ec=1142). All with StatusCode 0 (the ErrorCode is
  the EcDoConnectEx return value), no cookies. PollsMax 60000, RetryCount 6, RetryDelay 10000 (gromox);
  DnPrefix the DN of the server holding the active copy (below the org's administrative group DN).
- A request on a live context whose server is powered off before failover: HTTP 503, no X-ResponseCode.
- Execute: a RopBuffer that does not decode → ErrorCode ecRpcFormat (0x4B6); a response larger than MaxRopOut
  → ErrorCode ecBufferTooSmall; RopLogon for another user's mailbox active on another server → the redirect
  form with the ESSDN of that server; on the same server → ecLoginFailure (no delegate rights); an unknown
  Essdn → ecUnknownUser; a public-folder logon → ecNotSupported. RopRelease has no response. Any other ROP
  stops processing with the generic failure form (RopId, handle index, ecNotSupported).
- PING needs a context (refreshes its idle timer); its body is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from casprobe.lab.org import User
from casprobe.lab.routes.common import BodyTooLarge, ClientDisconnect, read_body
from casprobe.lab.routes.mapi_sessions import (
    CONTEXT_COOKIE,
    SEQUENCE_COOKIE,
    Claim,
    Endpoint,
    Refusal,
    Session,
    store_for,
)
from casprobe.lab.world import Backend, LabWorld
from casprobe.protocols.mapiframing import PROCESSING, build_done_block
from casprobe.protocols.mapihttp import MapiCodecError, ResponseCode

__all__ = [
    "MAX_BODY",
    "SERVER_APPLICATION",
    "Handler",
    "MapiCall",
    "done_block",
    "failure",
    "framed",
    "immediate",
    "routes",
    "serve",
    "session_of",
    "set_context_cookies",
    "wait_either",
]

SERVER_APPLICATION = "Exchange/15.02.1544.004"
MEDIA_TYPE = "application/mapi-http"
# gromox refuses RopBuffers over 0x40000 and aux buffers over 0x1008; 1 MiB leaves room and bounds memory.
MAX_BODY = 1024 * 1024
_MAX_HEADER = 256
_ECHOED = ("X-RequestType", "X-RequestId", "X-ClientInfo")
_ANY_VERB = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


@dataclass(frozen=True, slots=True)
class MapiCall:
    """One admitted request, as the per-type handlers see it (``caller`` authenticated, ``user`` the mailbox)."""

    request: Request
    world: LabWorld
    endpoint: Endpoint
    request_type: str
    principal: str
    caller: User
    user: User
    backend: Backend | None
    body: bytes
    claim: Claim | None
    echo: Mapping[str, str]
    started: datetime
    t0: float


Handler = Callable[[MapiCall], Awaitable[Response]]


def _common_headers(world: LabWorld, echo: Mapping[str, str], backend: Backend | None) -> dict[str, str]:
    headers = dict(echo)
    headers["X-ServerApplication"] = SERVER_APPLICATION
    headers["X-ExpirationInfo"] = str(world.config.expiration_ms)
    headers["Cache-Control"] = "private"
    headers.update(world.backend_headers(backend))
    return headers


def failure(
    world: LabWorld,
    echo: Mapping[str, str],
    code: int,
    reason: str,
    *,
    backend: Backend | None = None,
    http_status: int = 200,
) -> Response:
    """A non-framed failure: HTTP 200 (or ``http_status``), text/html, the code in X-ResponseCode (2.2.2.2)."""
    headers = _common_headers(world, echo, backend)
    if http_status == 200:
        headers["X-ResponseCode"] = str(code)
        title = f"{code} ({ResponseCode(code).spec_name})"
    else:
        title = f"HTTP {http_status}"
    page = f"<html><head><title>{title}</title></head><body><p>{html.escape(reason)}</p></body></html>"
    return PlainTextResponse(page, status_code=http_status, media_type="text/html", headers=headers)


class _FramedStream(StreamingResponse):
    """A chunked MAPI/HTTP response; the producer is closed and the callbacks run however the stream ends."""

    def __init__(self, producer: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        super().__init__(producer, media_type=MEDIA_TYPE, headers=headers)
        self._producer = producer
        self.on_close: list[Callable[[], None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self._producer, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            for callback in self.on_close:
                callback()


def framed(call: MapiCall, producer: AsyncIterator[bytes]) -> Response:
    """A successful (X-ResponseCode 0) framed response whose inner stream ``producer`` yields piece by piece."""
    headers = _common_headers(call.world, call.echo, call.backend)
    headers["X-ResponseCode"] = "0"
    headers["X-PendingPeriod"] = str(call.world.config.pending_period_ms)
    return _FramedStream(producer, headers)


def done_block(call: MapiCall, body: bytes, response_code: int = 0) -> bytes:
    elapsed = int((time.monotonic() - call.t0) * 1000)
    return build_done_block(body, response_code=response_code, elapsed_ms=elapsed, start_time=call.started)


def immediate(call: MapiCall, body: bytes) -> Response:
    """A framed response whose work is already done: PROCESSING, then DONE + additional headers + body."""

    async def produce() -> AsyncIterator[bytes]:
        yield PROCESSING
        yield done_block(call, body)

    return framed(call, produce())


def set_context_cookies(response: Response, endpoint: Endpoint, context: str | None, sequence: str) -> None:
    """Set-Cookie for the context (when given) and the sequence, HttpOnly, scoped to the endpoint's path."""
    if context is not None:
        response.set_cookie(
            CONTEXT_COOKIE, context, path=endpoint.cookie_path, secure=True, httponly=True, samesite=None
        )
    response.set_cookie(SEQUENCE_COOKIE, sequence, path=endpoint.cookie_path, secure=True, httponly=True, samesite=None)


async def _drain(request: Request) -> None:
    with contextlib.suppress(BodyTooLarge, ClientDisconnect):
        await read_body(request, 0)


def _mailbox_id(request: Request) -> str | None:
    for key, value in request.query_params.multi_items():
        if key.lower() == "mailboxid":
            return value
    return None


def _header_problem(request: Request) -> tuple[int, str] | None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return ResponseCode.MISSING_HEADER, "Content-Type is required"
    if content_type.partition(";")[0].strip().lower() != MEDIA_TYPE:
        return ResponseCode.INVALID_HEADER, f"Content-Type must be {MEDIA_TYPE}"
    for name in _ECHOED:
        value = request.headers.get(name)
        if not value:
            return ResponseCode.MISSING_HEADER, f"{name} is required"
        if len(value) > _MAX_HEADER or not value.isascii() or not value.isprintable():
            return ResponseCode.INVALID_HEADER, f"{name} is malformed"
    return None


async def serve(
    request: Request,
    world: LabWorld,
    endpoint: Endpoint,
    handlers: Mapping[str, tuple[Handler, bool]],
) -> Response:
    """The pipeline every MAPI/HTTP request goes through (see the module docstring for the order).

    ``handlers`` maps lower-cased X-RequestType values to (handler, needs_context).
    """
    started, t0 = datetime.now(UTC), time.monotonic()
    echo = {
        name: value
        for name in _ECHOED
        if (value := request.headers.get(name))
        and len(value) <= _MAX_HEADER
        and value.isascii()
        and value.isprintable()
    }
    if request.method != "POST":
        await _drain(request)
        return failure(world, echo, ResponseCode.INVALID_VERB, f"{request.method} is not supported: use POST")
    state = request.scope.get("state")
    principal = state.get("user") if isinstance(state, dict) else None
    caller = world.org.find_user(principal) if isinstance(principal, str) else None
    mailbox = caller
    mailbox_id = _mailbox_id(request)
    if mailbox_id is not None:
        key = mailbox_id.strip().lower()
        mailbox = next((u for u in world.org.users if u.mailbox_id.lower() == key), None)
        if mailbox is None:
            await _drain(request)
            not_found = PlainTextResponse("", status_code=404, media_type="text/html", headers=echo)
            not_found.headers["X-CasErrorCode"] = "MailboxGuidWithDomainNotFound"
            return not_found
    backend = world.backend_for(mailbox) if mailbox is not None else None
    if not isinstance(principal, str):
        await _drain(request)
        return failure(world, echo, ResponseCode.ANONYMOUS_NOT_ALLOWED, "anonymous requests are not accepted")
    if caller is None or mailbox is None:
        await _drain(request)
        return failure(world, echo, ResponseCode.NO_PRIVILEGE, "the caller has no mailbox in this organisation")
    problem = _header_problem(request)
    if problem is not None:
        await _drain(request)
        return failure(world, echo, problem[0], problem[1], backend=backend)
    request_type = request.headers["X-RequestType"]
    entry = handlers.get(request_type.lower())
    if entry is None:
        await _drain(request)
        reason = f"X-RequestType {request_type!r} is not served by /mapi/{endpoint.value}/"
        return failure(world, echo, ResponseCode.INVALID_REQUEST_TYPE, reason, backend=backend)
    handler, needs_context = entry
    store = store_for(world)
    claim: Claim | None = None
    if needs_context:
        waiting = request_type.lower() == "notificationwait"
        outcome = store.claim(
            endpoint, request.cookies, principal, mailbox, exclusive=not waiting, check_sequence=not waiting
        )
        if isinstance(outcome, Refusal):
            await _drain(request)
            return failure(
                world, echo, outcome.response_code, outcome.reason, backend=backend, http_status=outcome.http_status
            )
        claim = outcome
        backend = claim.backend
    response: Response
    try:
        try:
            body = await read_body(request, MAX_BODY)
        except BodyTooLarge:
            response = failure(
                world, echo, ResponseCode.TOO_LARGE, f"request body over {MAX_BODY} bytes", backend=backend
            )
        except ClientDisconnect:
            response = Response(status_code=400)
        else:
            call = MapiCall(
                request,
                world,
                endpoint,
                request_type,
                principal,
                caller,
                mailbox,
                backend,
                body,
                claim,
                echo,
                started,
                t0,
            )
            response = await handler(call)
    except BaseException:
        if claim is not None:
            store.release(claim)
        raise
    if claim is not None:
        if isinstance(response, _FramedStream):
            response.on_close.append(lambda: store.release(claim))
        else:
            store.release(claim)
    return response


def routes(world: LabWorld, server: str) -> list[BaseRoute]:
    """``/mapi/emsmdb/`` and ``/mapi/nspi/`` (with or without the trailing slash), any verb."""
    from casprobe.lab.routes import mapi_emsmdb, nspi

    emsmdb = mapi_emsmdb.handlers()
    address_book = nspi.handlers()

    async def emsmdb_endpoint(request: Request) -> Response:
        return await serve(request, world, Endpoint.EMSMDB, emsmdb)

    async def nspi_endpoint(request: Request) -> Response:
        return await serve(request, world, Endpoint.NSPI, address_book)

    async def invalid_path(request: Request) -> Response:
        await _drain(request)
        return failure(world, {}, ResponseCode.INVALID_PATH, "no MAPI/HTTP endpoint at this path")

    return [
        Route("/mapi/emsmdb/", emsmdb_endpoint, methods=_ANY_VERB),
        Route("/mapi/emsmdb", emsmdb_endpoint, methods=_ANY_VERB),
        Route("/mapi/nspi/", nspi_endpoint, methods=_ANY_VERB),
        Route("/mapi/nspi", nspi_endpoint, methods=_ANY_VERB),
        Route("/mapi/{rest:path}", invalid_path, methods=_ANY_VERB),
    ]


async def wait_either(change: Awaitable[bool], wake: asyncio.Event) -> bool:
    """Await ``change`` unless ``wake`` is set first; cancels whichever is left. True if ``change`` said so."""
    change_task = asyncio.ensure_future(change)
    wake_task = asyncio.ensure_future(wake.wait())
    try:
        await asyncio.wait({change_task, wake_task}, return_when=asyncio.FIRST_COMPLETED)
        return change_task.done() and not change_task.cancelled() and bool(change_task.result())
    finally:
        for task in (change_task, wake_task):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def session_of(call: MapiCall) -> Session:
    assert call.claim is not None
    return call.claim.session


async def ping(call: MapiCall) -> Response:
    """PING (both endpoints): the claim already refreshed the context's idle timer; the answer has no body."""
    return immediate(call, b"")


class _Decodable(Protocol):
    @classmethod
    def decode(cls, data: bytes) -> object: ...


async def end_context(call: MapiCall, request_type: type[_Decodable], response: bytes) -> Response:
    """Disconnect / Unbind: check the body, destroy the context, answer ``response``."""
    try:
        request_type.decode(call.body)
    except MapiCodecError as exc:
        return failure(call.world, call.echo, ResponseCode.INVALID_REQUEST_BODY, str(exc), backend=call.backend)
    store_for(call.world).destroy(session_of(call).context_id)
    return immediate(call, response)
