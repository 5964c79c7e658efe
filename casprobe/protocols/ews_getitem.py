"""EWS codec additions for the lab: GetItem and simple FindItem restrictions (no I/O).

GetItem follows [MS-OXWSCORE] §3.1.4.4 (request ``m:GetItem/{m:ItemShape, m:ItemIds/t:ItemId}``; response
``m:GetItemResponseMessage/m:Items/t:Message``) with the message elements of [MS-OXWSCORE] §2.2.4.x /
[MS-OXWSMSG] ``MessageType`` in schema order (ItemId, ParentFolderId, ItemClass, Subject, Body,
DateTimeReceived, Size, DateTimeSent, DateTimeCreated, Sender, ToRecipients, From, IsRead) — what exchangelib 5.6.0
asks for when a query set without ``.only()`` needs complex fields (FindItem IdOnly, then GetItem).

Restrictions follow [MS-OXWSSRCH] §2.2.4 ``RestrictionType`` as exchangelib writes ``filter(subject=...)``:
``IsEqualTo`` / ``IsNotEqualTo`` / ``Contains`` (ContainmentMode, ContainmentComparison) over
``t:FieldURI FieldURI="item:Subject"`` with ``t:FieldURIOrConstant/t:Constant Value``, combined with
``And`` / ``Or`` / ``Not``. Anything else raises :class:`UnsupportedRestriction` (the lab answers
ErrorUnsupportedQueryFilter).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from casprobe.protocols.ews import (
    NS_M,
    NS_S,
    NS_T,
    PREFIXES,
    EwsCodecError,
    ServerVersionInfo,
    server_version_element,
    soap_parts,
)
from casprobe.protocols.ews_server import REQUEST_LIMITS, MessageError
from casprobe.protocols.xmlsafe import (
    XmlLimits,
    child,
    children,
    element,
    first_child,
    local_name,
    reraise_as,
    sub,
    to_bytes,
)

__all__ = [
    "FullMessage",
    "Restriction",
    "UnsupportedRestriction",
    "build_get_item_response",
    "parse_get_item_ids",
    "parse_restriction",
]

_MAX_IDS = 100
_MAX_RESTRICTION_NODES = 64

Restriction = Callable[[str], bool]
"""A predicate over a message subject."""


class UnsupportedRestriction(EwsCodecError):
    """A FindItem restriction the lab cannot evaluate (other fields or operators)."""


@dataclass(frozen=True, slots=True)
class FullMessage:
    """A message as GetItem returns it.

    Attributes:
        item_id, change_key: ``t:ItemId``; parent_folder_id: ``t:ParentFolderId``.
        subject, body: text (Body is written with BodyType="Text").
        received: ISO 8601 UTC time used for DateTimeReceived/Sent/Created.
        sender: From address; to: ToRecipients addresses; is_read: IsRead.
    """

    item_id: str
    change_key: str
    parent_folder_id: str
    subject: str
    body: str
    received: str
    sender: str
    to: tuple[str, ...]
    is_read: bool


@reraise_as(EwsCodecError)
def parse_get_item_ids(data: bytes | str, *, limits: XmlLimits = REQUEST_LIMITS) -> tuple[str, ...]:
    """The ``t:ItemId/@Id`` values of a GetItem request, in order."""
    _, body = soap_parts(data, limits)
    op = first_child(body)
    if op is None or op.tag != f"{{{NS_M}}}GetItem":
        raise EwsCodecError("SOAP body is not a GetItem request")
    container = child(op, NS_M, "ItemIds")
    ids = []
    for item in children(container, NS_T, "ItemId") if container is not None else ():
        item_id = item.get("Id")
        if not item_id or len(item_id) > 1024:
            raise EwsCodecError("GetItem ItemId without a usable Id")
        ids.append(item_id)
        if len(ids) > _MAX_IDS:
            raise EwsCodecError(f"more than {_MAX_IDS} item ids")
    if not ids:
        raise EwsCodecError("GetItem without ItemIds")
    return tuple(ids)


def _subject_constant(node: ET.Element) -> str:
    field = child(node, NS_T, "FieldURI")
    if field is None or field.get("FieldURI") != "item:Subject":
        raise UnsupportedRestriction("the lab only filters on item:Subject")
    constant = None
    holder = child(node, NS_T, "FieldURIOrConstant")
    if holder is not None:
        constant = child(holder, NS_T, "Constant")
    if constant is None:
        constant = child(node, NS_T, "Constant")
    value = None if constant is None else constant.get("Value")
    if value is None:
        raise UnsupportedRestriction(f"{local_name(node)} without a constant")
    return value


def _compile(node: ET.Element, budget: list[int]) -> Restriction:
    budget[0] -= 1
    if budget[0] < 0:
        raise UnsupportedRestriction("restriction too large")
    name = local_name(node)
    if name in ("And", "Or"):
        parts = [_compile(c, budget) for c in node]
        if not parts:
            raise UnsupportedRestriction(f"empty {name}")
        if name == "And":
            return lambda s: all(p(s) for p in parts)
        return lambda s: any(p(s) for p in parts)
    if name == "Not":
        inner = first_child(node)
        if inner is None:
            raise UnsupportedRestriction("empty Not")
        negated = _compile(inner, budget)
        return lambda s: not negated(s)
    if name in ("IsEqualTo", "IsNotEqualTo"):
        value = _subject_constant(node)
        if name == "IsEqualTo":
            return lambda s: s == value
        return lambda s: s != value
    if name == "Contains":
        value = _subject_constant(node)
        mode = node.get("ContainmentMode", "Substring")
        fold = "IgnoreCase" in node.get("ContainmentComparison", "Exact")
        needle = value.lower() if fold else value

        def contains(s: str) -> bool:
            hay = s.lower() if fold else s
            if mode == "FullString":
                return hay == needle
            if mode == "Prefixed":
                return hay.startswith(needle)
            return needle in hay

        return contains
    raise UnsupportedRestriction(f"restriction {name} is not supported by the lab")


@reraise_as(EwsCodecError)
def parse_restriction(data: bytes | str, *, limits: XmlLimits = REQUEST_LIMITS) -> Restriction | None:
    """The FindItem ``m:Restriction`` as a subject predicate, or None when the request has none."""
    _, body = soap_parts(data, limits)
    op = first_child(body)
    if op is None or op.tag != f"{{{NS_M}}}FindItem":
        raise EwsCodecError("SOAP body is not a FindItem request")
    restriction = child(op, NS_M, "Restriction")
    if restriction is None:
        return None
    top = first_child(restriction)
    if top is None:
        return None
    return _compile(top, [_MAX_RESTRICTION_NODES])


def _mailbox(parent: ET.Element, address: str) -> None:
    mbx = sub(parent, NS_T, "Mailbox")
    sub(mbx, NS_T, "EmailAddress", address)
    sub(mbx, NS_T, "RoutingType", "SMTP")


def _message_element(msg: FullMessage) -> ET.Element:
    elem = element(NS_T, "Message")
    sub(elem, NS_T, "ItemId", attrs={"Id": msg.item_id, "ChangeKey": msg.change_key})
    sub(elem, NS_T, "ParentFolderId", attrs={"Id": msg.parent_folder_id})
    sub(elem, NS_T, "ItemClass", "IPM.Note")
    sub(elem, NS_T, "Subject", msg.subject)
    sub(elem, NS_T, "Body", msg.body, {"BodyType": "Text"})
    sub(elem, NS_T, "DateTimeReceived", msg.received)
    sub(elem, NS_T, "Size", str(len(msg.body.encode()) + len(msg.subject.encode()) + 512))
    sub(elem, NS_T, "DateTimeSent", msg.received)
    sub(elem, NS_T, "DateTimeCreated", msg.received)
    _mailbox(sub(elem, NS_T, "Sender"), msg.sender)
    recipients = sub(elem, NS_T, "ToRecipients")
    for address in msg.to:
        _mailbox(recipients, address)
    _mailbox(sub(elem, NS_T, "From"), msg.sender)
    sub(elem, NS_T, "IsRead", "true" if msg.is_read else "false")
    return elem


def build_get_item_response(
    results: Sequence[FullMessage | MessageError], *, server_version: ServerVersionInfo | None
) -> bytes:
    """GetItem: one ResponseMessage per requested id, in request order."""
    resp = element(NS_M, "GetItemResponse")
    messages = sub(resp, NS_M, "ResponseMessages")
    for result in results:
        if isinstance(result, MessageError):
            msg = sub(messages, NS_M, "GetItemResponseMessage", attrs={"ResponseClass": result.response_class})
            sub(msg, NS_M, "MessageText", result.text or result.code)
            sub(msg, NS_M, "ResponseCode", result.code)
            sub(msg, NS_M, "DescriptiveLinkKey", "0")
            sub(msg, NS_M, "Items")
            continue
        msg = sub(messages, NS_M, "GetItemResponseMessage", attrs={"ResponseClass": "Success"})
        sub(msg, NS_M, "ResponseCode", "NoError")
        sub(msg, NS_M, "Items").append(_message_element(result))
    env = element(NS_S, "Envelope")
    if server_version is not None:
        sub(env, NS_S, "Header").append(server_version_element(server_version))
    sub(env, NS_S, "Body").append(resp)
    return to_bytes(env, PREFIXES)
