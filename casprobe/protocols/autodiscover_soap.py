"""SOAP Autodiscover codec: GetUserSettings on ``/autodiscover/autodiscover.svc`` (no I/O).

Follows [MS-OXWSADISC] §3.1.4.5 (GetUserSettings: ``GetUserSettingsRequestMessage/Request/{Users/User/
Mailbox, RequestedSettings/Setting*}``; the response ``GetUserSettingsResponseMessage/Response/
{ErrorCode, ErrorMessage, UserResponses/UserResponse/{ErrorCode, ErrorMessage, RedirectTarget,
UserSettingErrors, UserSettings/UserSetting[i:type=StringSetting]/{Name, Value}}}``) with the
``ServerVersionInfo`` header in the Autodiscover namespace, child-element form. The shapes are those
exchangelib 5.6.0 sends and accepts (protocols.md §1.5; exchangelib ``services/get_user_settings.py``,
``properties.py`` ``UserResponse``): per-user ``RedirectAddress`` / ``RedirectUrl`` carry
``RedirectTarget``; ``InvalidUser`` becomes ErrorNonExistentMailbox there.

Note for servers: exchangelib maps every returned setting name through its own table and fails on
names it does not know, so answer only settings that were requested.
"""

from __future__ import annotations

import types
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from casprobe.protocols.autodiscover import AutodiscoverError
from casprobe.protocols.ews import (
    EXCHANGE_VERSIONS,
    EwsFault,
    ServerVersionInfo,
    find_server_version_info,
    parse_fault,
    server_version_element,
    soap_parts,
)
from casprobe.protocols.xmlsafe import (
    NS_AUTODISCOVER_SOAP,
    NS_SOAP,
    NS_WSA,
    NS_XSI,
    XmlLimits,
    child,
    child_text,
    children,
    element,
    first_child,
    reraise_as,
    sub,
    to_bytes,
)

__all__ = [
    "ACTION_GET_USER_SETTINGS",
    "GetUserSettingsRequest",
    "GetUserSettingsResponse",
    "UserResult",
    "build_get_user_settings_request",
    "build_get_user_settings_response",
    "parse_get_user_settings_request",
    "parse_get_user_settings_response",
]

NS_A = NS_AUTODISCOVER_SOAP
ACTION_GET_USER_SETTINGS = "http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/GetUserSettings"
_LIMITS = XmlLimits(max_bytes=1024 * 1024, max_depth=24, max_elements=20_000)
_MAX_USERS = 100
_MAX_SETTINGS = 500


@dataclass(frozen=True, slots=True)
class GetUserSettingsRequest:
    """A GetUserSettings request as the lab receives it.

    Attributes:
        mailboxes: Users/User/Mailbox values; settings: RequestedSettings/Setting names.
        requested_server_version: header RequestedServerVersion (e.g. Exchange2016), if any.
    """

    mailboxes: tuple[str, ...]
    settings: tuple[str, ...]
    requested_server_version: str | None


@dataclass(frozen=True, slots=True)
class UserResult:
    """One UserResponse (to build on the server, or as parsed on the client).

    Attributes:
        error_code: NoError | RedirectAddress | RedirectUrl | InvalidUser | ...; error_message: text.
        redirect_target: the address or URL for RedirectAddress / RedirectUrl.
        settings: setting name -> string value (StringSetting).
        setting_errors: setting name -> error code (UserSettingErrors), e.g. SettingIsNotAvailable.
    """

    error_code: str = "NoError"
    error_message: str = ""
    redirect_target: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    setting_errors: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GetUserSettingsResponse:
    """A parsed GetUserSettings response.

    Attributes:
        error_code / error_message: the top-level Response ErrorCode (NoError normally).
        users: the UserResponses, in order; server_version: header ServerVersionInfo, if any.
        fault: a SOAP fault instead of a response, if the server sent one.
    """

    error_code: str | None
    error_message: str | None = None
    users: tuple[UserResult, ...] = ()
    server_version: ServerVersionInfo | None = None
    fault: EwsFault | None = None

    @property
    def user(self) -> UserResult | None:
        """The first UserResponse (probes ask for one mailbox), or None."""
        return self.users[0] if self.users else None


# --- request ----------------------------------------------------------------------------------------


@reraise_as(AutodiscoverError)
def build_get_user_settings_request(
    mailbox: str, settings: Sequence[str], endpoint_url: str, server_version: str = "Exchange2016"
) -> bytes:
    """The GetUserSettings request exchangelib sends: RequestedServerVersion, wsa:Action, wsa:To."""
    if server_version not in EXCHANGE_VERSIONS:
        raise AutodiscoverError(f"unknown RequestedServerVersion {server_version!r}")
    if not settings:
        raise AutodiscoverError("GetUserSettings needs at least one setting")
    env = element(NS_SOAP, "Envelope")
    header = sub(env, NS_SOAP, "Header")
    sub(header, NS_A, "RequestedServerVersion", server_version)
    sub(header, NS_WSA, "Action", ACTION_GET_USER_SETTINGS)
    sub(header, NS_WSA, "To", endpoint_url)
    request = sub(sub(sub(env, NS_SOAP, "Body"), NS_A, "GetUserSettingsRequestMessage"), NS_A, "Request")
    sub(sub(sub(request, NS_A, "Users"), NS_A, "User"), NS_A, "Mailbox", mailbox)
    wanted = sub(request, NS_A, "RequestedSettings")
    for name in settings:
        sub(wanted, NS_A, "Setting", name)
    return to_bytes(env, {"s": NS_SOAP, "a": NS_A, "wsa": NS_WSA, "xsi": NS_XSI})


@reraise_as(AutodiscoverError)
def parse_get_user_settings_request(data: bytes | str) -> GetUserSettingsRequest:
    """Parse a GetUserSettings request (server side; any prefixes). Other operations are an error."""
    header, body = soap_parts(data, _LIMITS)
    message = first_child(body)
    if message is None or message.tag != f"{{{NS_A}}}GetUserSettingsRequestMessage":
        raise AutodiscoverError("SOAP body is not a GetUserSettingsRequestMessage")
    request = child(message, NS_A, "Request")
    if request is None:
        raise AutodiscoverError("GetUserSettingsRequestMessage has no Request")
    users = child(request, NS_A, "Users")
    mailboxes = tuple(
        mbx
        for user in (children(users, NS_A, "User") if users is not None else ())
        if (mbx := child_text(user, NS_A, "Mailbox", max_len=1024))
    )
    wanted = child(request, NS_A, "RequestedSettings")
    settings = tuple(
        name
        for s in (children(wanted, NS_A, "Setting") if wanted is not None else ())
        if (name := (s.text or "").strip()[:256])
    )
    if not mailboxes or len(mailboxes) > _MAX_USERS:
        raise AutodiscoverError(f"GetUserSettings needs 1..{_MAX_USERS} mailboxes, got {len(mailboxes)}")
    if len(settings) > _MAX_SETTINGS:
        raise AutodiscoverError(f"GetUserSettings asks for more than {_MAX_SETTINGS} settings")
    version = None if header is None else child_text(header, NS_A, "RequestedServerVersion", max_len=64)
    return GetUserSettingsRequest(mailboxes=mailboxes, settings=settings, requested_server_version=version)


# --- response ---------------------------------------------------------------------------------------


@reraise_as(AutodiscoverError)
def build_get_user_settings_response(
    users: Sequence[UserResult],
    *,
    server_version: ServerVersionInfo,
    error_code: str = "NoError",
    error_message: str = "",
) -> bytes:
    """The GetUserSettings response (one UserResponse per requested mailbox, in order)."""
    env = element(NS_SOAP, "Envelope")
    header = sub(env, NS_SOAP, "Header")
    sub(header, NS_WSA, "Action", f"{ACTION_GET_USER_SETTINGS}Response", {f"{{{NS_SOAP}}}mustUnderstand": "1"})
    header.append(server_version_element(server_version, ns=NS_A, as_elements=True))
    message = sub(sub(env, NS_SOAP, "Body"), NS_A, "GetUserSettingsResponseMessage")
    response = sub(message, NS_A, "Response")
    sub(response, NS_A, "ErrorCode", error_code)
    sub(response, NS_A, "ErrorMessage", error_message)
    container = sub(response, NS_A, "UserResponses")
    for user in users:
        elem = sub(container, NS_A, "UserResponse")
        sub(elem, NS_A, "ErrorCode", user.error_code)
        sub(elem, NS_A, "ErrorMessage", user.error_message)
        if user.redirect_target is None:
            sub(elem, NS_A, "RedirectTarget", attrs={f"{{{NS_XSI}}}nil": "true"})
        else:
            sub(elem, NS_A, "RedirectTarget", user.redirect_target)
        errors = sub(elem, NS_A, "UserSettingErrors")
        for name, code in user.setting_errors.items():
            err = sub(errors, NS_A, "UserSettingError")
            sub(err, NS_A, "ErrorCode", code)
            sub(err, NS_A, "ErrorMessage", code)
            sub(err, NS_A, "SettingName", name)
        values = sub(elem, NS_A, "UserSettings")
        for name, value in user.settings.items():
            setting = sub(values, NS_A, "UserSetting", attrs={f"{{{NS_XSI}}}type": "StringSetting"})
            sub(setting, NS_A, "Name", name)
            sub(setting, NS_A, "Value", value)
    return to_bytes(env, {"s": NS_SOAP, "a": NS_WSA, "i": NS_XSI})


def _user_result(elem: ET.Element) -> UserResult:
    settings: dict[str, str] = {}
    container = child(elem, NS_A, "UserSettings")
    for setting in children(container, NS_A, "UserSetting") if container is not None else ():
        name = child_text(setting, NS_A, "Name", max_len=256)
        if name:
            settings[name] = child_text(setting, NS_A, "Value", max_len=65536) or ""
        if len(settings) > _MAX_SETTINGS:
            raise AutodiscoverError(f"more than {_MAX_SETTINGS} user settings")
    setting_errors: dict[str, str] = {}
    errors = child(elem, NS_A, "UserSettingErrors")
    for err in children(errors, NS_A, "UserSettingError") if errors is not None else ():
        name = child_text(err, NS_A, "SettingName", max_len=256)
        if name:
            setting_errors[name] = child_text(err, NS_A, "ErrorCode", max_len=256) or ""
    return UserResult(
        error_code=child_text(elem, NS_A, "ErrorCode", max_len=256) or "",
        error_message=child_text(elem, NS_A, "ErrorMessage", max_len=4096) or "",
        redirect_target=child_text(elem, NS_A, "RedirectTarget", max_len=4096),
        settings=types.MappingProxyType(settings),
        setting_errors=types.MappingProxyType(setting_errors),
    )


@reraise_as(AutodiscoverError)
def parse_get_user_settings_response(data: bytes | str) -> GetUserSettingsResponse:
    """Parse a GetUserSettings response (client side; any prefixes) or a SOAP fault."""
    header, body = soap_parts(data, _LIMITS)
    version = find_server_version_info(header)
    payload = first_child(body)
    if payload is not None and payload.tag == f"{{{NS_SOAP}}}Fault":
        return GetUserSettingsResponse(error_code=None, server_version=version, fault=parse_fault(payload))
    if payload is None or payload.tag != f"{{{NS_A}}}GetUserSettingsResponseMessage":
        raise AutodiscoverError("SOAP body is not a GetUserSettingsResponseMessage")
    response = child(payload, NS_A, "Response")
    if response is None:
        raise AutodiscoverError("GetUserSettingsResponseMessage has no Response")
    container = child(response, NS_A, "UserResponses")
    users = tuple(_user_result(u) for u in children(container, NS_A, "UserResponse")) if container is not None else ()
    if len(users) > _MAX_USERS:
        raise AutodiscoverError(f"more than {_MAX_USERS} UserResponses")
    return GetUserSettingsResponse(
        error_code=child_text(response, NS_A, "ErrorCode", max_len=256),
        error_message=child_text(response, NS_A, "ErrorMessage", max_len=4096),
        users=users,
        server_version=version,
    )
