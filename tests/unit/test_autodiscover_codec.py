"""Unit tests for the Autodiscover codecs: POX (autodiscover), SOAP GetUserSettings (autodiscover_soap), v2 JSON.

SOAP compatibility is checked against exchangelib 5.6.0's own AutodiscoverProtocol/GetUserSettings code
through a fake ``requests`` adapter (no sockets).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from casprobe.protocols.autodiscover import (
    NS_POX_REQUEST,
    NS_POX_RESPONSE,
    NS_POX_RESPONSE_OUTLOOK,
    AutodiscoverError,
    PoxError,
    PoxProtocol,
    PoxRequest,
    PoxResponse,
    PoxUser,
    build_pox_request,
    build_pox_response,
    mapi_http_version_for,
    parse_pox_request,
    parse_pox_response,
)
from casprobe.protocols.autodiscover_soap import (
    GetUserSettingsRequest,
    UserResult,
    build_get_user_settings_request,
    build_get_user_settings_response,
    parse_get_user_settings_request,
    parse_get_user_settings_response,
)
from casprobe.protocols.autodiscover_v2 import (
    AutodV2Error,
    AutodV2Result,
    build_v2_error,
    build_v2_response,
    canonical_v2_protocol,
    parse_v2_response,
)
from casprobe.protocols.ews import ServerVersionInfo
from casprobe.protocols.xmlsafe import XmlCodecError

SVI = ServerVersionInfo(15, 2, 1118, 7, "Exchange2016")
GUID = "416c6368-656d-794a-6f45-57615272456e"
ENDPOINT = "https://autodiscover.lab.test/autodiscover/autodiscover.svc"


# --- POX request ------------------------------------------------------------------------------------


def test_pox_request_round_trip() -> None:
    """The Outlook request we build is read back by the lab parser with the 2006a schema."""
    assert parse_pox_request(build_pox_request("alice@lab.test")) == PoxRequest(
        "alice@lab.test", None, NS_POX_RESPONSE_OUTLOOK
    )
    assert b"<Autodiscover xmlns=" in build_pox_request("alice@lab.test")


def test_pox_request_with_legacy_dn_and_prefixes() -> None:
    """A prefixed request carrying only a LegacyDN parses (prefix names are arbitrary)."""
    doc = f"""<?xml version="1.0"?><q:Autodiscover xmlns:q="{NS_POX_REQUEST}"><q:Request>
      <q:LegacyDN>/o=Lab/ou=Exchange Administrative Group/cn=Recipients/cn=alice</q:LegacyDN>
      <q:AcceptableResponseSchema>{NS_POX_RESPONSE_OUTLOOK}</q:AcceptableResponseSchema></q:Request></q:Autodiscover>"""
    req = parse_pox_request(doc)
    assert req.email is None
    assert req.legacy_dn == "/o=Lab/ou=Exchange Administrative Group/cn=Recipients/cn=alice"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (f'<Autodiscover xmlns="{NS_POX_REQUEST}"/>', "no Request"),
        (f'<Autodiscover xmlns="{NS_POX_REQUEST}"><Request><EMailAddress>a@b</EMailAddress></Request></Autodiscover>',
         "AcceptableResponseSchema"),
        (f'<Autodiscover xmlns="{NS_POX_REQUEST}"><Request><AcceptableResponseSchema>x</AcceptableResponseSchema>'
         "</Request></Autodiscover>", "neither EMailAddress"),
        ("<Discover><Request/></Discover>", "not Autodiscover"),
        ("<Autodiscover><Request>", "malformed"),
        ('<!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><Autodiscover>&e;</Autodiscover>', "forbidden"),
    ],
)  # fmt: skip
def test_pox_request_rejects_bad_documents(doc: str, message: str) -> None:
    """Missing parts, wrong roots, broken XML and DTDs raise XmlCodecError subclasses."""
    with pytest.raises(XmlCodecError, match=message):
        parse_pox_request(doc)


# --- POX response -----------------------------------------------------------------------------------

MAPI_SETTINGS = PoxResponse(
    user=PoxUser("Alice", "/o=Lab/ou=EXCH/cn=Recipients/cn=alice", "alice@lab.test", "30c3a927-42aa-5de8"),
    action="settings",
    protocols=(
        PoxProtocol(
            "mapiHttp",
            version="1",
            mailstore_internal_url=f"https://mb1.lab.test/mapi/emsmdb/?MailboxId={GUID}@lab.test",
            mailstore_external_url=f"https://outlook.lab.test/mapi/emsmdb/?MailboxId={GUID}@lab.test",
            addressbook_internal_url=f"https://mb1.lab.test/mapi/nspi/?MailboxId={GUID}@lab.test",
        ),
        PoxProtocol("WEB", as_url="https://outlook.lab.test/EWS/Exchange.asmx"),
    ),
)
RPC_SETTINGS = PoxResponse(
    action="settings",
    protocols=(
        PoxProtocol(
            "EXCH", server=f"{GUID}@lab.test", server_dn="/o=Lab/cn=Servers/cn=x", server_version="73C18880",
            mdb_dn="/o=Lab/cn=x/cn=Microsoft Private MDB", ews_url="https://mb1.lab.test/EWS/Exchange.asmx",
            as_url="https://mb1.lab.test/EWS/Exchange.asmx", oab_url="https://mb1.lab.test/OAB/x/",
            oof_url="https://mb1.lab.test/EWS/Exchange.asmx", ecp_url="https://mb1.lab.test/ecp/",
        ),
        PoxProtocol(
            "EXPR", server="outlook.lab.test", auth_package="Negotiate", ssl=True,
            ews_url="https://outlook.lab.test/EWS/Exchange.asmx",
        ),
    ),
)  # fmt: skip


@pytest.mark.parametrize(
    "resp",
    [
        MAPI_SETTINGS,
        RPC_SETTINGS,
        PoxResponse(action="redirectAddr", redirect_addr="alice@other.test"),
        PoxResponse(action="redirectUrl", redirect_url="https://autodiscover.other.test/autodiscover/autodiscover.xml"),
        PoxResponse(error=PoxError(500, "The email address can't be found.", "15:52:53.0115160", "2477115115")),
        PoxResponse(error=PoxError(600, "Invalid Request")),
        PoxResponse(error=PoxError(601, "Provider is not available")),
        PoxResponse(error=PoxError(603, "Server Error")),
    ],
)
def test_pox_response_round_trip(resp: PoxResponse) -> None:
    """Settings (mapiHttp and EXCH/EXPR/WEB), both redirects and error documents survive build -> parse."""
    assert parse_pox_response(build_pox_response(resp)) == resp


def test_pox_mapi_block_has_spec_shape() -> None:
    """The mapiHttp block uses the Type/Version attributes and MailStore/AddressBook as in [MS-OXDSCLI] 4.4."""
    data = build_pox_response(MAPI_SETTINGS)
    assert b'<Protocol Type="mapiHttp" Version="1"><MailStore><InternalUrl>' in data
    assert f'<Response xmlns="{NS_POX_RESPONSE_OUTLOOK}">'.encode() in data
    assert MAPI_SETTINGS.protocol("MAPIHTTP") is MAPI_SETTINGS.protocols[0]


LEGACY_RESPONSE = f"""<?xml version="1.0" encoding="utf-8"?>
<ad:Autodiscover xmlns:ad="{NS_POX_RESPONSE}">
  <o:Response xmlns:o="{NS_POX_RESPONSE_OUTLOOK}">
    <o:User><o:DisplayName>Bob</o:DisplayName><o:AutoDiscoverSMTPAddress>bob@lab.test</o:AutoDiscoverSMTPAddress></o:User>
    <o:Account>
      <o:AccountType>email</o:AccountType><o:Action>settings</o:Action>
      <o:Protocol><o:Type>EXCH</o:Type><o:Server>mb2.lab.test</o:Server>
        <o:EwsUrl>https://mb2.lab.test/EWS/Exchange.asmx</o:EwsUrl></o:Protocol>
      <o:Protocol><o:Type>EXPR</o:Type><o:Server>outlook.lab.test</o:Server><o:SSL>Off</o:SSL>
        <o:EwsUrl>https://outlook.lab.test/EWS/Exchange.asmx</o:EwsUrl></o:Protocol>
      <o:Protocol><o:Type>WEB</o:Type><o:Internal><o:OWAUrl AuthenticationMethod="Basic">https://x/owa/</o:OWAUrl>
        <o:Protocol><o:Type>EXCH</o:Type><o:ASUrl>https://mb2.lab.test/EWS/Exchange.asmx</o:ASUrl></o:Protocol>
      </o:Internal></o:Protocol>
      <o:Protocol><o:Type>UNKNOWN</o:Type></o:Protocol>
    </o:Account>
  </o:Response>
</ad:Autodiscover>"""


def test_pox_parses_legacy_type_children_and_picks_expr_ews_url() -> None:
    """<Type> children parse; nested WEB protocols are not top-level; legacy EWS URL prefers EXPR."""
    resp = parse_pox_response(LEGACY_RESPONSE)
    assert [p.type for p in resp.protocols] == ["EXCH", "EXPR", "WEB", "UNKNOWN"]
    assert resp.legacy_ews_url == "https://outlook.lab.test/EWS/Exchange.asmx"
    assert resp.protocol("EXPR") == PoxProtocol(
        "EXPR", server="outlook.lab.test", ssl=False, ews_url="https://outlook.lab.test/EWS/Exchange.asmx"
    )
    assert resp.protocols[2].as_url == "https://mb2.lab.test/EWS/Exchange.asmx"
    assert resp.user == PoxUser(display_name="Bob", smtp_address="bob@lab.test")


@pytest.mark.parametrize("spelling", ["RedirectURL", "RedirectUrl", "redirecturl"])
def test_pox_redirect_url_is_read_case_insensitively(spelling: str) -> None:
    """Exchange's RedirectURL and gromox's RedirectUrl are both understood."""
    doc = f"""<Autodiscover xmlns="{NS_POX_RESPONSE}"><Response xmlns="{NS_POX_RESPONSE_OUTLOOK}"><Account>
      <Action>redirectUrl</Action><{spelling}>https://ad.other.test/autodiscover/autodiscover.xml</{spelling}>
      </Account></Response></Autodiscover>"""
    assert parse_pox_response(doc).redirect_url == "https://ad.other.test/autodiscover/autodiscover.xml"


@pytest.mark.parametrize("ns", [NS_POX_RESPONSE, NS_POX_RESPONSE_OUTLOOK])
def test_pox_error_document_in_either_namespace(ns: str) -> None:
    """The error document is recognised whether Response is in the 2006 or the 2006a namespace."""
    doc = f"""<Autodiscover xmlns="{NS_POX_RESPONSE}"><Response xmlns="{ns}"><Error Time="1:2:3" Id="42">
      <ErrorCode>500</ErrorCode><Message>The email address can't be found.</Message><DebugData/></Error>
      </Response></Autodiscover>"""
    assert parse_pox_response(doc).error == PoxError(500, "The email address can't be found.", "1:2:3", "42")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (f'<Autodiscover xmlns="{NS_POX_REQUEST}"/>', "not a POX Autodiscover response"),
        (f'<Autodiscover xmlns="{NS_POX_RESPONSE}"/>', "no Response"),
        (f'<Autodiscover xmlns="{NS_POX_RESPONSE}"><Response xmlns="urn:mobilesync"/></Autodiscover>', "no Response"),
        (f'<Autodiscover xmlns="{NS_POX_RESPONSE}"><Response/></Autodiscover>', "neither Account nor Error"),
        (f'<Autodiscover xmlns="{NS_POX_RESPONSE}"><Response xmlns="{NS_POX_RESPONSE_OUTLOOK}"/></Autodiscover>',
         "neither Account nor Error"),
        (f'<Autodiscover xmlns="{NS_POX_RESPONSE}"><Response><Error><ErrorCode>x1</ErrorCode></Error></Response>'
         "</Autodiscover>", "not an integer"),
        (f'<Autodiscover xmlns="{NS_POX_RESPONSE}"><Response xmlns="{NS_POX_RESPONSE_OUTLOOK}"><Account><Protocol/>'
         "</Account></Response></Autodiscover>", "without a Type"),
        ("<html><body>503 Service Unavailable</body></html>", "root is 'html'"),
        ("<a>" * 100 + "</a>" * 100, "nesting"),
    ],
)  # fmt: skip
def test_pox_response_rejects_bad_documents(doc: str, message: str) -> None:
    """Wrong roots/namespaces, missing blocks, bad codes, type-less protocols and deep nesting are refused."""
    with pytest.raises(AutodiscoverError, match=message):
        parse_pox_response(doc)


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("1", 1), ("2", 1), (" 3 ", 1), ("9" * 40, 1), ("0", None), ("-1", None), ("+1", None),
     ("1.0", None), ("", None), ("abc", None)],
)  # fmt: skip
def test_mapi_http_version_rule(header: str | None, expected: int | None) -> None:
    """X-MapiHttpCapability is honoured only as an integer > 0, capped at our highest version (1)."""
    assert mapi_http_version_for(header) == expected


# --- SOAP GetUserSettings -----------------------------------------------------------------------------


class _Adapter(BaseAdapter):
    handler: Callable[[bytes], bytes]
    seen: list[bytes]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        body = request.body.encode() if isinstance(request.body, str) else bytes(request.body or b"")
        type(self).seen.append(body)
        payload = type(self).handler(body)
        resp = requests.Response()
        resp.status_code, resp._content, resp.raw = 200, payload, io.BytesIO(payload)
        resp.url, resp.request = request.url or "", request
        resp.headers["Content-Type"] = "text/xml; charset=utf-8"
        return resp

    def close(self) -> None:
        pass


@pytest.fixture
def exchangelib_autodiscover(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Run exchangelib's GetUserSettings for one user against ``handler``; return (UserResponse, requests)."""
    from exchangelib import BASIC, Configuration, Credentials
    from exchangelib.autodiscover.protocol import AutodiscoverProtocol
    from exchangelib.protocol import BaseProtocol, close_connections

    counter = iter(range(10_000))

    def run(handler: Callable[[bytes], bytes]) -> tuple[Any, list[bytes]]:
        adapter: type[_Adapter] = type("Adapter", (_Adapter,), {"handler": staticmethod(handler), "seen": []})
        monkeypatch.setattr(BaseProtocol, "HTTP_ADAPTER_CLS", adapter)
        endpoint = f"https://ad{next(counter)}.codec.test/autodiscover/autodiscover.svc"
        cfg = Configuration(
            service_endpoint=endpoint, credentials=Credentials("alice@lab.test", "not-a-secret"), auth_type=BASIC
        )
        return AutodiscoverProtocol(config=cfg).get_user_settings("alice@lab.test"), adapter.seen

    yield run
    close_connections()


def _lab_answer(user: UserResult) -> Callable[[bytes], bytes]:
    def handler(body: bytes) -> bytes:
        req = parse_get_user_settings_request(body)
        settings = {k: v for k, v in user.settings.items() if k in req.settings}  # answer only what was asked
        answer = UserResult(user.error_code, user.error_message, user.redirect_target, settings)
        return build_get_user_settings_response([answer] * len(req.mailboxes), server_version=SVI)

    return handler


def test_exchangelib_reads_our_settings_response(exchangelib_autodiscover: Callable[..., Any]) -> None:
    """exchangelib takes ExternalEwsUrl and the API version from EwsSupportedSchemas in our response."""
    settings = {
        "ExternalEwsUrl": "https://outlook.lab.test/EWS/Exchange.asmx",
        "EwsSupportedSchemas": "Exchange2007, Exchange2010, Exchange2013, Exchange2016",
        "UserDisplayName": "Alice",
        "AutoDiscoverSMTPAddress": "alice@lab.test",
    }
    user, seen = exchangelib_autodiscover(_lab_answer(UserResult(settings=settings)))
    assert user.ews_url == "https://outlook.lab.test/EWS/Exchange.asmx"
    assert user.version.api_version == "Exchange2016"
    assert user.autodiscover_smtp_address == "alice@lab.test"
    req = parse_get_user_settings_request(seen[0])
    assert req.mailboxes == ("alice@lab.test",)
    assert req.requested_server_version == "Exchange2016"
    assert {"ExternalEwsUrl", "EwsSupportedSchemas", "InternalEwsUrl"} <= set(req.settings)


@pytest.mark.parametrize(
    ("code", "target", "attribute"),
    [
        ("RedirectAddress", "alice@other.test", "redirect_address"),
        ("RedirectUrl", "https://ad.other.test/autodiscover/autodiscover.svc", "redirect_url"),
    ],
)
def test_exchangelib_follows_our_redirects(
    exchangelib_autodiscover: Callable[..., Any], code: str, target: str, attribute: str
) -> None:
    """Per-user RedirectAddress / RedirectUrl with RedirectTarget become exchangelib's redirect fields."""
    user, _ = exchangelib_autodiscover(_lab_answer(UserResult(code, "Redirection.", target)))
    assert getattr(user, attribute) == target


def test_exchangelib_maps_invalid_user(exchangelib_autodiscover: Callable[..., Any]) -> None:
    """A per-user InvalidUser error becomes exchangelib's ErrorNonExistentMailbox."""
    from exchangelib.errors import ErrorNonExistentMailbox

    user, _ = exchangelib_autodiscover(_lab_answer(UserResult("InvalidUser", "Invalid user: 'alice@lab.test'")))
    with pytest.raises(ErrorNonExistentMailbox):
        user.raise_errors()


def test_get_user_settings_round_trip() -> None:
    """Our request and response builders round-trip through our parsers, with the Autodiscover-ns version."""
    req = build_get_user_settings_request("alice@lab.test", ["ExternalEwsUrl", "UserDisplayName"], ENDPOINT)
    assert parse_get_user_settings_request(req) == GetUserSettingsRequest(
        ("alice@lab.test",), ("ExternalEwsUrl", "UserDisplayName"), "Exchange2016"
    )
    users = [
        UserResult(
            settings={"ExternalEwsUrl": "https://o.lab.test/EWS/Exchange.asmx"}, setting_errors={"X": "InvalidSetting"}
        ),
        UserResult("RedirectAddress", "Redirection address.", "bob@other.test"),
    ]
    resp = parse_get_user_settings_response(build_get_user_settings_response(users, server_version=SVI))
    assert (resp.error_code, resp.server_version, resp.fault) == ("NoError", SVI, None)
    assert resp.users == tuple(users)
    assert resp.user is not None
    assert resp.user.settings["ExternalEwsUrl"] == "https://o.lab.test/EWS/Exchange.asmx"


HANDWRITTEN_GUS = """<?xml version="1.0" encoding="utf-8"?>
<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/" xmlns:w="http://www.w3.org/2005/08/addressing">
  <env:Header>
    <ver:ServerVersionInfo xmlns:ver="http://schemas.microsoft.com/exchange/2010/Autodiscover">
      <ver:MajorVersion>15</ver:MajorVersion><ver:MinorVersion>1</ver:MinorVersion>
      <ver:MajorBuildNumber>2507</ver:MajorBuildNumber><ver:MinorBuildNumber>6</ver:MinorBuildNumber>
      <ver:Version>Exchange2015</ver:Version>
    </ver:ServerVersionInfo>
  </env:Header>
  <env:Body>
    <GetUserSettingsResponseMessage xmlns="http://schemas.microsoft.com/exchange/2010/Autodiscover">
      <Response xmlns:xi="http://www.w3.org/2001/XMLSchema-instance">
        <ErrorCode>NoError</ErrorCode><ErrorMessage/>
        <UserResponses><UserResponse>
          <ErrorCode>NoError</ErrorCode><ErrorMessage>No error.</ErrorMessage><RedirectTarget xi:nil="true"/>
          <UserSettingErrors><UserSettingError><ErrorCode>SettingIsNotAvailable</ErrorCode>
            <ErrorMessage>User setting 'ExternalMailboxServer' is not available.</ErrorMessage>
            <SettingName>ExternalMailboxServer</SettingName></UserSettingError></UserSettingErrors>
          <UserSettings><UserSetting xi:type="StringSetting"><Name>InternalEwsUrl</Name>
            <Value>https://mb1.lab.test/EWS/Exchange.asmx</Value></UserSetting></UserSettings>
        </UserResponse></UserResponses>
      </Response>
    </GetUserSettingsResponseMessage>
  </env:Body>
</env:Envelope>"""


def test_get_user_settings_parses_other_prefix_style() -> None:
    """A default-namespace response with unusual prefixes, nil RedirectTarget and setting errors parses."""
    resp = parse_get_user_settings_response(HANDWRITTEN_GUS)
    assert resp.server_version == ServerVersionInfo(15, 1, 2507, 6, "Exchange2015")
    assert resp.user == UserResult(
        "NoError",
        "No error.",
        None,
        {"InternalEwsUrl": "https://mb1.lab.test/EWS/Exchange.asmx"},
        {"ExternalMailboxServer": "SettingIsNotAvailable"},
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parse_get_user_settings_request(build_get_user_settings_response([], server_version=SVI)),
         "not a GetUserSettingsRequestMessage"),
        (lambda: parse_get_user_settings_response(build_get_user_settings_request("a@b", ["X"], ENDPOINT)),
         "not a GetUserSettingsResponseMessage"),
        (lambda: build_get_user_settings_request("a@b", [], ENDPOINT), "at least one setting"),
        (lambda: parse_get_user_settings_request(
            build_get_user_settings_request("a@b", ["X"], ENDPOINT).replace(b"a@b", b"")), "1..100 mailboxes"),
        (lambda: parse_get_user_settings_response(b"<Envelope/>"), "not a SOAP 1.1 envelope"),
    ],
)  # fmt: skip
def test_get_user_settings_rejects_wrong_documents(call: Callable[[], object], message: str) -> None:
    """Requests and responses swapped, empty mailboxes/settings and non-SOAP roots raise XmlCodecError."""
    with pytest.raises(XmlCodecError, match=message):
        call()


def test_get_user_settings_fault_is_returned_as_data() -> None:
    """A SOAP fault from autodiscover.svc is returned in .fault rather than raised."""
    from casprobe.protocols.ews_server import build_fault

    resp = parse_get_user_settings_response(build_fault("ErrorServerBusy", "busy", back_off_ms=5000))
    assert resp.fault is not None
    assert (resp.fault.code, resp.fault.back_off_ms, resp.users) == ("ErrorServerBusy", 5000, ())


# --- Autodiscover v2 JSON -----------------------------------------------------------------------------


def test_v2_round_trip_and_protocol_names() -> None:
    """A v2 answer round-trips; protocol names are matched case-insensitively, unknown ones are None."""
    url = "https://outlook.lab.test/EWS/Exchange.asmx"
    assert parse_v2_response(build_v2_response("Ews", url)) == AutodV2Result("Ews", url)
    assert json.loads(build_v2_response("Ews", url)) == {"Protocol": "Ews", "Url": url}
    assert canonical_v2_protocol("EWS") == "Ews"
    assert canonical_v2_protocol("autodiscoverv1") == "AutodiscoverV1"
    assert canonical_v2_protocol("Gopher") is None


def test_v2_error_document_raises_with_server_code() -> None:
    """An ErrorCode document raises AutodV2Error carrying the server's code and message."""
    with pytest.raises(AutodV2Error) as info:
        parse_v2_response(build_v2_error("ProtocolNotSupported", "The protocol 'Gopher' is not supported."))
    assert info.value.error_code == "ProtocolNotSupported"
    assert info.value.error_message == "The protocol 'Gopher' is not supported."


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"Protocol": "Ews"}', "lacks string Protocol and Url"),
        (b'{"Protocol": "Ews", "Url": 7}', "lacks string Protocol and Url"),
        (b'{"a": "' + b"x" * 70_000 + b'"}', "larger than"),
        (b"[" * 60_000 + b"]" * 60_000, "larger than|not JSON"),
        (b"[" * 30_000 + b"]" * 30_000, "not JSON|not a JSON object"),
    ],
)
def test_v2_rejects_bad_answers(data: bytes, message: str) -> None:
    """Non-JSON, non-objects, missing fields, oversized and deeply nested answers raise AutodiscoverError."""
    with pytest.raises(AutodiscoverError, match=message):
        parse_v2_response(data)
