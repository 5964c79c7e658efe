"""The product's authentication flows (casprobe.net.auth) against the real lab: NTLM, Negotiate, Extended Protection.

The lab's acceptor keeps NTLM state per TCP connection, so a handshake only passes when httpx carries all of its
legs on one connection; the reports' connection numbers show it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from casprobe.net.auth import AuthFailure, AutoAuth, SpnegoAuth, auth_report
from casprobe.net.credentials import Credentials, Secret
from tests.labkit import LabHandle, start_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]

EWS = "/EWS/Exchange.asmx"
SOAP = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    b'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
    b'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">'
    b'<s:Header><t:RequestServerVersion Version="Exchange2016"/></s:Header><s:Body>'
    b'<m:ConvertId DestinationFormat="EntryId"><m:SourceIds>'
    b'<t:AlternateId Format="EwsId" Id="DUMMY" Mailbox="DUMMY"/></m:SourceIds></m:ConvertId>'
    b"</s:Body></s:Envelope>"
)
HEADERS = {"Content-Type": "text/xml; charset=utf-8"}


def _alice(lab: LabHandle, username: str = "LAB\\alice") -> Credentials:
    return Credentials(username, Secret(lab.password("alice")))


def _post(client: httpx.Client, lab: LabHandle, host: str, auth: httpx.Auth) -> httpx.Response:
    return client.post(lab.url(host, EWS), content=SOAP, headers=HEADERS, auth=auth, timeout=30)


@pytest.fixture(scope="module")
def ep_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    """Two servers enforcing Extended Protection behind HAProxy in TCP passthrough (l4)."""
    handle = start_lab(tmp_path_factory.mktemp("auth-ep") / "lab", extended_protection=True, lb="l4", servers=2)
    try:
        yield handle
    finally:
        handle.down()


@pytest.mark.parametrize("host", ["mb1.lab.test", "outlook.lab.test"])
@pytest.mark.parametrize("protocol", ["ntlm", "negotiate"])
def test_spnego_authenticates_on_one_connection(lab: LabHandle, host: str, protocol: str) -> None:
    """NTLM and Negotiate with channel binding reach EWS (200) in three legs carried by one TCP connection."""
    auth = SpnegoAuth(_alice(lab), protocol, channel_binding=True)
    with lab.httpx_client() as client:
        response = _post(client, lab, host, auth)
    report = auth_report(response)
    assert response.status_code == 200
    assert report is not None
    assert report.ok
    assert report.method == ("NTLM" if protocol == "ntlm" else "Negotiate")
    assert report.offered == ("Negotiate", "NTLM", "Basic")
    assert [(leg.status, leg.scheme) for leg in report.legs] == [
        (401, None),
        (401, report.method),
        (200, report.method),
    ]
    assert {leg.connection for leg in report.legs} == {1}
    assert report.channel_binding


def test_an_authenticated_connection_needs_no_new_handshake(lab: LabHandle) -> None:
    """IIS semantics: the next request on the same client gets 200 on its first leg, sent without Authorization."""
    auth = SpnegoAuth(_alice(lab), "ntlm")
    with lab.httpx_client() as client:
        first = _post(client, lab, "mb1.lab.test", auth)
        second = _post(client, lab, "mb1.lab.test", auth)
    assert first.status_code == second.status_code == 200
    report = auth_report(second)
    assert report is not None
    assert [(leg.status, leg.scheme) for leg in report.legs] == [(200, None)]
    assert second.request.headers.get("Authorization") is None


def test_upn_user_name_and_preemptive_token(lab: LabHandle) -> None:
    """A UPN user name authenticates, and a pre-emptive first token saves the anonymous round trip."""
    auth = SpnegoAuth(_alice(lab, "alice@lab.test"), "ntlm", preemptive=True)
    with lab.httpx_client() as client:
        response = _post(client, lab, "mb2.lab.test", auth)
    report = auth_report(response)
    assert response.status_code == 200
    assert report is not None
    assert report.ok
    assert [leg.status for leg in report.legs] == [401, 200]


@pytest.mark.parametrize("protocol", ["ntlm", "negotiate"])
def test_wrong_password_is_reported_as_rejected(lab: LabHandle, protocol: str) -> None:
    """A wrong password ends with the server's 401 and failure "rejected", without an exception."""
    auth = SpnegoAuth(Credentials("LAB\\alice", Secret("not-the-password")), protocol)
    with lab.httpx_client() as client:
        response = _post(client, lab, "outlook.lab.test", auth)
    report = auth_report(response)
    assert response.status_code == 401
    assert report is not None
    assert report.failure is AuthFailure.REJECTED
    assert [leg.status for leg in report.legs] == [401, 401, 401]


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [(("Negotiate", "NTLM", "Basic"), "Negotiate"), (("NTLM", "Negotiate", "Basic"), "NTLM")],
)
def test_auto_auth_picks_negotiate_or_ntlm_over_basic(lab: LabHandle, prefer: tuple[str, ...], expected: str) -> None:
    """With Negotiate, NTLM and Basic offered, AutoAuth uses the first of NTLM/Negotiate in its order, never Basic."""
    auth = AutoAuth(_alice(lab), prefer=prefer)
    with lab.httpx_client() as client:
        response = _post(client, lab, "outlook.lab.test", auth)
    report = auth_report(response)
    assert response.status_code == 200
    assert report is not None
    assert report.ok
    assert report.method == expected
    assert report.offered == ("Negotiate", "NTLM", "Basic")


@pytest.mark.parametrize("host", ["mb1.lab.test", "mb2.lab.test", "outlook.lab.test"])
@pytest.mark.parametrize("protocol", ["ntlm", "negotiate"])
def test_extended_protection_accepts_the_binding_directly_and_through_l4(
    ep_lab: LabHandle, host: str, protocol: str
) -> None:
    """Servers enforcing Extended Protection accept our tls-server-end-point binding, also through TCP passthrough."""
    auth = SpnegoAuth(_alice(ep_lab), protocol, channel_binding=True)
    with ep_lab.httpx_client() as client:
        response = _post(client, ep_lab, host, auth)
    report = auth_report(response)
    assert response.status_code == 200
    assert report is not None
    assert report.ok
    assert report.channel_binding


@pytest.mark.parametrize("protocol", ["ntlm", "negotiate"])
def test_extended_protection_refuses_a_handshake_without_binding(ep_lab: LabHandle, protocol: str) -> None:
    """Without a channel binding the enforcing server answers 401: reported as "rejected", never raised."""
    auth = SpnegoAuth(_alice(ep_lab), protocol, channel_binding=False)
    with ep_lab.httpx_client() as client:
        response = _post(client, ep_lab, "outlook.lab.test", auth)
    report = auth_report(response)
    assert response.status_code == 401
    assert report is not None
    assert report.failure is AuthFailure.REJECTED
    assert not report.channel_binding
    assert report.detail is not None
    assert "without a channel binding" in report.detail
