"""The lab's address book endpoint (NSPI over MAPI/HTTP): Bind, Unbind and PING; the rest refused politely.

Follows [MS-OXCMAPIHTTP] v20181211 2.2.5.1 (Bind), 2.2.5.2 (Unbind), 2.2.6 (PING), 3.2.5.1 and 3.2.5.6 (contexts
and reconnect, shared with EMSMDB through :mod:`.mapi_sessions`).

Lab choices: Bind creates a context (cookies ``MapiContext`` / ``MapiSequence`` with path ``/mapi/nspi``) tied
to the mailbox's active copy like an EMSMDB one; ServerGuid is the GUID of the server holding that copy; Bind
when no mounted copy is reachable answers HTTP 503 (the proxy has nowhere to send it). The other NSPI request
types of 2.2.3.3.1 need a context and answer the failure-form body (StatusCode ecNotSupported) with
X-ResponseCode 0, since the lab keeps no address book.
"""

from __future__ import annotations

import uuid

from starlette.responses import Response

from casprobe.lab.routes.mapi import Handler, MapiCall, end_context, failure, immediate, ping, set_context_cookies
from casprobe.lab.routes.mapi_sessions import CONTEXT_COOKIE, Endpoint, store_for
from casprobe.protocols.mapierrors import EC_NOT_SUPPORTED
from casprobe.protocols.mapihttp import (
    NSPI_REQUEST_TYPES,
    BindRequest,
    BindResponse,
    MapiCodecError,
    RequestType,
    ResponseCode,
    UnbindRequest,
    UnbindResponse,
)

__all__ = ["handlers"]


async def _bind(call: MapiCall) -> Response:
    try:
        BindRequest.decode(call.body)
    except MapiCodecError as exc:
        return failure(call.world, call.echo, ResponseCode.INVALID_REQUEST_BODY, str(exc), backend=call.backend)
    store = store_for(call.world)
    old = call.request.cookies.get(CONTEXT_COOKIE)
    old_id = store.context_id_of(old) if old is not None else None
    if old_id is not None:
        store.destroy(old_id)
    if call.backend is None:
        return failure(call.world, call.echo, 0, "no mailbox server holds this mailbox now", http_status=503)
    session, sequence = store.create(Endpoint.NSPI, call.user, call.principal, call.backend)
    server_guid = uuid.UUID(call.world.org.server(call.backend.server).guid)
    response = immediate(call, BindResponse(error_code=0, server_guid=server_guid).encode())
    set_context_cookies(response, Endpoint.NSPI, store.context_cookie(session), sequence)
    return response


async def _unbind(call: MapiCall) -> Response:
    return await end_context(call, UnbindRequest, UnbindResponse(error_code=0).encode())


async def _not_supported(call: MapiCall) -> Response:
    return immediate(call, UnbindResponse(status_code=EC_NOT_SUPPORTED).encode())


def handlers() -> dict[str, tuple[Handler, bool]]:
    """Lower-cased X-RequestType → (handler, needs a context)."""
    table: dict[str, tuple[Handler, bool]] = {t.value.lower(): (_not_supported, True) for t in NSPI_REQUEST_TYPES}
    table[RequestType.BIND.value.lower()] = (_bind, False)
    table[RequestType.UNBIND.value.lower()] = (_unbind, True)
    table[RequestType.PING.value.lower()] = (ping, True)
    return table
