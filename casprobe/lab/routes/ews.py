"""The lab's EWS endpoint: ``POST /ews/exchange.asmx`` (authenticated), answered from the lab's mail store.

Follows the envelope of [MS-OXWSCDATA] (ServerVersionInfo header, ResponseMessages, ResponseCodeType), SOAP 1.1
faults with the EWS detail, and the operations exchangelib 5.6.0 uses (protocols.md §3): ConvertId (version
guess: always the per-message Error form, only the header matters), GetFolder ([MS-OXWSFOLD]), FindItem with
IndexedPageItemView paging, newest first, and simple subject restrictions ([MS-OXWSSRCH]), GetItem and
CreateItem ([MS-OXWSCORE]), ResolveNames over the directory ([MS-OXWSRSLNM]).

Every answer carries ``ServerVersionInfo`` 15.2.1544.4 / ``V2017_07_11`` (an Exchange 2019 CU) and, when the
mailbox is served, the back-end headers (``X-CalculatedBETarget`` / ``X-BEServer``).

Choices where the specs are silent or the lab simplifies (protocols.md §3.3, §6):

- Whose mailbox: every mailbox a request addresses (``t:Mailbox`` of the folder ids, ``X-AnchorMailbox``) must be
  the authenticated user's. Another lab user's → per-message ``ErrorAccessDenied`` (no delegation in the lab); an
  address that is no lab user → ``ErrorNonExistentMailbox``.
- Store availability: when ``world.backend_for(user)`` is None (the database is moving, or its server is off and
  the DAG has not failed over yet), mailbox operations answer per-message ``ErrorMailboxStoreUnavailable`` with
  HTTP 200, as Exchange does while a database is being moved (exchangelib raises it, no retry). ConvertId and
  ResolveNames read the directory only and keep answering.
- Bad input: a body that is not XML or not a SOAP envelope with an EWS operation → HTTP 500 SOAP fault
  ``ErrorSchemaValidation`` (with LineNumber/LinePosition when the parser knows them), the form Exchange uses for
  requests failing schema validation; Content-Type other than ``text/xml`` → 415; a body over 16 MiB → 413
  (refused without holding it); an operation the lab does not implement → HTTP 500 SOAP fault
  ``ErrorInvalidRequest``. A FindItem restriction on anything but the subject → per-message
  ``ErrorUnsupportedQueryFilter``. No input produces a traceback: unexpected errors become an
  ``ErrorInternalServerError`` fault.
"""

from __future__ import annotations

import contextlib
import logging
import re

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from casprobe.lab.mailstore import Folder, Mailbox, Message
from casprobe.lab.org import User
from casprobe.lab.routes.autodiscover import authenticated_user
from casprobe.lab.routes.common import BodyTooLarge, ClientDisconnect, read_body
from casprobe.lab.world import Backend, LabWorld
from casprobe.protocols.ews import FolderInfo, FolderRef, ItemInfo, MailboxInfo, ServerVersionInfo
from casprobe.protocols.ews_getitem import (
    FullMessage,
    UnsupportedRestriction,
    build_get_item_response,
    parse_get_item_ids,
    parse_restriction,
)
from casprobe.protocols.ews_server import (
    EwsRequest,
    MessageError,
    build_create_item_response,
    build_error_response,
    build_fault,
    build_find_item_response,
    build_get_folder_response,
    build_resolve_names_response,
    parse_ews_request,
)
from casprobe.protocols.xmlsafe import XmlCodecError, XmlLimits

__all__ = ["EWS_SERVER_VERSION", "MAX_BODY", "routes"]

log = logging.getLogger(__name__)

EWS_SERVER_VERSION = ServerVersionInfo(15, 2, 1544, 4, "V2017_07_11")
MAX_BODY = 16 * 1024 * 1024
_LIMITS = XmlLimits(max_bytes=MAX_BODY, max_depth=32, max_elements=50_000)
_MAX_PAGE = 1000
_XML_TYPES = ("text/xml",)
_IMPLEMENTED = frozenset({"ConvertId", "GetFolder", "FindItem", "GetItem", "CreateItem", "ResolveNames"})
_FOLDER_KINDS = {"calendar": "CalendarFolder", "contacts": "ContactsFolder", "tasks": "TasksFolder"}
_LINE_COL = re.compile(r"line (\d+), column (\d+)")


def _xml(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="text/xml; charset=utf-8", headers=headers)


def _fault(code: str, message: str, *, line: int | None = None, position: int | None = None) -> Response:
    body = build_fault(code, message, line=line, position=position, server_version=EWS_SERVER_VERSION)
    return _xml(body, 500)


def _schema_fault(exc: Exception) -> Response:
    text = str(exc)
    match = _LINE_COL.search(text)
    line = int(match.group(1)) if match else None
    position = int(match.group(2)) + 1 if match else None
    return _fault(
        "ErrorSchemaValidation", f"The request failed schema validation: {text}", line=line, position=position
    )


class _Context:
    """One request's view of the world: the user, their mailbox and where it is served from."""

    def __init__(self, world: LabWorld, user: User, backend: Backend | None) -> None:
        self.world = world
        self.user = user
        self.backend = backend

    @property
    def mailbox(self) -> Mailbox:
        return self.world.mail.mailbox(self.user.smtp)

    def access_error(self, addresses: list[str]) -> MessageError | None:
        """ErrorNonExistentMailbox / ErrorAccessDenied when a request addresses another mailbox."""
        for address in addresses:
            target = self.world.org.find_user(address)
            if target is None:
                return MessageError("ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it.")
            if target != self.user:
                return MessageError("ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        if self.backend is None:
            return MessageError(
                "ErrorMailboxStoreUnavailable", "The mailbox database is temporarily unavailable., Cannot open mailbox."
            )
        return None


def _folder_info(box: Mailbox, folder: Folder) -> FolderInfo:
    if folder.distinguished == "msgfolderroot":
        children = box.child_folder_count
    elif folder.distinguished == "root":
        children = 1
    else:
        children = 0
    return FolderInfo(
        folder_id=folder.folder_id,
        change_key=folder.change_key,
        display_name=folder.display_name,
        folder_class=folder.folder_class or None,
        total_count=len(folder.messages),
        child_folder_count=children,
        unread_count=folder.unread,
        kind=_FOLDER_KINDS.get(folder.distinguished, "Folder"),
    )


def _received(msg: Message) -> str:
    return msg.received.strftime("%Y-%m-%dT%H:%M:%SZ")


def _get_folder(ctx: _Context, req: EwsRequest) -> bytes:
    refs = req.folder_ids or (FolderRef("root"),)
    denied = ctx.access_error([r.mailbox for r in refs if r.mailbox])
    results: list[FolderInfo | MessageError] = []
    for ref in refs:
        folder = None if denied else ctx.mailbox.folder(ref.id)
        if denied:
            results.append(denied)
        elif folder is None:
            results.append(MessageError("ErrorFolderNotFound", "The specified folder could not be found in the store."))
        else:
            results.append(_folder_info(ctx.mailbox, folder))
    return build_get_folder_response(results, server_version=EWS_SERVER_VERSION)


def _find_item(ctx: _Context, req: EwsRequest, body: bytes) -> bytes:
    query = req.find_item
    assert query is not None
    refs = query.parent_folder_ids
    denied = ctx.access_error([r.mailbox for r in refs if r.mailbox])
    if denied or not refs:
        error = denied or MessageError("ErrorInvalidRequest", "FindItem needs ParentFolderIds.")
        return build_find_item_response(error, server_version=EWS_SERVER_VERSION)
    folder = ctx.mailbox.folder(refs[0].id)
    if folder is None:
        error = MessageError("ErrorFolderNotFound", "The specified folder could not be found in the store.")
        return build_find_item_response(error, server_version=EWS_SERVER_VERSION)
    try:
        restriction = parse_restriction(body, limits=_LIMITS)
    except UnsupportedRestriction as exc:
        error = MessageError("ErrorUnsupportedQueryFilter", f"The lab cannot evaluate this restriction: {exc}")
        return build_find_item_response(error, server_version=EWS_SERVER_VERSION)
    shallow = query.traversal in (None, "Shallow")
    matching = [m for m in reversed(folder.messages) if shallow and (restriction is None or restriction(m.subject))]
    size = min(query.max_entries or _MAX_PAGE, _MAX_PAGE)
    page = matching[query.offset : query.offset + size]
    items = [ItemInfo(m.item_id, m.change_key, m.subject, _received(m), m.is_read) for m in page]
    return build_find_item_response(
        items, total_items_in_view=len(matching), offset=query.offset, server_version=EWS_SERVER_VERSION
    )


def _get_item(ctx: _Context, body: bytes) -> bytes:
    ids = parse_get_item_ids(body, limits=_LIMITS)
    denied = ctx.access_error([])
    index = {m.item_id: (f, m) for f in ctx.mailbox.folders.values() for m in f.messages} if not denied else {}
    results: list[FullMessage | MessageError] = []
    for item_id in ids:
        found = index.get(item_id)
        if denied:
            results.append(denied)
        elif found is None:
            results.append(MessageError("ErrorItemNotFound", "The specified object was not found in the store."))
        else:
            folder, m = found
            results.append(
                FullMessage(
                    m.item_id,
                    m.change_key,
                    folder.folder_id,
                    m.subject,
                    m.body,
                    _received(m),
                    m.sender,
                    m.to,
                    m.is_read,
                )
            )
    return build_get_item_response(results, server_version=EWS_SERVER_VERSION)


def _create_item(ctx: _Context, req: EwsRequest) -> bytes:
    create = req.create_item
    assert create is not None
    saved = create.saved_item_folder
    denied = ctx.access_error([saved.mailbox] if saved is not None and saved.mailbox else [])
    if denied or not create.messages:
        error = denied or MessageError("ErrorInvalidItemForOperation", "The lab only creates Message items.")
        return build_create_item_response([error], server_version=EWS_SERVER_VERSION)
    disposition = create.message_disposition or "SaveOnly"
    results: list[ItemInfo | MessageError | None] = []
    for new in create.messages:
        subject, text = new.subject or "", new.body or ""
        if disposition in ("SendAndSaveCopy", "SendOnly"):
            ctx.world.deliver(ctx.user, subject, text, new.to_recipients, disposition == "SendAndSaveCopy")
            results.append(None)
            continue
        folder = ctx.mailbox.folder(saved.id) if saved is not None else None
        target = folder.distinguished if folder is not None else "drafts"
        msg = ctx.mailbox.add(target, subject, text, ctx.user.smtp, new.to_recipients)
        msg.is_read = True
        results.append(ItemInfo(msg.item_id, msg.change_key))
    return build_create_item_response(results, server_version=EWS_SERVER_VERSION)


def _resolve_names(ctx: _Context, req: EwsRequest) -> bytes:
    wanted = (req.unresolved_entry or "").strip().lower().removeprefix("smtp:")
    matches = (
        [
            u
            for u in ctx.world.org.users
            if wanted
            and (
                u.smtp.lower().startswith(wanted)
                or u.alias.startswith(wanted)
                or any(part.lower().startswith(wanted) for part in u.display_name.split())
                or u.display_name.lower().startswith(wanted)
            )
        ]
        if wanted
        else []
    )
    infos = [MailboxInfo(u.smtp, u.display_name) for u in matches[:100]]
    return build_resolve_names_response(infos, server_version=EWS_SERVER_VERSION)


def _dispatch(ctx: _Context, req: EwsRequest, body: bytes) -> bytes:
    op = req.operation
    if op == "ConvertId":
        return build_error_response(
            "ConvertId", "ErrorInvalidIdMalformed", "Id is malformed.", server_version=EWS_SERVER_VERSION
        )
    if op == "ResolveNames":
        return _resolve_names(ctx, req)
    if op == "GetFolder":
        return _get_folder(ctx, req)
    if op == "FindItem":
        return _find_item(ctx, req, body)
    if op == "GetItem":
        return _get_item(ctx, body)
    return _create_item(ctx, req)


def routes(world: LabWorld, server: str) -> list[BaseRoute]:
    """``POST /ews/exchange.asmx`` for ``server``."""

    async def exchange_asmx(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type not in _XML_TYPES:
            with contextlib.suppress(BodyTooLarge, ClientDisconnect):
                await read_body(request, MAX_BODY)
            return PlainTextResponse(
                f"Cannot process the message because the content type '{content_type}' was not the expected type "
                "'text/xml; charset=utf-8'.",
                status_code=415,
            )
        try:
            body = await read_body(request, MAX_BODY)
        except BodyTooLarge:
            return PlainTextResponse("Request Entity Too Large", status_code=413, headers={"Connection": "close"})
        except ClientDisconnect:
            return Response(status_code=400)
        user = authenticated_user(world, request)
        if user is None:  # authenticated as someone without a mailbox: no EWS identity
            return _fault("ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it.")
        try:
            req = parse_ews_request(body, limits=_LIMITS)
        except XmlCodecError as exc:
            return _schema_fault(exc)
        if req.operation not in _IMPLEMENTED:
            return _fault("ErrorInvalidRequest", f"The request is invalid: the lab does not implement {req.operation}.")
        backend = world.backend_for(user)
        ctx = _Context(world, user, backend)
        anchor = request.headers.get("x-anchormailbox")
        headers = world.backend_headers(backend)
        if anchor and req.operation not in ("ConvertId", "ResolveNames"):
            denied = ctx.access_error([anchor])
            if denied is not None and denied.code != "ErrorMailboxStoreUnavailable":
                count = max(1, len(req.folder_ids)) if req.operation == "GetFolder" else 1
                return _xml(
                    build_error_response(
                        req.operation, denied.code, denied.text, count=count, server_version=EWS_SERVER_VERSION
                    ),
                    headers=headers,
                )
        try:
            answer = _dispatch(ctx, req, body)
        except XmlCodecError as exc:
            return _schema_fault(exc)
        except Exception:  # never a traceback to the client; the lab log keeps it
            log.exception("EWS %s failed on %s", req.operation, server)
            return _fault("ErrorInternalServerError", "An internal server error occurred. The operation failed.")
        return _xml(answer, headers=headers)

    return [Route("/ews/exchange.asmx", exchange_asmx, methods=["POST"])]
