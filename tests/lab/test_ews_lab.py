"""The lab's EWS endpoint over the real lab (HAProxy, uvicorn, NTLM), driven by unmodified exchangelib 5.6.0."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import requests.adapters
from exchangelib import DELEGATE, NTLM, Account, Configuration, Credentials, Message
from exchangelib.protocol import BaseProtocol, close_connections
from requests_ntlm import HttpNtlmAuth

from casprobe.protocols.ews import parse_ews_response
from casprobe.protocols.ews_requests import build_convert_id_request, build_get_folder_request
from tests.labkit import LabHandle, start_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]

XML = {"Content-Type": "text/xml; charset=utf-8"}


@pytest.fixture
def exl_trust(lab: LabHandle) -> Iterator[None]:
    """exchangelib trusts only the lab CA (HTTP_ADAPTER_CLS), resolves lab names; restored afterwards."""
    ca = str(lab.ca_file)

    class LabAdapter(requests.adapters.HTTPAdapter):
        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            super().cert_verify(conn=conn, url=url, verify=ca, cert=cert)

    saved = BaseProtocol.HTTP_ADAPTER_CLS
    BaseProtocol.HTTP_ADAPTER_CLS = LabAdapter
    close_connections()
    try:
        with lab.resolving():
            yield
    finally:
        close_connections()
        BaseProtocol.HTTP_ADAPTER_CLS = saved


def ntlm_session(lab: LabHandle, alias: str = "alice") -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.auth = HttpNtlmAuth(f"LAB\\{alias}", lab.password(alias))
    return session


def ews_post(lab: LabHandle, session: requests.Session, host: str, body: bytes, **kw: Any) -> requests.Response:
    headers = kw.pop("headers", XML)
    url = lab.url(host, "/EWS/Exchange.asmx")
    return session.post(url, data=body, headers=headers, verify=str(lab.ca_file), timeout=30, **kw)


@pytest.mark.parametrize("host", ["outlook.lab.test", "mb2.lab.test"])
def test_exchangelib_reads_sends_and_finds(lab: LabHandle, exl_trust: None, host: str) -> None:
    """exchangelib (NTLM, no Autodiscover) opens alice's mailbox via the namespace or a server, sends, finds."""
    config = Configuration(
        service_endpoint=lab.url(host, "/EWS/Exchange.asmx"),
        credentials=Credentials("LAB\\alice", lab.password("alice")),
        auth_type=NTLM,
    )
    account = Account("alice@lab.test", config=config, autodiscover=False, access_type=DELEGATE)
    assert account.version.build.major_version == 15
    before = account.inbox.total_count
    assert before >= 1
    subject = f"casprobe {host} {uuid.uuid4().hex}"
    Message(account=account, subject=subject, body="lab body", to_recipients=["alice@lab.test"]).send_and_save()
    account.inbox.refresh()
    assert account.inbox.total_count == before + 1
    found = list(account.inbox.filter(subject=subject))
    assert [m.subject for m in found] == [subject]
    assert found[0].body == "lab body"


def _folder_code(lab: LabHandle, session: requests.Session, host: str) -> str | None:
    answer = ews_post(lab, session, host, build_get_folder_request(["inbox"], mailbox="alice@lab.test"))
    return parse_ews_response(answer.content).messages[0].response_code


def test_store_unavailable_during_move(tmp_path: Path) -> None:
    """During a move EWS answers ErrorMailboxStoreUnavailable (Autodiscover still answers); then any server works."""
    handle = start_lab(tmp_path / "lab", switchover_s=3.0)
    try:
        alice = handle.org.find_user("alice")
        assert alice is not None
        db = handle.org.database(alice.database)
        target = db.copies[1]
        with handle.resolving(), ntlm_session(handle) as session:
            assert _folder_code(handle, session, "outlook.lab.test") == "NoError"

            def switch() -> None:
                with handle.control() as control:
                    control.switchover(db.name, target)

            mover = threading.Thread(target=switch)
            mover.start()
            codes = set()
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline and "ErrorMailboxStoreUnavailable" not in codes:
                codes.add(_folder_code(handle, session, "outlook.lab.test"))
                time.sleep(0.1)
            assert "ErrorMailboxStoreUnavailable" in codes
            pox = session.post(
                handle.url("autodiscover.lab.test", "/autodiscover/autodiscover.xml"),
                data=(
                    b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
                    b"<Request><EMailAddress>alice@lab.test</EMailAddress><AcceptableResponseSchema>"
                    b"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
                    b"</AcceptableResponseSchema></Request></Autodiscover>"
                ),
                headers=XML,
                verify=str(handle.ca_file),
                timeout=30,
            )
            assert b"<Action>settings</Action>" in pox.content
            mover.join(timeout=30)
            for server in handle.org.servers:
                assert _folder_code(handle, session, server.fqdn) == "NoError"
            answer = ews_post(handle, session, "outlook.lab.test", build_convert_id_request())
            assert answer.headers["X-BEServer"] == handle.org.server(target).netbios
    finally:
        handle.down()


def test_bad_input_gets_protocol_answers(lab: LabHandle) -> None:
    """Malformed XML, a wrong type, a 50 MB body, an unknown operation and path get their answers; the lab serves on."""
    with lab.resolving(), ntlm_session(lab) as session:
        good = build_get_folder_request(["inbox"], mailbox="alice@lab.test")
        assert ews_post(lab, session, "outlook.lab.test", good).status_code == 200
        malformed = ews_post(lab, session, "outlook.lab.test", b"<s:Envelope><oops")
        assert malformed.status_code == 500
        fault = parse_ews_response(malformed.content).fault
        assert fault is not None
        assert fault.code == "ErrorSchemaValidation"
        wrong_type = ews_post(lab, session, "outlook.lab.test", good, headers={"Content-Type": "application/json"})
        assert wrong_type.status_code == 415
        huge = ews_post(lab, session, "outlook.lab.test", b"<" + b"x" * (50 * 1024 * 1024))
        assert huge.status_code == 413
        unknown = build_convert_id_request().replace(b"ConvertId", b"FrobnicateItem")
        answer = ews_post(lab, session, "outlook.lab.test", unknown)
        unknown_fault = parse_ews_response(answer.content).fault
        assert answer.status_code == 500
        assert unknown_fault is not None
        assert unknown_fault.code == "ErrorInvalidRequest"
        missing = session.post(
            lab.url("outlook.lab.test", "/EWS/Nothing.asmx"),
            data=good,
            headers=XML,
            verify=str(lab.ca_file),
            timeout=30,
        )
        assert missing.status_code == 404
        after = ews_post(lab, session, "outlook.lab.test", good)
        assert parse_ews_response(after.content).messages[0].response_code == "NoError"
