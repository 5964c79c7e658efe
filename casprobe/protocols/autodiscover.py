"""Autodiscover codec: POX (Outlook schema) and Autodiscover v2 JSON (no I/O).

POX follows [MS-OXDSCLI] §2.2.3-§2.2.4 (request: ``Autodiscover/Request/{EMailAddress|LegacyDN,
AcceptableResponseSchema}``; response: ``Autodiscover/Response/{User, Account/{Action, RedirectAddr,
RedirectUrl, Protocol*}}``), §3.2.5.1 (``X-MapiHttpCapability`` rule) and §4.4 (the mapiHttp example),
plus the "Error (POX)" document of the Exchange POX reference (codes 500/501/600/601/603;
protocols.md §1.2-§1.4). Both Protocol spellings are parsed: ``<Protocol Type="mapiHttp" Version="1">``
and ``<Protocol><Type>EXCH</Type>``. SOAP GetUserSettings is in :mod:`casprobe.protocols.autodiscover_soap`,
Autodiscover v2 JSON in :mod:`casprobe.protocols.autodiscover_v2`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

from casprobe.protocols.xmlsafe import (
    XmlCodecError,
    XmlLimits,
    child,
    child_text,
    children,
    element,
    local_name,
    namespace_of,
    parse_int,
    parse_xml,
    reraise_as,
    sub,
    to_bytes,
)

__all__ = [
    "NS_POX_REQUEST",
    "NS_POX_RESPONSE",
    "NS_POX_RESPONSE_OUTLOOK",
    "SUPPORTED_MAPI_HTTP_VERSIONS",
    "AutodiscoverError",
    "PoxError",
    "PoxProtocol",
    "PoxRequest",
    "PoxResponse",
    "PoxUser",
    "build_pox_request",
    "build_pox_response",
    "mapi_http_version_for",
    "parse_pox_request",
    "parse_pox_response",
]

NS_POX_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
NS_POX_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
NS_POX_RESPONSE_OUTLOOK = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
SUPPORTED_MAPI_HTTP_VERSIONS = (1,)
_POX_LIMITS = XmlLimits(max_bytes=512 * 1024, max_depth=16, max_elements=10_000)
_URL_MAX = 4096


class AutodiscoverError(XmlCodecError):
    """An Autodiscover document (POX, SOAP or v2 JSON) is malformed, hostile or not the expected shape."""


# --- models -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoxRequest:
    """A POX request as the lab receives it.

    Attributes:
        email: ``EMailAddress``; legacy_dn: ``LegacyDN`` (at least one is present).
        acceptable_schema: ``AcceptableResponseSchema``.
    """

    email: str | None
    legacy_dn: str | None
    acceptable_schema: str


@dataclass(frozen=True, slots=True)
class PoxUser:
    """The ``User`` block.

    Attributes:
        display_name, legacy_dn, smtp_address (AutoDiscoverSMTPAddress), deployment_id.
    """

    display_name: str | None = None
    legacy_dn: str | None = None
    smtp_address: str | None = None
    deployment_id: str | None = None


@dataclass(frozen=True, slots=True)
class PoxProtocol:
    """One ``Account/Protocol`` block (all fields optional except the type).

    Attributes:
        type: mapiHttp, EXCH, EXPR, EXHTTP, WEB, ...; version: the mapiHttp ``Version`` attribute.
        server, server_dn, server_version, mdb_dn, auth_package, ssl: RPC/HTTP settings.
        ews_url, as_url, oab_url, oof_url, ecp_url: service URLs (for WEB: External/Protocol/ASUrl).
        mailstore_* / addressbook_*: mapiHttp MailStore and AddressBook Internal/External URLs.
    """

    type: str
    version: str | None = None
    server: str | None = None
    server_dn: str | None = None
    server_version: str | None = None
    mdb_dn: str | None = None
    auth_package: str | None = None
    ssl: bool | None = None
    ews_url: str | None = None
    as_url: str | None = None
    oab_url: str | None = None
    oof_url: str | None = None
    ecp_url: str | None = None
    mailstore_internal_url: str | None = None
    mailstore_external_url: str | None = None
    addressbook_internal_url: str | None = None
    addressbook_external_url: str | None = None


@dataclass(frozen=True, slots=True)
class PoxError:
    """The POX error document's ``Error`` block.

    Attributes:
        code: ErrorCode (500 unknown address, 501 bad address, 600 invalid request, 601 provider
            unavailable for the requested schema, 603 server error); message, time, id: the rest.
    """

    code: int
    message: str | None = None
    time: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class PoxResponse:
    """A POX response: settings, a redirect, or an error.

    Attributes:
        user: the User block; action: settings | redirectAddr | redirectUrl.
        redirect_addr, redirect_url: redirect targets; protocols: Account/Protocol blocks, in order.
        error: set for the error document (then everything else is empty).
    """

    user: PoxUser | None = None
    action: str | None = None
    redirect_addr: str | None = None
    redirect_url: str | None = None
    protocols: tuple[PoxProtocol, ...] = ()
    error: PoxError | None = None

    def protocol(self, type_: str) -> PoxProtocol | None:
        """Return the first Protocol of this type (case-insensitive), or None."""
        return next((p for p in self.protocols if p.type.lower() == type_.lower()), None)

    @property
    def legacy_ews_url(self) -> str | None:
        """EWS URL as older clients pick it: EXPR/EwsUrl, else EXCH/EwsUrl (protocols.md §1.3)."""
        for type_ in ("EXPR", "EXCH"):
            proto = self.protocol(type_)
            if proto is not None and proto.ews_url:
                return proto.ews_url
        return None


# --- X-MapiHttpCapability ---------------------------------------------------------------------------


def mapi_http_version_for(header_value: str | None) -> int | None:
    """[MS-OXDSCLI] §3.2.5.1: the mapiHttp Protocol version to return, or None to behave as if absent.

    Valid iff the header is an integer > 0; the answer is the highest supported version <= that value.
    """
    if header_value is None:
        return None
    value = header_value.strip()
    if not re.fullmatch(r"[0-9]{1,64}", value):
        return None
    number = int(value)
    fitting = [v for v in SUPPORTED_MAPI_HTTP_VERSIONS if 0 < v <= number]
    return max(fitting) if fitting else None


# --- POX request ------------------------------------------------------------------------------------


@reraise_as(AutodiscoverError)
def build_pox_request(email: str | None = None, *, legacy_dn: str | None = None) -> bytes:
    """The Outlook POX request for an address (or a LegacyDN), asking for the 2006a response schema."""
    if not email and not legacy_dn:
        raise AutodiscoverError("POX request needs an email address or a LegacyDN")
    root = element(NS_POX_REQUEST, "Autodiscover")
    req = sub(root, NS_POX_REQUEST, "Request")
    if email:
        sub(req, NS_POX_REQUEST, "EMailAddress", email)
    if legacy_dn:
        sub(req, NS_POX_REQUEST, "LegacyDN", legacy_dn)
    sub(req, NS_POX_REQUEST, "AcceptableResponseSchema", NS_POX_RESPONSE_OUTLOOK)
    return to_bytes(root, {"": NS_POX_REQUEST})


@reraise_as(AutodiscoverError)
def parse_pox_request(data: bytes | str) -> PoxRequest:
    """Parse a POX request (server side). Any root namespace is accepted; children share the root's."""
    root = parse_xml(data, limits=_POX_LIMITS)
    if local_name(root) != "Autodiscover":
        raise AutodiscoverError(f"POX request root is {root.tag!r}, not Autodiscover")
    ns = namespace_of(root)
    req = child(root, ns, "Request")
    if req is None:
        raise AutodiscoverError("POX request has no Request element")
    email = child_text(req, ns, "EMailAddress", max_len=1024)
    legacy_dn = child_text(req, ns, "LegacyDN", max_len=4096)
    schema = child_text(req, ns, "AcceptableResponseSchema", max_len=1024)
    if not email and not legacy_dn:
        raise AutodiscoverError("POX request has neither EMailAddress nor LegacyDN")
    if not schema:
        raise AutodiscoverError("POX request has no AcceptableResponseSchema")
    return PoxRequest(email=email, legacy_dn=legacy_dn, acceptable_schema=schema)


# --- POX response -----------------------------------------------------------------------------------

# (field, element) in the order written for EXCH/EXPR/EXHTTP blocks.
_PROTOCOL_FIELDS = (
    ("server", "Server"),
    ("server_dn", "ServerDN"),
    ("server_version", "ServerVersion"),
    ("mdb_dn", "MdbDN"),
    ("auth_package", "AuthPackage"),
    ("as_url", "ASUrl"),
    ("ews_url", "EwsUrl"),
    ("ecp_url", "EcpUrl"),
    ("oof_url", "OOFUrl"),
    ("oab_url", "OABUrl"),
)
_MAPI_FIELDS = (
    ("mailstore_internal_url", "MailStore", "InternalUrl"),
    ("mailstore_external_url", "MailStore", "ExternalUrl"),
    ("addressbook_internal_url", "AddressBook", "InternalUrl"),
    ("addressbook_external_url", "AddressBook", "ExternalUrl"),
)
_USER_FIELDS = (
    ("display_name", "DisplayName"),
    ("legacy_dn", "LegacyDN"),
    ("smtp_address", "AutoDiscoverSMTPAddress"),
    ("deployment_id", "DeploymentId"),
)


def _protocol_element(proto: PoxProtocol, ns: str) -> ET.Element:
    elem = element(ns, "Protocol")
    if proto.type.lower() == "mapihttp":
        elem.set("Type", "mapiHttp")
        elem.set("Version", proto.version or "1")
        for block in ("MailStore", "AddressBook"):
            urls = [(local, getattr(proto, field)) for field, b, local in _MAPI_FIELDS if b == block]
            if any(value for _, value in urls):
                container = sub(elem, ns, block)
                for local, value in urls:
                    if value:
                        sub(container, ns, local, value)
        return elem
    sub(elem, ns, "Type", proto.type)
    if proto.type.upper() == "WEB":
        if proto.as_url:
            nested = sub(sub(elem, ns, "External"), ns, "Protocol")
            sub(nested, ns, "Type", "EXPR")
            sub(nested, ns, "ASUrl", proto.as_url)
        return elem
    for field, local in _PROTOCOL_FIELDS:
        value = getattr(proto, field)
        if value:
            sub(elem, ns, local, value)
    if proto.ssl is not None:
        sub(elem, ns, "SSL", "On" if proto.ssl else "Off")
    return elem


@reraise_as(AutodiscoverError)
def build_pox_response(resp: PoxResponse) -> bytes:
    """Build a POX settings / redirectAddr / redirectUrl document, or the error document if ``error``."""
    root = element(NS_POX_RESPONSE, "Autodiscover")
    if resp.error is not None:
        response = sub(root, NS_POX_RESPONSE, "Response")
        attrs = {k: v for k, v in (("Time", resp.error.time), ("Id", resp.error.id)) if v}
        err = sub(response, NS_POX_RESPONSE, "Error", attrs=attrs)
        sub(err, NS_POX_RESPONSE, "ErrorCode", str(resp.error.code))
        sub(err, NS_POX_RESPONSE, "Message", resp.error.message or "")
        sub(err, NS_POX_RESPONSE, "DebugData")
        return to_bytes(root, {"": NS_POX_RESPONSE})
    ns = NS_POX_RESPONSE_OUTLOOK
    response = sub(root, ns, "Response")
    if resp.user is not None:
        user = sub(response, ns, "User")
        for field, local in _USER_FIELDS:
            value = getattr(resp.user, field)
            if value:
                sub(user, ns, local, value)
    account = sub(response, ns, "Account")
    sub(account, ns, "AccountType", "email")
    sub(account, ns, "Action", resp.action or "settings")
    if resp.redirect_addr:
        sub(account, ns, "RedirectAddr", resp.redirect_addr)
    if resp.redirect_url:
        sub(account, ns, "RedirectUrl", resp.redirect_url)
    account.extend([_protocol_element(p, ns) for p in resp.protocols])
    return to_bytes(root, {"": NS_POX_RESPONSE})


def _parse_error(err: ET.Element) -> PoxError:
    ns = namespace_of(err)
    code = child_text(err, ns, "ErrorCode", max_len=16)
    if code is None:
        raise AutodiscoverError("POX Error without ErrorCode")
    return PoxError(
        code=parse_int(code, "POX ErrorCode", maximum=99999),
        message=child_text(err, ns, "Message", max_len=4096),
        time=err.get("Time"),
        id=err.get("Id"),
    )


def _parse_protocol(elem: ET.Element, ns: str | None) -> PoxProtocol:
    type_ = elem.get("Type") or child_text(elem, ns, "Type", max_len=64)
    if not type_:
        raise AutodiscoverError("POX Protocol without a Type")
    values: dict[str, str | None] = {
        field: child_text(elem, ns, local, max_len=_URL_MAX) for field, local in _PROTOCOL_FIELDS
    }
    for field, block, local in _MAPI_FIELDS:
        container = child(elem, ns, block)
        values[field] = None if container is None else child_text(container, ns, local, max_len=_URL_MAX)
    if type_.upper() == "WEB" and not values["as_url"]:
        values["as_url"] = next(_nested_as_urls(elem, ns), None)
    ssl = child_text(elem, ns, "SSL", max_len=8)
    return PoxProtocol(
        type=type_, version=elem.get("Version"), ssl=None if ssl is None else ssl.lower() == "on", **values
    )


def _nested_as_urls(web: ET.Element, ns: str | None) -> Iterator[str]:
    for side in ("External", "Internal"):
        for block in children(web, ns, side):
            for proto in children(block, ns, "Protocol"):
                url = child_text(proto, ns, "ASUrl", max_len=_URL_MAX)
                if url:
                    yield url


@reraise_as(AutodiscoverError)
def parse_pox_response(data: bytes | str) -> PoxResponse:
    """Parse a POX response (client side): settings, redirects, or the error document."""
    root = parse_xml(data, limits=_POX_LIMITS)
    if local_name(root) != "Autodiscover" or namespace_of(root) != NS_POX_RESPONSE:
        raise AutodiscoverError(f"not a POX Autodiscover response: root is {root.tag!r}")
    response = next(
        (r for r in children(root, "*", "Response") if namespace_of(r) in (NS_POX_RESPONSE, NS_POX_RESPONSE_OUTLOOK)),
        None,
    )
    if response is None:
        raise AutodiscoverError("POX response has no Response element in a known namespace")
    ns = namespace_of(response)
    err = child(response, ns, "Error")
    if err is not None:
        return PoxResponse(error=_parse_error(err))
    account = child(response, ns, "Account")
    if account is None:
        raise AutodiscoverError("POX response has neither Account nor Error")
    user_elem = child(response, ns, "User")
    user = None
    if user_elem is not None:
        user = PoxUser(**{field: child_text(user_elem, ns, local, max_len=4096) for field, local in _USER_FIELDS})
    protocols = tuple(_parse_protocol(p, ns) for p in children(account, ns, "Protocol"))
    if len(protocols) > 64:
        raise AutodiscoverError("POX response has more than 64 Protocol blocks")
    return PoxResponse(
        user=user,
        action=child_text(account, ns, "Action", max_len=64),
        redirect_addr=child_text(account, ns, "RedirectAddr", max_len=1024),
        redirect_url=child_text(account, ns, "RedirectUrl", ignore_case=True, max_len=_URL_MAX),
        protocols=protocols,
    )
