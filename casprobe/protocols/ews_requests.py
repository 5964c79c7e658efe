"""EWS SOAP codec, client side: request builders (no I/O).

Builds the requests a probe sends, in the shapes exchangelib 5.6.0 uses (protocols.md §3.1-§3.2):
``t:RequestServerVersion`` header ([MS-OXWSCDATA] ``ExchangeVersionType``), [MS-OXWSFOLD] GetFolder with
distinguished folder ids and ``t:Mailbox``, [MS-OXWSSRCH] FindItem (Shallow, IdOnly,
IndexedPageItemView), the dummy ConvertId used for version discovery, [MS-OXWSRSLNM] ResolveNames and
[MS-OXWSCORE] CreateItem of a Message with SendAndSaveCopy. Responses are parsed by
:func:`casprobe.protocols.ews.parse_ews_response`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from casprobe.protocols.ews import (
    DISTINGUISHED_FOLDER_IDS,
    EXCHANGE_VERSIONS,
    NS_M,
    NS_S,
    NS_T,
    PREFIXES,
    EwsCodecError,
    FolderRef,
)
from casprobe.protocols.xmlsafe import element, reraise_as, sub, to_bytes

__all__ = [
    "FOLDER_PROPERTIES",
    "build_convert_id_request",
    "build_create_item_request",
    "build_find_item_request",
    "build_get_folder_request",
    "build_resolve_names_request",
    "folder_ref_element",
    "soap_envelope",
]


def soap_envelope(body_child: ET.Element, header_children: Sequence[ET.Element] = ()) -> bytes:
    """Wrap one body element (and optional header elements) in a SOAP 1.1 envelope with s/m/t prefixes."""
    env = element(NS_S, "Envelope")
    if header_children:
        header = sub(env, NS_S, "Header")
        header.extend(list(header_children))
    sub(env, NS_S, "Body").append(body_child)
    return to_bytes(env, PREFIXES)


def _request(body_child: ET.Element, server_version: str) -> bytes:
    if server_version not in EXCHANGE_VERSIONS:
        raise EwsCodecError(f"unknown RequestServerVersion {server_version!r}")
    return soap_envelope(body_child, [element(NS_T, "RequestServerVersion", attrs={"Version": server_version})])


def _mailbox(parent: ET.Element, address: str) -> None:
    mailbox = sub(parent, NS_T, "Mailbox")
    sub(mailbox, NS_T, "EmailAddress", address)
    sub(mailbox, NS_T, "RoutingType", "SMTP")
    sub(mailbox, NS_T, "MailboxType", "Mailbox")


def folder_ref_element(ref: FolderRef) -> ET.Element:
    """Build ``t:DistinguishedFolderId`` (with optional Mailbox) or ``t:FolderId`` for a FolderRef."""
    if ref.distinguished:
        if ref.id not in DISTINGUISHED_FOLDER_IDS:
            raise EwsCodecError(f"unknown distinguished folder id {ref.id!r}")
        elem = element(NS_T, "DistinguishedFolderId", attrs={"Id": ref.id})
        if ref.mailbox:
            _mailbox(elem, ref.mailbox)
        return elem
    attrs = {"Id": ref.id} | ({"ChangeKey": ref.change_key} if ref.change_key else {})
    return element(NS_T, "FolderId", attrs=attrs)


def _ref(folder: str | FolderRef, mailbox: str | None) -> FolderRef:
    return folder if isinstance(folder, FolderRef) else FolderRef(folder, True, None, mailbox)


def _shape(tag: str, field_uris: Sequence[str]) -> ET.Element:
    shape = element(NS_M, tag)
    sub(shape, NS_T, "BaseShape", "IdOnly")
    if field_uris:
        extra = sub(shape, NS_T, "AdditionalProperties")
        for uri in field_uris:
            sub(extra, NS_T, "FieldURI", attrs={"FieldURI": uri})
    return shape


FOLDER_PROPERTIES = (
    "folder:ChildFolderCount", "folder:DisplayName", "folder:FolderClass", "folder:FolderId",
    "folder:TotalCount", "folder:UnreadCount",
)  # fmt: skip


@reraise_as(EwsCodecError)
def build_get_folder_request(
    folders: Sequence[str | FolderRef],
    *,
    mailbox: str | None = None,
    server_version: str = "Exchange2016",
    properties: Sequence[str] = FOLDER_PROPERTIES,
) -> bytes:
    """GetFolder (IdOnly + counters); plain strings are distinguished ids, given ``mailbox`` if set."""
    if not folders:
        raise EwsCodecError("GetFolder needs at least one folder")
    op = element(NS_M, "GetFolder")
    op.append(_shape("FolderShape", properties))
    ids = sub(op, NS_M, "FolderIds")
    ids.extend([folder_ref_element(_ref(f, mailbox)) for f in folders])
    return _request(op, server_version)


@reraise_as(EwsCodecError)
def build_find_item_request(
    parent: str | FolderRef = "inbox",
    *,
    mailbox: str | None = None,
    max_entries: int = 1,
    offset: int = 0,
    properties: Sequence[str] = ("item:Subject", "item:DateTimeReceived"),
    server_version: str = "Exchange2016",
) -> bytes:
    """FindItem Traversal=Shallow, IdOnly + properties, IndexedPageItemView from the beginning."""
    if not 1 <= max_entries <= 1000 or not 0 <= offset <= 2**31 - 1:
        raise EwsCodecError("FindItem max_entries must be 1..1000 and offset >= 0")
    op = element(NS_M, "FindItem", attrs={"Traversal": "Shallow"})
    op.append(_shape("ItemShape", properties))
    view = {"MaxEntriesReturned": str(max_entries), "Offset": str(offset), "BasePoint": "Beginning"}
    sub(op, NS_M, "IndexedPageItemView", attrs=view)
    sub(op, NS_M, "ParentFolderIds").append(folder_ref_element(_ref(parent, mailbox)))
    return _request(op, server_version)


@reraise_as(EwsCodecError)
def build_convert_id_request(*, server_version: str = "Exchange2016") -> bytes:
    """The dummy ConvertId exchangelib sends to learn the auth type and server version (§3.2)."""
    op = element(NS_M, "ConvertId", attrs={"DestinationFormat": "EntryId"})
    ids = sub(op, NS_M, "SourceIds")
    sub(ids, NS_T, "AlternateId", attrs={"Id": "DUMMY", "Format": "EwsId", "Mailbox": "DUMMY"})
    return _request(op, server_version)


@reraise_as(EwsCodecError)
def build_resolve_names_request(
    entry: str, *, return_full_contact_data: bool = False, server_version: str = "Exchange2016"
) -> bytes:
    """ResolveNames for one unresolved entry (name or address)."""
    if not entry.strip():
        raise EwsCodecError("ResolveNames needs a non-empty entry")
    op = element(NS_M, "ResolveNames", attrs={"ReturnFullContactData": str(return_full_contact_data).lower()})
    sub(op, NS_M, "UnresolvedEntry", entry)
    return _request(op, server_version)


@reraise_as(EwsCodecError)
def build_create_item_request(
    subject: str,
    body: str,
    to: Sequence[str],
    *,
    mailbox: str | None = None,
    body_type: str = "Text",
    disposition: str = "SendAndSaveCopy",
    saved_folder: str = "sentitems",
    server_version: str = "Exchange2016",
) -> bytes:
    """CreateItem of one Message (subject, body, To recipients), sent and saved to ``saved_folder``."""
    if not to:
        raise EwsCodecError("CreateItem needs at least one recipient")
    if disposition not in ("SaveOnly", "SendOnly", "SendAndSaveCopy") or body_type not in ("Text", "HTML"):
        raise EwsCodecError("bad MessageDisposition or BodyType")
    op = element(NS_M, "CreateItem", attrs={"MessageDisposition": disposition})
    if disposition == "SendAndSaveCopy":
        sub(op, NS_M, "SavedItemFolderId").append(folder_ref_element(FolderRef(saved_folder, True, None, mailbox)))
    message = sub(sub(op, NS_M, "Items"), NS_T, "Message")
    sub(message, NS_T, "Subject", subject)
    sub(message, NS_T, "Body", body, {"BodyType": body_type})
    recipients = sub(message, NS_T, "ToRecipients")
    for address in to:
        _mailbox(recipients, address)
    return _request(op, server_version)
