"""EWS SOAP codec, server (lab) side: request parsing and response builders (no I/O).

Parses what exchangelib 5.6.0 sends (protocols.md §3.2: ConvertId version guess, GetFolder root/inbox
with ``t:Mailbox``, FindItem with IndexedPageItemView, CreateItem SendAndSaveCopy, ResolveNames) and
builds the answers it accepts: ``h:ServerVersionInfo`` in the SOAP header ([MS-OXWSCDATA] types.xsd),
``m:<Op>Response/m:ResponseMessages/m:<Op>ResponseMessage`` with ResponseClass/ResponseCode
([MS-OXWSCDATA] messages.xsd ``ResponseMessageType``), and SOAP 1.1 faults with the EWS detail
(``e:ResponseCode``, ``e:Message``, ``t:MessageXml`` with ``BackOffMilliseconds``; §3.3).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from casprobe.protocols.ews import (
    NS_E,
    NS_M,
    NS_S,
    NS_T,
    PREFIXES,
    EwsCodecError,
    FolderInfo,
    FolderRef,
    ItemInfo,
    MailboxInfo,
    ServerVersionInfo,
    server_version_element,
    soap_parts,
)
from casprobe.protocols.xmlsafe import (
    XmlLimits,
    child,
    child_text,
    children,
    element,
    first_child,
    int_attr,
    local_name,
    namespace_of,
    reraise_as,
    sub,
    text_of,
    to_bytes,
)

__all__ = [
    "CreateItemRequest",
    "EwsRequest",
    "FindItemQuery",
    "MessageError",
    "NewMessage",
    "build_create_item_response",
    "build_error_response",
    "build_fault",
    "build_find_item_response",
    "build_get_folder_response",
    "build_resolve_names_response",
    "parse_ews_request",
]

REQUEST_LIMITS = XmlLimits(max_bytes=1024 * 1024, max_depth=32, max_elements=20_000)
_MAX_IDS = 100  # exchangelib chunks at 100 per request


@dataclass(frozen=True, slots=True)
class FindItemQuery:
    """The FindItem parameters the lab needs.

    Attributes:
        traversal: ``Traversal`` attribute (Shallow, SoftDeleted, Associated).
        base_shape: ItemShape/BaseShape (IdOnly, Default, AllProperties).
        max_entries / offset: IndexedPageItemView MaxEntriesReturned / Offset (None if no view).
        parent_folder_ids: ParentFolderIds.
    """

    traversal: str | None
    base_shape: str | None
    max_entries: int | None
    offset: int
    parent_folder_ids: tuple[FolderRef, ...]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """One ``t:Message`` of a CreateItem request.

    Attributes:
        subject, body, body_type: the message text; to_recipients: ToRecipients email addresses.
    """

    subject: str | None
    body: str | None
    body_type: str | None
    to_recipients: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CreateItemRequest:
    """The CreateItem parameters the lab needs.

    Attributes:
        message_disposition: SaveOnly | SendOnly | SendAndSaveCopy (None if absent).
        saved_item_folder: SavedItemFolderId, if given; messages: the Message items.
    """

    message_disposition: str | None
    saved_item_folder: FolderRef | None
    messages: tuple[NewMessage, ...]


@dataclass(frozen=True, slots=True)
class EwsRequest:
    """A parsed EWS request.

    Attributes:
        operation: local name of the first Body child, e.g. ``GetFolder``.
        requested_version: header RequestServerVersion/@Version.
        mailbox: first ``t:Mailbox/t:EmailAddress`` in the body, if any.
        time_zone: header TimeZoneContext/TimeZoneDefinition/@Id.
        folder_ids: GetFolder FolderIds (also FindItem ParentFolderIds).
        find_item, create_item, unresolved_entry: per-operation details (None for other operations).
    """

    operation: str
    requested_version: str | None
    mailbox: str | None = None
    time_zone: str | None = None
    folder_ids: tuple[FolderRef, ...] = ()
    find_item: FindItemQuery | None = None
    create_item: CreateItemRequest | None = None
    unresolved_entry: str | None = None


@dataclass(frozen=True, slots=True)
class MessageError:
    """A per-message error to answer with (ResponseClass="Error" unless response_class says otherwise).

    Attributes:
        code: ResponseCode, e.g. ``ErrorMailboxStoreUnavailable``; text: MessageText.
        response_class: ``Error`` or ``Warning``.
    """

    code: str
    text: str = ""
    response_class: str = "Error"


# --- request parsing --------------------------------------------------------------------------------


def _folder_refs(container: ET.Element | None) -> tuple[FolderRef, ...]:
    if container is None:
        return ()
    refs: list[FolderRef] = []
    for elem in container:
        name = local_name(elem)
        if namespace_of(elem) != NS_T or name not in ("DistinguishedFolderId", "FolderId"):
            continue
        if not elem.get("Id"):
            raise EwsCodecError(f"{name} without Id")
        mailbox = child(elem, NS_T, "Mailbox")
        refs.append(
            FolderRef(
                id=elem.get("Id", ""),
                distinguished=name == "DistinguishedFolderId",
                change_key=elem.get("ChangeKey"),
                mailbox=None if mailbox is None else child_text(mailbox, NS_T, "EmailAddress", max_len=1024),
            )
        )
        if len(refs) > _MAX_IDS:
            raise EwsCodecError(f"more than {_MAX_IDS} folder ids")
    return tuple(refs)


def _find_item(op: ET.Element) -> FindItemQuery:
    shape = child(op, NS_M, "ItemShape")
    view = child(op, NS_M, "IndexedPageItemView")
    return FindItemQuery(
        traversal=op.get("Traversal"),
        base_shape=None if shape is None else child_text(shape, NS_T, "BaseShape", max_len=32),
        max_entries=None if view is None else int_attr(view, "MaxEntriesReturned", minimum=1),
        offset=0 if view is None else int_attr(view, "Offset") or 0,
        parent_folder_ids=_folder_refs(child(op, NS_M, "ParentFolderIds")),
    )


def _create_item(op: ET.Element) -> CreateItemRequest:
    saved = _folder_refs(child(op, NS_M, "SavedItemFolderId"))
    items = child(op, NS_M, "Items")
    messages: list[NewMessage] = []
    for msg in children(items, NS_T, "Message") if items is not None else ():
        body = child(msg, NS_T, "Body")
        recipients = child(msg, NS_T, "ToRecipients")
        to = (
            tuple(
                addr
                for mbx in children(recipients, NS_T, "Mailbox")
                if (addr := child_text(mbx, NS_T, "EmailAddress", max_len=1024))
            )
            if recipients is not None
            else ()
        )
        messages.append(
            NewMessage(
                subject=child_text(msg, NS_T, "Subject", max_len=65536),
                body=None if body is None else text_of(body, max_len=1024 * 1024),
                body_type=None if body is None else body.get("BodyType"),
                to_recipients=to,
            )
        )
    return CreateItemRequest(op.get("MessageDisposition"), saved[0] if saved else None, tuple(messages))


@reraise_as(EwsCodecError)
def parse_ews_request(data: bytes | str, *, limits: XmlLimits = REQUEST_LIMITS) -> EwsRequest:
    """Parse an EWS SOAP request (any prefixes) as the lab receives it; bad documents raise."""
    header, body = soap_parts(data, limits)
    op = first_child(body)
    if op is None or namespace_of(op) != NS_M:
        raise EwsCodecError("SOAP Body holds no EWS messages-namespace operation")
    version = time_zone = None
    if header is not None:
        rsv = child(header, NS_T, "RequestServerVersion")
        version = None if rsv is None else rsv.get("Version")
        tzc = child(header, NS_T, "TimeZoneContext")
        tzd = None if tzc is None else child(tzc, NS_T, "TimeZoneDefinition")
        time_zone = None if tzd is None else tzd.get("Id")
    mailbox = None
    for mbx in op.iter(f"{{{NS_T}}}Mailbox"):
        mailbox = child_text(mbx, NS_T, "EmailAddress", max_len=1024)
        if mailbox:
            break
    operation = local_name(op)
    find_item = _find_item(op) if operation == "FindItem" else None
    return EwsRequest(
        operation=operation,
        requested_version=version,
        mailbox=mailbox,
        time_zone=time_zone,
        folder_ids=(find_item.parent_folder_ids if find_item else _folder_refs(child(op, NS_M, "FolderIds"))),
        find_item=find_item,
        create_item=_create_item(op) if operation == "CreateItem" else None,
        unresolved_entry=(
            child_text(op, NS_M, "UnresolvedEntry", max_len=1024) if operation == "ResolveNames" else None
        ),
    )


# --- response builders ------------------------------------------------------------------------------


def _envelope(payload: ET.Element, server_version: ServerVersionInfo | None) -> bytes:
    env = element(NS_S, "Envelope")
    if server_version is not None:
        sub(env, NS_S, "Header").append(server_version_element(server_version))
    sub(env, NS_S, "Body").append(payload)
    return to_bytes(env, PREFIXES)


_Fill = Callable[[ET.Element, Any], None]


def _response(
    operation: str, results: Sequence[Any], fill: _Fill | None, server_version: ServerVersionInfo | None
) -> bytes:
    """One ResponseMessage per result: MessageError -> error message, else ``fill(message, result)``."""
    resp = element(NS_M, f"{operation}Response")
    messages = sub(resp, NS_M, "ResponseMessages")
    for result in results:
        if isinstance(result, MessageError):
            msg = sub(messages, NS_M, f"{operation}ResponseMessage", attrs={"ResponseClass": result.response_class})
            sub(msg, NS_M, "MessageText", result.text or result.code)
            sub(msg, NS_M, "ResponseCode", result.code)
            sub(msg, NS_M, "DescriptiveLinkKey", "0")
            if fill is not None and result.response_class == "Warning":
                fill(msg, result)
            continue
        msg = sub(messages, NS_M, f"{operation}ResponseMessage", attrs={"ResponseClass": "Success"})
        sub(msg, NS_M, "ResponseCode", "NoError")
        if fill is not None:
            fill(msg, result)
    return _envelope(resp, server_version)


def build_error_response(
    operation: str, code: str, text: str = "", *, count: int = 1, server_version: ServerVersionInfo | None = None
) -> bytes:
    """``count`` error messages for ``operation`` (e.g. ConvertId ErrorInvalidIdMalformed, §3.2)."""
    return _response(operation, [MessageError(code, text)] * count, None, server_version)


def _folder_element(info: FolderInfo) -> ET.Element:
    folder = element(NS_T, info.kind)
    attrs = {"Id": info.folder_id} | ({"ChangeKey": info.change_key} if info.change_key else {})
    sub(folder, NS_T, "FolderId", attrs=attrs)
    for local, value in (
        ("FolderClass", info.folder_class),
        ("DisplayName", info.display_name),
        ("TotalCount", info.total_count),
        ("ChildFolderCount", info.child_folder_count),
        ("UnreadCount", info.unread_count),
    ):
        if value is not None:
            sub(folder, NS_T, local, str(value))
    return folder


def build_get_folder_response(
    results: Sequence[FolderInfo | MessageError], *, server_version: ServerVersionInfo | None
) -> bytes:
    """GetFolder: one message per requested folder, in request order."""

    def fill(msg: ET.Element, info: FolderInfo) -> None:
        sub(msg, NS_M, "Folders").append(_folder_element(info))

    return _response("GetFolder", results, fill, server_version)


def _item_element(info: ItemInfo) -> ET.Element:
    item = element(NS_T, info.kind)
    attrs = {"Id": info.item_id} | ({"ChangeKey": info.change_key} if info.change_key else {})
    sub(item, NS_T, "ItemId", attrs=attrs)
    if info.subject is not None:
        sub(item, NS_T, "Subject", info.subject)
    if info.datetime_received is not None:
        sub(item, NS_T, "DateTimeReceived", info.datetime_received)
    if info.is_read is not None:
        sub(item, NS_T, "IsRead", "true" if info.is_read else "false")
    return item


def build_find_item_response(
    items: Sequence[ItemInfo] | MessageError,
    *,
    total_items_in_view: int | None = None,
    offset: int = 0,
    server_version: ServerVersionInfo | None,
) -> bytes:
    """FindItem for one parent folder: RootFolder paging attributes + Items (or one error message)."""
    if isinstance(items, MessageError):
        return _response("FindItem", [items], None, server_version)
    page = list(items)
    total = len(page) + offset if total_items_in_view is None else total_items_in_view

    def fill(msg: ET.Element, _: object) -> None:
        attrs = {
            "IndexedPagingOffset": str(offset + len(page)),
            "TotalItemsInView": str(total),
            "IncludesLastItemInRange": "true" if offset + len(page) >= total else "false",
        }
        sub(sub(msg, NS_M, "RootFolder", attrs=attrs), NS_T, "Items").extend([_item_element(i) for i in page])

    return _response("FindItem", [page], fill, server_version)


def build_create_item_response(
    results: Sequence[ItemInfo | MessageError | None], *, server_version: ServerVersionInfo | None
) -> bytes:
    """CreateItem: one message per created item; None = empty ``m:Items`` (as for SendAndSaveCopy)."""

    def fill(msg: ET.Element, info: ItemInfo | None) -> None:
        items = sub(msg, NS_M, "Items")
        if info is not None:
            items.append(_item_element(info))

    return _response("CreateItem", results, fill, server_version)


def build_resolve_names_response(
    resolutions: Sequence[MailboxInfo], *, server_version: ServerVersionInfo | None
) -> bytes:
    """ResolveNames: no match -> ErrorNameResolutionNoResults; several -> Warning MultipleResults."""
    if not resolutions:
        error = MessageError("ErrorNameResolutionNoResults", "No results were found.")
        return _response("ResolveNames", [error], None, server_version)

    def fill(msg: ET.Element, _: object) -> None:
        n = str(len(resolutions))
        attrs = {"IndexedPagingOffset": n, "TotalItemsInView": n, "IncludesLastItemInRange": "true"}
        rset = sub(msg, NS_M, "ResolutionSet", attrs=attrs)
        for info in resolutions:
            mbx = sub(sub(rset, NS_T, "Resolution"), NS_T, "Mailbox")
            if info.name is not None:
                sub(mbx, NS_T, "Name", info.name)
            sub(mbx, NS_T, "EmailAddress", info.email_address)
            for local, value in (("RoutingType", info.routing_type), ("MailboxType", info.mailbox_type)):
                if value is not None:
                    sub(mbx, NS_T, local, value)

    if len(resolutions) > 1:
        text = "Multiple results were found."
        return _response(
            "ResolveNames", [MessageError("ErrorNameResolutionMultipleResults", text, "Warning")], fill, server_version
        )
    return _response("ResolveNames", [None], fill, server_version)


def build_fault(
    response_code: str,
    message: str,
    *,
    back_off_ms: int | None = None,
    line: int | None = None,
    position: int | None = None,
    violation: str | None = None,
    server_version: ServerVersionInfo | None = None,
) -> bytes:
    """A SOAP Fault, e.g. ErrorServerBusy with BackOffMilliseconds or ErrorSchemaValidation with line info."""
    fault = element(NS_S, "Fault")
    # faultcode is a QName in the types namespace (Exchange writes "a:ErrorServerBusy" with a = types).
    sub(fault, None, "faultcode", f"t:{response_code}")
    sub(fault, None, "faultstring", message, {"{http://www.w3.org/XML/1998/namespace}lang": "en-US"})
    detail = sub(fault, None, "detail")
    sub(detail, NS_E, "ResponseCode", response_code)
    sub(detail, NS_E, "Message", message)
    msg_xml = element(NS_T, "MessageXml")
    if back_off_ms is not None:
        sub(msg_xml, NS_T, "Value", str(back_off_ms), {"Name": "BackOffMilliseconds"})
    for local, value in (("LineNumber", line), ("LinePosition", position), ("Violation", violation)):
        if value is not None:
            sub(msg_xml, NS_T, local, str(value))
    if len(msg_xml):
        detail.append(msg_xml)
    env = element(NS_S, "Envelope")
    if server_version is not None:
        sub(env, NS_S, "Header").append(server_version_element(server_version))
    sub(env, NS_S, "Body").append(fault)
    return to_bytes(env, PREFIXES | {"e": NS_E})
