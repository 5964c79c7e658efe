"""The lab's EMSMDB request types: Connect, Execute, Disconnect, NotificationWait, PING.

Follows [MS-OXCMAPIHTTP] v20181211 2.2.4.1-2.2.4.4 and 2.2.6 (bodies), 3.2.5.2 (framing, keep-alives), 3.2.5.6
(reconnect), 3.2.2 (NotificationWait returns on an event or when its timer elapses); [MS-OXCRPC] 3.1.4.1
(Connect ErrorCode), 3.1.4.2 (Execute); [MS-OXCROPS] 2.2.3.1 (RopLogon, redirect form 2.2.3.1.4), 2.2.15.3
(RopRelease, no response) and 2.2.1 (ROP buffers); [MS-OXCDATA] 2.2.1.1 (Folder ID = ReplicaId ‖ GlobalCounter).
The lab's choices are listed in :mod:`casprobe.lab.routes.mapi`.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from starlette.responses import Response

from casprobe.lab.routes.mapi import (
    Handler,
    MapiCall,
    done_block,
    end_context,
    failure,
    framed,
    immediate,
    ping,
    session_of,
    set_context_cookies,
    wait_either,
)
from casprobe.lab.routes.mapi_sessions import Endpoint, Session, store_for
from casprobe.lab.world import LabWorld
from casprobe.protocols.mapierrors import (
    EC_ACCESS_DENIED,
    EC_BUFFER_TOO_SMALL,
    EC_INVALID_PARAM,
    EC_LOGIN_FAILURE,
    EC_LOGIN_PERM,
    EC_MDB_NOT_INIT,
    EC_NOT_SUPPORTED,
    EC_RPC_FORMAT,
    EC_UNKNOWN_USER,
)
from casprobe.protocols.mapiframing import PENDING, PROCESSING
from casprobe.protocols.mapihttp import (
    EXECUTE_FLAG_NO_XOR_MAGIC,
    ConnectRequest,
    ConnectResponse,
    DisconnectRequest,
    DisconnectResponse,
    ExecuteRequest,
    ExecuteResponse,
    MapiCodecError,
    NotificationWaitRequest,
    NotificationWaitResponse,
    ResponseCode,
)
from casprobe.protocols.rops import (
    LOGON_FLAG_PRIVATE,
    ROP_ID_LOGON,
    LogonError,
    LogonRedirect,
    LogonResponse,
    LogonSuccess,
    LogonTime,
    RopLogonRequest,
    build_rop_buffer,
    parse_rop_buffer,
)

__all__ = ["POLLS_MAX", "RETRY_COUNT", "RETRY_DELAY", "handlers"]

POLLS_MAX = 60000
RETRY_COUNT = 6
RETRY_DELAY = 10000
ROP_ID_RELEASE = 0x01
MAX_ROPS = 255
# ROPs whose response echoes OutputHandleIndex (request byte 3) rather than InputHandleIndex (byte 2).
_OUTPUT_HANDLE_ROPS = frozenset({0x02, 0x03, 0x04, 0x05, 0x06, 0x0C, 0x1C, 0x22, 0x23, 0x2B, 0x3E, 0x69, 0x70})
# Well-known folder global counters of a private mailbox, in RopLogon response order (gromox's numbering).
_FOLDER_COUNTERS = (0x01, 0x02, 0x03, 0x09, 0x0D, 0x0E, 0x0F, 0x0A, 0x08, 0x04, 0x05, 0x06, 0x07)
_REPL_ID = 1


def _folder_id(counter: int) -> int:
    raw = _REPL_ID.to_bytes(2, "little") + counter.to_bytes(6, "big")
    return int.from_bytes(raw, "little")


async def _connect(call: MapiCall) -> Response:
    try:
        request = ConnectRequest.decode(call.body)
    except MapiCodecError as exc:
        return failure(call.world, call.echo, ResponseCode.INVALID_REQUEST_BODY, str(exc), backend=call.backend)
    store = store_for(call.world)
    old = call.request.cookies.get("MapiContext")
    old_id = store.context_id_of(old) if old is not None else None
    if old_id is not None:  # reconnect: the old context dies, its sequence cookie is ignored (3.2.5.6)
        store.destroy(old_id)
    user = call.user
    caller = call.caller
    error = 0
    if request.flags & 0x1:
        error = EC_LOGIN_PERM
    elif request.user_dn.lower() != caller.legacy_dn.lower() or caller != user:
        error = EC_ACCESS_DENIED
    elif call.backend is None:
        error = EC_MDB_NOT_INIT
    if error or call.backend is None:
        return immediate(call, ConnectResponse(error_code=error or EC_MDB_NOT_INIT).encode())
    session, sequence = store.create(Endpoint.EMSMDB, user, call.principal, call.backend)
    dn_prefix = call.world.org.server(call.backend.server).server_dn
    body = ConnectResponse(
        error_code=0,
        polls_max=POLLS_MAX,
        retry_count=RETRY_COUNT,
        retry_delay=RETRY_DELAY,
        dn_prefix=dn_prefix,
        display_name=user.display_name,
    ).encode()
    response = immediate(call, body)
    set_context_cookies(response, Endpoint.EMSMDB, store.context_cookie(session), sequence)
    return response


def _logon(world: LabWorld, session: Session, request: RopLogonRequest, handles: list[int]) -> LogonResponse:
    index = request.output_handle_index
    if not request.logon_flags & LOGON_FLAG_PRIVATE:
        return LogonError(EC_NOT_SUPPORTED, index)
    target = world.org.find_user(request.essdn) if request.essdn else None
    if target is None or target.legacy_dn.lower() != request.essdn.lower():
        return LogonError(EC_UNKNOWN_USER, index)
    if target != session.user:
        elsewhere = world.backend_for(target)
        if elsewhere is None:
            return LogonError(EC_MDB_NOT_INIT, index)
        if elsewhere.server != session.backend:
            return LogonRedirect(world.org.server(elsewhere.server).server_dn, index, request.logon_flags)
        return LogonError(EC_LOGIN_FAILURE, index)
    if index >= len(handles):
        return LogonError(EC_INVALID_PARAM, index)
    handles[index] = store_for(world).allocate_handle(session)
    mailbox_guid = uuid.UUID(session.user.mailbox_guid)
    return LogonSuccess(
        folder_ids=tuple(_folder_id(c) for c in _FOLDER_COUNTERS),
        logon_time=LogonTime.from_datetime(datetime.now(UTC)),
        output_handle_index=index,
        logon_flags=request.logon_flags,
        mailbox_guid=mailbox_guid,
        repl_id=_REPL_ID,
        repl_guid=uuid.uuid5(mailbox_guid, "replica"),
    )


def _process_rops(world: LabWorld, session: Session, rops: bytes, handles: list[int]) -> bytes:
    """Run the RopsList; returns the response RopsList. Raises MapiCodecError on undecodable ROPs."""
    out: list[bytes] = []
    pos = 0
    for _ in range(MAX_ROPS):
        if pos >= len(rops):
            break
        rop_id = rops[pos]
        if rop_id == ROP_ID_LOGON:
            request, pos = RopLogonRequest.decode_from(rops, pos)
            out.append(_logon(world, session, request, handles).encode())
        elif rop_id == ROP_ID_RELEASE:
            if len(rops) - pos < 3:
                raise MapiCodecError("truncated RopRelease")
            pos += 3
        else:
            offset = 3 if rop_id in _OUTPUT_HANDLE_ROPS else 2
            index = rops[pos + offset] if pos + offset < len(rops) else 0
            out.append(struct.pack("<BBI", rop_id, index, EC_NOT_SUPPORTED))
            break
    return b"".join(out)


async def _execute(call: MapiCall) -> Response:
    try:
        request = ExecuteRequest.decode(call.body)
    except MapiCodecError as exc:
        return failure(call.world, call.echo, ResponseCode.INVALID_REQUEST_BODY, str(exc), backend=call.backend)
    session = session_of(call)
    store = store_for(call.world)
    try:
        payload = parse_rop_buffer(request.rop_buffer)
        handles = list(payload.handles)
        rops_out = _process_rops(call.world, session, payload.rops, handles)
        rop_buffer = build_rop_buffer(rops_out, handles, xor_magic=not request.flags & EXECUTE_FLAG_NO_XOR_MAGIC)
        response = ExecuteResponse(error_code=0, flags=0, rop_buffer=rop_buffer)
        if len(rop_buffer) > request.max_rop_out:
            response = ExecuteResponse(error_code=EC_BUFFER_TOO_SMALL)
    except (MapiCodecError, ValueError):
        response = ExecuteResponse(error_code=EC_RPC_FORMAT)
    store.mark_seen(session)
    result = immediate(call, response.encode())
    set_context_cookies(result, Endpoint.EMSMDB, None, store.rotate_sequence(session))
    return result


async def _disconnect(call: MapiCall) -> Response:
    return await end_context(call, DisconnectRequest, DisconnectResponse(error_code=0).encode())


_ALIVE_CHECK_S = 1.0


async def _notification_wait(call: MapiCall) -> Response:
    try:
        NotificationWaitRequest.decode(call.body)
    except MapiCodecError as exc:
        return failure(call.world, call.echo, ResponseCode.INVALID_REQUEST_BODY, str(exc), backend=call.backend)
    world, session = call.world, session_of(call)
    store = store_for(world)
    since = store.seen_changes(session)
    wake = store.begin_wait(session)
    period = max(world.config.pending_period_ms / 1000.0, 0.05)

    async def produce() -> AsyncIterator[bytes]:
        try:
            yield PROCESSING
            loop = asyncio.get_running_loop()
            deadline = loop.time() + world.config.notification_wait_s
            code, pending = 0, False
            last_beat = loop.time()
            while True:
                if not store.alive(session):
                    code = ResponseCode.CONTEXT_NOT_FOUND
                    break
                if world.change_counter(session.user) > since:
                    pending = True
                    break
                now = loop.time()
                remaining = deadline - now
                if remaining <= 0 or wake.is_set():
                    break
                beat_in = last_beat + period - now
                if beat_in <= 0:
                    yield PENDING
                    last_beat = now
                    continue
                # wake at least every _ALIVE_CHECK_S: a database move ends the wait with code 10 within that
                slice_s = min(remaining, beat_in, _ALIVE_CHECK_S)
                await wait_either(world.wait_for_change(session.user, since, slice_s), wake)
            if code:
                yield done_block(call, b"", response_code=code)
            else:
                yield done_block(call, NotificationWaitResponse(error_code=0, event_pending=pending).encode())
        finally:
            store.end_wait(session, wake)

    return framed(call, produce())


def handlers() -> dict[str, tuple[Handler, bool]]:
    """Lower-cased X-RequestType → (handler, needs a context)."""
    return {
        "connect": (_connect, False),
        "execute": (_execute, True),
        "disconnect": (_disconnect, True),
        "notificationwait": (_notification_wait, True),
        "ping": (ping, True),
    }
