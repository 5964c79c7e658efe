"""EWS SOAP codec: shared data model, ServerVersionInfo and response parsing (no I/O).

Follows the EWS envelope of [MS-OXWSCDATA] (types/messages XSD: ``ExchangeVersionType``,
``ServerVersionInfo``, ``ResponseMessageType``, ``ResponseCodeType``) and the operations of
[MS-OXWSFOLD] GetFolder, [MS-OXWSSRCH] FindItem, [MS-OXWSCORE] CreateItem, [MS-OXWSRSLNM] ResolveNames
and ConvertId, in the shapes exchangelib 5.6.0 sends (protocols.md §3.1-§3.3). SOAP faults follow
SOAP 1.1 §4.4 with the EWS ``detail`` (``e:ResponseCode``, ``e:Message``, ``t:MessageXml``).

Request builders are in :mod:`casprobe.protocols.ews_requests`; the lab side (request parsing,
response builders) is in :mod:`casprobe.protocols.ews_server`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from casprobe.protocols.xmlsafe import (
    NS_AUTODISCOVER_SOAP,
    NS_EWS_ERRORS,
    NS_EWS_MESSAGES,
    NS_EWS_TYPES,
    NS_SOAP,
    XmlCodecError,
    XmlLimits,
    child,
    child_text,
    children,
    element,
    first_child,
    int_attr,
    local_name,
    namespace_of,
    parse_int,
    parse_xml,
    reraise_as,
    sub,
    text_of,
)

__all__ = [
    "DISTINGUISHED_FOLDER_IDS",
    "EXCHANGE_VERSIONS",
    "NS_E",
    "NS_M",
    "NS_S",
    "NS_T",
    "PREFIXES",
    "EwsCodecError",
    "EwsFault",
    "EwsResponse",
    "FolderInfo",
    "FolderRef",
    "ItemInfo",
    "MailboxInfo",
    "ResponseMessage",
    "ServerVersionInfo",
    "find_server_version_info",
    "parse_ews_response",
    "parse_fault",
    "parse_mailbox",
    "parse_server_version_info",
    "server_version_element",
    "soap_parts",
]

NS_S = NS_SOAP
NS_M = NS_EWS_MESSAGES
NS_T = NS_EWS_TYPES
NS_E = NS_EWS_ERRORS
PREFIXES = {"s": NS_S, "m": NS_M, "t": NS_T}

# ExchangeVersionType enumeration [MS-OXWSCDATA types.xsd].
EXCHANGE_VERSIONS = (
    "Exchange2007",
    "Exchange2007_SP1",
    "Exchange2010",
    "Exchange2010_SP1",
    "Exchange2010_SP2",
    "Exchange2013",
    "Exchange2013_SP1",
    "Exchange2016",
)
# Common DistinguishedFolderIdNameType values [MS-OXWSCDATA types.xsd]; the builders accept only these.
DISTINGUISHED_FOLDER_IDS = frozenset(
    {
        "calendar", "contacts", "deleteditems", "drafts", "inbox", "journal", "notes", "outbox",
        "sentitems", "tasks", "msgfolderroot", "publicfoldersroot", "root", "junkemail", "searchfolders",
        "voicemail", "recoverableitemsroot", "recoverableitemsdeletions", "archiveroot",
        "archivemsgfolderroot", "archiveinbox", "conversationhistory", "syncissues", "favorites",
    }
)  # fmt: skip
_MAX_FIELD = 65536


class EwsCodecError(XmlCodecError):
    """An EWS document is malformed, hostile or not an EWS SOAP envelope."""


@dataclass(frozen=True, slots=True)
class ServerVersionInfo:
    """The server build an EWS or SOAP Autodiscover response reports in its SOAP header.

    Attributes:
        major: MajorVersion (15 for Exchange 2013-2019).
        minor: MinorVersion (0 = 2013, 1 = 2016, 2 = 2019).
        major_build: MajorBuildNumber.
        minor_build: MinorBuildNumber.
        version: the Version string (an ExchangeVersionType or values like ``V2017_07_11``), if sent.
    """

    major: int
    minor: int
    major_build: int
    minor_build: int
    version: str | None = None

    @property
    def build(self) -> str:
        """Dotted build number, e.g. ``15.2.1118.7``."""
        return f"{self.major}.{self.minor}.{self.major_build}.{self.minor_build}"


@dataclass(frozen=True, slots=True)
class FolderRef:
    """A folder named in a request: a distinguished id (``inbox``) or an opaque FolderId.

    Attributes:
        id: the distinguished name or the FolderId ``Id``.
        distinguished: True for ``t:DistinguishedFolderId``.
        change_key: FolderId ``ChangeKey``, if any.
        mailbox: ``t:Mailbox/t:EmailAddress`` inside a DistinguishedFolderId, if any.
    """

    id: str
    distinguished: bool = True
    change_key: str | None = None
    mailbox: str | None = None


@dataclass(frozen=True, slots=True)
class FolderInfo:
    """A folder as returned by GetFolder (or given to the lab's GetFolder builder).

    Attributes:
        folder_id / change_key: ``t:FolderId`` Id and ChangeKey.
        display_name, folder_class: ``t:DisplayName``, ``t:FolderClass``.
        total_count, child_folder_count, unread_count: the counters, when present.
        kind: element name, e.g. ``Folder``, ``CalendarFolder``.
    """

    folder_id: str
    change_key: str | None = None
    display_name: str | None = None
    folder_class: str | None = None
    total_count: int | None = None
    child_folder_count: int | None = None
    unread_count: int | None = None
    kind: str = "Folder"


@dataclass(frozen=True, slots=True)
class ItemInfo:
    """An item as returned by FindItem/CreateItem.

    Attributes:
        item_id / change_key: ``t:ItemId`` Id and ChangeKey.
        subject: ``t:Subject``; datetime_received: ``t:DateTimeReceived`` text (ISO 8601).
        is_read: ``t:IsRead`` if present; kind: element name, e.g. ``Message``.
    """

    item_id: str
    change_key: str | None = None
    subject: str | None = None
    datetime_received: str | None = None
    is_read: bool | None = None
    kind: str = "Message"


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    """A ``t:Mailbox`` (ResolveNames resolution).

    Attributes:
        email_address, name, routing_type, mailbox_type: the Mailbox children.
    """

    email_address: str
    name: str | None = None
    routing_type: str | None = "SMTP"
    mailbox_type: str | None = "Mailbox"


@dataclass(frozen=True, slots=True)
class ResponseMessage:
    """One ``m:<Op>ResponseMessage``.

    Attributes:
        operation: e.g. ``GetFolder``; response_class: Success | Warning | Error.
        response_code: ``m:ResponseCode`` (``NoError`` on success); message_text: ``m:MessageText``.
        folders, items, mailboxes: payload (Folders; RootFolder/Items or Items; ResolutionSet).
        total_items_in_view: RootFolder/ResolutionSet TotalItemsInView, if any.
    """

    operation: str
    response_class: str
    response_code: str | None
    message_text: str | None = None
    folders: tuple[FolderInfo, ...] = ()
    items: tuple[ItemInfo, ...] = ()
    mailboxes: tuple[MailboxInfo, ...] = ()
    total_items_in_view: int | None = None


@dataclass(frozen=True, slots=True)
class EwsFault:
    """A SOAP Fault (throttling, schema errors, ...).

    Attributes:
        code: ``faultcode`` local part (prefix dropped), e.g. ``ErrorServerBusy``.
        message: ``faultstring``.
        response_code: ``detail/e:ResponseCode``; back_off_ms: ``BackOffMilliseconds`` if given.
    """

    code: str
    message: str | None = None
    response_code: str | None = None
    back_off_ms: int | None = None


@dataclass(frozen=True, slots=True)
class EwsResponse:
    """A parsed EWS response: either response messages or a fault.

    Attributes:
        server_version: the header ServerVersionInfo, if present.
        operation: the operation named by ``m:<Op>Response`` (None for a fault).
        messages: the response messages, in order.
        fault: the SOAP fault, if the body held one.
    """

    server_version: ServerVersionInfo | None
    operation: str | None = None
    messages: tuple[ResponseMessage, ...] = ()
    fault: EwsFault | None = None


# --- ServerVersionInfo ------------------------------------------------------------------------------

_SVI_FIELDS = ("MajorVersion", "MinorVersion", "MajorBuildNumber", "MinorBuildNumber")


@reraise_as(EwsCodecError)
def parse_server_version_info(elem: ET.Element) -> ServerVersionInfo:
    """Parse ServerVersionInfo in attribute form (EWS) or child-element form (SOAP Autodiscover)."""
    numbers: list[int] = []
    for name in _SVI_FIELDS:
        raw = elem.get(name)
        if raw is None:
            raw = child_text(elem, "*", name)
        if raw is None:
            raise EwsCodecError(f"ServerVersionInfo lacks {name}")
        numbers.append(parse_int(raw, f"ServerVersionInfo {name}", maximum=2**31 - 1))
    version = elem.get("Version") or child_text(elem, "*", "Version", max_len=64)
    return ServerVersionInfo(numbers[0], numbers[1], numbers[2], numbers[3], version)


def find_server_version_info(header: ET.Element | None) -> ServerVersionInfo | None:
    """Return the ServerVersionInfo in a SOAP header (types or Autodiscover namespace), or None."""
    if header is None:
        return None
    elem = child(header, NS_T, "ServerVersionInfo")
    if elem is None:
        elem = child(header, NS_AUTODISCOVER_SOAP, "ServerVersionInfo")
    return None if elem is None else parse_server_version_info(elem)


def server_version_element(svi: ServerVersionInfo, *, ns: str = NS_T, as_elements: bool = False) -> ET.Element:
    """Build ``ServerVersionInfo`` in ``ns``: attributes (EWS) or child elements (Autodiscover)."""
    values = [str(svi.major), str(svi.minor), str(svi.major_build), str(svi.minor_build)]
    if not as_elements:
        attrs = dict(zip(_SVI_FIELDS, values, strict=True))
        if svi.version:
            attrs["Version"] = svi.version
        return element(ns, "ServerVersionInfo", attrs=attrs)
    elem = element(ns, "ServerVersionInfo")
    for name, value in zip(_SVI_FIELDS, values, strict=True):
        sub(elem, ns, name, value)
    if svi.version:
        sub(elem, ns, "Version", svi.version)
    return elem


# --- response parsing -------------------------------------------------------------------------------


def soap_parts(data: bytes | str, limits: XmlLimits | None = None) -> tuple[ET.Element | None, ET.Element]:
    """Parse a SOAP 1.1 envelope; return (Header or None, Body). Wrong root or no Body is an error."""
    root = parse_xml(data) if limits is None else parse_xml(data, limits=limits)
    if root.tag != f"{{{NS_S}}}Envelope":
        raise EwsCodecError(f"not a SOAP 1.1 envelope: root is {root.tag!r}")
    body = child(root, NS_S, "Body")
    if body is None:
        raise EwsCodecError("SOAP envelope has no Body")
    return child(root, NS_S, "Header"), body


def parse_fault(fault: ET.Element) -> EwsFault:
    """Parse a ``s:Fault`` (faultcode/faultstring unqualified per SOAP 1.1, EWS detail)."""
    raw_code = child_text(fault, None, "faultcode") or child_text(fault, "*", "faultcode") or ""
    detail = child(fault, "*", "detail")
    response_code = back_off = None
    if detail is not None:
        response_code = child_text(detail, NS_E, "ResponseCode", max_len=256)
        msg_xml = child(detail, NS_T, "MessageXml")
        for value in children(msg_xml, NS_T, "Value") if msg_xml is not None else ():
            if value.get("Name") == "BackOffMilliseconds" and value.text:
                back_off = parse_int(value.text, "BackOffMilliseconds", maximum=2**40)
    return EwsFault(
        code=raw_code.rsplit(":", 1)[-1] or "Unknown",
        message=child_text(fault, None, "faultstring") or child_text(fault, "*", "faultstring"),
        response_code=response_code,
        back_off_ms=back_off,
    )


def _bool(text: str | None) -> bool | None:
    if text is None:
        return None
    return text.lower() in ("true", "1")


def _count(parent: ET.Element, local: str) -> int | None:
    text = child_text(parent, NS_T, local, max_len=20)
    return None if text is None else parse_int(text, local)


def _folder(elem: ET.Element) -> FolderInfo:
    fid = child(elem, NS_T, "FolderId")
    if fid is None or not fid.get("Id"):
        raise EwsCodecError(f"<{local_name(elem)}> without FolderId Id")
    return FolderInfo(
        folder_id=fid.get("Id", ""),
        change_key=fid.get("ChangeKey"),
        display_name=child_text(elem, NS_T, "DisplayName", max_len=_MAX_FIELD),
        folder_class=child_text(elem, NS_T, "FolderClass", max_len=256),
        total_count=_count(elem, "TotalCount"),
        child_folder_count=_count(elem, "ChildFolderCount"),
        unread_count=_count(elem, "UnreadCount"),
        kind=local_name(elem),
    )


def _item(elem: ET.Element) -> ItemInfo:
    iid = child(elem, NS_T, "ItemId")
    return ItemInfo(
        item_id="" if iid is None else iid.get("Id", ""),
        change_key=None if iid is None else iid.get("ChangeKey"),
        subject=child_text(elem, NS_T, "Subject", max_len=_MAX_FIELD),
        datetime_received=child_text(elem, NS_T, "DateTimeReceived", max_len=64),
        is_read=_bool(child_text(elem, NS_T, "IsRead", max_len=8)),
        kind=local_name(elem),
    )


def parse_mailbox(elem: ET.Element) -> MailboxInfo:
    """Parse a ``t:Mailbox`` element."""
    return MailboxInfo(
        email_address=child_text(elem, NS_T, "EmailAddress", max_len=1024) or "",
        name=child_text(elem, NS_T, "Name", max_len=1024),
        routing_type=child_text(elem, NS_T, "RoutingType", max_len=64),
        mailbox_type=child_text(elem, NS_T, "MailboxType", max_len=64),
    )


def _message(operation: str, elem: ET.Element) -> ResponseMessage:
    folders = child(elem, NS_M, "Folders")
    root_folder = child(elem, NS_M, "RootFolder")
    items = child(root_folder, NS_T, "Items") if root_folder is not None else child(elem, NS_M, "Items")
    resolution_set = child(elem, NS_M, "ResolutionSet")
    view = root_folder if root_folder is not None else resolution_set
    mailboxes = []
    for resolution in children(resolution_set, NS_T, "Resolution") if resolution_set is not None else ():
        mailbox = child(resolution, NS_T, "Mailbox")
        if mailbox is not None:
            mailboxes.append(parse_mailbox(mailbox))
    return ResponseMessage(
        operation=operation,
        response_class=elem.get("ResponseClass", ""),
        response_code=child_text(elem, NS_M, "ResponseCode", max_len=256),
        message_text=text_of(child(elem, NS_M, "MessageText"), max_len=_MAX_FIELD),
        folders=tuple(_folder(f) for f in folders if isinstance(f.tag, str)) if folders is not None else (),
        items=tuple(_item(i) for i in items if isinstance(i.tag, str)) if items is not None else (),
        mailboxes=tuple(mailboxes),
        total_items_in_view=None if view is None else int_attr(view, "TotalItemsInView"),
    )


@reraise_as(EwsCodecError)
def parse_ews_response(data: bytes | str, *, limits: XmlLimits | None = None) -> EwsResponse:
    """Parse an EWS SOAP response (any prefixes) into messages, or a fault; bad documents raise."""
    header, body = soap_parts(data, limits)
    version = find_server_version_info(header)
    payload = first_child(body)
    if payload is None:
        raise EwsCodecError("SOAP Body is empty")
    if payload.tag == f"{{{NS_S}}}Fault":
        return EwsResponse(server_version=version, fault=parse_fault(payload))
    name = local_name(payload)
    if namespace_of(payload) != NS_M or not name.endswith("Response"):
        raise EwsCodecError(f"unexpected SOAP body element {payload.tag!r}")
    operation = name[: -len("Response")]
    container = child(payload, NS_M, "ResponseMessages")
    messages = () if container is None else tuple(_message(operation, m) for m in container if isinstance(m.tag, str))
    return EwsResponse(server_version=version, operation=operation, messages=messages)
