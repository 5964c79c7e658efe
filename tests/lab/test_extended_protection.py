"""Extended Protection on the lab: channel bindings required, and what TLS offload does to them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from requests_ntlm import HttpNtlmAuth

from tests.labkit import LabHandle, start_lab

pytestmark = pytest.mark.lab

CONVERT_ID = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    b'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
    b'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">'
    b'<s:Header><t:RequestServerVersion Version="Exchange2016"/></s:Header><s:Body>'
    b'<m:ConvertId DestinationFormat="EntryId"><m:SourceIds>'
    b'<t:AlternateId Format="EwsId" Id="DUMMY" Mailbox="DUMMY"/></m:SourceIds></m:ConvertId>'
    b"</s:Body></s:Envelope>"
)


def _ews_status(lab: LabHandle, host: str, *, send_cbt: bool) -> int:
    session = requests.Session()
    session.trust_env = False
    session.auth = HttpNtlmAuth("LAB\\alice", lab.password("alice"), send_cbt=send_cbt)
    with lab.resolving(), session:
        response = session.post(
            lab.url(host, "/EWS/Exchange.asmx"),
            data=CONVERT_ID,
            headers={"Content-Type": "text/xml; charset=utf-8"},
            verify=str(lab.ca_file),
            timeout=30,
        )
    return response.status_code


@pytest.fixture(scope="module", params=["l7", "l4"])
def ep_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    handle = start_lab(tmp_path_factory.mktemp("ep") / "lab", servers=2, extended_protection=True, lb=request.param)
    try:
        yield handle
    finally:
        handle.down()


def test_requests_ntlm_with_channel_binding_authenticates_to_a_server(ep_lab: LabHandle) -> None:
    """requests-ntlm sends the tls-server-end-point binding: accepted by a server enforcing Extended Protection."""
    # 200: ConvertId answered (with its per-message error), so the client got through authentication
    assert _ews_status(ep_lab, "mb1.lab.test", send_cbt=True) == 200


def test_a_client_without_channel_binding_is_refused(ep_lab: LabHandle) -> None:
    """The same client without a binding gets 401 from a server enforcing Extended Protection."""
    assert _ews_status(ep_lab, "mb1.lab.test", send_cbt=False) == 401


def test_through_the_load_balancer_the_binding_depends_on_tls_offload(ep_lab: LabHandle) -> None:
    """With TCP passthrough (l4) the client's binding names the server's certificate and passes; with TLS
    terminated at HAProxy (l7) it names HAProxy's certificate and Extended Protection refuses it — as real
    Exchange does behind SSL offload."""
    status = _ews_status(ep_lab, "outlook.lab.test", send_cbt=True)
    if ep_lab.org.config.lb == "l4":
        assert status == 200
    else:
        assert status == 401


def test_without_extended_protection_no_binding_is_needed(lab: LabHandle, tmp_path: Path) -> None:
    """The shared lab does not enforce Extended Protection: a client without a binding authenticates."""
    assert _ews_status(lab, "mb2.lab.test", send_cbt=False) == 200
    assert _ews_status(lab, "outlook.lab.test", send_cbt=False) == 200
