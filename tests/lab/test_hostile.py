"""Hostile and broken clients get their protocol's answer while the lab keeps serving everyone else."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import threading
import time

import pytest
import requests
from requests_ntlm import HttpNtlmAuth

from tests.labkit import LabHandle

pytestmark = pytest.mark.lab

GET_INBOX = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    b'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
    b'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">'
    b'<s:Header><t:RequestServerVersion Version="Exchange2016"/></s:Header><s:Body>'
    b"<m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>"
    b'<m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>'
    b"</s:Body></s:Envelope>"
)


def _tls(lab: LabHandle, address: str, name: str) -> ssl.SSLSocket:
    raw = socket.create_connection((address, lab.port), timeout=10)
    return lab.ssl_context().wrap_socket(raw, server_hostname=name)


def _read_status(sock: ssl.SSLSocket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0
        data += chunk
    return int(data.split(b" ", 2)[1])


def _garbage_tcp(lab: LabHandle, address: str) -> None:
    with socket.create_connection((address, lab.port), timeout=5) as sock:
        sock.sendall(os.urandom(4096))
        with contextlib.suppress(OSError):
            sock.recv(100)


def _garbage_http(lab: LabHandle, address: str, name: str) -> None:
    with _tls(lab, address, name) as sock:
        sock.sendall(b"\x00GARBAGE / NOT-HTTP\r\n\r\n")
        with contextlib.suppress(OSError):
            sock.recv(100)


def _garbage_ntlm(lab: LabHandle, address: str, name: str) -> int:
    token = base64.b64encode(b"NTLMSSP\x00\x03\x00\x00\x00" + os.urandom(64)).decode()
    with _tls(lab, address, name) as sock:
        sock.sendall(
            f"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: {name}\r\nAuthorization: NTLM {token}\r\n"
            "Content-Type: text/xml\r\nContent-Length: 0\r\n\r\n".encode()
        )
        return _read_status(sock)


def _huge_body(lab: LabHandle, address: str, name: str) -> int:
    size = 50 * 1024 * 1024
    chunk = b"\0" * (1024 * 1024)
    with _tls(lab, address, name) as sock:
        sock.sendall(
            f"POST /mapi/emsmdb/ HTTP/1.1\r\nHost: {name}\r\nContent-Type: application/mapi-http\r\n"
            f"Content-Length: {size}\r\n\r\n".encode()
        )
        for _ in range(size // len(chunk)):
            sock.sendall(chunk)
        return _read_status(sock)


def _stalled_headers(lab: LabHandle, address: str, name: str, hold: threading.Event) -> None:
    with _tls(lab, address, name) as sock:
        sock.sendall(f"POST /mapi/emsmdb/ HTTP/1.1\r\nHost: {name}\r\nContent-Le".encode())
        hold.wait(30)


def test_the_lab_keeps_serving_while_hostile_clients_hammer_it(lab: LabHandle) -> None:
    """Random bytes, non-HTTP, forged NTLM tokens, 50 MB bodies and stalled requests against every server do not
    disturb a well-behaved EWS client through the namespace and a server name; no traceback reaches the lab log."""
    log_before = (lab.folder / "lab.log").read_text(errors="replace")
    servers = [(s.address, s.fqdn) for s in lab.org.servers] + [(lab.org.lb_address, lab.org.namespace)]
    hold = threading.Event()
    results: dict[str, list[int]] = {"ntlm": [], "huge": []}
    errors: list[BaseException] = []

    def hostile(address: str, name: str) -> None:
        try:
            for _ in range(3):
                _garbage_tcp(lab, address)
                _garbage_http(lab, address, name)
                results["ntlm"].append(_garbage_ntlm(lab, address, name))
            results["huge"].append(_huge_body(lab, address, name))
        except BaseException as exc:
            errors.append(exc)

    stallers = [threading.Thread(target=_stalled_headers, args=(lab, a, n, hold), daemon=True) for a, n in servers]
    attackers = [threading.Thread(target=hostile, args=(a, n), daemon=True) for a, n in servers]
    for thread in stallers + attackers:
        thread.start()
    good: list[tuple[str, int, bool]] = []
    session = requests.Session()
    session.trust_env = False
    session.auth = HttpNtlmAuth("LAB\\bob", lab.password("bob"))
    deadline = time.monotonic() + 60
    with lab.resolving(), session:
        while (any(t.is_alive() for t in attackers) or len(good) < 10) and time.monotonic() < deadline:
            for host in (lab.org.namespace, "mb3.lab.test"):
                response = session.post(
                    lab.url(host, "/EWS/Exchange.asmx"),
                    data=GET_INBOX,
                    headers={"Content-Type": "text/xml; charset=utf-8"},
                    verify=str(lab.ca_file),
                    timeout=15,
                )
                good.append((host, response.status_code, b"NoError" in response.content))
    hold.set()
    for thread in attackers:
        thread.join(30)
    assert not errors, errors
    assert len(good) >= 4
    assert all(status == 200 and ok for _, status, ok in good), good
    assert set(results["ntlm"]) == {401}
    # the MAPI endpoint refuses the anonymous 50 MB upload with 401 (drained, never held)
    assert set(results["huge"]) == {401}
    log_after = (lab.folder / "lab.log").read_text(errors="replace")[len(log_before) :]
    assert "Traceback" not in log_after
