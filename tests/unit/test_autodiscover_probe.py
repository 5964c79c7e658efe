"""The autodiscover probe against scripted loopback servers: answers, redirects, candidates, hostile servers.

Sample answers are written here following the published structures (not copied):
- POX mapiHttp settings: [MS-OXDSCLI] §4.4 "MapiHttp Response" (User, Account/Action, Protocol Type="mapiHttp"
  with MailStore/AddressBook URLs, then a WEB Protocol with External/OWAUrl and a nested EXPR ASUrl);
- POX legacy settings without mapiHttp: the shape of the Exchange Online answer in otris/ews-cpp
  ``tests/assets/autodiscover_response.xml`` (EXCH / EXPR / WEB blocks, MicrosoftOnline);
- POX error document: otris/ews-cpp ``tests/assets/autodiscover_response_error.xml`` (Error Time/Id, ErrorCode,
  Message, DebugData, in the 2006 namespace);
- redirectAddr / redirectUrl: exchangelib v4.9.0 ``tests/test_autodiscover_pox.py`` vectors (Account with Action and
  RedirectAddr / RedirectUrl only);
- SOAP GetUserSettings: exchangelib ``tests/test_autodiscover.py`` ``settings_xml`` (ServerVersionInfo header,
  UserResponses/UserResponse/UserSettings/UserSetting i:type="StringSetting");
- v2 JSON: protocols.md 1.6 (``{"Protocol": "Ews", "Url": …}``).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from casprobe.errors import ConfigError
from casprobe.model import ErrorClass, ProbeResult, Severity, Target, TargetKind
from casprobe.net.credentials import Credentials, Secret
from casprobe.net.tls import TlsOptions
from casprobe.net.transport import TransportOptions
from casprobe.probes import discovery, get_probe
from casprobe.probes.base import AuthChoice, ProbeContext, ProbeSettings
from casprobe.probes.discovery import SrvAnswer, SrvRecord
from tests.hostile_servers import (
    CertKind,
    CertKit,
    Handler,
    HostileServer,
    LoopbackResolver,
    Reply,
    Request,
    always,
    bad_ntlm_challenge,
    close,
    endless,
    fixed,
    huge,
    raw,
    redirect,
    route,
    trickle,
    xml,
)

DOMAIN = "example.test"
NS = "outlook.example.test"
MB1, MB2 = "mb1.example.test", "mb2.example.test"
MAILBOX = "alice@example.test"
GUID = "7a1b8c2d-3e4f-4a5b-8c6d-0e1f2a3b4c5d"
PASSWORD = "Pa55-w0rd-never-printed"
POX_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
POX_NS_A = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"

probe = get_probe("autodiscover")
REAL_LOOKUP_SRV = discovery.lookup_srv


# --- sample answers -----------------------------------------------------------------------------------------


def pox_mapi(host: str, *, external: str | None = None) -> str:
    """Settings with the mapiHttp block ([MS-OXDSCLI] §4.4 structure), URLs naming ``host``."""
    ext = external or host
    return f"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="{POX_NS}">
  <Response xmlns="{POX_NS_A}">
    <User>
      <DisplayName>Alice Example</DisplayName>
      <LegacyDN>/o=Example/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=4b1c-alice</LegacyDN>
      <AutoDiscoverSMTPAddress>{MAILBOX}</AutoDiscoverSMTPAddress>
      <DeploymentId>0c9f5a86-4a1e-4f43-9a5e-2f7d1c3b8e61</DeploymentId>
    </User>
    <Account>
      <AccountType>email</AccountType>
      <Action>settings</Action>
      <Protocol Type="mapiHttp" Version="1">
        <MailStore>
          <InternalUrl>https://{host}/mapi/emsmdb/?MailboxId={GUID}@{DOMAIN}</InternalUrl>
          <ExternalUrl>https://{ext}/mapi/emsmdb/?MailboxId={GUID}@{DOMAIN}</ExternalUrl>
        </MailStore>
        <AddressBook>
          <InternalUrl>https://{host}/mapi/nspi/?MailboxId={GUID}@{DOMAIN}</InternalUrl>
          <ExternalUrl>https://{ext}/mapi/nspi/?MailboxId={GUID}@{DOMAIN}</ExternalUrl>
        </AddressBook>
      </Protocol>
      <Protocol>
        <Type>WEB</Type>
        <External>
          <OWAUrl AuthenticationMethod="Fba">https://{host}/owa/</OWAUrl>
          <Protocol><Type>EXPR</Type><ASUrl>https://{host}/EWS/Exchange.asmx</ASUrl></Protocol>
        </External>
      </Protocol>
    </Account>
  </Response>
</Autodiscover>"""


def pox_legacy(host: str) -> str:
    """Settings without mapiHttp (the EXCH/EXPR/WEB shape of an Exchange Online answer)."""
    return f"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="{POX_NS}"><Response xmlns="{POX_NS_A}">
  <User><DisplayName>Alice Example</DisplayName><LegacyDN>/o=Example/cn=alice</LegacyDN></User>
  <Account><AccountType>email</AccountType><Action>settings</Action><MicrosoftOnline>False</MicrosoftOnline>
    <Protocol><Type>EXCH</Type><Server>{GUID}@{DOMAIN}</Server><ServerVersion>73C18880</ServerVersion>
      <EwsUrl>https://{host}/EWS/Exchange.asmx</EwsUrl><EcpUrl>https://{host}/ecp/</EcpUrl></Protocol>
    <Protocol><Type>EXPR</Type><Server>{host}</Server><SSL>On</SSL><AuthPackage>Ntlm</AuthPackage>
      <EwsUrl>https://{host}/EWS/Exchange.asmx</EwsUrl></Protocol>
  </Account>
</Response></Autodiscover>"""


def pox_error(code: int, message: str) -> str:
    """The POX error document (ErrorCode/Message/DebugData in the 2006 namespace)."""
    return (
        f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{POX_NS}"><Response>'
        f'<Error Time="09:41:07.1234567" Id="2871064313"><ErrorCode>{code}</ErrorCode>'
        f"<Message>{message}</Message><DebugData /></Error></Response></Autodiscover>"
    )


def pox_redirect_addr(address: str) -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{POX_NS}"><Response xmlns="{POX_NS_A}">'
        f"<Account><Action>redirectAddr</Action><RedirectAddr>{address}</RedirectAddr></Account>"
        "</Response></Autodiscover>"
    )


def pox_redirect_url(url: str) -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{POX_NS}"><Response xmlns="{POX_NS_A}">'
        f"<Account><Action>redirectUrl</Action><RedirectUrl>{url}</RedirectUrl></Account>"
        "</Response></Autodiscover>"
    )


def soap_settings(host: str) -> str:
    """A GetUserSettings answer (ServerVersionInfo header, StringSettings)."""
    settings = {
        "UserDisplayName": "Alice Example",
        "UserDN": "/o=Example/cn=alice",
        "ExternalEwsUrl": f"https://{host}/EWS/Exchange.asmx",
        "InternalEwsUrl": f"https://{host}/EWS/Exchange.asmx",
        "EwsSupportedSchemas": "Exchange2013, Exchange2013_SP1, Exchange2016",
    }
    items = "".join(
        f'<UserSetting i:type="StringSetting"><Name>{k}</Name><Value>{v}</Value></UserSetting>'
        for k, v in settings.items()
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header>'
        '<a:Action s:mustUnderstand="1">http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/'
        "GetUserSettingsResponse</a:Action>"
        '<h:ServerVersionInfo xmlns:h="http://schemas.microsoft.com/exchange/2010/Autodiscover" '
        'xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><h:MajorVersion>15</h:MajorVersion>'
        "<h:MinorVersion>2</h:MinorVersion><h:MajorBuildNumber>1258</h:MajorBuildNumber>"
        "<h:MinorBuildNumber>12</h:MinorBuildNumber><h:Version>Exchange2016</h:Version></h:ServerVersionInfo>"
        "</s:Header><s:Body>"
        '<GetUserSettingsResponseMessage xmlns="http://schemas.microsoft.com/exchange/2010/Autodiscover">'
        '<Response xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><ErrorCode>NoError</ErrorCode>'
        "<ErrorMessage/><UserResponses><UserResponse><ErrorCode>NoError</ErrorCode><ErrorMessage>No error."
        '</ErrorMessage><RedirectTarget i:nil="true"/><UserSettingErrors/>'
        f"<UserSettings>{items}</UserSettings></UserResponse></UserResponses></Response>"
        "</GetUserSettingsResponseMessage></s:Body></s:Envelope>"
    )


def v2_json(host: str) -> bytes:
    return json.dumps({"Protocol": "Ews", "Url": f"https://{host}/EWS/Exchange.asmx"}).encode()


def exchange(host: str, *, pox: str | None = None, soap: Reply | None = None) -> Handler:
    """A well-behaved Autodiscover server whose URLs name ``host``."""
    return route(
        {
            "/autodiscover/autodiscover.xml": xml(pox or pox_mapi(host)),
            "/autodiscover/autodiscover.svc": soap or xml(soap_settings(host)),
            "/autodiscover/autodiscover.json": fixed(200, v2_json(host), [("Content-Type", "application/json")]),
        }
    )


# --- harness ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    return CertKit(tmp_path_factory.mktemp("certs"))


@pytest.fixture(autouse=True)
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test asks a real DNS server: the SRV candidate finds nothing unless a test says otherwise."""
    monkeypatch.setattr(discovery, "lookup_srv", lambda name, timeout, nameservers=(): SrvAnswer(detail="no such name"))


class Servers:
    """Starts servers for a test and closes them after it."""

    def __init__(self, kit: CertKit) -> None:
        self.kit = kit
        self.started: list[HostileServer] = []

    def __call__(self, handler: Handler, *names: str, cert: CertKind = "trusted") -> HostileServer:
        server = HostileServer(handler, self.kit, cert=cert, names=names or (NS,))
        self.started.append(server)
        return server


@pytest.fixture
def servers(kit: CertKit) -> Iterator[Servers]:
    made = Servers(kit)
    yield made
    for server in made.started:
        server.close()


def run(
    kit: CertKit,
    server: HostileServer,
    *,
    name: str = MB1,
    kind: TargetKind = TargetKind.SERVER,
    pins: dict[str, HostileServer] | None = None,
    deadline_s: float = 5.0,
    auth: AuthChoice = "auto",
    credentials: bool = True,
) -> tuple[ProbeResult, float]:
    """Probe ``name`` (served by ``server``) and return the result and the elapsed time."""
    table = {name: server, **(pins or {})}
    settings = ProbeSettings(
        mailbox=MAILBOX,
        credentials=Credentials("EXAMPLE\\alice", Secret(PASSWORD)) if credentials else None,
        auth=auth,
        transport=TransportOptions(tls=TlsOptions(ca_file=kit.ca_file), timeout_s=deadline_s),
        timeout_s=deadline_s,
        namespace=NS,
        server_names=(MB1, MB2),
    )
    resolver = LoopbackResolver([s.pin(n) for n, s in table.items()])
    target = Target(name, kind, server.port)
    started = time.monotonic()
    result = probe(ProbeContext(target, settings, resolver, started + deadline_s))
    return result, time.monotonic() - started


def fact(result: ProbeResult, name: str) -> str | None:
    return result.fact(name)


# --- answers and naming -------------------------------------------------------------------------------------


def test_urls_naming_the_namespace_are_a_clean_success(kit: CertKit, servers: Servers) -> None:
    """Through the namespace, mapiHttp URLs naming the namespace: OK, with URL, host, EWS and user facts."""
    server = servers(exchange(NS), NS, f"autodiscover.{DOMAIN}")
    result, _ = run(kit, server, name=NS, kind=TargetKind.NAMESPACE, pins={f"autodiscover.{DOMAIN}": server})
    assert result.success, result.detail
    assert result.severity is Severity.OK
    assert (
        fact(result, "autodiscover.mapi.mailstore.internal") == f"https://{NS}/mapi/emsmdb/?MailboxId={GUID}@{DOMAIN}"
    )
    assert (
        fact(result, "autodiscover.mapi.addressbook.external") == f"https://{NS}/mapi/nspi/?MailboxId={GUID}@{DOMAIN}"
    )
    assert fact(result, "autodiscover.mapi.host") == NS
    assert fact(result, "autodiscover.mapi.names") == "namespace"
    assert fact(result, "autodiscover.ews_url") == f"https://{NS}/EWS/Exchange.asmx"
    assert fact(result, "autodiscover.ews_url.source") == "soap"
    assert fact(result, "autodiscover.soap.user_dn") == "/o=Example/cn=alice"
    assert fact(result, "autodiscover.soap.server_version") == "15.2.1258.12"
    assert fact(result, "autodiscover.v2.ews_url") == f"https://{NS}/EWS/Exchange.asmx"
    assert fact(result, "autodiscover.display_name") == "Alice Example"
    assert fact(result, "autodiscover.legacy_dn") is not None
    host = f"{NS}:{server.port}"
    pox = [
        r for r in server.requests if r.path.lower() == "/autodiscover/autodiscover.xml" and r.header("host") == host
    ]
    assert pox
    assert pox[0].header("x-mapihttpcapability") == "1"
    assert pox[0].header("x-anchormailbox") == MAILBOX
    assert pox[0].header("content-type") == "text/xml"


@pytest.mark.parametrize("kind", [TargetKind.NAMESPACE, TargetKind.SERVER])
def test_urls_naming_one_server_are_a_warning_on_any_target(kit: CertKit, servers: Servers, kind: TargetKind) -> None:
    """mapiHttp URLs naming mb1 are a success with a WARNING that says clients would freeze, through either name."""
    name = NS if kind is TargetKind.NAMESPACE else MB1
    server = servers(exchange(MB1), name)
    result, _ = run(kit, server, name=name, kind=kind)
    assert result.success
    assert result.severity is Severity.WARNING
    assert fact(result, "autodiscover.mapi.names") == "server"
    assert fact(result, "autodiscover.mapi.host") == MB1
    assert "freeze" in result.detail
    assert MB1 in result.detail


def test_urls_naming_an_unknown_host_are_reported_as_other(kit: CertKit, servers: Servers) -> None:
    """A host that is neither the namespace nor a known server: OK, names=other, said in the detail."""
    server = servers(exchange("mail.example.test"), MB2)
    result, _ = run(kit, server, name=MB2)
    assert result.severity is Severity.OK
    assert fact(result, "autodiscover.mapi.names") == "other"
    assert "neither the namespace nor a known server" in result.detail


def test_internal_and_external_hosts_are_both_classified(kit: CertKit, servers: Servers) -> None:
    """Internal URLs on the namespace but external ones on a server: the worst naming (server) wins."""
    server = servers(exchange(NS, pox=pox_mapi(NS, external=MB2)), MB1)
    result, _ = run(kit, server)
    assert fact(result, "autodiscover.mapi.hosts") == f"{NS}, {MB2}"
    assert fact(result, "autodiscover.mapi.names") == "server"
    assert result.severity is Severity.WARNING


def test_an_answer_without_mapihttp_is_a_content_failure(kit: CertKit, servers: Servers) -> None:
    """EXCH/EXPR settings but no mapiHttp block: content failure, the legacy EWS URL still reported."""
    server = servers(exchange(NS, pox=pox_legacy(NS)), MB1)
    result, _ = run(kit, server)
    assert not result.success
    assert result.error_class is ErrorClass.CONTENT
    assert "mapiHttp" in result.detail
    assert fact(result, "autodiscover.ews_url") == f"https://{NS}/EWS/Exchange.asmx"


@pytest.mark.parametrize(
    ("code", "expected"),
    [(500, ErrorClass.CONTENT), (600, ErrorClass.PROTOCOL), (601, ErrorClass.PROTOCOL), (603, ErrorClass.PROTOCOL)],
)
def test_error_documents_are_classified(kit: CertKit, servers: Servers, code: int, expected: ErrorClass) -> None:
    """Error document 500 (address not found) is content; 600/601/603 are protocol; the code is on the step."""
    server = servers(exchange(NS, pox=pox_error(code, "The email address can't be found.")), MB1)
    result, _ = run(kit, server)
    assert result.error_class is expected
    assert f"error document {code}" in result.detail
    assert any(step.response_code == code for step in result.steps)


# --- redirects ----------------------------------------------------------------------------------------------


def test_redirect_addr_asks_again_for_the_new_address(kit: CertKit, servers: Servers) -> None:
    """redirectAddr: the same URL is asked for the new address, which then gets settings."""

    def handler(request: Request) -> Reply:
        if b"bob@example.test" in request.body:
            return xml(pox_mapi(NS))
        return xml(pox_redirect_addr("bob@example.test"))

    server = servers(route({"/autodiscover/autodiscover.xml": handler}), MB1)
    result, _ = run(kit, server)
    assert fact(result, "autodiscover.address") == "bob@example.test"
    assert fact(result, "autodiscover.redirects") == "1"
    assert fact(result, "autodiscover.mapi.names") == "namespace"
    assert server.requests[1].header("x-anchormailbox") == "bob@example.test"


def test_redirect_url_posts_to_the_new_https_url(kit: CertKit, servers: Servers) -> None:
    """redirectUrl to another https server: POSTed there, and its settings are the answer."""
    other = servers(exchange(NS), "ad.other.test")
    first = servers(exchange(NS, pox=pox_redirect_url(other.url("/autodiscover/autodiscover.xml"))), MB1)
    result, _ = run(kit, first, pins={"ad.other.test": other})
    assert result.success, result.detail
    assert fact(result, "autodiscover.url") == other.url("/autodiscover/autodiscover.xml")
    assert len([r for r in other.requests if r.path.endswith(".xml")]) == 1


def test_a_redirect_loop_is_detected(kit: CertKit, servers: Servers) -> None:
    """A → B → A: protocol failure naming the loop, after exactly two POSTs."""
    a = servers(exchange(NS), MB1)
    b = servers(exchange(NS), "b.other.test")
    a.handler = exchange(NS, pox=pox_redirect_url(b.url("/autodiscover/autodiscover.xml")))
    b.handler = exchange(NS, pox=pox_redirect_url(a.url("/autodiscover/autodiscover.xml", host=MB1)))
    result, _ = run(kit, a, pins={"b.other.test": b})
    assert result.error_class is ErrorClass.PROTOCOL
    assert "loop" in result.detail
    assert len([r for r in (*a.requests, *b.requests) if r.path.endswith(".xml")]) == 2


@pytest.mark.parametrize("how", ["redirectUrl", "http 302"])
def test_a_redirect_to_plain_http_is_refused(kit: CertKit, servers: Servers, how: str) -> None:
    """A redirect (POX redirectUrl or HTTP 302) to http:// is refused as protocol and never followed."""
    plain = servers(exchange(NS), "plain.other.test")
    target = plain.url("/autodiscover/autodiscover.xml", scheme="http")
    reply = xml(pox_redirect_url(target)) if how == "redirectUrl" else redirect(target)
    server = servers(route({"/autodiscover/autodiscover.xml": reply}), MB1)
    result, _ = run(kit, server, pins={"plain.other.test": plain})
    assert result.error_class is ErrorClass.PROTOCOL
    assert "https" in result.detail
    assert not [r for r in plain.requests if r.path.endswith(".xml")]


def test_http_redirects_to_https_are_followed(kit: CertKit, servers: Servers) -> None:
    """An HTTP 302 to an https URL is POSTed again there."""
    other = servers(exchange(NS), "ad.other.test")
    moved = redirect(other.url("/autodiscover/autodiscover.xml"))
    server = servers(route({"/autodiscover/autodiscover.xml": moved}), MB1)
    result, _ = run(kit, server, pins={"ad.other.test": other})
    assert result.success, result.detail
    assert [r.method for r in other.requests if r.path.endswith(".xml")] == ["POST"]


def test_the_hop_limit_stops_endless_fresh_redirects(kit: CertKit, servers: Servers) -> None:
    """A server redirecting to a new URL every time is stopped after 10 redirects (11 requests)."""

    def handler(request: Request) -> Reply:
        n = int(request.target.partition("?n=")[2] or 0)
        return xml(pox_redirect_url(f"https://{MB1}:{server.port}/autodiscover/autodiscover.xml?n={n + 1}"))

    server = servers(route({"/autodiscover/autodiscover.xml": handler}), MB1)
    result, _ = run(kit, server)
    assert result.error_class is ErrorClass.PROTOCOL
    assert "more than 10 redirects" in result.detail
    assert len([r for r in server.requests if r.path.endswith(".xml")]) == 11


# --- authentication -----------------------------------------------------------------------------------------


def test_401_without_credentials_says_so_and_lists_the_offer(kit: CertKit, servers: Servers) -> None:
    """No credentials and a 401: auth failure naming what the server offers."""
    offer = [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")]
    server = servers(route({"/autodiscover/": fixed(401, b"", offer)}), MB1)
    result, _ = run(kit, server, credentials=False)
    assert result.error_class is ErrorClass.AUTH
    assert "no credentials" in result.detail
    assert "NTLM" in result.detail
    assert "Negotiate" in result.detail


def test_401_after_basic_is_an_auth_failure_without_the_password(kit: CertKit, servers: Servers) -> None:
    """Basic refused: auth failure saying what was used and offered; the password appears nowhere."""
    server = servers(route({"/autodiscover/": fixed(401, b"", [("WWW-Authenticate", 'Basic realm="x"')])}), MB1)
    result, _ = run(kit, server, auth="basic")
    assert result.error_class is ErrorClass.AUTH
    assert "Basic" in result.detail
    assert result.auth_used == "Basic"
    assert PASSWORD not in repr(result)


# --- Outlook's candidates -----------------------------------------------------------------------------------


def test_a_later_candidate_answers_and_the_earlier_failure_is_mentioned(kit: CertKit, servers: Servers) -> None:
    """Candidate 1 (the bare domain) does not resolve, candidate 2 answers: success, and the detail says both."""
    server = servers(exchange(NS), NS, f"autodiscover.{DOMAIN}")
    result, _ = run(kit, server, name=NS, kind=TargetKind.NAMESPACE, pins={f"autodiscover.{DOMAIN}": server})
    answered = f"https://autodiscover.{DOMAIN}:{server.port}/autodiscover/autodiscover.xml"
    assert fact(result, "autodiscover.candidate") == answered
    assert result.severity is Severity.OK
    assert f"https://{DOMAIN}:{server.port}" in result.detail
    assert "dns" in result.detail
    first = result.steps[0]
    assert first.name.startswith("candidate 1: POST")
    assert first.error_class is ErrorClass.DNS


def test_the_http_redirect_candidate_follows_only_a_302_to_https(kit: CertKit, servers: Servers) -> None:
    """Candidates 1-2 fail; the anonymous GET on http gets a 302 to https, which then answers."""
    final = servers(exchange(NS), "redirected.example.test")
    target = final.url("/autodiscover/autodiscover.xml")
    ad = servers(lambda r: fixed(404) if r.tls else redirect(target), f"autodiscover.{DOMAIN}")
    ns = servers(exchange(NS), NS)
    pins = {f"autodiscover.{DOMAIN}": ad, "redirected.example.test": final}
    result, _ = run(kit, ns, name=NS, kind=TargetKind.NAMESPACE, pins=pins)
    assert fact(result, "autodiscover.candidate") == f"http://autodiscover.{DOMAIN}/autodiscover/autodiscover.xml"
    get = [r for r in ad.requests if not r.tls]
    assert [r.method for r in get] == ["GET"]
    assert get[0].header("authorization") is None
    assert result.success
    assert result.severity is Severity.OK


def test_the_srv_candidate_is_used_last(kit: CertKit, servers: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the SRV record's host answers: it is the candidate found."""
    srv = servers(exchange(NS), "adsrv.example.test")
    ns = servers(exchange(NS), NS)
    answer = SrvAnswer((SrvRecord(0, 0, srv.port, "adsrv.example.test"),))
    monkeypatch.setattr(discovery, "lookup_srv", lambda name, timeout, nameservers=(): answer)
    result, _ = run(kit, ns, name=NS, kind=TargetKind.NAMESPACE, pins={"adsrv.example.test": srv})
    assert (
        fact(result, "autodiscover.candidate") == f"https://adsrv.example.test:{srv.port}/autodiscover/autodiscover.xml"
    )
    assert any(step.name.startswith("candidate 4: SRV _autodiscover._tcp.example.test") for step in result.steps)


def test_no_candidate_answering_is_a_warning_and_srv_is_skipped_without_dnspython(
    kit: CertKit, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without dnspython the SRV step says it was skipped; no candidate answering makes a success a WARNING."""
    monkeypatch.setattr(discovery, "lookup_srv", REAL_LOOKUP_SRV)
    monkeypatch.setitem(sys.modules, "dns.resolver", None)
    ns = servers(exchange(NS), NS)
    result, _ = run(kit, ns, name=NS, kind=TargetKind.NAMESPACE)
    assert result.success
    assert result.severity is Severity.WARNING
    assert fact(result, "autodiscover.candidate") == "none"
    assert "candidate 4: SRV lookup skipped (dnspython not installed)" in [s.name for s in result.steps]
    assert "none of Outlook's Autodiscover candidates answered" in result.detail


def test_a_silent_candidate_cannot_eat_the_budget(kit: CertKit, servers: Servers) -> None:
    """Candidate 2 never answers: it times out within its share and the target is still probed in time."""
    silent_ad = servers(lambda r: Reply(mode="silent"), f"autodiscover.{DOMAIN}")
    ns = servers(exchange(NS), NS)
    pins = {f"autodiscover.{DOMAIN}": silent_ad}
    result, elapsed = run(kit, ns, name=NS, kind=TargetKind.NAMESPACE, pins=pins, deadline_s=3.0)
    assert result.success, result.detail
    timed_out = [s for s in result.steps if s.name.startswith("candidate 2") and s.error_class is ErrorClass.TIMEOUT]
    assert timed_out
    assert elapsed < 3.0 + 1.0


# --- hostile servers ----------------------------------------------------------------------------------------

XML_BOMB = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    f'<Autodiscover xmlns="{POX_NS}"><Response xmlns="{POX_NS_A}"><User><DisplayName>&lol3;</DisplayName></User>'
    "<Account><Action>settings</Action></Account></Response></Autodiscover>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    f'<Autodiscover xmlns="{POX_NS}"><Response xmlns="{POX_NS_A}"><User><DisplayName>&xxe;</DisplayName></User>'
    "<Account><Action>settings</Action></Account></Response></Autodiscover>"
)

HOSTILE: dict[str, tuple[Handler, CertKind, ErrorClass]] = {
    "xml bomb": (route({"/": xml(XML_BOMB)}), "trusted", ErrorClass.PROTOCOL),
    "external entity": (route({"/": xml(EXTERNAL_ENTITY)}), "trusted", ErrorClass.PROTOCOL),
    "endless body": (route({"/": endless()}), "trusted", ErrorClass.CONTENT),
    "trickling body": (route({"/": trickle(0.02)}), "trusted", ErrorClass.TIMEOUT),
    "50 MB body": (route({"/": huge(50 * 1024 * 1024)}), "trusted", ErrorClass.CONTENT),
    "bad NTLM challenge": (bad_ntlm_challenge(), "trusted", ErrorClass.AUTH),
    "redirect loop": (
        route({"/": xml(pox_redirect_url(f"https://{MB1}/autodiscover/autodiscover.xml"))}),
        "trusted",
        ErrorClass.PROTOCOL,
    ),
    "redirect to http": (
        route({"/": xml(pox_redirect_url(f"http://{MB1}/autodiscover/autodiscover.xml"))}),
        "trusted",
        ErrorClass.PROTOCOL,
    ),
    "not HTTP at all": (always(raw(b"\x00\x01NOT HTTP AT ALL\r\n\r\n")), "trusted", ErrorClass.PROTOCOL),
    "connection closed": (always(close()), "trusted", ErrorClass.PROTOCOL),  # classify: RemoteProtocolError
    "wrong certificate name": (exchange(NS), "wrong_name", ErrorClass.TLS),
    "expired certificate": (exchange(NS), "expired", ErrorClass.TLS),
    "self-signed certificate": (exchange(NS), "self_signed", ErrorClass.TLS),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_servers_give_a_classified_error_within_the_deadline(kit: CertKit, servers: Servers, case: str) -> None:
    """Each hostile server ends in its error class, within the deadline, with bounded memory and no exception."""
    handler, cert, expected = HOSTILE[case]
    server = servers(handler, MB1, cert=cert)
    deadline = 2.0
    tracemalloc.start()
    try:
        result, elapsed = run(kit, server, deadline_s=deadline, auth="ntlm" if "NTLM" in case else "auto")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not result.success
    assert result.error_class is expected, result.detail
    assert elapsed < deadline + 1.0
    assert peak < 8 * 1024 * 1024
    assert PASSWORD not in repr(result)
    if case in ("xml bomb", "external entity"):
        assert "XML bomb or an external entity" in result.detail
    if cert != "trusted":
        assert result.tls is not None
        assert result.tls.verified is False


# --- the SRV lookup itself ----------------------------------------------------------------------------------


@pytest.fixture
def dns_server() -> Iterator[tuple[str, int]]:
    """A one-zone UDP DNS server on loopback: two SRV records for _autodiscover._tcp.example.test, NXDOMAIN else."""
    dns_message = pytest.importorskip("dns.message")
    import dns.rcode
    import dns.rrset

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns_message.from_wire(data)
            answer = dns_message.make_response(query)
            name = query.question[0].name.to_text()
            if name == f"_autodiscover._tcp.{DOMAIN}.":
                records = ["10 5 443 backup.example.test.", "0 5 8443 primary.example.test."]
                answer.answer.append(dns.rrset.from_text(name, 300, "IN", "SRV", *records))
            else:
                answer.set_rcode(dns.rcode.NXDOMAIN)
            sock.sendto(answer.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()
    stop.set()
    thread.join(2)
    sock.close()


def test_srv_records_are_sorted_by_priority(dns_server: tuple[str, int]) -> None:
    """The SRV lookup (dnspython, asked on loopback) returns the lowest priority first; a missing name says so."""
    answer = REAL_LOOKUP_SRV(f"_autodiscover._tcp.{DOMAIN}", 2.0, (dns_server,))
    assert [(r.target, r.port) for r in answer.records] == [
        ("primary.example.test", 8443),
        ("backup.example.test", 443),
    ]
    missing = REAL_LOOKUP_SRV("_autodiscover._tcp.other.test", 2.0, (dns_server,))
    assert missing.records == ()
    assert missing.detail == "no such name"
    assert not missing.skipped


def test_a_probe_without_a_mailbox_is_a_configuration_error(kit: CertKit, servers: Servers) -> None:
    """Autodiscover needs an SMTP address: without one the probe refuses to run (ConfigError), it does not guess."""
    server = servers(exchange(NS), MB1)
    settings = ProbeSettings(transport=TransportOptions(tls=TlsOptions(ca_file=kit.ca_file)))
    context = ProbeContext(
        Target(MB1, TargetKind.SERVER, server.port), settings, LoopbackResolver(), time.monotonic() + 2
    )
    with pytest.raises(ConfigError, match="mailbox"):
        probe(context)
    assert server.requests == []
