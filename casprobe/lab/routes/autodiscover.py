"""The lab's Autodiscover endpoints: POX (Outlook), SOAP GetUserSettings (exchangelib) and v2 JSON.

- ``POST /autodiscover/autodiscover.xml`` (authenticated) — POX per [MS-OXDSCLI] §2.2.3-§2.2.4, §3.2.5.1 and §4.4
  (protocols.md §1.2-§1.4). With a valid ``X-MapiHttpCapability`` the answer holds the ``mapiHttp`` Protocol
  (MailStore/AddressBook ``…/mapi/emsmdb|nspi/?MailboxId=<guid>@<domain>``) and a WEB block, never EXCH/EXPR;
  without it, EXCH (``Server`` = ``<mailbox guid>@<domain>``), EXPR (``Server`` = the handed-out host) and WEB. A
  ``GET`` answers the error document 600, as Exchange does to a browser.
- ``POST /autodiscover/autodiscover.svc`` (authenticated) — SOAP GetUserSettings per [MS-OXWSADISC] §3.1.4.5 as
  exchangelib 5.6.0 sends it (protocols.md §1.5): one UserResponse per mailbox with only the requested settings
  the lab knows; requested settings it does not know come back as ``SettingIsNotAvailable`` UserSettingErrors
  (exchangelib ignores those); unknown users get ``InvalidUser``.
- ``GET /autodiscover/autodiscover.json/v1.0/<smtp>?Protocol=…`` and ``…/autodiscover.json?Email=…&Protocol=…``
  (anonymous) — v2 JSON (protocols.md §1.6). On-premises protocols only: Ews, AutodiscoverV1, ActiveSync, Rest;
  any other name → 400 ``ProtocolNotSupported`` with ``jsonerror: true`` (the Exchange Online form); a missing
  Protocol or Email → 400 ``MandatoryParameterMissing``. The answer does not depend on the user (anonymous).

Every URL comes from ``world.base_url(server)``: the namespace, or the answering server's own name when that
server's URL mode is "server" — what the probes measure. Autodiscover reads the directory, never the mailbox, so
it answers while the mailbox's database is moving or its server is off.

Lab choices where the protocol leaves it to the deployment (documented, used by the tests):

- **redirectAddr**: ``<alias>@mail.<domain>`` (a secondary SMTP domain of the lab) → ``Action=redirectAddr`` to the
  primary ``<alias>@<domain>``; SOAP: ``RedirectAddress`` with that target.
- **redirectUrl**: ``<alias>@redirect.<domain>`` asked anywhere except on ``autodiscover.<domain>`` →
  ``Action=redirectUrl`` to ``https://autodiscover.<domain>[:port]/autodiscover/autodiscover.xml`` (SOAP:
  ``RedirectUrl`` to ``…/autodiscover.svc``). Asked on ``autodiscover.<domain>`` (the redirect target, by Host),
  the address is rewritten to ``<alias>@<domain>`` and the settings are answered at once, so a client following
  the redirect ends at settings in one hop and never loops.
- Any lab user's settings may be asked by any authenticated user (delegates do that); an address that is no lab
  user (after the rewrites) → POX error 500 / SOAP ``InvalidUser``. An unparsable POX request → 600; an
  AcceptableResponseSchema other than ``…/outlook/responseschema/2006a`` → 601; an unparsable SOAP request → HTTP 500
  SOAP fault ``InvalidRequest``; bodies over 1 MiB → 413.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from casprobe.lab.org import ADMIN_GROUP_DN, User
from casprobe.lab.routes.common import BodyTooLarge, ClientDisconnect, read_body
from casprobe.lab.world import LabWorld
from casprobe.protocols.autodiscover import (
    NS_POX_RESPONSE_OUTLOOK,
    AutodiscoverError,
    PoxError,
    PoxProtocol,
    PoxResponse,
    PoxUser,
    build_pox_response,
    mapi_http_version_for,
    parse_pox_request,
)
from casprobe.protocols.autodiscover_soap import (
    UserResult,
    build_get_user_settings_response,
    parse_get_user_settings_request,
)
from casprobe.protocols.autodiscover_v2 import build_v2_error, build_v2_response, canonical_v2_protocol
from casprobe.protocols.ews import EXCHANGE_VERSIONS, ServerVersionInfo
from casprobe.protocols.ews_server import build_fault

__all__ = ["AUTODISCOVER_SERVER_VERSION", "authenticated_user", "routes", "server_version_hex"]

AUTODISCOVER_SERVER_VERSION = ServerVersionInfo(15, 2, 1544, 4, "Exchange2016")
_MAX_BODY = 1024 * 1024
_V2_PATHS = {"ews": "/EWS/Exchange.asmx", "autodiscoverv1": "/autodiscover/autodiscover.xml"}
_V2_PATHS |= {"activesync": "/Microsoft-Server-ActiveSync", "rest": "/api"}


def server_version_hex(svi: ServerVersionInfo) -> str:
    """POX ``ServerVersion``: 0x70000000 | major<<22 | minor<<16 | 0x8000 | build (2010 SP1: ``738180DA``)."""
    value = 0x70000000 | (svi.major << 22) | (svi.minor << 16) | 0x8000 | (svi.major_build & 0x7FFF)
    return f"{value:08X}"


class _ScopeView:
    """Adapts a Starlette request to :class:`casprobe.lab.world.RequestLike` (its scope as a plain dict)."""

    def __init__(self, request: Request) -> None:
        self._scope: dict[str, object] = dict(request.scope)

    @property
    def scope(self) -> dict[str, object]:
        return self._scope


def authenticated_user(world: LabWorld, request: Request) -> User | None:
    """The lab user the auth middleware authenticated for this request, or None."""
    return world.user_for_request(_ScopeView(request))


class _Directory:
    """Address lookups with the lab's redirect domains (see the module docstring)."""

    def __init__(self, world: LabWorld) -> None:
        self.world = world
        self.domain = world.org.domain
        self.deployment_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"deployment.{self.domain}"))

    def redirect_addr(self, address: str) -> str | None:
        local, _, domain = address.lower().partition("@")
        if domain == f"mail.{self.domain}" and self.world.org.find_user(f"{local}@{self.domain}") is not None:
            return f"{local}@{self.domain}"
        return None

    def is_redirect_url_domain(self, address: str) -> bool:
        return address.lower().partition("@")[2] == f"redirect.{self.domain}"

    def resolve(self, address: str) -> User | None:
        """The user an address names, the redirect domain rewritten to the primary one."""
        local, _, domain = address.lower().partition("@")
        if domain == f"redirect.{self.domain}":
            address = f"{local}@{self.domain}"
        return self.world.org.find_user(address) if "@" in address or address.startswith("/") else None

    def autodiscover_origin(self) -> str:
        port = self.world.config.port
        host = self.world.org.autodiscover
        return f"https://{host}" if port == 443 else f"https://{host}:{port}"

    def on_autodiscover_host(self, request: Request) -> bool:
        host = request.headers.get("host", "").rsplit(":", 1)[0].lower()
        return host == self.world.org.autodiscover


def _mailbox_server_dn(user: User) -> str:
    return f"{ADMIN_GROUP_DN}/cn=Configuration/cn=Servers/cn={user.mailbox_id}"


def _urls(base: str, user: User) -> dict[str, str]:
    return {
        "ews": f"{base}/EWS/Exchange.asmx",
        "oab": f"{base}/OAB/{uuid.uuid5(uuid.NAMESPACE_DNS, 'oab.' + user.smtp.partition('@')[2])}/",
        "ecp": f"{base}/ecp/",
        "owa": f"{base}/owa/",
        "as": f"{base}/Microsoft-Server-ActiveSync",
        "emsmdb": f"{base}/mapi/emsmdb/?MailboxId={user.mailbox_id}",
        "nspi": f"{base}/mapi/nspi/?MailboxId={user.mailbox_id}",
    }


# --- POX ----------------------------------------------------------------------------------------------------


def _pox_settings(world: LabWorld, server: str, user: User, directory: _Directory, mapi: int | None) -> PoxResponse:
    base = world.base_url(server)
    urls = _urls(base, user)
    pox_user = PoxUser(user.display_name, user.legacy_dn, user.smtp, directory.deployment_id)
    web = PoxProtocol(type="WEB", as_url=urls["ews"])
    if mapi is not None:
        mapi_block = PoxProtocol(
            type="mapiHttp",
            version=str(mapi),
            mailstore_internal_url=urls["emsmdb"],
            mailstore_external_url=urls["emsmdb"],
            addressbook_internal_url=urls["nspi"],
            addressbook_external_url=urls["nspi"],
        )
        return PoxResponse(user=pox_user, action="settings", protocols=(mapi_block, web))
    host = urlsplit(base).hostname or world.org.namespace
    exch = PoxProtocol(
        type="EXCH",
        server=user.mailbox_id,
        server_dn=_mailbox_server_dn(user),
        server_version=server_version_hex(AUTODISCOVER_SERVER_VERSION),
        mdb_dn=f"{_mailbox_server_dn(user)}/cn=Microsoft Private MDB",
        ews_url=urls["ews"],
        as_url=urls["ews"],
        oab_url=urls["oab"],
        oof_url=urls["ews"],
        ecp_url=urls["ecp"],
    )
    expr = replace(exch, type="EXPR", server=host, server_dn=None, server_version=None, mdb_dn=None)
    expr = replace(expr, ssl=True, auth_package="Ntlm")
    return PoxResponse(user=pox_user, action="settings", protocols=(exch, expr, web))


def _pox_error(server: str, code: int, message: str) -> Response:
    now = datetime.now(UTC)
    error = PoxError(
        code=code,
        message=message,
        time=now.strftime("%H:%M:%S.") + f"{now.microsecond * 10:07d}",
        id=str(zlib.crc32(server.encode())),
    )
    return _xml(build_pox_response(PoxResponse(error=error)))


def _xml(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="text/xml; charset=utf-8")


async def _body(request: Request) -> bytes | Response:
    try:
        return await read_body(request, _MAX_BODY)
    except BodyTooLarge:
        return PlainTextResponse("Request Entity Too Large", status_code=413, headers={"Connection": "close"})
    except ClientDisconnect:
        return Response(status_code=400)


def _pox_route(world: LabWorld, server: str, directory: _Directory) -> Route:
    async def autodiscover_xml(request: Request) -> Response:
        if request.method == "GET":
            return _pox_error(server, 600, "Invalid Request")
        body = await _body(request)
        if isinstance(body, Response):
            return body
        try:
            pox = parse_pox_request(body)
        except AutodiscoverError:
            return _pox_error(server, 600, "Invalid Request")
        if pox.acceptable_schema != NS_POX_RESPONSE_OUTLOOK:
            return _pox_error(server, 601, "The requested schema version is not supported.")
        address = pox.email or pox.legacy_dn or ""
        target = directory.redirect_addr(address) if pox.email else None
        if target is not None:
            return _xml(build_pox_response(PoxResponse(action="redirectAddr", redirect_addr=target)))
        if pox.email and directory.is_redirect_url_domain(pox.email) and not directory.on_autodiscover_host(request):
            url = f"{directory.autodiscover_origin()}/autodiscover/autodiscover.xml"
            return _xml(build_pox_response(PoxResponse(action="redirectUrl", redirect_url=url)))
        user = directory.resolve(address)
        if user is None:
            return _pox_error(server, 500, "The email address can't be found.")
        mapi = mapi_http_version_for(request.headers.get("x-mapihttpcapability"))
        return _xml(build_pox_response(_pox_settings(world, server, user, directory, mapi)))

    return Route("/autodiscover/autodiscover.xml", autodiscover_xml, methods=["GET", "POST"])


# --- SOAP ---------------------------------------------------------------------------------------------------


def _soap_settings(world: LabWorld, server: str, user: User, directory: _Directory) -> dict[str, str]:
    base = world.base_url(server)
    urls = _urls(base, user)
    svi = AUTODISCOVER_SERVER_VERSION
    cas = f"{svi.major}.{svi.minor:02d}.{svi.major_build:04d}.{svi.minor_build:03d}"
    host = urlsplit(base).hostname or world.org.namespace
    return {
        "UserDisplayName": user.display_name,
        "UserDN": user.legacy_dn,
        "UserDeploymentId": directory.deployment_id,
        "AutoDiscoverSMTPAddress": user.smtp,
        "InternalMailboxServer": user.mailbox_id,
        "InternalRpcClientServer": user.mailbox_id,
        "InternalMailboxServerDN": _mailbox_server_dn(user),
        "MailboxDN": f"{_mailbox_server_dn(user)}/cn=Microsoft Private MDB",
        "ExternalMailboxServer": host,
        "ExternalMailboxServerRequiresSSL": "True",
        "ExternalMailboxServerAuthenticationMethods": "Ntlm",
        "InternalEwsUrl": urls["ews"],
        "ExternalEwsUrl": urls["ews"],
        "InternalOABUrl": urls["oab"],
        "ExternalOABUrl": urls["oab"],
        "InternalEcpUrl": urls["ecp"],
        "ExternalEcpUrl": urls["ecp"],
        "EwsSupportedSchemas": ", ".join(EXCHANGE_VERSIONS),
        "CasVersion": cas,
        "ExternalEwsVersion": cas,
        "MapiHttpEnabled": "True",
    }


def _soap_user(
    world: LabWorld, server: str, directory: _Directory, mailbox: str, wanted: tuple[str, ...], on_ad_host: bool
) -> UserResult:
    target = directory.redirect_addr(mailbox)
    if target is not None:
        return UserResult("RedirectAddress", f"Redirection address {target}.", redirect_target=target)
    if directory.is_redirect_url_domain(mailbox) and not on_ad_host:
        url = f"{directory.autodiscover_origin()}/autodiscover/autodiscover.svc"
        return UserResult("RedirectUrl", f"Redirection URL {url}.", redirect_target=url)
    user = directory.resolve(mailbox)
    if user is None:
        return UserResult("InvalidUser", f"Invalid user: '{mailbox}'")
    available = _soap_settings(world, server, user, directory)
    return UserResult(
        settings={name: available[name] for name in wanted if name in available},
        setting_errors={name: "SettingIsNotAvailable" for name in wanted if name not in available},
    )


def _soap_route(world: LabWorld, server: str, directory: _Directory) -> Route:
    async def autodiscover_svc(request: Request) -> Response:
        body = await _body(request)
        if isinstance(body, Response):
            return body
        try:
            req = parse_get_user_settings_request(body)
        except AutodiscoverError as exc:
            return _xml(build_fault("InvalidRequest", f"The request is invalid: {exc}"), 500)
        on_ad_host = directory.on_autodiscover_host(request)
        users = [_soap_user(world, server, directory, m, req.settings, on_ad_host) for m in req.mailboxes]
        return _xml(build_get_user_settings_response(users, server_version=AUTODISCOVER_SERVER_VERSION))

    return Route("/autodiscover/autodiscover.svc", autodiscover_svc, methods=["POST"])


# --- v2 JSON ------------------------------------------------------------------------------------------------


def _json(body: bytes, status: int = 200) -> Response:
    headers = {"jsonerror": "true"} if status != 200 else None
    return Response(body, status_code=status, media_type="application/json; charset=utf-8", headers=headers)


def _v2_routes(world: LabWorld, server: str) -> list[BaseRoute]:
    supported = ", ".join(canonical_v2_protocol(p) or p for p in _V2_PATHS)

    def answer(email: str | None, protocol: str | None) -> Response:
        if not email or "@" not in email:
            return _json(build_v2_error("MandatoryParameterMissing", "A valid email address is required."), 400)
        if not protocol:
            message = "A valid value must be provided for the query parameter 'Protocol'."
            return _json(build_v2_error("MandatoryParameterMissing", message), 400)
        name = canonical_v2_protocol(protocol)
        path = _V2_PATHS.get(protocol.strip().lower())
        if name is None or path is None:
            message = f"The given protocol value '{protocol[:64]}' is invalid. Supported values are '{supported}'."
            return _json(build_v2_error("ProtocolNotSupported", message), 400)
        return _json(build_v2_response(name, world.base_url(server) + path))

    def query(request: Request, key: str) -> str | None:
        return next((v for k, v in request.query_params.items() if k.lower() == key), None)

    async def by_path(request: Request) -> Response:
        return answer(request.path_params["email"], query(request, "protocol"))

    async def by_query(request: Request) -> Response:
        return answer(query(request, "email"), query(request, "protocol"))

    return [
        Route("/autodiscover/autodiscover.json/v1.0/{email}", by_path, methods=["GET"]),
        Route("/autodiscover/autodiscover.json", by_query, methods=["GET"]),
    ]


def routes(world: LabWorld, server: str) -> list[BaseRoute]:
    """POX, SOAP and v2 JSON Autodiscover for ``server``."""
    directory = _Directory(world)
    return [_pox_route(world, server, directory), _soap_route(world, server, directory), *_v2_routes(world, server)]
