"""The lab's Autodiscover endpoints (POX, SOAP, v2 JSON) over the real lab: HAProxy, uvicorn, NTLM."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from exchangelib.properties import UserResponse
from exchangelib.util import to_xml
from requests_ntlm import HttpNtlmAuth

from casprobe.protocols.autodiscover import PoxResponse, build_pox_request, parse_pox_response
from casprobe.protocols.autodiscover_soap import build_get_user_settings_request
from tests.labkit import LabHandle, start_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]

XML = {"Content-Type": "text/xml; charset=utf-8"}
ANS = "{http://schemas.microsoft.com/exchange/2010/Autodiscover}"


def ntlm_session(lab: LabHandle) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.auth = HttpNtlmAuth("LAB\\alice", lab.password("alice"))
    return session


def pox(lab: LabHandle, session: requests.Session, url: str, address: str, **headers: str) -> PoxResponse:
    answer = session.post(url, data=build_pox_request(address), headers=XML | headers, verify=str(lab.ca_file))
    assert answer.status_code == 200
    return parse_pox_response(answer.content)


def test_pox_with_and_without_mapi_capability(lab: LabHandle) -> None:
    """With X-MapiHttpCapability only the mapiHttp block (namespace URLs); without it EXCH/EXPR with the EWS URL."""
    alice = lab.org.find_user("alice")
    assert alice is not None
    url = lab.url("autodiscover.lab.test", "/Autodiscover/Autodiscover.xml")
    with lab.resolving(), ntlm_session(lab) as session:
        mapi = pox(lab, session, url, "alice@lab.test", **{"X-MapiHttpCapability": "1"})
        legacy = pox(lab, session, url, "alice@lab.test")
    block = mapi.protocol("mapiHttp")
    assert block is not None
    assert block.mailstore_internal_url == lab.url("outlook.lab.test", f"/mapi/emsmdb/?MailboxId={alice.mailbox_id}")
    assert mapi.protocol("EXCH") is None
    exch = legacy.protocol("EXCH")
    assert exch is not None
    assert exch.server == alice.mailbox_id
    assert legacy.legacy_ews_url == lab.url("outlook.lab.test", "/EWS/Exchange.asmx")
    assert legacy.protocol("mapiHttp") is None


def test_pox_server_url_mode(tmp_path: Path) -> None:
    """With url_mode mb1=server, mb1 hands out its own name while mb2 hands out the namespace."""
    handle = start_lab(tmp_path / "lab", url_mode={"mb1": "server"})
    try:
        alice = handle.org.find_user("alice")
        assert alice is not None
        wanted = f"/mapi/emsmdb/?MailboxId={alice.mailbox_id}"
        with handle.resolving(), ntlm_session(handle) as session:
            own = pox(
                handle,
                session,
                handle.url("mb1.lab.test", "/autodiscover/autodiscover.xml"),
                "alice@lab.test",
                **{"X-MapiHttpCapability": "1"},
            )
            other = pox(
                handle,
                session,
                handle.url("mb2.lab.test", "/autodiscover/autodiscover.xml"),
                "alice@lab.test",
                **{"X-MapiHttpCapability": "1"},
            )
        own_block, other_block = own.protocol("mapiHttp"), other.protocol("mapiHttp")
        assert own_block is not None
        assert other_block is not None
        assert own_block.mailstore_external_url == handle.url("mb1.lab.test", wanted)
        assert other_block.mailstore_external_url == handle.url("outlook.lab.test", wanted)
    finally:
        handle.down()


def test_pox_redirects_end_at_settings(lab: LabHandle) -> None:
    """redirectAddr (secondary domain) and redirectUrl (redirect domain) lead to a settings answer for alice."""
    url = lab.url("outlook.lab.test", "/autodiscover/autodiscover.xml")
    with lab.resolving(), ntlm_session(lab) as session:
        for start in ("alice@mail.lab.test", "alice@redirect.lab.test"):
            address, target, hops = start, url, 0
            answer = pox(lab, session, target, address)
            while answer.action in ("redirectAddr", "redirectUrl"):
                hops += 1
                assert hops <= 3
                if answer.action == "redirectAddr":
                    assert answer.redirect_addr is not None
                    address = answer.redirect_addr
                else:
                    assert answer.redirect_url is not None
                    assert answer.redirect_url.startswith("https://")
                    target = answer.redirect_url
                answer = pox(lab, session, target, address)
            assert hops == 1
            assert answer.action == "settings"
            assert answer.user is not None
            assert answer.user.smtp_address == "alice@lab.test"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (build_pox_request("nobody@lab.test"), 500),
        (b"<Autodiscover><Request>", 600),
        (build_pox_request("alice@lab.test").replace(b"responseschema/2006a", b"responseschema/2006"), 601),
    ],
)
def test_pox_errors(lab: LabHandle, body: bytes, code: int) -> None:
    """Unknown address, unparsable request, unsupported response schema: POX error 500, 600, 601 with HTTP 200."""
    with lab.resolving(), ntlm_session(lab) as session:
        answer = session.post(
            lab.url("autodiscover.lab.test", "/autodiscover/autodiscover.xml"),
            data=body,
            headers=XML,
            verify=str(lab.ca_file),
        )
    assert answer.status_code == 200
    error = parse_pox_response(answer.content).error
    assert error is not None
    assert error.code == code


def test_soap_get_user_settings_parsed_by_exchangelib(lab: LabHandle) -> None:
    """GetUserSettings as exchangelib asks it parses with exchangelib's own UserResponse into EWS URL and version."""
    settings = [UserResponse.SETTINGS_MAP[k] for k in ("external_ews_url", "ews_supported_schemas", "user_dn")]
    settings.append("AlternateMailboxes")
    url = lab.url("autodiscover.lab.test", "/autodiscover/autodiscover.svc")
    with lab.resolving(), ntlm_session(lab) as session:
        ok = session.post(
            url,
            data=build_get_user_settings_request("alice@lab.test", settings, url),
            headers=XML,
            verify=str(lab.ca_file),
        )
        bad = session.post(
            url,
            data=build_get_user_settings_request("nobody@lab.test", settings, url),
            headers=XML,
            verify=str(lab.ca_file),
        )
    parsed = UserResponse.from_xml(to_xml(ok.content).find(f".//{ANS}UserResponse"), account=None)
    parsed.raise_errors()
    assert parsed.ews_url == lab.url("outlook.lab.test", "/EWS/Exchange.asmx")
    assert parsed.version is not None
    assert parsed.version.api_version == "Exchange2016"
    invalid = UserResponse.from_xml(to_xml(bad.content).find(f".//{ANS}UserResponse"), account=None)
    assert invalid.error_code == "InvalidUser"


def test_v2_json(lab: LabHandle) -> None:
    """v2 JSON (anonymous): EWS and AutodiscoverV1 URLs; unknown protocol 400 + jsonerror; missing protocol 400."""
    with lab.httpx_client() as client:
        ews = client.get(
            lab.url("autodiscover.lab.test", "/autodiscover/autodiscover.json/v1.0/alice@lab.test"),
            params={"Protocol": "EWS"},
        )
        v1 = client.get(
            lab.url("autodiscover.lab.test", "/autodiscover/autodiscover.json"),
            params={"Email": "alice@lab.test", "Protocol": "AutodiscoverV1"},
        )
        bad = client.get(
            lab.url("autodiscover.lab.test", "/autodiscover/autodiscover.json/v1.0/alice@lab.test"),
            params={"Protocol": "Teleport"},
        )
        missing = client.get(lab.url("autodiscover.lab.test", "/autodiscover/autodiscover.json/v1.0/alice@lab.test"))
    assert ews.json() == {"Protocol": "Ews", "Url": lab.url("outlook.lab.test", "/EWS/Exchange.asmx")}
    assert v1.json()["Url"] == lab.url("outlook.lab.test", "/autodiscover/autodiscover.xml")
    assert bad.status_code == 400
    assert bad.headers["jsonerror"] == "true"
    assert bad.json()["ErrorCode"] == "ProtocolNotSupported"
    assert missing.status_code == 400
    assert missing.json()["ErrorCode"] == "MandatoryParameterMissing"
